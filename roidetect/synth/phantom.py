"""One annotated phantom: microstructure -> defects -> CT image, plus its manifest.

:func:`make_phantom` is pure and seeded: the same arguments give the same arrays. The seed
is split into independent streams for parameter draws, microstructure, defects and imaging,
so changing an imaging parameter leaves the microstructure and its defects unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from roidetect import __version__
from roidetect.errors import UserError
from roidetect.labels import CLASS_NAMES, DEFECT_CLASSES, DELAMINATION, IGNORE
from roidetect.synth.defects import DefectSet, carve_defects, unlabel
from roidetect.synth.geometry import geometry_block, load_geometry, packaged_geometry
from roidetect.synth.imaging import DEFAULT_RESOLUTION_VOX, attenuation_map, ct_scan
from roidetect.synth.manifest import defect_entries
from roidetect.synth.microstructure import Microstructure, generate_microstructure, phase_fractions
from roidetect.synth.params import SynthParams, apply_overrides
from roidetect.synth.phases import BINDER, VOID
from roidetect.synth.presets import get_preset, randomise_params
from roidetect.synth.visibility import gap_signals, gap_walls

DEFAULT_SHAPE = (128, 128, 128)
DEFAULT_VOXEL_SIZE_UM = 0.05
MIN_SIZE = 16


@dataclass(frozen=True)
class Phantom:
    """An annotated synthetic scan.

    Attributes
    ----------
    image : uint8 or uint16 ndarray, shape (Z, Y, X)
        The simulated CT scan.
    labels : uint8 ndarray, shape (Z, Y, X)
        0 background (including open porosity, binder, air), 1 pore, 2 crack, 3 delamination,
        255 not annotated: delamination gaps too faint to see (``delamination_min_signal``) or
        walled in behind CBD thinner than the resolution (``delamination_min_wall_fwhm``).
    instances : uint16 (uint32 beyond 65535 defects) ndarray, shape (Z, Y, X)
        Defect id per voxel, equal to the manifest's ``id``; 0 elsewhere.
    phases : uint8 ndarray, shape (Z, Y, X)
        Phase map (:mod:`roidetect.synth.phases`) after the defects were cut.
    particles : int32 ndarray, shape (Z, Y, X)
        Particle id per particle voxel, 0 elsewhere.
    manifest : dict
        Shape, voxel size, preset, seed, resolved parameters, derived imaging quantities
        and one entry per defect (see docs/architecture.md).
    spacing_um : (3,) tuple of float
        Voxel size z, y, x in micrometres.
    params : SynthParams
        The parameters used (after randomisation and overrides).
    timings_s : dict
        Wall time of each stage (kept out of the manifest so manifests are reproducible).
    """

    image: np.ndarray
    labels: np.ndarray
    instances: np.ndarray
    phases: np.ndarray
    particles: np.ndarray
    manifest: dict[str, Any]
    spacing_um: tuple[float, float, float]
    params: SynthParams
    timings_s: dict[str, float] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def solid(self) -> np.ndarray:
        """bool (Z, Y, X): material (particles, binder, collector), i.e. not void."""
        return self.phases != VOID


def make_phantom(shape: Sequence[int] | None = None, voxel_size_um: float | Sequence[float] | None = None,
                 seed: int = 0, preset: str = "cathode", randomise: bool = False,
                 geometry: str | os.PathLike | np.ndarray | None = None, phases: Mapping[str, int] | None = None,
                 preset_weights: Mapping[str, float] | None = None, **overrides: Any) -> Phantom:
    """Make one annotated electrode phantom.

    Parameters
    ----------
    shape : (Z, Y, X), optional
        Volume shape; default 128^3, or the whole ``geometry`` when one is given. With a
        geometry (given or from the preset) a block of this shape is cut at a seeded random
        position.
    voxel_size_um : float or (3,) floats, optional
        Voxel size in micrometres; default 0.05 (nano-CT). Particle sizes and the
        resolution are physical, defect sizes are in voxels.
    seed : int
        Everything random derives from it.
    preset : str
        ``cathode``, ``anode``, ``nmc-real`` or ``any`` (see :mod:`roidetect.synth.presets`).
    randomise : bool
        Draw microstructure, defect and imaging parameters from wide ranges (domain
        randomisation for training).
    geometry : path or ndarray, optional
        A segmented microstructure to use instead of a generated one.
    phases : mapping, optional
        Value of each phase in ``geometry`` (``{"particle": 85, "binder": 170}``);
        unlisted values are void.
    preset_weights : mapping, optional
        Relative weight of each preset when ``preset`` is ``any`` (``{"anode": 2,
        "cathode": 1, "nmc-real": 1}``); default equal.
    **overrides
        Any parameter of :class:`~roidetect.synth.params.SynthParams` by name; applied
        after randomisation.

    Returns
    -------
    Phantom

    Raises
    ------
    UserError
        Unknown preset or parameter, invalid value, unreadable geometry, bad shape.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed {seed!r}: use a non-negative integer")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(5)]
    rng_params, rng_micro, rng_defects, rng_imaging, rng_other_scan = streams
    chosen = get_preset(preset, rng_params, preset_weights)
    spacing = _spacing(voxel_size_um)

    source: Any = geometry
    if source is None and chosen.geometry is not None:
        source = packaged_geometry(chosen.geometry)
        phases = phases or chosen.phases
    full: np.ndarray | None = None
    if source is not None:
        if not phases:
            raise UserError(f"geometry {_describe(source)} needs its phase values, "
                            "e.g. --phases particle=85,binder=170")
        full = load_geometry(source, phases)
    shape = phantom_shape(shape, full if geometry is not None else None)

    params = chosen.params
    if randomise:
        params = randomise_params(params, chosen.name, rng_params, shape, spacing)
    params = resolvable_gaps(apply_overrides(params, overrides), spacing)

    timings: dict[str, float] = {}
    with _timed(timings, "microstructure"):
        if full is None:
            micro = generate_microstructure(shape, spacing, params.microstructure, rng_micro)
            placement = None
        else:
            micro, placement = geometry_block(full, shape, params.microstructure, randomise, rng_micro, spacing)
            micro.stats = {"particles": int(micro.particles.max()), **phase_fractions(micro.phases)}
    with _timed(timings, "defects"):
        before = micro.phases.copy(), micro.particles.copy()
        defects = carve_defects(micro, params.defects, rng_defects)
    rng_reference = copy.deepcopy(rng_imaging)
    with _timed(timings, "imaging"):
        image, imaging_info = _scan(micro, micro.phases, micro.particles, defects.labels, params, spacing, rng_imaging)
    unannotated: list[dict[str, Any]] = []
    if (defects.labels == DELAMINATION).any():
        with _timed(timings, "visibility"):
            defects, unannotated = _drop_faint_gaps(micro, before, defects, image, params, spacing,
                                                    (rng_reference, rng_other_scan))
    with _timed(timings, "manifest"):
        entries = defect_entries(defects.instances, defects.records, micro.phases != VOID, spacing)

    instance_dtype = np.uint16 if len(defects.records) < 65536 else np.uint32
    manifest = {
        "id": f"{chosen.name}-{seed}",
        "shape_zyx": list(shape),
        "voxel_size_um": list(spacing),
        "preset": chosen.name,
        "seed": int(seed),
        "randomised": bool(randomise),
        "generator": {"name": "roidetect.synth", "version": __version__},
        "geometry": None if full is None else {"source": _describe(source), "phases": dict(phases or {}),
                                                **(placement or {})},
        "microstructure": {**dataclasses.asdict(params.microstructure), "measured": micro.stats},
        "defect_parameters": dataclasses.asdict(params.defects),
        "imaging": {**dataclasses.asdict(params.imaging), **imaging_info,
                    "resolution_um_used": _resolution_um(params, spacing)},
        "counts": {CLASS_NAMES[c]: sum(1 for e in entries if e["class_id"] == c) for c in DEFECT_CLASSES},
        "defects": entries,
        "unannotated": unannotated,
    }
    return Phantom(image, defects.labels, defects.instances.astype(instance_dtype), micro.phases, micro.particles,
                   manifest, spacing, params, timings)


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 4)


