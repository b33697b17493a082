"""Reading what the report shows: a prediction folder, its scan, and a sites folder.

Nothing is loaded whole: the label map and the scan are opened lazily
(:func:`roidetect.volume.open_volume`), so later steps read only the slices they draw.
The scan is found through ``run.json``'s ``scan.path`` (or given explicitly); when it cannot
be opened the report still draws the labels and says why the scan is missing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from roidetect.errors import UserError
from roidetect.runlog import made_by_other_command
from roidetect.volume import Volume, as_predicted, open_volume, split_inner_path

PREDICTION_FILES = ("run.json", "detections.csv", "labels.tif")
"""Files a folder must hold to be read as a prediction folder."""

DETECTION_COLUMNS = ("id", "class", "score", "z_um", "y_um", "x_um")
"""Columns of ``detections.csv`` the report cannot do without."""

SITE_COLUMNS = ("rank", "x_um", "y_um", "z_um")
"""Columns of ``sites.csv`` the report cannot do without."""


@dataclass(frozen=True)
class Prediction:
    """A prediction folder opened for reading.

    Attributes
    ----------
    folder : Path
    run : dict
        The folder's ``run.json``.
    detections : DataFrame
        ``detections.csv``, one row per detection (possibly none).
    labels : Volume, shape (Z, Y, X)
        ``labels.tif`` (lazy), with the scan's voxel size and origin.
    surface_um : ndarray of float32, shape (Y, X), or None
        ``surface.tif``: z of the local sample top in scan coordinates (um).
    scan : Volume or None
        The scan the labels were predicted from, when it could be opened.
    scan_note : str
        Where the scan was read from, or why it could not be.
    """

    folder: Path
    run: dict[str, Any]
    detections: pd.DataFrame
    labels: Volume
    surface_um: np.ndarray | None
    scan: Volume | None
    scan_note: str

    @property
    def spacing_um(self) -> tuple[float, float, float]:
        return self.labels.spacing_um

    @property
    def origin_um(self) -> tuple[float, float, float]:
        return self.labels.origin_um

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.labels.shape


@dataclass(frozen=True)
class Sites:
    """A sites folder from ``roidetect suggest``.

    Attributes
    ----------
    folder : Path
    table : DataFrame
        ``sites.csv`` sorted by rank (best first).
    plan : dict
        ``sites.json`` (empty when the folder has none).
    """

    folder: Path
    table: pd.DataFrame
    plan: dict[str, Any]


def load_prediction(folder: str | os.PathLike, scan: str | os.PathLike | None = None) -> Prediction:
    """Open a prediction folder written by ``roidetect predict``.

    Parameters
    ----------
    folder : path
        Holds at least :data:`PREDICTION_FILES`.
    scan : path, optional
        The scan to draw under the labels; by default the one ``run.json`` names
        (:func:`scan_candidates`), and the report goes without it when that cannot be opened.

    Raises
    ------
    UserError
        ``folder`` is missing, is not a prediction folder, or one of its files is unreadable;
        or ``scan`` was given and cannot be opened or has another shape than the labels.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such prediction folder; give the --out folder of 'roidetect predict'")
    missing = [name for name in PREDICTION_FILES if not (folder / name).is_file()]
    if missing:
        hint = made_by_other_command(folder, "predict")
        raise UserError(f"{folder}: not a prediction folder (missing {', '.join(missing)}){hint}; "
                        "give the --out folder of 'roidetect predict'")
    run = read_json(folder / "run.json")
    scan_info = run.get("scan") if isinstance(run.get("scan"), dict) else {}
    labels = open_volume(folder / "labels.tif", scan_info.get("voxel_size_um"))
    if scan_info.get("origin_um") is not None:
        labels = replace(labels, origin_um=tuple(float(v) for v in scan_info["origin_um"]))
    detections = read_table(folder / "detections.csv", DETECTION_COLUMNS)
    surface = _read_surface(folder / "surface.tif", labels.shape)
    candidates = [str(scan)] if scan is not None else scan_candidates(run, folder)
    scan_volume, note = _open_scan(candidates, labels, scan_info)
    if scan_volume is None:
        if scan is not None:
            raise UserError(f"--scan {scan}: {note}")
        note = f"scan not shown: {note}; pass --scan to show it"
    return Prediction(folder, run, detections, labels, surface, scan_volume, note)


