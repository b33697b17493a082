"""Does the training pipeline learn on a small CPU? Train, then score held-out phantoms.

Trains ``experiment=phantoms_cpu`` (a small UNet on phantoms made on the fly) for a fixed
wall time with a fixed number of CPU threads, then predicts held-out phantoms (seeds never
used in training or validation, so new microstructures, defects and imaging settings) and
scores them with ``roidetect.evaluate``. The issue's target: mean instance F1 >= 0.5 after
10 minutes on 2 cores.

    python benchmarks/bench_train_cpu.py                       # 10 minutes, 2 threads
    python benchmarks/bench_train_cpu.py --minutes 2 --test-phantoms 2
    python benchmarks/bench_train_cpu.py --precision 32-true   # compare with float32
    python benchmarks/bench_train_cpu.py data.num_workers=0 data.patch_size=[32,32,32]

Extra arguments are training overrides (``key=value``), as for ``roidetect train``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

HELD_OUT_SEED = 2**31 - 1
"""Held-out phantoms take seeds counting down from here (training: < 2**30; validation:
2**30 + 1000 * seed + i)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall time")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the machine's cores)")
    parser.add_argument("--precision", default="auto",
                        help="Lightning precision: auto (bf16-mixed where the CPU has native bf16, else 32-true), bf16-mixed or 32-true")
    parser.add_argument("--test-phantoms", type=int, default=4, help="held-out phantoms to score")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help="training overrides, key=value")
    args = parser.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="roidetect-bench-train-")) / "run"
    seconds = int(round(args.minutes * 60))
    overrides = ["experiment=phantoms_cpu", f"out={out}", "overwrite=true", f"seed={args.seed}",
                 f"trainer.precision={args.precision}",
                 f"trainer.max_time={{seconds:{seconds}}}",
                 *args.overrides]
    from roidetect.config import compose_config
    from roidetect.learn.train import train

    cfg = compose_config("train", overrides)
    started = time.perf_counter()
    package = train(cfg)
    train_s = time.perf_counter() - started
    card = json.loads((package / "card.json").read_text())

    started = time.perf_counter()
    held_out = score_held_out(package, cfg, args.test_phantoms)
    score_s = time.perf_counter() - started
    training = card["training"]
    patches = training["steps"] * int(cfg.data.batch_size)
    rows = [
        ("threads / precision", f"{args.threads} / {training['precision']}"),
        ("patch / batch", f"{card['patch_size']} / {cfg.data.batch_size}"),
        ("wall time (train + validate + calibrate)", f"{train_s:.0f} s"),
        ("steps / epochs", f"{training['steps']} / {training['epochs']}"),
        ("patches per second", f"{patches / max(training['fit_time_s'], 1e-9):.2f}"),
        ("validation mean instance F1", _fmt(card["metrics"]["validation"]["overall"]["f1_mean"])),
    ]
    for name in ("pore", "crack", "delamination"):
        rows.append((f"held-out {name}: F1 / Dice", f"{_fmt(held_out[f'f1_{name}'])} / {_fmt(held_out[f'dice_{name}'])}"))
    rows += [(f"held-out mean instance F1 ({args.test_phantoms} phantoms)", _fmt(held_out["f1_mean"])),
             ("held-out scoring time", f"{score_s:.0f} s"), ("model package", str(package))]
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))


def score_held_out(package: Path, cfg: object, count: int) -> dict[str, float]:
    """Instance and voxel metrics of the package on ``count`` held-out phantoms."""
    import torch
    from omegaconf import OmegaConf

    from roidetect.inference.settings import detection_params
    from roidetect.intensity import normalise
    from roidetect.learn.bundle import load_package
    from roidetect.learn.data import PhantomSettings, make_phantom_volume
    from roidetect.learn.module import volume_probabilities
    from roidetect.learn.validation import metrics_from_counts, score_volume

    loaded = load_package(package)
    card = loaded.card
    detection = detection_params(card["detection"], {})
    data = OmegaConf.to_container(cfg.data, resolve=True)  # type: ignore[attr-defined]
    settings = PhantomSettings(tuple(data["shape"]), tuple(data["voxel_size_um"]), data["preset"], data["randomise"], 1,
                               data["synth_overrides"])
    totals = np.zeros((3, 5))
    for i in range(count):
        volume = make_phantom_volume(settings, HELD_OUT_SEED - i, f"held_out_{i}", data["percentiles"])
        image = torch.from_numpy(normalise(volume.image, *volume.intensity_range))[None]
        probabilities = volume_probabilities(loaded.network, image, card["patch_size"], card["sliding_window"])
        totals += score_volume(probabilities, volume.label, volume.instances, volume.spacing_um, detection).counts
    return metrics_from_counts(totals)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


if __name__ == "__main__":
    main()
