"""A training-free baseline segmenter: thresholds, morphology and local context (pure numpy).

Input is a scan block normalised by :mod:`roidetect.intensity` (voids near 0, bright active
material near 1, the carbon-binder domain in between). Output is soft class probabilities
(background, pore, crack, delamination) that sum to 1 and that
:func:`roidetect.detect.detect` turns into detections like a network's.

The method (``docs/detection.md``), on the block smoothed with a small Gaussian:

1. *phases*: a grey closing with a cube of ``2 * thin_radius_vox + 1`` voxels fills thin dark
   gaps; on the closed image, *particle* is ``>= solid_level`` and *thick void* is
   ``< void_level``; *binder* is what lies between, minus steep voxels (the blurred edges of
   particles and pores are grey too, but steep), cleaned by an opening;
2. *thin darkness*: the black top-hat (closed minus image) as a fraction of the way down to
   the void level, scaled by ``thin_contrast``: thin gaps whose centre never reaches the
   void level after blurring still stand out;
3. *enclosed voids*: dark components (below the level midway between void and solid,
   6-connected) no wider than the largest pore (``max_pore_diameter_um``, but at least
   ``max_pore_diameter_floor_vox`` voxels), not cut by the block's edge, whose
   2-voxel shell is mostly particle;
4. *void inside a particle* = the larger of (darkness x enclosed) and (thin darkness x
   *inside*), where inside means a window of ``2 * context_radius_vox + 1`` voxels that is
   mostly particle, with no binder and no open void;
5. the 26-connected components of voxels at least half *inside* are split by shape:
   round ones (minor/middle principal-axis ratio above ~0.45, no wider than the largest
   pore) are **pores**, flat or larger ones **cracks**;
6. **delamination**: thin darkness where the window holds both particle and binder (a gap
   at the particle/binder interface) and no open void;
7. everything else, including the open pore space between particles, is background.

Every output voxel depends only on input voxels within :func:`required_halo`, so processing
a scan block by block with that halo equals processing it whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage

from roidetect.intensity import IntensityLevels, intensity_levels, normalise, sample_voxels
from roidetect.labels import NUM_CLASSES

_GRADIENT_SIGMA_VOX = 1.0
"""Scale of the gradient that tells steep edges from flat binder, in voxels."""


@dataclass(frozen=True)
class ClassicalParams:
    """Settings of the classical baseline (intensities in normalised units).

    Attributes
    ----------
    void_level : float
        Below this (on the closed image) a voxel is open void.
    solid_level : float
        At or above this a voxel is active particle; between the two, binder or an edge.
    smoothing_sigma_vox : float
        Gaussian denoising before anything else, in voxels.
    thin_radius_vox : int
        Half-width of the thin-feature detector: gaps up to about ``2 r + 1`` voxels wide
        count as thin (cracks and delamination are resolution-limited, so this is in voxels).
    thin_contrast : float
        Depth of a thin dark dip, as a fraction of the way from its surroundings down to the
        void level, that counts as fully dark.
    binder_opening_vox : int
        Radius of the opening that cleans the binder phase, voxels.
    binder_max_gradient : float
        Grey voxels steeper than this (gradient magnitude per voxel, relative to
        ``solid_level - void_level``) are edges, not binder.
    max_pore_diameter_um : float
        Largest enclosed void called a pore, in micrometres (it bounds the halo).
    max_pore_diameter_floor_vox : int
        ... but never fewer voxels than this, so that pores stay visible as such in coarse
        scans (where 0.8 um is only a voxel or two).
    context_radius_vox : int
        Half-width of the window over which particle/binder/void fractions are measured.
    """

    void_level: float = 0.25
    solid_level: float = 0.6
    smoothing_sigma_vox: float = 0.7
    thin_radius_vox: int = 2
    thin_contrast: float = 0.4
    binder_opening_vox: int = 1
    binder_max_gradient: float = 0.1
    max_pore_diameter_um: float = 0.8
    max_pore_diameter_floor_vox: int = 12
    context_radius_vox: int = 3

    def __post_init__(self) -> None:
        if not self.void_level < self.solid_level:
            raise ValueError(f"void_level {self.void_level} must be below solid_level {self.solid_level}")
        positive = {"thin_radius_vox": self.thin_radius_vox, "thin_contrast": self.thin_contrast,
                    "binder_max_gradient": self.binder_max_gradient, "max_pore_diameter_um": self.max_pore_diameter_um,
                    "max_pore_diameter_floor_vox": self.max_pore_diameter_floor_vox,
                    "context_radius_vox": self.context_radius_vox}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.smoothing_sigma_vox < 0 or self.binder_opening_vox < 0:
            raise ValueError("smoothing_sigma_vox and binder_opening_vox must be >= 0")

    @classmethod
    def from_mapping(cls, values: ClassicalParams | Mapping[str, Any] | None) -> ClassicalParams:
        """Build from a mapping (e.g. a Hydra config node); unknown keys are errors."""
        if values is None:
            return cls()
        if isinstance(values, ClassicalParams):
            return values
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown classical parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{k: type(getattr(cls(), k))(v) for k, v in values.items()})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_levels(volume: Any, params: ClassicalParams | Mapping[str, Any] | None = None,
               levels: Sequence[Any] | None = None) -> ClassicalParams:
    """Set ``void_level`` and ``solid_level`` from a scan's histogram (three-class Otsu).

    Parameters
    ----------
    volume : array-like or Volume, shape (Z, Y, X)
        Read through a strided subsample (:func:`roidetect.intensity.sample_voxels`).
    params : ClassicalParams or mapping, optional
        Other settings to keep.
    levels : IntensityLevels or (lo, hi), optional
        The scan's normalisation (:func:`roidetect.intensity.intensity_levels`); computed
        when omitted. Voxels at its fill value are left out of the histogram.

    Returns
    -------
    ClassicalParams
        With the two levels in normalised units. A histogram without three separable
        phases keeps the default levels.
    """
    from skimage.filters import threshold_multiotsu

    params = ClassicalParams.from_mapping(params)
    lo, hi, fill = IntensityLevels(*levels) if levels is not None else intensity_levels(volume)
    values = np.clip(normalise(sample_voxels(volume, exclude=fill), lo, hi), -0.5, 1.5)
    try:
        void_level, solid_level = (float(t) for t in threshold_multiotsu(values, classes=3))
    except ValueError:
        return params
    if not 0.0 < void_level < solid_level < 1.0:
        return params
    return replace(params, void_level=void_level, solid_level=solid_level)


def required_halo(spacing_um: Sequence[float], params: ClassicalParams | Mapping[str, Any] | None = None) -> int:
    """Voxels of context each side of a block for block-wise output to equal whole-volume output.

    The chain of neighbourhoods, in voxels: smoothing, then the closing (2 r) or the
    gradient; enclosed voids need their whole component and its 2-voxel shell; the binder
    phase depends on those and on its opening; the context window adds its radius; the
    shape of an "inside" component needs the whole component (at most the largest pore
    wide, else it is a crack anyway), plus one voxel for its neighbours.
    """
    p = ClassicalParams.from_mapping(params)
    pore = _max_pore_diameter_vox(spacing_um, p)
    smooth = _gaussian_radius(p.smoothing_sigma_vox)
    closed = smooth + 2 * p.thin_radius_vox
    steep = smooth + _gaussian_radius(_GRADIENT_SIGMA_VOX)
    enclosed = closed + pore + 3
    binder = max(closed, steep, enclosed) + 2 * p.binder_opening_vox
    inside = max(binder, enclosed) + p.context_radius_vox
    return int(inside + pore + 2)


def classical_probabilities(block: np.ndarray, spacing_um: Sequence[float],
                            params: ClassicalParams | Mapping[str, Any] | None = None) -> np.ndarray:
    """Soft class probabilities of a normalised scan block.

    Parameters
    ----------
    block : ndarray, shape (Z, Y, X), float
        Normalised intensities (voids near 0, particles near 1), including the halo of
        :func:`required_halo` where the block lies inside a larger scan.
    spacing_um : (3,) floats
        Voxel size z, y, x in micrometres.
    params : ClassicalParams or mapping, optional

    Returns
    -------
    ndarray of float32, shape (4, Z, Y, X)
        Background, pore, crack and delamination probabilities, summing to 1 per voxel.
    """
    p = ClassicalParams.from_mapping(params)
    image = ndimage.gaussian_filter(np.asarray(block, dtype=np.float32), p.smoothing_sigma_vox)
    size = 2 * p.thin_radius_vox + 1
    closed = ndimage.grey_closing(image, size=(size,) * 3)  # the image with its thin dark gaps filled
    span = max(p.solid_level - p.void_level, 1e-6)
    depth = (closed - image) / np.maximum(closed - p.void_level, 0.05)  # dip as a fraction of the way to void
    thin = np.clip(depth / max(p.thin_contrast, 1e-6), 0.0, 1.0)
    darkness = np.clip((p.solid_level - image) / span, 0.0, 1.0)

    particle = closed >= p.solid_level
    enclosed = _enclosed_voids(image < 0.5 * (p.void_level + p.solid_level), particle, spacing_um, p)
    open_void = (closed < p.void_level) & (enclosed < 0.5)
    steep = ndimage.gaussian_gradient_magnitude(image, _GRADIENT_SIGMA_VOX) > p.binder_max_gradient * span
    binder = ndimage.binary_opening(~particle & ~open_void & ~steep & (enclosed < 0.5), _ball(p.binder_opening_vox))

    window = 2 * p.context_radius_vox + 1
    near_particle = ndimage.uniform_filter(particle.astype(np.float32), window)
    near_binder = ndimage.uniform_filter(binder.astype(np.float32), window)
    near_void = ndimage.uniform_filter(open_void.astype(np.float32), window)
    inside_particle = (_ramp(near_particle, 0.6, 0.85) * (1.0 - _ramp(near_binder, 0.03, 0.15))
                       * (1.0 - _ramp(near_void, 0.02, 0.1)))
    at_interface = (_ramp(near_particle, 0.05, 0.2) * _ramp(near_binder, 0.1, 0.3)
                    * (1.0 - _ramp(near_void, 0.15, 0.35)))

    inside = np.maximum(darkness * enclosed, thin * inside_particle)
    round_ = _roundness(inside >= 0.5, spacing_um, p)
    scores = np.zeros((NUM_CLASSES, *image.shape), dtype=np.float32)
    scores[1] = inside * round_
    scores[2] = inside * (1.0 - round_)
    scores[3] = thin * at_interface * (1.0 - inside)
    total = scores[1:].sum(axis=0)
    scores[1:] /= np.maximum(total, 1.0)
    scores[0] = 1.0 - scores[1:].sum(axis=0)
    return scores


def classical_predict(volume: Any, spacing_um: Sequence[float],
                      params: ClassicalParams | Mapping[str, Any] | None = None, fit: bool = True) -> np.ndarray:
    """Whole-volume classical probabilities (for tests and small scans).

    Parameters
    ----------
    volume : array-like, shape (Z, Y, X)
        Raw intensities; normalised here (:func:`roidetect.intensity.intensity_levels`).
    spacing_um : (3,) floats
    params : ClassicalParams or mapping, optional
    fit : bool
        Fit the phase levels to this volume's histogram (:func:`fit_levels`).

    Returns
    -------
    ndarray of float32, shape (4, Z, Y, X)
    """
    array = np.asarray(volume)
    levels = intensity_levels(array)
    params = fit_levels(array, params, levels) if fit else ClassicalParams.from_mapping(params)
    return classical_probabilities(normalise(array, *levels), spacing_um, params)


# ------------------------------------------------------------------ the pieces


def _enclosed_voids(dark: np.ndarray, particle: np.ndarray, spacing_um: Sequence[float],
                    p: ClassicalParams) -> np.ndarray:
    """0..1 on dark components enclosed in particle, 0 elsewhere.

    A component (6-connected) counts when it is no wider than the largest pore and does not
    reach the block's edge; its value is a ramp in the particle fraction of its 2-voxel shell.
    """
    labels, count = ndimage.label(dark, structure=ndimage.generate_binary_structure(3, 1))
    small = _small_components(labels, count, _max_pore_diameter_vox(spacing_um, p), exclude_edge=True)
    candidates = np.where(small[labels], labels, 0)
    if not candidates.any():
        return np.zeros(dark.shape, dtype=np.float32)
    grown = ndimage.grey_dilation(candidates, size=(5, 5, 5))
    shell = (grown > 0) & ~dark
    total = np.bincount(grown[shell], minlength=count + 1)
    solid = np.bincount(grown[shell], weights=particle[shell], minlength=count + 1)
    fraction = np.where(total > 0, solid / np.maximum(total, 1), 0.0)
    return (_ramp(fraction, 0.6, 0.85) * small)[labels].astype(np.float32)


def _roundness(mask: np.ndarray, spacing_um: Sequence[float], p: ClassicalParams) -> np.ndarray:
    """Per voxel, how round its 26-connected component of ``mask`` is (1 round, 0 flat).

    Components wider than the largest pore are flat (cracks); the others ramp from 0 to 1 as
    their minor/middle principal-axis ratio goes from 0.35 to 0.55 (pores are ellipsoids
    with axes within about 25 % of each other; a crack's ratio is a few tenths at most).
    Voxels outside ``mask`` take the value of the component next to them (else 1).
    """
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return np.ones(mask.shape, dtype=np.float32)
    small = _small_components(labels, count, _max_pore_diameter_vox(spacing_um, p), exclude_edge=False)
    value = _ramp(_flatness(labels, count, spacing_um), 0.35, 0.55) * small
    value[0] = 1.0
    per_voxel = value[labels].astype(np.float32)
    nearby = ndimage.grey_dilation(labels, size=(3, 3, 3))
    outside = labels == 0
    per_voxel[outside] = value[nearby[outside]]
    return per_voxel


def _small_components(labels: np.ndarray, count: int, largest: int, exclude_edge: bool) -> np.ndarray:
    """(count + 1,) bool: components no wider than ``largest`` voxels along any axis
    (and, with ``exclude_edge``, not touching the array's edge); index 0 is False."""
    small = np.zeros(count + 1, dtype=bool)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        touches_edge = exclude_edge and any(s.start == 0 or s.stop == n for s, n in zip(box, labels.shape))
        small[index] = not touches_edge and max(s.stop - s.start for s in box) <= largest
    return small


def _flatness(labels: np.ndarray, count: int, spacing_um: Sequence[float]) -> np.ndarray:
    """Minor/middle principal-axis ratio of each labelled component (index 0..count)."""
    index = np.nonzero(labels)
    owner = labels[index]
    points = np.stack(index, axis=1).astype(np.float64) * np.asarray(spacing_um, dtype=float)
    n = np.maximum(np.bincount(owner, minlength=count + 1), 1).astype(float)
    mean = np.stack([np.bincount(owner, points[:, i], count + 1) for i in range(3)], axis=1) / n[:, None]
    covariance = np.empty((count + 1, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            moment = np.bincount(owner, points[:, i] * points[:, j], count + 1) / n - mean[:, i] * mean[:, j]
            covariance[:, i, j] = covariance[:, j, i] = moment
    covariance += np.diag(np.asarray(spacing_um, dtype=float) ** 2 / 12.0)  # voxels are cubes, not points
    eigen = np.linalg.eigvalsh(covariance)
    return np.sqrt(np.clip(eigen[:, 0], 0.0, None) / np.maximum(eigen[:, 1], 1e-18))


def _ramp(values: np.ndarray, start: float, stop: float) -> np.ndarray:
    """0 below ``start``, 1 above ``stop``, linear in between."""
    return np.clip((values - start) / (stop - start), 0.0, 1.0).astype(np.float32)


def _ball(radius: int) -> np.ndarray:
    r = int(radius)
    z, y, x = np.ogrid[-r:r + 1, -r:r + 1, -r:r + 1]
    return (z * z + y * y + x * x) <= r * r


def _gaussian_radius(sigma: float) -> int:
    """Reach of :func:`scipy.ndimage.gaussian_filter` (truncate = 4)."""
    return int(4.0 * float(sigma) + 0.5)


def _max_pore_diameter_vox(spacing_um: Sequence[float], p: ClassicalParams) -> int:
    """The largest pore in voxels: ``max_pore_diameter_um`` at the finest voxel size, floored."""
    finest = min(float(s) for s in spacing_um)
    return max(p.max_pore_diameter_floor_vox, int(math.ceil(p.max_pore_diameter_um / finest)))
