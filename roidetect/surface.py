"""The sample's top surface and the depth of points below it (pure numpy).

The surface is where material starts when coming down a column along +z: the first solid
voxel in each (y, x) column. Columns that fall into the open pores between particles reach
deeper, so the raw height map is smoothed with a low percentile filter (the local envelope
of the particle tops) and a Gaussian, over a window of about a particle's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def first_solid_index(solid: np.ndarray) -> np.ndarray:
    """Index of the first True voxel along z in each column.

    Parameters
    ----------
    solid : bool ndarray, shape (Z, Y, X)

    Returns
    -------
    ndarray of float32, shape (Y, X)
        z index of the first solid voxel; NaN where a column holds no solid.
    """
    solid = np.asarray(solid, dtype=bool)
    first = np.argmax(solid, axis=0).astype(np.float32)
    first[~solid.any(axis=0)] = np.nan
    return first


def smooth_height_map(height_vox: np.ndarray, spacing_um: Sequence[float], smooth_um: float = 2.0,
                      percentile: float = 20.0) -> np.ndarray:
    """Fill empty columns and smooth a raw height map into a local surface.

    Parameters
    ----------
    height_vox : ndarray, shape (Y, X)
        First-solid z index per column (NaN where none).
    spacing_um : (3,) floats
        Voxel size z, y, x in micrometres.
    smooth_um : float
        Width of the smoothing window in micrometres (about one particle diameter).
    percentile : float
        Percentile of the heights in the window taken as the local surface; low values
        follow the particle tops and ignore columns that drop into pores.

    Returns
    -------
    ndarray of float32, shape (Y, X)
        Surface z index (fractional voxels). A map with no solid at all is all zeros.
    """
    height = np.asarray(height_vox, dtype=np.float32)
    empty = np.isnan(height)
    if empty.all():
        return np.zeros_like(height)
    if empty.any():  # nearest filled column
        index = ndimage.distance_transform_edt(empty, return_distances=False, return_indices=True)
        height = height[tuple(index)]
    window = [max(1, int(round(smooth_um / s))) | 1 for s in spacing_um[1:]]
    envelope = ndimage.percentile_filter(height, percentile, size=window, mode="nearest")
    sigma = [w / 4.0 for w in window]
    return ndimage.gaussian_filter(envelope, sigma, mode="nearest").astype(np.float32)


def surface_from_mask(solid: np.ndarray, spacing_um: Sequence[float], smooth_um: float = 2.0) -> np.ndarray:
    """Local top-surface height, in micrometres from the volume's first z-slice.

    Parameters
    ----------
    solid : bool ndarray, shape (Z, Y, X)
        True where there is material (particles, binder, current collector).
    spacing_um : (3,) floats
        Voxel size z, y, x in micrometres.
    smooth_um : float
        Smoothing window (see :func:`smooth_height_map`).

    Returns
    -------
    ndarray of float32, shape (Y, X)
        Surface z in micrometres relative to voxel 0 (add ``origin_um[0]`` for scan
        coordinates).
    """
    height = smooth_height_map(first_solid_index(solid), spacing_um, smooth_um)
    return (height * np.float32(spacing_um[0])).astype(np.float32)


def depth_below_surface(surface_z_um: np.ndarray, z_vox: np.ndarray, y_vox: np.ndarray, x_vox: np.ndarray,
                        spacing_um: Sequence[float]) -> np.ndarray:
    """Depth in micrometres of points below the local surface (negative above it).

    Parameters
    ----------
    surface_z_um : ndarray, shape (Y, X)
        From :func:`surface_from_mask` (relative to voxel 0).
    z_vox, y_vox, x_vox : array-like, shape (N,)
        Point positions in (fractional) voxels.
    spacing_um : (3,) floats

    Returns
    -------
    ndarray of float64, shape (N,)
    """
    z = np.asarray(z_vox, dtype=float)
    yi = np.clip(np.rint(np.asarray(y_vox, dtype=float)).astype(int), 0, surface_z_um.shape[0] - 1)
    xi = np.clip(np.rint(np.asarray(x_vox, dtype=float)).astype(int), 0, surface_z_um.shape[1] - 1)
    return z * float(spacing_um[0]) - surface_z_um[yi, xi].astype(float)
