"""Inference speed and memory: the roidetect engine against a plain MONAI sliding-window call.

Measures, in one run on the same network and volume:

- voxels per second of the engine (``roidetect.inference``, several settings) and of a plain
  ``monai.inferers.sliding_window_inference`` call (roi = the model's patch size, overlap
  0.25, Gaussian blending, fp32, ``torch.no_grad``), how far the engine's output is from
  the plain call's (Dice of the argmax labels, max and mean absolute probability difference,
  fraction of voxels differing by more than 0.1) and, where labels are known, the Dice of
  each against the truth (mean over the defect classes);
- the achieved GFLOP/s (the network's FLOPs per window counted with
  ``torch.utils.flop_counter.FlopCounterMode``) against this machine's measured
  matrix-multiply rate (a large fp32 and bf16 ``torch.mm``);
- the peak resident memory of a full ``roidetect predict`` run on a uint16 TIFF scan of each
  size in ``--sizes`` (each in its own process; ``ru_maxrss``).

Without ``--model`` the network is a seeded, untrained MONAI UNet (channels 16-32-64-128,
strides 2-2-2, two residual units, patch 64^3): timings are representative, but agreement
figures of an untrained network are pessimistic (its class probabilities are near ties).
The volume is a built-in sine phantom with labels, or ``--scan`` (and ``--truth``) cropped to
``--size``^3.

Examples
--------
    python benchmarks/bench_inference.py --size 160 --sizes 256
    python benchmarks/bench_inference.py --model models/default --sizes 256 1024
    python benchmarks/bench_inference.py --model models/default --scan data/images/vol_0000.tif \
        --truth data/labels/vol_0000.tif --size 192 --sizes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_NETWORK = {"class": "UNet", "args": {"in_channels": 1, "out_channels": 4, "channels": [16, 32, 64, 128],
                                             "strides": [2, 2, 2], "num_res_units": 2}}
VARIANTS: dict[str, dict[str, Any]] = {
    "patch window, overlap 0.25, fp32, PyTorch kernels": {"window": "patch", "overlap": 0.25, "precision": "float32",
                                                          "cpu_kernels": False, "channels_last": False},
    "patch window, overlap 0.25, fp32": {"window": "patch", "overlap": 0.25, "precision": "float32"},
    "patch window, overlap 0.25, bf16": {"window": "patch", "overlap": 0.25, "precision": "bfloat16"},
    "patch window, overlap 0.5, fp32": {"window": "patch", "overlap": 0.5, "precision": "float32"},
    "patch window, overlap 0.5, bf16": {"window": "patch", "overlap": 0.5, "precision": "bfloat16"},
    "2x window, same band, fp32, PyTorch kernels": {"window": "wide", "precision": "float32", "cpu_kernels": False,
                                                    "channels_last": False},
    "2x window, same band, fp32": {"window": "wide", "precision": "float32"},
    "2x window, same band, bf16 contiguous": {"window": "wide", "precision": "bfloat16", "channels_last": False},
    "2x window, same band, bf16 channels-last": {"window": "wide", "precision": "bfloat16", "channels_last": True},
    "default settings (predict.yaml)": {},
}
"""Engine settings to time (keys of ``inference`` in configs/predict.yaml; "patch" = the card's
patch size). "2x window, same band": ``inference.window=wide``, windows twice the patch with the
overlap band of patch-sized windows at 0.25. "default settings": ``inference.window=patch``, the
card's patch and ``sliding_window.overlap``, the inference its calibration was fitted with.
"PyTorch kernels": without the oneDNN convolutions and channels-last instance norm of
``roidetect.inference.cpu_kernels`` (on by default for float32 on the CPU)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model package folder (default: an untrained benchmark UNet)")
    parser.add_argument("--size", type=int, default=160,
                        help="edge of the volume for the throughput comparison (0: skip it)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[256], help="scan edges for the peak-RSS runs")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--scan", help="use the first SIZE^3 voxels of this scan instead of the built-in phantom")
    parser.add_argument("--truth", help="label volume of --scan (adds Dice against the truth)")
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), help="engine settings to time (default: all)")
    parser.add_argument("--repeats", type=int, default=2, help="timing passes; the best counts (default 2)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--rss-child", nargs=3, metavar=("SCAN", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        _rss_child(*args.rss_child, threads=args.threads)
        return

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="roidetect-bench-") as tmp:
        package = Path(args.model) if args.model else _save_default_package(Path(tmp) / "model")
        results: dict[str, Any] = {"machine": _machine(), "volume_edge": args.size}
        native_bf16 = results["machine"]["bf16_native"]
        # emulated bf16 (AVX2-only CPUs) multiplies at under 1 GFLOP/s: a 4096^3 product would take minutes
        results["matmul_gflops"] = {"float32": _matmul_rate(torch.float32),
                                    "bfloat16": _matmul_rate(torch.bfloat16, n=4096 if native_bf16 else 1024)}
        _print_machine(results)
        variants = args.variants or [name for name in VARIANTS if native_bf16 or "bf16" not in name]
        if not native_bf16 and not args.variants:
            print("no native bf16 on this CPU: bf16 variants left out (name them with --variants to time them)\n")
        if args.size:
            image, truth = _test_volume(args.size, args.scan, args.truth)
            results["throughput"] = _throughput(package, image, truth, variants,
                                                results["matmul_gflops"], args.repeats)
            del image, truth
        results["peak_rss"] = [_peak_rss(package, edge, Path(tmp), args.threads) for edge in args.sizes]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


# ------------------------------------------------------------------ machine


def _machine() -> dict[str, Any]:
    import torch

    from roidetect.learn.networks import cpu_has_native_bf16

    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_native": cpu_has_native_bf16()}


def _matmul_rate(dtype: Any, n: int = 4096, repeats: int = 3) -> float:
    """GFLOP/s of an n x n matrix product (best of ``repeats``)."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def _print_machine(results: dict[str, Any]) -> None:
    m, mm = results["machine"], results["matmul_gflops"]
    print(f"torch {m['torch']}, {m['threads']} threads of {m['cpus']} CPUs, {m['cpu_capability']}, "
          f"native bf16: {m['bf16_native']}")
    print(f"matrix multiply: {mm['float32']:.0f} GFLOP/s fp32, {mm['bfloat16']:.0f} GFLOP/s bf16\n")


# ------------------------------------------------------------------ throughput


def _save_default_package(path: Path) -> Path:
    import torch

    from roidetect.learn.bundle import save_package
    from roidetect.learn.networks import build_network

    torch.manual_seed(0)
    network = build_network(DEFAULT_NETWORK["class"], **DEFAULT_NETWORK["args"])
    card = {"name": "benchmark-unet", "classes": {"0": "background", "1": "pore", "2": "crack", "3": "delamination"},
            "network": DEFAULT_NETWORK, "voxel_size_um": [0.05, 0.05, 0.05],
            "normalisation": {"method": "volume_percentiles", "percentiles": [0.5, 99.5]},
            "patch_size": [64, 64, 64]}
    return save_package(path, network, card)


def phantom_slab(z0: int, z1: int, edge: int) -> tuple[np.ndarray, np.ndarray]:
    """Slices z0..z1 of a deterministic electrode-like test scan and its labels.

    Bright blobs in a grey matrix; dark holes inside blobs are pores (label 1), and a thin
    band of matrix around each blob is called "delamination" (label 3; found from context,
    it has the matrix's grey value). Any slab can be made on its own, so scans of any size
    are written slab by slab.

    Returns
    -------
    image : uint16 ndarray, shape (z1 - z0, edge, edge)
    labels : uint8 ndarray, same shape
    """
    z, y, x = np.meshgrid(np.arange(z0, z1), np.arange(edge), np.arange(edge), indexing="ij", sparse=True)
    blobs = np.sin(x / 5.1) * np.sin(y / 6.3 + 1.0) * np.sin(z / 5.7 + 2.0)
    holes = np.sin(x / 2.3 + 0.5) * np.sin(y / 2.9) * np.sin(z / 2.6 + 1.0)
    pores = (blobs > 0.4) & (holes > 0.8)
    shells = (blobs > 0.2) & (blobs <= 0.25)
    image = np.where(blobs > 0.25, 0.9, 0.35) - 0.8 * pores
    noise = np.random.default_rng(z0).normal(0.0, 0.04, (z1 - z0, edge, edge))
    labels = np.where(pores, 1, np.where(shells, 3, 0)).astype(np.uint8)
    return np.clip((image + noise) * 40000 + 2000, 0, 65535).astype(np.uint16), labels


def _test_volume(edge: int, scan: str | None, truth: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The throughput volume (normalised float32, edge^3) and its labels when known."""
    from roidetect.intensity import intensity_levels, normalise
    from roidetect.volume import open_volume

    if scan is None:
        raw, labels = phantom_slab(0, edge, edge)
    else:
        volume = open_volume(scan, 1.0)
        raw = volume[:edge, :edge, :edge]
        labels = open_volume(truth, 1.0)[:edge, :edge, :edge] if truth else None
    return normalise(raw, *intensity_levels(raw)), labels


def _throughput(package: Path, image: np.ndarray, truth: np.ndarray | None, variants: list[str],
                matmul: dict[str, float], repeats: int) -> list[dict[str, Any]]:
    """Time the plain call and each engine variant, interleaved ``repeats`` times (best time
    counts, which tames a shared machine's noise); agreement is measured on the first pass."""
    from roidetect.learn.bundle import load_package

    model = load_package(package)
    patch = tuple(int(p) for p in model.card["patch_size"])
    print(f"volume {image.shape}, network {model.card['network']['class']}, patch {patch}, best of {repeats}")
    plain_name = "plain MONAI sliding_window_inference"
    runs = {plain_name: lambda: _plain_monai(model.network, image, patch),
            **{name: (lambda name=name: _engine(package, image, VARIANTS[name], patch)) for name in variants}}
    best: dict[str, float] = {}
    rows: dict[str, dict[str, Any]] = {}
    plain = None
    for repeat in range(repeats):
        for name, run in runs.items():
            probabilities, seconds, info = run()
            best[name] = min(best.get(name, float("inf")), seconds)
            if repeat == 0:
                plain = probabilities if name == plain_name else plain
                rows[name] = {"name": name, **info, **_agreement(probabilities, plain, truth)}
            del probabilities
    for name, row in rows.items():
        gflops = _flops_per_window(model.network, row["window"]) * row["windows"] / best[name] / 1e9
        row.update(seconds=best[name], voxels_per_s=image.size / best[name], speedup=best[plain_name] / best[name],
                   gflops=gflops, percent_of_matmul=100 * gflops / matmul[row["precision"]])
        _print_row(row, header=name == plain_name)
    return list(rows.values())


def _agreement(probabilities: np.ndarray, plain: np.ndarray, truth: np.ndarray | None) -> dict[str, float]:
    """Dice of the argmax against the plain call's (and the truth's), and probability differences."""
    labels = probabilities.argmax(axis=0)
    difference = np.abs(probabilities - plain)
    return {"dice_vs_plain": _dice(labels, plain.argmax(axis=0), range(probabilities.shape[0])),
            "dice_vs_truth": _dice(labels, truth, range(1, probabilities.shape[0])) if truth is not None else None,
            "max_abs_diff": float(difference.max()), "mean_abs_diff": float(difference.mean()),
            "voxels_diff_over_0.1": float((difference.max(axis=0) > 0.1).mean())}


def _dice(a: np.ndarray, b: np.ndarray, classes: Any) -> float:
    """Mean Dice over the given classes present in either label map (NaN if none is)."""
    scores = []
    for c in classes:
        in_a, in_b = a == c, b == c
        total = int(in_a.sum() + in_b.sum())
        if total:
            scores.append(2.0 * int((in_a & in_b).sum()) / total)
    return float(np.mean(scores)) if scores else float("nan")


def _plain_monai(network: Any, image: np.ndarray,
                 patch: tuple[int, ...]) -> tuple[np.ndarray, float, dict[str, Any]]:
    import torch
    from monai.data.utils import dense_patch_slices
    from monai.inferers import sliding_window_inference
    from monai.inferers.utils import _get_scan_interval

    x = torch.from_numpy(image)[None, None]
    with torch.no_grad():
        network(x[..., :patch[0], :patch[1], :patch[2]])  # warm-up
        start = time.perf_counter()
        logits = sliding_window_inference(x, patch, 1, network, overlap=0.25, mode="gaussian")
        probabilities = torch.softmax(logits, dim=1)[0].numpy()
        seconds = time.perf_counter() - start
    interval = _get_scan_interval(image.shape, patch, 3, (0.25,) * 3)
    windows = len(dense_patch_slices(image.shape, patch, interval))
    return probabilities, seconds, {"window": list(patch), "windows": windows, "overlap": [0.25] * 3,
                                    "precision": "float32"}


def _engine(package: Path, image: np.ndarray, variant: dict[str, Any],
            patch: tuple[int, ...]) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Run the engine of ``roidetect predict`` on an in-memory volume with some settings."""
    import torch

    from roidetect.inference.network_run import NetworkRun
    from roidetect.inference.settings import load_settings
    from roidetect.intensity import IntensityLevels
    from roidetect.learn.bundle import read_card
    from roidetect.volume import Volume

    cfg = load_settings()
    cfg["model"] = str(package)
    for key, value in variant.items():
        cfg["inference"][key] = list(patch) if value == "patch" else value
    volume = Volume.from_array(image, read_card(package)["voxel_size_um"])  # as the model's: no resampling
    run = NetworkRun(volume, cfg)
    run.intensity = IntensityLevels(0.0, 1.0)  # the image is already normalised
    source = run.source()
    out = np.empty((4, *image.shape), np.float32)
    with torch.inference_mode():
        run.model(torch.zeros((1, 1, *source.grid.window)))  # warm-up
    start = time.perf_counter()
    for result in source.blocks():
        out[(slice(None), *result.core)] = result.probabilities
    seconds = time.perf_counter() - start
    info = {"window": list(source.grid.window), "windows": source.total, "overlap": [round(o, 4) for o in run.overlap],
            "precision": str(run.precision).removeprefix("torch.")}
    return out, seconds, info


def _flops_per_window(network: Any, window: Any) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        network(torch.zeros((1, 1, *window)))
    return float(counter.get_total_flops())


def _print_row(row: dict[str, Any], header: bool = False) -> None:
    if header:
        print(f"{'run':<52} {'s':>7} {'Mvox/s':>6} {'x plain':>7} {'window':>11} {'prec':>8} {'GFLOP/s':>7} "
              f"{'% mm':>5} {'Dice/plain':>10} {'Dice/truth':>10} {'max|dp|':>7} {'mean|dp|':>8} {'|dp|>0.1':>8}")
    window = "x".join(str(w) for w in row["window"])
    truth = "-" if row["dice_vs_truth"] is None else f"{row['dice_vs_truth']:.3f}"
    print(f"{row['name']:<52} {row['seconds']:7.2f} {row['voxels_per_s'] / 1e6:6.2f} {row['speedup']:7.2f} "
          f"{window:>11} {row['precision']:>8} {row['gflops']:7.1f} {row['percent_of_matmul']:5.1f} "
          f"{row['dice_vs_plain']:10.3f} {truth:>10} {row['max_abs_diff']:7.3f} {row['mean_abs_diff']:8.5f} "
          f"{row['voxels_diff_over_0.1']:8.5f}", flush=True)


# ------------------------------------------------------------------ peak memory


def _write_scan(path: Path, edge: int, slab: int = 32) -> None:
    """A uint16 ImageJ TIFF of edge^3 voxels, written slab by slab (never whole in memory)."""
    import tifffile

    def planes():
        for z0 in range(0, edge, slab):
            yield from phantom_slab(z0, min(z0 + slab, edge), edge)[0]

    tifffile.imwrite(path, planes(), shape=(edge, edge, edge), dtype=np.uint16, imagej=True,
                     resolution=(20.0, 20.0), metadata={"spacing": 0.05, "unit": "um", "axes": "ZYX"})


def _peak_rss(package: Path, edge: int, tmp: Path, threads: int | None) -> dict[str, Any]:
    scan = tmp / f"scan_{edge}.tif"
    _write_scan(scan, edge)
    out = tmp / f"pred_{edge}"
    command = [sys.executable, __file__, "--rss-child", str(scan), str(package), str(out)]
    if threads:
        command += ["--threads", str(threads)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"predict on {edge}^3 failed:\n{done.stderr[-2000:]}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    row = {"edge": edge, "scan_gb": edge**3 * 2 / 1e9, "seconds": seconds, **child}
    print(f"predict {edge}^3 uint16 ({row['scan_gb']:.2f} GB): peak RSS {child['peak_rss_gb']:.2f} GB, "
          f"{seconds:.0f} s total, inference {child['timings_s'].get('inference', 0):.0f} s "
          f"({child['inference_voxels_per_s'] / 1e6:.2f} Mvox/s), steps {child['timings_s']}", flush=True)
    scan.unlink()
    return row


def _rss_child(scan: str, model: str, out: str, threads: int | None) -> None:
    from roidetect.inference import predict

    settings = {"inference": {"threads": threads}} if threads else None
    predict(scan, out, model=model, quiet=True, settings=settings)
    run = json.loads((Path(out) / "run.json").read_text())
    voxels = int(np.prod(run["scan"]["shape_zyx"]))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_gb": peak_kb * 1024 / 1e9, "timings_s": run["timings_s"],
                      "inference_voxels_per_s": voxels / max(run["timings_s"]["inference"], 1e-9),
                      "detections": run["detections"]["total"]}))


if __name__ == "__main__":
    main()
