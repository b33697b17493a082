"""Voxel, instance and site metrics: one implementation for validation, ``roidetect evaluate`` and the report.

Metrics (``docs/evaluation.md``):

- voxel Dice and IoU per defect class, skipping voxels whose true label is not 0-3
  (255 = not annotated);
- instance precision, recall and F1 per class (and class-agnostic, ``"any"``) after a
  one-to-one matching that tolerates one-voxel offsets: the *tolerant Dice* of a predicted
  instance P and a true instance T is::

      (|P voxels within r of T| + |T voxels within r of P|) / (|P| + |T|)

  with r = ``tolerance_voxels`` (Chebyshev distance, i.e. the 26-neighbourhood for r = 1);
  pairs of the same class with a tolerant Dice >= ``match_threshold`` are candidates, and
  :func:`scipy.optimize.linear_sum_assignment` picks the one-to-one matching of largest
  total score. A predicted instance with more than ``max_ignored_fraction`` of its voxels on
  ignored truth voxels is neither a true nor a false positive, and so is one matched to a
  true instance smaller than detection's minimum size (``min_true_volume_um3``), which is
  not counted as missed either;
- recall by size: true instances binned by equivalent diameter in voxels;
- site hit-rate at k: the fraction of the k best-ranked milling sites whose milled box
  contains (the centre of) at least one voxel of a true defect.

Everything is computed block by block from (possibly lazy) label and instance volumes.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from roidetect.blockwise import iter_blocks
from roidetect.detect import DEFAULT_MIN_VOLUME_UM3, DetectionParams, detect_in_memory, detections_from_labels
from roidetect.errors import UserError
from roidetect.labels import CLASS_NAMES, DEFECT_CLASSES, DEFECT_NAMES, IGNORE, relabelled

log = logging.getLogger(__name__)

ANY = "any"
"""Key of the class-agnostic instance scores (a match may join instances of different classes)."""
INSTANCES_ON_BACKGROUND = 0.01
"""A true instance map with ids on more than this share of the truth's background voxels is
not one (an instance map is 0 off the defects): a warning says so."""


@dataclass(frozen=True)
class EvaluationParams:
    """Settings of the metrics.

    Attributes
    ----------
    match_threshold : float
        Smallest tolerant Dice for a predicted and a true instance to match.
    tolerance_voxels : int
        How far (Chebyshev distance in voxels) a voxel may lie from the other instance and
        still count as overlapping it.
    max_ignored_fraction : float
        A predicted instance with more than this fraction of its voxels on ignored truth
        voxels (label 255) is not counted.
    size_bins_vox : tuple of float
        Edges of the equivalent-diameter bins, in voxels, for recall by size.
    hit_rate_k : tuple of int
        The k of the site hit-rates.
    block_shape : (3,) ints
        Block size for reading the volumes.
    min_true_volume_um3 : mapping of class name to float
        True instances smaller than this are below what detection reports (its
        ``min_volume_um3``): they count neither as missed nor, when a prediction matches
        one, as a false positive. They stay in the recall-by-size table.
    """

    match_threshold: float = 0.5
    tolerance_voxels: int = 1
    max_ignored_fraction: float = 0.5
    size_bins_vox: tuple[float, ...] = (0.0, 3.0, 6.0, 12.0, 24.0, math.inf)
    hit_rate_k: tuple[int, ...] = (1, 3, 5, 10)
    block_shape: tuple[int, int, int] = (128, 256, 256)
    min_true_volume_um3: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIN_VOLUME_UM3))


@dataclass
class _Accumulated:
    """What one pass over the volumes collects."""

    confusion: np.ndarray = field(default_factory=lambda: np.zeros((4, 4), dtype=np.int64))
    ignored: list[np.ndarray] = field(default_factory=list)      # predicted ids on ignored voxels
    pred_near_true: list[np.ndarray] = field(default_factory=list)  # (p, t, count) rows
    true_near_pred: list[np.ndarray] = field(default_factory=list)  # (t, p, count) rows
    background: int = 0                                            # annotated background voxels of the truth
    instances_on_background: int = 0                               # ... that carry a true instance id


# ------------------------------------------------------------------ entry points


def evaluate_arrays(probabilities: Any, true_labels: Any, true_instances: Any = None,
                    spacing_um: Sequence[float] = (1.0, 1.0, 1.0), params: EvaluationParams | None = None,
                    detection: DetectionParams | None = None) -> dict[str, Any]:
    """Score in-memory class probabilities against ground truth (detection, then scoring).

    Parameters
    ----------
    probabilities : ndarray, shape (4, Z, Y, X)
        Float in [0, 1] or uint8 quantised; turned into detections with
        :func:`roidetect.detect.detect_in_memory` and ``detection`` thresholds.
    true_labels : ndarray, shape (Z, Y, X), uint8
        Label map (255 = ignored).
    true_instances : ndarray, shape (Z, Y, X), optional
        True instance ids; the 26-connected components of each class when omitted.
    spacing_um : (3,) floats
        Voxel size z, y, x in micrometres.
    params : EvaluationParams, optional
    detection : DetectionParams, optional
        Its ``min_volume_um3`` also sets ``params.min_true_volume_um3``: true defects that
        small are not expected to be found.

    Returns
    -------
    dict
        As :func:`evaluate_volumes` (without sites).
    """
    detection = detection or DetectionParams()
    params = replace(params or EvaluationParams(), min_true_volume_um3=dict(detection.min_volume_um3))
    found = detect_in_memory(probabilities, spacing_um, params=detection, block_shape=params.block_shape)
    return evaluate_volumes(found.labels, found.instances, true_labels, true_instances, spacing_um, params=params)


def evaluate_volumes(pred_labels: Any, pred_instances: Any, true_labels: Any, true_instances: Any = None,
                     spacing_um: Sequence[float] = (1.0, 1.0, 1.0), origin_um: Sequence[float] = (0.0, 0.0, 0.0),
                     sites: pd.DataFrame | None = None, params: EvaluationParams | None = None,
                     progress: bool = False) -> dict[str, Any]:
    """Voxel, instance, size and site metrics of a prediction against ground truth.

    Parameters
    ----------
    pred_labels : array-like, shape (Z, Y, X), uint8
        Predicted label map (0-3); may be lazy.
    pred_instances : array-like, shape (Z, Y, X), integer
        Predicted instance ids (0 = none); may be lazy.
    true_labels : array-like, shape (Z, Y, X), uint8
        True label map (0-3, 255 = not annotated); may be lazy.
    true_instances : array-like, shape (Z, Y, X), integer, optional
        True instance ids; when omitted, the 26-connected components of each true class
        (computed in memory: 4 bytes per voxel).
    spacing_um, origin_um : (3,) floats
        Voxel size and origin in micrometres (sites are in the same scan coordinates).
    sites : pandas.DataFrame, optional
        Ranked milling sites (``sites.csv``); adds the site hit-rates.
    params : EvaluationParams, optional
    progress : bool

    Returns
    -------
    dict
        ``voxel``, ``instance``, ``mean``, ``recall_by_size``, ``sites`` (or None),
        ``matches`` (``[pred id, true id, tolerant Dice]`` per class), ``not_counted_ids``
        (predictions lying mostly on ignored voxels), ``excused_ids`` (predictions matched to
        a true instance below ``min_true_volume_um3``: in ``matches``, yet neither true nor
        false positives) and the settings used; JSON-ready once NaNs are replaced
        (:func:`json_ready`).
    """
    params = params or EvaluationParams()
    shape = tuple(int(s) for s in true_labels.shape)
    for name, array in (("predicted labels", pred_labels), ("predicted instances", pred_instances),
                        ("true instances", true_instances)):
        if array is not None and tuple(int(s) for s in array.shape) != shape:
            raise UserError(f"{name} have shape {tuple(array.shape)} but the truth has {shape}; "
                            "evaluate a prediction made on the annotated scan")
    instances_given = true_instances is not None
    if true_instances is None:
        true_instances = np.zeros(shape, dtype=np.uint32)
        truth = detections_from_labels(true_labels, spacing_um, origin_um=origin_um, instances_out=true_instances,
                                       block_shape=params.block_shape, progress=progress)
    else:
        truth = detections_from_labels(true_labels, spacing_um, instances=true_instances, origin_um=origin_um,
                                       block_shape=params.block_shape, progress=progress)
    predicted = detections_from_labels(pred_labels, spacing_um, instances=pred_instances, origin_um=origin_um,
                                       block_shape=params.block_shape, progress=progress)
    acc = _scan(pred_labels, pred_instances, true_labels, true_instances, shape, params, progress)
    if instances_given and acc.instances_on_background > INSTANCES_ON_BACKGROUND * acc.background:
        log.warning("the true instance map carries ids on %.0f %% of the truth's background voxels; an instance map "
                    "is 0 off the defects, so instances and scores will be wrong (did you pass the scan as "
                    "--instances?)", 100 * acc.instances_on_background / acc.background)
    ignored_ids, ignored_counts = np.unique(np.concatenate([*acc.ignored, np.zeros(0, np.int64)]), return_counts=True)
    ignored_voxels = pd.Series(ignored_counts, index=ignored_ids).reindex(predicted["id"]).fillna(0).to_numpy()
    counted = ignored_voxels <= params.max_ignored_fraction * predicted["voxels"].to_numpy()
    scores = _pair_scores(acc, predicted, truth)
    instance, matches = {}, {}
    too_small = _below_min_volume(truth, params.min_true_volume_um3)
    excused_ids: list[int] = []
    for name in (*DEFECT_NAMES, ANY):
        result, pairs, excused = _match_class(name, predicted, counted, truth, too_small, scores,
                                              params.match_threshold)
        instance[name], matches[name] = result, pairs
        if name != ANY:
            excused_ids += excused
    voxel = _voxel_scores(acc.confusion)
    return {
        "shape_zyx": list(shape),
        "voxel_size_um": [float(s) for s in spacing_um],
        "settings": {**asdict(params), "matching_rule": "tolerant Dice >= match_threshold, one-to-one "
                     "(linear_sum_assignment), same class"},
        "voxel": voxel,
        "instance": instance,
        "mean": {
            "dice": _nanmean([voxel[c]["dice"] for c in DEFECT_NAMES]),
            "iou": _nanmean([voxel[c]["iou"] for c in DEFECT_NAMES]),
            "f1": _nanmean([instance[c]["f1"] for c in DEFECT_NAMES]),
        },
        "recall_by_size": _recall_by_size(truth, matches, params.size_bins_vox, spacing_um),
        "sites": None if sites is None else site_hit_rates(sites, truth, params.hit_rate_k, true_instances,
                                                           spacing_um, origin_um),
        "matches": matches,
        "not_counted_ids": [int(i) for i in predicted["id"].to_numpy()[~counted]],
        "excused_ids": sorted(excused_ids),
    }


# ------------------------------------------------------------------ the pass over the volumes


def _scan(pred_labels: Any, pred_instances: Any, true_labels: Any, true_instances: Any, shape: tuple[int, ...],
          params: EvaluationParams, progress: bool) -> _Accumulated:
    """Confusion counts, ignored voxels of predictions and tolerant overlaps, block by block."""
    acc = _Accumulated()
    radius = int(params.tolerance_voxels)
    for block in tqdm(list(iter_blocks(shape, params.block_shape, halo=radius)), desc="evaluate", unit="block",
                      disable=not progress):
        truth = np.asarray(true_labels[block.core])
        bad = (truth > 3) & (truth != IGNORE)
        if bad.any():
            raise UserError(f"truth labels hold the value {int(truth[bad][0])}; labels must be 0-3 or 255 "
                            "(did you pass the scan or an instance map as --truth? Labels of another scheme "
                            "are read through --label-map)")
        pred = np.asarray(pred_labels[block.core]).astype(np.int64)
        pred[(pred < 0) | (pred > 3)] = 0
        valid = truth != IGNORE
        acc.confusion += np.bincount(truth[valid].astype(np.int64) * 4 + pred[valid], minlength=16).reshape(4, 4)
        pred_ids = np.asarray(pred_instances[block.padded]).astype(np.int64)
        true_ids = np.asarray(true_instances[block.padded]).astype(np.int64)
        core_ids = pred_ids[block.core_in_padded]
        acc.ignored.append(core_ids[~valid & (core_ids > 0)])
        on_background = truth == 0
        acc.background += int(np.count_nonzero(on_background))
        acc.instances_on_background += int(np.count_nonzero(true_ids[block.core_in_padded][on_background]))
        acc.pred_near_true.append(_near_counts(pred_ids, true_ids, block.core_in_padded, radius))
        acc.true_near_pred.append(_near_counts(true_ids, pred_ids, block.core_in_padded, radius))
    return acc


def _near_counts(source: np.ndarray, target: np.ndarray, core: tuple[slice, slice, slice], radius: int) -> np.ndarray:
    """For each (source id, target id): source voxels in ``core`` within ``radius`` of that target.

    Returns
    -------
    ndarray of int64, shape (N, 3)
        Rows ``(source id, target id, voxel count)``.
    """
    inner = source[core]
    flat = np.flatnonzero(inner)
    if flat.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    position = np.stack(np.unravel_index(flat, inner.shape), axis=1) + np.array([s.start for s in core])
    voxel, hit = [], []
    span = range(-radius, radius + 1)
    for offset in np.array(np.meshgrid(span, span, span, indexing="ij")).reshape(3, -1).T:
        moved = position + offset
        inside = np.all((moved >= 0) & (moved < np.array(target.shape)), axis=1)
        values = target[tuple(moved[inside].T)]
        nonzero = values > 0
        voxel.append(flat[inside][nonzero])
        hit.append(values[nonzero])
    pairs = np.unique(np.stack([np.concatenate(voxel), np.concatenate(hit)], axis=1), axis=0)
    rows = np.stack([inner.ravel()[pairs[:, 0]], pairs[:, 1]], axis=1)
    rows, counts = np.unique(rows, axis=0, return_counts=True)
    return np.concatenate([rows, counts[:, None]], axis=1).astype(np.int64)


# ------------------------------------------------------------------ instance matching


def _pair_scores(acc: _Accumulated, predicted: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Tolerant Dice of every (predicted, true) pair that lies within the tolerance."""
    near_pt = np.concatenate(acc.pred_near_true + [np.zeros((0, 3), np.int64)])
    near_tp = np.concatenate(acc.true_near_pred + [np.zeros((0, 3), np.int64)])
    a = pd.DataFrame(near_pt, columns=["pred", "true", "pred_near"]).groupby(["pred", "true"]).sum()
    b = pd.DataFrame(near_tp[:, [1, 0, 2]], columns=["pred", "true", "true_near"]).groupby(["pred", "true"]).sum()
    pairs = a.join(b, how="outer").fillna(0).reset_index()
    pred_size = predicted.set_index("id")["voxels"]
    true_size = truth.set_index("id")["voxels"]
    pairs = pairs[pairs["pred"].isin(pred_size.index) & pairs["true"].isin(true_size.index)]
    pairs["score"] = ((pairs["pred_near"] + pairs["true_near"])
                      / (pred_size.loc[pairs["pred"]].to_numpy() + true_size.loc[pairs["true"]].to_numpy()))
    pairs["pred_class"] = predicted.set_index("id")["class"].loc[pairs["pred"]].to_numpy()
    pairs["true_class"] = truth.set_index("id")["class"].loc[pairs["true"]].to_numpy()
    return pairs.reset_index(drop=True)


