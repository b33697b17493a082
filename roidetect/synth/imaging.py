"""From a phase map to a CT scan: attenuation, blur, noise, artefacts, grey values.

Attenuation
    Each phase has a relative attenuation; every particle gets its own factor (composition
    and density vary between particles), active particles carry a primary-grain (Voronoi)
    texture and a smooth density variation, graphite a layered texture, and the CBD a fine
    nanoporous one. Enclosed voids (pores, sealed delamination gaps, cracks inside a
    particle) are vacuum even when resin fills the open pores.
    ``transmission`` sets the scale: the mean line integral along x is ``-ln(transmission)``.

Resolution
    A Gaussian point-spread function whose line-spread function, together with each voxel's
    own extent (the partial-volume average over one voxel, a box of variance 1/12 voxel^2),
    has the requested FWHM; so an edge profile of the scan measures ``resolution_um``.

``ct_model="fast"`` (image domain, no projections)
    The artefacts a filtered back-projection would give, computed directly: beam-hardening
    cupping as a bowl ``1 - cupping * sqrt(1 - (r/R)^2)`` around the rotation axis, noise with
    the FBP noise spectrum (power proportional to ``|k| W(k)^2``, independent between slices)
    and the variance that ``photons``, ``n_angles`` and ``transmission`` give, and rings as the
    exact back-projection of the filtered detector-gain errors (constant over angles).

``ct_model="fbp"`` / ``"sirt"`` (projection domain)
    Parallel-beam projections of every slice (:mod:`roidetect.synth.projector`), beam
    hardening ``p - c p^2 / p_max``, detector-gain errors, Poisson counting noise from
    ``photons``, flat-field correction without the gain errors (rings), and reconstruction.

Both models then apply a slow multiplicative drift and map a percentile window to 8- or
16-bit grey values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from roidetect.synth.noise import smooth_noise
from roidetect.synth.params import ImagingParams
from roidetect.synth.phases import ACTIVE, ACTIVE_2, BINDER, COLLECTOR, VOID
from roidetect.synth.projector import fbp, filter_response, filter_window, projector, sirt

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
DEFAULT_RESOLUTION_VOX = 4.48
"""FWHM used when ``resolution_um`` is None: nano-CT's 224 nm at 50 nm voxels."""
_PROJECTION_BLUR_VAR = 1.0 / 3.0
"""Variance (pixel^2) that linear interpolation in projection and back-projection adds."""


def attenuation_map(phases: np.ndarray, particles: np.ndarray, particle_phase: np.ndarray, vacuum: np.ndarray,
                    params: ImagingParams, rng: np.random.Generator) -> np.ndarray:
    """Relative linear attenuation per voxel.

    Parameters
    ----------
    phases : uint8 ndarray, shape (Z, Y, X)
    particles : int ndarray, shape (Z, Y, X)
        Particle id per voxel (0 outside particles).
    particle_phase : ndarray, shape (n_particles + 1,)
    vacuum : bool ndarray, shape (Z, Y, X)
        Voids that stay empty even with resin (enclosed defects).
    params : ImagingParams
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of float32, shape (Z, Y, X)
    """
    lut = np.zeros(max(VOID, ACTIVE, ACTIVE_2, BINDER, COLLECTOR) + 1, dtype=np.float32)
    lut[[VOID, ACTIVE, ACTIVE_2, BINDER, COLLECTOR]] = [params.mu_medium, params.mu_active, params.mu_active_2,
                                                        params.mu_binder, params.mu_collector]
    mu = lut[phases]
    factor = np.clip(1 + params.particle_variation * rng.standard_normal(len(particle_phase)), 0.5, 1.5)
    factor[0] = 1.0
    mu *= factor.astype(np.float32)[particles]
    active, graphite, binder = phases == ACTIVE, phases == ACTIVE_2, phases == BINDER
    if params.grain_contrast > 0 and active.any():
        mu[active] *= 1 + params.grain_contrast * _voronoi_grains(phases.shape, params.grain_size_vox, rng)[active]
    if params.texture > 0 and (active.any() or graphite.any()):
        density = smooth_noise(phases.shape, 2.0 * params.grain_size_vox, rng)
        mu[active] *= 1 + params.texture * density[active]
        if graphite.any():
            layers = smooth_noise(phases.shape, (1.0, 4.0 * params.grain_size_vox, 4.0 * params.grain_size_vox), rng)
            mu[graphite] *= 1 + params.texture * (0.5 * density[graphite] + layers[graphite])
    if params.binder_texture > 0 and binder.any():
        fine = ndimage.gaussian_filter(rng.standard_normal(phases.shape, dtype=np.float32), 0.7)
        fine /= max(float(fine.std()), 1e-6)
        mu[binder] *= np.clip(1 + params.binder_texture * fine[binder], 0.05, None)
    mu[vacuum] = 0.0
    return mu