def load_sites(folder: str | os.PathLike) -> Sites:
    """Open a sites folder written by ``roidetect suggest`` (``sites.csv``, optional ``sites.json``).

    Raises
    ------
    UserError
        ``folder`` is missing, holds no ``sites.csv``, or the table lacks :data:`SITE_COLUMNS`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such sites folder; give the --out folder of 'roidetect suggest'")
    if not (folder / "sites.csv").is_file():
        hint = made_by_other_command(folder, "suggest")
        raise UserError(f"{folder}: not a sites folder (missing sites.csv){hint}; "
                        "give the --out folder of 'roidetect suggest'")
    table = read_table(folder / "sites.csv", SITE_COLUMNS).sort_values("rank", kind="stable")
    plan = read_json(folder / "sites.json") if (folder / "sites.json").is_file() else {}
    return Sites(folder, table.reset_index(drop=True), plan)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; anything else is a :class:`UserError`."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc}); the file may be truncated") from exc
    if not isinstance(value, dict):
        raise UserError(f"{path}: expected a JSON object at the top level")
    return value


def read_table(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """A CSV table with at least the ``required`` columns (a header without rows is fine).

    Leading lines that start with ``#`` (notes on units and conventions) are skipped.
    """
    try:
        table = pd.read_csv(path, skiprows=_leading_note_lines(path))
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path}: not a readable CSV table ({str(exc).strip() or type(exc).__name__})") from exc
    absent = [c for c in required if c not in table.columns]
    if absent:
        raise UserError(f"{path}: lacks the column(s) {', '.join(absent)}; was it written by roidetect?")
    return table


def _leading_note_lines(path: Path) -> int:
    count = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            count += 1
    return count


def _read_surface(path: Path, shape: tuple[int, int, int]) -> np.ndarray | None:
    if not path.is_file():
        return None
    import tifffile

    try:
        surface = np.squeeze(np.asarray(tifffile.imread(path), dtype=np.float32))
    except Exception as exc:
        raise UserError(f"{path}: not a readable TIFF ({exc})") from exc
    if surface.shape != shape[1:]:
        raise UserError(f"{path}: surface has shape {surface.shape}, labels.tif has (Y, X) = {shape[1:]}")
    return surface


def scan_candidates(run: dict[str, Any], folder: Path) -> list[str]:
    """Where the scan of a prediction may be, in the order to try.

    ``run.json``'s ``scan.path`` as written (relative to the working directory), the absolute
    path recorded under ``inputs.scan.path``, and ``scan.path`` relative to the prediction folder.
    """
    scan = run.get("scan") if isinstance(run.get("scan"), dict) else {}
    inputs = run.get("inputs") if isinstance(run.get("inputs"), dict) else {}
    recorded = inputs.get("scan") if isinstance(inputs.get("scan"), dict) else {}
    candidates = [str(p) for p in (scan.get("path"), recorded.get("path")) if p]
    if scan.get("path"):
        file_path, inner = split_inner_path(str(scan["path"]))
        if not file_path.is_absolute():
            candidates.append(f"{folder / file_path}:{inner}" if inner else str(folder / file_path))
    return list(dict.fromkeys(candidates))


def _open_scan(candidates: list[str], labels: Volume, scan_info: dict[str, Any]) -> tuple[Volume | None, str]:
    """The first candidate that opens, as a lazy Volume with the labels' geometry, and its path;
    else None and why not.

    A prediction of a region (``predict --region``) draws the same region of the scan.
    """
    if not candidates:
        return None, "run.json names no scan (scan.path)"
    reasons = []
    for candidate in candidates:
        try:
            scan = as_predicted(open_volume(candidate, labels.spacing_um), scan_info)
        except UserError as exc:
            reasons.append(str(exc))
            continue
        if scan.shape != labels.shape:
            return None, (f"{candidate} has shape {scan.shape}, labels.tif has {labels.shape}; "
                          "it is not the scan that was predicted")
        return replace(scan, origin_um=labels.origin_um), candidate
    return None, reasons[0]
