"""Make the held-out phantoms again at another voxel size, to check predict's resampling.

Each volume of each dataset is re-gridded to ``--voxel-size`` over the same field of view:
the scan by linear interpolation (``scipy.ndimage.zoom``, order 1, edges extended), the label
and instance maps by nearest voxel. The scans show the same material at a finer or coarser sampling, so
a model that resamples correctly should score them about as it scores the originals
(coarser grids lose the thinnest cracks and gaps for good). The output folders are datasets
(``dataset.json``) that ``evaluate_heldout.py`` scores; their volumes carry no manifest, so
the delamination breakdowns are left out.

    python training/default/regrid_heldout.py --voxel-size 0.035 --out runs/regrid-0.035 \\
        runs/heldout/cathode runs/heldout/anode runs/heldout/nmc-real
    python training/default/evaluate_heldout.py --model default --out runs/regrid-0.035-scores \\
        --set inference.precision=float32 runs/regrid-0.035/cathode runs/regrid-0.035/anode \\
        runs/regrid-0.035/nmc-real
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from roidetect.atomic import atomic_dir
from roidetect.volume import open_volume, write_json, write_tiff

KEYS = ("id", "seed", "preset")  # copied from each original volume entry


def regrid_dataset(source: Path, out: Path, voxel_um: float) -> None:
    """Write ``source`` (a dataset folder) re-gridded to ``voxel_um`` as the dataset ``out``."""
    spec = json.loads((source / "dataset.json").read_text())
    with atomic_dir(out, overwrite=True) as tmp:
        volumes = []
        for entry in spec["volumes"]:
            zoom = [float(v) / voxel_um for v in entry["voxel_size_um"]]
            files = {}
            for key, folder, order in (("image", "images", 1), ("label", "labels", 0), ("instances", "instances", 0)):
                array = np.asarray(open_volume(source / entry[key])[...])
                # mode="nearest": the last voxel's centre can fall a hair outside the original
                # grid, and the default (a constant 0) would fill that face with zeros
                resized = ndimage.zoom(array.astype(np.float32) if order else array, zoom, order=order,
                                       mode="nearest")
                if order:
                    limits = np.iinfo(array.dtype) if array.dtype.kind in "iu" else None
                    resized = np.clip(np.round(resized), limits.min, limits.max) if limits else resized
                    resized = resized.astype(array.dtype)
                files[key] = f"{folder}/{entry['id']}.tif"
                (tmp / folder).mkdir(exist_ok=True)
                write_tiff(tmp / files[key], resized, (voxel_um,) * 3)
            volumes.append({**{k: entry[k] for k in KEYS if k in entry}, **files,
                            "voxel_size_um": [voxel_um] * 3})
        write_json(tmp / "dataset.json", {**{k: v for k, v in spec.items() if k != "volumes"},
                                          "name": f"{spec.get('name', source.name)}-regrid-{voxel_um:g}um",
                                          "volumes": volumes,
                                          "regridded_from": {"path": str(source), "voxel_size_um": voxel_um}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="+", type=Path, help="dataset folders (roidetect synth)")
    parser.add_argument("--voxel-size", type=float, required=True, metavar="UM", help="new voxel size (um)")
    parser.add_argument("--out", type=Path, required=True, help="folder for one re-gridded dataset per input")
    args = parser.parse_args()
    for dataset in args.datasets:
        regrid_dataset(dataset, args.out / dataset.name, args.voxel_size)
        print(f"{dataset} -> {args.out / dataset.name}", flush=True)


if __name__ == "__main__":
    main()
