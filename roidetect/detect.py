"""Per-defect detections from class probabilities (pure numpy, block-wise).

A detection is a 26-connected component of the voxels whose most probable class is the same
defect class (pore, crack or delamination). Probabilities may be a lazy array far larger
than memory (Zarr, memory map): they are read block by block, components are labelled in
each block, and components that touch across a block border are merged with a union-find
over the border faces, so a defect crossing a border is one detection and the result does
not depend on the block size.

Rule (see ``docs/detection.md``):

1. a voxel belongs to class ``c`` when ``c`` is its argmax class and its probability is at
   least ``low_threshold``;
2. voxels of the same class are grouped into 26-connected components;
3. a component is kept when its maximum probability reaches ``high_threshold``
   (hysteresis), it has at least ``min_voxels`` voxels, its volume reaches the class's
   ``min_volume_um3`` and its calibrated score (the probability that it is real) reaches the
   class's ``min_score``.

Kept detections get ids 1..N, ordered by class id, then by the raster index (z, y, x) of
their first voxel, which makes them independent of the block decomposition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from roidetect.blockwise import Block, iter_blocks
from roidetect.errors import UserError
from roidetect.labels import CLASS_IDS, CLASS_NAMES, DEFECT_CLASSES, DEFECT_NAMES, NUM_CLASSES
from roidetect.surface import depth_below_surface

DETECTION_COLUMNS: tuple[str, ...] = (
    "id", "class", "class_id", "score", "score_raw", "max_probability", "uncertainty",
    "voxels", "volume_um3", "z", "y", "x", "z_um", "y_um", "x_um", "depth_um",
    "bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1", "bbox_y1", "bbox_x1",
    "equivalent_diameter_um", "axis_major_um", "axis_middle_um", "axis_minor_um",
    "normal_z", "normal_y", "normal_x", "flatness", "touches_border",
)
"""The columns of ``detections.csv``, in order (``docs/architecture.md``)."""

DEFAULT_MIN_VOLUME_UM3: dict[str, float] = {"pore": 0.004, "crack": 0.003, "delamination": 0.003}
"""Smallest kept detection per class, in um^3: about the volume of a sphere 0.2 um across
(the nano-CT resolution of ~224 nm); cracks and gaps may be thinner, so a little less."""

_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity: diagonal thin cracks stay whole
_PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))  # second-moment products zz yy xx zy zx yx

# How each per-voxel quantity is reduced over a component (or over pieces of one).
_REDUCTIONS: dict[str, np.ufunc] = {
    "count": np.add, "class_counts": np.add, "first": np.minimum, "s1": np.add, "s2": np.add,
    "lo": np.minimum, "hi": np.maximum, "sum_p": np.add, "max_p": np.maximum, "sum_unc": np.add,
}


@dataclass(frozen=True)
class DetectionParams:
    """Thresholds of the detection rule.

    Attributes
    ----------
    high_threshold : float
        A component is kept only if its maximum class probability reaches this (hysteresis).
    low_threshold : float
        A voxel joins its argmax class only if that class's probability reaches this; 0 means
        the plain argmax.
    min_voxels : int
        Smallest kept component in voxels (guards against single-voxel noise at any voxel size).
    min_volume_um3 : mapping of class name to float
        Smallest kept component per class, in cubic micrometres.
    min_score : mapping of class name to float
        Smallest kept ``score`` per class, in [0, 1]: the calibrated probability that a
        detection is real (the raw mean probability for a class without calibration).
        Classes not listed keep every score. A trained model's card sets it from the class's
        F1 on its calibration volumes
        (:func:`roidetect.learn.calibration.min_scores_by_f1`).
    """

    high_threshold: float = 0.5
    low_threshold: float = 0.0
    min_voxels: int = 8
    min_volume_um3: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIN_VOLUME_UM3))
    min_score: Mapping[str, float] = field(default_factory=dict)


EVERY_COMPONENT = DetectionParams(high_threshold=0.0, low_threshold=0.0, min_voxels=1,
                                  min_volume_um3={CLASS_NAMES[c]: 0.0 for c in DEFECT_CLASSES})
"""Parameters that keep every component (used for ground truth)."""


@dataclass(frozen=True)
class Detections:
    """The three results of :func:`detect_in_memory`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per detection, columns :data:`DETECTION_COLUMNS`.
    instances : ndarray of uint32, shape (Z, Y, X)
        Detection id per voxel (0 = none).
    labels : ndarray of uint8, shape (Z, Y, X)
        Class id of each kept detection's voxels (0 elsewhere).
    """

    table: pd.DataFrame
    instances: np.ndarray
    labels: np.ndarray


def detect(probabilities: Any, spacing_um: Sequence[float], origin_um: Sequence[float] = (0.0, 0.0, 0.0),
           surface_z_um: np.ndarray | None = None, params: DetectionParams | None = None,
           calibration: Mapping[str, Mapping[str, Sequence[float]]] | None = None, uncertainty: Any = None,
           instances_out: Any = None, labels_out: Any = None,
           block_shape: int | Sequence[int] = (128, 256, 256), progress: bool = False) -> pd.DataFrame:
    """Find defect instances in class probabilities, block by block.

    Parameters
    ----------
    probabilities : array-like, shape (4, Z, Y, X)
        Background, pore, crack and delamination probabilities: float in [0, 1], or uint8
        quantised as ``round(255 p)``. May be lazy (Zarr, memory map): only one block is
        read at a time.
    spacing_um : (3,) floats
        Voxel size z, y, x in micrometres.
    origin_um : (3,) floats
        Position of voxel (0, 0, 0) in micrometres (for the ``*_um`` centroid columns).
    surface_z_um : ndarray, shape (Y, X), optional
        Sample top surface in micrometres relative to voxel 0
        (:func:`roidetect.surface.surface_from_scan`); without it ``depth_um`` is NaN.
    params : DetectionParams, optional
        Thresholds; the defaults when omitted.
    calibration : mapping, optional
        ``{class_name: {"x": [...], "y": [...]}}``: increasing raw scores ``x`` and the
        probabilities ``y`` they map to (piecewise linear). ``score`` is the calibrated mean
        probability; classes without an entry keep the raw score.
    uncertainty : array-like, shape (4, Z, Y, X), optional
        Per-class standard deviation over test-time augmentations (float, or uint8
        quantised like ``probabilities``); its mean over a detection's voxels (for the
        detection's class) fills the ``uncertainty`` column.
    instances_out : writable array-like, shape (Z, Y, X), uint32, optional
        Receives the detection ids (0 = none), e.g. a Zarr array from
        :func:`roidetect.volume.create_ome_zarr`. It is also used as the working memory for
        the provisional labels, so for scans larger than memory pass an on-disk array. When
        omitted, an in-memory scratch array is used and discarded.
    labels_out : writable array-like, shape (Z, Y, X), uint8, optional
        Receives the class id of every kept detection's voxels (0 elsewhere), e.g. a memory
        map from :func:`roidetect.volume.create_tiff`.
    block_shape : int or (3,) ints
        Block size in voxels; working memory is about 40 bytes per block voxel plus about
        110 bytes per defect voxel in the block.
    progress : bool
        Show progress bars.

    Returns
    -------
    pandas.DataFrame
        One row per detection, columns :data:`DETECTION_COLUMNS`, ids 1..N.
    """
    params = params or DetectionParams()
    shape = _check_inputs(probabilities, uncertainty, surface_z_um, instances_out, labels_out)
    calibration = _check_calibration(calibration)
    ids = instances_out if instances_out is not None else np.zeros(shape, dtype=np.uint32)
    blocks = list(iter_blocks(shape, block_shape))
    parts = _label_blocks(probabilities, uncertainty, ids, blocks, shape, params, spacing_um, calibration, progress)
    groups = _merge_groups(_border_pairs(ids, blocks, shape, _class_of(parts), progress), len(parts["count"]))
    merged = _reduce(parts, groups)
    keep = _passes(merged, params, spacing_um, calibration)
    kept = np.flatnonzero(keep)
    order = kept[np.lexsort((merged["first"][kept], _class_of(merged)[kept]))]
    if instances_out is not None or labels_out is not None:
        final_of_group = np.zeros(len(keep), dtype=np.uint32)
        final_of_group[order] = np.arange(1, len(order) + 1, dtype=np.uint32)
        id_lut = np.concatenate([[0], final_of_group[groups]]).astype(np.uint32)
        class_lut = np.concatenate([[0], np.where(keep, _class_of(merged), 0)[groups]]).astype(np.uint8)
        _write_final(ids, instances_out, labels_out, id_lut, class_lut, blocks, progress)
    chosen = {name: values[order] for name, values in merged.items()}
    return _detection_table(chosen, np.arange(1, len(order) + 1), spacing_um, origin_um, shape, surface_z_um,
                            calibration, uncertainty is not None)


def detect_in_memory(probabilities: Any, spacing_um: Sequence[float], **kwargs: Any) -> Detections:
    """:func:`detect` with in-memory output arrays, for volumes that fit in memory.

    Takes the same keyword arguments as :func:`detect` except ``instances_out`` and
    ``labels_out``; returns the table with the instance and label maps.
    """
    shape = tuple(int(s) for s in probabilities.shape[1:])
    instances = np.zeros(shape, dtype=np.uint32)
    labels = np.zeros(shape, dtype=np.uint8)
    table = detect(probabilities, spacing_um, instances_out=instances, labels_out=labels, **kwargs)
    return Detections(table, instances, labels)


def detections_from_labels(labels: Any, spacing_um: Sequence[float], instances: Any = None,
                           origin_um: Sequence[float] = (0.0, 0.0, 0.0), surface_z_um: np.ndarray | None = None,
                           instances_out: Any = None, block_shape: int | Sequence[int] = (128, 256, 256),
                           progress: bool = False) -> pd.DataFrame:
    """The detections table of a ground-truth annotation (score 1 for every instance).

    Parameters
    ----------
    labels : array-like, shape (Z, Y, X), uint8
        Label map (0 background, 1 pore, 2 crack, 3 delamination, 255 ignored). May be lazy.
    spacing_um, origin_um, surface_z_um, block_shape, progress
        As in :func:`detect`.
    instances : array-like, shape (Z, Y, X), integer, optional
        One id per true defect (0 = none). Its ids are kept in the ``id`` column and each
        instance's class is the most frequent defect label over its voxels (instances with
        no defect-labelled voxel are dropped). Without it, instances are the 26-connected
        components of each class, numbered like :func:`detect` numbers detections.
    instances_out : writable array-like, shape (Z, Y, X), uint32, optional
        Without ``instances``: receives the component ids.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`DETECTION_COLUMNS`; ``score``, ``score_raw`` and ``max_probability``
        are 1.
    """
    if instances is None:
        return detect(OneHot(labels), spacing_um, origin_um, surface_z_um, params=EVERY_COMPONENT,
                      instances_out=instances_out, block_shape=block_shape, progress=progress)
    shape = tuple(int(s) for s in labels.shape)
    if tuple(int(s) for s in instances.shape) != shape:
        raise ValueError(f"instances shape {tuple(instances.shape)} differs from labels shape {shape}")
    blocks = list(iter_blocks(shape, block_shape))
    pieces = []
    for block in tqdm(blocks, desc="truth: instances", unit="block", disable=not progress):
        keys = np.asarray(instances[block.core]).astype(np.int64)
        pieces.append(_block_parts(keys, block, shape, None, None, np.asarray(labels[block.core])))
    parts = _concatenate(pieces)
    ids, groups = np.unique(parts["key"], return_inverse=True)
    merged = _reduce(parts, groups.ravel())
    defect = merged["class_counts"].sum(axis=1) > 0
    chosen = {name: values[defect] for name, values in merged.items()}
    return _detection_table(chosen, ids[defect], spacing_um, origin_um, shape, surface_z_um, {}, False)


class OneHot:
    """A lazy (4, Z, Y, X) uint8 one-hot view of a label map (255 where the class is the label).

    Ignored voxels (255) and background are background. Slicing reads only the block asked
    for, so ground truth goes through the same block-wise code as predictions.
    """

    def __init__(self, labels: Any) -> None:
        self.labels = labels
        self.shape = (NUM_CLASSES, *(int(s) for s in labels.shape))
        self.dtype = np.dtype(np.uint8)

    def __getitem__(self, key: tuple[Any, ...]) -> np.ndarray:
        if key[0] != slice(None):
            raise IndexError("OneHot is read with all channels: [:, z0:z1, y0:y1, x0:x1]")
        block = np.asarray(self.labels[key[1:]])
        classes = np.arange(NUM_CLASSES).reshape((-1,) + (1,) * block.ndim)
        return (block[None] == classes).astype(np.uint8) * np.uint8(255)


# ------------------------------------------------------------------ per-block work


def _label_blocks(probabilities: Any, uncertainty: Any, ids: Any, blocks: list[Block], shape: tuple[int, int, int],
                  params: DetectionParams, spacing_um: Sequence[float], calibration: Mapping[str, Any],
                  progress: bool) -> dict[str, np.ndarray]:
    """First pass: label each block, keep the pieces that may still grow across a border.

    Components that touch no inner block face are complete and are filtered by the rule at
    once. The kept pieces get provisional ids 1..P, written to ``ids``; the returned sums
    are in provisional-id order.
    """
    pieces: list[dict[str, np.ndarray]] = []
    next_id = 1
    for block in tqdm(blocks, desc="detect: components", unit="block", disable=not progress):
        channels = (slice(None), *block.core)
        classes, class_prob = _classify(np.asarray(probabilities[channels]), params.low_threshold)
        local = _label_per_class(classes)
        unc = None
        if uncertainty is not None:
            chosen = np.take_along_axis(np.asarray(uncertainty[channels]), classes[None].astype(np.intp), 0)[0]
            unc = _as_probability(chosen)
        parts = _block_parts(local, block, shape, class_prob, unc, classes)
        keep = _touches_inner_face(parts, block, shape) | _passes(parts, params, spacing_um, calibration)
        count = int(keep.sum())
        if next_id + count >= 2**32:
            raise ValueError("more than 2^32 provisional components; raise high_threshold or min_voxels")
        new_ids = np.zeros(len(keep) + 1, dtype=np.uint32)
        new_ids[1:][keep] = np.arange(next_id, next_id + count, dtype=np.uint32)
        ids[block.core] = new_ids[local]
        pieces.append({name: values[keep] for name, values in parts.items()})
        next_id += count
    return _concatenate(pieces)


def _as_probability(block: Any) -> np.ndarray:
    """Float32 probabilities from a float or uint8-quantised block."""
    block = np.asarray(block)
    if block.dtype == np.uint8:
        return block.astype(np.float32) / np.float32(255.0)
    return block.astype(np.float32, copy=False)


def _classify(prob: np.ndarray, low_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Argmax class per voxel (0 where its probability is under ``low_threshold``) and that probability.

    Works on the stored type (uint8 quantisation preserves the order), channel by channel,
    which is several times faster than ``np.argmax`` over the channel axis; ties go to the
    lower class id, as with ``np.argmax``.
    """
    best = np.array(prob[0])
    classes = np.zeros(best.shape, dtype=np.uint8)
    for cid in range(1, prob.shape[0]):
        better = prob[cid] > best
        classes[better] = cid
        np.maximum(best, prob[cid], out=best)
    class_prob = _as_probability(best)
    if low_threshold > 0:
        classes[class_prob < low_threshold] = 0
    return classes, class_prob


