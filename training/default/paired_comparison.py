"""Compare two models volume by volume: the rule every candidate for models/default must pass.

Reads two ``heldout.json`` files written by ``evaluate_heldout.py`` on the same datasets (the
per-volume instance counts of each model) and prints, for the model rows:

- the pooled F1 of each class and their mean, for A and for B;
- the mean of the paired per-volume differences of mean F1 (B - A), its standard error
  (sample standard deviation / sqrt(n)) and on how many volumes B is better or worse.

A volume's mean F1 averages 2 TP / (2 TP + FP + FN) over the classes that have something
true or detected on it; a class with neither is left out of that volume's mean.

The rule (``training/default/README.md``): B replaces A only where the mean paired difference
exceeds twice its standard error and B's pooled mean F1 is higher (``passes`` in the output;
the exit status is 0 either way).

Usage::

    python training/default/paired_comparison.py runs/calibration-shipped/heldout.json \\
        runs/calibration-candidate/heldout.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

CLASSES = ("pore", "crack", "delamination")


def per_volume(summary: dict) -> dict[tuple[str, str], dict[str, dict[str, int]]]:
    """The model's counts of every volume, keyed by (dataset, volume id)."""
    volumes = {}
    for dataset, entry in summary.items():
        if dataset == "all":
            continue
        if "per_volume" not in entry:
            sys.exit(f"{dataset}: no per-volume counts; score it again with this version of evaluate_heldout.py")
        for volume_id, counts in entry["per_volume"]["model"].items():
            volumes[(dataset, volume_id)] = counts
    return volumes


def f1(tp: int, fp: int, fn: int) -> float | None:
    """Instance F1, or None where nothing is true and nothing detected."""
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None


def mean_f1(counts: dict[str, dict[str, int]]) -> float:
    """A volume's mean F1 over the classes with something true or detected (nan if none)."""
    values = [v for v in (f1(**counts[c]) for c in CLASSES) if v is not None]
    return sum(values) / len(values) if values else float("nan")


def pooled_f1(volumes: dict) -> dict[str, float]:
    """F1 of each class from counts summed over the volumes."""
    return {c: f1(*(sum(v[c][k] for v in volumes.values()) for k in ("tp", "fp", "fn"))) or 0.0 for c in CLASSES}


def compare(a: dict, b: dict) -> dict:
    """The rule's figures for B against A (both ``heldout.json`` contents)."""
    va, vb = per_volume(a), per_volume(b)
    if va.keys() != vb.keys():
        sys.exit("the two files score different volumes")
    diffs = [d for d in (mean_f1(vb[k]) - mean_f1(va[k]) for k in sorted(va)) if not math.isnan(d)]
    n = len(diffs)
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) if n > 1 else float("nan")
    pooled_a, pooled_b = pooled_f1(va), pooled_f1(vb)
    mean_a, mean_b = (sum(p.values()) / len(CLASSES) for p in (pooled_a, pooled_b))
    return {"volumes": n, "pooled_a": pooled_a, "pooled_b": pooled_b, "mean_pooled_a": mean_a,
            "mean_pooled_b": mean_b, "paired_difference": mean, "standard_error": se,
            "better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs),
            "passes": bool(mean > 2 * se and mean_b > mean_a)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path, help="heldout.json of the model in use")
    parser.add_argument("b", type=Path, help="heldout.json of the candidate")
    args = parser.parse_args()
    result = compare(*(json.loads(p.read_text()) for p in (args.a, args.b)))
    for name in ("a", "b"):
        pooled = result[f"pooled_{name}"]
        print(f"{name.upper()}: pooled F1 " + " / ".join(f"{pooled[c]:.3f}" for c in CLASSES)
              + f" (mean {result[f'mean_pooled_{name}']:.3f})")
    print(f"paired difference of per-volume mean F1 (B - A): {result['paired_difference']:+.4f} "
          f"(SE {result['standard_error']:.4f}, {result['volumes']} volumes; better on {result['better']}, "
          f"worse on {result['worse']}); passes: {result['passes']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
