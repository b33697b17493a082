"""The global window grid of sliding-window inference, and its split into blocks (pure numpy).

Windows sit at fixed positions in volume coordinates (the grid MONAI's
``sliding_window_inference`` uses: a stride of ``int(window * (1 - overlap))`` and a last
window flush with the volume's end). Each voxel's probability is the Gaussian-weighted mean
of the windows covering it. Because the Gaussian weight is separable and every window has the
same shape, the sum of weights at a voxel is a product of three 1D sums, known in advance.

To bound memory the windows are grouped into blocks: consecutive windows along each axis.
A block owns a *core* (from its first window's start to the next block's first window's
start; cores tile the volume) and touches an *extent* (the union of its windows), which
reaches past its core into the cores of the following blocks by the windows' overlap. The
engine hands those overlapping parts to the blocks they belong to (see
:meth:`WindowGrid.carry_targets`), so every window runs once and the result does not depend
on the block split.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

Region = tuple[slice, slice, slice]


def window_starts(size: int, window: int, overlap: float) -> np.ndarray:
    """Start positions of the windows along one axis.

    Parameters
    ----------
    size : int
        Volume length along the axis (voxels).
    window : int
        Window length, ``1 <= window <= size``.
    overlap : float
        Fraction of a window shared with the next one, ``0 <= overlap < 1``.

    Returns
    -------
    ndarray of int, shape (N,)
        Sorted starts; the first is 0 and the last is ``size - window``.
    """
    if not 1 <= window <= size:
        raise ValueError(f"window {window} must be between 1 and the axis length {size}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap {overlap} must be in [0, 1)")
    stride = window if window == size else max(1, int(window * (1.0 - overlap)))
    count = int(np.ceil(max(size - window, 0) / stride)) + 1
    return np.minimum(np.arange(count) * stride, size - window).astype(np.int64)


def gaussian_profile(window: int, sigma_scale: float) -> np.ndarray:
    """1D Gaussian window weight, 1 at the centre, ``sigma = sigma_scale * window``.

    Returns
    -------
    ndarray of float64, shape (window,)
    """
    position = np.arange(window, dtype=np.float64) - (window - 1) / 2.0
    sigma = max(sigma_scale * window, 1e-6)
    return np.exp(-0.5 * (position / sigma) ** 2)


@dataclass(frozen=True)
class WindowBlock:
    """A group of windows processed together.

    Attributes
    ----------
    index : (3,) ints
        Position of the block in the block grid (z, y, x).
    core : tuple of 3 slices
        Voxels whose probabilities this block finalises (cores tile the volume).
    extent : tuple of 3 slices
        Voxels its windows cover: ``core`` plus overlaps into later blocks' cores.
    starts : ndarray of int, shape (N, 3)
        Window start positions (z, y, x) in volume coordinates.
    """

    index: tuple[int, int, int]
    core: Region
    extent: Region
    starts: np.ndarray


class WindowGrid:
    """Windows of one shape on a volume, grouped into blocks.

    Parameters
    ----------
    shape : (3,) ints
        Volume shape (Z, Y, X).
    window : (3,) ints
        Window shape; each clipped to the volume's length along its axis.
    overlap : float or (3,) floats
        Relative overlap of neighbouring windows (per axis z, y, x, or one for all).
    block_size : int or (3,) ints
        Target core size of a block in voxels; a block holds
        ``max(1, round(block_size / stride))`` windows per axis.
    sigma_scale : float
        Gaussian sigma as a fraction of the window size.
    """

    def __init__(self, shape: Sequence[int], window: Sequence[int], overlap: float | Sequence[float],
                 block_size: int | Sequence[int], sigma_scale: float = 0.125) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.window = tuple(min(int(w), n) for w, n in zip(window, self.shape))
        overlaps = np.broadcast_to(np.asarray(overlap, dtype=float), (3,))
        self.starts = [window_starts(n, w, float(o)) for n, w, o in zip(self.shape, self.window, overlaps)]
        self.profiles = [gaussian_profile(w, sigma_scale) for w in self.window]
        self._weight_sums = [self._axis_weight_sum(axis) for axis in range(3)]
        block = np.broadcast_to(np.asarray(block_size, dtype=int), (3,))
        self._groups = [self._axis_groups(axis, int(b)) for axis, b in enumerate(block)]

    @property
    def n_windows(self) -> int:
        return int(np.prod([len(s) for s in self.starts]))

    @property
    def n_blocks(self) -> int:
        return int(np.prod([len(g) for g in self._groups]))

    def weight(self) -> np.ndarray:
        """The 3D Gaussian weight of one window, float32, shape ``window``."""
        pz, py, px = (p.astype(np.float32) for p in self.profiles)
        return pz[:, None, None] * py[None, :, None] * px[None, None, :]

    def weight_sum(self, region: Region) -> np.ndarray:
        """Sum of all windows' weights over ``region``, float32, shape of the region."""
        wz, wy, wx = (w[s].astype(np.float32) for w, s in zip(self._weight_sums, region))
        return wz[:, None, None] * wy[None, :, None] * wx[None, None, :]

    def blocks(self) -> Iterator[WindowBlock]:
        """Blocks in z, y, x order (every carry goes to a block that comes later)."""
        for index in itertools.product(*(range(len(g)) for g in self._groups)):
            spans = [self._span(axis, g) for axis, g in enumerate(index)]
            core = tuple(slice(c0, c1) for c0, c1, _, _ in spans)
            extent = tuple(slice(c0, e1) for c0, _, e1, _ in spans)
            axis_starts = [s for _, _, _, s in spans]
            starts = np.array(list(itertools.product(*axis_starts)), dtype=np.int64).reshape(-1, 3)
            yield WindowBlock(index, core, extent, starts)  # type: ignore[arg-type]

    def carry_targets(self, block: WindowBlock) -> list[tuple[tuple[int, int, int], Region]]:
        """Later blocks whose cores the block's extent reaches into, with the shared regions.

        Returns
        -------
        list of (index, region)
            ``region`` is in volume coordinates; the block's own core is not included.
        """
        per_axis = []
        for axis, g in enumerate(block.index):
            reach = block.extent[axis].stop
            options = []
            for h in range(g, len(self._groups[axis])):
                c0, c1, _, _ = self._span(axis, h)
                if c0 >= reach:
                    break
                options.append((h, slice(c0, min(c1, reach))))
            per_axis.append(options)
        targets = []
        for combo in itertools.product(*per_axis):
            index = tuple(h for h, _ in combo)
            if index != block.index:
                targets.append((index, tuple(s for _, s in combo)))
        return targets  # type: ignore[return-value]

    # ------------------------------------------------------------------ per-axis helpers

    def _axis_weight_sum(self, axis: int) -> np.ndarray:
        total = np.zeros(self.shape[axis], dtype=np.float64)
        w = self.window[axis]
        for s in self.starts[axis]:
            total[s:s + w] += self.profiles[axis]
        return total

    def _axis_groups(self, axis: int, block_size: int) -> list[np.ndarray]:
        starts = self.starts[axis]
        stride = int(starts[1] - starts[0]) if len(starts) > 1 else self.window[axis]
        per_block = max(1, int(round(block_size / stride)))
        return [starts[i:i + per_block] for i in range(0, len(starts), per_block)]

    def _span(self, axis: int, group: int) -> tuple[int, int, int, np.ndarray]:
        """(core start, core stop, extent stop, window starts) of one group along an axis."""
        groups = self._groups[axis]
        starts = groups[group]
        core_start = 0 if group == 0 else int(starts[0])
        core_stop = int(groups[group + 1][0]) if group + 1 < len(groups) else self.shape[axis]
        return core_start, core_stop, int(starts[-1]) + self.window[axis], starts
