"""Running the network on a batch of scan windows: resampling, padding, precision, TTA.

A :class:`WindowModel` takes windows cut from the normalised scan (scan voxels) and returns
class probabilities on the same voxels. In between it resamples each window to the model's
voxel size when the scan's differs (trilinear up, area-averaged down), pads it to a shape
the network accepts, runs the network under the chosen precision for every test-time
augmentation, and maps the softmax back onto the scan's voxels (nearest model voxel, so
that detection scores mean at any voxel size what they meant in calibration).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

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


def _resample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize scan windows (B, C, z, y, x) to ``size``: area averages when shrinking, else trilinear."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    shrink = all(s <= n for s, n in zip(size, x.shape[2:]))
    if shrink:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)


def _to_scan_voxels(p: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Model-voxel outputs (B, C, z, y, x) on ``size`` scan voxels: each scan voxel takes the
    value of the model voxel whose centre is nearest to its own.

    A detection's score is the mean probability over its voxels, calibrated on the model's
    voxels. Interpolated outputs (trilinear onto a finer scan, area averages onto a coarser
    one) add edge voxels whose values mix a defect with its surroundings, values the model
    never gave: the score then falls with the scan's voxel size (a held-out scan re-gridded
    to 35 nm: raw pore scores 0.97 -> 0.88, calibrated 0.997 -> 0.4) and ``min_score`` hides
    every detection. Nearest values keep the model's own, at the model's resolution.
    """
    size = tuple(int(s) for s in size)
    if tuple(p.shape[2:]) == size:
        return p
    return F.interpolate(p, size=size, mode="nearest-exact")


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
        """Shape a scan window of shape ``window`` takes in model voxels (before padding)."""
        return tuple(max(1, int(round(w * s))) for w, s in zip(window, self.scale))  # type: ignore[return-value]

    def __call__(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean probabilities (and their standard deviation under TTA).

        Parameters
        ----------
        windows : float32 tensor, shape (B, 1, z, y, x)
            Normalised scan windows on the model's device.

        Returns
        -------
        mean : float32 tensor, shape (B, C, z, y, x)
        std : float32 tensor of the same shape, or None without TTA
        """
        scan_shape = tuple(windows.shape[2:])
        model_shape = self.model_shape(scan_shape)
        x = _resample(windows, model_shape)
        pad = [(-n) % d for n, d in zip(model_shape, self.divisor)]
        if any(pad):
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")
        total = squares = None
        for augmentation in self.augmentations:
            p = augmentation.inverse(self._softmax(augmentation.forward(x)))
            total = p if total is None else total + p
            if self.with_uncertainty:
                squares = p * p if squares is None else squares.addcmul_(p, p)
        n = len(self.augmentations)
        mean = total / n
        std = None if squares is None else (squares / n - mean * mean).clamp_(min=0).sqrt_()
        crop = (slice(None), slice(None), *(slice(0, m) for m in model_shape))
        mean = _to_scan_voxels(mean[crop], scan_shape)
        std = None if std is None else _to_scan_voxels(std[crop], scan_shape)
        return mean, std

    def _softmax(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=self.precision, enabled=self.precision != torch.float32):
            logits = self.network(x)
        return torch.softmax(logits.float(), dim=1)
