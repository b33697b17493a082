"""Atomic writes: outputs appear complete or not at all, and inputs are never touched.

Every file or folder roidetect writes is first written under a temporary name beside its
destination and then renamed into place, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from roidetect.errors import UserError


def _temp_sibling(path: Path, suffix: str = "") -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    os.unlink(name)
    return Path(name)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``.

    The temporary file keeps ``path``'s suffix so that libraries which pick a format from the
    file name (tifffile, numpy) still do. On an exception the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path, "".join(path.suffixes))
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    _replace(tmp, path)


def give_default_permissions(path: str | os.PathLike) -> None:
    """Set ``path``'s mode to that of a file opened the ordinary way (0o666 less the umask).

    For libraries that create their files private (safetensors writes 0o600), so that
    colleagues on a shared machine can read what a run wrote, as they can its other files.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def check_output_dir(path: str | os.PathLike, overwrite: bool) -> Path:
    """Fail early, before any work, if ``path`` cannot be used as an output folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"output {path} exists and is not a folder; choose another --out")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise UserError(f"output folder {path} exists and is not empty; pass --overwrite to replace it")
    return path


def check_outside_inputs(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Fail before any work if writing ``out`` would replace an input.

    With ``--overwrite`` an existing output is removed once the new one is complete, so an
    ``out`` that is an input, or a folder holding one (a scan's own folder, a dataset's
    folder), would lose the user's data.

    Parameters
    ----------
    out : path
        The output file or folder.
    inputs : paths or None
        The files and folders the command reads (HDF5/Zarr inner paths stripped); None is skipped.
    """
    target = Path(out).expanduser().resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).expanduser().resolve()
        if source == target or target in source.parents:
            raise UserError(f"output {out} would replace the input {given}; write the output somewhere else")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces ``path`` in one rename.

    With ``overwrite`` an existing ``path`` is replaced only after the new content is
    complete; without it an existing non-empty ``path`` is an error raised before any work.
    """
    path = check_output_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    _replace(tmp, path)


@contextlib.contextmanager
def resumable_dir(path: str | os.PathLike, partial: Path, overwrite: bool = False,
                  keep: Callable[[Path], bool] = lambda folder: False) -> Iterator[Path]:
    """:func:`atomic_dir` with a fixed work folder, ``partial``, kept when the work stops with
    an exception and ``keep(partial)`` says it holds progress worth resuming.

    ``partial`` is created if missing and used as it is otherwise: the caller decides what of
    an earlier run's content to keep.
    """
    path = check_output_dir(path, overwrite)
    partial.mkdir(parents=True, exist_ok=True)
    try:
        yield partial
    except BaseException:
        if not keep(partial):
            _remove(partial)
        raise
    _replace(partial, path)


def _replace(new: Path, path: Path) -> None:
    """Move ``new`` to ``path``; an existing folder at ``path`` is removed only afterwards."""
    old = None
    if path.is_dir() and not path.is_symlink():
        old = _temp_sibling(path, ".old")
        os.replace(path, old)
    os.replace(new, path)
    if old is not None:
        _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
