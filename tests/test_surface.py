"""The sample surface from a scan, read in slabs, and depth below it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from roidetect.surface import (depth_below_surface, empty_layers_um, solid_cut, solid_threshold, surface_from_mask,
                               surface_from_scan, upside_down_message)
from roidetect.volume import Volume

SPACING = (0.1, 0.05, 0.05)


class ReadLog:
    """Wraps an array and records the deepest z-slice read as a slab (single-slice reads are
    the strided intensity subsample, which spans the whole depth by design)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype = array, array.shape, array.dtype
        self.deepest = -1

    def __getitem__(self, key):
        z = key[0] if isinstance(key, tuple) else key
        if isinstance(z, slice):
            self.deepest = max(self.deepest, (z.stop if z.stop is not None else self.shape[0]) - 1)
        return self.array[key]


@pytest.fixture(scope="module")
def scan() -> tuple[np.ndarray, np.ndarray]:
    """Void above a gently undulating surface, noisy solid below, and bright specks in the void."""
    rng = np.random.default_rng(5)
    nz, ny, nx = 96, 48, 40
    y, x = np.mgrid[:ny, :nx]
    top = 20 + 3 * np.sin(y / 9.0) + 2 * np.cos(x / 7.0)
    z = np.arange(nz)[:, None, None]
    image = np.where(z >= top[None], 3000.0, 400.0) + rng.normal(0, 150, (nz, ny, nx))
    specks = rng.random((nz, ny, nx)) < 0.002
    image[specks & (z < top[None] - 3)] = 3500.0
    return np.clip(image, 0, 65535).astype(np.uint16), top.astype(np.float32)


def test_surface_from_scan_follows_the_top(scan):
    image, top = scan
    surface = surface_from_scan(Volume.from_array(image, SPACING), smooth_um=0.3, slab=8)
    assert surface.shape == top.shape and surface.dtype == np.float32
    error_vox = np.abs(surface / SPACING[0] - top)
    assert np.median(error_vox) < 1.0 and error_vox.max() < 2.5


def test_slab_size_does_not_matter(scan):
    image, _ = scan
    volume = Volume.from_array(image, SPACING)
    np.testing.assert_array_equal(surface_from_scan(volume, slab=5), surface_from_scan(volume, slab=200))


def test_reading_stops_once_every_column_has_its_surface(scan):
    image, top = scan
    log = ReadLog(image)
    surface_from_scan(Volume(log, SPACING), slab=8)
    assert log.deepest < top.max() + 16 < image.shape[0]


def test_explicit_threshold_and_empty_scan(scan):
    image, top = scan
    volume = Volume.from_array(image, SPACING)
    assert 0.2 < solid_threshold(volume, 400.0, 3000.0) < 0.8
    surface = surface_from_scan(volume, solid_cut(volume, threshold=0.5), smooth_um=0.3)
    assert np.median(np.abs(surface / SPACING[0] - top)) < 1.0
    constant = Volume.from_array(np.full((8, 8, 8), 7, np.uint8), SPACING)
    empty = surface_from_scan(constant, solid_cut(constant, threshold=2.0))
    assert not empty.any()


def test_solid_top_slice_gives_zero_height():
    image = np.full((16, 12, 12), 200, np.uint8)
    image[:, :, :6] = 10  # half the columns are void all the way down
    surface = surface_from_scan(Volume.from_array(image, SPACING), smooth_um=0.05)
    assert np.all(surface[:, 6:] == 0)


def test_depth_below_mask_surface():
    solid = np.zeros((20, 8, 8), bool)
    solid[5:] = True
    surface = surface_from_mask(solid, SPACING, smooth_um=0.2)
    np.testing.assert_allclose(surface, 0.5)
    depth = depth_below_surface(surface, [5, 15], [0, 7], [0, 7], SPACING)
    np.testing.assert_allclose(depth, [0.0, 1.0])


def test_wide_windows_estimate_the_local_percentile_of_the_exact_filter() -> None:
    from scipy import ndimage

    from roidetect.surface import EXACT_WINDOW, local_percentile

    rng = np.random.default_rng(1)
    n, window = 160, 41
    y, x = np.mgrid[:n, :n]
    top = 20 + 6 * np.sin(y / 23.0) + 4 * np.cos(x / 17.0) + rng.normal(0, 0.5, (n, n))
    drops = rng.random((n, n)) < 0.15  # columns that fall into pores
    height = (top + drops * rng.uniform(2, 15, (n, n))).astype(np.float32)
    sigma = window / 4.0
    exact = ndimage.gaussian_filter(ndimage.percentile_filter(height, 20, size=window, mode="nearest"), sigma,
                                    mode="nearest")
    estimate = ndimage.gaussian_filter(local_percentile(height, 20, (window, window)), sigma, mode="nearest")
    assert estimate.shape == height.shape and estimate.dtype == np.float32
    difference = np.abs(estimate - exact)
    assert difference.mean() < 0.2 and difference.max() < 1.5  # voxels
    # Narrow windows are filtered exactly; a level map stays level whatever the window.
    narrow = (EXACT_WINDOW, 5)
    np.testing.assert_array_equal(local_percentile(height, 20, narrow),
                                  ndimage.percentile_filter(height, 20, size=narrow, mode="nearest"))
    np.testing.assert_allclose(local_percentile(np.full((50, 70), 7.5, np.float32), 20, (401, 401)), 7.5)
    np.testing.assert_allclose(local_percentile(np.full((3, 70), 7.5, np.float32), 20, (2001, 2001)), 7.5)


def test_a_scan_stored_upside_down_is_flagged_and_one_the_right_way_up_is_not(scan, tmp_path):
    image, top = scan  # about 2 um of void above the surface
    right_way = Volume.from_array(image, SPACING)
    first, last = empty_layers_um(right_way)
    assert first == pytest.approx(float(np.median(top)) * SPACING[0], abs=0.2) and last < 0.2
    assert upside_down_message(right_way) is None
    assert upside_down_message(Volume.from_array(np.full_like(image, 3000), SPACING)) is None  # all material
    assert upside_down_message(Volume.from_array(image[40:], SPACING)) is None  # a block inside the coating

    from roidetect.inference import predict
    from roidetect.volume import write_tiff

    flipped = write_tiff(tmp_path / "flipped.tif", image[::-1].copy(), SPACING)
    out = predict(flipped, tmp_path / "pred", model="classical", quiet=True)
    warnings = json.loads((out / "run.json").read_text())["warnings"]
    assert len(warnings) == 1 and "upside down" in warnings[0] and "flipped.tif" in warnings[0]