def _label_per_class(classes: np.ndarray) -> np.ndarray:
    """26-connected components of each defect class, numbered 1..n across the classes."""
    local = np.zeros(classes.shape, dtype=np.int32)
    count = 0
    for cid in DEFECT_CLASSES:
        labelled, n = ndimage.label(classes == cid, structure=_CONNECTIVITY)
        if n:
            inside = labelled > 0
            local[inside] = labelled[inside] + count
            count += n
    return local


def _block_parts(keys: np.ndarray, block: Block, shape: Sequence[int], class_prob: np.ndarray | None,
                 unc: np.ndarray | None, classes: np.ndarray) -> dict[str, np.ndarray]:
    """Per-key sums over one block's voxels (key 0 = none), in increasing key order.

    Coordinate moments are int64, so they add up exactly whatever the block split.
    """
    flat = np.flatnonzero(keys)
    if flat.size == 0:
        return _empty_parts()
    key = keys.ravel()[flat].astype(np.int64)
    order = np.argsort(key, kind="stable")
    flat, key = flat[order], key[order]
    origin = np.array([s.start for s in block.core], dtype=np.int64)
    zyx = np.stack(np.unravel_index(flat, keys.shape), axis=1).astype(np.int64) + origin
    cls = np.asarray(classes).ravel()[flat]
    values = {
        "count": np.ones(len(flat), dtype=np.int64),
        "class_counts": (cls[:, None] == np.asarray(DEFECT_CLASSES)).astype(np.int64),
        "first": np.ravel_multi_index(tuple(zyx.T), tuple(shape)).astype(np.int64),
        "s1": zyx,
        "s2": np.stack([zyx[:, i] * zyx[:, j] for i, j in _PAIRS], axis=1),
        "lo": zyx,
        "hi": zyx,
        "sum_p": np.ones(len(flat)) if class_prob is None else class_prob.ravel()[flat].astype(np.float64),
        "sum_unc": np.zeros(len(flat)) if unc is None else unc.ravel()[flat].astype(np.float64),
    }
    values["max_p"] = values["sum_p"]
    starts = _segment_starts(key)
    parts = {name: _REDUCTIONS[name].reduceat(v, starts, axis=0) for name, v in values.items()}
    parts["key"] = key[starts]
    return parts


