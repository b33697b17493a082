"""From detections to a ranked, costed plan of milling sites (pure numpy/pandas).

:func:`plan` forms candidate sites, lays out and costs each one, scores it, chooses the sites
that fit together and the time budget, and orders the visits. :func:`plan_sites` returns just
the table of chosen sites.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from roidetect.errors import UserError
from roidetect.targeting.candidates import Frame, build_candidates, target_point
from roidetect.targeting.costs import STEPS, step_details
from roidetect.targeting.geometry import ScanGeometry, SurfaceMap, boxes_overlap, detection_boxes
from roidetect.targeting.instrument import Instrument
from roidetect.targeting.layout import Layout, cross_section, top_down
from roidetect.targeting.params import SCORE_COMPONENTS, TargetingParams
from roidetect.targeting.prediction import check_detections
from roidetect.targeting.registration import Registration
from roidetect.targeting.scoring import static_components, total_score
from roidetect.targeting.selection import Selection, choose_sites, path_length, short_route


CANDIDATE_COLUMNS = ["candidate", "status", "site_id", "x_um", "y_um", "z_um", "detection_ids", "classes", "score",
                     *[f"score_{c}" for c in SCORE_COMPONENTS], "minutes_total", "clearance_um"]


@dataclass
class Site:
    """One candidate site, evaluated; ``rank`` is set when it is chosen."""

    member_ids: list[int]
    classes: list[str]
    target_zyx_um: np.ndarray
    feature_size_um: float
    standoff_um: float
    layout: Layout
    steps: list[dict[str, Any]]
    components: dict[str, float]
    destroyed_ids: list[int]
    tre_um: float | None
    stage_xyz_um: np.ndarray | None
    status: str = "open"
    rank: int | None = None
    visit_order: int | None = None
    score: float | None = None

    @property
    def site_id(self) -> str | None:
        return f"site_{self.rank:03d}" if self.rank is not None else None

    @property
    def minutes(self) -> dict[str, float]:
        return {s["step"]: float(s["minutes"]) for s in self.steps}

    @property
    def minutes_total(self) -> float:
        return float(sum(self.minutes.values()))


@dataclass
class Plan:
    """A plan: chosen sites best first, every candidate with its fate, and a summary."""

    mode: str
    sites: list[Site]
    candidates: list[Site]
    summary: dict[str, Any]
    registration: Registration | None = None
    params: TargetingParams = field(default_factory=TargetingParams)

    @property
    def table(self) -> pd.DataFrame:
        """``sites.csv``: one row per chosen site, best first."""
        return pd.DataFrame([site_row(s, self.registration is not None, self.params) for s in self.sites],
                            columns=site_columns(self.registration is not None))

    @property
    def candidate_table(self) -> pd.DataFrame:
        """``candidates.csv``: every candidate, its score and why it was (not) chosen.

        A chosen site's score is the one it was chosen with; any other candidate's is scored
        against the classes the chosen sites cover.
        """
        covered = {c for s in self.sites for c in s.classes}
        rows = []
        for i, c in enumerate(self.candidates):
            z, y, x = c.target_zyx_um
            components = {**c.components}
            components.setdefault("diversity", 1.0 if set(c.classes) - covered else 0.0)
            rows.append({"candidate": i + 1, "status": c.status, "site_id": c.site_id or "",
                         "x_um": x, "y_um": y, "z_um": z, "detection_ids": _join(c.member_ids),
                         "classes": _join(c.classes), "score": total_score(components, self.params.weights),
                         **{f"score_{k}": components.get(k, np.nan) for k in SCORE_COMPONENTS},
                         "minutes_total": c.minutes_total, "clearance_um": c.layout.clearance_um})
        return pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)


def plan(detections: pd.DataFrame, surface: SurfaceMap | np.ndarray, geometry: ScanGeometry,
         instrument: Instrument | Mapping[str, Any], targeting: TargetingParams | Mapping[str, Any] | None = None,
         registration: Registration | None = None, quiet: bool = True) -> Plan:
    """Plan milling sites.

    Parameters
    ----------
    detections : DataFrame
        Rows as in ``detections.csv`` (docs/architecture.md).
    surface : SurfaceMap or ndarray, shape (Y, X)
        Sample top surface, z in scan um.
    geometry : ScanGeometry
    instrument : Instrument or an ``instrument`` config mapping
    targeting : TargetingParams or a ``targeting`` config mapping (defaults if None)
    registration : Registration, optional
        Scan -> stage transform; adds stage coordinates and predicted TRE to every site.
    quiet : bool
        No progress bar while candidates are evaluated.
    """
    from tqdm import tqdm

    det = check_detections(detections)
    inst = instrument if isinstance(instrument, Instrument) else Instrument.from_config(instrument)
    params = targeting if isinstance(targeting, TargetingParams) else TargetingParams.from_config(targeting)
    surf = surface if isinstance(surface, SurfaceMap) else SurfaceMap(surface, geometry)
    mode = params.mode or inst.default_mode
    inst.removal_rate(params.material)  # an unknown material fails before any work
    usable_fov = inst.fov_um.value - 2 * params.fov_margin_um
    if usable_fov <= 0:
        raise UserError(f"targeting.fov_margin_um={params.fov_margin_um} leaves nothing of the "
                        f"{inst.fov_um.value} um field of view")
    resolution = params.scan_resolution_um or 2.0 * max(geometry.spacing_um)
    frame = Frame.for_mode(mode, params.face_side)
    lo, hi = detection_boxes(det, geometry)
    arrays = _DetectionArrays.of(det)
    priority = np.array([float(params.class_priority.get(c, 0.0)) for c in arrays.classes])
    eligible = np.flatnonzero(arrays.scores >= params.min_score)
    order = np.lexsort((arrays.ids[eligible], -(priority * arrays.scores)[eligible]))
    seeds = eligible[order][: params.max_candidates]
    groups = build_candidates(lo, hi, frame, usable_fov, params.merge_depth_um, seeds)
    candidates = [_evaluate(g.members, arrays, lo, hi, frame, mode, surf, geometry, inst, params, resolution,
                            registration) for g in tqdm(groups, desc="sites", unit="candidate", disable=quiet)]
    selection = _select(candidates, params)
    chosen = [candidates[i] for i in selection.chosen]
    for rank, (site, score, div) in enumerate(zip(chosen, selection.scores, selection.diversity), start=1):
        site.rank, site.score, site.status = rank, score, "chosen"
        site.components["diversity"] = div
    _explain_rejections(candidates, chosen, selection.blocked_by, params)
    travel_um, travel_rank_order_um = _route(chosen)
    summary = {
        "detections": len(det), "detections_targetable": int(eligible.size), "candidates": len(candidates),
        "sites": len(chosen), "minutes_total": float(sum(s.minutes_total for s in chosen)),
        "budget_minutes": params.budget_hours * 60.0, "top_k": params.top_k,
        "classes_found": sorted(set(arrays.classes[eligible])),
        "classes_covered": sorted({c for s in chosen for c in s.classes}),
        "scan_resolution_um": resolution, "travel_um": travel_um, "travel_um_in_rank_order": travel_rank_order_um,
        "travel_in": "stage" if registration is not None else "scan",
        "warnings": _warnings(inst, params, chosen, candidates, arrays.scores),
    }
    return Plan(mode=mode, sites=chosen, candidates=candidates, summary=summary, registration=registration,
                params=params)


def plan_sites(detections: pd.DataFrame, surface: SurfaceMap | np.ndarray, geometry: ScanGeometry,
               instrument: Instrument | Mapping[str, Any], targeting: TargetingParams | Mapping[str, Any] | None = None,
               registration: Registration | None = None) -> pd.DataFrame:
    """The chosen sites as a table (the rows of ``sites.csv``), best first; see :func:`plan`."""
    return plan(detections, surface, geometry, instrument, targeting, registration).table


@dataclass(frozen=True)
class _DetectionArrays:
    """The detection columns planning reads, as arrays (row positions as in the table)."""

    ids: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    uncertainty: np.ndarray
    sizes: np.ndarray
    centroids: np.ndarray  # (N, 3) z, y, x um

    @classmethod
    def of(cls, det: pd.DataFrame) -> _DetectionArrays:
        uncertainty = det["uncertainty"] if "uncertainty" in det.columns else pd.Series(np.nan, index=det.index)
        return cls(det["id"].to_numpy(int), det["class"].to_numpy(str), det["score"].to_numpy(float),
                   uncertainty.to_numpy(float), det["equivalent_diameter_um"].to_numpy(float),
                   det[["z_um", "y_um", "x_um"]].to_numpy(float))


def _evaluate(members: tuple[int, ...], det: _DetectionArrays, lo: np.ndarray, hi: np.ndarray, frame: Frame,
              mode: str, surface: SurfaceMap, geometry: ScanGeometry, inst: Instrument, params: TargetingParams,
              resolution: float, registration: Registration | None) -> Site:
    rows = list(members)
    target = target_point(det.centroids, det.sizes, lo, hi, members, frame)
    xyz = target[::-1]
    tre = float(registration.predicted_tre_um(xyz)[0]) if registration is not None else None
    standoff = max(params.standoff_um, resolution / 2, tre or 0.0)
    near, far = frame.m_range(lo[rows], hi[rows])
    common = dict(surface=surface, geometry=geometry, instrument=inst, material=params.material,
                  standoff_um=standoff, polish_um=params.polish_um, crater_margin_um=params.crater_margin_um)
    if mode == "top-down":
        layout = top_down(target, float(near.min()), float(far.max()), float(near.max()), **common)
    else:
        layout = cross_section(target, frame, float(near.min()), float(far.max()), float(near.max()),
                               float(hi[rows, 0].max()), **common)
    steps = step_details(layout, inst, params.material)
    minutes = sum(s["minutes"] for s in steps)
    hit = boxes_overlap(layout.box_lo, layout.box_hi, lo, hi)
    member_ids = sorted(int(i) for i in det.ids[rows])
    classes = [str(c) for c in det.classes[rows]]
    return Site(
        member_ids=member_ids,
        classes=sorted(set(classes)),
        target_zyx_um=target,
        feature_size_um=float(det.sizes[rows].max()),
        standoff_um=standoff,
        layout=layout,
        steps=steps,
        components=static_components(classes, det.scores[rows], det.uncertainty[rows], det.sizes[rows], minutes,
                                     resolution, tre or 0.0, params),
        destroyed_ids=sorted(set(int(i) for i in det.ids[hit]) - set(member_ids)),
        tre_um=tre,
        stage_xyz_um=registration.apply(xyz)[0] if registration is not None else None,
    )


def _select(candidates: list[Site], params: TargetingParams) -> Selection:
    if not candidates:
        return choose_sites(np.empty((0, 3)), np.empty((0, 3)), [], [], [], [], np.empty(0), np.empty(0, bool),
                            params.weights, params.budget_hours * 60.0, params.top_k)
    return choose_sites(
        np.array([c.layout.box_lo for c in candidates]), np.array([c.layout.box_hi for c in candidates]),
        [set(c.member_ids) for c in candidates], [set(c.destroyed_ids) for c in candidates],
        [set(c.classes) for c in candidates], [c.components for c in candidates],
        np.array([c.minutes_total for c in candidates]),
        np.array([c.layout.clearance_um >= params.min_clearance_um for c in candidates]),
        params.weights, params.budget_hours * 60.0, params.top_k)


def _explain_rejections(candidates: list[Site], chosen: list[Site], blocked_by: np.ndarray,
                        params: TargetingParams) -> None:
    remaining = params.budget_hours * 60.0 - sum(s.minutes_total for s in chosen)
    for i, c in enumerate(candidates):
        if c.status == "chosen":
            continue
        if c.layout.clearance_um < params.min_clearance_um:
            c.status = f"too close to the scan edge (clearance {c.layout.clearance_um:.2f} um)"
        elif blocked_by[i] >= 0:
            c.status = f"conflicts with {chosen[blocked_by[i]].site_id}"
        elif c.minutes_total > remaining + 1e-9:
            c.status = "over budget"
        else:
            c.status = f"not needed (top_k = {params.top_k} reached)"


def _route(chosen: list[Site]) -> tuple[float, float]:
    """Set each site's visit order; return the path length in visit order and in rank order (um)."""
    if not chosen:
        return 0.0, 0.0
    if chosen[0].stage_xyz_um is not None:
        points = np.array([s.stage_xyz_um[:2] for s in chosen])
    else:
        points = np.array([s.target_zyx_um[[2, 1]] for s in chosen])
    order = short_route(points)
    for position, index in enumerate(order, start=1):
        chosen[index].visit_order = position
    return path_length(points, order), path_length(points, range(len(chosen)))


