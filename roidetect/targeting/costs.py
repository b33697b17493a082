"""Instrument time per step of one site, in minutes; a site's time is the sum of its steps.

- setup: the instrument's fixed per-site overhead.
- laser: V_laser / laser rate (um^3/s).
- fib_rough, fib_polish: V / (rate * I), rate in um^3/nC of the sample material, I in nA
  (um^3/nC * nA = um^3/s).
- imaging, SIMS: frames * pixels_y * pixels_x * dwell. Slice-and-view: the slices' volume at
  the slicing current plus, per slice, one SEM image (pixels * dwell) and the overhead.
"""

from __future__ import annotations

from typing import Any

from roidetect.targeting.instrument import Instrument
from roidetect.targeting.layout import Layout

STEPS = ("setup", "laser", "fib_rough", "fib_polish", "imaging")


def step_details(layout: Layout, instrument: Instrument, material: str) -> list[dict[str, Any]]:
    """Each step's minutes, volume and the figures it was computed from, in :data:`STEPS` order."""
    rate = instrument.removal_rate(material).value
    volumes = layout.volumes_um3
    steps: list[dict[str, Any]] = [{"step": "setup", "minutes": instrument.site_setup_min.value,
                                    "formula": "instrument overhead per site"}]
    if instrument.laser_rate_um3_per_s is not None:
        laser_rate = instrument.laser_rate_um3_per_s.value
        steps.append({"step": "laser", "minutes": volumes["laser"] / laser_rate / 60,
                      "volume_um3": volumes["laser"], "rate_um3_per_s": laser_rate,
                      "formula": "V / laser_rate"})
    else:
        steps.append({"step": "laser", "minutes": 0.0, "volume_um3": 0.0, "formula": "no laser"})
    for step, current in (("fib_rough", instrument.rough_current_nA.value),
                          ("fib_polish", instrument.polish_current_nA.value)):
        steps.append({"step": step, "minutes": volumes[step] / (rate * current) / 60, "volume_um3": volumes[step],
                      "current_nA": current, "rate_um3_per_nC": rate, "formula": "V / (rate * I)"})
    steps.append(_imaging(layout, instrument, rate))
    return steps


def _imaging(layout: Layout, instrument: Instrument, rate: float) -> dict[str, Any]:
    if instrument.sims is not None:
        sims = instrument.sims
        return {"step": "imaging", "method": "sims", "minutes": layout.imaging_count * sims.frame_seconds / 60,
                "frames": layout.imaging_count, "frame_s": sims.frame_seconds,
                "depth_consumed_um": layout.imaging_depth_um, "current_pA": sims.current_pA.value,
                "formula": "frames * pixels_y * pixels_x * dwell"}
    sv = instrument.slice_and_view
    assert sv is not None
    mill_s = layout.volumes_um3["imaging"] / (rate * sv.mill_current_nA.value)
    return {"step": "imaging", "method": "slice_and_view",
            "minutes": (mill_s + layout.imaging_count * sv.image_seconds) / 60,
            "slices": layout.imaging_count, "slice_um": sv.slice_um.value, "volume_um3": layout.volumes_um3["imaging"],
            "image_s": sv.image_seconds, "depth_consumed_um": layout.imaging_depth_um,
            "formula": "V_slices / (rate * I_slice) + slices * (pixels_y * pixels_x * dwell + overhead)"}
