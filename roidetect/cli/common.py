"""Pieces shared by the subcommand modules: common options and a parser for KEY=VALUE overrides."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from roidetect.errors import UserError


def add_command(subparsers: Any, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """Add a subcommand parser with the options every command has (``--quiet``)."""
    parser = subparsers.add_parser(name, help=help, description=description or help)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or log messages")
    parser.set_defaults(command=name)
    return parser


def add_device(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """``--device``: where the network runs (``default`` None leaves it to the command's config)."""
    parser.add_argument("--device", default=default, help="auto (CUDA when available; the default), cpu, cuda or cuda:N")


def add_voxel_size(parser: argparse.ArgumentParser) -> None:
    """``--voxel-size UM [UM UM]``: overrides the file's metadata (isotropic, or z y x)."""
    parser.add_argument("--voxel-size", dest="voxel_size", type=float, nargs="+", metavar="UM",
                        help="voxel size in micrometres, one value or three (z y x); overrides the file's metadata")


def voxel_size(args: argparse.Namespace) -> float | tuple[float, ...] | None:
    """The ``--voxel-size`` value as one float, a (z, y, x) tuple or None."""
    values = getattr(args, "voxel_size", None)
    if values is None:
        return None
    if len(values) not in (1, 3):
        raise UserError(f"--voxel-size takes one value or three (z y x), got {len(values)}")
    return values[0] if len(values) == 1 else tuple(values)


class IntermixedParser(argparse.ArgumentParser):
    """Lets ``key=value`` overrides follow options (``SCAN --out DIR a=b``), which plain
    argparse refuses once an option has split the positional arguments."""

    _intermixing = False

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False
