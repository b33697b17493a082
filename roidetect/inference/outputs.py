"""The files of a prediction folder (``docs/architecture.md``), written block by block."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from roidetect.inference.mapped import RemappedArray
from roidetect.inference.sources import BlockResult
from roidetect.labels import CLASS_NAMES, NUM_CLASSES
from roidetect.volume import create_ome_zarr, create_tiff, write_json

PROBABILITIES = "probabilities.ome.zarr"
UNCERTAINTY = "uncertainty.ome.zarr"
INSTANCES = "instances.ome.zarr"
LABELS = "labels.tif"
SURFACE = "surface.tif"
DETECTIONS_CSV = "detections.csv"
DETECTIONS_JSON = "detections.json"

CHANNEL_NAMES = [CLASS_NAMES[c] for c in range(NUM_CLASSES)]

UNITS = {"position": "um (scan coordinates: origin_um + index * voxel_size_um)", "z y x": "voxels",
         "volume_um3": "um^3", "depth_um": "um below the local sample surface",
         "bbox": "voxels, half-open [start, stop)", "score": "probability in [0, 1]"}


def quantise(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as uint8 ``round(255 * v)`` (clipped)."""
    return np.rint(np.clip(values, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)


class ProbabilityWriter:
    """``probabilities.ome.zarr`` (and ``uncertainty.ome.zarr`` with TTA), filled block by block.

    Both are uint8 (4, Z, Y, X): ``round(255 * p)`` for the probabilities, and
    ``round(255 * std)`` for the per-class standard deviation over test-time augmentations.
    With ``resume`` the arrays an interrupted run left in ``out_dir`` are filled further.
    """

    def __init__(self, out_dir: str | os.PathLike, shape: Sequence[int], spacing_um: Sequence[float],
                 origin_um: Sequence[float], uncertainty: bool, chunks: Sequence[int], resume: bool = False) -> None:
        out = Path(out_dir)
        full = (NUM_CLASSES, *(int(s) for s in shape))
        chunk = (1, *(min(int(c), int(n)) for c, n in zip(chunks, shape)))

        def array(name: str, channels: list[str]) -> Any:
            if resume:
                return _reopen(out / name, full)
            return create_ome_zarr(out / name, full, np.uint8, spacing_um, origin_um, chunk, channels)

        self.probabilities = array(PROBABILITIES, CHANNEL_NAMES)
        self.uncertainty = array(UNCERTAINTY, [f"{name} std" for name in CHANNEL_NAMES]) if uncertainty else None

    def write(self, result: BlockResult) -> None:
        where = (slice(None), *result.core)
        self.probabilities[where] = quantise(result.probabilities)
        if self.uncertainty is not None and result.uncertainty is not None:
            self.uncertainty[where] = quantise(result.uncertainty)


def _reopen(path: Path, shape: tuple[int, ...]) -> Any:
    """The writable array of an OME-Zarr image an interrupted run created, checked against ``shape``."""
    import zarr

    from roidetect.errors import UserError

    try:
        array = zarr.open_array(str(path / "0"), mode="r+")
    except Exception as exc:
        raise UserError(f"{path}: the interrupted prediction's array cannot be opened ({exc}); start over with "
                        "--overwrite instead of --resume") from exc
    if tuple(array.shape) != shape:
        raise UserError(f"{path}: shape {tuple(array.shape)} in the interrupted prediction, {shape} now; start over "
                        "with --overwrite instead of --resume")
    return array


def create_label_outputs(out_dir: str | os.PathLike, shape: Sequence[int], spacing_um: Sequence[float],
                         origin_um: Sequence[float], chunks: Sequence[int]) -> tuple[Any, RemappedArray]:
    """Empty ``instances.ome.zarr`` (uint32) and ``labels.tif`` (uint8 ImageJ) for the detector.

    Returns
    -------
    instances : zarr array, shape (Z, Y, X)
    labels : RemappedArray, shape (Z, Y, X)
        The TIFF's pixel data, mapped only while written.
    """
    out = Path(out_dir)
    chunk = tuple(min(int(c), int(n)) for c, n in zip(chunks, shape))
    instances = create_ome_zarr(out / INSTANCES, shape, np.uint32, spacing_um, origin_um, chunk)
    labels_map = create_tiff(out / LABELS, shape, np.uint8, spacing_um)
    labels = RemappedArray(labels_map, writable=True)
    del labels_map
    return instances, labels


def write_surface(path: str | os.PathLike, surface_um: np.ndarray, spacing_um: Sequence[float]) -> Path:
    """``surface.tif``: float32 (Y, X) ImageJ image with the scan's y-x pixel size."""
    import tifffile

    _, dy, dx = (float(s) for s in spacing_um)
    tifffile.imwrite(path, np.asarray(surface_um, dtype=np.float32), imagej=True, resolution=(1.0 / dx, 1.0 / dy),
                     metadata={"unit": "um", "axes": "YX"})
    return Path(path)


def write_detections(out_dir: str | os.PathLike, table: pd.DataFrame, scan: dict[str, Any]) -> None:
    """``detections.csv`` and ``detections.json`` (``{"units", "scan", "detections"}``)."""
    out = Path(out_dir)
    table.to_csv(out / DETECTIONS_CSV, index=False)
    rows = json.loads(table.to_json(orient="records"))
    write_json(out / DETECTIONS_JSON, {"units": UNITS, "scan": scan, "detections": rows})
