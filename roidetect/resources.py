"""Where the packaged configs and shipped models live.

In a wheel they are installed as ``roidetect/configs`` and ``roidetect/models``; in a source
checkout (editable install, tests) they are the repository's top-level ``configs/`` and
``models/`` folders.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"roidetect's {name}/ folder is missing from the installation")


def config_dir() -> Path:
    """The Hydra config root (holds ``train.yaml``, ``predict.yaml``, ``suggest.yaml``)."""
    return _data_dir("configs")


def models_dir() -> Path:
    """The folder of shipped model packages (one sub-folder per model)."""
    return _data_dir("models")


def shipped_models() -> list[str]:
    """Names of the shipped model packages, sorted."""
    try:
        root = models_dir()
    except FileNotFoundError:
        return []
    return sorted(p.name for p in root.iterdir() if (p / "card.json").is_file())
