"""The held-out phantoms with phase-contrast fringes, to measure what they do to predict.

Propagation-based phase contrast, left in a reconstruction without phase retrieval, adds a
bright fringe inside and a dark one outside every edge. To first order the scan becomes
``s + k (s - G_sigma * s)``, an unsharp mask with ``G_sigma`` a Gaussian of ``--sigma`` voxels
(the fringes ``roidetect synth`` makes: :func:`roidetect.synth.imaging.phase_fringes`). With
``--strength`` k = 1 and sigma 1.5 the voxels on either side of an edge overshoot by 0.37 of
the step, the next ones by 0.15. Labels and instances are copied unchanged; the
output folders are datasets that ``evaluate_heldout.py`` scores:

    python training/default/fringe_heldout.py --strength 1 --out runs/fringes-1 \\
        runs/heldout/cathode runs/heldout/anode runs/heldout/nmc-real
    python training/default/evaluate_heldout.py --model default --out runs/fringes-1-scores \\
        --set inference.precision=float32 runs/fringes-1/cathode runs/fringes-1/anode runs/fringes-1/nmc-real
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from roidetect.atomic import atomic_dir
from roidetect.synth.imaging import phase_fringes
from roidetect.volume import open_volume, write_json, write_tiff


def with_fringes(scan: np.ndarray, strength: float, sigma_vox: float) -> np.ndarray:
    """:func:`roidetect.synth.imaging.phase_fringes` of the scan, rounded and clipped to its integer type."""
    fringed = phase_fringes(scan, strength, sigma_vox)
    limits = np.iinfo(scan.dtype)
    return np.clip(np.round(fringed), limits.min, limits.max).astype(scan.dtype)


def fringe_dataset(source: Path, out: Path, strength: float, sigma_vox: float) -> None:
    """Write ``source`` (a dataset folder of integer scans) with fringes as the dataset ``out``."""
    spec = json.loads((source / "dataset.json").read_text())
    with atomic_dir(out, overwrite=True) as tmp:
        volumes = []
        for entry in spec["volumes"]:
            scan = open_volume(source / entry["image"], entry["voxel_size_um"])
            (tmp / "images").mkdir(exist_ok=True)
            write_tiff(tmp / entry["image"], with_fringes(scan.numpy(), strength, sigma_vox), scan.spacing_um)
            for key in ("label", "instances"):
                (tmp / Path(entry[key]).parent).mkdir(exist_ok=True)
                shutil.copy(source / entry[key], tmp / entry[key])
            volumes.append({k: v for k, v in entry.items() if k != "manifest"})
        write_json(tmp / "dataset.json", {**{k: v for k, v in spec.items() if k != "volumes"},
                                          "name": f"{spec.get('name', source.name)}-fringes-{strength:g}",
                                          "volumes": volumes,
                                          "fringes": {"from": str(source), "strength": strength, "sigma_vox": sigma_vox}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for one dataset per input")
    parser.add_argument("--strength", type=float, required=True, help="k, the fringe strength")
    parser.add_argument("--sigma", type=float, default=1.5, help="Gaussian sigma in voxels (default 1.5)")
    parser.add_argument("datasets", type=Path, nargs="+")
    args = parser.parse_args()
    for data in args.datasets:
        fringe_dataset(data, args.out / data.name, args.strength, args.sigma)
        print(f"wrote {args.out / data.name}")


if __name__ == "__main__":
    main()
