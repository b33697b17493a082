"""Training-time augmentation with MONAI dictionary transforms.

Patches arrive as ``{"image": (1, Z, Y, X) float32 normalised, "label": (1, Z, Y, X)}``,
optionally with ``"weight": (1, Z, Y, X)`` per-voxel loss weights. Spatial transforms move
image, labels and weights together (labels and weights with nearest-neighbour interpolation,
so 255 stays 255); intensity transforms touch the image only. The result holds plain tensors
(no MONAI metadata), labels as uint8, weights as float32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

KEYS = ("image", "label", "weight")


def build_augmentation(flip_prob: float = 0.5, rotate90_prob: float = 0.5,
                       rotate90_planes: Sequence[Sequence[int]] = ((1, 2),),
                       scale_intensity: float = 0.1, shift_intensity: float = 0.1, intensity_prob: float = 0.5,
                       gamma: Sequence[float] = (0.7, 1.5), gamma_prob: float = 0.3,
                       noise_std: float = 0.05, noise_prob: float = 0.2,
                       blur_sigma: Sequence[float] = (0.3, 1.0), blur_prob: float = 0.2,
                       zoom: Sequence[float] = (0.85, 1.15), zoom_prob: float = 0.2,
                       enabled: bool = True) -> Any:
    """The augmentation pipeline; every argument is a Hydra ``data.augment`` key.

    Parameters
    ----------
    flip_prob : float
        Chance of mirroring along each of z, y, x independently.
    rotate90_prob : float
        Chance of a random multiple of 90 degrees in each plane of ``rotate90_planes``.
    rotate90_planes : sequence of (2,) int
        Spatial axis pairs (0 = z, 1 = y, 2 = x) to rotate in; the default rotates within
        the yx plane only, which is safe for anisotropic voxels. Add ``[0, 1]`` and
        ``[0, 2]`` for isotropic scans.
    scale_intensity, shift_intensity, intensity_prob : float
        Multiply by ``1 + U(-s, s)`` and add ``U(-o, o)`` (normalised units), each with
        probability ``intensity_prob``.
    gamma, gamma_prob : (2,) float, float
        Random gamma (contrast) in the given range.
    noise_std, noise_prob : float
        Additive Gaussian noise with standard deviation up to ``noise_std``.
    blur_sigma, blur_prob : (2,) float, float
        Gaussian blur with sigma (voxels) drawn per axis from the range.
    zoom, zoom_prob : (2,) float, float
        Anisotropic zoom: one factor per axis drawn from the range, output kept at the
        patch size.
    enabled : bool
        False gives only the final conversion (no augmentation).

    Returns
    -------
    monai.transforms.Compose
        Call it on a patch dictionary; seed it with ``set_random_state``.
    """
    from monai import transforms as mt

    steps: list[Any] = []
    if enabled:
        steps += [mt.RandFlipd(KEYS, prob=flip_prob, spatial_axis=axis, allow_missing_keys=True) for axis in range(3)]
        steps += [mt.RandRotate90d(KEYS, prob=rotate90_prob, max_k=3, spatial_axes=tuple(plane), allow_missing_keys=True)
                  for plane in rotate90_planes]
        steps += [
            mt.RandZoomd(KEYS, prob=zoom_prob, min_zoom=[zoom[0]] * 3, max_zoom=[zoom[1]] * 3,
                         mode=("trilinear", "nearest", "nearest"), padding_mode="edge", keep_size=True,
                         allow_missing_keys=True),
            mt.RandScaleIntensityd("image", factors=scale_intensity, prob=intensity_prob),
            mt.RandShiftIntensityd("image", offsets=shift_intensity, prob=intensity_prob),
            mt.RandAdjustContrastd("image", gamma=tuple(gamma), prob=gamma_prob),
            mt.RandGaussianSmoothd("image", sigma_x=tuple(blur_sigma), sigma_y=tuple(blur_sigma),
                                   sigma_z=tuple(blur_sigma), prob=blur_prob),
            mt.RandGaussianNoised("image", std=noise_std, prob=noise_prob),
        ]
    steps += [
        mt.EnsureTyped("image", dtype=torch.float32, track_meta=False),
        mt.EnsureTyped("label", dtype=torch.uint8, track_meta=False),
        mt.EnsureTyped("weight", dtype=torch.float32, track_meta=False, allow_missing_keys=True),
    ]
    return mt.Compose(steps)


def augmentation_from_config(augment: Mapping[str, Any]) -> Any:
    """:func:`build_augmentation` from a ``data.augment`` mapping (lists become tuples)."""
    return build_augmentation(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in augment.items()})
