"""``roidetect ensemble MODEL MODEL ... --data DATASET --out NEW``: average models into one package."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from roidetect.cli.common import add_command, add_device

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "ensemble", "combine trained models into one that averages their probabilities",
        "Write a model package whose network runs every MODEL on each window and averages their softmax "
        "probabilities, then calibrate it (plainly and for --tta) on the annotated volumes of --data, as "
        "'roidetect calibrate' does: averaged probabilities are smoother than any member's, so the members' "
        "calibrations do not carry over. The members must share classes, voxel size, normalisation and patch "
        "size. Inference costs the sum of the members' time. The MODELs are not changed.")
    parser.add_argument("models", nargs="+", metavar="MODEL", help="model package folders or shipped model names "
                                                                   "(two or more)")
    parser.add_argument("--data", required=True, metavar="DATASET",
                        help="dataset.json (or its folder) of annotated volumes to calibrate on; volumes marked "
                             "\"split\": \"test\" are left out")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the new model package")
    parser.add_argument("--name", help="the new card's name (default: the members' names joined by '+')")
    parser.add_argument("--overlap", type=float, metavar="FRACTION",
                        help="overlap of the patch-sized windows to calibrate with, written to the card's "
                             "sliding_window.overlap, which 'roidetect predict' then runs (default: the first "
                             "member's)")
    add_device(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from roidetect.learn.ensemble import ensemble_package

    card = ensemble_package(args.models, args.out, args.data, name=args.name, device=args.device,
                            overwrite=args.overwrite, progress=not args.quiet, overlap=args.overlap)
    overall = card["metrics"]["validation"]["overall"]
    log.info("ensemble %s of %d models: validation F1 pore %.3f, crack %.3f, delamination %.3f on %d volume(s)",
             card["name"], len(card["ensemble"]["members"]), overall["f1_pore"], overall["f1_crack"],
             overall["f1_delamination"], card["metrics"]["validation"]["volumes"])
    log.info("model package written to %s", args.out)
    return 0
