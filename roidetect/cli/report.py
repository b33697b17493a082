"""``roidetect report PRED_DIR [SITES_DIR] --out report.html``: one self-contained HTML page."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from roidetect.cli.common import add_command

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "report", "write an HTML report of a prediction and its milling sites",
        "Write one self-contained HTML page (images embedded, opens offline) with the run's parameters, "
        "counts per class, orthogonal slices with the labels over the scan, a projection along z with the "
        "detections and the ranked sites, size and depth distributions per class, and the site table. "
        "The figures are also written as PNG files to REPORT_files/ beside the page.")
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="output folder of 'roidetect predict'")
    parser.add_argument("sites_dir", metavar="SITES_DIR", nargs="?",
                        help="output folder of 'roidetect suggest' for this prediction (optional)")
    parser.add_argument("--out", required=True, metavar="REPORT.html", help="the HTML file to write")
    parser.add_argument("--scan", metavar="SCAN",
                        help="the scan to draw under the labels (default: the path recorded in run.json)")
    parser.add_argument("--focus", metavar="WHERE",
                        help="where the orthogonal slices cross: site:RANK, detection:ID or Z,Y,X in um "
                             "(default: the best site, else the highest-scoring detection)")
    parser.add_argument("--thumbnails", type=int, default=12, metavar="N",
                        help="sites drawn up close, best first (default: 12)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from roidetect.report import figures_folder, write_report

    out = write_report(args.pred_dir, args.out, args.sites_dir, scan=args.scan, focus=args.focus,
                       max_thumbnails=args.thumbnails, overwrite=args.overwrite, quiet=args.quiet)
    log.info("report written to %s (figures in %s)", out, figures_folder(out))
    return 0
