"""Instrument profiles (``configs/instrument/*.yaml``): rates, currents and imaging settings.

Every number in a profile is written ``{value: ..., source: "..."}`` so that a plan can say
where each of its figures came from; removal rates also carry ``calibrated: true|false``.
Units are in the key names (``_nA``, ``_um3_per_nC``, ``_ms``...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from roidetect.errors import UserError
from roidetect.targeting.params import MODES, finite, plain

IMAGING_METHODS = ("sims", "slice_and_view")


@dataclass(frozen=True)
class Sourced:
    """A number with where it came from."""

    value: Any
    source: str
    calibrated: bool = True


@dataclass(frozen=True)
class SimsSettings:
    """Secondary-ion imaging with the milling beam: each frame rasters ``pixels`` at ``dwell_ms``."""

    pixels: Sourced  # (ny, nx)
    dwell_ms: Sourced
    current_pA: Sourced
    frames_min: Sourced

    @property
    def frame_seconds(self) -> float:
        """Time of one frame: pixels_y * pixels_x * dwell."""
        ny, nx = self.pixels.value
        return ny * nx * self.dwell_ms.value * 1e-3


@dataclass(frozen=True)
class SliceAndViewSettings:
    """Serial sectioning: mill a slice with the FIB, image the new face with the SEM."""

    slice_um: Sourced
    mill_current_nA: Sourced
    pixels: Sourced  # (ny, nx)
    dwell_us: Sourced
    overhead_s: Sourced

    @property
    def image_seconds(self) -> float:
        """SEM time per slice: pixels_y * pixels_x * dwell plus the per-slice overhead."""
        ny, nx = self.pixels.value
        return ny * nx * self.dwell_us.value * 1e-6 + self.overhead_s.value


@dataclass(frozen=True)
class Instrument:
    """One instrument setup; build it with :meth:`from_config`."""

    name: str
    description: str
    default_mode: str
    fib_voltage_kV: Sourced
    rough_current_nA: Sourced
    polish_current_nA: Sourced
    removal_rates: dict[str, Sourced]  # um^3 per nC of Ga+ at fib_voltage_kV, per material
    fov_um: Sourced
    sims: SimsSettings | None
    slice_and_view: SliceAndViewSettings | None
    view_angle_deg: Sourced
    stage_tilt_deg: Sourced
    stage_rotation_deg: Sourced
    coordinate_system: str
    site_setup_min: Sourced
    laser_rate_um3_per_s: Sourced | None
    laser_margin_um: Sourced | None
    application_file: str
    alignment: bool
    config: dict[str, Any]

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Instrument:
        """Parse and check an ``instrument`` config node; errors name the offending key."""
        data = plain(cfg)
        name = str(data.get("name", "instrument"))
        reader = _Reader(name, data)
        mode = reader.text("default_mode")
        if mode not in MODES:
            raise UserError(f"instrument {name}: default_mode={mode!r}; use one of {', '.join(MODES)}")
        method = reader.text("imaging.method")
        if method not in IMAGING_METHODS:
            raise UserError(f"instrument {name}: imaging.method={method!r}; use one of {', '.join(IMAGING_METHODS)}")
        rates = reader.node("fib.removal_rates_um3_per_nC")
        if not rates:
            raise UserError(f"instrument {name}: fib.removal_rates_um3_per_nC is empty; add at least one material")
        sims = sv = None
        if method == "sims":
            sims = SimsSettings(pixels=reader.pixels("imaging.sims.pixels"),
                                dwell_ms=reader.positive("imaging.sims.dwell_ms"),
                                current_pA=reader.positive("imaging.sims.current_pA"),
                                frames_min=reader.positive("imaging.sims.frames_min"))
        else:
            sv = SliceAndViewSettings(slice_um=reader.positive("imaging.slice_and_view.slice_um"),
                                      mill_current_nA=reader.positive("imaging.slice_and_view.mill_current_nA"),
                                      pixels=reader.pixels("imaging.slice_and_view.pixels"),
                                      dwell_us=reader.positive("imaging.slice_and_view.dwell_us"),
                                      overhead_s=reader.non_negative("imaging.slice_and_view.overhead_s"))
        has_laser = data.get("laser") is not None
        return cls(
            name=name,
            description=str(data.get("description", "")),
            default_mode=mode,
            fib_voltage_kV=reader.positive("fib.voltage_kV"),
            rough_current_nA=reader.positive("fib.rough_current_nA"),
            polish_current_nA=reader.positive("fib.polish_current_nA"),
            removal_rates={m: reader.positive(f"fib.removal_rates_um3_per_nC.{m}") for m in rates},
            fov_um=reader.positive("imaging.fov_um"),
            sims=sims,
            slice_and_view=sv,
            view_angle_deg=reader.angle("geometry.view_angle_deg"),
            stage_tilt_deg=reader.number("geometry.stage_tilt_deg"),
            stage_rotation_deg=reader.number("geometry.stage_rotation_deg"),
            coordinate_system=reader.text("geometry.coordinate_system"),
            site_setup_min=reader.non_negative("overhead.site_setup_min"),
            laser_rate_um3_per_s=reader.positive("laser.rate_um3_per_s") if has_laser else None,
            laser_margin_um=reader.non_negative("laser.margin_um") if has_laser else None,
            application_file=reader.text("openfibsem.application_file"),
            alignment=bool(reader.node("openfibsem.alignment")),
            config=data,
        )

    def removal_rate(self, material: str) -> Sourced:
        """Ga+ FIB removal rate of ``material`` in um^3/nC."""
        if material not in self.removal_rates:
            raise UserError(f"targeting.material={material!r} has no removal rate in instrument {self.name}; "
                            f"known: {', '.join(sorted(self.removal_rates))} (add "
                            f"instrument.fib.removal_rates_um3_per_nC.{material}={{value: ..., source: ...}})")
        return self.removal_rates[material]

    def sims_depth_per_frame_um(self, material: str) -> float:
        """Depth one SIMS frame sputters from a fov x fov area: rate * I * t_frame / fov^2."""
        assert self.sims is not None
        charge_nC = self.sims.current_pA.value * 1e-3 * self.sims.frame_seconds
        return self.removal_rate(material).value * charge_nC / self.fov_um.value ** 2


class _Reader:
    """Reads dotted keys of one profile and raises one-line errors naming them."""

    def __init__(self, name: str, data: dict[str, Any]) -> None:
        self.name, self.data = name, data

    def node(self, key: str) -> Any:
        value: Any = self.data
        for part in key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise UserError(f"instrument {self.name}: missing {key}; see configs/instrument/ for an example")
            value = value[part]
        return value

    def text(self, key: str) -> str:
        return str(self.node(key))

    def number(self, key: str, check: Any = None, rule: str = "a number") -> Sourced:
        node = self.node(key)
        if not isinstance(node, Mapping) or "value" not in node or not node.get("source"):
            raise UserError(f"instrument {self.name}: {key} must be {{value: ..., source: '...'}} "
                            "(every figure records where it came from)")
        value = node["value"]
        values = value if isinstance(value, list) else [value]
        if not values or not all(finite(v) and (check is None or check(float(v))) for v in values):
            raise UserError(f"instrument {self.name}: {key}.value={value!r} must be {rule}")
        return Sourced(value=value, source=str(node["source"]), calibrated=bool(node.get("calibrated", True)))

    def positive(self, key: str) -> Sourced:
        return self.number(key, lambda v: v > 0, "a positive number")

    def non_negative(self, key: str) -> Sourced:
        return self.number(key, lambda v: v >= 0, "a number >= 0")

    def angle(self, key: str) -> Sourced:
        return self.number(key, lambda v: 0 <= v < 90, "an angle in [0, 90) degrees")

    def pixels(self, key: str) -> Sourced:
        quantity = self.positive(key)
        value = quantity.value
        if not isinstance(value, list) or len(value) != 2 or any(int(v) != v for v in value):
            raise UserError(f"instrument {self.name}: {key}.value={value!r} must be two whole numbers [ny, nx]")
        return Sourced([int(v) for v in value], quantity.source, quantity.calibrated)
