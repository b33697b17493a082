"""Class-balanced patch sampling (pure numpy).

Defects fill a tiny share of a scan and cracks are 1-3 voxels thin, so uniformly placed
patches would show a network almost nothing but background. Each patch is instead centred
(with some jitter) on a voxel of a class drawn with configurable probabilities. Within a
class every connected region is equally likely, whatever its size: one collector-wide gap of
10,000 voxels would otherwise take nearly every delamination patch from the small
particle/CBD gaps beside it. Only annotated voxels are ever chosen as centres, so volumes
annotated on a few slices yield patches that hold annotations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from roidetect import labels as label_scheme


def index_classes(label: np.ndarray, rng: np.random.Generator, max_per_class: int = 20_000) -> dict[int, np.ndarray]:
    """Where each class lies in a label volume, as a subsample of flat voxel indices.

    Parameters
    ----------
    label : ndarray of uint8, shape (Z, Y, X)
        Label scheme values; 255 (not annotated) voxels are never indexed.
    rng : numpy Generator
    max_per_class : int
        At most this many indices are kept per class (a random subset).

    Returns
    -------
    dict
        Class id -> int64 array of flat indices into ``label``, drawn so that a uniform pick
        from it lands in each connected region (26-connected) of the class equally often
        (indices may repeat); classes that do not occur are absent.
    """
    flat = label.reshape(-1)
    index: dict[int, np.ndarray] = {}
    defect_voxels = np.flatnonzero((flat != label_scheme.BACKGROUND) & (flat != label_scheme.IGNORE))
    defect_classes = flat[defect_voxels]
    for cid in label_scheme.DEFECT_CLASSES:
        found = defect_voxels[defect_classes == cid]
        if found.size:
            index[cid] = _region_balanced(found, label.shape, max_per_class, rng)
    # Background is common: draw random voxels and keep the background ones, falling back
    # to a full scan only when background is rare (e.g. a few annotated slices).
    draws = rng.integers(0, flat.size, size=min(flat.size, 4 * max_per_class))
    background = np.unique(draws[flat[draws] == label_scheme.BACKGROUND])
    if background.size < min(max_per_class, 64):
        background = np.flatnonzero(flat == label_scheme.BACKGROUND)
    if background.size:
        index[label_scheme.BACKGROUND] = _at_most(background, max_per_class, rng)
    return index


def region_sizes(found: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Size of the connected region (26-connected) each of the voxels ``found`` belongs to.

    Parameters
    ----------
    found : ndarray of int, shape (N,)
        Flat indices of the voxels of one class, non-empty.
    shape : (3,) int
        Shape of the volume they index.

    Returns
    -------
    ndarray of int, shape (N,)
        Voxel count of each one's region (only ``found`` counts).
    """
    coords = np.unravel_index(found, shape)
    low = [int(c.min()) for c in coords]
    local = tuple(c - lo for c, lo in zip(coords, low))
    mask = np.zeros([int(c.max()) + 1 for c in local], dtype=bool)  # the class's bounding box only
    mask[local] = True
    regions, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    region = regions[local]
    return np.bincount(region)[region]


def _region_balanced(found: np.ndarray, shape: tuple[int, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` of the flat indices ``found`` (one class), each connected region equally likely."""
    sizes = region_sizes(found, shape)
    if sizes[0] == found.size:  # one region
        return _at_most(found, n, rng)
    weights = 1.0 / sizes
    return rng.choice(found, size=n, p=weights / weights.sum())


def _at_most(values: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return values if values.size <= n else rng.choice(values, size=n, replace=False)


@dataclass(frozen=True)
class PatchSampler:
    """Chooses where to cut training patches.

    Parameters
    ----------
    patch_size : (3,) int
        Patch shape (z, y, x) in voxels.
    class_probabilities : mapping of class id to float
        Chance that a patch is centred on each class; classes absent from the volumes
        offered share out their chance among the others.
    jitter : float
        The centre voxel lands anywhere within +-``jitter`` * patch edge of the patch centre,
        so defects are not always in the middle.
    """

    patch_size: tuple[int, int, int]
    class_probabilities: Mapping[int, float]
    jitter: float = 0.25

    def sample(self, shapes: Sequence[Sequence[int]], indexes: Sequence[Mapping[int, np.ndarray]],
               rng: np.random.Generator) -> tuple[int, np.ndarray]:
        """Pick a volume and a patch origin.

        Parameters
        ----------
        shapes : sequence of (3,) int
            Shapes of the candidate volumes.
        indexes : sequence of dict
            :func:`index_classes` of each volume.
        rng : numpy Generator

        Returns
        -------
        volume : int
            Index into ``shapes``.
        start : ndarray of int, shape (3,)
            Patch origin; it may lie partly outside a volume smaller than the patch (see
            :func:`crop`).
        """
        present = [c for c in sorted(self.class_probabilities)
                   if self.class_probabilities[c] > 0 and any(c in idx for idx in indexes)]
        if not present:
            present = sorted({c for idx in indexes for c in idx})
        if not present:
            raise ValueError("no annotated voxels to sample patches from")
        weights = np.array([max(self.class_probabilities.get(c, 0.0), 0.0) for c in present])
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(present), 1.0 / len(present))
        cid = present[int(rng.choice(len(present), p=weights))]
        holders = [i for i, idx in enumerate(indexes) if cid in idx]
        volume = holders[int(rng.integers(len(holders)))]
        flat = indexes[volume][cid][int(rng.integers(indexes[volume][cid].size))]
        centre = np.array(np.unravel_index(int(flat), tuple(shapes[volume])))
        size = np.asarray(self.patch_size)
        offset = rng.integers(-(size * self.jitter).astype(int), (size * self.jitter).astype(int) + 1)
        start = centre - size // 2 + offset
        start = np.clip(start, 0, np.maximum(np.asarray(shapes[volume]) - size, 0))
        return volume, start


def crop(array: np.ndarray, start: Sequence[int], size: Sequence[int], pad_value: float | None) -> np.ndarray:
    """Cut ``array[start:start+size]``, padding where the patch leaves the volume.

    Parameters
    ----------
    array : ndarray, shape (Z, Y, X)
    start, size : (3,) int
    pad_value : float or None
        Value for voxels outside the volume; None repeats the edge voxels (for images).

    Returns
    -------
    ndarray, shape ``size``
    """
    lo = np.maximum(np.asarray(start), 0)
    hi = np.minimum(np.asarray(start) + np.asarray(size), array.shape)
    block = array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    before = lo - np.asarray(start)
    after = np.asarray(size) - before - (hi - lo)
    if not (before.any() or after.any()):
        return block
    widths = list(zip(before.tolist(), after.tolist()))
    if pad_value is None:
        return np.pad(block, widths, mode="edge")
    return np.pad(block, widths, mode="constant", constant_values=pad_value)