def _warnings(inst: Instrument, params: TargetingParams, chosen: list[Site], candidates: list[Site],
              scores: np.ndarray) -> list[str]:
    """Uncalibrated rates the plan relies on, sites whose predicted TRE is too large, and why
    a plan chose no site (``scores``: every detection's score)."""
    rate = inst.removal_rate(params.material)
    warnings = [f"removal rate of {params.material} is uncalibrated: {rate.source}"] if not rate.calibrated else []
    if inst.laser_rate_um3_per_s is not None and not inst.laser_rate_um3_per_s.calibrated:
        warnings.append(f"laser removal rate is uncalibrated: {inst.laser_rate_um3_per_s.source}")
    flagged = [str(s.site_id) for s in chosen if _tre_flag(s, params)]
    if flagged:
        warnings.append(f"predicted TRE exceeds {params.tre_flag_fraction:g} x the feature size at "
                        f"{', '.join(flagged)}")
    if candidates and not chosen:
        warnings.append(_why_no_site(candidates, params))
    if not candidates:
        warnings.append("the prediction has no detections: nothing to mill" if scores.size == 0 else
                        f"no site: none of the {scores.size} detection(s) scores targeting.min_score="
                        f"{params.min_score:g} or more (the best scores {scores.max():.3f}); lower it to plan on them")
    return warnings


