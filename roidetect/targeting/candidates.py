"""Candidate sites: each detection seeds one, and detections that fit in its field of view join it.

Work happens in a *site frame* (m, u, v): m is the milling direction (into the material,
increasing), u and v span the imaged plane. Top-down: m = z, u = y, v = x. Cross-section with
the trench on the -y side: m = +y (slices advance +y), u = z, v = x; on +y: m = -y; on -x/+x:
m = +x/-x and v = y.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from roidetect.targeting.geometry import SurfaceMap

_AXIS = {"y": 1, "x": 2}


@dataclass(frozen=True)
class Frame:
    """Axes (indices into (z, y, x)) of m, u, v and the sign of m."""

    m_axis: int
    u_axis: int
    v_axis: int
    m_sign: float

    @classmethod
    def for_mode(cls, mode: str, face_side: str = "-y") -> Frame:
        """The frame of ``mode`` ("top-down" or "cross-section"); ``face_side`` like "-y"."""
        if mode == "top-down":
            return cls(0, 1, 2, 1.0)
        m_axis = _AXIS[face_side[1]]
        return cls(m_axis, 0, 3 - m_axis, 1.0 if face_side[0] == "-" else -1.0)

    def m_range(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Near and far edges along m of boxes (lo, hi), shapes (..., 3) -> (...,)."""
        if self.m_sign > 0:
            return lo[..., self.m_axis], hi[..., self.m_axis]
        return -hi[..., self.m_axis], -lo[..., self.m_axis]

    def to_scan(self, m: float) -> float:
        """Scan coordinate along ``m_axis`` of frame coordinate m."""
        return self.m_sign * m

    def scan_interval(self, m_lo: float, m_hi: float) -> tuple[float, float]:
        """Scan interval along ``m_axis`` covered by the frame interval [m_lo, m_hi]."""
        a, b = self.to_scan(m_lo), self.to_scan(m_hi)
        return (min(a, b), max(a, b))

    def sample_lateral(self, surface: SurfaceMap, m_range: tuple[float, float], v_range: tuple[float, float],
                       max_points: int = 256) -> tuple[np.ndarray, np.ndarray, float]:
        """Surface over a cross-section footprint, indexed (m, v).

        Returns
        -------
        z : ndarray, shape (n_m, n_v)
            Surface z (um) with rows in increasing m.
        m : ndarray, shape (n_m,)
            Frame m of the rows (um).
        cell_area : float
        """
        m_scan = self.scan_interval(*m_range)
        ranges = {self.m_axis: m_scan, self.v_axis: v_range}
        z, y, x, area = surface.sample(ranges[1], ranges[2], max_points)
        if self.m_axis == 2:
            z, m_centres = z.T, x
        else:
            m_centres = y
        m = self.m_sign * m_centres
        order = np.argsort(m)
        return z[order], m[order], area


@dataclass(frozen=True)
class Candidate:
    """Detections (row positions in the detections table) that one site exposes."""

    seed: int
    members: tuple[int, ...]


def build_candidates(lo: np.ndarray, hi: np.ndarray, frame: Frame, usable_fov_um: float, merge_depth_um: float,
                     seeds: np.ndarray) -> list[Candidate]:
    """One candidate per seed; nearby detections join while the group fits one field of view.

    A detection joins a seed's site (nearest first, by the distance of box centres in the
    imaged plane) while the union of the members' boxes spans at most ``usable_fov_um`` along
    u and v, and the members' near edges along m lie within ``merge_depth_um`` of each other.
    Candidates with the same members are kept once.

    Parameters
    ----------
    lo, hi : ndarray, shape (N, 3)
        Detection boxes (z, y, x) in um.
    frame : Frame
    usable_fov_um, merge_depth_um : float
    seeds : ndarray of int
        Row positions to seed candidates from, in order; only these rows can join sites.
    """
    near, _ = frame.m_range(lo, hi)
    axes = [frame.u_axis, frame.v_axis]
    centre = (lo[:, axes] + hi[:, axes]) / 2
    pool = np.asarray(seeds, dtype=int)
    seen: set[tuple[int, ...]] = set()
    out = []
    for seed in pool:
        close = pool[(np.abs(centre[pool] - centre[seed]) <= usable_fov_um).all(axis=1)
                     & (np.abs(near[pool] - near[seed]) <= merge_depth_um)]
        close = close[np.argsort(np.linalg.norm(centre[close] - centre[seed], axis=1), kind="stable")]
        box_lo, box_hi = lo[seed, axes].copy(), hi[seed, axes].copy()
        near_lo = near_hi = near[seed]
        members = [int(seed)]
        for j in close:
            if j == seed:
                continue
            new_lo, new_hi = np.minimum(box_lo, lo[j, axes]), np.maximum(box_hi, hi[j, axes])
            if (new_hi - new_lo).max() > usable_fov_um:
                continue
            if max(near_hi, near[j]) - min(near_lo, near[j]) > merge_depth_um:
                continue
            box_lo, box_hi = new_lo, new_hi
            near_lo, near_hi = min(near_lo, near[j]), max(near_hi, near[j])
            members.append(int(j))
        key = tuple(sorted(members))
        if key not in seen:
            seen.add(key)
            out.append(Candidate(seed=int(seed), members=key))
    return out


def target_point(centroids: np.ndarray, sizes: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                 members: tuple[int, ...], frame: Frame) -> np.ndarray:
    """Where a site aims, (z, y, x) um: centre of the members' union box in the imaged plane,
    volume-weighted (size^3) centroid along the milling axis.

    Parameters
    ----------
    centroids : ndarray, shape (N, 3)
        Detection centroids (z, y, x) um.
    sizes : ndarray, shape (N,)
        Equivalent diameters (um).
    lo, hi : ndarray, shape (N, 3)
    members : row positions of the site's detections
    frame : Frame
    """
    rows = list(members)
    target = (lo[rows].min(axis=0) + hi[rows].max(axis=0)) / 2
    weights = sizes[rows] ** 3
    weights = weights if weights.sum() > 0 else np.ones(len(rows))
    target[frame.m_axis] = np.average(centroids[rows, frame.m_axis], weights=weights)
    return target