def _below_min_volume(truth: pd.DataFrame, min_volume_um3: Mapping[str, float]) -> np.ndarray:
    """Which true instances are smaller than the detection's minimum size for their class."""
    minimum = truth["class"].map(lambda name: float(min_volume_um3.get(name, 0.0)))
    return (truth["volume_um3"] < minimum).to_numpy()


def _match_class(name: str, predicted: pd.DataFrame, counted: np.ndarray, truth: pd.DataFrame,
                 too_small: np.ndarray, scores: pd.DataFrame,
                 threshold: float) -> tuple[dict[str, Any], list[list[float]], list[int]]:
    """One-to-one matching for one class (or all, for :data:`ANY`); counts, matched pairs and
    the ids of the excused predictions.

    Pairs with a true instance in ``too_small`` are matched like any other but counted as
    neither a true nor a false positive (their predictions are the excused ones), and such
    true instances are not counted as missed.
    """
    in_class = np.ones(len(truth), dtype=bool) if name == ANY else (truth["class"] == name).to_numpy()
    if name == ANY:
        pred_ids = predicted["id"].to_numpy()[counted]
        candidates = scores
    else:
        pred_ids = predicted["id"].to_numpy()[counted & (predicted["class"] == name).to_numpy()]
        candidates = scores[(scores["pred_class"] == name) & (scores["true_class"] == name)]
    true_ids = truth["id"].to_numpy()[in_class & ~too_small]
    candidates = candidates[candidates["pred"].isin(pred_ids) & (candidates["score"] >= threshold)]
    pairs = _assign(candidates["pred"].to_numpy(), candidates["true"].to_numpy(), candidates["score"].to_numpy())
    small_ids = set(truth["id"].to_numpy()[in_class & too_small].tolist())
    excused = [int(pred_id) for pred_id, true_id, _ in pairs if true_id in small_ids]
    tp = len(pairs) - len(excused)
    n_pred = len(pred_ids) - len(excused)
    fp, fn = n_pred - tp, len(true_ids) - tp
    result = {
        "true": int(len(true_ids)), "predicted": int(n_pred), "tp": tp, "fp": int(fp), "fn": int(fn),
        "true_below_min_size": int(len(small_ids)),
        "precision": tp / n_pred if n_pred else math.nan,
        "recall": tp / len(true_ids) if len(true_ids) else math.nan,
        "f1": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else math.nan,
    }
    if name != ANY:
        result["not_counted"] = int((~counted & (predicted["class"] == name).to_numpy()).sum())
    return result, pairs, excused


