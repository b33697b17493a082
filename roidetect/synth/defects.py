"""Defects cut into a microstructure, with exact ground truth.

Every defect turns solid voxels into :data:`~roidetect.synth.phases.VOID` (a collector gap,
and the gap under a lifted CBD film, also take in the pore space they enclose); exactly those
voxels carry its class in the label map and its id in the instance map, and nothing is drawn
over them afterwards. Defects keep at least two voxels of solid between each other (a
reservation zone around every carved defect), so no two instances touch.

- **pore**: an ellipsoidal void of radius 1.5-5 voxels inside one particle, at least two
  voxels from the particle's boundary, so all 26 neighbours of every pore voxel are solid;
  a final connectivity check drops any pore that touches other void.
- **crack**: a thin, slightly bowed and undulating sheet inside one particle whose opening
  tapers from its width at the centre to one voxel at the tip (the elliptical opening profile
  of a crack), optionally with a side branch; it may run out through the particle's surface.
  Its smallest principal extent (4 sqrt of the smallest eigenvalue of the voxel coordinates'
  covariance, as in skimage) is at most 3 voxels.
- **delamination**: a gap along part of a particle / carbon-binder interface, with a
  lens-shaped opening, where a CBD wall at least ``delamination_wall_vox`` thick stays
  between the gap and the pore space: carved from the CBD's side (the CBD pulled away) or,
  with ``delamination_recession_probability``, from the particle's outer layer against the
  CBD (the particle shrank away from it, as silicon does on delithiation); or, with
  ``delamination_film_probability``, under a CBD film lifted off a cap of the particle where
  it faces pore space (a blister, the film 2-4 voxels thick); or a gap between
  the coating and the current collector over a patch: one layer that holds the removed
  coating and the pores it opened into.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from roidetect.labels import CLASS_NAMES, CRACK, DELAMINATION, PORE
from roidetect.synth.microstructure import Microstructure, random_rotation
from roidetect.synth.noise import smooth_noise
from roidetect.synth.params import DefectParams
from roidetect.synth.phases import ACTIVE, ACTIVE_2, BINDER, VOID

MAX_CRACK_MINOR_VOX = 3.0
"""Largest allowed smallest principal extent of a crack, in voxels."""
_HOST_PHASES = {"active": ACTIVE, "active_2": ACTIVE_2}
_MIN_HOST_VOXELS = 120
_MIN_CRACK_VOXELS = 20
_MIN_GAP_VOXELS = 15
_RESERVE = 5  # cube edge of the reservation zone: two voxels of solid between defects
_CONNECT26 = np.ones((3, 3, 3), dtype=bool)


@dataclass
class DefectSet:
    """Ground truth of the defects cut into a microstructure.

    Attributes
    ----------
    labels : uint8 ndarray, shape (Z, Y, X)
        Class per voxel (``roidetect.labels``), 0 elsewhere.
    instances : uint32 ndarray, shape (Z, Y, X)
        Defect id per voxel, 1..N, 0 elsewhere.
    records : list of dict
        Per defect: ``id``, ``class``, ``class_id`` and how it was made (host particle,
        radius, width, gap, interface, ...).
    """

    labels: np.ndarray
    instances: np.ndarray
    records: list[dict[str, Any]] = field(default_factory=list)


def carve_defects(micro: Microstructure, params: DefectParams, rng: np.random.Generator) -> DefectSet:
    """Cut pores, cracks and delaminations into ``micro`` (its arrays are modified in place).

    Parameters
    ----------
    micro : Microstructure
        ``phases`` and ``particles`` are changed where defects open voids.
    params : DefectParams
    rng : numpy.random.Generator

    Returns
    -------
    DefectSet
    """
    carver = _Carver(micro, params, rng)
    n_hosts = len(carver.hosts)
    planned = {
        PORE: rng.poisson(params.pore_rate * n_hosts) if n_hosts else 0,
        CRACK: rng.poisson(params.crack_rate * n_hosts) if n_hosts else 0,
        DELAMINATION: rng.poisson(params.delamination_rate * n_hosts) if n_hosts else 0,
    }
    for class_id, count in planned.items():
        for _ in range(int(count)):
            carver.attempt(class_id, tries=3)
    if micro.collector_top is not None and rng.random() < params.collector_delamination_probability:
        carver.collector_delamination()
    for class_id in (PORE, CRACK, DELAMINATION):
        for _ in range(40):
            if carver.count(class_id) >= params.min_per_class:
                break
            carver.attempt(class_id, tries=1)
    carver.drop_open_pores()
    return DefectSet(carver.labels, carver.instances, carver.records)


class _Carver:
    """Cuts defects one at a time, keeping the reservation zone and the records."""

    def __init__(self, micro: Microstructure, params: DefectParams, rng: np.random.Generator) -> None:
        self.micro, self.params, self.rng = micro, params, rng
        shape = micro.phases.shape
        self.labels = np.zeros(shape, dtype=np.uint8)
        self.instances = np.zeros(shape, dtype=np.uint32)
        self.reserved = np.zeros(shape, dtype=bool)
        self.records: list[dict[str, Any]] = []
        self.regions = ndimage.find_objects(micro.particles)
        self.sizes = np.bincount(micro.particles.ravel(), minlength=len(self.regions) + 1)
        host_codes = [_HOST_PHASES[name] for name in params.host_phases]
        self.hosts = np.array([pid for pid in range(1, len(self.regions) + 1)
                               if self.regions[pid - 1] is not None and self.sizes[pid] >= _MIN_HOST_VOXELS
                               and micro.particle_phase[pid] in host_codes], dtype=np.int64)
        self.host_weights = self.sizes[self.hosts].astype(float) if len(self.hosts) else np.zeros(0)
        self._depth: dict[int, np.ndarray] = {}

    def depth_in(self, host: int, box: tuple[slice, ...]) -> np.ndarray:
        """Distance (voxels) from each voxel of ``box`` to the nearest voxel not of ``host``.

        Computed once per host, at its first pore; the reservation zone keeps later pores
        away from voids cut after that.
        """
        if host not in self._depth:
            inside = self.micro.particles[box] == host
            self._depth[host] = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1, 1:-1]
        return self._depth[host]

    # ------------------------------------------------------------------ bookkeeping

    def count(self, class_id: int) -> int:
        return sum(1 for r in self.records if r["class_id"] == class_id)

    def attempt(self, class_id: int, tries: int) -> bool:
        """Try to cut one defect of ``class_id`` in up to ``tries`` random host particles."""
        if not len(self.hosts):
            return False
        make = {PORE: self._pore, CRACK: self._crack, DELAMINATION: self._particle_delamination}[class_id]
        for _ in range(tries):
            host = int(self.rng.choice(self.hosts, p=self.host_weights / self.host_weights.sum()))
            if make(host):
                return True
        return False

    def _box(self, host: int, pad: int) -> tuple[slice, ...]:
        shape = self.micro.phases.shape
        return tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n))
                     for s, n in zip(self.regions[host - 1], shape))

    def _carve(self, box: tuple[slice, ...], mask: np.ndarray, class_id: int, info: dict[str, Any]) -> None:
        """Make ``mask`` (inside ``box``) void and record it as the next defect."""
        defect_id = len(self.records) + 1
        self.micro.phases[box][mask] = VOID
        self.micro.particles[box][mask] = 0
        self.labels[box][mask] = class_id
        self.instances[box][mask] = defect_id
        half = _RESERVE // 2
        shape = self.micro.phases.shape
        outer = tuple(slice(max(s.start - half, 0), min(s.stop + half, n)) for s, n in zip(box, shape))
        grown = np.zeros(tuple(s.stop - s.start for s in outer), dtype=bool)
        grown[tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer))] = mask
        self.reserved[outer] |= ndimage.maximum_filter(grown, size=_RESERVE)
        self.records.append({"id": defect_id, "class": CLASS_NAMES[class_id], "class_id": class_id, **info})

    # ------------------------------------------------------------------ pores

    def _pore(self, host: int) -> bool:
        p, rng = self.params, self.rng
        box = self._box(host, 2)
        inside = self.micro.particles[box] == host
        depth = self.depth_in(host, box)
        radius = float(rng.uniform(*p.pore_radius_vox))
        axes = np.maximum(radius * (1 + rng.uniform(-p.pore_elongation, p.pore_elongation, 3)), 1.2)
        reach = float(axes.max())
        candidates = np.argwhere(depth >= reach + 2.0)
        if not len(candidates):
            return False
        reserved = self.reserved[box]
        rotation = random_rotation(rng)
        for _ in range(4):
            centre = candidates[rng.integers(len(candidates))] + rng.uniform(-0.5, 0.5, 3)
            lo = np.maximum(np.floor(centre - reach).astype(int) - 1, 0)
            hi = np.minimum(np.ceil(centre + reach).astype(int) + 2, inside.shape)
            grid = np.meshgrid(*[np.arange(a, b) - c for a, b, c in zip(lo, hi, centre)], indexing="ij")
            body = [sum(rotation[m, k] * grid[m] for m in range(3)) / axes[k] for k in range(3)]
            ball = body[0] ** 2 + body[1] ** 2 + body[2] ** 2 <= 1.0
            sub = tuple(slice(a, b) for a, b in zip(lo, hi))
            if ball.sum() < 7 or reserved[sub][ball].any() or not inside[sub][ball].all():
                continue
            mask = np.zeros(inside.shape, dtype=bool)
            mask[sub] = ball
            self._carve(box, mask, PORE, {"host_particle": host, "radius_vox": round(float(axes.mean()), 3)})
            return True
        return False

    # ------------------------------------------------------------------ cracks

    def _crack(self, host: int) -> bool:
        p, rng = self.params, self.rng
        box = self._box(host, 1)
        inside = self.micro.particles[box] == host
        points = np.argwhere(inside)
        radius = (3 * len(points) / (4 * math.pi)) ** (1 / 3)
        normal = _unit(rng.standard_normal(3))
        e1 = _unit(np.cross(normal, _unit(rng.standard_normal(3))))
        e2 = np.cross(normal, e1)
        centre = points.mean(axis=0) + _unit(rng.standard_normal(3)) * rng.uniform(0, 0.35 * radius)
        half_a, half_b = radius * rng.uniform(*p.crack_extent, 2)
        width = float(rng.uniform(*p.crack_width_vox))
        grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in inside.shape], indexing="ij")
        rel = [grid[k] - np.float32(centre[k]) for k in range(3)]
        a, b, h = (sum(np.float32(v[k]) * rel[k] for k in range(3)) for v in (e1, e2, normal))
        bow_a, bow_b = rng.uniform(-p.crack_sagitta_vox, p.crack_sagitta_vox, 2)
        wavelength = radius * rng.uniform(0.6, 1.2)
        heading, phase = rng.uniform(0, 2 * math.pi, 2)
        wobble = rng.uniform(0, 0.4) * np.sin(2 * math.pi * (a * math.cos(heading) + b * math.sin(heading))
                                              / wavelength + phase)
        extent = (a / half_a) ** 2 + (b / half_b) ** 2
        main = _sheet(h - bow_a * (a / half_a) ** 2 - bow_b * (b / half_b) ** 2 - wobble, extent, width, normal)
        shapes = [("bowed", main), ("flat", _sheet(h, extent, width, normal))]
        if rng.random() < p.crack_branch_probability:
            shapes.insert(0, ("branched", main | self._branch(rel, e1, e2, normal, half_a, half_b, radius, width,
                                                              bow_a, bow_b)))
        allowed = inside & ~self.reserved[box]
        # A curved or branched sheet spreads out of its plane; fall back to simpler shapes
        # until the crack is as thin as a crack must be.
        for form, shape_mask in shapes:
            crack = _largest_component(shape_mask & allowed)
            if crack.sum() >= _MIN_CRACK_VOXELS and minor_extent_vox(crack) <= MAX_CRACK_MINOR_VOX:
                opens = ndimage.binary_dilation(crack, _CONNECT26) & (self.micro.phases[box] == VOID)
                self._carve(box, crack, CRACK, {
                    "host_particle": host, "width_vox": round(width, 3),
                    "half_length_vox": round(float(max(half_a, half_b)), 3), "form": form,
                    "reaches_surface": bool(opens.any()),
                })
                return True
        return False

    def _branch(self, rel: list[np.ndarray], e1: np.ndarray, e2: np.ndarray, normal: np.ndarray, half_a: float,
                half_b: float, radius: float, width: float, bow_a: float, bow_b: float) -> np.ndarray:
        """A side sheet leaving the main crack at 15-35 degrees from a point on it."""
        rng = self.rng
        angle = rng.uniform(0, 2 * math.pi)
        reach = rng.uniform(0.3, 0.7)
        pa, pb = reach * half_a * math.cos(angle), reach * half_b * math.sin(angle)
        height = bow_a * (pa / half_a) ** 2 + bow_b * (pb / half_b) ** 2
        start = pa * e1 + pb * e2 + height * normal
        outward = _unit(math.cos(angle) * e1 + math.sin(angle) * e2)
        across = np.cross(normal, outward)
        tilt = math.radians(rng.uniform(15, 35)) * rng.choice([-1, 1])
        along = math.cos(tilt) * outward + math.sin(tilt) * normal
        branch_normal = _unit(np.cross(along, across))
        shifted = [rel[k] - np.float32(start[k]) for k in range(3)]
        s, t, h = (sum(np.float32(v[k]) * shifted[k] for k in range(3)) for v in (along, across, branch_normal))
        length, span = radius * rng.uniform(0.2, 0.45), radius * rng.uniform(0.2, 0.4)
        extent = (s / length) ** 2 + (t / span) ** 2
        return _sheet(h, extent, width * rng.uniform(0.6, 1.0), branch_normal) & (s >= 0)

    # ------------------------------------------------------------------ delaminations

    def _particle_delamination(self, host: int) -> bool:
        """Open a gap along part of the interface between ``host`` and the CBD.

        On the CBD's side (the CBD pulled away) or, with ``delamination_recession_probability``,
        on the particle's side (the particle shrank away from the CBD that held it).
        """
        p, rng = self.params, self.rng
        gap = float(rng.uniform(*p.delamination_gap_vox))
        radius = (3 * self.sizes[host] / (4 * math.pi)) ** (1 / 3)
        # no draw at probability 0, so a seed makes the phantom it made before films existed
        if p.delamination_film_probability > 0 and rng.random() < p.delamination_film_probability:
            return self._film_delamination(host, gap, radius)
        recession = rng.random() < p.delamination_recession_probability
        if recession and gap > 0.5 * radius:
            return False
        box = self._box(host, int(math.ceil(gap + p.delamination_wall_vox)) + 2)
        phases = self.micro.phases[box]
        binder = phases == BINDER
        if not binder.any():
            return False
        host_voxels = self.micro.particles[box] == host
        # CBD at least delamination_wall_vox thick stays between the gap and the pore space:
        # behind a thinner wall the gap would merge with the pores in the scan.
        sealed = ndimage.distance_transform_edt(phases != VOID) > p.delamination_wall_vox
        if recession:  # the particle's outer layer where the nearest voxel outside it is CBD
            from_interface, nearest = ndimage.distance_transform_edt(host_voxels, return_indices=True)
            side = host_voxels & binder[tuple(nearest)]
        else:
            from_interface = ndimage.distance_transform_edt(~host_voxels)
            side = binder
        shell = side & sealed & (from_interface <= max(gap, 1.0)) & ~self.reserved[box]
        grown = self._lens_patch(shell, shell, from_interface, radius, gap)
        if grown is None:
            return False
        self._carve(box, grown[0], DELAMINATION, {"host_particle": host, "interface": "particle-binder",
                                                  "side": "particle" if recession else "binder",
                                                  "gap_vox": round(gap, 3)})
        return True

    def _film_delamination(self, host: int, gap: float, radius: float) -> bool:
        """Lift a CBD film off a cap of ``host`` where the particle faces pore space (a blister).

        The gap runs from the particle's surface out to a lens-shaped opening (``gap`` voxels
        at the cap's centre, one at its rim) through pore space and any CBD there; the next
        ``delamination_film_vox`` voxels out become CBD where they were pore space, so the
        scan shows particle, dark gap, faint film, then pore space. ``radius`` is the host's
        equivalent-sphere radius (voxels).
        """
        p, rng = self.params, self.rng
        film = float(rng.uniform(*p.delamination_film_vox))
        box = self._box(host, int(math.ceil(gap + film)) + 2)
        phases = self.micro.phases[box]
        from_surface = ndimage.distance_transform_edt(self.micro.particles[box] != host)
        open_space = np.isin(phases, (VOID, BINDER)) & ~self.reserved[box]
        pore_space = open_space & (phases == VOID)
        grown = self._lens_patch(pore_space & (from_surface <= 1.0), open_space, from_surface, radius, gap)
        if grown is None:
            return False
        gap_voxels, cap, opening = grown
        layer = pore_space & cap & (from_surface > opening) & (from_surface <= opening + film)
        phases[layer] = BINDER
        self._carve(box, gap_voxels, DELAMINATION, {"host_particle": host, "interface": "particle-binder",
                                                    "side": "film", "gap_vox": round(gap, 3),
                                                    "film_vox": round(film, 3)})
        return True

    def _lens_patch(self, seeds: np.ndarray, allowed: np.ndarray, from_interface: np.ndarray, radius: float,
                    gap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Grow a particle/CBD gap with a lens-shaped opening around a random voxel of ``seeds``.

        The patch has a radius of ``delamination_extent`` times ``radius`` (voxels); the opening
        is ``gap`` voxels at the seed and falls elliptically to one voxel at the patch's rim.
        The gap is the largest component of the ``allowed`` voxels of the patch within the
        opening of the interface (``from_interface``, voxels). All arrays share the box's shape.

        Returns
        -------
        (gap, patch, opening) or None
            bool, bool and float32 arrays; None when there are too few seeds or gap voxels.
        """
        candidates = np.argwhere(seeds)
        if len(candidates) < _MIN_GAP_VOXELS:
            return None
        seed = candidates[self.rng.integers(len(candidates))]
        patch_radius = radius * self.rng.uniform(*self.params.delamination_extent)
        grid = np.meshgrid(*[np.arange(n) - c for n, c in zip(seeds.shape, seed)], indexing="ij", sparse=True)
        distance = np.sqrt(sum(g.astype(np.float32) ** 2 for g in grid))
        opening = np.maximum(1.0, gap * np.sqrt(np.clip(1 - (distance / patch_radius) ** 2, 0, 1)))
        patch = distance <= patch_radius
        gap_voxels = _largest_component(allowed & patch & (from_interface <= opening))
        if gap_voxels.sum() < _MIN_GAP_VOXELS:
            return None
        return gap_voxels, patch, opening

    def collector_delamination(self) -> bool:
        """Open a gap between the coating and the current collector over a patch."""
        p, rng, micro = self.params, self.rng, self.micro
        top = micro.collector_top
        assert top is not None
        ny, nx = top.shape
        radius = rng.uniform(0.25, 0.6) * min(ny, nx)
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        yy, xx = np.meshgrid(np.arange(ny) - cy, np.arange(nx) - cx, indexing="ij")
        score = 1 - (yy**2 + xx**2) / radius**2 + 0.25 * smooth_noise((ny, nx), max(radius / 2, 2.0), rng)
        blob = score > 0
        labelled, n = ndimage.label(blob)
        if n == 0:
            return False
        blob = labelled == np.argmax(np.bincount(labelled.ravel())[1:]) + 1
        gap = float(rng.uniform(*p.collector_gap_vox))
        opening = np.where(blob, np.maximum(1, np.rint(gap * np.sqrt(np.clip(score, 0, 1)))), 0).astype(int)
        z0 = max(int((top - opening).min()), 0)
        z1 = int(top.max())
        box = (slice(z0, z1), slice(0, ny), slice(0, nx))
        depth = np.arange(z0, z1)[:, None, None]
        layer = (depth >= (top - opening)[None]) & (depth < top[None]) & blob[None]
        # The gap is the whole layer (away from other defects): the coating's material there
        # is removed and the pores it held become part of the gap, as a person annotating the
        # scan would draw it (one dark layer, no boundary between old pore and new gap).
        phases = micro.phases[box]
        removable = np.isin(phases, (ACTIVE, ACTIVE_2, BINDER))
        mask = layer & (removable | (phases == VOID)) & ~self.reserved[box]
        if (mask & removable).sum() < 2 * _MIN_GAP_VOXELS:
            return False
        self._carve(box, mask, DELAMINATION, {"host_particle": 0, "interface": "coating-collector",
                                              "gap_vox": round(gap, 3)})
        return True

    # ------------------------------------------------------------------ final check

    def drop_open_pores(self) -> None:
        """Refill any pore whose void is connected to other void (should not happen; kept as a guard)."""
        pores = [r for r in self.records if r["class_id"] == PORE]
        if not pores:
            return
        components, _ = ndimage.label(self.micro.phases == VOID, structure=_CONNECT26)
        component_size = np.bincount(components.ravel())
        regions = ndimage.find_objects(self.instances)
        dropped = set()
        for record in pores:
            box = regions[record["id"] - 1]
            mask = self.instances[box] == record["id"]
            ids = np.unique(components[box][mask])
            if len(ids) == 1 and component_size[ids[0]] == mask.sum():
                continue
            host = record["host_particle"]
            self.micro.phases[box][mask] = self.micro.particle_phase[host]
            self.micro.particles[box][mask] = host
            self.labels[box][mask] = 0
            self.instances[box][mask] = 0
            dropped.add(record["id"])
        if dropped:
            self._renumber(dropped)

    def _renumber(self, dropped: set[int]) -> None:
        self.instances, self.records = _renumbered(self.instances, self.records, dropped)