def _segment_starts(sorted_keys: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))


def _empty_parts() -> dict[str, np.ndarray]:
    widths = {"class_counts": len(DEFECT_CLASSES), "s1": 3, "s2": 6, "lo": 3, "hi": 3}
    parts = {name: np.zeros((0, widths[name]) if name in widths else 0,
                            dtype=np.float64 if name in ("sum_p", "max_p", "sum_unc") else np.int64)
             for name in _REDUCTIONS}
    parts["key"] = np.zeros(0, dtype=np.int64)
    return parts


def _concatenate(pieces: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not pieces:
        return _empty_parts()
    return {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]}


def _reduce(parts: dict[str, np.ndarray], groups: np.ndarray) -> dict[str, np.ndarray]:
    """Combine pieces with the same group index (0..G-1, every index present) into one row each."""
    if len(groups) == 0:
        return _empty_parts()
    order = np.argsort(groups, kind="stable")
    starts = _segment_starts(groups[order])
    merged = {name: op.reduceat(parts[name][order], starts, axis=0) for name, op in _REDUCTIONS.items()}
    merged["key"] = groups[order][starts]
    return merged


def _class_of(parts: dict[str, np.ndarray]) -> np.ndarray:
    """Class id of each part: its most frequent defect class."""
    if len(parts["count"]) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(DEFECT_CLASSES)[np.argmax(parts["class_counts"], axis=1)]


