"""Segmented microstructures from files as phantom geometry.

A labelled volume (any format :func:`roidetect.volume.open_volume` reads, or an array) is
mapped to phases by a ``name=value`` list (``particle=85,binder=170``); values not listed
are void. Loaded files are cached per process (training workers build many phantoms from
one file).

For a phantom, a block of the requested shape is cut at a random position; with
randomisation the block is also flipped and transposed in y/x (and flipped in z when there
is no top surface). Touching particles in the block are split by a watershed of the
distance transform, so each particle gets an id for its own attenuation and for hosting
defects. A free top surface is made by removing the particles whose centre lies above a
rough height map, and the binder above it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from roidetect.errors import UserError
from roidetect.synth.microstructure import Microstructure
from roidetect.synth.noise import smooth_noise
from roidetect.synth.params import MicrostructureParams
from roidetect.synth.phases import ACTIVE, ACTIVE_2, BINDER, COLLECTOR, VOID

DATA_DIR = Path(__file__).resolve().parent / "data"
PHASE_ALIASES: dict[str, int] = {
    "pore": VOID, "void": VOID,
    "particle": ACTIVE, "active": ACTIVE,
    "particle2": ACTIVE_2, "active_2": ACTIVE_2, "graphite": ACTIVE_2,
    "binder": BINDER, "cbd": BINDER,
    "collector": COLLECTOR,
}
"""Names accepted in a phase list and the phase each one means."""


def parse_phases(text: str) -> dict[str, int]:
    """Parse ``"particle=85,binder=170"`` into ``{"particle": 85, "binder": 170}``.

    Raises
    ------
    UserError
        Malformed entries, unknown names, repeated names or values, or no particle phase.
    """
    phases: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or not value.strip().lstrip("-").isdigit():
            raise UserError(f"--phases entry {item!r} is not NAME=INTEGER; write e.g. particle=85,binder=170")
        if name not in PHASE_ALIASES:
            raise UserError(f"--phases: unknown phase {name!r}; use {', '.join(PHASE_ALIASES)}")
        if name in phases:
            raise UserError(f"--phases: phase {name!r} is given twice")
        phases[name] = int(value)
    check_phases(phases)
    return phases


def check_phases(phases: Mapping[str, int]) -> None:
    """Check a phase mapping (names known, values distinct, at least one particle phase)."""
    unknown = [n for n in phases if n not in PHASE_ALIASES]
    if unknown:
        raise UserError(f"phases: unknown phase {unknown[0]!r}; use {', '.join(PHASE_ALIASES)}")
    values = list(phases.values())
    if len(set(values)) != len(values):
        raise UserError(f"phases {dict(phases)}: two phases share a value; give each phase its own value")
    if not any(PHASE_ALIASES[n] in (ACTIVE, ACTIVE_2) for n in phases):
        raise UserError(f"phases {dict(phases)}: name the particle phase, e.g. particle=85")


def packaged_geometry(name: str) -> Path:
    """Path of a geometry file shipped in ``roidetect/synth/data``."""
    return DATA_DIR / name


def load_geometry(source: str | os.PathLike | np.ndarray, phases: Mapping[str, int]) -> np.ndarray:
    """Read a labelled volume as a phase map.

    Parameters
    ----------
    source : path or ndarray, shape (Z, Y, X)
        A file or an integer label array.
    phases : mapping of phase name to the value it has in ``source``

    Returns
    -------
    uint8 ndarray, shape (Z, Y, X)
        Phase codes (:mod:`roidetect.synth.phases`). Files are cached: do not modify it.
    """
    check_phases(phases)
    if isinstance(source, np.ndarray):
        return _phase_map(np.asarray(source), tuple(sorted(phases.items())), "array")
    path = Path(source).resolve()
    if not path.exists():
        raise UserError(f"geometry {source}: no such file")
    return _load_cached(str(path), path.stat().st_mtime_ns, tuple(sorted(phases.items())))


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, phases: tuple[tuple[str, int], ...]) -> np.ndarray:
    from roidetect.volume import open_volume

    return _phase_map(open_volume(path, voxel_size_um=1.0).numpy(), phases, path)


def _phase_map(values: np.ndarray, phases: tuple[tuple[str, int], ...], name: str) -> np.ndarray:
    if values.ndim != 3 or values.dtype.kind not in "iub":
        raise UserError(f"geometry {name}: expected a 3D integer label volume, got {values.dtype} {values.shape}")
    present = set(np.unique(values).tolist())
    phase_map = np.full(values.shape, VOID, dtype=np.uint8)
    for phase_name, value in phases:
        if value not in present:
            shown = ", ".join(str(v) for v in sorted(present)[:12])
            raise UserError(f"geometry {name}: phase {phase_name}={value} does not occur; values present: {shown}")
        phase_map[values == value] = PHASE_ALIASES[phase_name]
    return phase_map


def _with_particles(phases: np.ndarray) -> Microstructure:
    """Split the particles of a phase map into ids, phase by phase."""
    particles = np.zeros(phases.shape, dtype=np.int32)
    particle_phase = [VOID]
    for code in (ACTIVE, ACTIVE_2):
        mask = phases == code
        if mask.any():
            labels = split_particles(mask)
            particles[mask] = labels[mask] + len(particle_phase) - 1
            particle_phase += [code] * int(labels.max())
    return Microstructure(phases, particles, np.array(particle_phase, dtype=np.uint8))


def split_particles(mask: np.ndarray, min_distance: int | None = None) -> np.ndarray:
    """Label touching particles separately: watershed of the distance map from its maxima.

    Parameters
    ----------
    mask : bool ndarray, shape (Z, Y, X)
    min_distance : int, optional
        Smallest distance between two particle centres in voxels; by default 60 % of the
        typical particle radius (the 90th percentile of the distance map).

    Returns
    -------
    ndarray of int32, shape (Z, Y, X)
        1..N inside ``mask``, 0 outside.
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    distance = ndimage.distance_transform_edt(mask).astype(np.float32)
    if min_distance is None:
        min_distance = max(2, int(round(0.6 * float(np.percentile(distance[mask], 90)))))
    smooth = ndimage.gaussian_filter(distance, 1.0)
    peaks = peak_local_max(smooth, min_distance=min_distance, threshold_abs=1.5, labels=mask.astype(np.int32),
                           exclude_border=False)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-smooth, markers, mask=mask).astype(np.int32)
    orphans = mask & (labels == 0)  # specks without a maximum of their own
    if orphans.any():
        extra, n = ndimage.label(orphans)
        labels[orphans] = extra[orphans] + labels.max()
    return labels


