"""Write a plan: ``sites.csv``, ``candidates.csv``, ``sites.json`` and ``milling_protocol.yaml``."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

from roidetect.targeting.instrument import Instrument
from roidetect.targeting.openfibsem import milling_protocol
from roidetect.targeting.params import SCORE_COMPONENTS
from roidetect.targeting.plan import Plan, Site
from roidetect.targeting.scoring import __doc__ as SCORING_DOC
from roidetect.volume import write_json

FLOAT_FORMAT = "%.9g"
UNITS = {
    "length": "um", "time": "min", "volume": "um^3", "fib_rate": "um^3/nC", "laser_rate": "um^3/s",
    "fib_current": "nA", "sims_current": "pA", "score": "dimensionless, 0..1",
}
CONVENTIONS = {
    "coordinates": "scan coordinates in um: origin_um + index * voxel_size_um of voxel centres; x, y, z as in "
                   "detections.csv; z grows with depth into the sample",
    "target": "x_um, y_um, z_um: centre of the site's detections in the imaged plane, volume-weighted "
              "centroid along the milling axis",
    "plane_um": "scan coordinate along the milling axis (z top-down, y or x cross-section) where milling stops "
                "and imaging starts",
    "depth_um": "material to remove: crater depth below the local surface at the target (top-down) or face "
                "height (cross-section)",
    "milled_box_um": "axis-aligned box of everything the site removes, imaging included; boxes of chosen sites "
                     "do not share volume",
    "destroys": "ids of other detections whose bounding box the milled box cuts into",
    "stage": "stage_x/y/z_um: the target mapped by the fiducial registration (stage frame of the fiducials CSV)",
    "tre_flag": "predicted target registration error above tre_flag_fraction x the feature size",
    "rank": "order of choice, best first; visit_order: order that keeps stage travel short",
}


def write_plan(folder: str | os.PathLike, plan: Plan, instrument: Instrument) -> list[Path]:
    """Write the plan's files into ``folder`` (which must exist); returns their paths."""
    folder = Path(folder)
    paths = [folder / name for name in ("sites.csv", "candidates.csv", "sites.json", "milling_protocol.yaml")]
    plan.table.to_csv(paths[0], index=False, float_format=FLOAT_FORMAT)
    plan.candidate_table.to_csv(paths[1], index=False, float_format=FLOAT_FORMAT)
    write_json(paths[2], sites_document(plan, instrument))
    with open(paths[3], "w") as handle:
        handle.write("# OpenFIBSEM milling protocol written by 'roidetect suggest' (docs/targeting.md)\n")
        yaml.safe_dump(milling_protocol(plan, instrument), handle, sort_keys=False)
    return paths


def sites_document(plan: Plan, instrument: Instrument) -> dict[str, Any]:
    """The content of ``sites.json``: units and conventions once, then the plan."""
    params = plan.params
    return {
        "format": "roidetect-sites/1",
        "units": UNITS,
        "conventions": CONVENTIONS,
        "mode": plan.mode,
        "material": params.material,
        "instrument": instrument.config,
        "targeting": {k: getattr(params, k) for k in params.__dataclass_fields__},
        "registration": plan.registration.to_dict() if plan.registration is not None else None,
        "score": {"weights": params.weights, "components": list(SCORE_COMPONENTS),
                  "model": " ".join((SCORING_DOC or "").split())},
        "summary": plan.summary,
        "sites": [_site_document(site) for site in plan.sites],
    }


def _site_document(site: Site) -> dict[str, Any]:
    z, y, x = site.target_zyx_um
    layout = site.layout
    return {
        "rank": site.rank, "site_id": site.site_id, "visit_order": site.visit_order,
        "target_um": {"x": x, "y": y, "z": z}, "plane_um": layout.plane_um, "depth_um": layout.depth_um,
        "fov_um": layout.fov_um, "milled_width_um": layout.face_width_um,
        "milled_length_um": layout.trench_length_um, "standoff_um": site.standoff_um,
        "detections": site.member_ids, "classes": site.classes, "feature_size_um": site.feature_size_um,
        "score": {"total": site.score,
                  "components": {k: (None if math.isnan(v) else v) for k, v in site.components.items()}},
        "steps": site.steps, "minutes_total": site.minutes_total,
        "milled_box_um": {a: [layout.box_lo[i], layout.box_hi[i]] for i, a in enumerate("zyx")},
        "clearance_um": layout.clearance_um, "destroys": site.destroyed_ids,
        "stage_um": (dict(zip("xyz", site.stage_xyz_um)) if site.stage_xyz_um is not None else None),
        "tre_um": site.tre_um,
    }
