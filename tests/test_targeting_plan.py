"""Planning milling sites on phantom ground truth: hits, no self-destruction, costs, budget."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from targeting_fixtures import make_phantom

from roidetect.config import compose_config
from roidetect.errors import UserError
from roidetect.targeting import ScanGeometry, fit_registration, plan, plan_sites
from roidetect.targeting.costs import STEPS
from roidetect.targeting.geometry import boxes_overlap

ROOMY = ["instrument.imaging.fov_um.value=6", "targeting.budget_hours=100"]


def _config(*overrides: str):
    return compose_config("suggest", list(overrides))


def _plan(*overrides: str, registration=None, detections=None):
    phantom = make_phantom()
    cfg = _config(*overrides)
    table = phantom.detections.drop(columns="truth") if detections is None else detections
    return plan(table, phantom.surface_um, phantom.geometry, cfg.instrument, cfg.targeting, registration)


def _boxes(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    lo = table[["box_z0_um", "box_y0_um", "box_x0_um"]].to_numpy(float)
    hi = table[["box_z1_um", "box_y1_um", "box_x1_um"]].to_numpy(float)
    return lo, hi


def _ids(cell: str) -> set[int]:
    return {int(v) for v in str(cell).split(";") if v not in ("", "nan")}


@pytest.mark.parametrize("overrides, at_least", [(ROOMY, 10), (ROOMY + ["instrument=xrm_fslaser_fibsem"], 5)],
                         ids=["top-down-sims", "cross-section-slice-and-view"])
def test_every_top10_site_holds_a_true_defect(overrides, at_least):
    phantom = make_phantom()
    result = _plan(*overrides)
    table = result.table
    assert len(table) >= at_least  # long cross-section trenches leave room for fewer sites
    truth = phantom.detections.set_index("id")
    for _, site in table.head(10).iterrows():
        true_members = _ids(site["detection_ids"]) & phantom.true_ids
        assert true_members, f"{site['site_id']} targets no true defect"
        # a true member lies across the imaged plane from the milled side, inside the milled width
        member = truth.loc[sorted(true_members)[0]]
        milling_axis = "z" if result.mode == "top-down" else "y"
        assert member[f"{milling_axis}_um"] > site["plane_um"]
        for axis in {"z", "y", "x"} - {milling_axis}:
            assert site[f"box_{axis}0_um"] <= member[f"{axis}_um"] <= site[f"box_{axis}1_um"]


@pytest.mark.parametrize("overrides", [ROOMY, ROOMY + ["instrument=xrm_fslaser_fibsem"],
                                       ROOMY + ["targeting.mode=cross-section", "targeting.face_side=+x"]],
                         ids=["top-down", "cross-section", "cross-section-+x"])
def test_chosen_sites_do_not_wreck_each_other(overrides):
    table = _plan(*overrides).table
    assert len(table) >= 3
    lo, hi = _boxes(table)
    for i, j in itertools.permutations(range(len(table)), 2):
        assert not boxes_overlap(lo[i], hi[i], lo[j:j + 1], hi[j:j + 1])[0]
        assert not _ids(table["detection_ids"][j]) & _ids(table["destroys_ids"][i])
        assert not _ids(table["detection_ids"][j]) & _ids(table["detection_ids"][i])


@pytest.mark.parametrize("side", ["-y", "+y", "-x", "+x"])
def test_cross_section_trench_lies_on_the_chosen_side(side):
    result = _plan(*ROOMY, "instrument=xrm_fslaser_fibsem", f"targeting.face_side={side}", "targeting.top_k=3")
    truth = make_phantom().detections.set_index("id")
    axis, sign = side[1], -1 if side[0] == "-" else 1
    for _, site in result.table.iterrows():
        members = truth.loc[sorted(_ids(site["detection_ids"])), f"{axis}_um"]
        near_edge = members.min() if sign < 0 else members.max()
        assert sign * (site["plane_um"] - near_edge) > 0, "the face stands in front of the features"
        trench_end = site[f"box_{axis}0_um"] if sign < 0 else site[f"box_{axis}1_um"]
        assert sign * (trench_end - site["plane_um"]) > site["depth_um"], "trench longer than the face is high"


def test_site_time_is_the_sum_of_its_steps_and_covers_classes():
    result = _plan(*ROOMY)
    table = result.table
    steps = table[[f"minutes_{s}" for s in STEPS]].sum(axis=1)
    np.testing.assert_allclose(table["minutes_total"], steps, rtol=1e-12)
    for site in result.sites:
        assert math.isclose(site.minutes_total, sum(s["minutes"] for s in site.steps), rel_tol=1e-12)
    assert result.summary["classes_covered"] == result.summary["classes_found"] == ["crack", "delamination", "pore"]
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    assert (np.diff(table["score"]) <= 1e-12).all(), "sites are listed best first"
    assert sorted(table["visit_order"]) == list(range(1, len(table) + 1))
    assert result.summary["travel_um"] <= result.summary["travel_um_in_rank_order"] + 1e-9


@pytest.mark.parametrize("hours", [0.5, 1.5, 3.0])
def test_budget_is_respected(hours):
    table = _plan("instrument.imaging.fov_um.value=6", f"targeting.budget_hours={hours}").table
    assert table["minutes_total"].sum() <= hours * 60 + 1e-9
    assert len(table) >= (1 if hours >= 1 else 0)


@pytest.mark.parametrize("overrides, reason", [
    (["targeting.min_clearance_um=1000"], "targeting.min_clearance_um=1000: lower it"),
    (["instrument.imaging.fov_um.value=6", "targeting.budget_hours=0.01"], "raise --budget-hours")])
def test_an_empty_plan_says_why(overrides, reason):
    result = _plan(*overrides)
    assert result.summary["candidates"] > 0 and result.summary["sites"] == 0
    assert any(w.startswith("no site chosen") and reason in w for w in result.summary["warnings"])


def test_a_plan_without_candidates_says_why():
    table = make_phantom().detections.drop(columns="truth")
    table["score"] *= 0.5  # every score at most 0.5
    result = _plan("targeting.min_score=0.9", detections=table)
    assert result.summary["candidates"] == 0
    best = f"best scores {table['score'].max():.3f}"
    assert [w for w in result.summary["warnings"] if best in w and "targeting.min_score=0.9 or more" in w]
    empty = table.iloc[:0]
    assert "the prediction has no detections: nothing to mill" in _plan(detections=empty).summary["warnings"]


def test_low_scores_are_not_targeted_and_top_k_is_respected():
    phantom = make_phantom()
    table = _plan(*ROOMY, "targeting.top_k=4").table
    assert len(table) == 4
    targeted = set().union(*(_ids(v) for v in table["detection_ids"]))
    low = set(phantom.detections.loc[phantom.detections["score"] < 0.5, "id"])
    assert low and not targeted & low


def test_hand_calculation_of_one_top_down_site():
    """One pore under a flat surface; every number below is worked out by hand."""
    geometry = ScanGeometry((60, 200, 200), (0.25, 0.25, 0.25), (0.0, 0.0, 0.0))
    surface = np.full((200, 200), 2.0)  # flat top surface at z = 2.0 um
    detections = pd.DataFrame([{
        "id": 1, "class": "pore", "score": 0.9, "z_um": 6.875, "y_um": 24.875, "x_um": 24.875,
        "bbox_z0": 24, "bbox_y0": 90, "bbox_x0": 90, "bbox_z1": 32, "bbox_y1": 110, "bbox_x1": 110,
        "equivalent_diameter_um": 2.0,
    }])
    cfg = _config("targeting.scan_resolution_um=0.2")
    site = plan_sites(detections, surface, geometry, cfg.instrument, cfg.targeting).iloc[0]
    # nanoct_gafib_sims defaults: fov 11.8 um, crater margin 2 um -> side 15.8 um, area 249.64 um^2;
    # Si 0.27 um^3/nC; rough 7 nA, polish 0.3 nA; SIMS 512 x 512 px x 0.55 ms = 144.1792 s/frame at 50 pA.
    # Feature top: voxel edge 24 * 0.25 - 0.125 = 5.875 um. Standoff max(0.1, 0.2 / 2) = 0.1 um,
    # so the plane is z = 5.775 um and the crater is 5.775 - 2.0 = 3.775 um deep.
    assert site["plane_um"] == pytest.approx(5.775)
    assert site["depth_um"] == pytest.approx(3.775)
    # polish: the last 0.5 um, 249.64 * 0.5 = 124.82 um^3 at 0.27 * 0.3 = 0.081 um^3/s -> 1540.99 s = 25.683 min
    assert site["volume_fib_polish_um3"] == pytest.approx(124.82)
    assert site["minutes_fib_polish"] == pytest.approx(124.82 / 0.081 / 60)
    assert site["minutes_fib_polish"] == pytest.approx(25.683, abs=1e-3)
    # rough: 3.775 - 0.5 = 3.275 um, 249.64 * 3.275 = 817.571 um^3 at 0.27 * 7 = 1.89 um^3/s -> 432.58 s = 7.210 min
    assert site["volume_fib_rough_um3"] == pytest.approx(817.571)
    assert site["minutes_fib_rough"] == pytest.approx(7.210, abs=1e-3)
    # SIMS: one frame sputters 0.27 * 0.05 nA * 144.1792 s / 11.8^2 = 0.013979 um; frames go through the 0.1 um
    # standoff to the feature top and 0.1 um past it: ceil(0.2 / 0.013979) = 15 frames (over the 10-frame
    # minimum) = 2162.688 s = 36.045 min
    assert site["imaging_count"] == 15
    assert site["imaging_depth_um"] == pytest.approx(15 * 0.27 * 0.05 * 144.1792 / 11.8 ** 2)
    assert site["minutes_imaging"] == pytest.approx(36.045, abs=1e-3)
    # no laser on this instrument; setup 15 min; total 15 + 0 + 7.210 + 25.683 + 36.045 = 83.938 min
    assert site["minutes_laser"] == 0
    assert site["minutes_setup"] == 15
    assert site["minutes_total"] == pytest.approx(83.938, abs=1e-3)
    # the milled box: crater around the target from the surface down to the plane plus the SIMS depth
    assert (site["box_y0_um"], site["box_y1_um"]) == pytest.approx((24.875 - 7.9, 24.875 + 7.9))
    assert (site["box_z0_um"], site["box_z1_um"]) == pytest.approx((2.0, 5.775 + site["imaging_depth_um"]))
    # clearance: the nearest scan side (-0.125 um) is 17.1 um from the box side at 16.975 um, but the scan's
    # bottom (60 * 0.25 - 0.125 = 14.875 um) is only 14.875 - (5.775 + 0.2097) = 8.890 um below the box
    assert site["clearance_um"] == pytest.approx(14.875 - 5.775 - site["imaging_depth_um"])
    assert site["clearance_um"] == pytest.approx(8.890, abs=1e-3)


def _pair_table(dz_um: float) -> pd.DataFrame:
    """Two small pores 3 um apart laterally, the second dz_um deeper."""
    rows = []
    for i, (y0, z0) in enumerate([(80, 24), (92, 24 + round(dz_um / 0.25))], start=1):
        rows.append({"id": i, "class": "pore", "score": 0.9, "z_um": (z0 + 4) * 0.25, "y_um": (y0 + 4) * 0.25,
                     "x_um": 25.0, "bbox_z0": z0, "bbox_y0": y0, "bbox_x0": 96, "bbox_z1": z0 + 8,
                     "bbox_y1": y0 + 8, "bbox_x1": 104, "equivalent_diameter_um": 2.0})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("dz_um, sites", [(0.25, 1), (3.0, 1)])
def test_detections_in_one_field_of_view_merge_only_at_similar_depth(dz_um, sites):
    geometry = ScanGeometry((60, 200, 200), (0.25, 0.25, 0.25), (0.0, 0.0, 0.0))
    cfg = _config()
    result = plan(_pair_table(dz_um), np.full((200, 200), 2.0), geometry, cfg.instrument, cfg.targeting)
    members = [c.member_ids for c in result.candidates]
    if dz_um < 0.5:  # within merge_depth_um: one candidate exposing both
        assert members == [[1, 2]]
    else:  # too deep apart: one candidate each; their craters overlap, so only one is chosen
        assert sorted(members) == [[1], [2]]
        assert "conflicts with site_001" in {c.status for c in result.candidates}
    assert len(result.sites) == sites


def test_registration_adds_stage_coordinates_and_flags_large_tre():
    rng = np.random.default_rng(5)
    scan = rng.uniform([0, -10, 5], [64, 54, 25], size=(6, 3))
    angle = np.radians(30)
    matrix = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    shift = np.array([2000.0, -1500.0, 300.0])
    for noise, flagged in ((0.01, False), (5.0, True)):
        stage = scan @ matrix.T + shift + rng.normal(0, noise, scan.shape)
        registration = fit_registration(scan, stage, "rigid")
        table = _plan(*ROOMY, registration=registration).table
        targets = table[["x_um", "y_um", "z_um"]].to_numpy(float)
        np.testing.assert_allclose(table[["stage_x_um", "stage_y_um", "stage_z_um"]], registration.apply(targets))
        np.testing.assert_allclose(table["tre_um"], registration.predicted_tre_um(targets))
        assert table["tre_flag"].all() == flagged
        assert (table["standoff_um"] >= table["tre_um"] - 1e-12).all()


def test_bad_targeting_values_are_user_errors():
    with pytest.raises(UserError, match="targeting.mode"):
        _plan("targeting.mode=sideways")
    with pytest.raises(UserError, match="material"):
        _plan("targeting.material=Unobtainium")
    with pytest.raises(UserError, match="missing column"):
        _plan(detections=make_phantom().detections.drop(columns=["bbox_z0", "truth"]))