def _passes(parts: dict[str, np.ndarray], params: DetectionParams, spacing_um: Sequence[float],
            calibration: Mapping[str, Mapping[str, Sequence[float]]]) -> np.ndarray:
    """Whether each (complete) component satisfies hysteresis, the minimum sizes and the minimum score."""
    class_ids = _class_of(parts)
    names = [CLASS_NAMES[c] for c in class_ids]
    min_um3 = np.array([float(params.min_volume_um3.get(name, 0.0)) for name in names])
    volume = parts["count"] * float(np.prod(spacing_um))
    passes = ((parts["max_p"] >= params.high_threshold) & (parts["count"] >= params.min_voxels)
              & (volume >= min_um3 * (1 - 1e-9)))
    if params.min_score:
        min_score = np.array([float(params.min_score.get(name, 0.0)) for name in names])
        passes &= _calibrate(parts["sum_p"] / np.maximum(parts["count"], 1), class_ids, calibration) >= min_score
    return passes


def _touches_inner_face(parts: dict[str, np.ndarray], block: Block, shape: Sequence[int]) -> np.ndarray:
    """Whether each part touches a face of the block shared with another block."""
    touches = np.zeros(len(parts["count"]), dtype=bool)
    for axis, (core, n) in enumerate(zip(block.core, shape)):
        if core.start > 0:
            touches |= parts["lo"][:, axis] == core.start
        if core.stop < n:
            touches |= parts["hi"][:, axis] == core.stop - 1
    return touches


