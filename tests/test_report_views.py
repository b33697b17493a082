"""The report's numpy layer: geometry, focus point, overlays and the out-of-core projection."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from roidetect.errors import UserError
from roidetect.labels import COLOURS_RGB, CRACK, DELAMINATION, PORE
from roidetect.report.figures import scale_bar_length
from roidetect.report.views import Focus, Geometry, choose_focus, orthogonal_planes, overlay, z_projection, zoom_window
from roidetect.volume import Volume

GEOMETRY = Geometry((20, 30, 40), (0.2, 0.1, 0.1), (1.0, 0.0, -2.0))


class CountingArray:
    """A lazy array that remembers the largest block it was asked for."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype = data, data.shape, data.dtype
        self.largest_read = 0

    def __getitem__(self, key):
        block = np.asarray(self.data[key])
        self.largest_read = max(self.largest_read, block.size)
        return block


def test_geometry_positions_round_and_clip():
    assert GEOMETRY.to_voxel((1.0, 0.0, -2.0)) == (0, 0, 0)
    assert GEOMETRY.to_voxel((1.0 + 0.2 * 7, 0.1 * 12, -2.0 + 0.1 * 39)) == (7, 12, 39)
    assert GEOMETRY.to_voxel((-100, 100, 100)) == (0, 29, 39)
    assert GEOMETRY.extent_um(0, slice(0, 20)) == pytest.approx((0.9, 4.9))
    box = GEOMETRY.window((0, 15, 39), (0.5, 0.35, 0.35))
    assert box == (slice(0, 4), slice(11, 20), slice(35, 40))
    assert GEOMETRY.whole == (slice(0, 20), slice(0, 30), slice(0, 40))


def _detections() -> pd.DataFrame:
    return pd.DataFrame({"id": [1, 2], "class": ["pore", "crack"], "score": [0.6, 0.9],
                         "z_um": [2.0, 3.0], "y_um": [1.0, 2.0], "x_um": [0.0, 1.0],
                         "equivalent_diameter_um": [0.5, 0.8]})


def test_focus_defaults_to_best_site_then_best_detection_then_centre():
    sites = pd.DataFrame({"rank": [1, 2], "z_um": [1.4, 2.0], "y_um": [0.5, 1.0], "x_um": [-1.0, 0.0],
                          "fov_um": [1.2, 1.2]})
    focus = choose_focus(GEOMETRY, _detections(), sites)
    assert focus.voxel == (2, 5, 10) and "site 1" in focus.description and focus.size_um == 1.2
    focus = choose_focus(GEOMETRY, _detections(), None)
    assert focus.voxel == GEOMETRY.to_voxel((3.0, 2.0, 1.0)) and "detection 2 (crack" in focus.description
    empty = _detections().iloc[:0]
    assert choose_focus(GEOMETRY, empty, None).voxel == (10, 15, 20)


def test_focus_spec_forms_and_errors():
    sites = pd.DataFrame({"rank": [1, 2], "z_um": [1.4, 2.0], "y_um": [0.5, 1.0], "x_um": [-1.0, 0.0]})
    assert "site 2" in choose_focus(GEOMETRY, _detections(), sites, "site:2").description
    assert choose_focus(GEOMETRY, _detections(), None, "detection:1").voxel == GEOMETRY.to_voxel((2.0, 1.0, 0.0))
    assert choose_focus(GEOMETRY, _detections(), None, "1.4,0.5,-1").voxel == (2, 5, 10)
    for spec, known_sites in [("site:3", sites), ("site:1", None), ("detection:7", None), ("1,2", None),
                              ("middle", None), ("site:x", sites)]:
        with pytest.raises(UserError, match="--focus"):
            choose_focus(GEOMETRY, _detections(), known_sites, spec)


def test_zoom_window_only_when_it_is_a_small_part():
    focus = Focus((10, 15, 20), "x", 0.3)
    box = zoom_window(Geometry((20, 300, 400), (0.2, 0.1, 0.1), (0, 0, 0)), focus)
    assert box is not None and box[1].stop - box[1].start < 300
    assert zoom_window(GEOMETRY, focus) is None


def test_overlay_paints_classes_in_their_colours():
    grey = np.linspace(0, 100, 12).reshape(3, 4)
    labels = np.zeros((3, 4), np.uint8)
    labels[0, 0], labels[1, 1], labels[2, 2] = PORE, CRACK, DELAMINATION
    rgb = overlay(grey, labels, 0, 100, alpha=1.0)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    for (y, x), cid in {(0, 0): PORE, (1, 1): CRACK, (2, 2): DELAMINATION}.items():
        assert tuple(rgb[y, x]) == COLOURS_RGB[cid]
    background = labels == 0
    assert (rgb[background][:, 0] == rgb[background][:, 1]).all()  # grey where no label
    assert rgb[2, 3, 0] == 255 and overlay(None, labels, 0, 1).shape == (3, 4, 3)


@pytest.mark.parametrize("max_pixels", [64, 16])
def test_projection_matches_numpy_and_reads_slabs(max_pixels):
    rng = np.random.default_rng(0)
    labels = np.zeros((24, 40, 48), np.uint8)
    labels[5, 3, 7], labels[20, 33, 40], labels[11, 10:20, 30] = PORE, CRACK, DELAMINATION
    scan = rng.integers(0, 1000, labels.shape).astype(np.uint16)
    lazy_labels, lazy_scan = CountingArray(labels), CountingArray(scan)
    projection = z_projection(Volume(lazy_labels, (1, 1, 1)), Volume(lazy_scan, (1, 1, 1)), max_pixels=max_pixels,
                              max_planes=8, slab=4)
    f = projection.factor
    assert f == int(np.ceil(48 / max_pixels)) and projection.z_step == 3
    for index, cid in enumerate((PORE, CRACK, DELAMINATION)):
        expected = np.argwhere((labels == cid).any(axis=0)) // f
        assert set(map(tuple, np.argwhere(projection.footprint[index]))) == set(map(tuple, expected))
    if f == 1:
        assert np.allclose(projection.mean, scan[::3].mean(axis=0))
    else:
        assert projection.mean.shape == (-(-40 // f), -(-48 // f))
        assert np.isclose(projection.mean[0, 0], scan[::3, :f, :f].mean(), rtol=1e-5)
    assert lazy_labels.largest_read <= 4 * 40 * 48 and lazy_scan.largest_read <= 4 * 40 * 48


def test_orthogonal_planes_read_only_planes():
    data = CountingArray(np.arange(20 * 30 * 40, dtype=np.uint16).reshape(20, 30, 40))
    planes = orthogonal_planes(Volume(data, (1, 1, 1)), (3, 4, 5), GEOMETRY.window((3, 4, 5), (2, 1, 1)))
    assert planes.xy.shape == (15, 16) and planes.xz.shape == (14, 16) and planes.yz.shape == (14, 15)
    assert planes.xy[4 - 0, 5 - 0] == data.data[3, 4, 5]
    assert data.largest_read == 15 * 16


@pytest.mark.parametrize("span", [0.37, 3.0, 12.8, 51.2, 1024.0])
def test_scale_bar_is_a_round_fraction_of_the_span(span):
    length = scale_bar_length(span)
    mantissa = length / 10 ** np.floor(np.log10(length))
    assert round(mantissa, 6) in (1.0, 2.0, 5.0)
    assert span / 12.5 <= length <= span / 5


def test_report_package_does_not_import_torch():
    code = ("import sys, roidetect.report, roidetect.cli.report; "
            "sys.exit(1 if any(m == 'torch' or m.startswith('torch.') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
