"""``run.json``: what a run did, so its results can be reproduced.

Every command that writes an output folder records the command line, roidetect's and its
libraries' versions, a SHA-256 checksum of each input, the parameters it resolved and the
wall time of each step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from roidetect import __version__
from roidetect.errors import UserError
from roidetect.volume import split_inner_path, write_json

_LIBRARIES = ("numpy", "scipy", "scikit-image", "tifffile", "zarr", "h5py", "mrcfile", "nibabel", "torch", "monai",
              "lightning", "hydra-core", "safetensors")


def library_versions() -> dict[str, str]:
    """Installed versions of roidetect's main dependencies (without importing them)."""
    versions = {"roidetect": __version__, "python": platform.python_version()}
    for name in _LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def sha256_of(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """SHA-256 of a file, or of every file in a folder (sorted by relative path, names included).

    An HDF5/Zarr inner path (``file.h5:/data``) hashes the whole file.
    """
    root, _ = split_inner_path(str(path))
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for file in files:
        if root.is_dir():
            digest.update(str(file.relative_to(root)).encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(chunk_bytes):
                digest.update(chunk)
    return digest.hexdigest()


def read_run(folder: str | os.PathLike) -> dict[str, Any]:
    """A folder's run.json; empty when it is missing, unreadable or not an object."""
    try:
        data = json.loads((Path(folder) / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def recorded_command(folder: str | os.PathLike) -> str | None:
    """The command a folder's run.json names, or None (no readable run.json, or no command)."""
    command = read_run(folder).get("command")
    return command if isinstance(command, str) else None


def made_by_other_command(folder: str | os.PathLike, expected: str) -> str:
    """``"; it is the output of 'roidetect COMMAND'"`` when the folder's run.json names a
    command other than ``expected``, for error messages about a folder of the wrong kind;
    ``""`` otherwise (the expected command, or no readable run.json)."""
    command = recorded_command(folder)
    return f"; it is the output of 'roidetect {command}'" if command not in (None, expected) else ""


def check_sites_planned_from(sites: str | os.PathLike, pred_dir: str | os.PathLike) -> None:
    """Refuse milling sites that ``roidetect suggest`` planned from other detections than ``pred_dir``'s.

    ``sites`` is a ``roidetect suggest`` folder or its ``sites.csv``. Its ``run.json`` records the
    SHA-256 of the ``detections.csv`` it planned from; a mismatch means another prediction, or
    detections changed since. Without that record (a table written elsewhere) nothing is checked.

    Raises
    ------
    UserError
        The recorded checksum differs from that of ``pred_dir/detections.csv``.
    """
    sites = Path(sites)
    folder = sites if sites.is_dir() else sites.parent
    inputs = read_run(folder).get("inputs")
    recorded = inputs.get("detections.csv") if isinstance(inputs, dict) else None
    detections = Path(pred_dir) / "detections.csv"
    if not isinstance(recorded, dict) or not isinstance(recorded.get("sha256"), str) or not detections.is_file():
        return
    if sha256_of(detections) != recorded["sha256"]:
        raise UserError(f"{sites}: these sites were planned from {recorded.get('path', 'other detections')}, whose "
                        f"detections differ from {detections} (another prediction, or detections changed since); "
                        f"give the sites folder of this prediction, or plan anew with 'roidetect suggest {pred_dir}'")


class RunLog:
    """Collects what a command did and writes it as ``run.json``.

    Examples
    --------
    >>> log = RunLog("predict", {"model": "default"})
    >>> with log.step("inference"):
    ...     pass
    >>> log.record(detections=12)
    """

    def __init__(self, command: str, parameters: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()
        self.data: dict[str, Any] = {
            "command": command,
            "argv": list(sys.argv),
            "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "versions": library_versions(),
            "inputs": {},
            "parameters": dict(parameters or {}),
            "timings_s": {},
        }

    def add_input(self, role: str, path: str | os.PathLike, checksum: bool = True) -> None:
        """Record an input file or folder under ``role`` with its SHA-256."""
        entry: dict[str, Any] = {"path": str(Path(str(path)).resolve()) if ":" not in str(path) else str(path)}
        if checksum:
            entry["sha256"] = sha256_of(path)
        self.data["inputs"][role] = entry

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time a step; its wall time in seconds is stored under ``timings_s[name]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.data["timings_s"][name] = round(time.perf_counter() - start, 3)

    @contextlib.contextmanager
    def collecting_warnings(self, logger: str = "roidetect") -> Iterator[None]:
        """Record under ``warnings`` the message of every warning that ``logger`` or its
        children log meanwhile, so that run.json says what the run warned about."""
        handler = _Collector(self.data.setdefault("warnings", []))
        logging.getLogger(logger).addHandler(handler)
        try:
            yield
        finally:
            logging.getLogger(logger).removeHandler(handler)

    def record(self, **values: Any) -> None:
        """Add results or resolved parameters to the log."""
        self.data.update(values)

    def write(self, out_dir: str | os.PathLike) -> Path:
        """Write ``out_dir/run.json`` with the total wall time."""
        self.data["timings_s"]["total"] = round(time.perf_counter() - self.started, 3)
        return write_json(Path(out_dir) / "run.json", self.data)


class _Collector(logging.Handler):
    """Appends the message of each warning (or worse) it handles to a list."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
