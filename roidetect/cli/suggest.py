"""``roidetect suggest PRED_DIR --out DIR``: ranked, costed milling sites from a prediction folder."""

from __future__ import annotations

import argparse
from typing import Any

from roidetect.cli.common import IntermixedParser, add_command
from roidetect.errors import UserError


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "suggest", "rank and cost milling sites (FIB-SEM / SIMS) from a prediction folder",
        "Plan where to mill: group detections that fit one field of view into sites, lay out the crater "
        "(top-down) or trench and face (cross-section), estimate the minutes of every step, score each site "
        "with visible components, choose sites that do not destroy each other within the time budget and "
        "order them for short stage travel. Writes sites.csv, candidates.csv, sites.json, "
        "milling_protocol.yaml (OpenFIBSEM) and run.json. Extra KEY=VALUE arguments are Hydra overrides of "
        "configs/suggest.yaml, e.g. targeting.material=NCA (see docs/targeting.md).")
    parser.__class__ = type("SuggestParser", (IntermixedParser, type(parser)), {})
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="output folder of 'roidetect predict'")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra config overrides")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the plan to")
    parser.add_argument("--instrument", metavar="NAME",
                        help="instrument profile in configs/instrument/ (default nanoct_gafib_sims)")
    parser.add_argument("--mode", choices=("top-down", "cross-section"),
                        help="milling geometry (default: the instrument's)")
    parser.add_argument("--budget-hours", type=float, metavar="H", help="instrument time for all sites")
    parser.add_argument("--top", type=int, metavar="K", help="at most K sites")
    parser.add_argument("--fiducials", metavar="CSV",
                        help="fiducials CSV (x_um,y_um,z_um,stage_x_um,stage_y_um,stage_z_um[,name]) for stage "
                             "coordinates and predicted TRE")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from roidetect.config import compose_config
    from roidetect.resources import config_dir
    from roidetect.targeting import suggest

    overrides = list(args.overrides)
    for override in overrides:
        if "=" not in override:
            raise UserError(f"unexpected argument {override!r}; overrides look like KEY=VALUE")
    if args.instrument is not None:
        known = sorted(p.stem for p in (config_dir() / "instrument").glob("*.yaml"))
        if args.instrument not in known:
            raise UserError(f"unknown instrument {args.instrument!r}; known: {', '.join(known)} "
                            "(or add configs/instrument/<name>.yaml)")
        overrides.append(f"instrument={args.instrument}")
    for option, key in (("mode", "targeting.mode"), ("budget_hours", "targeting.budget_hours"),
                        ("top", "targeting.top_k")):
        if getattr(args, option) is not None:
            overrides.append(f"{key}={getattr(args, option)}")
    cfg = compose_config("suggest", overrides)
    plan = suggest(args.pred_dir, args.out, cfg, fiducials=args.fiducials, overwrite=args.overwrite,
                   quiet=args.quiet)
    if not args.quiet and plan.sites:
        print(plan.table[["rank", "site_id", "visit_order", "x_um", "y_um", "z_um", "depth_um", "classes",
                          "score", "minutes_total"]].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return 0

