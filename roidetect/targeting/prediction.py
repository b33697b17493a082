"""Read what targeting needs from a prediction folder (docs/architecture.md).

``detections.csv`` (one row per detection), ``surface.tif`` (float32 (Y, X) surface z in scan
um) and the ``scan`` entry of ``run.json`` (shape, voxel size, origin). Inputs are only read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from roidetect.errors import UserError
from roidetect.runlog import made_by_other_command
from roidetect.targeting.geometry import BBOX_HI, BBOX_LO, ScanGeometry, SurfaceMap

REQUIRED_COLUMNS = ("id", "class", "score", "z_um", "y_um", "x_um", *BBOX_LO, *BBOX_HI, "equivalent_diameter_um")
NUMERIC_COLUMNS = tuple(c for c in REQUIRED_COLUMNS if c != "class")


@dataclass(frozen=True)
class Prediction:
    """The inputs of targeting, read from one prediction folder."""

    detections: pd.DataFrame
    surface: SurfaceMap
    geometry: ScanGeometry
    files: dict[str, Path]


def read_prediction(pred_dir: str | os.PathLike) -> Prediction:
    """Read and check ``detections.csv``, ``surface.tif`` and ``run.json`` of a prediction folder."""
    folder = Path(pred_dir)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder; pass the output folder of 'roidetect predict'")
    files = {name: folder / name for name in ("detections.csv", "surface.tif", "run.json")}
    for path in files.values():
        if not path.is_file():
            hint = made_by_other_command(folder, "predict")
            raise UserError(f"{path}: missing; {folder} is not a complete prediction folder{hint}; "
                            "pass the output folder of 'roidetect predict' (or re-run it)")
    geometry = _read_geometry(files["run.json"])
    surface = _read_surface(files["surface.tif"], geometry)
    try:
        table = pd.read_csv(files["detections.csv"])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{files['detections.csv']}: not a readable CSV ({' '.join(str(exc).split())})") from exc
    detections = check_detections(table, str(files["detections.csv"]))
    return Prediction(detections=detections, surface=SurfaceMap(surface, geometry), geometry=geometry, files=files)


def check_detections(table: pd.DataFrame, source: str = "detections") -> pd.DataFrame:
    """Check a detections table against the contract and return a clean copy.

    Missing columns, non-numeric or non-finite values, duplicate ids and scores outside [0, 1]
    are :class:`UserError`. ``uncertainty`` is optional (empty without TTA).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"{source}: missing column(s) {', '.join(missing)}; expected the detections.csv "
                        "columns of docs/architecture.md")
    table = table.copy()
    for column in NUMERIC_COLUMNS:
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(float)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise UserError(f"{source}: column {column!r} has a missing or non-numeric value in row {bad[0] + 1}")
        table[column] = values
    if "uncertainty" in table.columns:
        values = pd.to_numeric(table["uncertainty"], errors="coerce")
        bad = np.flatnonzero((values.isna() & table["uncertainty"].notna()).to_numpy())
        if bad.size:
            raise UserError(f"{source}: column 'uncertainty' has a non-numeric value in row {bad[0] + 1}")
        table["uncertainty"] = values
    table["id"] = table["id"].astype(int)
    table["class"] = table["class"].astype(str)
    if table["id"].duplicated().any():
        raise UserError(f"{source}: duplicate detection id {int(table['id'][table['id'].duplicated()].iloc[0])}")
    if ((table["score"] < 0) | (table["score"] > 1)).any():
        raise UserError(f"{source}: scores must lie in [0, 1]")
    return table.reset_index(drop=True)


def _read_geometry(path: Path) -> ScanGeometry:
    try:
        run: Any = json.loads(path.read_text())
        scan = run["scan"]
        shape = tuple(int(v) for v in scan["shape_zyx"])
        spacing = tuple(float(v) for v in scan["voxel_size_um"])
        origin = tuple(float(v) for v in scan.get("origin_um") or (0.0, 0.0, 0.0))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{path}: needs \"scan\": {{\"shape_zyx\", \"voxel_size_um\", \"origin_um\"}} "
                        f"({type(exc).__name__}: {exc})") from exc
    if len(shape) != 3 or len(spacing) != 3 or len(origin) != 3:
        raise UserError(f"{path}: scan shape_zyx, voxel_size_um and origin_um need three values (z, y, x)")
    if min(shape) < 1 or not all(np.isfinite(spacing)) or min(spacing) <= 0 or not all(np.isfinite(origin)):
        raise UserError(f"{path}: scan shape and voxel size must be positive and finite")
    return ScanGeometry(shape, spacing, origin)  # type: ignore[arg-type]


def _read_surface(path: Path, geometry: ScanGeometry) -> np.ndarray:
    import tifffile

    try:
        surface = np.asarray(tifffile.imread(path), dtype=float)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable TIFF ({exc})") from exc
    surface = np.squeeze(surface)
    if surface.shape != tuple(geometry.shape_zyx[1:]):
        raise UserError(f"{path}: surface shape {surface.shape} does not match the scan's (Y, X) = "
                        f"{tuple(geometry.shape_zyx[1:])}")
    if not np.isfinite(surface).all():
        raise UserError(f"{path}: surface holds NaN or infinite values")
    return surface
