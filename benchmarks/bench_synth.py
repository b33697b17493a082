"""Speed of the phantom generator, per stage, on one core; and dataset throughput on all cores.

For each configuration it builds phantoms with ``roidetect.synth.make_phantom`` (after one
warm-up call of the same configuration, so the projector matrix and imports are cached as
they are in a long-running DataLoader worker) and prints the median wall time of each stage
(microstructure, defects, imaging, manifest) and in total. BLAS/OpenMP are limited to one
thread. Finally ``write_dataset`` is timed with all cores.

Targets (issue 3): 128^3 without projections < 10 s, with projections < 60 s on one core;
training-sized 96^3 volumes well under 2 s.

    python benchmarks/bench_synth.py [--repeats 3] [--quick] [--dataset-n 8]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from roidetect.synth import make_phantom, write_dataset  # noqa: E402

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("cathode 64^3 fast", {"shape": (64,) * 3}),
    ("cathode 96^3 fast", {"shape": (96,) * 3}),
    ("anode 96^3 fast", {"shape": (96,) * 3, "preset": "anode"}),
    ("nmc-real 96^3 fast", {"shape": (96,) * 3, "preset": "nmc-real"}),
    ("any 96^3 randomised", {"shape": (96,) * 3, "preset": "any", "randomise": True}),
    ("cathode 128^3 fast", {"shape": (128,) * 3}),
    ("anode 128^3 fast + collector", {"shape": (128,) * 3, "preset": "anode", "collector": True}),
    ("cathode 128^3 fbp 180 angles", {"shape": (128,) * 3, "ct_model": "fbp", "n_angles": 180}),
    ("cathode 128^3 fbp 360 angles", {"shape": (128,) * 3, "ct_model": "fbp", "n_angles": 360}),
    ("cathode 128^3 sirt 360 x 20", {"shape": (128,) * 3, "ct_model": "sirt", "n_angles": 360,
                                     "sirt_iterations": 20}),
]
QUICK = {"cathode 64^3 fast", "cathode 96^3 fast", "cathode 128^3 fast", "cathode 128^3 fbp 180 angles"}
STAGES = ("microstructure", "defects", "imaging", "manifest")


def bench_config(kwargs: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median stage and total times (s) over ``repeats`` seeds, after a warm-up call."""
    make_phantom(seed=10_000, **kwargs)
    runs = []
    for seed in range(repeats):
        start = time.perf_counter()
        phantom = make_phantom(seed=seed, **kwargs)
        runs.append({**phantom.timings_s, "total": time.perf_counter() - start})
    return {key: statistics.median(run[key] for run in runs) for key in (*STAGES, "total")}


def bench_dataset(n: int, shape: int) -> tuple[float, int]:
    """Seconds to write ``n`` randomised volumes with all cores, and the cores used."""
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_dataset(f"{tmp}/ds", n, shape=(shape,) * 3, preset="any", randomise=True, workers=workers, quiet=True)
        return time.perf_counter() - start, workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="seeds per configuration (median reported)")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(sorted(QUICK))}")
    parser.add_argument("--dataset-n", type=int, default=8, help="volumes for the dataset throughput row (0: skip)")
    parser.add_argument("--dataset-shape", type=int, default=96)
    args = parser.parse_args()

    header = f"{'configuration':<34}" + "".join(f"{s:>15}" for s in (*STAGES, "total"))
    print(header)
    print("-" * len(header))
    for name, kwargs in CONFIGS:
        if args.quick and name not in QUICK:
            continue
        times = bench_config(kwargs, args.repeats)
        print(f"{name:<34}" + "".join(f"{times[s]:>14.2f}s" for s in (*STAGES, "total")), flush=True)
    if args.dataset_n > 0:
        seconds, workers = bench_dataset(args.dataset_n, args.dataset_shape)
        print(f"\nwrite_dataset: {args.dataset_n} randomised {args.dataset_shape}^3 volumes with {workers} workers: "
              f"{seconds:.1f} s ({seconds / args.dataset_n:.2f} s per volume)")


if __name__ == "__main__":
    main()
