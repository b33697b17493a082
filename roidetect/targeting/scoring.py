"""Score components of a site, each in [0, 1], and their weighted mean.

- priority: the highest class priority among the site's detections.
- confidence: probability that at least one detection is real, 1 - prod(1 - score_i).
- certainty: 1 - mean(uncertainty) / uncertainty_scale, clipped to [0, 1]; not available
  (and left out of the mean) when the detections carry no uncertainty.
- size: d^2 / (d^2 + (2 u)^2), d the largest equivalent diameter, u = sqrt(res^2 + TRE^2):
  a feature twice the combined scan blur and registration error scores 0.5.
- diversity: 1 when the site adds a class no site chosen before it covers, else 0 (set
  during selection).
- cost: t_ref / (t_ref + minutes): a site taking t_ref minutes scores 0.5.

score = sum_c w_c * c / sum_c w_c over the available components.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from roidetect.targeting.params import SCORE_COMPONENTS, TargetingParams


def static_components(classes: list[str], scores: np.ndarray, uncertainty: np.ndarray, sizes: np.ndarray,
                      minutes: float, resolution_um: float, tre_um: float, params: TargetingParams) -> dict[str, float]:
    """All components except diversity; ``certainty`` is NaN when no uncertainty is known.

    Parameters
    ----------
    classes : class names of the site's detections
    scores, uncertainty, sizes : ndarray, shape (n,)
        Detection scores, TTA uncertainties (NaN where unknown) and equivalent diameters (um).
    minutes : float
        The site's total time.
    resolution_um, tre_um : float
        Scan resolution and predicted TRE at the site (0 without registration).
    params : TargetingParams
    """
    known = uncertainty[np.isfinite(uncertainty)]
    d = float(sizes.max())
    blur2 = resolution_um ** 2 + tre_um ** 2
    return {
        "priority": max(float(params.class_priority.get(c, 0.0)) for c in classes),
        "confidence": float(1.0 - np.prod(1.0 - scores)),
        "certainty": (float(np.clip(1.0 - known.mean() / params.uncertainty_scale, 0.0, 1.0))
                      if known.size else math.nan),
        "size": d * d / (d * d + 4.0 * blur2) if d > 0 else 0.0,
        "cost": params.cost_reference_min / (params.cost_reference_min + minutes),
    }


def total_score(components: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Weighted mean of the available (non-NaN) components."""
    used = [c for c in SCORE_COMPONENTS if c in components and not math.isnan(components[c])]
    norm = sum(weights.get(c, 0.0) for c in used)
    return sum(weights.get(c, 0.0) * components[c] for c in used) / norm if norm > 0 else 0.0
