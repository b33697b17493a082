"""Block-wise sliding-window inference with Gaussian blending on a global window grid.

The windows' positions are fixed in scan coordinates (:class:`WindowGrid`); blocks group
neighbouring windows so that only one block's input and accumulator are in memory at a
time. Each window runs once: the part of a block's accumulator that falls into a later
block's core is set aside (a thin slab the width of the windows' overlap) and added when
that block is processed. The result equals whole-volume inference, whatever the block size.

The slabs set aside add up to a plane of the scan, so they wait in temporary ``.npy`` files
rather than in memory: memory stays bounded by the block size, not the scan's size.
"""

from __future__ import annotations

import itertools
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roidetect.inference.network import WindowModel
from roidetect.inference.sources import BlockResult, NormalisedReader
from roidetect.inference.windows import Region, WindowBlock, WindowGrid


def _local(region: Region, origin: Region) -> Region:
    """``region`` (volume coordinates) relative to the start of ``origin``."""
    return tuple(slice(r.start - o.start, r.stop - o.start) for r, o in zip(region, origin))  # type: ignore[return-value]


class _Carries:
    """Partial sums waiting for the block whose core they lie in, kept in a temporary folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.waiting: dict[tuple[int, int, int], list[tuple[Region, Path]]] = defaultdict(list)
        self.count = itertools.count()

    def put(self, index: tuple[int, int, int], region: Region, values: torch.Tensor) -> None:
        path = self.folder / f"{next(self.count)}.npy"
        np.save(path, values.cpu().numpy())
        self.waiting[index].append((region, path))

    def take(self, index: tuple[int, int, int]) -> Iterator[tuple[Region, np.ndarray]]:
        for region, path in self.waiting.pop(index, []):
            values = np.load(path)
            path.unlink()
            yield region, values


class NetworkSource:
    """Network probabilities for a whole scan, block by block.

    Parameters
    ----------
    reader : NormalisedReader
        Normalised scan regions.
    model : WindowModel
        Runs the network on batches of windows.
    window : (3,) ints
        Window shape in scan voxels (clipped to the scan).
    overlap : float or (3,) floats
        Relative overlap of neighbouring windows (per axis z, y, x, or one for all).
    block_size : int
        Target core size of a block in scan voxels.
    batch_size : int
        Windows per network call.
    sigma_scale : float
        Gaussian sigma of the blending weight, as a fraction of the window size.
    """

    unit = "window"

    def __init__(self, reader: NormalisedReader, model: WindowModel, window: Sequence[int],
                 overlap: float | Sequence[float], block_size: int, batch_size: int = 1,
                 sigma_scale: float = 0.125) -> None:
        self.reader = reader
        self.model = model
        self.grid = WindowGrid(reader.shape, window, overlap, block_size, sigma_scale)
        self.batch_size = max(1, int(batch_size))

    @property
    def total(self) -> int:
        """Number of windows (the unit of progress)."""
        return self.grid.n_windows

    def blocks(self, progress: Callable[[int], Any] | None = None) -> Iterator[BlockResult]:
        """Yield finished block cores in z, y, x order; ``progress(n)`` after each batch."""
        device = self.model.device
        weight = torch.from_numpy(self.grid.weight()).to(device)
        with tempfile.TemporaryDirectory(prefix="roidetect-carry-") as folder, torch.inference_mode():
            carries = _Carries(Path(folder))
            for block in self.grid.blocks():
                accumulator = self._accumulate(block, weight, progress)
                for region, part in carries.take(block.index):
                    accumulator[(slice(None), *_local(region, block.extent))] += torch.from_numpy(part).to(device)
                for index, region in self.grid.carry_targets(block):
                    carries.put(index, region, accumulator[(slice(None), *_local(region, block.extent))])
                yield self._finish(block, accumulator)

    def _accumulate(self, block: WindowBlock, weight: torch.Tensor,
                    progress: Callable[[int], Any] | None) -> torch.Tensor:
        """Sum of Gaussian-weighted window probabilities (and TTA deviations) over the extent."""
        device = self.model.device
        image = torch.from_numpy(self.reader(block.extent)).to(device)
        origin = [s.start for s in block.extent]
        size = self.grid.window
        local = [tuple(slice(int(s) - o, int(s) - o + w) for s, o, w in zip(start, origin, size))
                 for start in block.starts]
        accumulator: torch.Tensor | None = None
        for first in range(0, len(local), self.batch_size):
            batch = local[first:first + self.batch_size]
            starts = [tuple(int(s) for s in start) for start in block.starts[first:first + self.batch_size]]
            mean, std = self.model(torch.stack([image[region] for region in batch])[:, None], starts)
            values = mean if std is None else torch.cat([mean, std], dim=1)
            if accumulator is None:
                extent_shape = [s.stop - s.start for s in block.extent]
                accumulator = torch.zeros((values.shape[1], *extent_shape), dtype=torch.float32, device=device)
            for i, region in enumerate(batch):
                accumulator[(slice(None), *region)].addcmul_(values[i], weight)
            if progress is not None:
                progress(len(batch))
        assert accumulator is not None  # every block holds at least one window
        return accumulator

    def _finish(self, block: WindowBlock, accumulator: torch.Tensor) -> BlockResult:
        """Normalise the block core by the summed window weights."""
        core = accumulator[(slice(None), *_local(block.core, block.extent))]
        weight_sum = torch.from_numpy(self.grid.weight_sum(block.core)).to(core.device)
        values = (core / weight_sum).clamp_(0.0, 1.0).cpu().numpy()
        channels = values.shape[0] // 2 if self.model.with_uncertainty else values.shape[0]
        uncertainty = values[channels:] if self.model.with_uncertainty else None
        return BlockResult(block.core, values[:channels], uncertainty)