def _voronoi_grains(shape: Sequence[int], grain_size_vox: float, rng: np.random.Generator) -> np.ndarray:
    """About unit-variance value per Voronoi cell (primary grain), built on a half-resolution grid."""
    coarse = tuple(int(math.ceil(n / 2)) for n in shape)
    density = min(1.0, (2.0 / max(grain_size_vox, 2.0)) ** 3)
    seeds = rng.random(coarse) < density
    if not seeds.any():
        seeds.flat[0] = True
    index = ndimage.distance_transform_edt(~seeds, return_distances=False, return_indices=True)
    values = rng.standard_normal(coarse, dtype=np.float32)[tuple(index)]
    full = values.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)[: shape[0], : shape[1], : shape[2]]
    return ndimage.gaussian_filter(full, 0.6, truncate=2.0)  # soften the 2-voxel steps of the coarse grid


def psf_sigma_vox(params: ImagingParams, spacing_um: Sequence[float], extra_variance: float = 0.0) -> np.ndarray:
    """Gaussian sigma per axis (voxels) that, with the voxel's own extent, gives the requested FWHM."""
    spacing = np.asarray(spacing_um, dtype=float)
    if params.resolution_um is None:
        fwhm_vox = np.full(3, DEFAULT_RESOLUTION_VOX)
    else:
        fwhm_vox = params.resolution_um / spacing
    variance = (fwhm_vox / FWHM_PER_SIGMA) ** 2 - 1.0 / 12.0 - extra_variance
    return np.sqrt(np.clip(variance, 0.0, None))


