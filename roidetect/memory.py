"""How much memory is free, for the commands that hold whole volumes in memory (``synth``,
``train``, ``calibrate``) to refuse before any work what would not fit."""

from __future__ import annotations

import os


def available_memory_bytes() -> int | None:
    """Memory free for new work (Linux ``MemAvailable``, else the physical memory), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None
