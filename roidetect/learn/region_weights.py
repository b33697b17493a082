"""Per-voxel loss weights that make small defect regions count (pure numpy).

Dice and cross-entropy are sums over voxels, so in a batch a 50-voxel particle/CBD gap
weighs a tenth of a 500-voxel one, and the network learns little from the small gaps that
are most of the missed ones. Here every voxel of a connected region (26-connected, one
class; the regions patch sampling balances) of ``n`` voxels gets the weight ``min(max(reference_voxels / n, 1), max_weight)``:
regions up to ``reference_voxels`` count about as much as one of that size, larger regions
keep weight 1. The weights are kept sparse (only voxels above 1), so they cost little
memory even on large training volumes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from roidetect import labels as label_scheme
from roidetect.learn.sampling import region_sizes


@dataclass(frozen=True)
class RegionWeighting:
    """Which classes get small-region weights, and how strong.

    Attributes
    ----------
    classes : tuple of int
        Class ids whose regions are weighted (empty: weighting off).
    reference_voxels : float
        Regions of at least this many voxels keep weight 1.
    max_weight : float
        Upper bound of the weight (reached by regions of ``reference_voxels / max_weight``
        voxels or fewer).
    """

    classes: tuple[int, ...]
    reference_voxels: float
    max_weight: float

    @classmethod
    def from_config(cls, settings: Mapping[str, Any] | None) -> RegionWeighting | None:
        """From the ``data.small_region_weight`` config; None when it names no class.

        Raises
        ------
        UserError
            On an unknown class name, a non-positive ``reference_voxels`` or a
            ``max_weight`` below 1.
        """
        from roidetect.errors import UserError

        if not settings or not settings.get("classes"):
            return None
        try:
            classes = tuple(label_scheme.class_id(str(name)) for name in settings["classes"])
        except KeyError as exc:
            raise UserError(f"data.small_region_weight.classes: {exc.args[0]}") from exc
        if label_scheme.BACKGROUND in classes:
            raise UserError("data.small_region_weight.classes: background has no regions to weight; "
                            f"name defect classes ({', '.join(label_scheme.DEFECT_NAMES)})")
        try:
            reference, ceiling = float(settings["reference_voxels"]), float(settings["max_weight"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"data.small_region_weight needs numbers reference_voxels and max_weight: {exc}") from exc
        if not reference > 0:
            raise UserError(f"data.small_region_weight.reference_voxels={reference}: give a positive voxel count")
        if not ceiling >= 1:
            raise UserError(f"data.small_region_weight.max_weight={ceiling}: give 1 or more (1 turns weighting off)")
        return cls(classes, reference, ceiling)


@dataclass(frozen=True)
class SparseWeights:
    """The voxels of one volume whose weight is above 1.

    Attributes
    ----------
    coords : ndarray of int64, shape (N, 3)
        Their (z, y, x) positions.
    values : ndarray of float32, shape (N,)
        Their weights (> 1).
    """

    coords: np.ndarray
    values: np.ndarray

    def patch(self, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
        """The weight map of ``volume[start:start+size]``; 1 outside the volume.

        Returns
        -------
        ndarray of float32, shape ``size``
        """
        start_a, size_a = np.asarray(start), np.asarray(size)
        weights = np.ones(tuple(int(s) for s in size_a), dtype=np.float32)
        local = self.coords - start_a
        inside = np.all((local >= 0) & (local < size_a), axis=1)
        weights[tuple(local[inside].T)] = self.values[inside]
        return weights


def region_weights(label: np.ndarray, weighting: RegionWeighting) -> SparseWeights:
    """Small-region weights of one label volume.

    Parameters
    ----------
    label : ndarray of uint8, shape (Z, Y, X)
        Label scheme values (255, not annotated, is never weighted).
    weighting : RegionWeighting

    Returns
    -------
    SparseWeights
        Every voxel of a weighted class in a region smaller than ``reference_voxels``.
    """
    coords, values = [], []
    for cid in weighting.classes:
        found = np.flatnonzero(label == cid)
        if not found.size:
            continue
        weight = np.clip(weighting.reference_voxels / region_sizes(found, label.shape), 1.0, weighting.max_weight)
        keep = weight > 1.0
        coords.append(np.stack(np.unravel_index(found[keep], label.shape), axis=1))
        values.append(weight[keep].astype(np.float32))
    if not coords:
        return SparseWeights(np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.float32))
    return SparseWeights(np.concatenate(coords).astype(np.int64), np.concatenate(values))
