"""Cutting a volume into blocks with a halo, so large scans are processed piece by piece.

Each :class:`Block` has a *core* (the voxels it is responsible for; cores tile the volume
without overlap) and a *padded* region (the core grown by ``halo`` voxels on each side and
clipped to the volume) to read, so that filters and networks see context at the core's
edges.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Block:
    """One block of a volume.

    Attributes
    ----------
    core : tuple of 3 slices
        The block's own voxels, in volume coordinates.
    padded : tuple of 3 slices
        ``core`` grown by the halo and clipped to the volume, in volume coordinates.
    core_in_padded : tuple of 3 slices
        Where ``core`` lies inside an array read from ``padded``.
    """

    core: tuple[slice, slice, slice]
    padded: tuple[slice, slice, slice]
    core_in_padded: tuple[slice, slice, slice]


def _triplet(value: int | Sequence[int]) -> tuple[int, int, int]:
    values = np.broadcast_to(np.asarray(value, dtype=int), (3,))
    return (int(values[0]), int(values[1]), int(values[2]))


def iter_blocks(shape: Sequence[int], block_shape: int | Sequence[int], halo: int | Sequence[int] = 0) -> Iterator[Block]:
    """Blocks whose cores tile ``shape`` in z, y, x order.

    Parameters
    ----------
    shape : (3,) ints
        Volume shape (Z, Y, X).
    block_shape : int or (3,) ints
        Core size per axis (the last block along an axis may be smaller).
    halo : int or (3,) ints
        Context voxels added on each side of the core (clipped at the volume's edge).
    """
    shape, block_shape, halo = _triplet(shape), _triplet(block_shape), _triplet(halo)
    if min(block_shape) < 1 or min(halo) < 0:
        raise ValueError(f"block shape {block_shape} must be >= 1 and halo {halo} >= 0")
    starts = [range(0, n, b) for n, b in zip(shape, block_shape)]
    for origin in itertools.product(*starts):
        core, padded, inner = [], [], []
        for start, n, b, h in zip(origin, shape, block_shape, halo):
            stop = min(start + b, n)
            lo, hi = max(start - h, 0), min(stop + h, n)
            core.append(slice(start, stop))
            padded.append(slice(lo, hi))
            inner.append(slice(start - lo, stop - lo))
        yield Block(tuple(core), tuple(padded), tuple(inner))  # type: ignore[arg-type]


def count_blocks(shape: Sequence[int], block_shape: int | Sequence[int]) -> int:
    """How many blocks :func:`iter_blocks` yields (for progress bars)."""
    shape, block_shape = _triplet(shape), _triplet(block_shape)
    return int(np.prod([-(-n // b) for n, b in zip(shape, block_shape)]))
