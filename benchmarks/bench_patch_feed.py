"""How fast one data-loader worker makes training patches for a recipe of phantoms made on the fly.

A GPU trains only as fast as its loader workers feed it. This script runs one worker's share of
the patch stream of a recipe (``--experiment``, with any overrides) in this process and
times it: phantoms made, patches sampled, weighted and augmented, batches collated. Its rate
times the number of workers is the most patches per second the recipe can train on.

    python benchmarks/bench_patch_feed.py                                 # phantoms_gpu, 64 batches
    python benchmarks/bench_patch_feed.py --set data.patches_per_phantom=16
    python benchmarks/bench_patch_feed.py --experiment default_model_cpu --batches 256

Measured 2026-12-07 on one core of a 2-core AMD EPYC (AVX2), one torch thread, the other core
idle, ``phantoms_gpu`` with 32 patches per phantom (as ``training/gpu/device_train.sh`` runs it)
and with the config's 16:

    experiment    overrides                     batches  patches  phantoms  seconds  patches/s  s/phantom  rest s/patch
    phantoms_gpu  data.patches_per_phantom=32        64      256         8     47.4       5.40       5.26         0.021
    phantoms_gpu  data.patches_per_phantom=16        64      256        16     58.6       4.37       3.32         0.021

s/phantom is the mean time to make one phantom (2 to 12 s each: projections and FBP are the slow
ones, so 8 or 16 of them are a small sample; 4.0 s over these 24). rest s/patch is everything
else per patch: indexing, weighting, sampling, augmentation, collation. With 4 s a phantom, one
worker makes about 6.9 patches/s at 32 patches per phantom and 3.7 at 16, so the 14 workers of
``device_train.sh`` make about 95 (24 steps of batch 4 a second) and 52.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="phantoms_gpu", help="configs/experiment/ recipe (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more train overrides")
    parser.add_argument("--batches", type=int, default=64, help="batches to time (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch
    from omegaconf import OmegaConf

    from roidetect.config import compose_config
    from roidetect.learn import data as data_module
    from roidetect.learn.data import build_training_data
    from roidetect.learn.networks import input_divisor

    torch.set_num_threads(args.threads)
    overrides = [f"experiment={args.experiment}", *args.set, "data.num_workers=0", "data.val_phantoms=1"]
    options = OmegaConf.to_container(compose_config("train", overrides), resolve=True)
    divisor = input_divisor(options["model"]["class"], options["model"]["args"])
    data = build_training_data(options["data"], 0, divisor)
    loader = data.datamodule.train_dataloader()

    made, phantom_seconds = 0, 0.0
    original = data_module.make_phantom_volume

    def timed(*a, **k):  # the stream looks the function up in its module on every new phantom
        nonlocal made, phantom_seconds
        began = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            made += 1
            phantom_seconds += time.perf_counter() - began

    data_module.make_phantom_volume = timed
    try:
        start = time.perf_counter()
        batches = patches = 0
        for batch in loader:
            batches += 1
            patches += int(batch["image"].shape[0])
            if batches >= args.batches:
                break
        seconds = time.perf_counter() - start
    finally:
        data_module.make_phantom_volume = original

    per_patch = max(seconds - phantom_seconds, 0.0) / max(patches, 1)
    shown = " ".join(args.set) or "-"
    print(f"{'experiment':<13} {'overrides':<29} batches  patches  phantoms  seconds  patches/s  s/phantom  rest s/patch")
    print(f"{args.experiment:<13} {shown:<29} {batches:>7}  {patches:>7}  {made:>8}  {seconds:>7.1f}  "
          f"{patches / seconds:>9.2f}  {phantom_seconds / max(made, 1):>9.2f}  {per_patch:>12.3f}")


if __name__ == "__main__":
    main()
