"""Scan windows on the model's voxel grid and back, with one grid for the whole scan.

When a scan's voxel size differs from the model's, each window is resampled to model voxels
before the network and its probabilities are mapped back after. Both use one *global* model
grid: model voxel ``j`` along an axis covers scan coordinates ``[j / s, (j + 1) / s)`` (scan
voxel ``i`` covers ``[i, i + 1)``; ``s`` is model voxels per scan voxel). Windows that overlap
therefore see the same model voxels, and their blended probabilities are those of aligned
model voxels, as on a scan of the model's voxel size.

- **To the model** (:func:`to_model_grid`): the window is sampled at the centres of the model
  voxels that hold its scan voxels' centres, by linear interpolation, after a Gaussian
  anti-aliasing blur (standard deviation ``(1 / s - 1) / 2`` scan voxels) where the scan is
  finer than the model.
- **Back** (:func:`to_scan_grid`): each scan voxel takes the value of the model voxel holding
  its centre (the nearest model voxel). A detection's score is the mean probability over its
  voxels, calibrated on the model's voxels; interpolated values would add edge voxels with
  values the model never gave, and lower every score.

Interpolating each window on its own (edges to edges) instead gave overlapping windows
slightly different grids; blending them smeared every defect's edge, and on the held-out
phantoms re-gridded to 35 nm the calibrated scores fell until ``min_score`` hid every pore.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def model_span(length: int, scale: float) -> int:
    """Most model voxels that hold the centres of ``length`` consecutive scan voxels.

    ``length`` itself where ``scale`` is 1 (no resampling along the axis).
    """
    return length if scale == 1.0 else math.floor((length - 1) * scale) + 2


def scan_length(model_length: int, scale: float) -> int:
    """Longest scan window whose :func:`model_span` fits in ``model_length`` model voxels."""
    if scale == 1.0:
        return model_length
    length = max(1, math.ceil((model_length - 1) / scale))
    while length > 1 and model_span(length, scale) > model_length:  # guards the division's rounding
        length -= 1
    return length


def _first_model_voxel(start: int, scale: float) -> int:
    """The model voxel holding the centre of scan voxel ``start``."""
    return math.floor((start + 0.5) * scale)


def to_model_grid(window: torch.Tensor, start: Sequence[int], scale: Sequence[float],
                  shape: Sequence[int]) -> torch.Tensor:
    """One scan window sampled on the global model grid.

    Parameters
    ----------
    window : float32 tensor, shape (C, z, y, x)
        Scan voxels from ``start`` on.
    start : (3,) ints
        The window's first scan voxel (z, y, x) in the scan.
    scale : (3,) floats
        Model voxels per scan voxel.
    shape : (3,) ints
        Model voxels to return per axis (at least :func:`model_span` of the window); those past
        the window repeat its edge.

    Returns
    -------
    float32 tensor, shape (C, *shape)
        Model voxel ``k`` along an axis is global model voxel ``_first_model_voxel(start) + k``.
    """
    x = window
    for axis, (a, s, n_model) in enumerate(zip(start, scale, shape)):
        dim = axis + 1
        n_scan = x.shape[dim]
        if s == 1.0:
            x = _repeat_edge(x, dim, n_model)
            continue
        if s < 1.0:
            x = _gaussian_blur(x, dim, (1.0 / s - 1.0) / 2.0)
        j = torch.arange(n_model, dtype=torch.float64) + _first_model_voxel(a, s)
        positions = ((j + 0.5) / s - 0.5 - a).clamp(0.0, n_scan - 1.0)
        x = _linear(x, dim, positions.to(x.device))
    return x


def to_scan_grid(values: torch.Tensor, start: Sequence[int], scale: Sequence[float],
                 shape: Sequence[int]) -> torch.Tensor:
    """Model-grid outputs of :func:`to_model_grid`'s window back on its scan voxels.

    Parameters
    ----------
    values : tensor, shape (C, mz, my, mx)
        Outputs on the model voxels :func:`to_model_grid` returned (or more along an axis).
    start, scale
        As for :func:`to_model_grid`.
    shape : (3,) ints
        The window's shape in scan voxels.

    Returns
    -------
    tensor, shape (C, *shape)
        Each scan voxel holds the value of the model voxel holding its centre.
    """
    if all(s == 1.0 for s in scale):
        return values[(slice(None), *(slice(0, n) for n in shape))]
    z, y, x = (_model_index(a, s, n).to(values.device) for a, s, n in zip(start, scale, shape))
    return values[:, z[:, None, None], y[None, :, None], x[None, None, :]]


def _model_index(start: int, scale: float, length: int) -> torch.Tensor:
    """Along one axis: for each of ``length`` scan voxels from ``start``, the model voxel holding
    its centre, counted from :func:`_first_model_voxel`."""
    if scale == 1.0:
        return torch.arange(length)
    centres = torch.arange(length, dtype=torch.float64) + start + 0.5
    return torch.floor(centres * scale).long() - _first_model_voxel(start, scale)


def _repeat_edge(x: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    """``x`` cut or extended (repeating its last slice) to ``length`` along ``dim``."""
    n = x.shape[dim]
    if length <= n:
        return x.narrow(dim, 0, length)
    return torch.cat([x, x.narrow(dim, n - 1, 1).expand(*x.shape[:dim], length - n, *x.shape[dim + 1:])], dim)


def _linear(x: torch.Tensor, dim: int, positions: torch.Tensor) -> torch.Tensor:
    """``x`` sampled at fractional indices ``positions`` (within [0, n - 1]) along ``dim``."""
    low = positions.floor().long()
    high = (low + 1).clamp(max=x.shape[dim] - 1)
    weight = (positions - low).to(x.dtype)
    shape = [1] * x.dim()
    shape[dim] = -1
    below, above = x.index_select(dim, low), x.index_select(dim, high)
    return below + (above - below) * weight.view(shape)


def _gaussian_blur(x: torch.Tensor, dim: int, sigma: float) -> torch.Tensor:
    """1D Gaussian blur of ``x`` along ``dim`` (edges repeated), as a weighted sum of shifted views."""
    radius = max(1, math.ceil(3.0 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    weights = (kernel / kernel.sum()).tolist()
    n = x.shape[dim]
    edge = [*x.shape[:dim], radius, *x.shape[dim + 1:]]
    padded = torch.cat([x.narrow(dim, 0, 1).expand(edge), x, x.narrow(dim, n - 1, 1).expand(edge)], dim)
    blurred = padded.narrow(dim, 0, n) * weights[0]
    for shift, weight in enumerate(weights[1:], start=1):
        blurred.add_(padded.narrow(dim, shift, n), alpha=weight)
    return blurred
