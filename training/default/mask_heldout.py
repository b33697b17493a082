"""The held-out phantoms as reconstructions with a circular field of view, to check predict on them.

Many reconstructions set the corners of each slice outside the reconstruction circle to one
constant, usually 0 (21 % of a square slice). ``make`` writes each dataset again with every
voxel outside the circle inscribed in its y-x slice set to ``--fill`` (labels and instances
there set to 0); the output folders are datasets that ``evaluate_heldout.py`` scores.
``score`` then pools instance F1 over the predictions ``evaluate_heldout.py`` wrote, counting
only what lies inside the circle shrunk by ``--margin`` voxels on both sides (predictions and
truth are cut to it), so that the predictions of the original scans and of the masked ones
are compared on the same voxels:

    python training/default/mask_heldout.py make --out runs/fov runs/heldout/cathode \\
        runs/heldout/anode runs/heldout/nmc-real
    python training/default/evaluate_heldout.py --model default --out runs/fov-scores \\
        --set inference.precision=float32 runs/fov/cathode runs/fov/anode runs/fov/nmc-real
    python training/default/mask_heldout.py score runs/fov-scores --margin 8 \\
        runs/fov/cathode runs/fov/anode runs/fov/nmc-real
    python training/default/mask_heldout.py score runs/heldout-default --margin 8 \\
        runs/fov/cathode runs/fov/anode runs/fov/nmc-real          # the original scans
        # runs/heldout-default: evaluate_heldout.py --model default on runs/heldout/*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from roidetect.atomic import atomic_dir
from roidetect.evaluate import EvaluationParams, evaluate_volumes
from roidetect.volume import open_volume, write_json, write_tiff

CLASSES = ("pore", "crack", "delamination")


def outside_circle(shape: tuple[int, ...], margin: float = 0.0) -> np.ndarray:
    """(Y, X) True outside the circle inscribed in a y-x slice, shrunk by ``margin`` voxels."""
    ny, nx = shape[-2:]
    y, x = np.mgrid[:ny, :nx]
    return (y - (ny - 1) / 2) ** 2 + (x - (nx - 1) / 2) ** 2 > (min(ny, nx) / 2 - margin) ** 2


def mask_dataset(source: Path, out: Path, fill: float) -> None:
    """Write ``source`` (a dataset folder) with the field of view cut to a circle as ``out``."""
    spec = json.loads((source / "dataset.json").read_text())
    with atomic_dir(out, overwrite=True) as tmp:
        volumes = []
        for entry in spec["volumes"]:
            files = {}
            for key, folder in (("image", "images"), ("label", "labels"), ("instances", "instances")):
                volume = open_volume(source / entry[key], entry["voxel_size_um"])
                array = volume.numpy().copy()
                array[:, outside_circle(array.shape)] = fill if key == "image" else 0
                files[key] = f"{folder}/{entry['id']}.tif"
                (tmp / folder).mkdir(exist_ok=True)
                write_tiff(tmp / files[key], array, volume.spacing_um)
            volumes.append({**{k: v for k, v in entry.items() if k not in ("manifest", *files)}, **files})
        write_json(tmp / "dataset.json", {**{k: v for k, v in spec.items() if k != "volumes"},
                                          "name": f"{spec.get('name', source.name)}-fov-circle",
                                          "volumes": volumes,
                                          "masked_from": {"path": str(source), "fill": fill}})


def score(predictions: Path, datasets: list[Path], model: str, margin: float) -> dict[str, dict[str, int]]:
    """Pooled instance TP / FP / FN per class inside the shrunk circle."""
    totals = {name: {"tp": 0, "fp": 0, "fn": 0} for name in CLASSES}
    for data in datasets:
        for entry in json.loads((data / "dataset.json").read_text())["volumes"]:
            pred = predictions / f"{data.name}-{entry['id']}-{model}"
            spacing = open_volume(pred / "instances.ome.zarr").spacing_um
            cut = []
            for path in (pred / "labels.tif", pred / "instances.ome.zarr", data / entry["label"], data / entry["instances"]):
                array = open_volume(path, spacing).numpy().copy()
                array[:, outside_circle(array.shape, margin)] = 0
                cut.append(array)
            # true defects under the minimum size predict ran with are not counted, as in evaluate
            minimum = json.loads((pred / "run.json").read_text())["detection"]["min_volume_um3"]
            params = EvaluationParams(min_true_volume_um3={k: float(v) for k, v in minimum.items()})
            result = evaluate_volumes(*cut, spacing_um=spacing, params=params)
            for name in CLASSES:
                for key in totals[name]:
                    totals[name][key] += int(result["instance"][name][key])
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="write the masked datasets")
    make.add_argument("--out", type=Path, required=True, help="folder for one masked dataset per input")
    make.add_argument("--fill", type=float, default=0.0, help="grey value outside the circle (default 0)")
    make.add_argument("datasets", type=Path, nargs="+")
    pooled = commands.add_parser("score", help="pool instance F1 inside the circle")
    pooled.add_argument("predictions", type=Path, help="the --out folder of evaluate_heldout.py")
    pooled.add_argument("datasets", type=Path, nargs="+", help="the masked datasets (their truth is used)")
    pooled.add_argument("--model", default="default", help="which model's predictions (default: default)")
    pooled.add_argument("--margin", type=float, default=0.0, help="shrink the circle by this many voxels")
    args = parser.parse_args()
    if args.command == "make":
        for data in args.datasets:
            mask_dataset(data, args.out / data.name, args.fill)
            print(f"wrote {args.out / data.name}")
        return
    totals = score(args.predictions, args.datasets, args.model, args.margin)
    f1 = {name: 2 * t["tp"] / max(2 * t["tp"] + t["fp"] + t["fn"], 1) for name, t in totals.items()}
    print(f"{args.predictions} inside the circle less {args.margin:g} voxels: "
          + " / ".join(f"{f1[name]:.3f}" for name in CLASSES) + " (pore / crack / delamination F1)")
    for name, t in totals.items():
        print(f"  {name:13s} TP {t['tp']:4d}  FP {t['fp']:4d}  FN {t['fn']:4d}")


if __name__ == "__main__":
    main()
