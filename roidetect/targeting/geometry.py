"""Scan coordinates, axis-aligned boxes and the sample surface, in micrometres (pure numpy).

Positions are scan coordinates ``origin_um + index * spacing_um`` of voxel centres, ordered
(z, y, x); z grows with depth, so milling goes +z. A voxel spans half a voxel either side of
its centre, so a detection's half-open voxel box [b0, b1) covers
``origin + b0 * spacing - spacing / 2`` to ``origin + b1 * spacing - spacing / 2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

BBOX_LO = ("bbox_z0", "bbox_y0", "bbox_x0")
BBOX_HI = ("bbox_z1", "bbox_y1", "bbox_x1")


@dataclass(frozen=True)
class ScanGeometry:
    """Shape, voxel size and origin of the scanned volume; all (z, y, x)."""

    shape_zyx: tuple[int, int, int]
    spacing_um: tuple[float, float, float]
    origin_um: tuple[float, float, float]

    @property
    def lo_um(self) -> np.ndarray:
        """(3,) lower edge of the scanned region (z, y, x) in um."""
        return np.asarray(self.origin_um, float) - 0.5 * np.asarray(self.spacing_um, float)

    @property
    def hi_um(self) -> np.ndarray:
        """(3,) upper edge of the scanned region (z, y, x) in um."""
        return self.lo_um + np.asarray(self.shape_zyx, float) * np.asarray(self.spacing_um, float)


def detection_boxes(detections: pd.DataFrame, geometry: ScanGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Bounding boxes of detections in um.

    Returns
    -------
    lo, hi : ndarray of float, shape (N, 3)
        Lower and upper corners (z, y, x), voxel edges included.
    """
    spacing = np.asarray(geometry.spacing_um, float)
    origin = np.asarray(geometry.origin_um, float)
    lo = origin + detections[list(BBOX_LO)].to_numpy(float) * spacing - spacing / 2
    hi = origin + detections[list(BBOX_HI)].to_numpy(float) * spacing - spacing / 2
    return lo, hi


def boxes_overlap(lo: np.ndarray, hi: np.ndarray, los: np.ndarray, his: np.ndarray) -> np.ndarray:
    """Whether box (lo, hi) shares a positive volume with each box of (los, his).

    Parameters
    ----------
    lo, hi : (3,) arrays
    los, his : (M, 3) arrays

    Returns
    -------
    ndarray of bool, shape (M,)
        Boxes that only touch on a face do not overlap.
    """
    los = np.asarray(los, float).reshape(-1, 3)
    his = np.asarray(his, float).reshape(-1, 3)
    return np.all((los < hi) & (lo < his), axis=1)


class SurfaceMap:
    """The sample's top surface: z in scan um for every (y, x) voxel column.

    Parameters
    ----------
    z_um : ndarray, shape (Y, X)
        Surface z in scan coordinates (um), as in a prediction folder's ``surface.tif``.
    geometry : ScanGeometry
    """

    def __init__(self, z_um: np.ndarray, geometry: ScanGeometry) -> None:
        self.z_um = np.asarray(z_um, dtype=float)
        self.geometry = geometry
        if self.z_um.shape != tuple(geometry.shape_zyx[1:]):
            raise ValueError(f"surface shape {self.z_um.shape} differs from the scan's (Y, X) "
                             f"{tuple(geometry.shape_zyx[1:])}")

    def _index(self, value_um: np.ndarray, axis: int) -> np.ndarray:
        origin, spacing = self.geometry.origin_um[axis], self.geometry.spacing_um[axis]
        index = np.rint((np.asarray(value_um, float) - origin) / spacing).astype(int)
        return np.clip(index, 0, self.z_um.shape[axis - 1] - 1)

    def at(self, y_um: np.ndarray | float, x_um: np.ndarray | float) -> np.ndarray:
        """Surface z (um) at lateral positions; outside the scan the nearest edge value."""
        return self.z_um[self._index(y_um, 1), self._index(x_um, 2)]

    def sample(self, y_range: tuple[float, float], x_range: tuple[float, float],
               max_points: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Surface on a regular grid of cell centres covering a lateral rectangle.

        Parameters
        ----------
        y_range, x_range : (lo, hi) in um
        max_points : int
            At most this many cells per axis (cells are never finer than a voxel).

        Returns
        -------
        z : ndarray, shape (ny, nx)
            Surface z (um) at the cell centres.
        y, x : ndarray, shapes (ny,), (nx,)
            Cell centres (um).
        cell_area : float
            Area of one cell (um^2); ``cell_area * z.size`` is the rectangle's area.
        """
        centres = []
        for (lo, hi), axis in ((y_range, 1), (x_range, 2)):
            length = max(hi - lo, 0.0)
            n = int(np.clip(np.ceil(length / self.geometry.spacing_um[axis]), 1, max_points))
            centres.append(lo + (np.arange(n) + 0.5) * (length / n))
        y, x = centres
        z = self.z_um[np.ix_(self._index(y, 1), self._index(x, 2))]
        area = (max(y_range[1] - y_range[0], 0.0) / len(y)) * (max(x_range[1] - x_range[0], 0.0) / len(x))
        return z, y, x, area


def material_between(surface_z: np.ndarray, z_top: np.ndarray | float, z_bottom: np.ndarray | float,
                     cell_area: float) -> float:
    """Volume (um^3) of material between two depths over a sampled footprint.

    Material lies below the surface, so each cell holds
    ``clip(z_bottom - max(z_top, surface), 0)`` of it.

    Parameters
    ----------
    surface_z : ndarray, shape (ny, nx)
        From :meth:`SurfaceMap.sample`.
    z_top, z_bottom : float or arrays broadcastable to ``surface_z``
        Limits of the layer (um, z grows with depth).
    cell_area : float
    """
    thickness = np.asarray(z_bottom, float) - np.maximum(np.asarray(z_top, float), surface_z)
    return float(np.clip(thickness, 0.0, None).sum() * cell_area)
