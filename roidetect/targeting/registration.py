"""Scan-to-stage registration from fiducials, with predicted target registration error.

A fiducials CSV pairs points in scan coordinates (``x_um, y_um, z_um``) with the same points
measured on the instrument stage (``stage_x_um, stage_y_um, stage_z_um``); an optional
``name`` column labels them. Points here are ordered (x, y, z).

Fits (``stage = A @ scan + t``): rigid and similarity by Umeyama (1991, IEEE TPAMI 13:376),
affine by linear least squares. Errors (Fitzpatrick, West & Maurer 1998, IEEE TMI 17:694):

- FRE, the RMS residual over the fiducials;
- FLE, the fiducial localisation error, from <FRE^2> = (1 - p / (3 N)) FLE^2 with p the
  number of transform parameters (6, 7, 12; p = 6 is FWM98 eq. 10, 1 - 2/N);
- TRE at a target r: rigid by FWM98 eq. 46,
  TRE^2(r) = FLE^2 / N * (1 + 1/3 * sum_k d_k^2 / f_k^2), d_k the distance of r from the
  fiducials' k-th principal axis and f_k the RMS distance of the fiducials from it;
  similarity adds the first-order error of the scale, FLE^2 / (3 N) * |r - c|^2 / <|x - c|^2>
  (c the fiducials' centroid); affine uses the least-squares prediction variance
  TRE^2(r) = FLE^2 * h^T (H^T H)^-1 h with h = (r, 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from roidetect.errors import UserError

PARAMETERS = {"rigid": 6, "similarity": 7, "affine": 12}
MIN_FIDUCIALS = {"rigid": 3, "similarity": 3, "affine": 5}
TRE_MODELS = {
    "rigid": "Fitzpatrick, West & Maurer 1998 eq. 46",
    "similarity": "Fitzpatrick, West & Maurer 1998 eq. 46 + first-order scale term FLE^2/(3N) |r-c|^2/<|x-c|^2>",
    "affine": "least-squares prediction variance FLE^2 h^T (H^T H)^-1 h, h = (r, 1)",
}
FIDUCIAL_COLUMNS = ("x_um", "y_um", "z_um", "stage_x_um", "stage_y_um", "stage_z_um")


@dataclass(frozen=True)
class Registration:
    """A fitted scan -> stage transform and its fiducials (points (x, y, z) in um)."""

    kind: str
    matrix: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)
    scan_points: np.ndarray  # (N, 3)
    stage_points: np.ndarray  # (N, 3)
    names: tuple[str, ...]

    def apply(self, xyz: np.ndarray) -> np.ndarray:
        """Stage coordinates (um) of scan points, shape (M, 3) -> (M, 3)."""
        return np.asarray(xyz, float).reshape(-1, 3) @ self.matrix.T + self.translation

    @property
    def residuals_um(self) -> np.ndarray:
        """(N,) distance between each transformed fiducial and its measured stage position."""
        return np.linalg.norm(self.apply(self.scan_points) - self.stage_points, axis=1)

    @property
    def fre_um(self) -> float:
        """Fiducial registration error: RMS of the residuals."""
        return float(np.sqrt(np.mean(self.residuals_um ** 2)))

    @property
    def fle_um(self) -> float:
        """Fiducial localisation error estimated from the FRE: FRE * sqrt(3N / (3N - p))."""
        n = len(self.scan_points)
        return self.fre_um * float(np.sqrt(3 * n / (3 * n - PARAMETERS[self.kind])))

    @property
    def scale(self) -> float:
        """Isotropic scale of the transform: |det A|^(1/3)."""
        return float(abs(np.linalg.det(self.matrix)) ** (1 / 3))

    def predicted_tre_um(self, xyz: np.ndarray, fle_um: float | None = None) -> np.ndarray:
        """Predicted RMS target registration error (stage um) at scan points (M, 3).

        ``fle_um`` defaults to :attr:`fle_um`; pass the true FLE when it is known.
        """
        fle = self.fle_um if fle_um is None else float(fle_um)
        targets = np.asarray(xyz, float).reshape(-1, 3)
        if self.kind == "affine":
            design = np.c_[self.scan_points, np.ones(len(self.scan_points))]
            h = np.c_[targets, np.ones(len(targets))]
            leverage = np.einsum("ij,jk,ik->i", h, np.linalg.inv(design.T @ design), h)
            return fle * np.sqrt(leverage)
        centre = self.scan_points.mean(axis=0)
        _, _, axes = np.linalg.svd(self.scan_points - centre)
        fiducials = (self.scan_points - centre) @ axes.T
        points = (targets - centre) @ axes.T
        ratio = np.zeros(len(targets))
        for k in range(3):
            others = [j for j in range(3) if j != k]
            f2 = np.mean(np.sum(fiducials[:, others] ** 2, axis=1))
            ratio += np.sum(points[:, others] ** 2, axis=1) / f2
        n = len(self.scan_points)
        if self.kind == "similarity":  # the scale estimate moves a target radially from the centroid
            ratio += np.sum(points ** 2, axis=1) / np.mean(np.sum(fiducials ** 2, axis=1))
        return fle * np.sqrt((1 + ratio / 3) / n)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: transform, errors and per-fiducial residuals."""
        return {
            "kind": self.kind,
            "maps": "stage_xyz_um = matrix @ scan_xyz_um + translation_um",
            "matrix": self.matrix.tolist(),
            "translation_um": self.translation.tolist(),
            "scale": self.scale,
            "fiducials": len(self.scan_points),
            "fre_um": self.fre_um,
            "fle_um_estimated": self.fle_um,
            "residuals_um": {name: float(r) for name, r in zip(self.names, self.residuals_um)},
            "tre_model": TRE_MODELS[self.kind],
        }


