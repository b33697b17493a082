"""Running the network on a batch of scan windows: resampling, padding, precision, TTA.

A :class:`WindowModel` takes windows cut from the normalised scan (scan voxels) and returns
class probabilities on the same voxels. In between it resamples each window onto the scan's
model grid when the scan's voxel size differs from the model's (:mod:`roidetect.inference.regrid`),
pads it to a shape the network accepts, runs the network under the chosen precision for
every test-time augmentation, and maps the softmax back onto the scan's voxels.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from roidetect.inference.regrid import model_span, to_model_grid, to_scan_grid

_SPATIAL_DIMS = (2, 3, 4)


@dataclass(frozen=True)
class Augmentation:
    """A flip of some spatial axes followed by ``rotations`` quarter turns in the y-x plane."""

    flip: tuple[int, ...] = ()
    rotations: int = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip:
            x = torch.flip(x, self.flip)
        return torch.rot90(x, self.rotations, dims=(3, 4)) if self.rotations else x

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        if self.rotations:
            x = torch.rot90(x, -self.rotations, dims=(3, 4))
        return torch.flip(x, self.flip) if self.flip else x


def augmentations(rotations: bool = False) -> list[Augmentation]:
    """Test-time augmentations: the identity first.

    Without ``rotations``: the 8 flips of the z, y, x axes. With ``rotations``: the 16
    symmetries of a box with a square y-x cross-section (4 quarter turns in y-x, each with
    and without a flip of x and of z).
    """
    if not rotations:
        return [Augmentation(tuple(flip)) for n in range(4) for flip in itertools.combinations(_SPATIAL_DIMS, n)]
    return [Augmentation(tuple(d for d, on in ((2, fz), (4, fx)) if on), k)
            for k in range(4) for fz in (False, True) for fx in (False, True)]


def network_shape(shape: Sequence[int], divisor: Sequence[int]) -> tuple[int, int, int]:
    """The smallest input shape, at least ``shape``, that the network takes.

    Each axis is padded to a multiple of its divisor. A window that would then be a single
    voxel at the network's deepest level along every axis (a scan of a few voxels, or one
    far finer than the model) gets its longest axis doubled: instance normalisation needs
    more than one voxel.
    """
    padded = [m + (-m) % d for m, d in zip(shape, divisor)]
    if all(p == d for p, d in zip(padded, divisor)):
        longest = max(range(len(padded)), key=lambda i: shape[i])
        padded[longest] = 2 * divisor[longest]
    return tuple(padded)  # type: ignore[return-value]


class WindowModel:
    """Probabilities for batches of scan windows.

    Parameters
    ----------
    network : nn.Module
        Maps (B, 1, z, y, x) to (B, C, z, y, x) logits; in eval mode on ``device``.
    scale : (3,) floats
        Model voxels per scan voxel along z, y, x (scan voxel size / model voxel size);
        exactly 1 where no resampling is wanted.
    divisor : (3,) ints
        The network needs input sizes that are multiples of these.
    precision : torch.dtype
        ``torch.float32``, or ``torch.bfloat16`` / ``torch.float16`` for autocast.
    channels_last : bool
        Run in the channels-last 3D memory format (faster convolutions on CPU).
    augmentations : list of Augmentation
        ``[Augmentation()]`` for no TTA.
    """

    def __init__(self, network: nn.Module, scale: Sequence[float], divisor: Sequence[int],
                 precision: torch.dtype = torch.float32, channels_last: bool = False,
                 augmentations: Sequence[Augmentation] = (Augmentation(),)) -> None:
        self.device = next(network.parameters()).device
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.network = network.to(memory_format=self.memory_format)
        self.scale = tuple(float(s) for s in scale)
        self.divisor = tuple(int(d) for d in divisor)
        self.precision = precision
        self.augmentations = list(augmentations)

    @property
    def with_uncertainty(self) -> bool:
        return len(self.augmentations) > 1

    def model_shape(self, window: Sequence[int]) -> tuple[int, int, int]:
        """Model voxels a scan window of shape ``window`` takes, at most (before padding)."""
        return tuple(model_span(w, s) for w, s in zip(window, self.scale))  # type: ignore[return-value]

    def __call__(self, windows: torch.Tensor,
                 starts: Sequence[Sequence[int]] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean probabilities (and their standard deviation under TTA).

        Parameters
        ----------
        windows : float32 tensor, shape (B, 1, z, y, x)
            Normalised scan windows on the model's device.
        starts : B sequences of 3 ints, optional
            Each window's first scan voxel in the scan. Resampled windows are placed on one
            model grid for the whole scan by them (:mod:`roidetect.inference.regrid`);
            default: every window starts at the scan's origin.

        Returns
        -------
        mean : float32 tensor, shape (B, C, z, y, x)
        std : float32 tensor of the same shape, or None without TTA
        """
        scan_shape = tuple(windows.shape[2:])
        padded = network_shape(self.model_shape(scan_shape), self.divisor)
        starts = [(0, 0, 0)] * len(windows) if starts is None else starts
        x = torch.stack([to_model_grid(w, a, self.scale, padded) for w, a in zip(windows, starts)])
        total = squares = None
        for augmentation in self.augmentations:
            p = augmentation.inverse(self._softmax(augmentation.forward(x)))
            total = p if total is None else total + p
            if self.with_uncertainty:
                squares = p * p if squares is None else squares.addcmul_(p, p)
        n = len(self.augmentations)
        mean = total / n
        std = None if squares is None else (squares / n - mean * mean).clamp_(min=0).sqrt_()
        mean = torch.stack([to_scan_grid(m, a, self.scale, scan_shape) for m, a in zip(mean, starts)])
        if std is not None:
            std = torch.stack([to_scan_grid(d, a, self.scale, scan_shape) for d, a in zip(std, starts)])
        return mean, std

    def _softmax(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=self.precision, enabled=self.precision != torch.float32):
            logits = self.network(x)
        return torch.softmax(logits.float(), dim=1)
