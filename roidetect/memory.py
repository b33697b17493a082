"""How much memory is free, for the commands that hold whole volumes in memory (``synth``,
``train``, ``calibrate``) to refuse before any work what would not fit.

On a cluster node or in a container the limit that counts is often the control group's
(a SLURM job's ``--mem``, a container's memory limit), not the machine's: the smaller is taken.
"""

from __future__ import annotations

import os
from pathlib import Path

UNLIMITED = 1 << 60
"""A control-group limit at or above this (cgroup v1 writes 2^63 rounded to pages) means none."""


def available_memory_bytes(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Memory free for new work: the machine's (Linux ``MemAvailable``, else the physical
    memory) or, when smaller, what this process's control group has left; None if unknown.

    Parameters
    ----------
    proc, cgroup_root : Path
        Where ``/proc`` and the cgroup file system are (other folders in tests).
    """
    machine = _machine_available(proc)
    group = _cgroup_available(proc, cgroup_root)
    known = [value for value in (machine, group) if value is not None]
    return min(known) if known else None


def _machine_available(proc: Path) -> int | None:
    try:
        for line in (proc / "meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_available(proc: Path, root: Path) -> int | None:
    """The control group's limit less its usage (less the reclaimable inactive file cache);
    None without a limit. cgroup v2 (``memory.max``) or v1 (``memory.limit_in_bytes``)."""
    try:
        lines = (proc / "self" / "cgroup").read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    paths = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            paths[parts[1]] = parts[2].lstrip("/")
    candidates = []
    if "" in paths:  # v2: one hierarchy
        candidates.append((root / paths[""], "memory.max", "memory.current", "inactive_file"))
        candidates.append((root, "memory.max", "memory.current", "inactive_file"))
    v1 = next((path for controllers, path in paths.items() if "memory" in controllers.split(",")), None)
    if v1 is not None:
        candidates.append((root / "memory" / v1, "memory.limit_in_bytes", "memory.usage_in_bytes",
                           "total_inactive_file"))
        candidates.append((root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"))
    for folder, limit_name, usage_name, inactive_name in candidates:
        try:
            limit_text = (folder / limit_name).read_text(encoding="ascii").strip()
            usage = int((folder / usage_name).read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or int(limit_text) >= UNLIMITED:
            return None
        return max(0, int(limit_text) - usage + _stat(folder / "memory.stat", inactive_name))
    return None


def _stat(path: Path, key: str) -> int:
    """One value of a cgroup ``memory.stat`` file; 0 if absent."""
    try:
        for line in path.read_text(encoding="ascii").splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0
