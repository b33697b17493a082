"""Named starting points for phantoms and the ranges that domain randomisation draws from.

Presets
-------
``cathode``
    NMC / LCO / NCA cathode: bright, polydisperse, partly agglomerated particles, faint CBD,
    dark voids, aluminium collector when enabled.
``anode``
    Si / graphite anode: small, lumpy silicon particles (brighter) among large flat graphite
    flakes whose contrast is close to the CBD's; copper collector (very bright) when enabled.
    Defects are cut into the silicon (cracking, pulverisation and Si/CBD delamination are
    what the silicon's swelling causes; graphite defects would be near-invisible).
``nmc-real``
    The real 3-phase NMC cathode labelling shipped with roidetect (taufactor, MIT licence:
    0 pore, 85 NMC, 170 CBD; voxel size unknown, nominally the one you pass) imaged like the
    cathode preset.
``any``
    One of the above, drawn per phantom from the seed (for training).

With ``randomise=True`` every parameter listed in :data:`RANGES` (plus the preset's entries
in :data:`PRESET_RANGES`) is redrawn from its range; explicit overrides still win.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from roidetect.errors import UserError
from roidetect.synth.params import DefectParams, ImagingParams, MicrostructureParams, SynthParams


@dataclass(frozen=True)
class Preset:
    """A named parameter set, optionally with a packaged segmented geometry.

    Attributes
    ----------
    geometry : file name inside ``roidetect/synth/data`` (None: generated microstructure).
    phases : value of each phase in that file (``particle``, ``binder``, ...).
    """

    name: str
    description: str
    params: SynthParams
    geometry: str | None = None
    phases: Mapping[str, int] | None = None


PRESETS: dict[str, Preset] = {
    "cathode": Preset(
        "cathode", "NMC/LCO/NCA cathode: bright particles, faint binder, dark voids",
        SynthParams(),
    ),
    "anode": Preset(
        "anode", "Si/graphite anode: Si brighter than graphite; graphite and CBD of similar, low contrast",
        SynthParams(
            MicrostructureParams(particle_diameter_um=0.8, particle_size_sigma=0.35, particle_aspect_max=1.3,
                                 particle_lumpiness=0.18, agglomerate_fraction=0.15, active_fraction=0.5,
                                 second_fraction=0.65, second_diameter_um=3.0, second_aspect=3.0,
                                 binder_fraction=0.14),
            DefectParams(pore_rate=0.3, crack_rate=0.4, crack_branch_probability=0.6, delamination_rate=0.4),
            ImagingParams(mu_active=1.0, mu_active_2=0.3, mu_binder=0.26, mu_collector=2.0, grain_contrast=0.01,
                          texture=0.04),
        ),
    ),
    "nmc-real": Preset(
        "nmc-real", "real 3-phase NMC cathode labelling (taufactor, MIT) imaged like the cathode preset",
        SynthParams(MicrostructureParams(surface_depth=0.1)),
        geometry="taufactor_nmc/electrode.tiff",
        phases={"pore": 0, "particle": 85, "binder": 170},
    ),
}
ANY = "any"


def preset_names() -> list[str]:
    """Names accepted by ``preset=`` (including ``any``)."""
    return [*PRESETS, ANY]


def get_preset(name: str, rng: np.random.Generator | None = None,
               weights: Mapping[str, float] | None = None) -> Preset:
    """Look a preset up by name; ``any`` draws one with ``rng``.

    Parameters
    ----------
    weights : mapping, optional
        Relative weight of each preset for ``any`` (unlisted presets weigh 0); default
        equal weights.

    Raises
    ------
    UserError
        If the name is unknown; if weights come with a named preset, or one is negative,
        names no preset or all are 0.
    """
    key = name.strip().lower()
    if weights is not None and key != ANY:
        raise UserError(f"preset weights {dict(weights)} need preset 'any', not {name!r}")
    if key == ANY:
        if rng is None:
            raise ValueError("preset 'any' needs a random generator")
        if weights is None:
            key = list(PRESETS)[int(rng.integers(len(PRESETS)))]
        else:
            key = _weighted_choice(list(PRESETS), preset_probabilities(weights), rng)
    if key not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}")
    return PRESETS[key]


def checked_preset_weights(weights: Mapping[str, Any] | None) -> dict[str, float] | None:
    """Preset weights as a plain ``{name: float}``, checked as :func:`preset_probabilities` does.

    ``None`` (an equal draw) stays ``None``.
    """
    if weights is None:
        return None
    plain = {str(name): float(value) for name, value in dict(weights).items()}
    preset_probabilities(plain)
    return plain


def preset_probabilities(weights: Mapping[str, float]) -> np.ndarray:
    """Probability of each preset of :data:`PRESETS`, in order, from relative ``weights``.

    Raises
    ------
    UserError
        If a name is not a preset, a weight is negative or not finite, or all are 0.
    """
    unknown = sorted(set(weights) - set(PRESETS))
    if unknown:
        raise UserError(f"preset weights name {', '.join(map(repr, unknown))}; choose from {', '.join(PRESETS)}")
    values = np.array([float(weights.get(name, 0.0)) for name in PRESETS])
    if not np.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
        raise UserError(f"preset weights {dict(weights)}: use non-negative numbers, not all 0")
    return values / values.sum()


# ---------------------------------------------------------------------------- randomisation

Spec = tuple[Any, ...]
"""A range: ``("uniform", lo, hi)``, ``("log", lo, hi)`` (log-uniform), ``("scale", lo, hi)``
(the preset's value times a log-uniform factor), ``("int", lo, hi)``, ``("bool", p_true)``,
``("choice", options, weights)``, ``("zero_or", p_zero, lo, hi)``, ``("pair", (lo, hi),
(lo, hi))``, ``("fwhm_vox", lo, hi)`` (a resolution in voxels of the phantom) and
``("offset_fraction", f)`` (rotation-axis offset up to ``f`` times the width)."""

RANGES: dict[str, Spec] = {
    # microstructure
    "particle_diameter_um": ("scale", 0.35, 1.6),
    "particle_size_sigma": ("uniform", 0.1, 0.5),
    "particle_aspect_max": ("uniform", 1.0, 2.0),
    "particle_lumpiness": ("uniform", 0.0, 0.25),
    "agglomerate_fraction": ("uniform", 0.0, 0.6),
    "active_fraction": ("uniform", 0.35, 0.6),
    "overlap": ("uniform", 0.0, 0.25),
    "binder_fraction": ("uniform", 0.05, 0.2),
    "binder_neck_affinity": ("uniform", 0.4, 1.0),
    "surface": ("bool", 0.6),
    "surface_depth": ("uniform", 0.03, 0.35),
    "surface_roughness_um": ("scale", 0.3, 3.0),
    "collector": ("bool", 0.3),
    "collector_thickness": ("uniform", 0.05, 0.2),
    # defects
    "pore_rate": ("scale", 0.3, 2.0),
    "pore_elongation": ("uniform", 0.0, 0.4),
    "crack_rate": ("scale", 0.3, 2.0),
    "crack_sagitta_vox": ("uniform", 0.0, 2.0),
    "crack_branch_probability": ("uniform", 0.0, 0.7),
    "delamination_rate": ("scale", 0.3, 2.0),
    "delamination_gap_vox": ("pair", (1.5, 3.0), (4.0, 7.0)),
    "delamination_recession_probability": ("uniform", 0.2, 0.8),
    "collector_delamination_probability": ("uniform", 0.5, 1.0),
    # imaging (contrasts of binder and collector: per preset, below)
    "mu_medium": ("zero_or", 0.5, 0.02, 0.12),
    "particle_variation": ("uniform", 0.0, 0.12),
    "grain_size_vox": ("uniform", 3.0, 10.0),
    "grain_contrast": ("uniform", 0.0, 0.08),
    "texture": ("uniform", 0.0, 0.08),
    "binder_texture": ("uniform", 0.1, 0.5),
    "resolution_um": ("fwhm_vox", 1.0, 5.0),
    "transmission": ("uniform", 0.1, 0.7),
    "photons": ("log", 1000.0, 30000.0),
    "ct_model": ("choice", ("fast", "fbp", "sirt"), (0.75, 0.2, 0.05)),
    "n_angles": ("choice", (30, 60, 90, 180, 360), (0.15, 0.15, 0.2, 0.25, 0.25)),
    "filter_name": ("choice", ("ramp", "shepp-logan", "cosine", "hann"), (0.25, 0.35, 0.2, 0.2)),
    "sirt_iterations": ("int", 8, 30),
    "ring_strength": ("log", 1e-4, 1e-2),
    "cupping": ("uniform", 0.0, 0.15),
    "fov_radius": ("uniform", 0.7, 2.0),
    "axis_offset_vox": ("offset_fraction", 0.4),
    "drift": ("uniform", 0.0, 0.08),
    "bit_depth": ("choice", (8, 16), (0.4, 0.6)),
    "window_margin": ("pair", (-0.02, 0.3), (-0.02, 0.3)),
    "output_range": ("pair", (0.0, 0.15), (0.5, 1.0)),
}
PRESET_RANGES: dict[str, dict[str, Spec]] = {
    "anode": {
        "second_fraction": ("uniform", 0.3, 0.85),
        "second_aspect": ("uniform", 1.5, 4.0),
        "mu_active_2": ("uniform", 0.15, 0.5),
        "mu_binder": ("uniform", 0.15, 0.5),
        "mu_collector": ("uniform", 1.2, 3.0),
    },
    "cathode": {"mu_binder": ("uniform", 0.05, 0.3), "mu_collector": ("uniform", 0.2, 0.6)},
    "nmc-real": {"mu_binder": ("uniform", 0.05, 0.3)},
}


def randomise_params(params: SynthParams, preset: str, rng: np.random.Generator, shape: Sequence[int],
                     spacing_um: Sequence[float]) -> SynthParams:
    """Redraw every parameter that has a range (see :data:`RANGES`).

    Parameters
    ----------
    params : the preset's parameters (values that ``scale`` ranges multiply).
    preset : preset name, for its extra ranges in :data:`PRESET_RANGES`.
    rng : numpy.random.Generator
    shape : (Z, Y, X) of the phantom.
    spacing_um : (3,) voxel size, for resolutions drawn in voxels.
    """
    ranges = {**RANGES, **PRESET_RANGES.get(preset, {})}
    groups = {"microstructure": params.microstructure, "defects": params.defects, "imaging": params.imaging}
    drawn: dict[str, dict[str, Any]] = {name: {} for name in groups}
    for name, spec in ranges.items():
        for group, values in groups.items():
            if hasattr(values, name):
                drawn[group][name] = _draw(spec, getattr(values, name), rng, shape, spacing_um)
    if drawn["imaging"]["ct_model"] != "fast":  # projections rotate about the volume's centre
        drawn["imaging"]["axis_offset_vox"] = (0.0, 0.0)
    return SynthParams(**{group: replace(values, **drawn[group]) for group, values in groups.items()})


def _weighted_choice(options: Sequence[Any], weights: Sequence[float] | np.ndarray, rng: np.random.Generator) -> Any:
    """One of ``options``, drawn with probability proportional to its entry in ``weights``."""
    weights = np.asarray(weights, dtype=float)
    return options[int(rng.choice(len(options), p=weights / weights.sum()))]


def _draw(spec: Spec, current: Any, rng: np.random.Generator, shape: Sequence[int],
          spacing_um: Sequence[float]) -> Any:
    kind = spec[0]
    if kind == "uniform":
        return float(rng.uniform(spec[1], spec[2]))
    if kind == "log":
        return float(math.exp(rng.uniform(math.log(spec[1]), math.log(spec[2]))))
    if kind == "scale":
        return float(current * math.exp(rng.uniform(math.log(spec[1]), math.log(spec[2]))))
    if kind == "int":
        return int(rng.integers(spec[1], spec[2] + 1))
    if kind == "bool":
        return bool(rng.random() < spec[1])
    if kind == "choice":
        return _weighted_choice(spec[1], spec[2], rng)
    if kind == "zero_or":
        return 0.0 if rng.random() < spec[1] else float(rng.uniform(spec[2], spec[3]))
    if kind == "pair":
        return (float(rng.uniform(*spec[1])), float(rng.uniform(*spec[2])))
    if kind == "fwhm_vox":
        return float(rng.uniform(spec[1], spec[2]) * float(np.mean(spacing_um[1:])))
    if kind == "offset_fraction":
        return tuple(float(rng.uniform(-spec[1], spec[1]) * n) for n in shape[1:])
    raise ValueError(f"unknown range kind {kind!r}")
