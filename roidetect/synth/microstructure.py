"""Generated electrode microstructures: packed particles, carbon-binder domain, surface, collector.

The recipe, all in micrometres and then sampled on the voxel grid:

1. particle sizes are drawn from a log-normal distribution until the target active volume
   is reached; shapes are ellipsoids, agglomerates of 3-7 overlapping lobes (secondary
   particles made of primary grains) or, for graphite, flat flakes, and every radius is
   perturbed by a smooth random function of direction (lumpy particles);
2. centres start at random below a rough top surface and are pushed apart until neighbours
   overlap by at most ``overlap`` of their radii; what overlap remains forms sintered necks;
3. each particle is drawn as an implicit function ``f < 1`` in its bounding box; a voxel
   claimed by two particles goes to the one with the smaller ``f`` (a curved contact face);
4. the carbon-binder domain fills the void voxels of highest "binder score": a Gaussian
   blur of the solid (high in necks and crevices, a coating on particle surfaces) plus a
   smooth random field (clouds in the pore space), up to the target binder fraction;
5. a current-collector foil replaces the bottom layer when enabled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from roidetect.synth.noise import smooth_noise
from roidetect.synth.params import MicrostructureParams
from roidetect.synth.phases import ACTIVE, ACTIVE_2, BINDER, COLLECTOR, VOID

_MIN_DIAMETER_VOX = 4.0
_MAX_PARTICLES = 5000
_RELAX_ITERATIONS = 60


@dataclass
class Microstructure:
    """A phase map with its particles.

    Attributes
    ----------
    phases : uint8 ndarray, shape (Z, Y, X)
        Phase codes from :mod:`roidetect.synth.phases`.
    particles : int32 ndarray, shape (Z, Y, X)
        Particle id of every particle voxel, 0 elsewhere.
    particle_phase : uint8 ndarray, shape (n_particles + 1,)
        Phase of each particle id (entry 0 is :data:`VOID`).
    collector_top : int ndarray, shape (Y, X), or None
        z index of the first current-collector voxel in each column.
    stats : dict
        Numbers worth recording in the manifest (particle count, volume fractions).
    """

    phases: np.ndarray
    particles: np.ndarray
    particle_phase: np.ndarray
    collector_top: np.ndarray | None = None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Particle:
    centre_um: np.ndarray        # (3,) z, y, x
    radius_um: float             # radius of the sphere of equal volume (packing radius)
    phase: int
    rotation: np.ndarray         # (3, 3); columns are the body axes in (z, y, x)
    axes_um: np.ndarray          # (3,) ellipsoid semi-axes along the body axes
    lobes: np.ndarray | None     # (K, 4): body-frame offset (3) and radius of each lobe, um
    modes: np.ndarray            # (M, 6): direction (3), angular frequency, phase, amplitude

    @property
    def extent_um(self) -> float:
        if self.lobes is not None:
            reach = float(np.max(np.linalg.norm(self.lobes[:, :3], axis=1) + self.lobes[:, 3]))
        else:
            reach = float(self.axes_um.max())
        return reach * (1.0 + float(np.abs(self.modes[:, 5]).sum()))


def generate_microstructure(shape: Sequence[int], spacing_um: Sequence[float], params: MicrostructureParams,
                            rng: np.random.Generator) -> Microstructure:
    """Build a random electrode microstructure.

    Parameters
    ----------
    shape : (Z, Y, X)
    spacing_um : (3,) voxel size z, y, x in micrometres.
    params : MicrostructureParams
    rng : numpy.random.Generator

    Returns
    -------
    Microstructure
    """
    shape = tuple(int(n) for n in shape)
    spacing = np.asarray(spacing_um, dtype=float)
    top_vox = _top_surface(shape, spacing, params, rng)
    collector_top = _collector_top(shape, params, rng)
    bottom_vox = float(collector_top.mean()) if collector_top is not None else float(shape[0])

    particles = _draw_particles(shape, spacing, top_vox, bottom_vox, params, rng)
    _relax(particles, shape, spacing, top_vox, bottom_vox, params.overlap)
    labels = _render(particles, shape, spacing)

    particle_phase = np.array([VOID] + [p.phase for p in particles], dtype=np.uint8)
    phases = particle_phase[labels]
    depth = np.arange(shape[0], dtype=np.float32)[:, None, None]
    coating = depth >= top_vox[None]
    if collector_top is not None:
        foil = depth >= collector_top[None]
        phases[foil] = COLLECTOR
        labels[foil] = 0
        coating &= ~foil
    _add_binder(phases, coating, spacing, params, rng)
    stats = {"particles": len(particles), **phase_fractions(phases[coating])}
    return Microstructure(phases, labels, particle_phase, collector_top, stats)


def phase_fractions(phases: np.ndarray) -> dict[str, float]:
    """Volume fractions of active material, binder and void among the given phase values."""
    n = max(int(phases.size), 1)
    return {
        "active_fraction": round(float(np.isin(phases, (ACTIVE, ACTIVE_2)).sum()) / n, 4),
        "binder_fraction": round(float((phases == BINDER).sum()) / n, 4),
        "porosity": round(float((phases == VOID).sum()) / n, 4),
    }


# ---------------------------------------------------------------------------- layers


def _top_surface(shape: tuple[int, int, int], spacing: np.ndarray, params: MicrostructureParams,
                 rng: np.random.Generator) -> np.ndarray:
    """z (voxels) of the nominal top surface per column; far above the volume when disabled."""
    if not params.surface:
        return np.full(shape[1:], -float(shape[0]), dtype=np.float32)
    scale = params.particle_diameter_um / float(spacing[1:].mean())
    undulation = smooth_noise(shape[1:], max(scale, 2.0), rng) * (params.surface_roughness_um / spacing[0])
    return (params.surface_depth * shape[0] + undulation).astype(np.float32)


def _collector_top(shape: tuple[int, int, int], params: MicrostructureParams,
                   rng: np.random.Generator) -> np.ndarray | None:
    if not params.collector:
        return None
    nominal = shape[0] * (1.0 - params.collector_thickness)
    ripple = 0.7 * smooth_noise(shape[1:], max(shape[1:]) / 4.0, rng)
    return np.clip(np.rint(nominal + ripple), 1, shape[0] - 1).astype(np.int64)


# ---------------------------------------------------------------------------- particles


def _draw_particles(shape: tuple[int, int, int], spacing: np.ndarray, top_vox: np.ndarray, bottom_vox: float,
                    params: MicrostructureParams, rng: np.random.Generator) -> list[_Particle]:
    """Sizes, shapes and initial positions of all particles, largest first."""
    size_um = np.asarray(shape) * spacing
    margin = 0.5 * params.particle_diameter_um
    z_lo = float(top_vox.min()) * spacing[0]
    z_hi = bottom_vox * spacing[0]
    region = (size_um[1] + 2 * margin) * (size_um[2] + 2 * margin) * max(z_hi - z_lo, spacing[0])
    target = params.active_fraction * region * (1.0 + 1.5 * params.overlap)
    kinds = [(ACTIVE, params.particle_diameter_um, target * (1.0 - params.second_fraction))]
    if params.second_fraction > 0:
        kinds.append((ACTIVE_2, params.second_diameter_um, target * params.second_fraction))

    largest = 0.45 * float(size_um.min()) * 2
    smallest = _MIN_DIAMETER_VOX * float(spacing.min())
    particles: list[_Particle] = []
    for phase, median, volume in kinds:
        filled = 0.0
        while filled < volume and len(particles) < _MAX_PARTICLES:
            diameter = float(np.clip(median * math.exp(params.particle_size_sigma * rng.standard_normal()),
                                     max(smallest, 0.3 * median), max(min(largest, 3.0 * median), smallest)))
            centre = np.array([rng.uniform(z_lo, z_hi), rng.uniform(-margin, size_um[1] + margin),
                               rng.uniform(-margin, size_um[2] + margin)])
            particles.append(_shape_particle(centre, diameter / 2, phase, params, rng))
            filled += math.pi / 6 * diameter**3
    particles.sort(key=lambda p: -p.radius_um)
    return particles


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed 3 x 3 rotation matrix."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _flat_rotation(rng: np.random.Generator, max_tilt_deg: float = 25.0) -> np.ndarray:
    """Rotation whose first body axis (a flake's short axis) stays within a tilt of z."""
    spin = rng.uniform(0, 2 * math.pi)
    tilt = math.radians(rng.uniform(0, max_tilt_deg))
    c, s = math.cos(spin), math.sin(spin)
    in_plane = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    ct, st = math.cos(tilt), math.sin(tilt)
    tilt_about_y = np.array([[ct, 0, st], [0, 1, 0], [-st, 0, ct]])
    return in_plane @ tilt_about_y


def _shape_particle(centre: np.ndarray, radius: float, phase: int, params: MicrostructureParams,
                    rng: np.random.Generator) -> _Particle:
    lobes = None
    if phase == ACTIVE_2:  # graphite flake: oblate, lying flat
        k = params.second_aspect
        axes = radius * np.array([k ** (-2 / 3), k ** (1 / 3), k ** (1 / 3) * rng.uniform(0.8, 1.0)])
        rotation = _flat_rotation(rng)
    else:
        k = rng.uniform(1.0, params.particle_aspect_max)
        axes = radius * np.array([k ** (2 / 3), k ** (-1 / 3), k ** (-1 / 3)]) * rng.uniform(0.9, 1.1, 3)
        rotation = random_rotation(rng)
        if rng.random() < params.agglomerate_fraction:
            n = int(rng.integers(3, 8))
            directions = rng.standard_normal((n, 3))
            directions /= np.linalg.norm(directions, axis=1, keepdims=True)
            offsets = directions * (radius * rng.uniform(0.2, 0.5, (n, 1)))
            lobes = np.column_stack([offsets, radius * rng.uniform(0.5, 0.72, n)])
    n_modes = 5
    directions = rng.standard_normal((n_modes, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    modes = np.column_stack([
        directions,
        rng.uniform(1.5, 4.0, n_modes),
        rng.uniform(0, 2 * math.pi, n_modes),
        params.particle_lumpiness * rng.uniform(0.5, 1.0, n_modes) / math.sqrt(n_modes),
    ])
    return _Particle(centre, radius, phase, rotation, axes, lobes, modes)


def _relax(particles: list[_Particle], shape: tuple[int, int, int], spacing: np.ndarray, top_vox: np.ndarray,
           bottom_vox: float, overlap: float) -> None:
    """Push overlapping neighbours apart (in place) until they overlap by at most ``overlap``."""
    if len(particles) < 2:
        return
    centres = np.array([p.centre_um for p in particles])
    radii = np.array([p.radius_um for p in particles])
    size_um = np.asarray(shape) * spacing
    margin = float(radii.max())
    volume = radii**3
    tree_radius = 2 * float(radii.max()) * (1 - overlap)
    for _ in range(_RELAX_ITERATIONS):
        pairs = cKDTree(centres).query_pairs(tree_radius, output_type="ndarray")
        if len(pairs) == 0:
            break
        i, j = pairs[:, 0], pairs[:, 1]
        delta = centres[j] - centres[i]
        distance = np.linalg.norm(delta, axis=1)
        excess = (1 - overlap) * (radii[i] + radii[j]) - distance
        hit = excess > 1e-3 * radii[i]
        if not hit.any():
            break
        i, j, delta, distance, excess = i[hit], j[hit], delta[hit], distance[hit], excess[hit]
        unit = delta / np.maximum(distance, 1e-9)[:, None]
        share_i = (volume[j] / (volume[i] + volume[j]))[:, None]
        move = np.zeros_like(centres)
        np.add.at(move, i, -unit * excess[:, None] * share_i * 0.6)
        np.add.at(move, j, unit * excess[:, None] * (1 - share_i) * 0.6)
        centres += move
        _clamp(centres, radii, size_um, spacing, top_vox, bottom_vox, margin)
    for particle, centre in zip(particles, centres):
        particle.centre_um = centre


def _clamp(centres: np.ndarray, radii: np.ndarray, size_um: np.ndarray, spacing: np.ndarray, top_vox: np.ndarray,
           bottom_vox: float, margin: float) -> None:
    """Keep centres below the local top surface, above the collector and near the box."""
    centres[:, 1] = np.clip(centres[:, 1], -margin, size_um[1] + margin)
    centres[:, 2] = np.clip(centres[:, 2], -margin, size_um[2] + margin)
    iy = np.clip((centres[:, 1] / spacing[1]).astype(int), 0, top_vox.shape[0] - 1)
    ix = np.clip((centres[:, 2] / spacing[2]).astype(int), 0, top_vox.shape[1] - 1)
    floor = bottom_vox * spacing[0] - 0.5 * radii
    ceiling = top_vox[iy, ix] * spacing[0]
    centres[:, 0] = np.minimum(np.maximum(centres[:, 0], ceiling), np.maximum(floor, ceiling))


def _render(particles: list[_Particle], shape: tuple[int, int, int], spacing: np.ndarray) -> np.ndarray:
    """Particle-id map: each voxel goes to the particle whose implicit function is smallest."""
    best = np.ones(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.int32)
    for index, particle in enumerate(particles, start=1):
        centre_vox = particle.centre_um / spacing
        reach_vox = particle.extent_um / spacing + 1
        lo = np.maximum(np.floor(centre_vox - reach_vox).astype(int), 0)
        hi = np.minimum(np.ceil(centre_vox + reach_vox).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        grid = [(np.arange(lo[a], hi[a], dtype=np.float32) * spacing[a] - particle.centre_um[a])
                for a in range(3)]
        dz, dy, dx = grid[0][:, None, None], grid[1][None, :, None], grid[2][None, None, :]
        rot = particle.rotation.astype(np.float32)
        body = [rot[0, k] * dz + rot[1, k] * dy + rot[2, k] * dx for k in range(3)]
        value = _implicit(particle, body)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        claim = value < best[box]
        best[box][claim] = value[claim]
        labels[box][claim] = index
    return labels


def _implicit(particle: _Particle, body: list[np.ndarray]) -> np.ndarray:
    """Normalised radius ``f`` (< 1 inside) in the particle's body frame."""
    if particle.lobes is not None:
        value = None
        for ox, oy, oz, r in particle.lobes:
            lobe = np.sqrt((body[0] - ox) ** 2 + (body[1] - oy) ** 2 + (body[2] - oz) ** 2) / r
            value = lobe if value is None else np.minimum(value, lobe)
    else:
        a = particle.axes_um
        value = np.sqrt((body[0] / a[0]) ** 2 + (body[1] / a[1]) ** 2 + (body[2] / a[2]) ** 2)
    value = value.astype(np.float32, copy=False)
    total = float(np.abs(particle.modes[:, 5]).sum())
    if total > 0:
        # The bump scales f by 1 / (1 + b) with |b| <= total: only a shell of voxels can
        # change sides of f = 1, so the direction-dependent bump is evaluated there only.
        band = (value > 1.0 - total) & (value < 1.0 + total)
        points = [b[band] for b in body]
        norm = np.sqrt(points[0] ** 2 + points[1] ** 2 + points[2] ** 2) + np.float32(1e-6)
        bump = np.zeros_like(norm)
        for wz, wy, wx, freq, phase, amp in particle.modes:
            cosine = (np.float32(wz) * points[0] + np.float32(wy) * points[1] + np.float32(wx) * points[2]) / norm
            bump += np.float32(amp) * np.cos(np.float32(freq) * cosine + np.float32(phase))
        value[band] /= 1.0 + bump
    return value


# ---------------------------------------------------------------------------- binder


def _add_binder(phases: np.ndarray, coating: np.ndarray, spacing: np.ndarray, params: MicrostructureParams,
                rng: np.random.Generator) -> None:
    """Turn the void voxels of highest binder score into CBD (in place)."""
    candidates = coating & (phases == VOID)
    n_binder = int(round(params.binder_fraction * coating.sum()))
    if n_binder <= 0 or not candidates.any():
        return
    radius_vox = 0.5 * params.particle_diameter_um / float(spacing.mean())
    sigma = float(np.clip(0.15 * radius_vox, 1.0, 5.0))
    solid = (phases != VOID).astype(np.float32)
    score = ndimage.gaussian_filter(solid, sigma, mode="nearest")
    clouds = smooth_noise(phases.shape, max(0.5 * radius_vox, 2.0), rng)
    score += (1.0 - params.binder_neck_affinity) * 0.6 * clouds
    values = score[candidates]
    if n_binder >= values.size:
        phases[candidates] = BINDER
        return
    threshold = np.partition(values, values.size - n_binder)[values.size - n_binder]
    phases[candidates & (score >= threshold)] = BINDER