def _assign(pred: np.ndarray, true: np.ndarray, score: np.ndarray) -> list[list[float]]:
    """Maximum-score one-to-one assignment, solved per connected group of candidate pairs.

    Returns ``[[pred id, true id, score], ...]`` sorted by predicted id.
    """
    if len(pred) == 0:
        return []
    pred_index, pred_row = np.unique(pred, return_inverse=True)
    true_index, true_col = np.unique(true, return_inverse=True)
    n_pred = len(pred_index)
    graph = sparse.coo_matrix((np.ones(len(pred)), (pred_row, n_pred + true_col)),
                              shape=(n_pred + len(true_index),) * 2)
    _, group = connected_components(graph, directed=False)
    matched = []
    for g in np.unique(group[pred_row]):
        rows = np.flatnonzero(group[pred_row] == g)
        r_index, r = np.unique(pred_row[rows], return_inverse=True)
        c_index, c = np.unique(true_col[rows], return_inverse=True)
        matrix = np.zeros((len(r_index), len(c_index)))
        matrix[r, c] = score[rows]
        for i, j in zip(*linear_sum_assignment(matrix, maximize=True)):
            if matrix[i, j] > 0:
                matched.append([int(pred_index[r_index[i]]), int(true_index[c_index[j]]), float(matrix[i, j])])
    return sorted(matched)


