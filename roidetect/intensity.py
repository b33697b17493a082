"""Intensity normalisation shared by training and inference (pure numpy).

Scans from different instruments have arbitrary grey values, so every volume is mapped to
a common range by its own robust percentiles: ``(x - p_low) / (p_high - p_low)``, which
puts the dark voids near 0 and the bright solid near 1 whatever the bit depth or gain.
The percentiles are estimated from a strided subsample, so huge scans need not be read
whole.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_PERCENTILES = (0.5, 99.5)


def sample_voxels(volume: Any, max_voxels: int = 2_000_000, max_slices: int = 64) -> np.ndarray:
    """A deterministic strided subsample of a volume's voxels.

    Parameters
    ----------
    volume : array-like or :class:`roidetect.volume.Volume`, shape (Z, Y, X)
        Anything that returns numpy arrays when sliced.
    max_voxels : int
        Upper bound on the number of voxels returned.
    max_slices : int
        At most this many evenly spaced z-slices are read.

    Returns
    -------
    ndarray, shape (N,)
        The sampled values, N <= ``max_voxels``.
    """
    nz, ny, nx = (int(s) for s in volume.shape)
    zs = np.unique(np.linspace(0, nz - 1, min(nz, max_slices)).round().astype(int))
    per_slice = max(1, max_voxels // len(zs))
    step = max(1, int(np.ceil(np.sqrt(ny * nx / per_slice))))
    parts = [np.asarray(volume[int(z), ::step, ::step]).ravel() for z in zs]
    return np.concatenate(parts)[:max_voxels]


def robust_range(volume: Any, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> tuple[float, float]:
    """The (low, high) intensity percentiles of a volume, estimated from a subsample.

    A constant volume gets ``high = low + 1`` so that normalising it cannot divide by zero.
    """
    values = sample_voxels(volume).astype(np.float64)
    lo, hi = (float(v) for v in np.percentile(values, percentiles))
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def normalise(block: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map intensities so that ``lo`` -> 0 and ``hi`` -> 1 (float32, not clipped)."""
    return ((np.asarray(block, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32, copy=False)