def unlabel(defects: DefectSet, ids: Collection[int], fill: int) -> tuple[DefectSet, list[dict[str, Any]]]:
    """Take the defects ``ids`` out of the ground truth; their voids stay in the phantom.

    Parameters
    ----------
    defects : DefectSet
    ids : defect ids to take out.
    fill : label value their voxels get (e.g. ``roidetect.labels.IGNORE``: not annotated).

    Returns
    -------
    DefectSet
        Labels and instances without them (instance 0 there), the others renumbered 1..N in
        their order.
    list of dict
        The removed records (with their old ids).
    """
    dropped = set(int(i) for i in ids)
    if not dropped:
        return defects, []
    removed = [dict(r) for r in defects.records if r["id"] in dropped]
    gone = np.isin(defects.instances, list(dropped))
    labels = np.where(gone, fill, defects.labels).astype(defects.labels.dtype)
    instances, records = _renumbered(defects.instances, [dict(r) for r in defects.records], dropped)
    return DefectSet(labels, instances, records), removed


def _renumbered(instances: np.ndarray, records: list[dict[str, Any]],
                dropped: set[int]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Instances and records without ``dropped``, ids renumbered 1..N (records are updated in place)."""
    kept = [r for r in records if r["id"] not in dropped]
    lookup = np.zeros(len(records) + 1, dtype=np.uint32)
    for new_id, record in enumerate(kept, start=1):
        lookup[record["id"]] = new_id
        record["id"] = new_id
    return lookup[instances], kept


# ---------------------------------------------------------------------------- helpers


def _sheet(offset: np.ndarray, extent: np.ndarray, width: float, normal: np.ndarray) -> np.ndarray:
    """Voxels of a sheet whose opening tapers elliptically from ``width`` to a digital plane.

    ``offset`` is the signed distance from the mid-surface and ``extent`` the squared
    normalised in-plane radius (1 at the tip). The thinnest sheet kept is half the L1 norm
    of the normal on each side, the thickness of a gap-free digital plane.
    """
    thinnest = 0.5 * float(np.abs(normal).sum())
    half = np.maximum(0.5 * width * np.sqrt(np.clip(1 - extent, 0, 1)), thinnest)
    return (extent <= 1) & (np.abs(offset) <= half)


def minor_extent_vox(mask: np.ndarray) -> float:
    """Smallest principal extent of a voxel set: 4 sqrt(smallest covariance eigenvalue)."""
    points = np.argwhere(mask).astype(float)
    if len(points) < 4:
        return 0.0
    eigenvalues = np.linalg.eigvalsh(np.cov(points, rowvar=False))
    return float(4 * math.sqrt(max(eigenvalues[0], 0.0)))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labelled, n = ndimage.label(mask, structure=_CONNECT26)
    if n <= 1:
        return mask
    return labelled == np.argmax(np.bincount(labelled.ravel())[1:]) + 1


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)
