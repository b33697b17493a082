"""``roidetect predict SCAN --out DIR``: label maps, probabilities and a detections table."""

from __future__ import annotations

import argparse
from typing import Any

from roidetect.cli.common import IntermixedParser, add_command, add_device, add_voxel_size, voxel_size


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "predict", "find defects in a scan: label maps, probabilities, detections table",
        "Segment a scan with a trained model (or the classical baseline) block by block and write DIR/labels.tif, "
        "instances.ome.zarr, probabilities.ome.zarr, surface.tif, detections.csv/.json and run.json. Any key of "
        "configs/predict.yaml can be set as key=value (e.g. inference.overlap=0.5 detection.high_threshold=0.7).")
    parser.__class__ = type("PredictParser", (IntermixedParser, type(parser)), {})
    parser.add_argument("scan", help="TIFF, folder of TIFF slices, file.h5:/dataset, Zarr/OME-Zarr, MRC, NIfTI or .npy")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of configs/predict.yaml")
    parser.add_argument("--out", required=True, metavar="DIR", help="prediction folder to create")
    parser.add_argument("--model", help="model package folder, shipped model name, or 'classical' "
                                        "(default: the shipped default model)")
    add_device(parser, default=None)
    parser.add_argument("--tta", action="store_true", default=None,
                        help="average over flips and record a per-class uncertainty")
    parser.add_argument("--region", metavar="Z0:Z1,Y0:Y1,X0:X1",
                        help="predict only this box of the scan, in voxels (Python ranges: ':,100:612,-512:'); "
                             "outputs keep the scan's coordinates")
    parser.add_argument("--invert", action="store_true",
                        help="the scan shows voids bright and particles dark (negative phase contrast, an inverted "
                             "colour table): flip its grey values first")
    add_voxel_size(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace DIR if it exists (and discard an interrupted run's progress)")
    parser.add_argument("--resume", action="store_true",
                        help="continue a run of this command that stopped (Ctrl-C, a crash, a job's time limit) "
                             "from the blocks it finished; give the same scan, model and settings")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from roidetect.config import compose_config
    from roidetect.inference import predict

    settings = compose_config("predict", args.overrides)
    if args.invert:
        settings["inference"]["invert"] = True
    predict(args.scan, args.out, model=args.model, device=args.device, tta=args.tta, voxel_size_um=voxel_size(args),
            overwrite=args.overwrite, quiet=args.quiet, settings=settings, region=args.region, resume=args.resume)
    return 0