# ---------------------------------------------------------- merging across borders


def _border_pairs(ids: Any, blocks: list[Block], shape: Sequence[int], piece_class: np.ndarray,
                  progress: bool) -> np.ndarray:
    """Pairs of provisional ids (same class) that are 26-adjacent across a block border.

    For every block and every axis along which another block lies before it, the two voxel
    layers on either side of the shared face (grown by one voxel in-plane, for diagonal
    neighbours) are compared at the nine in-plane offsets.
    """
    found = [np.zeros((0, 2), dtype=np.int64)]
    for block in tqdm(blocks, desc="detect: borders", unit="block", disable=not progress):
        for axis in range(3):
            start = block.core[axis].start
            if start == 0:
                continue
            region = [slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(block.core, shape)]
            region[axis] = slice(start - 1, start + 1)
            layers = np.moveaxis(np.asarray(ids[tuple(region)]), axis, 0).astype(np.int64)
            found.append(_adjacent_pairs(layers[0], layers[1]))
    pairs = np.unique(np.concatenate(found), axis=0)
    if len(pairs):
        pairs = pairs[piece_class[pairs[:, 0] - 1] == piece_class[pairs[:, 1] - 1]]
    return pairs


def _adjacent_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Nonzero pairs ``(a[i, j], b[i + di, j + dj])`` for di, dj in {-1, 0, 1}."""
    found = []
    height, width = a.shape
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            i0, i1 = max(0, -di), height - max(0, di)
            j0, j1 = max(0, -dj), width - max(0, dj)
            left, right = a[i0:i1, j0:j1], b[i0 + di:i1 + di, j0 + dj:j1 + dj]
            both = (left > 0) & (right > 0) & (left != right)
            found.append(np.stack([left[both], right[both]], axis=1))
    return np.unique(np.concatenate(found), axis=0)


def _merge_groups(pairs: np.ndarray, count: int) -> np.ndarray:
    """Union-find over provisional ids 1..count: the group index (0..G-1) of each."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    graph = sparse.coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0] - 1, pairs[:, 1] - 1)),
                              shape=(count, count))
    _, groups = connected_components(graph, directed=False)
    return groups.astype(np.int64)


