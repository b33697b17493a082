"""Where block probabilities come from, and how scan blocks are read (numpy only).

A *probability source* yields :class:`BlockResult` s whose cores tile the scan, in any
order. The network engine (:mod:`roidetect.inference.engine`, torch) and the classical
baseline (:func:`classical_blocks`, numpy only) are the two sources; the prediction folder
writer does not care which one ran.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from roidetect.blockwise import count_blocks, iter_blocks
from roidetect.inference.resume import CoreKey, core_key
from roidetect.inference.windows import Region
from roidetect.intensity import IntensityLevels, normalise
from roidetect.volume import Volume


@dataclass(frozen=True)
class BlockResult:
    """Probabilities for one block core.

    Attributes
    ----------
    core : tuple of 3 slices
        Where the block lies in the scan (voxels).
    probabilities : float32 ndarray, shape (C, z, y, x)
        Class probabilities in [0, 1] over the core.
    uncertainty : float32 ndarray, shape (C, z, y, x), or None
        Per-class standard deviation over test-time augmentations (None without TTA).
    """

    core: Region
    probabilities: np.ndarray
    uncertainty: np.ndarray | None = None


def blank_outside_view(result: BlockResult, volume: Volume, fill: float) -> BlockResult:
    """``result`` with background probability 1 (and no uncertainty) where the scan holds
    ``fill``, its value outside the field of view (:func:`roidetect.intensity.fill_is_outside_view`)."""
    outside = np.asarray(volume[result.core]) == fill
    if outside.any():
        result.probabilities[:, outside] = 0.0
        result.probabilities[0, outside] = 1.0
        if result.uncertainty is not None:
            result.uncertainty[:, outside] = 0.0
    return result


class NormalisedReader:
    """Reads scan regions as float32 normalised by the scan's robust intensity range.

    Parameters
    ----------
    volume : Volume
        The scan (lazy).
    levels : IntensityLevels
        Intensities mapped to 0 and 1, and the fill value mapped to 0 (see
        :mod:`roidetect.intensity`).
    """

    def __init__(self, volume: Volume, levels: IntensityLevels) -> None:
        self.volume = volume
        self.levels = levels

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.volume.shape

    def __call__(self, region: Region) -> np.ndarray:
        """Normalised float32 voxels of ``region`` (volume coordinates)."""
        return normalise(self.volume[region], *self.levels)


class ClassicalSource:
    """Classical-baseline probabilities, block by block with the halo its filters need.

    Parameters
    ----------
    reader : NormalisedReader
    spacing_um : (3,) floats
        Voxel size z, y, x in micrometres.
    params : mapping
        Parameters of :func:`roidetect.classical.classical_probabilities`.
    block_size : int
        Core size of a block in voxels.
    """

    unit = "block"

    def __init__(self, reader: NormalisedReader, spacing_um: Sequence[float], params: Mapping[str, Any],
                 block_size: int) -> None:
        self.reader = reader
        self.spacing_um = tuple(float(s) for s in spacing_um)
        self.params = dict(params)
        self.block_size = int(block_size)

    @property
    def total(self) -> int:
        """Number of blocks (the unit of progress)."""
        return count_blocks(self.reader.shape, self.block_size)

    def blocks(self, progress: Callable[[int], Any] | None = None, done: Collection[CoreKey] = (),
               carry_folder: Any = None) -> Iterator[BlockResult]:
        """Yield the probabilities of each block core; ``progress(1)`` after each block.

        ``done``: cores (:func:`~roidetect.inference.resume.core_key`) that a resumed run has
        already, skipped. ``carry_folder`` is not used (blocks do not share partial sums).
        """
        from roidetect.classical import classical_probabilities, required_halo

        halo = required_halo(self.spacing_um, self.params)
        for block in iter_blocks(self.reader.shape, self.block_size, halo):
            if core_key(block.core) in done:
                if progress is not None:
                    progress(1)
                continue
            probabilities = classical_probabilities(self.reader(block.padded), self.spacing_um, self.params)
            core = np.ascontiguousarray(probabilities[(slice(None), *block.core_in_padded)], dtype=np.float32)
            if progress is not None:
                progress(1)
            yield BlockResult(block.core, core)
