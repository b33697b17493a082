"""Detections from probabilities: block-wise equals whole-volume, merging, properties, calibration."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from roidetect.detect import (DETECTION_COLUMNS, EVERY_COMPONENT, DetectionParams, detect, detect_in_memory,
                              detections_from_labels)
from roidetect.errors import UserError
from roidetect.labels import CRACK, DELAMINATION, PORE

SPACING = (0.05, 0.05, 0.05)
LOOSE = DetectionParams(min_voxels=4, min_volume_um3={"pore": 0.0, "crack": 0.0, "delamination": 0.0})


def ball(shape, centre, radius):
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def soft_probabilities(labels: np.ndarray, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """Smoothed one-hot labels plus noise, renormalised: a plausible network output."""
    onehot = np.stack([(labels == c).astype(np.float32) for c in range(4)])
    smooth = np.stack([ndimage.gaussian_filter(ch, 0.6) for ch in onehot])
    smooth = 0.9 * np.maximum(smooth, onehot * 0.8) + rng.uniform(0, noise, smooth.shape).astype(np.float32)
    return (smooth / smooth.sum(axis=0)).astype(np.float32)


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """96^3 labels with defects on and off the 48-voxel block borders, and their probabilities."""
    rng = np.random.default_rng(7)
    shape = (96, 96, 96)
    labels = np.zeros(shape, np.uint8)
    labels[ball(shape, (48, 48, 48), 9)] = PORE                        # across every border
    labels[ball(shape, (20, 75, 20), 5)] = PORE
    labels[ball(shape, (80, 20, 80), 1.5)] = PORE                      # tiny
    labels[70, 10:60, 40:90] = CRACK                                   # a sheet across the x border
    for i in range(30):                                                # diagonal 1-voxel crack through a corner
        labels[33 + i, 33 + i, 60 + (i % 2)] = CRACK
    labels[10:12, 50:90, 44:52] = DELAMINATION                         # thin slab across the x border
    return labels, soft_probabilities(labels, rng)


def test_blockwise_equals_whole_volume(scene):
    _, prob = scene
    whole = detect(prob, SPACING, params=LOOSE, block_shape=96)
    blocks = detect(prob, SPACING, params=LOOSE, block_shape=48)
    odd = detect(prob, SPACING, params=LOOSE, block_shape=(40, 56, 33))
    assert list(whole.columns) == list(DETECTION_COLUMNS)
    assert len(whole) >= 5
    for other in (blocks, odd):
        pd.testing.assert_frame_equal(whole, other, check_exact=False, rtol=1e-9, atol=1e-9)


def test_outputs_blockwise_equal_whole_and_lazy_zarr(scene, tmp_path):
    zarr = pytest.importorskip("zarr")
    _, prob = scene
    quantised = np.rint(prob * 255).astype(np.uint8)
    lazy = zarr.open_array(str(tmp_path / "p.zarr"), mode="w", shape=quantised.shape, chunks=(1, 32, 32, 32),
                           dtype=np.uint8)
    lazy[...] = quantised
    ids = zarr.open_array(str(tmp_path / "ids.zarr"), mode="w", shape=prob.shape[1:], chunks=(32, 32, 32),
                          dtype=np.uint32, fill_value=0)
    labels_out = np.zeros(prob.shape[1:], np.uint8)
    table = detect(lazy, SPACING, params=LOOSE, instances_out=ids, labels_out=labels_out, block_shape=48)
    whole = detect_in_memory(quantised, SPACING, params=LOOSE, block_shape=96)
    pd.testing.assert_frame_equal(table, whole.table, check_exact=False, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(ids[...], whole.instances)
    np.testing.assert_array_equal(labels_out, whole.labels)


def test_defect_across_block_borders_is_one_detection(scene):
    labels, prob = scene
    found = detect_in_memory(prob, SPACING, params=LOOSE, block_shape=48)
    centre_id = found.instances[48, 48, 48]
    assert centre_id > 0
    assert set(np.unique(found.instances[ball(labels.shape, (48, 48, 48), 7)])) == {centre_id}
    diagonal = found.instances[[33 + i for i in range(30)], [33 + i for i in range(30)],
                               [60 + (i % 2) for i in range(30)]]
    assert len(set(diagonal[diagonal > 0])) == 1 and (diagonal > 0).mean() > 0.9
    sheet = found.instances[70, 12:58, 42:88]
    assert len(np.unique(sheet)) == 1 and sheet[0, 0] > 0


def test_ids_are_ordered_and_match_the_maps(scene):
    _, prob = scene
    found = detect_in_memory(prob, SPACING, params=LOOSE, block_shape=48)
    table = found.table
    assert table["id"].tolist() == list(range(1, len(table) + 1))
    assert table["class_id"].is_monotonic_increasing
    counts = np.bincount(found.instances.ravel(), minlength=len(table) + 1)[1:]
    np.testing.assert_array_equal(counts, table["voxels"].to_numpy())
    for row in table.itertuples():
        assert np.all(found.labels[found.instances == row.id] == row.class_id)
    assert np.all((found.labels > 0) == (found.instances > 0))


def test_sphere_properties():
    shape, radius, centre = (64, 64, 64), 10, (30, 33, 35)
    labels = np.zeros(shape, np.uint8)
    labels[ball(shape, centre, radius)] = PORE
    spacing, origin = (0.1, 0.05, 0.05), (5.0, -1.0, 2.0)
    table = detections_from_labels(labels, spacing, origin_um=origin)
    row = table.iloc[0]
    assert len(table) == 1 and row["class"] == "pore" and row["score"] == 1.0
    assert (row.z, row.y, row.x) == pytest.approx(centre)
    assert (row.z_um, row.y_um, row.x_um) == pytest.approx(np.add(origin, np.multiply(centre, spacing)))
    assert row.voxels == pytest.approx(4 / 3 * math.pi * radius ** 3, rel=0.03)
    assert row.volume_um3 == pytest.approx(row.voxels * np.prod(spacing))
    # in voxels the ball is round; in um it is stretched 2x along z
    assert row.axis_major_um == pytest.approx(2 * radius * 0.1, rel=0.05)
    assert row.axis_minor_um == pytest.approx(2 * radius * 0.05, rel=0.05)
    assert abs(row.normal_z) < 0.01 and row.flatness == pytest.approx(1.0, abs=0.05)
    assert (row.bbox_z0, row.bbox_z1) == (centre[0] - radius, centre[0] + radius + 1)
    assert not row.touches_border


def test_equivalent_diameter_of_sphere():
    labels = np.zeros((48, 48, 48), np.uint8)
    labels[ball(labels.shape, (24, 24, 24), 12)] = PORE
    row = detections_from_labels(labels, (0.2, 0.2, 0.2)).iloc[0]
    assert row.equivalent_diameter_um == pytest.approx(2 * 12 * 0.2, rel=0.02)
    assert row.axis_middle_um == pytest.approx(2 * 12 * 0.2, rel=0.03)


def test_thin_sheet_normal_and_flatness():
    shape = (64, 64, 64)
    z, y, x = np.mgrid[:64, :64, :64]
    normal = np.array([0.3, 0.8, -0.5])
    normal /= np.linalg.norm(normal)
    distance = (z - 32) * normal[0] + (y - 32) * normal[1] + (x - 32) * normal[2]
    sheet = (np.abs(distance) <= 0.5) & ball(shape, (32, 32, 32), 20)
    labels = np.where(sheet, CRACK, 0).astype(np.uint8)
    row = detections_from_labels(labels, SPACING).iloc[0]
    found = np.array([row.normal_z, row.normal_y, row.normal_x])
    assert abs(found @ normal) > 0.99
    assert found[0] > 0  # sign convention: first clear component positive
    assert row.flatness < 0.1
    assert row.axis_major_um == pytest.approx(row.axis_middle_um, rel=0.1)
    assert row.axis_minor_um < 0.1 * row.axis_major_um


def test_depth_below_surface_and_border_flag():
    labels = np.zeros((40, 32, 32), np.uint8)
    labels[ball(labels.shape, (25, 16, 16), 3)] = PORE
    labels[0:3, 0:3, 0:3] = CRACK
    surface = np.full((32, 32), 0.5, np.float32)  # um below voxel 0
    table = detections_from_labels(labels, SPACING, origin_um=(100.0, 0.0, 0.0), surface_z_um=surface)
    pore = table[table["class"] == "pore"].iloc[0]
    assert pore.depth_um == pytest.approx(25 * 0.05 - 0.5)
    assert not pore.touches_border
    assert table[table["class"] == "crack"].iloc[0].touches_border
    assert detections_from_labels(labels, SPACING)["depth_um"].isna().all()


def test_hysteresis_and_minimum_size():
    labels = np.zeros((32, 32, 32), np.uint8)
    labels[ball(labels.shape, (10, 10, 10), 4)] = PORE
    labels[ball(labels.shape, (22, 22, 22), 4)] = PORE
    labels[5, 25, 25] = PORE  # a single voxel
    prob = np.stack([(labels == c).astype(np.float32) for c in range(4)])
    weak = ball(labels.shape, (22, 22, 22), 4)
    prob[1][weak], prob[0][weak] = 0.45, 0.3  # argmax is pore but never reaches 0.5
    prob[2][weak] = prob[3][weak] = 0.125
    table = detect(prob, SPACING, params=DetectionParams(high_threshold=0.5, min_voxels=2,
                                                         min_volume_um3={"pore": 0.0}))
    assert len(table) == 1 and table.iloc[0].z == pytest.approx(10)
    lenient = detect(prob, SPACING, params=DetectionParams(high_threshold=0.4, min_voxels=1,
                                                           min_volume_um3={"pore": 0.0}))
    assert len(lenient) == 3
    by_volume = detect(prob, SPACING, params=DetectionParams(high_threshold=0.4, min_voxels=1,
                                                             min_volume_um3={"pore": 100 * 0.05 ** 3}))
    assert len(by_volume) == 2


def test_low_threshold_shrinks_components():
    labels = np.zeros((24, 24, 24), np.uint8)
    labels[ball(labels.shape, (12, 12, 12), 6)] = PORE
    rng = np.random.default_rng(3)
    prob = soft_probabilities(labels, rng, noise=0.0)
    plain = detect(prob, SPACING, params=LOOSE)
    strict = detect(prob, SPACING, params=DetectionParams(low_threshold=0.8, min_voxels=4,
                                                          min_volume_um3={"pore": 0.0}))
    assert strict.iloc[0].voxels < plain.iloc[0].voxels


def test_calibration_and_uncertainty(scene):
    _, prob = scene
    uncertainty = np.full(prob.shape, 0.1, np.float32)
    calibration = {"pore": {"x": [0.0, 1.0], "y": [0.0, 0.5]}}
    table = detect(prob, SPACING, params=LOOSE, calibration=calibration, uncertainty=uncertainty, block_shape=48)
    pores = table[table["class"] == "pore"]
    others = table[table["class"] != "pore"]
    np.testing.assert_allclose(pores["score"], pores["score_raw"] / 2)
    np.testing.assert_allclose(others["score"], others["score_raw"])
    np.testing.assert_allclose(table["uncertainty"], 0.1, rtol=1e-6)
    assert ((table["score_raw"] > 0.5) & (table["score_raw"] <= table["max_probability"])).all()
    quantised = np.rint(uncertainty * 255).astype(np.uint8)
    q = detect(prob, SPACING, params=LOOSE, uncertainty=quantised, block_shape=48)
    np.testing.assert_allclose(q["uncertainty"], 26 / 255, rtol=1e-6)
    assert detect(prob, SPACING, params=LOOSE)["uncertainty"].isna().all()


def test_min_score_drops_unlikely_detections_of_its_class_only(scene):
    _, prob = scene
    calibration = {"pore": {"x": [0.0, 1.0], "y": [0.0, 0.5]}}  # every pore's score is below 0.5
    every = detect(prob, SPACING, params=LOOSE, calibration=calibration, block_shape=48)
    pore_scores = every.loc[every["class"] == "pore", "score"]
    cut = float(pore_scores.median())
    shape = prob.shape[1:]
    outputs = []
    for block in (48, 96):
        instances, labels = np.zeros(shape, np.uint32), np.zeros(shape, np.uint8)
        params = replace(LOOSE, min_score={"pore": cut})
        table = detect(prob, SPACING, params=params, calibration=calibration, instances_out=instances,
                       labels_out=labels, block_shape=block)
        outputs.append((table, instances, labels))
    table, instances, labels = outputs[0]
    kept = table[table["class"] == "pore"]
    assert len(kept) == (pore_scores >= cut).sum() and 0 < len(kept) < len(pore_scores)
    assert (kept["score"] >= cut).all()
    assert len(table[table["class"] != "pore"]) == len(every[every["class"] != "pore"])
    assert (labels == PORE).sum() == kept["voxels"].sum()
    assert set(np.unique(instances)) == {0, *table["id"]}
    pd.testing.assert_frame_equal(outputs[1][0], table, atol=1e-9)
    np.testing.assert_array_equal(outputs[1][1], instances)


@pytest.mark.parametrize("calibration", [
    {"pore": {"x": [0.5, 0.2], "y": [0.0, 1.0]}},
    {"pore": {"x": [0.0, 1.0], "y": [0.0, 1.5]}},
    {"pore": {"x": [0.0, 1.0]}},
    {"void": {"x": [0.0, 1.0], "y": [0.0, 1.0]}},
])
def test_bad_calibration_is_a_user_error(calibration):
    prob = np.zeros((4, 8, 8, 8), np.float32)
    prob[0] = 1
    with pytest.raises(UserError):
        detect(prob, SPACING, calibration=calibration)


def test_empty_and_bad_shapes():
    prob = np.zeros((4, 16, 16, 16), np.float32)
    prob[0] = 1
    found = detect_in_memory(prob, SPACING, block_shape=8)
    assert len(found.table) == 0 and list(found.table.columns) == list(DETECTION_COLUMNS)
    assert not found.instances.any() and not found.labels.any()
    with pytest.raises(ValueError):
        detect(prob[:3], SPACING)
    with pytest.raises(ValueError):
        detect(prob, SPACING, surface_z_um=np.zeros((4, 4)))


def test_truth_table_from_instances_matches_components():
    labels = np.zeros((32, 32, 32), np.uint8)
    labels[ball(labels.shape, (8, 8, 8), 3)] = PORE
    labels[20, 5:25, 5:25] = CRACK
    labels[25:27, 20:30, 20:30] = DELAMINATION
    labels[0:2, 28:32, 28:32] = 255  # ignored, not a defect
    derived_ids = np.zeros(labels.shape, np.uint32)
    derived = detections_from_labels(labels, SPACING, instances_out=derived_ids, block_shape=16)
    assert derived["class"].tolist() == ["pore", "crack", "delamination"]
    instances = (derived_ids * 10).astype(np.uint16)  # arbitrary ids are kept
    given = detections_from_labels(labels, SPACING, instances=instances, block_shape=(16, 8, 32))
    assert given["id"].tolist() == [10, 20, 30]
    pd.testing.assert_frame_equal(derived.drop(columns="id"), given.drop(columns="id"), check_exact=False,
                                  rtol=1e-12)
    assert EVERY_COMPONENT.min_voxels == 1