def _write_final(ids: Any, instances_out: Any, labels_out: Any, id_lut: np.ndarray, class_lut: np.ndarray,
                 blocks: list[Block], progress: bool) -> None:
    """Second pass: provisional ids -> final ids (and class ids), block by block."""
    for block in tqdm(blocks, desc="detect: writing", unit="block", disable=not progress):
        provisional = np.asarray(ids[block.core])
        if labels_out is not None:
            labels_out[block.core] = class_lut[provisional]
        if instances_out is not None:
            instances_out[block.core] = id_lut[provisional]


# ------------------------------------------------------------------ the table


def _detection_table(parts: dict[str, np.ndarray], ids: np.ndarray, spacing_um: Sequence[float],
                    origin_um: Sequence[float], shape: Sequence[int], surface_z_um: np.ndarray | None,
                    calibration: Mapping[str, Mapping[str, Sequence[float]]], has_uncertainty: bool) -> pd.DataFrame:
    """Per-instance properties from accumulated sums (one row per entry of ``ids``).

    Second moments are those of the solid made of the voxel cubes (each voxel adds
    ``spacing**2 / 12`` along its axes), so a one-voxel-thick sheet has a small, non-zero
    minor axis. Axis lengths are ``sqrt(20 * eigenvalue)``, the full axes of the ellipsoid
    with the same second moments (what scikit-image's ``regionprops`` reports in 3D).
    """
    spacing = np.asarray(spacing_um, dtype=float)
    count = parts["count"].astype(float)
    n = len(count)
    class_ids = _class_of(parts)
    centroid = parts["s1"] / np.maximum(count, 1)[:, None]
    second = np.zeros((n, 3, 3))
    for column, (i, j) in enumerate(_PAIRS):
        second[:, i, j] = second[:, j, i] = parts["s2"][:, column] / np.maximum(count, 1)
    covariance = (second - centroid[:, :, None] * centroid[:, None, :] + np.eye(3) / 12.0) * np.outer(spacing, spacing)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance) if n else (np.zeros((0, 3)), np.zeros((0, 3, 3)))
    axes = np.sqrt(20.0 * np.clip(eigenvalues, 0.0, None))  # ascending: minor, middle, major
    normal = _canonical_sign(eigenvectors[:, :, 0])
    score_raw = parts["sum_p"] / np.maximum(count, 1)
    volume_um3 = count * float(np.prod(spacing))
    centroid_um = np.asarray(origin_um, dtype=float) + centroid * spacing
    if surface_z_um is not None and n:
        depth = depth_below_surface(surface_z_um, centroid[:, 0], centroid[:, 1], centroid[:, 2], spacing)
    else:
        depth = np.full(n, np.nan)
    bbox_lo, bbox_hi = parts["lo"], parts["hi"] + 1
    table = pd.DataFrame({
        "id": np.asarray(ids, dtype=np.int64),
        "class": [CLASS_NAMES[int(c)] for c in class_ids],
        "class_id": class_ids.astype(np.int64),
        "score": _calibrate(score_raw, class_ids, calibration),
        "score_raw": score_raw,
        "max_probability": parts["max_p"].astype(float),
        "uncertainty": parts["sum_unc"] / np.maximum(count, 1) if has_uncertainty else np.full(n, np.nan),
        "voxels": parts["count"].astype(np.int64),
        "volume_um3": volume_um3,
        "z": centroid[:, 0], "y": centroid[:, 1], "x": centroid[:, 2],
        "z_um": centroid_um[:, 0], "y_um": centroid_um[:, 1], "x_um": centroid_um[:, 2],
        "depth_um": depth,
        "bbox_z0": bbox_lo[:, 0], "bbox_y0": bbox_lo[:, 1], "bbox_x0": bbox_lo[:, 2],
        "bbox_z1": bbox_hi[:, 0], "bbox_y1": bbox_hi[:, 1], "bbox_x1": bbox_hi[:, 2],
        "equivalent_diameter_um": np.cbrt(6.0 * volume_um3 / math.pi),
        "axis_major_um": axes[:, 2], "axis_middle_um": axes[:, 1], "axis_minor_um": axes[:, 0],
        "normal_z": normal[:, 0], "normal_y": normal[:, 1], "normal_x": normal[:, 2],
        "flatness": axes[:, 0] / np.maximum(axes[:, 1], 1e-12),
        "touches_border": ((bbox_lo == 0) | (bbox_hi == np.asarray(shape))).any(axis=1) if n else np.zeros(0, bool),
    })
    return table[list(DETECTION_COLUMNS)]


