"""``roidetect dataset IMAGES LABELS --out DATASET``: a dataset.json from folders of scans and labels."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from roidetect.cli.common import add_command, add_voxel_size, voxel_size
from roidetect.errors import UserError

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "dataset", "write a dataset.json for training from folders of scans and labels",
        "Pair every scan in IMAGES with the label volume of the same name in LABELS and write the "
        "dataset.json that 'roidetect train data=folder' and 'roidetect calibrate --data' read. Names "
        "match without their format suffix, nnU-Net's channel number (_0000) and a last word naming the "
        "role (scan_a.tif goes with scan_a_labels.tif or scan_a_seg.nii.gz); IMAGES and LABELS may be one "
        "folder. Labels of another scheme are read through --label-map. Every pair is checked first (it "
        "opens, the shapes agree, the voxel size is known, the label values are roidetect's 0-3 and 255 "
        "once mapped); nothing is written when one fails. See docs/training.md.")
    parser.add_argument("images", help="folder of scans (TIFF, folders of TIFF slices, NIfTI, MRC, HDF5, Zarr, .npy)")
    parser.add_argument("labels", help="folder of label volumes: 0 background, 1 pore, 2 crack, 3 delamination, "
                                       "255 not annotated (or another scheme, with --label-map)")
    parser.add_argument("--out", required=True,
                        help="the .json file to write, or a folder to write dataset.json in; the paths in it are "
                             "relative to it")
    parser.add_argument("--instances", metavar="FOLDER", help="folder of instance volumes (one id per defect)")
    add_voxel_size(parser)
    parser.add_argument("--name", help="dataset name (default: the output folder's name)")
    parser.add_argument("--ignore-label", type=int, default=255, metavar="N",
                        help="label value of voxels that were not annotated (default 255)")
    parser.add_argument("--label-map", metavar="RAW=LABEL,...",
                        help="labels of another scheme: each raw value and the label it means (0 background, "
                             "1 pore, 2 crack, 3 delamination, 255 not annotated), e.g. 0=255,1=0,2=1,3=2 for "
                             "ilastik labels (0 unlabelled); unlisted values are kept")
    parser.add_argument("--val", metavar="IDS",
                        help="volumes to validate on, comma-separated ids or patterns (e.g. cell_b,cell_e*); "
                             "default: training holds out data.val_fraction of them at random")
    parser.add_argument("--test", metavar="IDS",
                        help="volumes to keep for your own final test: training and calibration never read them")
    parser.add_argument("--invert", action="store_true",
                        help="the scans show voids bright and solid dark (negative contrast): read them flipped")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset.json")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from roidetect.labels import DATASET_FILE, parse_label_map
    from roidetect.learn.dataset import label_values_map
    from roidetect.learn.dataset_folders import dataset_document, dataset_entries, listing, pair_folders, split_marks
    from roidetect.volume import write_json

    out = Path(args.out)
    if out.suffix.lower() != ".json" and out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: give a .json file to write, or a folder to write {DATASET_FILE} in")
    json_path = out if out.suffix.lower() == ".json" else out / DATASET_FILE
    label_map = parse_label_map(args.label_map) if args.label_map else {}
    value_map = label_values_map(args.ignore_label, label_map, f"--label-map {args.label_map}")
    pairs, unlabelled = pair_folders(args.images, args.labels, args.instances)
    if unlabelled:
        log.warning("%d scan(s) without labels left out: %s", len(unlabelled), listing(Path(p).name for p in unlabelled))
    splits = split_marks([pair.id for pair in pairs], args.val, args.test)
    entries = dataset_entries(pairs, json_path.parent, voxel_size(args), value_map)
    for entry in entries:
        if entry["id"] in splits:
            entry["split"] = splits[entry["id"]]
        if args.invert:
            entry["invert"] = True
    document = dataset_document(entries, args.name or json_path.parent.resolve().name, args.ignore_label, label_map)
    write_json(json_path, document, overwrite=args.overwrite)
    held_out = "".join(f", {sum(s == split for s in splits.values())} {split}" for split in ("val", "test")
                       if split in splits.values())
    print(f"{json_path}: {len(entries)} volume(s)"
          + (" with instances" if args.instances else "") + held_out
          + f"; train with: roidetect train data=folder data.path={json_path} out=runs/NAME")
    return 0