# ------------------------------------------------------------------ voxel and size metrics


def _voxel_scores(confusion: np.ndarray) -> dict[str, dict[str, Any]]:
    """Dice and IoU per defect class, and for any defect versus background (:data:`ANY`),
    from a (true, predicted) confusion matrix."""
    defects = list(DEFECT_CLASSES)
    cells = {CLASS_NAMES[c]: (int(confusion[c, c]), int(confusion[c].sum()), int(confusion[:, c].sum()))
             for c in defects}
    cells[ANY] = (int(confusion[np.ix_(defects, defects)].sum()), int(confusion[defects].sum()),
                  int(confusion[:, defects].sum()))
    scores = {}
    for name, (tp, true_total, pred_total) in cells.items():
        union = true_total + pred_total - tp
        scores[name] = {
            "dice": 2 * tp / (true_total + pred_total) if union else math.nan,
            "iou": tp / union if union else math.nan,
            "true_voxels": true_total, "predicted_voxels": pred_total,
        }
    return scores


def _recall_by_size(truth: pd.DataFrame, matches: dict[str, list[list[float]]], edges: Sequence[float],
                    spacing_um: Sequence[float]) -> dict[str, Any]:
    """Recall of true instances per equivalent-diameter bin (in voxels; um for reference)."""
    voxel_um = float(np.prod(spacing_um)) ** (1.0 / 3.0)
    diameter_vox = np.cbrt(6.0 * truth["voxels"].to_numpy() / math.pi)
    result: dict[str, Any] = {"bins_vox": [float(e) for e in edges], "bins_um": [float(e) * voxel_um for e in edges]}
    for name in DEFECT_NAMES:
        found_ids = {int(t) for _, t, _ in matches[name]}
        is_class = (truth["class"] == name).to_numpy()
        rows = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            in_bin = is_class & (diameter_vox >= lo) & (diameter_vox < hi)
            ids = truth["id"].to_numpy()[in_bin]
            found = sum(int(i) in found_ids for i in ids)
            rows.append({"lo_vox": float(lo), "hi_vox": float(hi), "true": int(len(ids)), "found": int(found),
                         "recall": found / len(ids) if len(ids) else math.nan})
        result[name] = rows
    return result