def _canonical_sign(vectors: np.ndarray) -> np.ndarray:
    """Flip unit vectors so that their first clearly non-zero component is positive."""
    vectors = np.array(vectors, dtype=float)
    if len(vectors) == 0:
        return vectors.reshape(0, 3)
    significant = np.abs(vectors) > 1e-6
    first = np.argmax(significant, axis=1)
    sign = np.sign(vectors[np.arange(len(vectors)), first])
    return vectors * np.where(sign == 0, 1.0, sign)[:, None]


# ------------------------------------------------------------------ checks and calibration


def _check_inputs(probabilities: Any, uncertainty: Any, surface_z_um: np.ndarray | None, instances_out: Any,
                  labels_out: Any) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in probabilities.shape)
    if len(shape) != 4 or shape[0] != NUM_CLASSES:
        raise ValueError(f"probabilities must have shape ({NUM_CLASSES}, Z, Y, X), got {shape}")
    spatial = shape[1:]
    if uncertainty is not None and tuple(int(s) for s in uncertainty.shape) != shape:
        raise ValueError(f"uncertainty shape {tuple(uncertainty.shape)} differs from probabilities shape {shape}")
    if surface_z_um is not None and tuple(surface_z_um.shape) != spatial[1:]:
        raise ValueError(f"surface shape {tuple(surface_z_um.shape)} differs from the scan's (Y, X) {spatial[1:]}")
    for name, out in (("instances_out", instances_out), ("labels_out", labels_out)):
        if out is not None and tuple(int(s) for s in out.shape) != spatial:
            raise ValueError(f"{name} shape {tuple(out.shape)} differs from the scan's {spatial}")
    return spatial  # type: ignore[return-value]


def _check_calibration(calibration: Mapping[str, Mapping[str, Sequence[float]]] | None
                       ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Validate a calibration map: known class names, increasing x, y within [0, 1]."""
    checked: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, curve in (calibration or {}).items():
        if name not in DEFECT_NAMES:
            raise UserError(f"calibration: unknown class {name!r}; use pore, crack or delamination")
        try:
            x = np.asarray(curve["x"], dtype=float)
            y = np.asarray(curve["y"], dtype=float)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"calibration[{name!r}] needs numeric lists 'x' and 'y'") from exc
        if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
            raise UserError(f"calibration[{name!r}]: 'x' and 'y' must be lists of the same length (>= 2)")
        if np.any(np.diff(x) <= 0) or np.any(np.diff(y) < 0) or y.min() < 0 or y.max() > 1:
            raise UserError(f"calibration[{name!r}]: 'x' must increase and 'y' must be non-decreasing within [0, 1]")
        checked[name] = (x, y)
    return checked


def _calibrate(score_raw: np.ndarray, class_ids: np.ndarray,
               calibration: Mapping[str, tuple[np.ndarray, np.ndarray]] | Mapping[str, Any]) -> np.ndarray:
    score = np.array(score_raw, dtype=float)
    for name, (x, y) in calibration.items():
        rows = np.asarray(class_ids) == CLASS_IDS[name]
        score[rows] = np.interp(score_raw[rows], x, y)
    return score
