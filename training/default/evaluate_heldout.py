"""Score a model and the classical baseline on held-out phantom datasets with roidetect evaluate.

For every volume of every dataset this runs, exactly as a user would::

    roidetect predict IMAGE --out PRED --model MODEL --voxel-size ...
    roidetect evaluate PRED --truth LABEL --instances INSTANCES --out PRED/evaluation.json

once with ``--model MODEL`` and once with ``--model classical``, then pools the instance
counts (TP, FP, FN) of each class over the volumes of a dataset and over all datasets, and
writes ``OUT/heldout.json`` and ``OUT/heldout.md`` (the model card's table). It also pools
the recall of annotated delaminations by how strongly each darkens its scan (the ``signal``
in the phantoms' manifests, :mod:`roidetect.synth.visibility`).

Usage::

    python training/default/evaluate_heldout.py --model models/default --out runs/heldout \\
        heldout/cathode heldout/anode heldout/nmc-real
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from roidetect.atomic import atomic_file
from roidetect.cli import main as roidetect

CLASSES = ("pore", "crack", "delamination")
SIGNAL_BINS = (1.0, 1.5, 2.0, 3.0, 5.0, float("inf"))
TRAIN_SEED_LIMIT = 2**30  # training phantoms use seeds below this (roidetect.learn.data.TRAIN_SEEDS)


def run(argv: list[str]) -> None:
    """Run one roidetect command in this process; stop on failure."""
    status = roidetect([*argv, "--quiet"])
    if status != 0:
        sys.exit(f"roidetect {' '.join(argv)} failed with status {status}")


def score_volume(dataset: Path, volume: dict, model: str, out: Path) -> dict:
    """Predict one volume with ``model`` and evaluate it; returns the evaluation JSON."""
    pred = out / f"{dataset.name}-{volume['id']}-{Path(model).name}"
    report = pred / "evaluation.json"
    if not report.is_file():
        spacing = [str(v) for v in volume["voxel_size_um"]]
        run(["predict", str(dataset / volume["image"]), "--out", str(pred), "--model", model,
             "--voxel-size", *spacing, "--overwrite"])
        run(["evaluate", str(pred), "--truth", str(dataset / volume["label"]),
             "--instances", str(dataset / volume["instances"]), "--out", str(report), "--overwrite"])
    return json.loads(report.read_text())


def pooled(results: list[dict]) -> dict[str, dict[str, float]]:
    """Instance TP/FP/FN summed over volumes, with the F1, precision and recall they give."""
    table = {}
    for name in CLASSES:
        tp = sum(r["instance"][name]["tp"] for r in results)
        fp = sum(r["instance"][name]["fp"] for r in results)
        fn = sum(r["instance"][name]["fn"] for r in results)
        table[name] = {"tp": tp, "fp": fp, "fn": fn, "true": tp + fn,
                       "precision": tp / (tp + fp) if tp + fp else float("nan"),
                       "recall": tp / (tp + fn) if tp + fn else float("nan"),
                       "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else float("nan")}
    return table


def delamination_signals(dataset: Path, volume: dict) -> dict[int, tuple[float, float]] | None:
    """Annotated delaminations of one phantom: true instance id -> (signal, volume in um^3), from its manifest.

    None when the manifest does not record signals (phantoms of another generator).
    """
    manifest = json.loads((dataset / volume["manifest"]).read_text())
    gaps = [d for d in manifest["defects"] if d["class"] == "delamination"]
    if not all("signal" in d and "volume_um3" in d for d in gaps):
        return None
    return {int(d["id"]): (float(d["signal"]), float(d["volume_um3"])) for d in gaps}


def recall_by_signal(signals: list[dict[int, tuple[float, float]]], results: list[dict]) -> list[dict[str, float]]:
    """Recall of annotated delaminations per signal bin, pooled over volumes.

    A true gap counts as found when ``roidetect evaluate`` matched it; gaps it left out of
    the count (below its minimum volume) are left out here too.
    """
    found, total = [0] * (len(SIGNAL_BINS) - 1), [0] * (len(SIGNAL_BINS) - 1)
    for gaps, result in zip(signals, results):
        matched = {int(t) for _, t, _ in result["matches"]["delamination"]}
        minimum = result["settings"]["min_true_volume_um3"]["delamination"]
        counted = {gap: value for gap, (value, volume) in gaps.items() if volume >= minimum}
        scored = result["instance"]["delamination"]["tp"] + result["instance"]["delamination"]["fn"]
        if scored != len(counted):
            sys.exit(f"evaluation counted {scored} true delaminations, the manifest {len(counted)}")
        for gap, value in counted.items():
            for k, (lo, hi) in enumerate(zip(SIGNAL_BINS[:-1], SIGNAL_BINS[1:])):
                if lo <= value < hi:
                    total[k] += 1
                    found[k] += gap in matched
    return [{"signal_from": lo, "signal_to": hi, "true": t, "found": f, "recall": f / t if t else float("nan")}
            for lo, hi, t, f in zip(SIGNAL_BINS[:-1], SIGNAL_BINS[1:], total, found)]


def write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def markdown(summary: dict) -> str:
    """The model card's table: F1 (precision / recall) per class, model and classical."""
    lines = ["| held-out set | volumes | method | " + " | ".join(f"{c} F1 (P / R, true)" for c in CLASSES) + " |",
             "|---|---|---|" + "---|" * len(CLASSES)]
    for group, entry in summary.items():
        for method in ("model", "classical"):
            cells = [f"{s['f1']:.2f} ({s['precision']:.2f} / {s['recall']:.2f}, {s['true']})"
                     for s in (entry[method][c] for c in CLASSES)]
            lines.append(f"| {group} | {entry['volumes']} | {method} | " + " | ".join(cells) + " |")
    if "delamination_recall_by_signal" not in summary["all"]:
        return "\n".join(lines) + "\n"
    lines += ["", "Delamination recall by signal (all sets; mean darkening in noise standard deviations):", "",
              "| signal | true | found by model | found by classical |", "|---|---|---|---|"]
    by_signal = summary["all"]["delamination_recall_by_signal"]
    for row, classical in zip(by_signal["model"], by_signal["classical"]):
        lines.append(f"| {row['signal_from']:g}-{row['signal_to']:g} | {row['true']} | "
                     f"{row['found']} ({row['recall']:.2f}) | {classical['found']} ({classical['recall']:.2f}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="+", type=Path, help="held-out dataset folders (roidetect synth)")
    parser.add_argument("--model", required=True, help="model package folder or shipped name")
    parser.add_argument("--out", required=True, type=Path, help="folder for predictions and the tables")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    summary, everything, signals = {}, {"model": [], "classical": []}, []
    for dataset in args.datasets:
        volumes = json.loads((dataset / "dataset.json").read_text())["volumes"]
        if any(v["seed"] < TRAIN_SEED_LIMIT for v in volumes):
            sys.exit(f"{dataset}: a volume seed lies in the training seed range; use another dataset seed")
        entry = {"volumes": len(volumes)}
        signals += [delamination_signals(dataset, v) for v in volumes]
        for method, model in (("model", args.model), ("classical", "classical")):
            results = [score_volume(dataset, v, model, args.out) for v in volumes]
            everything[method] += results
            entry[method] = pooled(results)
            print(f"{dataset.name:>12} {method:>9}: " + "  ".join(
                f"{c} {entry[method][c]['f1']:.3f}" for c in CLASSES), flush=True)
        summary[dataset.name] = entry
    summary["all"] = {"volumes": sum(e["volumes"] for e in summary.values()),
                      **{m: pooled(r) for m, r in everything.items()}}
    if all(s is not None for s in signals):
        summary["all"]["delamination_recall_by_signal"] = {m: recall_by_signal(signals, r)
                                                           for m, r in everything.items()}
    write_text(args.out / "heldout.json", json.dumps(summary, indent=2) + "\n")
    write_text(args.out / "heldout.md", markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
