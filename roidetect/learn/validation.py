"""Scoring validation volumes with :mod:`roidetect.evaluate` (the code ``roidetect evaluate`` runs).

One volume's class probabilities become detections (:func:`roidetect.detect.detect_in_memory`)
that are matched against the truth (:func:`roidetect.evaluate.evaluate_volumes`). Counts are
kept so that volumes, and processes under DDP, can be summed before rates are taken.
Pure numpy; no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from roidetect.detect import DetectionParams, detect_in_memory
from roidetect.evaluate import EvaluationParams, evaluate_volumes
from roidetect.labels import DEFECT_NAMES

COUNT_FIELDS = ("tp", "fp", "fn", "overlap2", "voxels")
"""Per-class counts summed over volumes: instance TP/FP/FN, twice the overlapping voxels and
true plus predicted voxels (Dice = overlap2 / voxels)."""


@dataclass
class VolumeScore:
    """One validation volume's evaluation.

    Attributes
    ----------
    result : dict
        :func:`roidetect.evaluate.evaluate_volumes`' result.
    counts : ndarray of float64, shape (3, 5)
        :data:`COUNT_FIELDS` per defect class.
    detections : DataFrame
        The detections table (``score_raw`` per detection).
    counted : ndarray of bool
        Detections that are right or wrong: lying mostly on annotated voxels and not matched
        to a true defect below detection's minimum size (``result["excused_ids"]``), which
        counts as neither.
    """

    result: dict[str, Any]
    counts: np.ndarray
    detections: pd.DataFrame
    counted: np.ndarray


def score_volume(probabilities: np.ndarray, true_labels: np.ndarray, true_instances: np.ndarray | None,
                 spacing_um: Sequence[float], detection: DetectionParams,
                 evaluation: EvaluationParams | None = None) -> VolumeScore:
    """Detect defects in one volume's probabilities and score them against the truth.

    Parameters
    ----------
    probabilities : ndarray of float32, shape (4, Z, Y, X)
    true_labels : ndarray of uint8, shape (Z, Y, X)
        255 where not annotated.
    true_instances : ndarray, shape (Z, Y, X), or None
    spacing_um : (3,) float
    detection : DetectionParams
    evaluation : EvaluationParams, optional
    """
    evaluation = replace(evaluation or EvaluationParams(), min_true_volume_um3=dict(detection.min_volume_um3))
    found = detect_in_memory(probabilities, spacing_um, params=detection, block_shape=evaluation.block_shape)
    result = evaluate_volumes(found.labels, found.instances, true_labels, true_instances, spacing_um,
                              params=evaluation)
    counts = np.zeros((len(DEFECT_NAMES), len(COUNT_FIELDS)))
    for i, name in enumerate(DEFECT_NAMES):
        inst, vox = result["instance"][name], result["voxel"][name]
        voxels = vox["true_voxels"] + vox["predicted_voxels"]
        dice = vox["dice"] if math.isfinite(vox["dice"]) else 0.0
        counts[i] = (inst["tp"], inst["fp"], inst["fn"], dice * voxels, voxels)
    counted = ~found.table["id"].isin([*result["not_counted_ids"], *result["excused_ids"]]).to_numpy()
    return VolumeScore(result, counts, found.table, counted)


def metrics_from_counts(counts: np.ndarray) -> dict[str, float]:
    """Instance precision/recall/F1 and voxel Dice per class, and their means, from summed counts.

    Parameters
    ----------
    counts : ndarray, shape (3, 5)
        Sums of :attr:`VolumeScore.counts`.

    Returns
    -------
    dict
        ``f1_<class>``, ``precision_<class>``, ``recall_<class>``, ``dice_<class>``,
        ``f1_mean`` and ``dice_mean`` (means over classes where defined, else 0). A class
        with no true and no predicted instance has an undefined F1 and is left out of the
        mean.
    """
    metrics: dict[str, float] = {}
    f1s, dices = [], []
    for i, name in enumerate(DEFECT_NAMES):
        tp, fp, fn, overlap2, voxels = (float(v) for v in counts[i])
        f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else math.nan
        dice = overlap2 / voxels if voxels else math.nan
        metrics[f"f1_{name}"] = f1
        metrics[f"precision_{name}"] = tp / (tp + fp) if (tp + fp) else math.nan
        metrics[f"recall_{name}"] = tp / (tp + fn) if (tp + fn) else math.nan
        metrics[f"dice_{name}"] = dice
        f1s += [f1] if math.isfinite(f1) else []
        dices += [dice] if math.isfinite(dice) else []
    metrics["f1_mean"] = float(np.mean(f1s)) if f1s else 0.0
    metrics["dice_mean"] = float(np.mean(dices)) if dices else 0.0
    return metrics