def _why_no_site(candidates: list[Site], params: TargetingParams) -> str:
    """One line: how many candidates each rejection had, and the setting that would admit them."""
    edge = sum(c.status.startswith("too close to the scan edge") for c in candidates)
    over = sum(c.status == "over budget" for c in candidates)
    reasons = []
    if edge:
        widest = max(c.layout.clearance_um for c in candidates)
        reasons.append(f"{edge} milled box(es) reach past the scanned region (best clearance {widest:.2f} um; "
                       f"targeting.min_clearance_um={params.min_clearance_um:g}: lower it, e.g. to "
                       f"{np.floor(widest):g}, where the sample extends beyond the scan)")
    if over:
        cheapest = min(c.minutes_total for c in candidates if c.status == "over budget")
        reasons.append(f"{over} over the {params.budget_hours:g} h budget (the cheapest needs "
                       f"{cheapest / 60:.1f} h: raise --budget-hours)")
    return f"no site chosen from {len(candidates)} candidate(s): " + "; ".join(reasons or ["see candidates.csv"])


def _tre_flag(site: Site, params: TargetingParams) -> bool:
    return site.tre_um is not None and site.tre_um > params.tre_flag_fraction * site.feature_size_um


def _join(values: Any) -> str:
    return ";".join(str(v) for v in values)


