"""Score a model and the classical baseline on held-out phantom datasets with roidetect evaluate.

For every volume of every dataset this runs, exactly as a user would::

    roidetect predict IMAGE --out PRED --model MODEL --voxel-size ...
    roidetect evaluate PRED --truth LABEL --instances INSTANCES --out PRED/evaluation.json

once with ``--model MODEL`` (``--tta`` adds ``--tta`` to its predict) and once with
``--model classical``, then pools the instance counts (TP, FP, FN) of each class over the
volumes of a dataset and over all datasets, and writes ``OUT/heldout.json`` (with each
volume's counts under ``per_volume``, which ``paired_comparison.py`` compares) and
``OUT/heldout.md`` (the model card's table). It also pools the recall of annotated
delaminations by how strongly each darkens its scan (the ``signal`` in the phantoms'
manifests, :mod:`roidetect.synth.visibility`), by where each opened (on the CBD's side,
on the particle's side, at the collector) and, for gaps between a particle and the CBD, by
the thinnest CBD wall between the gap and the pores (``wall_vox``) in resolutions of the scan.

Usage::

    python training/default/evaluate_heldout.py --model models/default --out runs/heldout \\
        heldout/cathode heldout/anode heldout/nmc-real
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

from roidetect.atomic import atomic_file
from roidetect.cli import main as roidetect

CLASSES = ("pore", "crack", "delamination")
SIGNAL_BINS = (1.0, 1.5, 2.0, 3.0, 5.0, float("inf"))
PARTICLE_SIDES = ("CBD side", "particle side")  # gaps between a particle and the CBD
OPENINGS = (*PARTICLE_SIDES, "collector")
WALL_BINS = (0.0, 0.5, 1.0, float("inf"))  # CBD wall behind a gap, in resolutions (FWHM) of its scan
TRAIN_SEED_LIMIT = 2**30  # training phantoms use seeds below this (roidetect.learn.data.TRAIN_SEEDS)


def run(argv: list[str]) -> None:
    """Run one roidetect command in this process; stop on failure."""
    status = roidetect([*argv, "--quiet"])
    if status != 0:
        sys.exit(f"roidetect {' '.join(argv)} failed with status {status}")


def score_volume(dataset: Path, volume: dict, model: str, out: Path, tta: bool = False,
                 settings: tuple[str, ...] = ()) -> dict:
    """Predict one volume with ``model`` (averaged over flips with ``tta``; ``settings`` are
    predict's ``key=value`` overrides) and evaluate it; returns the evaluation JSON."""
    pred = out / f"{dataset.name}-{volume['id']}-{Path(model).name}{'-tta' if tta else ''}"
    report = pred / "evaluation.json"
    if not report.is_file():
        spacing = [str(v) for v in volume["voxel_size_um"]]
        run(["predict", str(dataset / volume["image"]), "--out", str(pred), "--model", model,
             "--overwrite", *(["--tta"] if tta else []), *settings, "--voxel-size", *spacing])
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


def counts(result: dict) -> dict[str, dict[str, int]]:
    """One volume's instance TP, FP and FN per class, from its evaluation JSON."""
    return {name: {key: result["instance"][name][key] for key in ("tp", "fp", "fn")} for name in CLASSES}


class Gap(NamedTuple):
    """An annotated delamination of a phantom, from its manifest."""

    signal: float      # mean darkening in noise standard deviations (roidetect.synth.visibility)
    volume_um3: float
    opened: str        # where it opened: "CBD side", "particle side" or "collector"
    wall: float | None = None  # thinnest CBD wall towards the pores, in resolutions; None at the collector


def delamination_gaps(dataset: Path, volume: dict) -> dict[int, Gap] | None:
    """Annotated delaminations of one phantom: true instance id -> :class:`Gap`.

    None when the volume has no manifest or it does not record signals (phantoms of another
    generator, re-gridded phantoms).
    """
    if "manifest" not in volume:
        return None
    manifest = json.loads((dataset / volume["manifest"]).read_text())
    gaps = [d for d in manifest["defects"] if d["class"] == "delamination"]
    if not all("signal" in d and "volume_um3" in d for d in gaps):
        return None
    return {int(d["id"]): Gap(float(d["signal"]), float(d["volume_um3"]), _opened(d), _wall(d, manifest))
            for d in gaps}


def _wall(entry: dict, manifest: dict) -> float | None:
    """A gap's ``wall_vox`` in resolutions (FWHM) of its scan; None where not recorded."""
    if "wall_vox" not in entry:
        return None
    voxel_um = sum(manifest["voxel_size_um"]) / len(manifest["voxel_size_um"])
    return entry["wall_vox"] * voxel_um / manifest["imaging"]["resolution_um_used"]


def _opened(entry: dict) -> str:
    if entry.get("interface") == "coating-collector":
        return "collector"
    return "particle side" if entry.get("side") == "particle" else "CBD side"


def counted_gaps(gaps: list[dict[int, Gap]], results: list[dict]) -> list[tuple[Gap, bool]]:
    """Every counted true gap with whether ``roidetect evaluate`` matched it, pooled over volumes.

    Gaps evaluate left out of the count (below its minimum volume) are left out here too.
    """
    pairs = []
    for volume_gaps, result in zip(gaps, results):
        matched = {int(t) for _, t, _ in result["matches"]["delamination"]}
        minimum = result["settings"]["min_true_volume_um3"]["delamination"]
        counted = {i: gap for i, gap in volume_gaps.items() if gap.volume_um3 >= minimum}
        scored = result["instance"]["delamination"]["tp"] + result["instance"]["delamination"]["fn"]
        if scored != len(counted):
            sys.exit(f"evaluation counted {scored} true delaminations, the manifest {len(counted)}")
        pairs += [(gap, i in matched) for i, gap in counted.items()]
    return pairs


def recall_by_signal(pairs: list[tuple[Gap, bool]]) -> list[dict[str, Any]]:
    """Recall per signal bin (:data:`SIGNAL_BINS`) of :func:`counted_gaps`' (gap, found) pairs."""
    return [{"signal_from": lo, "signal_to": hi, **_recall([found for gap, found in pairs if lo <= gap.signal < hi])}
            for lo, hi in zip(SIGNAL_BINS[:-1], SIGNAL_BINS[1:])]


def recall_by_opening(pairs: list[tuple[Gap, bool]]) -> list[dict[str, Any]]:
    """Recall by where the gap opened (:data:`OPENINGS`) of :func:`counted_gaps`' (gap, found) pairs."""
    return [{"opened": opened, **_recall([found for gap, found in pairs if gap.opened == opened])}
            for opened in OPENINGS]


def recall_by_wall(pairs: list[tuple[Gap, bool]]) -> list[dict[str, Any]] | None:
    """Recall of particle/CBD gaps per side and wall bin (:data:`WALL_BINS`); None when a
    manifest predates ``wall_vox``."""
    sides = [pair for pair in pairs if pair[0].opened in PARTICLE_SIDES]
    if any(gap.wall is None for gap, _ in sides):
        return None
    return [{"opened": opened, "wall_from": lo, "wall_to": hi,
             **_recall([found for gap, found in sides if gap.opened == opened and lo <= gap.wall < hi])}
            for opened in PARTICLE_SIDES for lo, hi in zip(WALL_BINS[:-1], WALL_BINS[1:])]


def _recall(hits: list[bool]) -> dict[str, Any]:
    return {"true": len(hits), "found": sum(hits), "recall": sum(hits) / len(hits) if hits else float("nan")}


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
    by_signal, by_opening = (summary["all"][f"delamination_recall_by_{k}"] for k in ("signal", "opening"))
    lines += _recall_table("Delamination recall by signal (all sets; mean darkening in noise standard deviations):",
                           "signal", [f"{r['signal_from']:g}-{r['signal_to']:g}" for r in by_signal["model"]],
                           by_signal)
    lines += _recall_table("Delamination recall by where the gap opened (all sets):", "opened on",
                           [r["opened"] for r in by_opening["model"]], by_opening)
    by_wall = summary["all"].get("delamination_recall_by_wall")
    if by_wall:
        lines += _recall_table("Particle/CBD gaps by the thinnest CBD wall between gap and pores, in resolutions "
                               "(FWHM) of the scan (all sets):", "opened on, wall",
                               [f"{r['opened']}, {r['wall_from']:g}-{r['wall_to']:g}" for r in by_wall["model"]],
                               by_wall)
    return "\n".join(lines) + "\n"


def _recall_table(title: str, first_column: str, labels: list[str], by_method: dict[str, list[dict]]) -> list[str]:
    """Markdown lines of one recall table: a row per label, model and classical side by side."""
    lines = ["", title, "", f"| {first_column} | true | found by model | found by classical |", "|---|---|---|---|"]
    for label, row, classical in zip(labels, by_method["model"], by_method["classical"]):
        lines.append(f"| {label} | {row['true']} | {row['found']} ({row['recall']:.2f}) | "
                     f"{classical['found']} ({classical['recall']:.2f}) |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="+", type=Path, help="held-out dataset folders (roidetect synth)")
    parser.add_argument("--model", required=True, help="model package folder or shipped name")
    parser.add_argument("--out", required=True, type=Path, help="folder for predictions and the tables")
    parser.add_argument("--tta", action="store_true", help="predict with the model's test-time augmentation (flips)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="predict setting for the model's runs, e.g. inference.precision=float32 (repeatable); "
                             "predictions already in --out are reused, so give each setting its own --out")
    parser.add_argument("--split", default=None,
                        help="score only the volumes with this \"split\" in dataset.json (e.g. test)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    summary, everything, gaps = {}, {"model": [], "classical": []}, []
    for dataset in args.datasets:
        volumes = json.loads((dataset / "dataset.json").read_text())["volumes"]
        if args.split is not None:
            volumes = [v for v in volumes if v.get("split") == args.split]
            if not volumes:
                sys.exit(f"{dataset}: no volume has \"split\": \"{args.split}\"")
        if any(v["seed"] < TRAIN_SEED_LIMIT for v in volumes):
            sys.exit(f"{dataset}: a volume seed lies in the training seed range; use another dataset seed")
        entry = {"volumes": len(volumes), "per_volume": {}}
        gaps += [delamination_gaps(dataset, v) for v in volumes]
        for method, model in (("model", args.model), ("classical", "classical")):
            model_run = method == "model"
            results = [score_volume(dataset, v, model, args.out, tta=args.tta and model_run,
                                    settings=tuple(args.set) if model_run else ()) for v in volumes]
            everything[method] += results
            entry[method] = pooled(results)
            entry["per_volume"][method] = {v["id"]: counts(r) for v, r in zip(volumes, results)}
            print(f"{dataset.name:>12} {method:>9}: " + "  ".join(
                f"{c} {entry[method][c]['f1']:.3f}" for c in CLASSES), flush=True)
        summary[dataset.name] = entry
    summary["all"] = {"volumes": sum(e["volumes"] for e in summary.values()),
                      **{m: pooled(r) for m, r in everything.items()}}
    if all(g is not None for g in gaps):
        pairs = {m: counted_gaps(gaps, r) for m, r in everything.items()}
        summary["all"]["delamination_recall_by_signal"] = {m: recall_by_signal(p) for m, p in pairs.items()}
        summary["all"]["delamination_recall_by_opening"] = {m: recall_by_opening(p) for m, p in pairs.items()}
        by_wall = {m: recall_by_wall(p) for m, p in pairs.items()}
        if all(rows is not None for rows in by_wall.values()):
            summary["all"]["delamination_recall_by_wall"] = by_wall
    write_text(args.out / "heldout.json", json.dumps(summary, indent=2) + "\n")
    write_text(args.out / "heldout.md", markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
