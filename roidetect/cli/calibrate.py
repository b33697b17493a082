"""``roidetect calibrate MODEL --out NEW_MODEL``: refit a model package's score calibration."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from roidetect.cli.common import add_command, add_device

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "calibrate", "refit a model's score calibration, plain and for --tta",
        "Run a model package on annotated volumes, once plainly and once with test-time augmentation, and "
        "fit the score calibration and min_score of each mode. The volumes are those of --data (your own "
        "annotated scans: scores then mean 'probability of being real' on scans like them), else the "
        "validation volumes the model's training config made (the same phantoms, or the same annotated "
        "files, which must still be where the config says). Writes a new package with the same weights; "
        "MODEL is not changed. Models trained before TTA was calibrated need this for 'roidetect predict "
        "--tta' to score detections correctly.")
    parser.add_argument("model", metavar="MODEL", help="model package folder or shipped model name")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the new model package")
    parser.add_argument("--data", metavar="DATASET",
                        help="dataset.json (or its folder) of annotated volumes to calibrate on; volumes marked "
                             "\"split\": \"test\" are left out (default: the training run's validation volumes)")
    parser.add_argument("--overlap", type=float, metavar="FRACTION",
                        help="overlap of the patch-sized windows to calibrate with, written to the card's "
                             "sliding_window.overlap, which 'roidetect predict' then runs (default: the card's)")
    add_device(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from roidetect.learn.final_validation import calibrate_package

    card = calibrate_package(args.model, args.out, device=args.device, overwrite=args.overwrite,
                             progress=not args.quiet, data=args.data, overlap=args.overlap)
    plain, tta = card["detection"]["min_score"], card["tta"]["min_score"]
    for name in plain:
        log.info("%-13s min_score %.3f plain, %.3f with TTA", name, plain[name], tta.get(name, float("nan")))
    log.info("model package written to %s", args.out)
    return 0
