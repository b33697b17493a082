"""CT model of the phantoms: resolution, projector and reconstruction, noise, rings, cupping, grey values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from roidetect.synth.imaging import ct_scan, fbp_noise_sigma
from roidetect.synth.params import ImagingParams
from roidetect.synth.projector import fbp, projector, sirt

SPACING = (0.05, 0.05, 0.05)
CLEAN = ImagingParams(ring_strength=0.0, cupping=0.0, drift=0.0, photons=1e12, window_margin=(0.0, 0.0),
                      filter_name="ramp")


def _disc(shape=(8, 64, 64), radius=25.0, centre=None):
    _, ny, nx = shape
    cy, cx = centre or ((ny - 1) / 2, (nx - 1) / 2)
    y, x = np.mgrid[:ny, :nx]
    mu = np.zeros(shape, dtype=np.float32)
    mu[:, (y - cy) ** 2 + (x - cx) ** 2 < radius**2] = 1.0
    return mu


def _to_attenuation(image, info, params):
    lo, hi = info["window"]
    top = 255 if params.bit_depth == 8 else 65535
    out_lo, out_hi = (f * top for f in params.output_range)
    return lo + (image.astype(float) - out_lo) * (hi - lo) / (out_hi - out_lo)


def _edge_fwhm(profile):
    """FWHM (samples) of the derivative of an edge profile, with linear interpolation."""
    d = np.abs(np.diff(profile))
    i = int(np.argmax(d))
    half = d[i] / 2
    left, right = i, i
    while d[left] > half:
        left -= 1
    while d[right] > half:
        right += 1
    upper = right - 1 + (d[right - 1] - half) / (d[right - 1] - d[right])
    lower = left + (half - d[left]) / (d[left + 1] - d[left])
    return upper - lower


@pytest.mark.parametrize("ct_model", ["fast", "fbp"])
@pytest.mark.parametrize("fwhm_vox", [3.0, 5.0])
def test_edge_profile_has_the_requested_resolution(ct_model, fwhm_vox):
    params = dataclasses.replace(CLEAN, resolution_um=fwhm_vox * SPACING[0], ct_model=ct_model, n_angles=360)
    image, _ = ct_scan(_disc(), params, SPACING, np.random.default_rng(0))
    profile = image[:, 31:33, :32].astype(float).mean(axis=(0, 1))
    assert _edge_fwhm(profile) == pytest.approx(fwhm_vox, rel=0.1)


def test_fbp_and_sirt_recover_attenuation():
    mu = 0.01 * _disc((4, 48, 48), radius=18)
    proj = projector(48, 48, 180)
    sinogram = proj.forward(mu)
    assert sinogram.shape == (180, proj.n_det, 4)
    assert sinogram.max() == pytest.approx(0.01 * 36, rel=0.05)
    assert fbp(sinogram, proj)[:, 20:28, 20:28].mean() == pytest.approx(0.01, rel=0.02)
    assert sirt(sinogram, proj, 40)[:, 20:28, 20:28].mean() == pytest.approx(0.01, rel=0.05)
    assert abs(fbp(sinogram, proj)[:, :3, :3]).max() < 1e-3


def test_back_projection_is_the_adjoint_of_projection():
    proj = projector(24, 20, 30)
    rng = np.random.default_rng(0)
    volume = rng.random((3, 24, 20), dtype=np.float32)
    sinogram = rng.random((30, proj.n_det, 3), dtype=np.float32)
    assert np.vdot(proj.forward(volume), sinogram) == pytest.approx(np.vdot(volume, proj.back(sinogram)), rel=1e-4)


def test_fast_model_noise_follows_photon_statistics():
    params = dataclasses.replace(CLEAN, photons=2000.0, n_angles=180, resolution_um=0.05)
    mu = np.ones((16, 64, 64), dtype=np.float32)
    image, info = ct_scan(mu, params, SPACING, np.random.default_rng(1))
    noise = _to_attenuation(image, info, params).std()
    assert info["noise_sigma_per_voxel"] == pytest.approx(fbp_noise_sigma(2000.0, 180, params.transmission, "ramp"))
    assert noise == pytest.approx(info["noise_sigma_per_voxel"], rel=0.1)
    fewer = fbp_noise_sigma(500.0, 180, params.transmission, "ramp")
    assert fewer == pytest.approx(2 * info["noise_sigma_per_voxel"], rel=1e-6)


def test_projection_model_noise_is_of_the_predicted_size():
    params = dataclasses.replace(CLEAN, photons=2000.0, n_angles=180, ct_model="fbp")
    image, info = ct_scan(_disc((8, 64, 64), radius=28), params, SPACING, np.random.default_rng(2))
    noise = _to_attenuation(image, info, params)[:, 24:40, 24:40].std()
    assert 0.8 < noise / info["noise_sigma_per_voxel"] < 2.0


def test_rings_are_centred_on_the_rotation_axis():
    params = dataclasses.replace(CLEAN, ring_strength=0.01, axis_offset_vox=(6.5, -3.5))
    mu = np.ones((4, 64, 64), dtype=np.float32)
    image, info = ct_scan(mu, params, SPACING, np.random.default_rng(3))
    values = _to_attenuation(image, info, params)[0]
    cy, cx = 38, 28  # the rotation axis: centre (31.5, 31.5) + offset
    radii = np.arange(1, 22)
    along_y, along_x = values[cy + radii, cx], values[cy, cx - radii]
    resolution = (info["window"][1] - info["window"][0]) / (0.75 * 65535)
    np.testing.assert_allclose(along_y, along_x, rtol=1e-4, atol=2 * resolution)
    assert along_y.std() > 20 * resolution


def test_cupping_is_a_bowl_around_the_axis():
    params = dataclasses.replace(CLEAN, cupping=0.1, fov_radius=1.0)
    mu = np.ones((4, 64, 64), dtype=np.float32)
    image, info = ct_scan(mu, params, SPACING, np.random.default_rng(4))
    values = _to_attenuation(image, info, params)[0]
    y, x = np.mgrid[:64, :64]
    bowl = np.sqrt(np.clip(1 - (np.hypot(y - 31.5, x - 31.5) / 32) ** 2, 0, 1))
    expected = 1 - 0.1 * bowl
    np.testing.assert_allclose(values / values.max(), expected / expected.max(), atol=1e-3)


@pytest.mark.parametrize("bit_depth, dtype", [(8, np.uint8), (16, np.uint16)])
def test_grey_values_fill_the_requested_range(bit_depth, dtype):
    params = dataclasses.replace(CLEAN, bit_depth=bit_depth, output_range=(0.1, 0.9), resolution_um=0.05)
    image, _ = ct_scan(_disc(), params, SPACING, np.random.default_rng(5))
    top = np.iinfo(dtype).max
    assert image.dtype == dtype
    assert image.min() == pytest.approx(0.1 * top, abs=0.01 * top)
    assert image.max() == pytest.approx(0.9 * top, abs=0.01 * top)


def test_phase_contrast_fringes_overshoot_both_sides_of_an_edge():
    params = dataclasses.replace(CLEAN, resolution_um=2.0 * SPACING[0], window_margin=(0.3, 0.3))
    plain, plain_info = ct_scan(_disc(), params, SPACING, np.random.default_rng(0))
    fringed, info = ct_scan(_disc(), dataclasses.replace(params, fringe_strength=(1.0, 1.0)), SPACING,
                            np.random.default_rng(0))
    assert info["fringe_strength_used"] == 1.0
    inside, outside = _disc(radius=22.0)[0] > 0, _disc(radius=28.0)[0] == 0  # well away from the edge
    edge = ~inside & ~outside
    a, b = (_to_attenuation(im, i, params).mean(axis=0) for im, i in ((plain, plain_info), (fringed, info)))
    assert abs(b[inside].mean() - a[inside].mean()) < 0.05 * (a[inside].mean() - a[outside].mean())
    assert b[edge].max() > a[inside].max() and b[edge].min() < a[outside].min()  # bright and dark fringes
    drawn = {ct_scan(_disc(), dataclasses.replace(params, fringe_strength=(0.5, 2.0)), SPACING,
                     np.random.default_rng(seed))[1]["fringe_strength_used"] for seed in range(4)}
    assert len(drawn) == 4 and all(0.5 <= k <= 2.0 for k in drawn)