def _spacing(voxel_size_um: float | Sequence[float] | None) -> tuple[float, float, float]:
    if voxel_size_um is None:
        return (DEFAULT_VOXEL_SIZE_UM,) * 3
    values = [voxel_size_um] * 3 if np.isscalar(voxel_size_um) else list(voxel_size_um)  # type: ignore[list-item]
    if len(values) != 3 or not all(isinstance(v, (int, float, np.floating, np.integer)) and 0 < v < 1e4
                                   for v in values):
        raise UserError(f"voxel size {voxel_size_um!r}: give one positive value or three (z y x) in micrometres")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def phantom_shape(shape: Sequence[int] | None, full: np.ndarray | None = None) -> tuple[int, int, int]:
    """The (z, y, x) shape of a phantom: ``shape``, else the whole geometry ``full``, else the default.

    Raises
    ------
    UserError
        ``shape`` is not three whole numbers of at least :data:`MIN_SIZE`.
    """
    if shape is None:
        return DEFAULT_SHAPE if full is None else tuple(full.shape)  # type: ignore[return-value]
    values = list(shape)
    if len(values) != 3 or not all(isinstance(v, (int, np.integer)) and v >= MIN_SIZE for v in values):
        raise UserError(f"shape {shape!r}: give three whole numbers (z y x), each at least {MIN_SIZE}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def _scan(micro: Microstructure, phases: np.ndarray, particles: np.ndarray, labels: np.ndarray,
          params: SynthParams, spacing: tuple[float, float, float],
          rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """The CT scan of a phase map (enclosed defect voids are vacuum)."""
    attenuation = attenuation_map(phases, particles, micro.particle_phase, enclosed_voids(phases, labels),
                                  params.imaging, rng)
    return ct_scan(attenuation, params.imaging, spacing, rng)


def _drop_faint_gaps(micro: Microstructure, before: tuple[np.ndarray, np.ndarray], defects: DefectSet,
                     image: np.ndarray, params: SynthParams, spacing: tuple[float, float, float],
                     rngs: tuple[np.random.Generator, np.random.Generator]) -> tuple[DefectSet, list[dict[str, Any]]]:
    """Measure every delamination's signal (:mod:`roidetect.synth.visibility`); those under
    the minimum leave the truth and become not annotated (label 255, instance 0). Particle/CBD
    gaps also get the thinnest CBD wall towards the pores (``wall_vox``); those on the CBD's
    side behind a wall under ``delamination_min_wall_fwhm`` resolutions leave the truth too.

    ``before`` holds the phase and particle maps before the defects were cut; ``rngs`` are a
    copy of the imaging stream as it was before the scan was made, and an independent one.
    """
    gaps = defects.labels == DELAMINATION
    phases = np.where(gaps, before[0], micro.phases)
    particles = np.where(gaps, before[1], micro.particles)
    # Without a gap, CBD would touch the particle: a gap on the particle's side is filled with
    # CBD, not with the particle layer it took (the scan shows a smaller particle, not a gap),
    # and so is the gap under a lifted film (the film would lie on the particle).
    refilled = [r["id"] for r in defects.records if r.get("side") in ("particle", "film")]
    in_refilled = gaps & np.isin(defects.instances, refilled)
    phases[in_refilled] = BINDER
    particles[in_refilled] = 0
    labels = np.where(gaps, 0, defects.labels)
    filled, filled_other = (_scan(micro, phases, particles, labels, params, spacing, rng)[0] for rng in rngs)
    ids = [r["id"] for r in defects.records if r["class_id"] == DELAMINATION]
    # a collector gap also holds old pores, which it did not empty; a film's gap emptied its CBD
    emptied = np.where((before[0] != VOID) | in_refilled, defects.instances, 0)
    signals = gap_signals(image, filled, filled_other, emptied, ids, phases)
    particle_gaps = [r["id"] for r in defects.records if r.get("interface") == "particle-binder"]
    walls = gap_walls(micro.phases, defects.labels, defects.instances, particle_gaps)
    for record in defects.records:
        if record["id"] in signals:
            record["signal"] = round(signals[record["id"]], 3)
        if record["id"] in walls:
            record["wall_vox"] = round(walls[record["id"]], 3)
    faint = {i for i in ids if signals[i] < params.defects.delamination_min_signal}
    min_wall = params.defects.delamination_min_wall_fwhm * _resolution_um(params, spacing) / float(np.mean(spacing))
    walled_in = {r["id"] for r in defects.records
                 if r["id"] in walls and r.get("side") == "binder" and walls[r["id"]] < min_wall}
    defects, removed = unlabel(defects, faint | walled_in, fill=IGNORE)
    kept = ("class", "interface", "side", "gap_vox", "film_vox", "signal", "wall_vox")
    return defects, [{key: r[key] for key in kept if key in r} | {"why": "faint" if r["id"] in faint else "thin wall"}
                     for r in removed]


def resolvable_gaps(params: SynthParams, spacing: tuple[float, float, float]) -> SynthParams:
    """Shift the delamination gap ranges up to ``delamination_min_gap_fwhm`` resolutions.

    A range (lo, hi) below the floor becomes (floor, floor + hi - lo), its width kept; the
    floor is at most 10 voxels. The CBD wall behind a particle/CBD gap
    (``delamination_wall_vox``) is raised to half the floor, at most 3 voxels: blurred to
    one resolution, a wall half as thick keeps about half its contrast.
    """
    defects = params.defects
    floor = min(defects.delamination_min_gap_fwhm * _resolution_um(params, spacing) / float(np.mean(spacing)), 10.0)

    def widen(gap: tuple[float, float]) -> tuple[float, float]:
        low, high = gap
        return gap if low >= floor else (round(floor, 3), round(floor + high - low, 3))

    return dataclasses.replace(params, defects=dataclasses.replace(
        defects, delamination_gap_vox=widen(defects.delamination_gap_vox),
        collector_gap_vox=widen(defects.collector_gap_vox),
        delamination_wall_vox=max(defects.delamination_wall_vox, round(min(floor / 2, 3.0), 3))))


def enclosed_voids(phases: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """bool (Z, Y, X): defect voids not connected to the open pore space (they stay empty under resin).

    A face-connected void component (resin flows through faces, not edges) is enclosed when
    all its voxels belong to defects: pores, sealed delamination gaps, cracks that stay
    inside their particle. A crack that runs out through the particle's surface joins the
    open pore space and fills with whatever fills it.
    """
    components, n = ndimage.label(phases == VOID)
    open_ids = np.unique(components[(labels == 0) & (components != 0)])
    is_open = np.zeros(n + 1, dtype=bool)
    is_open[open_ids] = True
    return (components != 0) & ~is_open[components]


def _resolution_um(params: SynthParams, spacing: tuple[float, float, float]) -> float:
    if params.imaging.resolution_um is not None:
        return params.imaging.resolution_um
    return round(DEFAULT_RESOLUTION_VOX * float(np.mean(spacing)), 6)


def _describe(source: Any) -> str:
    return "array" if isinstance(source, np.ndarray) else str(source)
