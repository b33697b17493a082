"""The parameters of a phantom: microstructure, defects and imaging.

Three frozen dataclasses, grouped in :class:`SynthParams`. Every field name is unique across
the three groups, so a flat ``name=value`` override (``make_phantom(..., collector=True)``,
``roidetect synth --set photons=800``) finds its group by name. Lengths end in ``_um``
(micrometres) or ``_vox`` (voxels); defect sizes are in voxels because what matters for
detection is how many voxels a defect spans.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from roidetect.errors import UserError

CT_MODELS = ("fast", "fbp", "sirt")
"""``fast``: image-domain model of FBP noise, rings and cupping (no projections);
``fbp`` / ``sirt``: parallel-beam projections, Poisson noise, reconstruction."""
FILTERS = ("ramp", "shepp-logan", "cosine", "hann")
HOST_PHASE_NAMES = ("active", "active_2")


@dataclass(frozen=True)
class MicrostructureParams:
    """How the electrode is built (ignored for a ``geometry`` taken from a file, except ``surface*``).

    Attributes
    ----------
    particle_diameter_um : median diameter of the (primary) active particles.
    particle_size_sigma : log-normal shape parameter of the diameters (polydispersity).
    particle_aspect_max : ellipsoid semi-axes are drawn with longest/shortest up to this.
    particle_lumpiness : relative amplitude of the smooth perturbation of the particle radius.
    agglomerate_fraction : share of particles built as clusters of 3-7 overlapping lobes.
    active_fraction : target volume fraction of active material in the coating.
    overlap : allowed overlap of neighbours as a fraction of the sum of radii (sintered necks).
    second_fraction : share of the active volume that is the second active phase (graphite).
    second_diameter_um, second_aspect : size and flake aspect (long/short axis) of those
        particles; flakes lie flat (short axis near z), as after calendering.
    binder_fraction : volume fraction of carbon-binder domain (CBD) in the coating.
    binder_neck_affinity : 1 puts the CBD in necks and on particle surfaces, 0 in random
        clouds in the pore space.
    surface : whether a free top surface (vacuum or resin above) lies inside the volume.
    surface_depth : mean height of the top surface as a fraction of the volume's depth.
    surface_roughness_um : amplitude of the smooth undulation of that surface.
    collector : whether a current-collector foil lies at the bottom of the volume.
    collector_thickness : its thickness as a fraction of the volume's depth.
    geometry_x_range : (low, high) fractions of a loaded geometry's x extent within which
        blocks are cut; disjoint ranges give train and held-out phantoms that share no
        real microstructure (ignored for generated microstructures).
    """

    particle_diameter_um: float = 2.0
    particle_size_sigma: float = 0.3
    particle_aspect_max: float = 1.5
    particle_lumpiness: float = 0.1
    agglomerate_fraction: float = 0.3
    active_fraction: float = 0.5
    overlap: float = 0.12
    second_fraction: float = 0.0
    second_diameter_um: float = 3.0
    second_aspect: float = 3.0
    binder_fraction: float = 0.12
    binder_neck_affinity: float = 0.75
    surface: bool = True
    surface_depth: float = 0.15
    surface_roughness_um: float = 0.3
    collector: bool = False
    collector_thickness: float = 0.12
    geometry_x_range: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class DefectParams:
    """Which defects are cut into the microstructure, how many and how big.

    Rates are expected numbers per host particle (a particle of a phase in ``host_phases``
    large enough to hold the defect); the actual numbers are Poisson draws.

    Attributes
    ----------
    host_phases : phases whose particles may hold defects (``active``, ``active_2``).
    pore_rate, pore_radius_vox, pore_elongation : particle-internal pores: rate, radius
        range in voxels, and the largest relative deviation of an axis from the radius.
    crack_rate, crack_width_vox, crack_extent, crack_sagitta_vox, crack_branch_probability :
        cracks: rate, opening range in voxels (the opening tapers towards the crack tip),
        half-length range relative to the particle radius, the largest bow of the sheet
        in voxels, and the chance of one side branch.
    delamination_rate, delamination_gap_vox, delamination_extent : particle/CBD gaps: rate
        per host particle touching CBD, gap range in voxels, patch radius range relative
        to the particle radius.
    delamination_recession_probability : chance that a particle/CBD gap opens on the
        particle's side (the particle shrank away from the CBD that held it, as silicon does
        on delithiation) rather than on the CBD's side (the CBD pulled away).
    delamination_film_probability, delamination_film_vox : chance that a particle/CBD gap
        is instead a CBD film lifted off a cap of the particle where it faces pore space (a
        blister: particle, gap, a film ``delamination_film_vox`` voxels thick, then pore
        space), and the film's thickness range in voxels. 0 (default): no films, and the
        phantoms of a seed are those made before this mode existed.
    collector_delamination_probability, collector_gap_vox : chance of a gap between coating
        and current collector (when there is one) and its opening range in voxels.
    delamination_min_gap_fwhm : narrowest opening of either kind of delamination, as a
        multiple of the scan's resolution (FWHM): narrower gap ranges are shifted up to it
        (at most 10 voxels), because a gap between a bright particle and faint CBD far below
        the resolution leaves no visible trace in the scan and would not be annotated (the
        blur of the particle fills it: its grey value stays above the CBD's). 0: off.
    delamination_wall_vox : the CBD left between a particle/CBD gap and the pore space is
        thicker than this (voxels); raised to half the narrowest gap (half a resolution, at
        most 3 voxels) when that is thicker, since a thinner wall blurs away and the gap
        looks like one more pore beside the particle.
    delamination_min_signal : delaminations that darken the scan by less than this (mean
        over the gap, in standard deviations of the CBD's grey values; see
        :mod:`roidetect.synth.visibility`) stay in the phantom but are labelled 255 (not
        annotated), as an annotator would not see them. 0: label every gap. Every gap's signal is in
        the manifest either way.
    delamination_min_wall_fwhm : gaps cut on the CBD's side behind a CBD wall thinner than
        this many resolutions (FWHM; the manifest's ``wall_vox``) are labelled 255 (not
        annotated) as well: blurred, such a wall vanishes and the gap reads as one more pore
        beside the particle, so nobody could annotate it. Gaps on the particle's side keep
        their labels (the receded particle shows where it shrank). 0 (default): off.
    min_per_class : try harder, up to this many per class, when the Poisson draw left a
        class empty (so small training volumes still show every class).
    """

    host_phases: tuple[str, ...] = ("active",)
    pore_rate: float = 0.6
    pore_radius_vox: tuple[float, float] = (1.5, 5.0)
    pore_elongation: float = 0.25
    crack_rate: float = 0.3
    crack_width_vox: tuple[float, float] = (1.0, 3.0)
    crack_extent: tuple[float, float] = (0.5, 1.3)
    crack_sagitta_vox: float = 1.5
    crack_branch_probability: float = 0.4
    delamination_rate: float = 0.3
    delamination_gap_vox: tuple[float, float] = (2.0, 5.0)
    delamination_extent: tuple[float, float] = (0.4, 0.9)
    delamination_recession_probability: float = 0.5
    delamination_film_probability: float = 0.0
    delamination_film_vox: tuple[float, float] = (2.0, 4.0)
    collector_delamination_probability: float = 0.8
    collector_gap_vox: tuple[float, float] = (2.0, 5.0)
    delamination_min_gap_fwhm: float = 1.0
    delamination_wall_vox: float = 2.0
    delamination_min_signal: float = 1.0
    delamination_min_wall_fwhm: float = 0.0
    min_per_class: int = 1


@dataclass(frozen=True)
class ImagingParams:
    """How the phantom is turned into a CT scan.

    Attenuations ``mu_*`` are relative (the brightest active phase is about 1); the scale
    is set by ``transmission``.

    Attributes
    ----------
    mu_active, mu_active_2, mu_binder, mu_collector : relative attenuation per phase.
    mu_medium : attenuation of what fills the open pores and lies above the sample (0 for
        vacuum, about 0.03-0.12 for resin); enclosed pores stay vacuum.
    particle_variation : relative standard deviation of the attenuation between particles.
    grain_size_vox, grain_contrast : primary-grain (Voronoi) texture inside active particles.
    texture : relative amplitude of smooth density variation inside particles.
    binder_texture : relative amplitude of the fine, nanoporous texture of the CBD.
    resolution_um : FWHM of the point-spread function (line-spread function of an edge);
        None means 4.5 voxels, the nano-CT ratio of 224 nm at 50 nm voxels.
    transmission : mean X-ray transmission through the sample (sets the attenuation scale).
    photons : incident photons per detector pixel and projection (sets the noise).
    n_angles : number of projections over 180 degrees (few angles give streaks).
    ct_model : ``fast`` (image-domain), ``fbp`` or ``sirt`` (projection and reconstruction).
    filter_name : FBP filter window (the noise texture of ``fast`` follows it too).
    sirt_iterations : iterations of the SIRT reconstruction.
    ring_strength : standard deviation of the relative detector-gain errors (rings).
    cupping : relative drop of the reconstructed attenuation at the centre (beam hardening).
    fringe_strength, fringe_sigma_vox : propagation phase-contrast fringes left without
        phase retrieval, to first order: the attenuation after blurring becomes
        ``mu + k (mu - G mu)`` (``G`` a Gaussian of ``fringe_sigma_vox``), a bright fringe
        inside and a dark one outside every edge; ``k`` is drawn uniformly from the
        ``fringe_strength`` range per phantom ((0, 0): none; ``--randomise`` leaves it).
    fov_radius : radius of the reconstructed field of view over half the volume's width
        (``fast`` model: where the cupping bowl reaches zero).
    axis_offset_vox : (y, x) offset of the rotation axis from the volume's centre
        (``fast`` model; projections rotate about the centre).
    drift : relative amplitude of slow intensity drift.
    bit_depth : 8 or 16.
    window_margin : (low, high) margins added below the 0.2th and above the 99.8th
        percentile before scaling to grey values, as fractions of that range (negative
        values clip).
    output_range : fractions of the dtype's maximum that the window maps to.
    """

    mu_active: float = 1.0
    mu_active_2: float = 0.25
    mu_binder: float = 0.2
    mu_collector: float = 0.35
    mu_medium: float = 0.0
    particle_variation: float = 0.05
    grain_size_vox: float = 5.0
    grain_contrast: float = 0.03
    texture: float = 0.03
    binder_texture: float = 0.3
    resolution_um: float | None = None
    transmission: float = 0.3
    photons: float = 5000.0
    n_angles: int = 360
    ct_model: str = "fast"
    filter_name: str = "shepp-logan"
    sirt_iterations: int = 20
    ring_strength: float = 0.002
    cupping: float = 0.04
    fringe_strength: tuple[float, float] = (0.0, 0.0)
    fringe_sigma_vox: float = 1.5
    fov_radius: float = 1.2
    axis_offset_vox: tuple[float, float] = (0.0, 0.0)
    drift: float = 0.02
    bit_depth: int = 16
    window_margin: tuple[float, float] = (0.05, 0.05)
    output_range: tuple[float, float] = (0.05, 0.8)


@dataclass(frozen=True)
class SynthParams:
    """All parameters of one phantom."""

    microstructure: MicrostructureParams = field(default_factory=MicrostructureParams)
    defects: DefectParams = field(default_factory=DefectParams)
    imaging: ImagingParams = field(default_factory=ImagingParams)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dictionary (tuples become lists), as stored in manifests."""
        return dataclasses.asdict(self)


_GROUPS = ("microstructure", "defects", "imaging")
_FIELD_GROUP: dict[str, str] = {f.name: group for group, cls in zip(_GROUPS, (MicrostructureParams, DefectParams,
                                                                               ImagingParams))
                                for f in fields(cls)}

# (low, high) inclusive bounds of numeric fields; tuple fields are checked per element.
_BOUNDS: dict[str, tuple[float, float]] = {
    "particle_diameter_um": (1e-4, 1e4), "particle_size_sigma": (0, 1.5), "particle_aspect_max": (1, 5),
    "particle_lumpiness": (0, 0.5), "agglomerate_fraction": (0, 1), "active_fraction": (0.05, 0.8),
    "overlap": (0, 0.5), "second_fraction": (0, 1), "second_diameter_um": (1e-4, 1e4), "second_aspect": (1, 8),
    "binder_fraction": (0, 0.5), "binder_neck_affinity": (0, 1), "surface_depth": (0, 0.9),
    "surface_roughness_um": (0, 1e4), "collector_thickness": (0.01, 0.5), "geometry_x_range": (0, 1),
    "pore_rate": (0, 50), "pore_radius_vox": (1, 50), "pore_elongation": (0, 0.6), "crack_rate": (0, 50),
    "crack_width_vox": (0.5, 10), "crack_extent": (0.1, 3), "crack_sagitta_vox": (0, 10),
    "crack_branch_probability": (0, 1), "delamination_rate": (0, 50), "delamination_gap_vox": (0.5, 10),
    "delamination_extent": (0.1, 3), "delamination_recession_probability": (0, 1),
    "delamination_film_probability": (0, 1), "delamination_film_vox": (1, 10),
    "collector_delamination_probability": (0, 1), "collector_gap_vox": (0.5, 10),
    "delamination_min_gap_fwhm": (0, 3), "delamination_wall_vox": (0, 10), "delamination_min_signal": (0, 100),
    "delamination_min_wall_fwhm": (0, 10),
    "min_per_class": (0, 100),
    "mu_active": (0, 100), "mu_active_2": (0, 100), "mu_binder": (0, 100), "mu_collector": (0, 100),
    "mu_medium": (0, 100), "particle_variation": (0, 0.5), "grain_size_vox": (1, 100), "grain_contrast": (0, 0.5),
    "texture": (0, 0.5), "binder_texture": (0, 1), "resolution_um": (0, 1e4), "transmission": (0.01, 0.99),
    "photons": (1, 1e9), "n_angles": (2, 10000), "sirt_iterations": (1, 1000), "ring_strength": (0, 0.5),
    "cupping": (0, 0.9), "fringe_strength": (0, 10), "fringe_sigma_vox": (0.3, 20), "fov_radius": (0.1, 100), "axis_offset_vox": (-1e4, 1e4), "drift": (0, 0.5),
    "window_margin": (-0.4, 2), "output_range": (0, 1),
}
_CHOICES: dict[str, tuple[Any, ...]] = {"ct_model": CT_MODELS, "filter_name": FILTERS, "bit_depth": (8, 16)}
_ORDERED_PAIRS = ("pore_radius_vox", "crack_width_vox", "crack_extent", "delamination_gap_vox",
                  "delamination_extent", "delamination_film_vox", "collector_gap_vox", "output_range",
                  "geometry_x_range", "fringe_strength")


def parameter_names() -> list[str]:
    """Every name accepted as an override, sorted."""
    return sorted(_FIELD_GROUP)


def apply_overrides(params: SynthParams, overrides: Mapping[str, Any]) -> SynthParams:
    """Return ``params`` with flat ``name=value`` overrides applied and checked.

    Raises
    ------
    UserError
        An unknown name, a value of the wrong type or outside its range.
    """
    changes: dict[str, dict[str, Any]] = {group: {} for group in _GROUPS}
    for name, value in overrides.items():
        group = _FIELD_GROUP.get(name)
        if group is None:
            close = difflib.get_close_matches(name, _FIELD_GROUP, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see docs/synth.md for the list"
            raise UserError(f"unknown phantom parameter {name!r}{hint}")
        current = getattr(getattr(params, group), name)
        changes[group][name] = _coerce(name, value, current)
    updated = replace(params, **{group: replace(getattr(params, group), **values)
                                 for group, values in changes.items() if values})
    validate(updated)
    return updated


def _coerce(name: str, value: Any, current: Any) -> Any:
    """Convert ``value`` to the type of the field's current value."""
    if name == "resolution_um" and value is None:
        return None
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise UserError(f"phantom parameter {name}={value!r}: expected true or false")
        return value
    if isinstance(current, tuple):
        if not isinstance(value, (list, tuple)) or (name != "host_phases" and len(value) != len(current)):
            raise UserError(f"phantom parameter {name}={value!r}: expected a list like {list(current)}")
        return tuple(_coerce(name, v, current[0]) for v in value) if current else tuple(value)
    if isinstance(current, str):
        if not isinstance(value, str):
            raise UserError(f"phantom parameter {name}={value!r}: expected text")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"phantom parameter {name}={value!r}: expected a number")
    if isinstance(current, int):
        if float(value) != int(value):
            raise UserError(f"phantom parameter {name}={value!r}: expected a whole number")
        return int(value)
    return float(value)


def validate(params: SynthParams) -> None:
    """Check every field against its allowed range or choices.

    Raises
    ------
    UserError
        Naming the first offending parameter and its allowed range.
    """
    for group in _GROUPS:
        for name, value in dataclasses.asdict(getattr(params, group)).items():
            if name in _CHOICES and value not in _CHOICES[name]:
                raise UserError(f"phantom parameter {name}={value!r}: choose one of "
                                f"{', '.join(map(str, _CHOICES[name]))}")
            if name == "host_phases":
                unknown = [v for v in value if v not in HOST_PHASE_NAMES]
                if unknown or not value:
                    raise UserError(f"phantom parameter host_phases={list(value)}: use a non-empty list of "
                                    f"{', '.join(HOST_PHASE_NAMES)}")
            if name in _BOUNDS and value is not None:
                lo, hi = _BOUNDS[name]
                values = value if isinstance(value, (list, tuple)) else [value]
                if any(not math.isfinite(v) or not lo <= v <= hi for v in values):
                    raise UserError(f"phantom parameter {name}={value!r} is outside [{lo:g}, {hi:g}]")
                if name in _ORDERED_PAIRS and values[0] > values[1]:
                    raise UserError(f"phantom parameter {name}={value!r}: the first value must not exceed the second")
