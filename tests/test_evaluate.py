"""Metrics: voxel Dice/IoU, tolerant instance matching, recall by size, site hit-rate."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from roidetect.detect import EVERY_COMPONENT, detections_from_labels
from roidetect.evaluate import (ANY, EvaluationParams, evaluate_arrays, evaluate_volumes, format_report, json_ready,
                                site_hit_rates)
from roidetect.errors import UserError
from roidetect.labels import CRACK, DELAMINATION, IGNORE, PORE

SPACING = (0.05, 0.05, 0.05)


def ball(shape, centre, radius):
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.stack([(labels == c).astype(np.float32) for c in range(4)])


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    shape = (48, 48, 48)
    labels = np.zeros(shape, np.uint8)
    labels[ball(shape, (12, 12, 12), 4)] = PORE
    labels[ball(shape, (30, 34, 12), 2.5)] = PORE
    labels[24, 6:40, 22:44] = CRACK
    labels[40:42, 10:30, 10:40] = DELAMINATION
    return labels


def compare(pred: np.ndarray, truth: np.ndarray, **kwargs) -> dict:
    """Evaluate a label map as if it were a prediction (every component kept)."""
    return evaluate_arrays(one_hot(pred), truth, spacing_um=SPACING, detection=EVERY_COMPONENT, **kwargs)


def test_perfect_prediction(truth):
    result = compare(truth, truth)
    for name in ("pore", "crack", "delamination", ANY):
        assert result["instance"][name]["f1"] == 1.0
        assert result["instance"][name]["fp"] == 0 and result["instance"][name]["fn"] == 0
    for name in ("pore", "crack", "delamination"):
        assert result["voxel"][name]["dice"] == 1.0 and result["voxel"][name]["iou"] == 1.0
    assert result["instance"]["pore"]["true"] == 2
    assert result["mean"] == {"dice": 1.0, "iou": 1.0, "f1": 1.0}


def test_one_voxel_shifted_crack_still_matches(truth):
    pred = truth.copy()
    pred[pred == CRACK] = 0
    pred[25, 6:40, 22:44] = CRACK  # the sheet one voxel deeper: no voxel overlaps
    result = compare(pred, truth)
    assert result["voxel"]["crack"]["dice"] == 0.0
    assert result["instance"]["crack"]["f1"] == 1.0
    assert result["matches"]["crack"][0][2] == pytest.approx(1.0)
    strict = compare(pred, truth, params=EvaluationParams(tolerance_voxels=0))
    assert strict["instance"]["crack"]["f1"] == 0.0


def test_empty_prediction(truth):
    result = compare(np.zeros_like(truth), truth)
    for name in ("pore", "crack", "delamination"):
        inst = result["instance"][name]
        assert inst["recall"] == 0.0 and inst["tp"] == 0 and inst["predicted"] == 0
        assert math.isnan(inst["precision"]) and inst["f1"] == 0.0
        assert result["voxel"][name]["dice"] == 0.0
    assert json.loads(json.dumps(json_ready(result)))["instance"]["pore"]["precision"] is None


def test_nothing_to_find_and_nothing_found():
    empty = np.zeros((16, 16, 16), np.uint8)
    result = compare(empty, empty)
    assert math.isnan(result["instance"]["pore"]["f1"]) and math.isnan(result["voxel"]["pore"]["dice"])
    assert "n/a" in format_report(result)


def test_ignored_voxels(truth):
    annotated = truth.copy()
    annotated[:, :, 44:] = IGNORE  # an unannotated slab
    pred = truth.copy()
    pred[ball(truth.shape, (30, 20, 46), 2)] = PORE  # a prediction lying in the ignored slab
    result = compare(pred, annotated)
    assert result["instance"]["pore"]["fp"] == 0 and result["instance"]["pore"]["not_counted"] == 1
    assert len(result["not_counted_ids"]) == 1
    assert result["voxel"]["pore"]["dice"] == 1.0
    pred[ball(truth.shape, (30, 20, 40), 2)] = PORE  # the same, in annotated space, counts
    assert compare(pred, annotated)["instance"]["pore"]["fp"] == 1


def test_a_match_to_a_true_defect_below_the_minimum_size_is_excused():
    """Such a prediction is in ``matches`` and ``excused_ids``, and neither a true nor a false positive."""
    from roidetect.detect import DetectionParams

    shape = (24, 24, 24)
    truth = np.zeros(shape, np.uint8)
    truth[4:6, 4:6, 4:6] = PORE  # 8 voxels: 0.001 um^3
    truth[ball(shape, (16, 16, 16), 3)] = PORE  # 123 voxels
    pred = truth.copy()
    pred[3:6, 3:6, 3:6] = PORE  # 27 voxels: detected, and its tolerant Dice with the small pore is 1
    params = {"min_volume_um3": {"pore": 0.002, "crack": 0.002, "delamination": 0.002}, "min_voxels": 1}
    result = evaluate_arrays(one_hot(pred), truth, spacing_um=SPACING, detection=DetectionParams(**params))
    pore = result["instance"]["pore"]
    assert (pore["true"], pore["predicted"], pore["tp"], pore["fp"], pore["fn"]) == (1, 1, 1, 0, 0)
    assert pore["true_below_min_size"] == 1
    assert len(result["matches"]["pore"]) == 2 and len(result["excused_ids"]) == 1
    assert result["excused_ids"][0] in {pair[0] for pair in result["matches"]["pore"]}
    assert result["not_counted_ids"] == []


def test_truth_labels_must_be_a_label_map(truth):
    with pytest.raises(UserError, match="0-3 or 255"):
        compare(truth, truth * 3)


def test_an_instance_map_with_ids_off_the_defects_is_warned_about(truth, caplog):
    from scipy import ndimage

    instances = ndimage.label(truth > 0)[0]
    with caplog.at_level("WARNING", logger="roidetect.evaluate"):
        compare(truth, truth, true_instances=instances)
        assert caplog.text == ""
        scan = np.random.default_rng(0).integers(1, 60000, truth.shape)  # grey values where the ids should be
        compare(truth, truth, true_instances=scan)
    assert "ids on 100 % of the truth's background voxels" in caplog.text


def test_one_to_one_matching():
    shape = (32, 32, 40)
    truth = np.zeros(shape, np.uint8)
    truth[ball(shape, (16, 16, 12), 4)] = PORE
    truth[ball(shape, (16, 16, 24), 4)] = PORE
    pred = truth.copy()
    pred[14:19, 14:19, 12:25] = PORE  # one blob bridging both true pores
    result = compare(pred, truth)
    pore = result["instance"]["pore"]
    assert (pore["true"], pore["predicted"], pore["tp"], pore["fp"], pore["fn"]) == (2, 1, 1, 0, 1)
    assert pore["precision"] == 1.0 and pore["recall"] == 0.5


def test_blockwise_equals_whole(truth):
    rng = np.random.default_rng(2)
    pred = truth.copy()
    pred[24] = 0
    pred[23, 6:40, 22:44] = CRACK
    pred[ball(truth.shape, (36, 40, 40), 3)] = DELAMINATION
    noise = rng.random(truth.shape) < 0.001
    pred[noise] = PORE
    annotated = truth.copy()
    annotated[:4] = IGNORE
    found = [evaluate_arrays(one_hot(pred), annotated, spacing_um=SPACING,
                             params=EvaluationParams(block_shape=block)) for block in ((48, 48, 48), (16, 20, 13))]
    a, b = (json_ready({k: r[k] for k in ("voxel", "instance", "recall_by_size", "matches")}) for r in found)
    assert a == b


def test_recall_by_size(truth):
    result = compare(truth, truth, params=EvaluationParams(size_bins_vox=(0, 6, 10, math.inf)))
    pores = result["recall_by_size"]["pore"]
    assert [row["true"] for row in pores] == [1, 1, 0]  # radius 2.5 -> ~5 voxels, radius 4 -> ~8
    assert all(row["recall"] == 1.0 for row in pores if row["true"])
    assert result["recall_by_size"]["bins_um"][1] == pytest.approx(6 * 0.05)


def test_site_hit_rate(truth):
    table = detections_from_labels(truth, SPACING)
    pore = table[table["class"] == "pore"].iloc[0]
    sites = pd.DataFrame({"rank": [2, 1, 3], "z_um": [0.1, pore.z_um, 2.0], "y_um": [0.1, pore.y_um, 2.0],
                          "x_um": [2.3, pore.x_um, 0.1], "fov_um": [0.3, 0.5, 0.2]})
    rates = site_hit_rates(sites, table, ks=(1, 2, 3, 10))
    assert rates["hits"] == [True, False, False]
    assert rates["hit_rate"] == {"1": 1.0, "2": 0.5, "3": pytest.approx(1 / 3), "10": pytest.approx(1 / 3)}
    assert rates["defects_reached"]["1"] == pytest.approx(1 / len(table))
    boxes = sites.assign(box_z0_um=0.0, box_z1_um=10.0, box_y0_um=0.0, box_y1_um=10.0, box_x0_um=0.0,
                         box_x1_um=10.0)
    assert site_hit_rates(boxes, table)["hits"] == [True, True, True]
    with pytest.raises(UserError):
        site_hit_rates(sites.drop(columns="fov_um"), table)


def test_site_hits_by_voxel(truth):
    ids = np.zeros(truth.shape, np.uint32)
    table = detections_from_labels(truth, SPACING, instances_out=ids)
    pore = table.iloc[0]  # ball of radius 4 at voxel (12, 12, 12)
    edge = 12 * 0.05 + 4 * 0.05  # z of its deepest voxel centre, um
    box = pd.DataFrame({"rank": [1], "box_z0_um": [edge - 0.01], "box_z1_um": [edge + 0.3], "box_y0_um": [0.5],
                        "box_y1_um": [0.7], "box_x0_um": [0.5], "box_x1_um": [0.7]})
    assert site_hit_rates(box, table)["hits"] == [False]  # the centroid lies above the box
    by_voxel = site_hit_rates(box, table, true_instances=ids, spacing_um=SPACING)
    assert by_voxel["rule"] == "voxel" and by_voxel["hits"] == [True]
    assert by_voxel["defects_reached"]["1"] == pytest.approx(1 / len(table))
    assert pore["class"] == "pore"


def test_sites_in_volume_evaluation(truth):
    table = detections_from_labels(truth, SPACING)
    sites = pd.DataFrame({"rank": [1], "z_um": [table.z_um[0]], "y_um": [table.y_um[0]], "x_um": [table.x_um[0]],
                          "fov_um": [0.2]})
    ids = np.zeros(truth.shape, np.uint32)
    detections_from_labels(truth, SPACING, instances_out=ids)
    result = evaluate_volumes(truth, ids, truth, spacing_um=SPACING, sites=sites)
    assert result["sites"]["hit_rate"]["1"] == 1.0
    assert "site hit-rate" in format_report(result)


def test_shape_mismatch_is_a_user_error(truth):
    ids = np.zeros(truth.shape, np.uint32)
    with pytest.raises(UserError, match="shape"):
        evaluate_volumes(truth[:-1], ids[:-1], truth, spacing_um=SPACING)
