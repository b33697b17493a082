"""``milling_protocol.yaml``: the plan's FIB steps as OpenFIBSEM milling stages (no fibsem import).

OpenFIBSEM (PyPI ``fibsem``) describes milling as lists of stages, each a dict that
``fibsem.milling.FibsemMillingStage.from_dict`` reads: ``milling`` (current in A, voltage in
V, field width in m, rate in m^3/A/s), ``pattern`` (a rectangle: width, height, depth and
centre in m, cross-section type), ``strategy`` and ``alignment``. The protocol keeps one list
per site under ``milling`` (load with ``fibsem.milling.get_milling_stages(site_id,
protocol["milling"])``) and, under ``sites``, the visiting order, each site's target, stage
position (``FibsemStagePosition`` dict: metres and radians) when registered, and the steps
OpenFIBSEM does not run itself (laser ablation, SIMS or slice-and-view imaging).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from roidetect.targeting.instrument import Instrument
from roidetect.targeting.layout import Pattern
from roidetect.targeting.plan import Plan, Site

UM = 1e-6
NA = 1e-9
RATE_SI_PER_UM3_PER_NC = 1e-9  # 1 um^3/nC = 1e-18 m^3 / 1e-9 C = 1e-9 m^3/(A s)
STAGE_LABELS = {"fib_rough": "rough mill", "fib_polish": "polish"}


def milling_protocol(plan: Plan, instrument: Instrument) -> dict[str, Any]:
    """The OpenFIBSEM protocol of a plan (module docstring); sites listed in visiting order."""
    rate = instrument.removal_rate(plan.params.material)
    by_visit = sorted(plan.sites, key=lambda s: s.visit_order or 0)
    return _builtin({
        "format": "roidetect-milling-protocol/1",
        "units": "OpenFIBSEM SI units: metres, amperes, volts, seconds; m^3/(A s) for rates; stage angles in radians",
        "conventions": {
            "milling": "load a site's stages with fibsem.milling.get_milling_stages(site_id, protocol['milling'])",
            "pattern_position": "pattern point relative to the site's stage position (the target), in m; x along "
                                "the imaged face (scan x, or scan y for faces on the x sides), y along the scan's "
                                "y (top-down) or along the slicing direction with the trench at negative y "
                                "(cross-section); check the orientation with a test mill",
            "stage_position": "FibsemStagePosition of the target (x, y, z in m from the fiducials' stage frame, "
                              "r and t in radians from the instrument profile); null without fiducials",
            "rate": f"{plan.params.material}: {rate.value} um^3/nC ({rate.source})",
        },
        "mode": plan.mode,
        "instrument": instrument.name,
        "sites": [_site_entry(site, instrument) for site in by_visit],
        "milling": {site.site_id: _stages(site, instrument, rate.value) for site in plan.sites},
    })


def _builtin(obj: Any) -> Any:
    """Numpy scalars as Python numbers, recursively (YAML's safe dumper knows only the latter);
    floats to 12 significant digits, so that unit conversions print without rounding noise."""
    if isinstance(obj, dict):
        return {k: _builtin(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_builtin(v) for v in obj]
    value = obj.item() if isinstance(obj, np.generic) else obj
    return float(f"{value:.12g}") if isinstance(value, float) else value


def _stages(site: Site, instrument: Instrument, rate_um3_per_nC: float) -> list[dict[str, Any]]:
    currents = {"fib_rough": instrument.rough_current_nA.value, "fib_polish": instrument.polish_current_nA.value}
    volumes = site.layout.volumes_um3
    patterns = [p for p in site.layout.patterns if volumes[p.step] > 0 and p.depth_um > 0]
    hfw = _field_width_m(patterns, site.layout.fov_um)
    voltage = instrument.fib_voltage_kV.value
    return [
        {
            "name": f"{site.site_id} {STAGE_LABELS[p.step]}",
            "num": num,
            "enabled": True,
            "milling": {
                "milling_current": currents[p.step] * NA,
                "milling_voltage": voltage * 1e3,
                "hfw": hfw,
                "application_file": instrument.application_file,
                "patterning_mode": "Serial",
                "rate": rate_um3_per_nC * RATE_SI_PER_UM3_PER_NC,
                "preset": f"{voltage:g} keV; {currents[p.step]:g} nA",
                "milling_channel": "ION",
                "acquire_images": False,
            },
            "pattern": {
                "name": "Rectangle",
                "width": p.width_um * UM,
                "height": p.height_um * UM,
                "depth": p.depth_um * UM,
                "rotation": 0.0,
                "point": {"x": p.x_um * UM, "y": p.y_um * UM},
                "cross_section": p.cross_section,
                "scan_direction": p.scan_direction,
                "passes": 0,
                "time": 0.0,
            },
            "strategy": {"name": "Standard", "config": {}},
            "alignment": {"enabled": instrument.alignment},
        }
        for num, p in enumerate(patterns, start=1)
    ]


def _field_width_m(patterns: list[Pattern], fov_um: float) -> float:
    """Ion-beam field width holding every pattern with 20 % to spare (at least the imaging fov)."""
    extent = max([2 * max(abs(p.x_um) + p.width_um / 2, abs(p.y_um) + p.height_um / 2) for p in patterns],
                 default=0.0)
    return max(1.2 * extent, fov_um) * UM


def _site_entry(site: Site, instrument: Instrument) -> dict[str, Any]:
    z, y, x = (float(v) for v in site.target_zyx_um)
    minutes = site.minutes
    steps = {s["step"]: s for s in site.steps}
    position = None
    if site.stage_xyz_um is not None:
        sx, sy, sz = (float(v) * UM for v in site.stage_xyz_um)
        position = {"name": site.site_id, "x": sx, "y": sy, "z": sz,
                    "r": math.radians(instrument.stage_rotation_deg.value),
                    "t": math.radians(instrument.stage_tilt_deg.value),
                    "coordinate_system": instrument.coordinate_system}
    laser = None
    if instrument.laser_margin_um is not None:
        laser = {"volume_um3": site.layout.volumes_um3["laser"], "minutes": minutes["laser"],
                 "stop_short_um": instrument.laser_margin_um.value,
                 "note": "fs-laser ablation runs in the laser's own software before the FIB stages"}
    imaging = {k: v for k, v in steps["imaging"].items() if k not in ("step", "formula")}
    return {
        "id": site.site_id, "rank": site.rank, "visit_order": site.visit_order,
        "target_scan_um": {"x": x, "y": y, "z": z}, "stage_position": position,
        "tre_um": site.tre_um, "detections": site.member_ids, "classes": site.classes,
        "depth_um": site.layout.depth_um, "laser": laser, "imaging": imaging,
        "minutes": {**minutes, "total": site.minutes_total},
    }
