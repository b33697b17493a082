"""Scan windows on one global model grid and back (``roidetect.inference.regrid``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from roidetect.inference.regrid import (
    model_span,
    scan_length,
    to_model_grid,
    to_scan_grid,
)

SCALES = [0.5, 0.7, 1.0, 1.43, 2.0]


def _ramp(length: int, start: int) -> torch.Tensor:
    """A (1, length, 1, 1) window whose value is each voxel's index in the scan along z."""
    return torch.arange(start, start + length, dtype=torch.float32).view(1, length, 1, 1)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("start", [0, 3, 17])
def test_model_voxels_sit_on_one_grid_whatever_the_window(scale: float, start: int) -> None:
    # A linear ramp is reproduced exactly by linear sampling (and by the anti-aliasing blur away
    # from the window's edges): model voxel k of the window is global model voxel j, whose
    # centre lies at scan index (j + 0.5) / s - 0.5.
    length = 40
    span = model_span(length, scale)
    sampled = to_model_grid(_ramp(length, start), (start, 0, 0), (scale, 1.0, 1.0), (span, 1, 1))[0, :, 0, 0]
    first = int(np.floor((start + 0.5) * scale))
    centres = (np.arange(first, first + span) + 0.5) / scale - 0.5
    inside = (centres >= start + 4) & (centres <= start + length - 5)
    np.testing.assert_allclose(sampled.numpy()[inside], centres[inside], atol=1e-4)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("start", [0, 5, 22])
def test_each_scan_voxel_takes_the_model_voxel_holding_its_centre(scale: float, start: int) -> None:
    length = 30
    span = model_span(length, scale)
    first = int(np.floor((start + 0.5) * scale))
    global_index = torch.arange(first, first + span, dtype=torch.float32).view(1, span, 1, 1)
    back = to_scan_grid(global_index, (start, 0, 0), (scale, 1.0, 1.0), (length, 1, 1))[0, :, 0, 0]
    expected = np.floor((np.arange(start, start + length) + 0.5) * scale)
    np.testing.assert_array_equal(back.numpy(), expected)


@pytest.mark.parametrize("scale", SCALES)
def test_a_window_fits_the_model_window_it_is_cut_for(scale: float) -> None:
    for model_length in (16, 48, 96):
        length = scan_length(model_length, scale)
        assert model_span(length, scale) <= model_length
        assert model_span(length + 1, scale) > model_length or scale == 1.0 and length == model_length


def test_without_resampling_the_round_trip_is_exact() -> None:
    window = torch.rand(2, 5, 6, 7)
    model = to_model_grid(window, (3, 4, 5), (1.0, 1.0, 1.0), (8, 8, 8))
    assert model.shape == (2, 8, 8, 8)
    assert torch.equal(model[:, 5:, :6, :7], window[:, -1:, :, :].expand(2, 3, 6, 7))  # edges repeated
    assert torch.equal(to_scan_grid(model, (3, 4, 5), (1.0, 1.0, 1.0), (5, 6, 7)), window)
