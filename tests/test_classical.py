"""The classical baseline: valid probabilities, block-wise = whole, and it finds a phantom's defects."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from roidetect.blockwise import iter_blocks
from roidetect.classical import (ClassicalParams, classical_predict, classical_probabilities, fit_levels,
                                 required_halo)
from roidetect.evaluate import evaluate_arrays
from roidetect.intensity import normalise, robust_range
from roidetect.labels import CRACK, DELAMINATION, PORE

SPACING = (0.05, 0.05, 0.05)


def simple_phantom(seed: int = 0, n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Bright particles in faint binder and dark open pores, with known defects, blurred and noisy.

    Two pores, two cracks (a 2-voxel oblique sheet and a 1-voxel sheet) and a delamination
    (a 2-voxel gap between a particle and the binder shell around it).
    """
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:n, :n, :n].astype(np.float32)
    image = np.zeros((n, n, n), np.float32)
    labels = np.zeros((n, n, n), np.uint8)
    field = ndimage.gaussian_filter(rng.normal(size=(n, n, n)), 4)
    image[field > np.quantile(field, 0.55)] = 0.35  # binder
    centres = [(28, 28, 28, 20), (68, 66, 30, 18), (30, 70, 70, 19), (70, 30, 72, 17)]
    radius = [np.sqrt((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) for cz, cy, cx, _ in centres]
    particles = np.any([d <= r for d, (*_, r) in zip(radius, centres)], axis=0)
    image[particles] = 1.0
    pores = (((z - 24) ** 2 + (y - 30) ** 2 + (x - 26) ** 2 <= 16)
             | ((z - 34) ** 2 + (y - 72) ** 2 + (x - 66) ** 2 <= 25))
    cracks = ((np.abs((z - 68) * 0.8 + (y - 66) * 0.6) <= 1.0) & (radius[1] <= 14)) | (
        (np.abs(x - 76) <= 0.5) & (radius[2] <= 15) & (np.abs(z - 24) < 9))
    cap = z - 70 > 5
    image[(radius[3] > 17) & (radius[3] <= 23) & cap] = 0.35  # binder coating the cap
    gap = (radius[3] > 17) & (radius[3] <= 19) & cap & ~particles
    for mask, cid in ((pores, PORE), (cracks, CRACK), (gap, DELAMINATION)):
        image[mask] = 0.0
        labels[mask] = cid
    image = ndimage.gaussian_filter(image, 1.0) + rng.normal(0, 0.04, image.shape)
    return np.clip(image * 3000 + 500, 0, 65535).astype(np.uint16), labels


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray]:
    return simple_phantom()


def test_probabilities_are_valid(phantom):
    image, _ = phantom
    prob = classical_predict(image[:48, :48, :48], SPACING)
    assert prob.shape == (4, 48, 48, 48) and prob.dtype == np.float32
    assert prob.min() >= 0 and prob.max() <= 1
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-5)


def test_finds_the_defects_of_a_simple_phantom(phantom):
    image, labels = phantom
    result = evaluate_arrays(classical_predict(image, SPACING), labels, spacing_um=SPACING)
    for name in ("pore", "crack", "delamination"):
        assert result["instance"][name]["recall"] >= 0.99, name
        assert result["voxel"][name]["dice"] > 0.4, name
    assert result["instance"]["pore"]["precision"] >= 0.5
    assert result["instance"]["crack"]["precision"] >= 0.5
    assert result["instance"]["any"]["precision"] >= 0.6  # open porosity is not reported


def test_open_porosity_and_plain_material_are_background():
    rng = np.random.default_rng(4)
    field = ndimage.gaussian_filter(rng.normal(size=(64, 64, 64)), 5)
    image = np.where(field > 0, 1.0, 0.0)  # bicontinuous solid and open pores, no defects
    image = ndimage.gaussian_filter(image, 1.0) + rng.normal(0, 0.03, image.shape)
    prob = classical_predict(image.astype(np.float32), SPACING)
    defect = prob[1:].max(axis=0) > prob[0]
    assert defect.mean() < 0.002


def test_blockwise_equals_whole_volume(phantom):
    image, _ = phantom
    lo, hi = robust_range(image)
    params = fit_levels(image, {"max_pore_diameter_um": 0.3}, (lo, hi))
    normalised = normalise(image, lo, hi)
    whole = classical_probabilities(normalised, SPACING, params)
    halo = required_halo(SPACING, params)
    assert 0 < halo < 48
    stitched = np.zeros_like(whole)
    for block in iter_blocks(normalised.shape, 48, halo):
        part = classical_probabilities(normalised[block.padded], SPACING, params)
        stitched[(slice(None), *block.core)] = part[(slice(None), *block.core_in_padded)]
    np.testing.assert_allclose(stitched, whole, atol=1e-5)


def test_params_from_mapping_and_fitted_levels(phantom):
    image, _ = phantom
    params = ClassicalParams.from_mapping({"thin_radius_vox": 3, "void_level": "0.2"})
    assert params.thin_radius_vox == 3 and params.void_level == 0.2
    assert ClassicalParams.from_mapping(None) == ClassicalParams()
    with pytest.raises(ValueError, match="unknown"):
        ClassicalParams.from_mapping({"bogus": 1})
    fitted = fit_levels(image)
    assert 0 < fitted.void_level < fitted.solid_level < 1
    assert required_halo((0.1, 0.1, 0.1)) < required_halo(SPACING)
    flat = fit_levels(np.full((8, 8, 8), 3.0, np.float32))
    assert (flat.void_level, flat.solid_level) == (ClassicalParams().void_level, ClassicalParams().solid_level)


def test_finds_defects_in_synth_phantoms():
    """On cathode phantoms (nano-CT blur of 4.5 voxels, faint binder) the baseline finds a fair
    share of the defects, mostly pores and cracks, and most of what it reports is real."""
    from roidetect.synth import make_phantom

    found = reported = true = 0
    for seed in (0, 1, 2):
        phantom = make_phantom((64, 64, 64), 0.05, seed=seed, preset="cathode")
        result = evaluate_arrays(classical_predict(phantom.image, phantom.spacing_um), phantom.labels,
                                 phantom.instances, spacing_um=phantom.spacing_um)
        found += result["instance"]["any"]["tp"]
        reported += result["instance"]["any"]["predicted"]
        true += result["instance"]["any"]["true"]
    assert found / true >= 0.3
    assert found / reported >= 0.4


@pytest.mark.parametrize("values", [{"void_level": 0.7, "solid_level": 0.6}, {"thin_radius_vox": 0},
                                    {"thin_contrast": -1}, {"smoothing_sigma_vox": -0.5}])
def test_invalid_params_are_rejected(values):
    with pytest.raises(ValueError):
        ClassicalParams.from_mapping(values)
