"""PNG orthoslices of a phantom: the scan on top, the scan with its labels overlaid below.

The three slices (xy, xz, yz) pass through the planes holding the most defect voxels, so
every preview shows defects when there are any. Colours come from
:data:`roidetect.labels.COLOURS_RGB` (pore blue, crack red, delamination amber).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from roidetect.atomic import atomic_file
from roidetect.labels import COLOURS_RGB

_MIN_PANEL_PX = 256
_GAP_PX = 4
_ALPHA = 0.55


def preview_image(image: np.ndarray, labels: np.ndarray, instances: np.ndarray | None = None) -> np.ndarray:
    """Compose the preview.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X)
    labels : uint8 ndarray, shape (Z, Y, X)
    instances : int ndarray, shape (Z, Y, X), optional
        With it, each slice is the one crossing the most distinct defects (else the most
        defect voxels).

    Returns
    -------
    uint8 ndarray, shape (H, W, 3)
        Top row: xy slice, xz slice, yz slice of the scan; bottom row: the same with labels.
    """
    z, y, x = (_busiest(labels, instances, axis) for axis in range(3))
    lo, hi = np.percentile(image[:: max(1, image.shape[0] // 16)], [0.5, 99.5])
    grey = np.clip((image.astype(np.float32) - lo) / max(float(hi - lo), 1e-6), 0, 1)
    planes = [(grey[z], labels[z]), (grey[:, y], labels[:, y]), (grey[:, :, x], labels[:, :, x])]
    scale = max(1, math.ceil(_MIN_PANEL_PX / max(image.shape)))
    plain = [_upscale(np.repeat(g[..., None], 3, axis=2), scale) for g, _ in planes]
    overlaid = [_upscale(_overlay(g, lab), scale) for g, lab in planes]
    rows = [_hstack(plain), _hstack(overlaid)]
    gap = np.ones((_GAP_PX, rows[0].shape[1], 3), dtype=np.float32)
    return np.rint(np.concatenate([rows[0], gap, rows[1]], axis=0) * 255).astype(np.uint8)


def write_preview(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray,
                  instances: np.ndarray | None = None) -> Path:
    """Write :func:`preview_image` as a PNG (atomically)."""
    import matplotlib.image

    with atomic_file(path) as tmp:
        matplotlib.image.imsave(tmp, preview_image(image, labels, instances), format="png")
    return Path(path)


def _busiest(labels: np.ndarray, instances: np.ndarray | None, axis: int) -> int:
    """Index along ``axis`` of the slice crossing the most defects (ties: most defect voxels)."""
    others = tuple(a for a in range(3) if a != axis)
    voxels = (labels > 0).sum(axis=others)
    if not voxels.any():
        return labels.shape[axis] // 2
    score = voxels / (voxels.max() + 1.0)
    if instances is not None:
        crossing = np.zeros(labels.shape[axis])
        for box in ndimage.find_objects(instances.astype(np.int32, copy=False)):
            if box is not None:
                crossing[box[axis]] += 1
        score = score + crossing
    return int(np.argmax(score))


def _overlay(grey: np.ndarray, labels: np.ndarray) -> np.ndarray:
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for class_id, colour in COLOURS_RGB.items():
        mask = labels == class_id
        if class_id == 0 or not mask.any():
            continue
        rgb[mask] = (1 - _ALPHA) * rgb[mask] + _ALPHA * np.asarray(colour, dtype=np.float32) / 255
    return rgb


def _upscale(rgb: np.ndarray, scale: int) -> np.ndarray:
    return rgb.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else rgb


def _hstack(panels: list[np.ndarray]) -> np.ndarray:
    height = max(p.shape[0] for p in panels)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=1) for p in panels]
    gap = np.ones((height, _GAP_PX, 3), dtype=np.float32)
    out = [padded[0]]
    for panel in padded[1:]:
        out += [gap, panel]
    return np.concatenate(out, axis=1)
