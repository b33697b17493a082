"""Targeting parameters (``configs/targeting/*.yaml``) as a validated, typed object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from roidetect.errors import UserError

MODES = ("top-down", "cross-section")
FACE_SIDES = ("-y", "+y", "-x", "+x")
SCORE_COMPONENTS = ("priority", "confidence", "certainty", "size", "diversity", "cost")
REGISTRATION_KINDS = ("rigid", "similarity", "affine")


@dataclass(frozen=True)
class TargetingParams:
    """How sites are formed, costed, scored and chosen. Lengths in um, times in minutes.

    See ``docs/targeting.md`` for the meaning of every field and its default.
    """

    mode: str | None = None
    budget_hours: float = 8.0
    top_k: int = 10
    material: str = "Si"
    min_score: float = 0.5
    max_candidates: int = 2000
    standoff_um: float = 0.1
    polish_um: float = 0.5
    crater_margin_um: float = 2.0
    fov_margin_um: float = 0.5
    merge_depth_um: float = 0.5
    min_clearance_um: float = 0.0
    scan_resolution_um: float | None = None
    face_side: str = "-y"
    cost_reference_min: float = 60.0
    uncertainty_scale: float = 0.5
    class_priority: dict[str, float] = field(default_factory=lambda: {"crack": 1.0, "delamination": 0.8,
                                                                         "pore": 0.6})
    weights: dict[str, float] = field(default_factory=lambda: {"priority": 0.3, "confidence": 0.25,
                                                                 "certainty": 0.05, "size": 0.15,
                                                                 "diversity": 0.15, "cost": 0.1})
    registration_kind: str = "rigid"
    tre_flag_fraction: float = 0.5

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> TargetingParams:
        """Build from the ``targeting`` config node (a mapping); unknown keys are errors."""
        data = plain(cfg or {})
        registration = data.pop("registration", {}) or {}
        known = {f for f in cls.__dataclass_fields__} - {"registration_kind", "tre_flag_fraction"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"targeting: unknown option(s) {', '.join(unknown)}; see docs/targeting.md")
        if "kind" in registration:
            data["registration_kind"] = registration["kind"]
        if "tre_flag_fraction" in registration:
            data["tre_flag_fraction"] = registration["tre_flag_fraction"]
        params = cls(**data)
        params.validate()
        return params

    def validate(self) -> None:
        """Raise :class:`UserError` naming the first invalid value."""
        if self.mode is not None and self.mode not in MODES:
            raise UserError(f"targeting.mode={self.mode!r}: use one of {', '.join(MODES)}")
        if self.face_side not in FACE_SIDES:
            raise UserError(f"targeting.face_side={self.face_side!r}: use one of {', '.join(FACE_SIDES)}")
        if self.registration_kind not in REGISTRATION_KINDS:
            raise UserError(f"targeting.registration.kind={self.registration_kind!r}: use one of "
                            f"{', '.join(REGISTRATION_KINDS)}")
        positive = {"budget_hours": self.budget_hours, "top_k": self.top_k, "max_candidates": self.max_candidates,
                    "cost_reference_min": self.cost_reference_min, "uncertainty_scale": self.uncertainty_scale,
                    "tre_flag_fraction": self.tre_flag_fraction}
        non_negative = {"standoff_um": self.standoff_um, "polish_um": self.polish_um,
                        "crater_margin_um": self.crater_margin_um, "fov_margin_um": self.fov_margin_um,
                        "merge_depth_um": self.merge_depth_um}
        for name, value in positive.items():
            if not finite(value) or value <= 0:
                raise UserError(f"targeting.{name}={value!r}: must be a positive number")
        for name, value in non_negative.items():
            if not finite(value) or value < 0:
                raise UserError(f"targeting.{name}={value!r}: must be a number >= 0")
        if not finite(self.min_clearance_um):
            raise UserError(f"targeting.min_clearance_um={self.min_clearance_um!r}: must be a number")
        if not 0 <= self.min_score <= 1:
            raise UserError(f"targeting.min_score={self.min_score!r}: must lie in [0, 1]")
        if self.scan_resolution_um is not None and (not finite(self.scan_resolution_um)
                                                    or self.scan_resolution_um <= 0):
            raise UserError(f"targeting.scan_resolution_um={self.scan_resolution_um!r}: must be positive or null")
        unknown = sorted(set(self.weights) - set(SCORE_COMPONENTS))
        if unknown:
            raise UserError(f"targeting.weights: unknown component(s) {', '.join(unknown)}; "
                            f"known: {', '.join(SCORE_COMPONENTS)}")
        if any(not finite(w) or w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise UserError("targeting.weights: every weight must be >= 0 and at least one > 0")
        if any(not finite(p) or p < 0 for p in self.class_priority.values()):
            raise UserError("targeting.class_priority: priorities must be numbers >= 0")


def finite(value: Any) -> bool:
    try:
        return float(value) == float(value) and abs(float(value)) != float("inf")
    except (TypeError, ValueError):
        return False


def plain(cfg: Any) -> Any:
    """An OmegaConf node, mapping or list as plain nested dicts and lists (a copy)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, Mapping):
        return {k: plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [plain(v) for v in cfg]
    return cfg
