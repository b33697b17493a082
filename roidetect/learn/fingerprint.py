"""Dataset fingerprint: voxel sizes, intensity percentiles and class frequencies.

Like nnU-Net's fingerprint, it is computed once per dataset, cached as JSON and drives
what follows: every volume's intensity range for normalisation (the same per-volume robust
percentiles :mod:`roidetect.intensity` applies at inference), the voxel size recorded in
the model package, and the default patch size. Pure numpy; no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from roidetect import labels as label_scheme
from roidetect.intensity import intensity_levels, sample_voxels
from roidetect.learn.dataset import DatasetSpec, VolumeEntry
from roidetect.volume import split_inner_path, write_json

FINGERPRINT_FORMAT = "roidetect-fingerprint/2"  # 2: fill_value
SUMMARY_PERCENTILES = (0.5, 5.0, 50.0, 95.0, 99.5)
NOT_ANNOTATED = "not_annotated"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/roidetect`` (``~/.cache/roidetect`` when the variable is unset)."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "roidetect"


def volume_fingerprint(image: Any, label: Any, spacing_um: Sequence[float], percentiles: Sequence[float],
                       slab: int = 32, fill: str | float | None = "auto") -> dict[str, Any]:
    """Facts about one image/label pair.

    Parameters
    ----------
    image, label : array-like or Volume, shape (Z, Y, X)
        Anything sliceable into numpy arrays; labels already follow the label scheme
        (255 = not annotated). Labels are read ``slab`` z-slices at a time.
    spacing_um : (3,) float
    percentiles : (2,) float
        The (low, high) percentiles that define the normalisation range.
    fill : "auto", float or None
        The image's fill value (:func:`roidetect.intensity.intensity_levels`).

    Returns
    -------
    dict
        ``shape_zyx``, ``voxel_size_um``, ``intensity_range`` (the normalisation range),
        ``fill_value`` (a constant outside the field of view, or None; see
        :mod:`roidetect.intensity`),
        ``intensity_percentiles`` (raw values at :data:`SUMMARY_PERCENTILES`) and
        ``class_voxels`` (counts per class name and ``not_annotated``).
    """
    lo, hi, fill = intensity_levels(image, tuple(percentiles), fill)
    values = sample_voxels(image).astype(np.float64)
    summary = np.percentile(values, SUMMARY_PERCENTILES)
    counts = np.zeros(256, dtype=np.int64)
    for z in range(0, int(label.shape[0]), slab):
        counts += np.bincount(np.asarray(label[z:z + slab], dtype=np.uint8).ravel(), minlength=256)
    class_voxels = {name: int(counts[cid]) for cid, name in label_scheme.CLASS_NAMES.items()}
    class_voxels[NOT_ANNOTATED] = int(counts[label_scheme.IGNORE])
    return {
        "shape_zyx": [int(s) for s in image.shape],
        "voxel_size_um": [float(s) for s in spacing_um],
        "intensity_range": [lo, hi],
        "fill_value": fill,
        "intensity_percentiles": {f"{p:g}": float(v) for p, v in zip(SUMMARY_PERCENTILES, summary)},
        "class_voxels": class_voxels,
    }


def summarise(volumes: dict[str, dict[str, Any]], percentiles: Sequence[float]) -> dict[str, Any]:
    """Combine per-volume fingerprints into a dataset fingerprint.

    ``voxel_size_um`` and ``shape_zyx`` are per-axis medians; ``class_fraction`` is each
    class's share of the annotated voxels.
    """
    spacing = np.median([v["voxel_size_um"] for v in volumes.values()], axis=0)
    shape = np.median([v["shape_zyx"] for v in volumes.values()], axis=0)
    totals = {name: sum(v["class_voxels"][name] for v in volumes.values())
              for name in [*label_scheme.CLASS_NAMES.values(), NOT_ANNOTATED]}
    annotated = sum(n for name, n in totals.items() if name != NOT_ANNOTATED)
    everything = annotated + totals[NOT_ANNOTATED]
    return {
        "format": FINGERPRINT_FORMAT,
        "percentiles": [float(p) for p in percentiles],
        "volumes": volumes,
        "voxel_size_um": [float(s) for s in spacing],
        "shape_zyx": [int(round(s)) for s in shape],
        "class_voxels": totals,
        "class_fraction": {name: (n / annotated if annotated else 0.0)
                           for name, n in totals.items() if name != NOT_ANNOTATED},
        "annotated_fraction": annotated / everything if everything else 0.0,
    }


def fingerprint_arrays(items: Iterable[tuple[str, np.ndarray, np.ndarray, Sequence[float]]],
                       percentiles: Sequence[float]) -> dict[str, Any]:
    """Fingerprint of in-memory ``(id, image, label, spacing_um)`` volumes (e.g. phantoms)."""
    return summarise({vid: volume_fingerprint(img, lab, sp, percentiles) for vid, img, lab, sp in items}, percentiles)


def dataset_fingerprint(spec: DatasetSpec, percentiles: Sequence[float],
                        cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The fingerprint of every volume in a dataset, read from the cache when possible.

    The cache key covers ``dataset.json``'s bytes, the size and modification time of
    every file it lists, and the percentiles, so editing or replacing a volume recomputes
    it. The cache lives in ``cache_dir/fingerprints/<key>.json``; inputs are never written.
    """
    key = fingerprint_key(spec, percentiles)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    cached = cache / "fingerprints" / f"{key}.json"
    if cached.is_file():
        try:
            found = json.loads(cached.read_text())
            if found.get("format") == FINGERPRINT_FORMAT and found.get("key") == key:
                return found
        except json.JSONDecodeError:
            pass
    fingerprint = summarise({entry.id: _entry_fingerprint(entry, spec.label_map, percentiles)
                             for entry in spec.volumes}, percentiles)
    fingerprint.update(key=key, dataset=str(spec.path))
    write_json(cached, fingerprint)
    return fingerprint


