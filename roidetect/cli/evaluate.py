"""``roidetect evaluate PRED_DIR --truth LABELS``: voxel, instance, size and site metrics."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from roidetect.cli.common import add_command

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "evaluate", "score a prediction against annotated ground truth",
        "Compare a prediction folder (from 'roidetect predict') with a true label map: voxel Dice and IoU per "
        "class, instance precision, recall and F1 per class (one-to-one matching that tolerates one-voxel "
        "offsets), recall by defect size and, with --sites, the hit-rate of the top-k milling sites. "
        "Voxels labelled 255 in the truth are ignored. Prints a table; --out also writes JSON.")
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="output folder of 'roidetect predict'")
    parser.add_argument("--truth", required=True, metavar="LABELS",
                        help="true label map (0 background, 1 pore, 2 crack, 3 delamination, 255 ignored)")
    parser.add_argument("--instances", metavar="INSTANCES",
                        help="true instance map (one id per defect); default: connected components of --truth")
    parser.add_argument("--label-map", metavar="RAW=LABEL,...",
                        help="--truth in another label scheme: each raw value and the label it means, e.g. "
                             "0=255,1=0,2=1,3=2 for ilastik labels (0 unlabelled); unlisted values are kept")
    parser.add_argument("--sites", metavar="SITES_DIR", help="output folder of 'roidetect suggest' (site hit-rate)")
    parser.add_argument("--out", metavar="REPORT.json", help="write the full result as JSON")
    parser.add_argument("--match-threshold", type=float, default=0.5, metavar="T",
                        help="smallest tolerant Dice for a predicted and a true instance to match (default: 0.5)")
    parser.add_argument("--tolerance", type=int, default=1, metavar="VOXELS",
                        help="distance in voxels within which voxels count as overlapping (default: 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from roidetect.atomic import check_outside_inputs
    from roidetect.errors import UserError
    from roidetect.evaluate import EvaluationParams, evaluate_prediction, format_report, json_ready
    from roidetect.labels import parse_label_map
    from roidetect.runlog import library_versions
    from roidetect.volume import split_inner_path, write_json

    if not 0.0 < args.match_threshold <= 1.0:
        raise UserError(f"--match-threshold {args.match_threshold}: must lie in (0, 1]")
    if args.tolerance < 0:
        raise UserError(f"--tolerance {args.tolerance}: must be >= 0 voxels")
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise UserError(f"{args.out} exists; pass --overwrite to replace it")
    if args.out:
        volumes = [split_inner_path(path)[0] for path in (args.truth, args.instances) if path]
        check_outside_inputs(args.out, [args.pred_dir, args.sites, *volumes])
    label_map = parse_label_map(args.label_map) if args.label_map else {}
    params = EvaluationParams(match_threshold=args.match_threshold, tolerance_voxels=args.tolerance)
    result = evaluate_prediction(args.pred_dir, args.truth, args.instances, args.sites, params,
                                 progress=not args.quiet, label_map=label_map)
    print(format_report(result))
    if args.out:
        result["versions"] = library_versions()
        write_json(args.out, json_ready(result), overwrite=True)
        log.info("written %s", args.out)
    return 0
