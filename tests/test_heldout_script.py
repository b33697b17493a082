"""training/default/evaluate_heldout.py: pooling of the held-out scores (no prediction run)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "training" / "default" / "evaluate_heldout.py"


@pytest.fixture(scope="module")
def heldout():
    spec = importlib.util.spec_from_file_location("evaluate_heldout", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(tp: int, fn: int, matched: list[int], minimum: float = 0.003) -> dict:
    return {"instance": {"delamination": {"tp": tp, "fn": fn}},
            "matches": {"delamination": [[100 + t, t, 0.8] for t in matched]},
            "settings": {"min_true_volume_um3": {"delamination": minimum}}}


def test_recall_by_signal_bins_matched_gaps_and_skips_uncounted_ones(heldout) -> None:
    gaps = [{1: (1.2, 0.01), 2: (2.5, 0.01), 3: (2.7, 0.01), 4: (9.0, 0.001)},  # gap 4: below the minimum volume
            {7: (1.4, 0.02)}]
    results = [_result(tp=2, fn=1, matched=[1, 3]), _result(tp=0, fn=1, matched=[])]
    rows = heldout.recall_by_signal(gaps, results)
    by_bin = {(r["signal_from"], r["signal_to"]): r for r in rows}
    assert by_bin[(1.0, 1.5)]["true"] == 2 and by_bin[(1.0, 1.5)]["found"] == 1
    assert by_bin[(2.0, 3.0)]["true"] == 2 and by_bin[(2.0, 3.0)]["recall"] == 0.5
    assert by_bin[(5.0, math.inf)]["true"] == 0 and math.isnan(by_bin[(5.0, math.inf)]["recall"])
    assert sum(r["true"] for r in rows) == 4


def test_recall_by_signal_stops_when_the_counts_disagree(heldout) -> None:
    with pytest.raises(SystemExit, match="counted 3"):
        heldout.recall_by_signal([{1: (1.2, 0.01)}], [_result(tp=1, fn=2, matched=[1])])


def test_pooled_sums_counts_over_volumes(heldout) -> None:
    results = [{"instance": {c: {"tp": 3, "fp": 1, "fn": 0} for c in heldout.CLASSES}},
               {"instance": {c: {"tp": 1, "fp": 0, "fn": 4} for c in heldout.CLASSES}}]
    table = heldout.pooled(results)
    assert table["crack"]["true"] == 8 and table["crack"]["precision"] == 0.8
    assert table["crack"]["f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 4))
