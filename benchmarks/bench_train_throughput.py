"""How many training steps the default model's recipe makes per second, and where the time goes.

Two tables:

1. **One step**: forward, loss, backward and AdamW of the recipe's network (``unet_small``)
   on a random batch of two 48^3 patches, with the weights and batch contiguous or
   channels-last (``channels_last``), and the loss's share of it. No data loading.
2. **The whole loop**: ``roidetect train experiment=default_model_cpu`` run for a fixed wall
   time once per variant, each in a fresh process, counting the steps made (phantoms made on
   the fly, patch sampling, validation after each 768-step epoch, all included).

    python benchmarks/bench_train_throughput.py                  # both tables, 5 minutes per run
    python benchmarks/bench_train_throughput.py --minutes 10 --variant "channels_last=false" \\
        --variant "channels_last=true data.num_workers=1"
    python benchmarks/bench_train_throughput.py --no-loop        # table 1 only (a minute)

Measured 2026-12-06 on 2 cores of an Intel Xeon (AVX512, no AMX), 2 torch threads, float32,
nothing else running (docs/training.md, "The default model's recipe on 2 cores", has the
runs of the code before that day too):

    layout          step (ms)  loss, forward + backward (ms)   (median of 5 rounds of 10)
    contiguous            148  16
    channels-last         111  20

    overrides                                      steps  steps/s   (--minutes 5)
    channels_last=false                             1345     4.39
    channels_last=true                              1415     4.64
    channels_last=true data.num_workers=1           1345     4.34

The code before 2026-12-06 (loss by boolean mask, contiguous) made 1,121 and 1,222 steps in
two such runs, with a step of 180 ms of which the loss took 43.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_VARIANTS = ("channels_last=false", "channels_last=true", "channels_last=true data.num_workers=1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the machine's cores)")
    parser.add_argument("--minutes", type=float, default=5.0, help="training wall time of each loop run")
    parser.add_argument("--variant", action="append", metavar="OVERRIDES",
                        help="training overrides of one loop run, space-separated (repeatable; default: "
                             + " | ".join(DEFAULT_VARIANTS) + ")")
    parser.add_argument("--no-loop", action="store_true", help="measure one step only")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per layout and round in table 1")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of table 1 (the median is shown)")
    args = parser.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    print(step_table(args.threads, args.steps, args.rounds))
    if not args.no_loop:
        print()
        print(loop_table(args.variant or list(DEFAULT_VARIANTS), args.minutes, args.threads))


def step_table(threads: int, steps: int, rounds: int) -> str:
    """Table 1: milliseconds per optimisation step and per loss evaluation, by memory layout."""
    import torch

    from roidetect.config import compose_config
    from roidetect.learn.module import SegmentationModule, build_optimizer
    from roidetect.learn.train import loss_options

    torch.set_num_threads(threads)
    cfg = compose_config("train", ["experiment=default_model_cpu"])
    network = {"class": cfg.model["class"], "args": dict(cfg.model.args)}
    generator = torch.Generator().manual_seed(0)
    patch = tuple(cfg.data.patch_size)
    image = torch.randn(int(cfg.data.batch_size), 1, *patch, generator=generator)
    label = torch.randint(0, 4, (int(cfg.data.batch_size), 1, *patch), generator=generator)
    label[0, 0, : patch[0] // 8] = 255  # a few unannotated voxels, as phantoms have
    weight = torch.ones(label.shape)
    steppers = {}
    for channels_last in (False, True):
        module = SegmentationModule(network, loss_options(cfg.loss), dict(cfg.optimizer), list(patch),
                                    dict(cfg.sliding_window), {}, channels_last=channels_last)
        optimizer = build_optimizer(module.parameters(), dict(cfg.optimizer))
        logits = module(image).detach().requires_grad_()
        steppers[channels_last] = (_step(module, optimizer, image, label, weight), _loss(module, logits, label, weight))
    times: dict[tuple[bool, int], list[float]] = {(c, i): [] for c in steppers for i in range(2)}
    for _ in range(rounds):  # interleaved, so that a busy moment of the machine hits every layout
        for channels_last, functions in steppers.items():
            for i, function in enumerate(functions):
                times[channels_last, i].append(_milliseconds(function, steps))
    rows = [f"layout          step (ms)  loss, forward + backward (ms)   (median of {rounds} rounds of {steps})"]
    for channels_last in steppers:
        name = "channels-last" if channels_last else "contiguous"
        rows.append(f"{name:<15} {statistics.median(times[channels_last, 0]):9.0f}  "
                    f"{statistics.median(times[channels_last, 1]):.0f}")
    return "\n".join(rows)


def _step(module: Any, optimizer: Any, image: Any, label: Any, weight: Any) -> Callable[[], None]:
    def step() -> None:
        optimizer.zero_grad()
        module.loss(module(image), label, weight).backward()
        optimizer.step()
    return step


def _loss(module: Any, logits: Any, label: Any, weight: Any) -> Callable[[], None]:
    return lambda: module.loss(logits, label, weight).backward()


def loop_table(variants: list[str], minutes: float, threads: int) -> str:
    """Table 2: steps made in ``minutes`` of ``roidetect train`` per variant."""
    seconds = int(round(minutes * 60))
    rows = [f"steps in {seconds} s of experiment=default_model_cpu ({threads} threads)",
            f"{'overrides':<45} {'steps':>6} {'steps/s':>8}"]
    with tempfile.TemporaryDirectory(prefix="roidetect-bench-throughput-") as folder:
        for i, variant in enumerate(variants):
            out = Path(folder) / f"run{i}"
            command = [sys.executable, "-m", "roidetect", "train", "experiment=default_model_cpu", f"out={out}",
                       "quiet=true", "loggers=[]", "calibration.tta=false",
                       f"trainer.max_time={{seconds:{seconds}}}",
                       *shlex.split(variant)]
            subprocess.run(command, check=True, env=os.environ | {"OMP_NUM_THREADS": str(threads)})
            record = json.loads((out / "run.json").read_text())
            steps, fit = int(record["steps"]), float(record["timings_s"]["fit"])
            rows.append(f"{variant:<45} {steps:>6} {steps / fit:>8.2f}")
            print(rows[-1], flush=True)
    return "\n".join(rows)


def _milliseconds(function: Callable[[], None], repeats: int) -> float:
    function()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats * 1000


if __name__ == "__main__":
    main()
