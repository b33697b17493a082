"""Score calibration: turn a detection's raw score into the probability that it is real.

On the validation volumes every detection is either matched to a true defect or not
(:mod:`roidetect.evaluate`'s matching). An isotonic regression of matched (1) / not matched
(0) against the raw score (mean class probability) gives a monotone map, stored in the
model card as plain lists ``{"x": [...], "y": [...]}`` that :mod:`roidetect.detect`
interpolates. Pure numpy and scikit-learn; no pickle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from roidetect.labels import CLASS_NAMES, DEFECT_CLASSES


@dataclass
class CalibrationSamples:
    """Raw scores and match outcomes of validation detections, per class name."""

    scores: dict[str, list[float]] = field(default_factory=lambda: {CLASS_NAMES[c]: [] for c in DEFECT_CLASSES})
    matched: dict[str, list[bool]] = field(default_factory=lambda: {CLASS_NAMES[c]: [] for c in DEFECT_CLASSES})

    def add(self, detections: pd.DataFrame, matches: Mapping[str, list[list[float]]], counted: np.ndarray) -> None:
        """Add one volume's detections.

        Parameters
        ----------
        detections : DataFrame
            :func:`roidetect.detect.detect` table (``id``, ``class``, ``score_raw``).
        matches : mapping
            ``evaluate_volumes(...)["matches"]``: per class ``[[pred id, true id, score], ...]``.
        counted : ndarray of bool, shape (len(detections),)
            False for detections that lie mostly on unannotated voxels: neither right nor
            wrong, so left out.
        """
        for name in self.scores:
            rows = (detections["class"] == name).to_numpy() & counted
            matched_ids = {int(pair[0]) for pair in matches.get(name, [])}
            self.scores[name] += detections.loc[rows, "score_raw"].astype(float).tolist()
            self.matched[name] += [int(i) in matched_ids for i in detections.loc[rows, "id"]]

    def summary(self) -> dict[str, dict[str, int]]:
        """Detections and matches per class."""
        return {name: {"detections": len(self.scores[name]), "matched": int(sum(self.matched[name]))}
                for name in self.scores}


def fit_calibration(samples: CalibrationSamples, min_detections: int = 10) -> dict[str, dict[str, list[float]]]:
    """Isotonic regression of "matched" on raw score, per class.

    Classes with fewer than ``min_detections`` validation detections, or whose scores are
    all equal, get no entry (their scores stay raw).

    Returns
    -------
    dict
        ``{class_name: {"x": increasing raw scores, "y": probabilities in [0, 1]}}``.
    """
    from sklearn.isotonic import IsotonicRegression

    curves: dict[str, dict[str, list[float]]] = {}
    for name, scores in samples.scores.items():
        x = np.asarray(scores, dtype=float)
        if len(x) < min_detections or np.ptp(x) == 0:
            continue
        model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        model.fit(x, np.asarray(samples.matched[name], dtype=float))
        knots_x, knots_y = np.asarray(model.X_thresholds_), np.clip(model.y_thresholds_, 0.0, 1.0)
        if len(knots_x) >= 2:
            curves[name] = {"x": [float(v) for v in knots_x], "y": [float(v) for v in knots_y]}
    return curves


def f1_optimal_min_scores(calibration: Mapping[str, Any], validation: Mapping[str, float | None]) -> dict[str, float]:
    """The smallest calibrated score worth keeping, per class: half its validation F1.

    For calibrated probabilities the F1-maximising decision threshold is half the best
    achievable F1 (Lipton, Elkan and Naryanaswamy, ECML PKDD 2014); the F1 of all validation
    detections stands in for the best one (it can only be lower, so the threshold errs on
    the side of recall).

    Parameters
    ----------
    calibration : mapping
        :func:`fit_calibration`'s curves; classes without one get no minimum (their scores
        are raw mean probabilities, not probabilities of being real).
    validation : mapping
        Validation metrics with ``f1_<class name>`` keys (None or NaN when unmeasured).

    Returns
    -------
    dict
        ``{class_name: min_score}``, rounded to 3 decimals.
    """
    minimums = {}
    for name in calibration:
        f1 = validation.get(f"f1_{name}")
        if f1 is not None and np.isfinite(f1):
            minimums[name] = round(float(f1) / 2, 3)
    return minimums
