"""Memory-mapped files accessed through a fresh mapping per read or write.

Pages of a memory map that a process has touched count towards its resident set size until
the map is closed. Reading a 2 GB scan (or filling a 1 GB label map) through one long-lived
``numpy.memmap`` therefore makes the process look 2 GB larger, although the kernel could drop
those pages at any time. Mapping the file anew for each block keeps the resident set at
about one block.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from roidetect.volume import Volume


class RemappedArray:
    """Array-like view of a C-ordered memory-mapped file that maps it only while accessed.

    Parameters
    ----------
    memmap : numpy.memmap
        An open map of the file (only its file name, offset, shape and type are kept).
    writable : bool
        Allow ``array[key] = value``.
    """

    def __init__(self, memmap: np.memmap, writable: bool = False) -> None:
        if memmap.filename is None or not memmap.flags.c_contiguous:
            raise ValueError("RemappedArray needs a C-ordered memory map of a file")
        self.filename = memmap.filename
        self.offset = int(memmap.offset)
        self.shape = tuple(int(s) for s in memmap.shape)
        self.dtype = np.dtype(memmap.dtype)
        self.writable = writable

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _map(self, mode: str) -> np.memmap:
        return np.memmap(self.filename, dtype=self.dtype, mode=mode, offset=self.offset, shape=self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        mapped = self._map("r")
        try:
            return np.array(mapped[key])
        finally:
            del mapped

    def __setitem__(self, key: Any, value: Any) -> None:
        if not self.writable:
            raise ValueError("this RemappedArray is read-only")
        mapped = self._map("r+")
        try:
            mapped[key] = value
            mapped.flush()
        finally:
            del mapped


def with_transient_mapping(volume: Volume) -> Volume:
    """The same volume, reading a memory-mapped file through :class:`RemappedArray`.

    Volumes that are not plain C-ordered file maps are returned unchanged.
    """
    data = volume.data
    if isinstance(data, np.memmap) and data.filename is not None and data.flags.c_contiguous:
        return replace(volume, data=RemappedArray(data))
    return volume