def site_columns(registered: bool) -> list[str]:
    """Columns of ``sites.csv`` in order (documented in docs/targeting.md)."""
    columns = ["rank", "site_id", "visit_order", "x_um", "y_um", "z_um", "plane_um", "depth_um", "fov_um",
               "detection_ids", "classes", "n_detections", "feature_size_um", "standoff_um", "score",
               *[f"score_{c}" for c in SCORE_COMPONENTS], *[f"minutes_{s}" for s in STEPS], "minutes_total",
               "volume_laser_um3", "volume_fib_rough_um3", "volume_fib_polish_um3", "imaging_count",
               "imaging_depth_um", "box_z0_um", "box_z1_um", "box_y0_um", "box_y1_um", "box_x0_um", "box_x1_um",
               "clearance_um", "destroys_ids"]
    if registered:
        columns += ["stage_x_um", "stage_y_um", "stage_z_um", "tre_um", "tre_flag"]
    return columns


def site_row(site: Site, registered: bool, params: TargetingParams) -> dict[str, Any]:
    """One ``sites.csv`` row."""
    z, y, x = site.target_zyx_um
    layout = site.layout
    row: dict[str, Any] = {
        "rank": site.rank, "site_id": site.site_id, "visit_order": site.visit_order, "x_um": x, "y_um": y,
        "z_um": z, "plane_um": layout.plane_um, "depth_um": layout.depth_um,
        "fov_um": layout.fov_um,
        "detection_ids": _join(site.member_ids), "classes": _join(site.classes),
        "n_detections": len(site.member_ids), "feature_size_um": site.feature_size_um,
        "standoff_um": site.standoff_um, "score": site.score,
        **{f"score_{c}": site.components.get(c, np.nan) for c in SCORE_COMPONENTS},
        **{f"minutes_{s}": site.minutes[s] for s in STEPS}, "minutes_total": site.minutes_total,
        **{f"volume_{s}_um3": layout.volumes_um3[s] for s in ("laser", "fib_rough", "fib_polish")},
        "imaging_count": layout.imaging_count, "imaging_depth_um": layout.imaging_depth_um,
        **{f"box_{a}{e}_um": (layout.box_lo if e == 0 else layout.box_hi)[i]
           for i, a in enumerate("zyx") for e in (0, 1)},
        "clearance_um": layout.clearance_um, "destroys_ids": _join(site.destroyed_ids),
    }
    if registered:
        sx, sy, sz = site.stage_xyz_um
        row.update(stage_x_um=sx, stage_y_um=sy, stage_z_um=sz, tre_um=site.tre_um, tre_flag=_tre_flag(site, params))
    return row