def geometry_block(full: np.ndarray, shape: Sequence[int] | None, params: MicrostructureParams, randomise: bool,
                   rng: np.random.Generator, spacing_um: Sequence[float]) -> tuple[Microstructure, dict[str, object]]:
    """Cut a phantom-sized block out of a loaded phase map and split its particles.

    Parameters
    ----------
    full : uint8 ndarray, shape (Z, Y, X)
        From :func:`load_geometry` (not modified).
    shape : (Z, Y, X) or None (the whole map)
    params : MicrostructureParams
        Only ``surface*``, ``particle_diameter_um`` (roughness scale) and
        ``geometry_x_range`` (where along x the block may be cut) are used.
    randomise : bool
        Also flip and transpose the block.
    rng : numpy.random.Generator
    spacing_um : (3,) voxel size.

    Returns
    -------
    block : Microstructure
    placement : dict
        Where the block came from (``origin_zyx``, ``flips``, ``transposed``) for the manifest.
    """
    size = full.shape
    shape = tuple(size) if shape is None else tuple(int(n) for n in shape)
    if any(n > m for n, m in zip(shape, size)):
        raise UserError(f"shape {list(shape)} is larger than the geometry {list(size)}; choose a shape within it")
    x_low, x_high = (round(f * size[2]) for f in params.geometry_x_range)
    if shape[2] > x_high - x_low:
        raise UserError(f"shape {list(shape)} is wider in x than geometry_x_range {list(params.geometry_x_range)} "
                        f"allows ({x_high - x_low} of {size[2]} voxels); widen the range or narrow the shape")
    lows, highs = (0, 0, x_low), (size[0], size[1], x_high)
    origin = [int(rng.integers(low, high - n + 1)) for n, low, high in zip(shape, lows, highs)]
    phases = full[tuple(slice(o, o + n) for o, n in zip(origin, shape))]
    flips: list[int] = []
    transposed = False
    if randomise:
        flips = [axis for axis in ((1, 2) if params.surface else (0, 1, 2)) if rng.random() < 0.5]
        transposed = bool(rng.random() < 0.5) and shape[1] == shape[2]
        if flips:
            phases = np.flip(phases, axis=flips)
        if transposed:
            phases = phases.transpose(0, 2, 1)
    block = _with_particles(np.ascontiguousarray(phases).copy())
    if params.surface:
        cut_top_surface(block, params, spacing_um, rng)
    return block, {"origin_zyx": origin, "flips": flips, "transposed": transposed}


def cut_top_surface(micro: Microstructure, params: MicrostructureParams, spacing_um: Sequence[float],
                    rng: np.random.Generator) -> None:
    """Make a free top surface (in place): clear particles centred above it and binder above it."""
    z, ny, nx = micro.phases.shape
    spacing = np.asarray(spacing_um, dtype=float)
    scale = max(params.particle_diameter_um / float(spacing[1:].mean()), 2.0)
    top = params.surface_depth * z + smooth_noise((ny, nx), scale, rng) * params.surface_roughness_um / spacing[0]
    n = int(micro.particles.max())
    if n:
        index = np.arange(1, n + 1)
        centres = np.array(ndimage.center_of_mass(np.ones_like(micro.particles), micro.particles, index))
        present = ~np.isnan(centres[:, 0])
        iy = np.clip(np.rint(np.nan_to_num(centres[:, 1])).astype(int), 0, ny - 1)
        ix = np.clip(np.rint(np.nan_to_num(centres[:, 2])).astype(int), 0, nx - 1)
        above = np.zeros(n + 1, dtype=bool)
        above[1:] = present & (centres[:, 0] < top[iy, ix])
        removed = above[micro.particles]
        micro.phases[removed] = VOID
        micro.particles[removed] = 0
    depth = np.arange(z)[:, None, None]
    micro.phases[(micro.phases == BINDER) & (depth < top[None])] = VOID
