"""Intensity normalisation: robust range, and the fill value outside the field of view."""

from __future__ import annotations

import numpy as np
import pytest

from roidetect.intensity import (FEW_GREY_VALUES, few_grey_values, fill_is_outside_view, find_fill, intensity_levels,
                                 invert, normalise, robust_range)


def scan(shape: tuple[int, int, int] = (32, 64, 64), seed: int = 0) -> np.ndarray:
    """Voids (~5000), binder (~11000) and particles (~30000) with noise; uint16."""
    rng = np.random.default_rng(seed)
    phase = rng.choice([5000.0, 11000.0, 30000.0], size=shape, p=[0.3, 0.2, 0.5])
    return np.clip(phase + rng.normal(0, 800, shape), 0, 65535).astype(np.uint16)


def outside_circle(shape: tuple[int, int, int]) -> np.ndarray:
    """(Y, X) mask of the corners outside the inscribed circle of each slice."""
    _, ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    return (y - (ny - 1) / 2) ** 2 + (x - (nx - 1) / 2) ** 2 > (min(ny, nx) / 2) ** 2


@pytest.mark.parametrize("fill", [0, 1000])
def test_a_reconstruction_mask_is_found_and_leaves_the_range_alone(fill: int) -> None:
    image = scan()
    masked = image.copy()
    masked[:, outside_circle(image.shape)] = fill
    inside = image[:, ~outside_circle(image.shape)][None]  # (1, Z, N)

    levels = intensity_levels(masked)
    assert levels.fill == fill
    lo, hi = robust_range(inside)
    assert abs(levels.lo - lo) < 0.01 * (hi - lo) and abs(levels.hi - hi) < 0.01 * (hi - lo)
    # without the fill value the mask would set the low percentile
    assert intensity_levels(masked, fill=None).lo == fill

    normalised = normalise(masked, *levels)
    assert np.all(normalised[:, outside_circle(image.shape)] == 0.0)
    # the voids inside sit at the bottom of the range, as in a scan without a mask
    assert abs(np.median(normalised[(masked != fill) & (image < 8000)]) - np.median(normalise(inside[inside < 8000], lo, hi))) < 0.01


def test_voids_clipped_at_the_minimum_are_not_a_fill_value() -> None:
    image = scan().astype(np.int32) - 5000  # the voids' noise straddles 0 ...
    clipped = np.clip(image, 0, None).astype(np.uint16)  # ... and half of it is clipped there
    assert (clipped == 0).mean() > 0.1
    assert find_fill(clipped.ravel()) is None
    assert intensity_levels(clipped).lo == 0.0


def test_a_bright_saturated_value_is_never_a_fill_value() -> None:
    image = scan()
    image[:4] = 65535  # a saturated current collector, far above everything else
    levels = intensity_levels(image)
    assert levels.fill is None
    assert levels.hi == 65535.0


def test_small_or_absent_fill_and_given_values() -> None:
    image = scan()
    assert intensity_levels(image).fill is None
    image[0, :2, :] = 0  # 2 rows of one slice: far under 1 % of the voxels
    assert intensity_levels(image).fill is None
    assert intensity_levels(image, fill=0).fill == 0.0  # given, it is used whatever its share
    constant = np.full((8, 8, 8), 7, np.uint8)
    levels = intensity_levels(constant)
    assert levels.fill is None and levels.hi == levels.lo + 1
    assert intensity_levels(constant, fill=7) == (7.0, 8.0, 7.0)  # nothing but fill: no division by zero


def test_float_scans_with_a_zero_fill() -> None:
    image = scan().astype(np.float32) / 65535
    masked = image.copy()
    masked[:, outside_circle(image.shape)] = 0.0
    levels = intensity_levels(masked)
    assert levels.fill == 0.0
    lo, hi = robust_range(image[:, ~outside_circle(image.shape)][None])
    assert abs(levels.lo - lo) < 0.01 * (hi - lo)


def test_a_fill_value_in_every_corner_lies_outside_the_field_of_view() -> None:
    image = scan()
    circle = image.copy()
    circle[:, outside_circle(image.shape)] = 0
    assert fill_is_outside_view(circle, 0.0)
    one_side = image.copy()
    one_side[:, :, :8] = 0  # padding along one edge: half the corners
    assert intensity_levels(one_side).fill == 0.0 and not fill_is_outside_view(one_side, 0.0)
    voids = np.clip(image.astype(np.int32) - 6000, 0, None).astype(np.uint16)  # voids at 0, some corners
    assert not fill_is_outside_view(voids, 0.0)


def test_label_maps_masks_and_constants_have_few_grey_values_and_scans_many() -> None:
    image = scan()
    labels = np.digitize(image, [8000, 20000]).astype(np.uint8)  # 0 void, 1 binder, 2 particle
    assert few_grey_values(labels).tolist() == [0, 1, 2]
    assert few_grey_values(labels > 0).tolist() == [False, True]
    assert few_grey_values(np.full((8, 8, 8), 7.5, np.float32)).tolist() == [7.5]
    assert few_grey_values(image) is None  # noise alone spreads a scan over many values
    eight_bit = (image // 256).astype(np.uint8)  # quantised to 8 bits (about 140 levels used)
    assert few_grey_values(eight_bit) is None
    ramp = np.broadcast_to(np.arange(FEW_GREY_VALUES + 1, dtype=np.uint8), (4, 4, FEW_GREY_VALUES + 1))
    assert few_grey_values(ramp) is None and few_grey_values(ramp[..., :-1]).size == FEW_GREY_VALUES



@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32])
def test_invert_reverses_the_order_within_the_type_and_undoes_itself(dtype) -> None:
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
    values = np.array([info.min, 7, 100, info.max], dtype=dtype)
    flipped = invert(values)
    assert flipped.dtype == values.dtype
    assert (np.diff(flipped.astype(np.float64)) < 0).all()
    np.testing.assert_array_equal(invert(flipped), values)


def test_an_inverted_scan_normalises_to_one_minus_the_scan() -> None:
    image = scan()
    levels = intensity_levels(image, fill=None)
    flipped = intensity_levels(invert(image), fill=None)
    np.testing.assert_allclose(normalise(invert(image), *flipped), 1 - normalise(image, *levels), atol=1e-5)