def ct_scan(mu_rel: np.ndarray, params: ImagingParams, spacing_um: Sequence[float],
            rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Image a relative attenuation map with the CT model in ``params``.

    Parameters
    ----------
    mu_rel : float32 ndarray, shape (Z, Y, X)
        From :func:`attenuation_map`.
    params : ImagingParams
    spacing_um : (3,) voxel size.
    rng : numpy.random.Generator

    Returns
    -------
    image : uint8 or uint16 ndarray, shape (Z, Y, X)
    info : dict
        Derived quantities for the manifest (attenuation scale, PSF sigma, noise level,
        grey-value window).
    """
    z, ny, nx = mu_rel.shape
    mean_path = float(mu_rel.sum(axis=2, dtype=np.float64).mean())
    scale = -math.log(params.transmission) / max(mean_path, 1e-6)
    projection = params.ct_model != "fast"
    sigma = psf_sigma_vox(params, spacing_um, _PROJECTION_BLUR_VAR if projection else 0.0)
    mu = ndimage.gaussian_filter(mu_rel * np.float32(scale), sigma, mode="nearest")
    info: dict[str, Any] = {"attenuation_per_voxel": scale, "psf_sigma_vox": [round(float(s), 4) for s in sigma]}
    if params.fringe_strength[1] > 0:
        mu = _with_fringes(mu, params, rng, info)
    if projection:
        mu = _projection_model(mu, params, rng, info)
    else:
        mu = _image_domain_model(mu, params, rng, info)
    if params.drift > 0:
        slow = smooth_noise(mu.shape, (max(z / 3.0, 2.0), 2.0 * ny, 2.0 * nx), rng)
        mu *= 1 + np.float32(params.drift) * slow
    image, window = _to_grey(mu, params)
    info["window"] = window
    return image, info


def _with_fringes(mu: np.ndarray, params: ImagingParams, rng: np.random.Generator,
                  info: dict[str, Any]) -> np.ndarray:
    """:func:`phase_fringes` of a strength drawn from ``params.fringe_strength``."""
    low, high = params.fringe_strength
    strength = float(rng.uniform(low, high)) if high > low else float(low)
    info["fringe_strength_used"] = round(strength, 4)
    return phase_fringes(mu, strength, params.fringe_sigma_vox)


def phase_fringes(values: np.ndarray, strength: float, sigma_vox: float) -> np.ndarray:
    """Propagation phase-contrast fringes to first order: ``v + k (v - G v)`` (float32).

    ``G`` is a Gaussian of ``sigma_vox`` voxels (edges repeated): a bright fringe inside and a
    dark one outside every edge, as a reconstruction without phase retrieval shows.
    """
    values = np.asarray(values, dtype=np.float32)
    smooth = ndimage.gaussian_filter(values, sigma_vox, mode="nearest")
    return values + np.float32(strength) * (values - smooth)


# ---------------------------------------------------------------------------- image-domain model


def _image_domain_model(mu: np.ndarray, params: ImagingParams, rng: np.random.Generator,
                        info: dict[str, Any]) -> np.ndarray:
    z, ny, nx = mu.shape
    axis = np.array([(ny - 1) / 2 + params.axis_offset_vox[0], (nx - 1) / 2 + params.axis_offset_vox[1]])
    radius = np.hypot(*np.meshgrid(np.arange(ny) - axis[0], np.arange(nx) - axis[1], indexing="ij"))
    if params.cupping > 0:
        fov = params.fov_radius * max(ny, nx) / 2
        mu *= 1 - np.float32(params.cupping) * np.sqrt(np.clip(1 - (radius / fov) ** 2, 0, 1)).astype(np.float32)
    noise_sigma = fbp_noise_sigma(params.photons, params.n_angles, params.transmission, params.filter_name)
    mu += np.float32(noise_sigma) * _fbp_noise_texture(mu.shape, params.filter_name, rng)
    if params.ring_strength > 0:
        gains = _detector_gains((z, 2 * int(math.ceil(radius.max())) + 3), params.ring_strength, rng)
        mu += _ring_image(-np.log(gains), radius, params.filter_name)
    info["noise_sigma_per_voxel"] = noise_sigma
    return mu


def fbp_noise_sigma(photons: float, n_angles: int, transmission: float, filter_name: str) -> float:
    """Standard deviation of FBP noise (attenuation per voxel) from counting statistics.

    The log-transformed projections have variance ``1 / (photons * transmission)``; filtered
    back-projection over ``n_angles`` gives the 2D noise power spectrum
    ``S(k) = (pi / n_angles) var |k| W(k)^2 sinc(k)^4`` (window ``W``; ``sinc^4`` from linear
    interpolation in projection and back-projection), integrated here over ``|k| <= 1/2``.
    """
    k = np.linspace(0, 0.5, 2001)
    spectrum = k * filter_window(k, filter_name) ** 2 * np.sinc(k) ** 4
    radial = np.sum(spectrum * 2 * math.pi * k) * (k[1] - k[0])
    variance = math.pi / n_angles / (photons * transmission) * radial
    return math.sqrt(variance)


def _fbp_noise_texture(shape: tuple[int, ...], filter_name: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance noise with the FBP spectrum in each (y, x) slice, independent between slices."""
    _, ny, nx = shape
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.rfftfreq(nx)[None, :]
    k = np.hypot(ky, kx)
    power = np.where(k <= 0.5, k * filter_window(k, filter_name) ** 2 * np.sinc(k) ** 4, 0.0)
    full_grid_mean = (power.sum() + power[:, 1:(nx + 1) // 2].sum()) / (ny * nx)
    amplitude = np.sqrt(power / max(full_grid_mean, 1e-12)).astype(np.float32)
    white = rng.standard_normal(shape, dtype=np.float32)
    return np.fft.irfft2(np.fft.rfft2(white) * amplitude, s=(ny, nx)).astype(np.float32)


def _detector_gains(shape: tuple[int, int], strength: float, rng: np.random.Generator) -> np.ndarray:
    """Relative gain of each detector pixel (row z, bin u): per-pixel scatter, column streaks
    that persist over many rows (scintillator defects), and a few bad pixels."""
    if strength <= 0:
        return np.ones(shape, dtype=np.float32)
    rows, bins = shape
    columns = smooth_noise(shape, (max(rows / 4.0, 1.0), 0.5), rng)
    pixels = rng.standard_normal(shape, dtype=np.float32)
    bad = (rng.random(shape) < 0.005) * rng.standard_normal(shape).astype(np.float32) * 5
    return np.clip(1 + strength * (0.7 * columns + 0.5 * pixels + bad), 0.05, None).astype(np.float32)


def _ring_image(offset: np.ndarray, radius: np.ndarray, filter_name: str) -> np.ndarray:
    """FBP of a sinogram offset that is the same at every angle: rings around the axis.

    Parameters
    ----------
    offset : ndarray, shape (Z, n_det)
        Error of the log projections per detector row and bin.
    radius : ndarray, shape (Y, X)
        Distance of each pixel from the rotation axis.

    Returns
    -------
    ndarray of float32, shape (Z, Y, X)
    """
    z, n_det = offset.shape
    n = 1 << int(math.ceil(math.log2(2 * n_det)))
    response = filter_response(n, filter_name)
    filtered = np.fft.irfft(np.fft.rfft(offset, n=n, axis=1) * response, n=n, axis=1)[:, :n_det]
    # pi * mean over theta of q(centre + r cos(theta)), tabulated at half-pixel radii
    radii = np.arange(0, radius.max() + 1.5, 0.5)
    thetas = np.linspace(0, math.pi, 2 * n_det, endpoint=False)
    positions = (n_det - 1) / 2 + radii[:, None] * np.cos(thetas)[None, :]
    low = np.clip(np.floor(positions).astype(int), 0, n_det - 2)
    frac = np.clip(positions - low, 0, 1)
    table = np.zeros((len(radii), n_det))
    rows = np.repeat(np.arange(len(radii)), len(thetas))
    np.add.at(table, (rows, low.ravel()), (1 - frac).ravel())
    np.add.at(table, (rows, low.ravel() + 1), frac.ravel())
    table *= math.pi / len(thetas)
    profile = (filtered @ table.T).astype(np.float32)             # (Z, n_radii)
    position = radius / 0.5
    index = np.clip(np.floor(position).astype(int), 0, len(radii) - 2)
    weight = (position - index).astype(np.float32)
    return profile[:, index] * (1 - weight) + profile[:, index + 1] * weight


# ---------------------------------------------------------------------------- projection model


def _projection_model(mu: np.ndarray, params: ImagingParams, rng: np.random.Generator,
                      info: dict[str, Any]) -> np.ndarray:
    z, ny, nx = mu.shape
    proj = projector(ny, nx, params.n_angles)
    gains = _detector_gains((z, proj.n_det), params.ring_strength, rng)
    sinogram = proj.forward(mu)                                    # (n_angles, n_det, Z)
    if params.cupping > 0:  # -> a central drop of `cupping` after reconstruction
        peak = max(float(sinogram.max()), 1e-6)
        sinogram -= np.float32(params.cupping * math.pi / 4 / peak) * sinogram**2
    expected = params.photons * gains.T[None] * np.exp(-sinogram)
    counts = rng.poisson(expected).astype(np.float32)
    measured = -np.log(np.maximum(counts, 0.5) / np.float32(params.photons))
    if params.ct_model == "fbp":
        recon = fbp(measured, proj, params.filter_name)
    else:
        recon = sirt(measured, proj, params.sirt_iterations)
    info["detector_bins"] = proj.n_det
    info["noise_sigma_per_voxel"] = fbp_noise_sigma(params.photons, params.n_angles, params.transmission,
                                                    params.filter_name)
    return recon


# ---------------------------------------------------------------------------- grey values


def _to_grey(mu: np.ndarray, params: ImagingParams) -> tuple[np.ndarray, list[float]]:
    """Map the [0.2, 99.8] percentile window (plus margins) to the output range and quantise."""
    sample = mu.ravel()[:: max(1, mu.size // 400_000)]
    lo, hi = (float(v) for v in np.percentile(sample, [0.2, 99.8]))
    span = max(hi - lo, 1e-9)
    lo -= params.window_margin[0] * span
    hi += params.window_margin[1] * span
    top = 255 if params.bit_depth == 8 else 65535
    out_lo, out_hi = (f * top for f in params.output_range)
    grey = (mu - np.float32(lo)) * np.float32((out_hi - out_lo) / max(hi - lo, 1e-9)) + np.float32(out_lo)
    np.clip(grey, 0, top, out=grey)
    dtype = np.uint8 if params.bit_depth == 8 else np.uint16
    return np.rint(grey).astype(dtype), [lo, hi]