# ------------------------------------------------------------------ sites


SITE_BOX_COLUMNS = ("box_z0_um", "box_z1_um", "box_y0_um", "box_y1_um", "box_x0_um", "box_x1_um")
"""Milled-box columns of ``sites.csv`` (scan coordinates, um); without them the box is the
target point +/- ``fov_um`` / 2 along each axis."""


def site_boxes(sites: pd.DataFrame) -> np.ndarray:
    """Milled boxes of sites as an (N, 6) array ``z0, z1, y0, y1, x0, x1`` in um, in the table's order."""
    if all(c in sites.columns for c in SITE_BOX_COLUMNS):
        return sites[list(SITE_BOX_COLUMNS)].to_numpy(dtype=float)
    missing = [c for c in ("z_um", "y_um", "x_um", "fov_um") if c not in sites.columns]
    if missing:
        raise UserError(f"sites table lacks the columns {', '.join(missing)}; "
                        "give a folder written by roidetect suggest")
    half = sites["fov_um"].to_numpy(dtype=float) / 2.0
    centre = sites[["z_um", "y_um", "x_um"]].to_numpy(dtype=float)
    return np.stack([centre[:, 0] - half, centre[:, 0] + half, centre[:, 1] - half, centre[:, 1] + half,
                     centre[:, 2] - half, centre[:, 2] + half], axis=1)


