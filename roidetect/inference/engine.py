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

import contextlib
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roidetect.errors import UserError
from roidetect.inference.network import WindowModel
from roidetect.inference.resume import CoreKey, core_key
from roidetect.inference.sources import BlockResult, NormalisedReader
from roidetect.inference.windows import Region, WindowBlock, WindowGrid


def _local(region: Region, origin: Region) -> Region:
    """``region`` (volume coordinates) relative to the start of ``origin``."""
    return tuple(slice(r.start - o.start, r.stop - o.start) for r, o in zip(region, origin))  # type: ignore[return-value]


Index = tuple[int, int, int]


class _Carries:
    """Partial sums waiting for the block whose core they lie in, kept as ``.npy`` files in a folder.

    A file is named after the blocks it goes from and to, and written whole or not at all, so
    that a resumed run (:mod:`roidetect.inference.resume`) finds those of the finished blocks.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.waiting: dict[Index, list[tuple[Region, Path]]] = defaultdict(list)

    def path(self, source: Index, target: Index) -> Path:
        return self.folder / f"{'_'.join(map(str, source))}-{'_'.join(map(str, target))}.npy"

    def put(self, source: Index, target: Index, region: Region, values: torch.Tensor) -> None:
        path = self.path(source, target)
        partial = path.with_suffix(".part.npy")
        np.save(partial, values.cpu().numpy())
        os.replace(partial, path)
        self.waiting[target].append((region, path))

    def restore(self, grid: WindowGrid, blocks: list[WindowBlock], finished: set[Index]) -> None:
        """Queue the partial sums that finished blocks left for unfinished ones (a resumed run)."""
        for block in blocks:
            if block.index not in finished:
                continue
            for target, region in grid.carry_targets(block):
                if target in finished:
                    continue
                path = self.path(block.index, target)
                if not path.is_file():
                    raise UserError(f"{path}: missing from the interrupted prediction; start over with --overwrite "
                                    "instead of --resume")
                self.waiting[target].append((region, path))

    def take(self, index: Index) -> list[tuple[Region, np.ndarray, Path]]:
        """The partial sums for a block; their files stay until :meth:`discard` (after the
        block is recorded as finished)."""
        return [(region, np.load(path), path) for region, path in self.waiting.pop(index, [])]

    @staticmethod
    def discard(paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)


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

    def blocks(self, progress: Callable[[int], Any] | None = None, done: Collection[CoreKey] = (),
               carry_folder: Path | None = None) -> Iterator[BlockResult]:
        """Yield finished block cores in z, y, x order; ``progress(n)`` after each batch.

        ``done``: cores (:func:`~roidetect.inference.resume.core_key`) that a resumed run has
        already, skipped; their partial sums for later blocks wait in ``carry_folder`` (by
        default a temporary folder). The files a block takes are removed when the next block
        is asked for, that is once the caller has written and recorded this one.
        """
        device = self.model.device
        weight = torch.from_numpy(self.grid.weight()).to(device)
        with contextlib.ExitStack() as stack, torch.inference_mode():
            if carry_folder is None:
                carry_folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="roidetect-carry-")))
            carries = _Carries(carry_folder)
            blocks = list(self.grid.blocks())
            finished = {block.index for block in blocks if core_key(block.core) in done}
            carries.restore(self.grid, blocks, finished)
            for block in blocks:
                if block.index in finished:
                    if progress is not None:
                        progress(len(block.starts))
                    continue
                accumulator = self._accumulate(block, weight, progress)
                taken = carries.take(block.index)
                for region, part, _ in taken:
                    accumulator[(slice(None), *_local(region, block.extent))] += torch.from_numpy(part).to(device)
                for index, region in self.grid.carry_targets(block):
                    carries.put(block.index, index, region, accumulator[(slice(None), *_local(region, block.extent))])
                yield self._finish(block, accumulator)
                carries.discard([path for _, _, path in taken])

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
