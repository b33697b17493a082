"""Instrument profiles: every figure has a source, the source study's numbers are the defaults."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from roidetect.config import compose_config
from roidetect.errors import UserError
from roidetect.resources import config_dir
from roidetect.targeting import Instrument

PROFILES = sorted(p.stem for p in (config_dir() / "instrument").glob("*.yaml"))
AVOGADRO, ELEMENTARY_CHARGE = 6.02214076e23, 1.602176634e-19


def _profile(name: str, *overrides: str) -> dict:
    cfg = compose_config("suggest", [f"instrument={name}", *overrides])
    return OmegaConf.to_container(cfg.instrument, resolve=True)


def _unsourced_numbers(node, path=""):
    """Numbers that are not the value of a {value, source} entry."""
    if isinstance(node, dict):
        if "value" in node:
            return [] if node.get("source") else [path]
        return [p for k, v in node.items() for p in _unsourced_numbers(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _unsourced_numbers(v, f"{path}[{i}]")]
    return [path] if isinstance(node, (int, float)) and not isinstance(node, bool) else []


def test_both_required_profiles_exist():
    assert {"nanoct_gafib_sims", "xrm_fslaser_fibsem"} <= set(PROFILES)


@pytest.mark.parametrize("name", PROFILES)
def test_every_figure_records_its_source(name):
    profile = _profile(name)
    assert _unsourced_numbers(profile) == []
    instrument = Instrument.from_config(profile)
    assert instrument.name == name
    for material, rate in instrument.removal_rates.items():
        assert rate.calibrated or "uncalibrated" in rate.source, material


def test_source_study_sims_numbers_are_the_defaults():
    instrument = Instrument.from_config(_profile("nanoct_gafib_sims"))
    sims = instrument.sims
    assert sims.pixels.value == [512, 512]
    assert 0.55 <= sims.dwell_ms.value <= 1.20
    assert sims.current_pA.value == 50
    assert 11.8 <= instrument.fov_um.value <= 20.7
    assert instrument.fib_voltage_kV.value == 30
    assert 144 <= sims.frame_seconds <= 315  # 512 * 512 * dwell, as in the source study


def test_removal_rates_are_consistent_with_sputter_yields():
    rates = Instrument.from_config(_profile("nanoct_gafib_sims")).removal_rates
    assert rates["Si"].value == pytest.approx(0.27) and rates["Si"].calibrated
    assert {"C", "Al", "Cu", "LCO", "NCA"} <= set(rates)
    assert not any(rates[m].calibrated for m in ("C", "Al", "Cu", "LCO", "NCA"))
    # V/Q = Y * Omega / e: 0.27 um^3/nC of Si (Omega = M / (rho N_A)) is about 2.2 atoms per Ga+ ion,
    # within the 1.5-3 atoms/ion range of 30 keV Ga+ sputter yields of Si
    omega_um3 = 28.085 / (2.329 * AVOGADRO) * 1e12  # volume of one Si atom
    ions_per_nC = 1e-9 / ELEMENTARY_CHARGE
    atoms_per_ion = rates["Si"].value / (ions_per_nC * omega_um3)
    assert 1.5 <= atoms_per_ion <= 3.0
    assert atoms_per_ion == pytest.approx(2.16, abs=0.05)


def test_laser_rate_is_a_user_calibration():
    instrument = Instrument.from_config(_profile("xrm_fslaser_fibsem"))
    assert instrument.laser_rate_um3_per_s is not None
    assert not instrument.laser_rate_um3_per_s.calibrated
    assert instrument.slice_and_view is not None and instrument.default_mode == "cross-section"


@pytest.mark.parametrize("change, message", [
    (lambda p: p["fib"]["rough_current_nA"].pop("source"), "where it came from"),
    (lambda p: p["fib"]["polish_current_nA"].update(value=-1), "positive"),
    (lambda p: p["imaging"].update(method="tea"), "imaging.method"),
    (lambda p: p["imaging"]["sims"].pop("dwell_ms"), "missing imaging.sims.dwell_ms"),
])
def test_bad_profiles_are_user_errors(change, message):
    profile = _profile("nanoct_gafib_sims")
    change(profile)
    with pytest.raises(UserError, match=message):
        Instrument.from_config(profile)