def site_hit_rates(sites: pd.DataFrame, truth: pd.DataFrame, ks: Sequence[int] = (1, 3, 5, 10),
                   true_instances: Any = None, spacing_um: Sequence[float] | None = None,
                   origin_um: Sequence[float] = (0.0, 0.0, 0.0)) -> dict[str, Any]:
    """Fraction of the top-k sites whose milled box reaches at least one true defect.

    Parameters
    ----------
    sites : pandas.DataFrame
        One row per site with ``rank`` (1 = best) and either the :data:`SITE_BOX_COLUMNS` or
        ``z_um, y_um, x_um, fov_um``.
    truth : pandas.DataFrame
        True instances (:func:`roidetect.detect.detections_from_labels`), centroids in the
        same scan coordinates.
    ks : sequence of int
    true_instances : array-like, shape (Z, Y, X), optional
        True instance ids (may be lazy). With it (and ``spacing_um``), a box reaches a defect
        when it contains the centre of at least one of the defect's voxels; without it, when
        it contains the defect's centroid.
    spacing_um, origin_um : (3,) floats
        The voxel grid of ``true_instances``.

    Returns
    -------
    dict
        ``sites`` (count), ``rule`` (``"voxel"`` or ``"centroid"``), ``hit_rate`` {k: hits
        among the first min(k, N) sites / min(k, N)}, ``defects_reached`` {k: fraction of
        true defects reached by one of the top-k boxes}, ``hits`` (per site, best first).
    """
    ordered = sites.sort_values("rank") if "rank" in sites.columns else sites
    boxes = site_boxes(ordered)
    if true_instances is not None and spacing_um is not None:
        inside = _boxes_reach_voxels(boxes, truth["id"].to_numpy(), true_instances, spacing_um, origin_um)
        rule = "voxel"
    else:
        centroids = truth[["z_um", "y_um", "x_um"]].to_numpy(dtype=float)
        inside = np.ones((len(boxes), len(centroids)), dtype=bool)
        for axis in range(3):
            lo, hi = boxes[:, 2 * axis, None], boxes[:, 2 * axis + 1, None]
            inside &= (centroids[None, :, axis] >= lo) & (centroids[None, :, axis] <= hi)
        rule = "centroid"
    hits = inside.any(axis=1)
    hit_rate, reached = {}, {}
    for k in ks:
        top = min(int(k), len(boxes))
        hit_rate[str(k)] = float(hits[:top].mean()) if top else math.nan
        reached[str(k)] = float(inside[:top].any(axis=0).mean()) if inside.shape[1] else math.nan
    return {"sites": int(len(boxes)), "rule": rule, "hit_rate": hit_rate, "defects_reached": reached,
            "hits": [bool(h) for h in hits]}


