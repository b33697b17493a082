"""Resuming an interrupted ``predict``: its partial folder and the journal of finished blocks.

``predict`` fills its output in a partial folder beside it, ``.<name>.partial``, renamed to
the output's name when complete. Each block of probabilities written there is recorded in
``resume.json`` (written atomically after the block), and the network engine keeps the
partial sums it hands to later blocks in ``carries/`` there. When a run stops (Ctrl-C, a
crash, a job's time limit) after at least one block, the folder stays, and
``predict --resume`` with the same scan, model and settings skips the recorded blocks:
the result equals an uninterrupted run's. The steps after inference (surface, detection)
are quick and run again in full.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from roidetect import __version__
from roidetect.errors import UserError
from roidetect.inference.windows import Region
from roidetect.volume import write_json

JOURNAL = "resume.json"
CARRIES = "carries"
FORMAT = "roidetect-resume/1"
KEPT = ("probabilities.ome.zarr", "uncertainty.ome.zarr", JOURNAL, CARRIES)
"""What a resumed run keeps of a partial folder; the rest is written again."""

CoreKey = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def partial_dir(out_dir: str | os.PathLike) -> Path:
    """Where ``predict`` builds the folder ``out_dir``: ``.<name>.partial`` beside it."""
    out = Path(out_dir)
    return out.parent / f".{out.name}.partial"


def core_key(core: Region) -> CoreKey:
    """A block core as a hashable ``((z0, z1), (y0, y1), (x0, x1))``."""
    return tuple((int(s.start), int(s.stop)) for s in core)  # type: ignore[return-value]


def identity(scan: Mapping[str, Any], model: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """What must not change between a run and its resumption: roidetect's version, the scan
    (its checksum, or its path when it has none; shape, voxel size, region), the model as
    run.json describes it (its device and precision included), and every setting that shapes
    the probabilities (not the thread count, nor those of the detection and surface steps,
    which run again)."""
    scan = {k: v for k, v in scan.items() if not (k == "path" and scan.get("sha256"))}  # the checksum names it
    return json.loads(json.dumps({
        "roidetect": __version__,
        "scan": scan,
        "model": {k: v for k, v in model.items() if k != "threads"},
        "settings": {k: ({n: w for n, w in v.items() if n != "threads"} if k == "inference" else v)
                     for k, v in settings.items() if k not in ("detection", "surface", "device")},
    }, default=str))


def read_journal(folder: Path) -> dict[str, Any] | None:
    """A partial folder's journal, or None when it has none (or an unreadable one)."""
    try:
        journal = json.loads((folder / JOURNAL).read_text())
    except (OSError, ValueError):
        return None
    return journal if isinstance(journal, dict) and journal.get("format") == FORMAT else None


def worth_keeping(folder: Path) -> bool:
    """Whether a stopped run's partial folder holds finished blocks."""
    journal = read_journal(folder)
    return bool(journal and journal.get("done"))


def resumable_blocks(folder: Path, expected: Mapping[str, Any], resume: bool, overwrite: bool) -> set[CoreKey]:
    """The finished blocks to skip in ``folder`` (a partial folder), checked before any work.

    Parameters
    ----------
    folder : Path
        :func:`partial_dir` of the output.
    expected : dict
        This run's :func:`identity`.
    resume : bool
        ``--resume``: continue the partial prediction.
    overwrite : bool
        ``--overwrite``: without ``resume``, a partial prediction is discarded.

    Returns
    -------
    set
        :func:`core_key` of every finished block; empty to start from the beginning.

    Raises
    ------
    UserError
        A partial prediction exists and neither flag says what to do with it, or ``resume``
        asks to continue one made with another scan, model or settings (the differences named).
    """
    journal = read_journal(folder)
    done = [] if journal is None else journal.get("done") or []
    if not resume:
        if done and not overwrite:
            raise UserError(f"{folder} holds an interrupted prediction ({_progress(journal)}); pass --resume to "
                            "continue it, or --overwrite to start over")
        return set()
    if journal is None:
        return set()
    changed = _differences(journal.get("identity") or {}, expected)
    if changed:
        raise UserError(f"--resume: the interrupted prediction in {folder} was made with another {', '.join(changed)}; "
                        "run the command it was started with, or start over with --overwrite instead of --resume")
    return {tuple(tuple(int(v) for v in axis) for axis in core) for core in done}  # type: ignore[misc]


def _progress(journal: Mapping[str, Any] | None) -> str:
    return f"{len((journal or {}).get('done') or [])} block(s) of probabilities finished"


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the entries that differ between two nested dictionaries (at most 5)."""
    names = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            names += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            names.append(f"{prefix}{key} ({a} then, {b} now)")
    return names[:5]


class Journal:
    """The record of finished blocks in a partial folder.

    Parameters
    ----------
    folder : Path
        The partial folder being filled.
    expected : dict
        This run's :func:`identity`.
    done : set
        Blocks finished by the run being resumed (:func:`resumable_blocks`); empty to start
        afresh, which clears the folder. Of a resumed run's folder only :data:`KEPT` stays.
    """

    def __init__(self, folder: Path, expected: Mapping[str, Any], done: set[CoreKey]) -> None:
        self.folder = folder
        self.done = set(done)
        self.identity = dict(expected)
        for entry in list(folder.iterdir()):
            if not done or entry.name not in KEPT:
                _remove(entry)
        self.carry_folder.mkdir(exist_ok=True)
        self._write()

    @property
    def carry_folder(self) -> Path:
        """Where the network engine keeps the partial sums waiting for later blocks."""
        return self.folder / CARRIES

    def mark(self, core: Region) -> None:
        """Record a block as finished (after its probabilities are written)."""
        self.done.add(core_key(core))
        self._write()

    def finish(self) -> None:
        """Remove the journal and the carries: the folder becomes a plain prediction folder."""
        for name in (JOURNAL, CARRIES):
            _remove(self.folder / name)

    def _write(self) -> None:
        write_json(self.folder / JOURNAL, {"format": FORMAT, "identity": self.identity,
                                          "done": [list(map(list, key)) for key in sorted(self.done)]},
                   overwrite=True)


def _remove(path: Path) -> None:
    """Remove a file or folder, raising on failure (unlike ``atomic``'s cleanup after an error):
    a stale file left in the partial folder would end up in the prediction."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()

