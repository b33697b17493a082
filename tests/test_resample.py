"""Annotated volumes brought to one voxel size for training and calibration (roidetect.learn.resample)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from test_learn import SPACING, write_tiny_dataset
from test_train import train_args

from roidetect.cli import main
from roidetect.errors import UserError
from roidetect.intensity import IntensityLevels
from roidetect.learn.dataset import LoadedVolume
from roidetect.learn.resample import at_voxel_size, check_voxel_sizes
from roidetect.volume import write_tiff


def _volume(spacing: tuple[float, float, float], fill: float | None = None) -> LoadedVolume:
    """A bright ball (pore label 1, instance 7) in a 255-unannotated corner, on a 40^3 grid,
    with the first 4 x-columns at the fill value when there is one."""
    z, y, x = np.mgrid[:24, :40, :40]
    centre = (12.0, 20.0, 22.0)
    ball = ((z - centre[0]) * spacing[0]) ** 2 + ((y - centre[1]) * spacing[1]) ** 2 \
        + ((x - centre[2]) * spacing[2]) ** 2 <= 0.4 ** 2
    image = np.where(ball, 3000, 1000).astype(np.uint16)
    label = ball.astype(np.uint8)
    label[:4, :4, :4] = 255
    if fill is not None:
        image[:, :, :4] = fill
    instances = np.where(ball, 7, 0).astype(np.int32)
    return LoadedVolume("v", image, label, instances, spacing, IntensityLevels(1000.0, 3000.0, fill))


def _centre_um(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Centre of ``mask`` in um, voxel i covering [i, i + 1) voxels."""
    return (np.argwhere(mask).mean(axis=0) + 0.5) * np.asarray(spacing)


def test_a_coarser_volume_is_brought_to_the_target_grid_where_it_lies() -> None:
    coarse = _volume((0.1, 0.05, 0.05), fill=0)
    fine = at_voxel_size(coarse, (0.05, 0.05, 0.05))
    assert fine.spacing_um == (0.05, 0.05, 0.05)
    assert fine.image.shape == fine.label.shape == fine.instances.shape == (48, 40, 40)
    assert set(np.unique(fine.label)) == {0, 1, 255} and set(np.unique(fine.instances)) == {0, 7}
    # the ball stays where it was in um, and keeps its physical volume
    np.testing.assert_allclose(_centre_um(fine.label == 1, fine.spacing_um),
                               _centre_um(coarse.label == 1, coarse.spacing_um), atol=0.01)
    volume_um3 = [(v.label == 1).sum() * np.prod(v.spacing_um) for v in (coarse, fine)]
    assert volume_um3[1] == pytest.approx(volume_um3[0], rel=0.1)
    # the fill value stays exact where the scan held it, and nowhere else
    assert (fine.image[:, :, :4] == 0).all() and (fine.image[:, :, 4:] > 0).all()
    assert fine.image.dtype == np.float32 and fine.image.max() <= 3000


def test_a_finer_volume_is_smoothed_before_it_is_made_coarser() -> None:
    fine = _volume((0.025, 0.025, 0.025))
    coarse = at_voxel_size(fine, (0.05, 0.05, 0.05))
    assert coarse.image.shape == (12, 20, 20)
    np.testing.assert_allclose(_centre_um(coarse.label == 1, coarse.spacing_um),
                               _centre_um(fine.label == 1, fine.spacing_um), atol=0.02)
    # noise alone: sampled without the anti-aliasing blur, every other voxel would keep its spread
    fine.image[:] = np.random.default_rng(0).integers(1000, 1400, fine.image.shape)
    noise = at_voxel_size(fine, (0.05, 0.05, 0.05)).image
    assert noise.std() < 0.6 * fine.image.std()
    assert noise.mean() == pytest.approx(fine.image.mean(), rel=0.01)


def test_volumes_within_five_percent_are_left_as_they_are() -> None:
    volume = _volume((0.05, 0.05, 0.05))
    assert at_voxel_size(volume, (0.052, 0.049, 0.051)) is volume


def test_volumes_too_far_from_the_target_are_refused_by_name() -> None:
    check_voxel_sizes({"a": (0.05, 0.05, 0.05), "b": (0.2, 0.05, 0.05)}, (0.05, 0.05, 0.05), "data")
    with pytest.raises(UserError, match="volume far has voxels of 0.25 x 0.05 x 0.05 um"):
        check_voxel_sizes({"a": (0.05,) * 3, "far": (0.25, 0.05, 0.05)}, (0.05,) * 3, "data")
    with pytest.raises(UserError, match="volume nm has voxels"):
        check_voxel_sizes({"nm": (0.002,) * 3}, (0.05,) * 3, "data")


def test_training_brings_a_volume_of_another_voxel_size_to_the_median(tmp_path: Path) -> None:
    dataset = write_tiny_dataset(tmp_path / "data", n=4, splits=("train", "train", "train", "val"))
    spec = json.loads(dataset.read_text())
    odd = spec["volumes"][1]
    # the same phantom scanned with voxels twice as long in z: every other slice
    for key in ("image", "label", "instances"):
        file = dataset.parent / odd[key]
        write_tiff(file, tifffile.imread(file)[::2], (2 * SPACING[0], *SPACING[1:]))
    odd["voxel_size_um"] = [2 * SPACING[0], *SPACING[1:]]
    dataset.write_text(json.dumps(spec))
    out = tmp_path / "run"
    assert main(train_args(dataset, out, "calibration.tta=false")) == 0
    card = json.loads((out / "model" / "card.json").read_text())
    assert card["voxel_size_um"] == pytest.approx(list(SPACING))
    assert card["training"]["data"]["resampled_volumes"] == [odd["id"]]


def test_calibration_volumes_come_at_the_models_voxel_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from roidetect.learn.data import annotated_volumes

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dataset = write_tiny_dataset(tmp_path / "data", n=2)
    fine = (0.025, 0.025, 0.025)  # the same files declared at half the voxel size
    spec = json.loads(dataset.read_text())
    spec["volumes"][0]["voxel_size_um"] = list(fine)
    dataset.write_text(json.dumps(spec))
    _, volumes = annotated_volumes(dataset, (0.5, 99.5), SPACING)
    assert [v.spacing_um for v in volumes] == [SPACING, SPACING]
    assert volumes[0].image.shape == (16, 16, 16) and volumes[1].image.shape == (32, 32, 32)
