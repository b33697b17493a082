"""``roidetect demo [--out DIR]``: phantom -> predict -> suggest -> report, printing where it all went."""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from roidetect.cli.common import add_command

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "demo", "run the whole pipeline on a phantom scan and write the report",
        "Make an annotated phantom scan of a cathode, find its defects with the shipped default model, "
        "plan milling sites, write the HTML report and score the prediction against the phantom's truth. "
        "Takes about a minute on a 2-core CPU. Each step is an ordinary command; the printed paths show "
        "where to look and which command to run on your own scan.")
    parser.add_argument("--out", default="roidetect-demo", metavar="DIR",
                        help="folder to write (default: ./roidetect-demo; an earlier demo's folder is replaced)")
    parser.add_argument("--model", metavar="MODEL",
                        help="model package folder or shipped name (default: the shipped default model)")
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 128, 128), metavar=("Z", "Y", "X"),
                        help="phantom shape in voxels of 50 nm (default 128 128 128)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    parser.add_argument("--preset", default="cathode", help="phantom preset: cathode (default), anode, nmc-real")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty --out folder that an earlier demo did not write")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from roidetect.demo import run_demo

    start = time.perf_counter()
    outputs = run_demo(args.out, model=args.model, shape=args.shape, seed=args.seed, preset=args.preset,
                       overwrite=args.overwrite, quiet=args.quiet)
    print(f"\nroidetect demo finished in {time.perf_counter() - start:.0f} s. Everything is in {outputs.folder}:")
    print("\n".join(outputs.lines()))
    print(f"\nOpen the report in a browser: {outputs.report.resolve().as_uri()}")
    print("On your own scan: roidetect predict SCAN --out PRED && roidetect suggest PRED --out SITES "
          "&& roidetect report PRED SITES --out report.html")
    return 0
