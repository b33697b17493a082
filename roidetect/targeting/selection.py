"""Choosing sites that do not wreck each other within the time budget, and ordering the visits.

Greedy: repeatedly take the open candidate with the highest score (diversity recomputed
against the classes already covered; ties go to the shorter site). A candidate closes when
its milled box shares volume with a chosen site's box, when it targets a detection a chosen
site targets or destroys, or when it would destroy a chosen site's targets. Selection stops
at ``top_k`` sites or when nothing open fits the remaining budget.

Visiting order: nearest neighbour from the best site, then 2-opt moves while they shorten
the open path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from roidetect.targeting.geometry import boxes_overlap
from roidetect.targeting.scoring import total_score


@dataclass(frozen=True)
class Selection:
    """Outcome of :func:`choose_sites` over K candidates."""

    chosen: list[int]  # candidate indices, best first
    scores: list[float]  # score of each chosen site when it was chosen
    diversity: list[float]
    blocked_by: np.ndarray  # (K,) rank index (0-based) of the chosen site that closed it, -1 if none


def choose_sites(box_lo: np.ndarray, box_hi: np.ndarray, members: Sequence[set[int]],
                 destroyed: Sequence[set[int]], classes: Sequence[set[str]],
                 components: Sequence[Mapping[str, float]], minutes: np.ndarray, allowed: np.ndarray,
                 weights: Mapping[str, float], budget_min: float, top_k: int) -> Selection:
    """Greedy selection (module docstring).

    Parameters
    ----------
    box_lo, box_hi : ndarray, shape (K, 3)
        Milled boxes (z, y, x) um.
    members, destroyed : K sets of detection ids
        Detections each candidate targets, and the other detections its box cuts into.
    classes : K sets of class names
    components : K mappings of static score components (no diversity)
    minutes : ndarray, shape (K,)
    allowed : ndarray of bool, shape (K,)
        Candidates that may be chosen at all (e.g. inside the scanned region).
    """
    k = len(minutes)
    blocked_by = np.full(k, -1)
    taken = np.zeros(k, dtype=bool)
    chosen: list[int] = []
    scores: list[float] = []
    diversity: list[float] = []
    covered: set[str] = set()
    used = 0.0
    while len(chosen) < top_k:
        open_ = np.flatnonzero(allowed & ~taken & (blocked_by < 0) & (minutes <= budget_min - used + 1e-9))
        if open_.size == 0:
            break
        best, best_key, best_div = -1, None, 0.0
        for i in open_:
            new_class = 1.0 if classes[i] - covered else 0.0
            key = (total_score({**components[i], "diversity": new_class}, weights), -minutes[i], -i)
            if best_key is None or key > best_key:
                best, best_key, best_div = int(i), key, new_class
        chosen.append(best)
        scores.append(float(best_key[0]))
        diversity.append(best_div)
        taken[best] = True
        covered |= classes[best]
        used += float(minutes[best])
        overlap = boxes_overlap(box_lo[best], box_hi[best], box_lo, box_hi)
        hit = members[best] | destroyed[best]
        for j in np.flatnonzero(~taken & (blocked_by < 0)):
            if overlap[j] or members[j] & hit or destroyed[j] & members[best]:
                blocked_by[j] = len(chosen) - 1
    return Selection(chosen, scores, diversity, blocked_by)


def short_route(points: np.ndarray) -> list[int]:
    """Visiting order of points (n, 2) starting at point 0: nearest neighbour, then 2-opt."""
    points = np.asarray(points, float)
    n = len(points)
    if n <= 2:
        return list(range(n))
    dist = np.linalg.norm(points[:, None] - points[None], axis=2)
    order, left = [0], set(range(1, n))
    while left:
        nxt = min(left, key=lambda j: (dist[order[-1], j], j))
        order.append(nxt)
        left.remove(nxt)
    improved = True
    while improved:
        improved = False
        for i in range(1, n - 1):
            for j in range(i + 1, n):
                a, b, c = order[i - 1], order[i], order[j]
                d = order[j + 1] if j + 1 < n else None
                before = dist[a, b] + (dist[c, d] if d is not None else 0.0)
                after = dist[a, c] + (dist[b, d] if d is not None else 0.0)
                if after < before - 1e-9:
                    order[i:j + 1] = order[i:j + 1][::-1]
                    improved = True
    return order


def path_length(points: np.ndarray, order: Sequence[int]) -> float:
    """Length of the open path visiting ``points`` (n, 2) in ``order``."""
    p = np.asarray(points, float)[list(order)]
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()) if len(p) > 1 else 0.0