def fit_registration(scan_xyz: np.ndarray, stage_xyz: np.ndarray, kind: str = "rigid",
                     names: tuple[str, ...] | None = None) -> Registration:
    """Fit ``stage = A @ scan + t`` to paired points.

    Parameters
    ----------
    scan_xyz, stage_xyz : ndarray, shape (N, 3)
        The same fiducials in scan and stage coordinates (um), ordered (x, y, z).
    kind : {"rigid", "similarity", "affine"}
    names : N labels, optional

    Raises
    ------
    UserError
        Too few fiducials for ``kind``, or fiducials that are collinear (rigid, similarity)
        or coplanar (affine).
    """
    if kind not in PARAMETERS:
        raise UserError(f"registration kind {kind!r}: use one of {', '.join(PARAMETERS)}")
    scan = np.asarray(scan_xyz, float).reshape(-1, 3)
    stage = np.asarray(stage_xyz, float).reshape(-1, 3)
    n = len(scan)
    if n < MIN_FIDUCIALS[kind]:
        raise UserError(f"{kind} registration needs at least {MIN_FIDUCIALS[kind]} fiducials, got {n}")
    spread = np.linalg.svd(scan - scan.mean(axis=0), compute_uv=False)
    rank_needed = 3 if kind == "affine" else 2
    if spread[0] == 0 or spread[rank_needed - 1] < 1e-3 * spread[0]:
        shape = "coplanar" if kind == "affine" else "collinear"
        raise UserError(f"fiducials are {shape}; a {kind} registration needs them spread in "
                        f"{rank_needed} dimensions")
    if kind == "affine":
        solution, *_ = np.linalg.lstsq(np.c_[scan, np.ones(n)], stage, rcond=None)
        matrix, translation = solution[:3].T, solution[3]
    else:
        matrix, translation = _umeyama(scan, stage, with_scale=kind == "similarity")
    labels = tuple(names) if names is not None else tuple(f"F{i + 1}" for i in range(n))
    return Registration(kind, matrix, translation, scan, stage, labels)


def _umeyama(source: np.ndarray, target: np.ndarray, with_scale: bool) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares rotation (and scale) and translation mapping source onto target."""
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    src, tgt = source - mu_s, target - mu_t
    u, d, vt = np.linalg.svd(tgt.T @ src / len(source))
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1.0
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / np.mean(np.sum(src ** 2, axis=1))) if with_scale else 1.0
    return scale * rotation, mu_t - scale * rotation @ mu_s


def read_fiducials(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read a fiducials CSV.

    Returns
    -------
    scan_xyz, stage_xyz : ndarray, shape (N, 3)
    names : tuple of N str
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: fiducials file not found")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV ({' '.join(str(exc).split())})") from exc
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in FIDUCIAL_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; a fiducials CSV has "
                        f"{', '.join(FIDUCIAL_COLUMNS)} (and optionally name)")
    values = table[list(FIDUCIAL_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        raise UserError(f"{path}: row {bad[0] + 1} has a missing or non-numeric coordinate")
    if len(np.unique(values[:, :3], axis=0)) < len(values):
        raise UserError(f"{path}: two fiducials share the same scan position")
    names = tuple(str(v) for v in table["name"]) if "name" in table.columns else None
    return values[:, :3], values[:, 3:], names or tuple(f"F{i + 1}" for i in range(len(values)))