def fingerprint_key(spec: DatasetSpec, percentiles: Sequence[float]) -> str:
    """A SHA-256 over ``dataset.json``, its files' sizes and mtimes, and the percentiles."""
    digest = hashlib.sha256(spec.path.read_bytes())
    digest.update(str(spec.path.resolve()).encode())
    digest.update(json.dumps([float(p) for p in percentiles]).encode())
    for entry in spec.volumes:
        for name in (entry.image, entry.label):
            root, _ = split_inner_path(name)
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            for file in files:
                stat = file.stat()
                digest.update(f"{file}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def _entry_fingerprint(entry: VolumeEntry, label_map: dict[int, int], percentiles: Sequence[float]) -> dict[str, Any]:
    from roidetect.learn.dataset import open_image
    from roidetect.volume import open_volume

    image, fill = open_image(entry)
    label = label_scheme.relabelled(open_volume(entry.label, image.spacing_um), label_map)
    return volume_fingerprint(image, label, image.spacing_um, percentiles, fill=fill)


def default_patch_size(spacing_um: Sequence[float], shape_zyx: Sequence[int], divisor: Sequence[int],
                       max_voxels: int) -> tuple[int, int, int]:
    """A patch of at most ``max_voxels`` voxels spanning similar physical lengths per axis.

    Axes with coarser voxels get proportionally fewer voxels (anisotropic scans), no axis is
    longer than the median volume, and every edge is a multiple of its ``divisor`` (what the
    network's down-sampling needs), at least the divisor.

    Parameters
    ----------
    spacing_um : (3,) float
        Median voxel size (z, y, x) of the training volumes.
    shape_zyx : (3,) int
        Median volume shape.
    divisor : (3,) int
        Required factor of each edge (z, y, x).
    max_voxels : int
        Budget, e.g. 64**3.

    Returns
    -------
    (3,) tuple of int
    """
    spacing = np.asarray(spacing_um, dtype=float)
    shape = np.asarray(shape_zyx, dtype=float)
    relative = spacing.min() / spacing
    patch = np.zeros(3)
    fixed = np.zeros(3, dtype=bool)
    while True:
        free = ~fixed
        budget = max_voxels / np.prod(patch[fixed])
        patch[free] = relative[free] * (budget / np.prod(relative[free])) ** (1.0 / free.sum())
        too_long = free & (patch > shape)
        if not too_long.any() or np.array_equal(too_long, free):
            patch = np.minimum(patch, shape)
            break
        patch[too_long] = shape[too_long]
        fixed |= too_long
    step = np.asarray(divisor, dtype=float)
    edges = np.maximum(step, np.floor(patch / step + 1e-6) * step)
    return tuple(int(e) for e in edges)  # type: ignore[return-value]
