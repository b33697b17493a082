"""Hydra configs shipped with roidetect: compose ``configs/<name>.yaml`` with overrides.

Used by the command line and by library functions that take a composed config (``suggest``,
``train``, ``demo``), so it lives outside ``roidetect.cli``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from roidetect.errors import UserError


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
