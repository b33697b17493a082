"""Smooth Gaussian random fields, the raw material of textures, surfaces and drifts.

A field is a sum of Gaussian bumps with random (standard normal) weights placed on a regular
grid whose spacing equals the correlation length. The sum is separable, so it is computed as
one small matrix product per axis (BLAS), which is far cheaper than filtering a full-size
white-noise volume: a 128^3 field takes a few milliseconds to tens of milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _axis_basis(n: int, scale: float) -> np.ndarray:
    """Gaussian bumps of width ``scale`` every ``scale`` voxels, evaluated at 0..n-1.

    Rows are normalised to unit sum of squares, so a field built from unit-variance
    weights has unit variance at every position.
    """
    scale = max(float(scale), 0.5)
    centres = np.arange(-3, n / scale + 4) * scale
    offsets = (np.arange(n, dtype=np.float64)[:, None] - centres[None, :]) / scale
    basis = np.exp(-0.5 * offsets**2)
    basis /= np.sqrt((basis**2).sum(axis=1, keepdims=True))
    return basis.astype(np.float32)


def smooth_noise(shape: Sequence[int], scale_vox: float | Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """A zero-mean, unit-variance smooth random field.

    Parameters
    ----------
    shape : sequence of int
        Output shape, any number of axes (2D height maps, 3D textures).
    scale_vox : float or sequence of float
        Correlation length in voxels, one value or one per axis (anisotropic textures such
        as graphite layers use a short length along z).
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of float32, shape ``shape``
    """
    shape = tuple(int(n) for n in shape)
    scales = np.broadcast_to(np.asarray(scale_vox, dtype=float), (len(shape),))
    bases = [_axis_basis(n, s) for n, s in zip(shape, scales)]
    field = rng.standard_normal(tuple(b.shape[1] for b in bases), dtype=np.float32)
    for axis, basis in enumerate(bases):
        field = np.moveaxis(np.tensordot(basis, field, axes=(1, axis)), 0, axis)
    return np.ascontiguousarray(field, dtype=np.float32)
