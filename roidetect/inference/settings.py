"""The settings of ``roidetect predict``: ``configs/predict.yaml`` plus the caller's overrides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from roidetect.errors import UserError
from roidetect.labels import DEFECT_NAMES


def load_settings(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``configs/predict.yaml`` merged with ``overrides`` (nested; unknown keys are errors).

    Parameters
    ----------
    overrides : mapping, optional
        Values to replace, shaped like the file, e.g. ``{"inference": {"overlap": 0.5}}``;
        a composed Hydra config of the whole file works too.

    Returns
    -------
    dict
        Plain nested dictionary.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from roidetect.resources import config_dir

    base = OmegaConf.load(config_dir() / "predict.yaml")
    OmegaConf.set_struct(base, True)
    try:
        merged = OmegaConf.merge(base, OmegaConf.create(dict(overrides or {})))
        return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise UserError(f"bad predict setting ({' '.join(str(exc).split())})") from exc


def given(section: Mapping[str, Any], exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The entries of a settings section that are set (not null), minus ``exclude``."""
    return {k: v for k, v in section.items() if v is not None and k not in exclude}


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1:
        raise UserError(f"{name}={value}: give a positive integer")
    return int(value)


def triplet(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    """One positive int or three (z, y, x) as a 3-tuple."""
    values = [value] * 3 if isinstance(value, (int, float)) else list(value)
    if len(values) != 3 or any(int(v) != v or v < 1 for v in values):
        raise UserError(f"{name}={value}: give one positive integer or three (z, y, x)")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def fill_setting(value: Any) -> str | float | None:
    """``inference.fill_value``: ``auto``, null or a number."""
    if value is None or value == "auto":
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise UserError(f"inference.fill_value={value}: choose auto, null (no fill value) or a grey value")


def _per_class(key: str, value: Any) -> dict[str, float]:
    """A per-class detection setting as ``{class name: float}``; one number sets every defect class."""
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dict.fromkeys(DEFECT_NAMES, float(value))
    raise UserError(f"detection.{key}={value}: give one number for every class or one per class, e.g. {{crack: 0}}")


def detection_params(card_section: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> Any:
    """:class:`roidetect.detect.DetectionParams` from a model card's ``detection`` and the settings.

    Settings that are set win over the card; what neither gives keeps detect's default.
    ``min_volume_um3`` and ``min_score`` are merged per class name; a single number sets every
    defect class (``min_score=0`` keeps every candidate). Values are checked here, before any
    work.
    """
    from roidetect.detect import DetectionParams

    defaults = DetectionParams()
    chosen: dict[str, Any] = {}
    for source in (card_section or {}, given(overrides, exclude=("block_size",))):
        for key, value in source.items():
            if value is None or not hasattr(defaults, key):
                continue
            try:
                if key in ("min_volume_um3", "min_score"):
                    value = {**chosen.get(key, getattr(defaults, key)), **_per_class(key, value)}
                else:
                    value = type(getattr(defaults, key))(value)
            except (TypeError, ValueError) as exc:
                raise UserError(f"detection.{key}={value}: not a valid value ({exc})") from exc
            chosen[key] = value
    params = replace(defaults, **chosen)
    for key in ("high_threshold", "low_threshold"):
        if not 0.0 <= getattr(params, key) <= 1.0:
            raise UserError(f"detection.{key}={getattr(params, key)}: must lie in [0, 1]")
    for name, value in params.min_score.items():
        if name not in DEFECT_NAMES or not 0.0 <= value <= 1.0:
            raise UserError(f"detection.min_score.{name}={value}: give a defect class "
                            f"({', '.join(DEFECT_NAMES)}) and a score in [0, 1]")
    return params