def _boxes_reach_voxels(boxes: np.ndarray, ids: np.ndarray, instances: Any, spacing_um: Sequence[float],
                        origin_um: Sequence[float]) -> np.ndarray:
    """(sites, defects) bool: whether each box holds a voxel centre of each true instance."""
    spacing, origin = np.asarray(spacing_um, dtype=float), np.asarray(origin_um, dtype=float)
    shape = np.asarray(instances.shape)
    inside = np.zeros((len(boxes), len(ids)), dtype=bool)
    for row, box in enumerate(boxes):
        lo = np.ceil((box[0::2] - origin) / spacing - 1e-9).astype(int)
        hi = np.floor((box[1::2] - origin) / spacing + 1e-9).astype(int) + 1
        lo, hi = np.clip(lo, 0, shape), np.clip(hi, 0, shape)
        if np.any(hi <= lo):
            continue
        present = np.unique(np.asarray(instances[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]))
        inside[row] = np.isin(ids, present[present > 0])
    return inside


# ------------------------------------------------------------------ output


def json_ready(value: Any) -> Any:
    """The result with NaN and infinity replaced by None (strict JSON) and numpy scalars made plain."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_report(result: dict[str, Any]) -> str:
    """A readable plain-text summary of :func:`evaluate_volumes`' result."""
    header = (f"{'class':<13}{'Dice':>6}{'IoU':>7} |{'true':>6}{'pred':>6}{'TP':>6}{'FP':>6}{'FN':>6}"
              f"{'precision':>11}{'recall':>8}{'F1':>7}")
    lines = [header, "-" * len(header)]
    for name in (*DEFECT_NAMES, ANY):
        inst, vox = result["instance"][name], result["voxel"][name]
        lines.append(f"{name:<13}{_num(vox['dice'])}{_num(vox['iou'], 7)} |{inst['true']:>6}{inst['predicted']:>6}"
                     f"{inst['tp']:>6}{inst['fp']:>6}{inst['fn']:>6}{_num(inst['precision'], 11)}"
                     f"{_num(inst['recall'], 8)}{_num(inst['f1'], 7)}")
    mean = result["mean"]
    lines.append(f"{'mean':<13}{_num(mean['dice'])}{_num(mean['iou'], 7)} |{'':>49}{_num(mean['f1'], 7)}")
    sizes = result["recall_by_size"]
    edges = sizes["bins_vox"]
    bins = [f"{lo:g}-{hi:g}" if math.isfinite(hi) else f">={lo:g}" for lo, hi in zip(edges[:-1], edges[1:])]
    lines += ["", "found / true instances by equivalent diameter (voxels)",
              f"{'class':<13}" + "".join(f"{b:>9}" for b in bins)]
    for name in DEFECT_NAMES:
        cells = [f"{r['found']}/{r['true']}" if r["true"] else "-" for r in sizes[name]]
        lines.append(f"{name:<13}" + "".join(f"{c:>9}" for c in cells))
    if result.get("sites"):
        sites = result["sites"]
        rates = "  ".join(f"@{k} {_num(v).strip()}" for k, v in sites["hit_rate"].items())
        lines += ["", f"site hit-rate ({sites['sites']} sites): {rates}"]
    return "\n".join(lines)


def _num(value: float | None, width: int = 6) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"{'n/a':>{width}}"
    return f"{value:{width}.3f}"


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


# ------------------------------------------------------------------ prediction folders


PREDICTION_LABELS = "labels.tif"
PREDICTION_INSTANCES = "instances.ome.zarr"


