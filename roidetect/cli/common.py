"""Pieces shared by the subcommand modules: common options and Hydra composition."""

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


def compose_config(config_name: str, overrides: Sequence[str] = ()) -> Any:
    """Compose ``configs/<config_name>.yaml`` with Hydra ``key=value`` overrides.

    Returns an OmegaConf ``DictConfig``. A malformed override or an unknown key or group
    option is a :class:`UserError` naming the override.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from roidetect.resources import config_dir

    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            return compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        message = " ".join(str(exc).split())
        raise UserError(f"bad config override ({message})") from exc
