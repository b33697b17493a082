"""``roidetect synth --out DIR --n N``: annotated electrode phantoms as a training dataset."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from roidetect.cli.common import add_command, add_voxel_size, voxel_size
from roidetect.errors import UserError

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "synth", "generate annotated electrode phantoms (scan, labels, instances, manifests)",
        "Generate N synthetic CT scans of battery electrodes with exact ground truth for pores, cracks "
        "and delamination, written as a dataset folder (dataset.json, images/, labels/, instances/, "
        "manifests/, previews/). See docs/synth.md.")
    parser.add_argument("--out", required=True, metavar="DIR", help="output dataset folder")
    parser.add_argument("--n", type=int, default=1, metavar="N", help="number of volumes (default 1)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        help="volume shape in voxels (default 128 128 128, or the whole --geometry)")
    add_voxel_size(parser)
    parser.add_argument("--seed", type=int, default=0,
                        help="dataset seed (default 0); each volume's seed derives from it")
    parser.add_argument("--preset", default="cathode", metavar="NAME",
                        help="starting parameters: cathode (NMC/LCO/NCA), anode (Si/graphite), nmc-real "
                             "(shipped real NMC geometry) or any (one drawn per volume); default cathode")
    parser.add_argument("--preset-weights", metavar="NAME=W,...",
                        help="with --preset any: relative weight of each preset drawn, e.g. "
                             "anode=2,cathode=1,nmc-real=1 (unlisted presets weigh 0; default equal)")
    parser.add_argument("--randomise", "--randomize", action="store_true",
                        help="draw microstructure, defect and imaging parameters from wide ranges (for training)")
    parser.add_argument("--preview", action="store_true", help="also write PNG orthoslices with the labels overlaid")
    parser.add_argument("--geometry", metavar="FILE",
                        help="segmented microstructure to use instead of a generated one (needs --phases)")
    parser.add_argument("--phases", metavar="NAME=VALUE,...",
                        help="values of the phases in --geometry, e.g. particle=85,binder=170 "
                             "(names: particle, particle2, binder, collector, pore; unlisted values are pore)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a phantom parameter, e.g. --set collector=true --set photons=800 "
                             "(repeatable; names in docs/synth.md)")
    parser.add_argument("--workers", type=int, metavar="W", help="processes to use (default: all CPU cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.set_defaults(handler=run)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["photons=800", "collector=true", "pore_radius_vox=[2, 4]"]`` -> typed values (YAML syntax)."""
    import yaml

    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: write KEY=VALUE, e.g. --set photons=800")
        try:
            overrides[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UserError(f"--set {item!r}: cannot read the value ({' '.join(str(exc).split())})") from exc
    return overrides


def parse_preset_weights(text: str) -> dict[str, float]:
    """``"anode=2,cathode=1"`` -> ``{"anode": 2.0, "cathode": 1.0}`` (names checked by the generator)."""
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            key = name.strip().lower()
            if key in weights:
                raise UserError(f"--preset-weights {text!r}: {key} is given twice")
            weights[key] = float(value)
        except ValueError:
            raise UserError(f"--preset-weights {text!r}: write NAME=WEIGHT,..., e.g. anode=2,cathode=1") from None
    return weights


def run(args: argparse.Namespace) -> int:
    from roidetect.synth import parse_phases, write_dataset

    if args.phases is not None and args.geometry is None:
        raise UserError("--phases needs --geometry FILE")
    phases = parse_phases(args.phases) if args.phases is not None else None
    weights = parse_preset_weights(args.preset_weights) if args.preset_weights is not None else None
    out = write_dataset(
        args.out, args.n, shape=args.shape, voxel_size_um=voxel_size(args), seed=args.seed, preset=args.preset,
        randomise=args.randomise, preview=args.preview, workers=args.workers, geometry=args.geometry, phases=phases,
        overrides=parse_overrides(args.overrides), overwrite=args.overwrite, quiet=args.quiet,
        preset_weights=weights,
    )
    log.info("wrote %d phantom(s) to %s", args.n, out)
    return 0