def evaluate_prediction(pred_dir: str | os.PathLike, truth: str | os.PathLike,
                        instances: str | os.PathLike | None = None, sites: str | os.PathLike | None = None,
                        params: EvaluationParams | None = None, progress: bool = False,
                        label_map: Mapping[int, int] | None = None) -> dict[str, Any]:
    """Evaluate a prediction folder (``roidetect predict``) against annotated volumes.

    Parameters
    ----------
    pred_dir : path
        Folder with ``labels.tif`` and ``instances.ome.zarr``.
    truth : path
        True label map (anything :func:`roidetect.volume.open_volume` reads), on the
        prediction's voxel grid (it is read with the prediction's voxel size).
    instances : path, optional
        True instance map on the same grid.
    sites : path, optional
        A ``roidetect suggest`` folder (or its ``sites.csv``): adds the site hit-rates.
    params : EvaluationParams, optional
        ``min_true_volume_um3`` is taken from the prediction's ``run.json`` (the detection
        thresholds it ran with) when recorded there.
    progress : bool
    label_map : dict of int to int, optional
        ``truth`` in another label scheme: raw values to labels of this one
        (:func:`roidetect.labels.check_label_map`); unlisted values are kept.

    Returns
    -------
    dict
        :func:`evaluate_volumes`' result plus ``inputs``.

    Raises
    ------
    UserError
        A missing file, a truth whose shape differs from the prediction's, or sites planned
        from another prediction.
    """
    from roidetect.runlog import check_sites_planned_from, read_run
    from roidetect.volume import as_predicted, open_volume

    folder = Path(pred_dir)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such prediction folder; give the --out folder of 'roidetect predict'")
    for name in (PREDICTION_LABELS, PREDICTION_INSTANCES):
        if not (folder / name).exists():
            raise UserError(f"{folder}: missing {name}; give the --out folder of 'roidetect predict'")
    pred_instances = open_volume(folder / PREDICTION_INSTANCES)
    pred_labels = open_volume(folder / PREDICTION_LABELS, pred_instances.spacing_um)
    run = read_run(folder)
    scan_info = run.get("scan")  # a prediction of a region scores that region of the truth
    true_labels = as_predicted(relabelled(open_volume(truth, pred_instances.spacing_um), label_map or {}), scan_info)
    true_instances = None if instances is None else as_predicted(open_volume(instances, pred_instances.spacing_um),
                                                                 scan_info)
    for volume in (pred_labels, true_labels, true_instances):
        if volume is not None and volume.shape != pred_instances.shape:
            raise UserError(f"{volume.name} has shape {volume.shape} but the prediction {folder} has "
                            f"{pred_instances.shape}; evaluate a prediction made on the annotated scan")
    site_table = None if sites is None else read_sites(sites)
    if sites is not None:
        check_sites_planned_from(sites, folder)
    params = params or EvaluationParams()
    reported = _prediction_min_volumes(run)
    if reported is not None:
        params = replace(params, min_true_volume_um3=reported)
    result = evaluate_volumes(pred_labels, pred_instances, true_labels, true_instances, pred_instances.spacing_um,
                              pred_instances.origin_um, site_table, params, progress)
    result["inputs"] = {"prediction": str(folder), "truth": str(truth),
                        "label_map": {str(k): int(v) for k, v in (label_map or {}).items()} or None,
                        "instances": None if instances is None else str(instances),
                        "sites": None if sites is None else str(sites)}
    return result


def _prediction_min_volumes(run: Mapping[str, Any]) -> dict[str, float] | None:
    """The per-class minimum detection volumes a prediction ran with (its run.json), if recorded."""
    detection = run.get("detection") or {}
    minimum = detection.get("min_volume_um3")
    return {str(k): float(v) for k, v in minimum.items()} if isinstance(minimum, dict) else None


def read_sites(path: str | os.PathLike) -> pd.DataFrame:
    """``sites.csv`` of a ``roidetect suggest`` folder (or the CSV itself)."""
    path = Path(path)
    csv = path / "sites.csv" if path.is_dir() else path
    if not csv.is_file():
        raise UserError(f"{path}: no sites.csv; give the --out folder of 'roidetect suggest'")
    try:
        return pd.read_csv(csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{csv}: not a readable CSV table ({exc})") from exc
