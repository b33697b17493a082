"""Per-defect ground-truth entries of a phantom manifest: size, centroid and depth.

Depth is measured exactly as in detection tables: below the local top surface that
:func:`roidetect.surface.surface_from_mask` finds in the solid mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from roidetect.surface import depth_below_surface, surface_from_mask


def defect_entries(instances: np.ndarray, records: list[dict[str, Any]], solid: np.ndarray,
                   spacing_um: Sequence[float]) -> list[dict[str, Any]]:
    """Complete each defect record with its measured geometry.

    Parameters
    ----------
    instances : int ndarray, shape (Z, Y, X)
        Defect id per voxel (ids 1..N match ``records``).
    records : list of dict
        From :func:`roidetect.synth.defects.carve_defects` (``id``, ``class``, ...).
    solid : bool ndarray, shape (Z, Y, X)
        Material (not void), for the top surface.
    spacing_um : (3,) voxel size.

    Returns
    -------
    list of dict
        ``id, class, class_id, centroid_vox, centroid_um, voxels, volume_um3, depth_um,
        bbox_vox`` (z0, y0, x0, z1, y1, x1; half-open) followed by the record's other keys.
    """
    if not records:
        return []
    spacing = np.asarray(spacing_um, dtype=float)
    flat = np.flatnonzero(instances)
    ids = instances.ravel()[flat].astype(np.int64)
    coords = np.unravel_index(flat, instances.shape)
    n = len(records) + 1
    voxels = np.bincount(ids, minlength=n)
    centroid = np.stack([np.bincount(ids, weights=c, minlength=n) for c in coords], axis=1)
    centroid /= np.maximum(voxels, 1)[:, None]
    boxes = ndimage.find_objects(instances.astype(np.int32, copy=False), max_label=n - 1)
    surface = surface_from_mask(solid, spacing)
    depth = depth_below_surface(surface, centroid[:, 0], centroid[:, 1], centroid[:, 2], spacing)
    entries = []
    for record in records:
        i = record["id"]
        box = boxes[i - 1]
        extra = {k: v for k, v in record.items() if k not in ("id", "class", "class_id")}
        entries.append({
            "id": i, "class": record["class"], "class_id": record["class_id"],
            "centroid_vox": [round(float(c), 3) for c in centroid[i]],
            "centroid_um": [round(float(c * s), 5) for c, s in zip(centroid[i], spacing)],
            "voxels": int(voxels[i]),
            "volume_um3": round(float(voxels[i] * spacing.prod()), 8),
            "depth_um": round(float(depth[i]), 5),
            "bbox_vox": [s.start for s in box] + [s.stop for s in box],
            **extra,
        })
    return entries
