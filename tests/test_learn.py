"""The torch layer's parts: dataset.json, fingerprint, patch sampling, losses, augmentation, configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch

from roidetect.errors import UserError
from roidetect.labels import BACKGROUND, CRACK, DELAMINATION, IGNORE, PORE
from roidetect.volume import write_tiff

SPACING = (0.05, 0.05, 0.05)


def tiny_volume(seed: int, shape: tuple[int, int, int] = (32, 32, 32)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright particle in dim binder with a pore, a crack and a delamination gap.

    Returns image (uint8), labels (uint8) and instances (uint16), each of ``shape``.
    """
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    centre = np.asarray(shape) / 2 + rng.integers(-2, 3, 3)
    radius = 0.38 * min(shape)
    dist = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(0))
    particle = dist <= radius
    pore_centre = centre + np.array([0.0, radius / 3, 0.0])
    pore = np.sqrt(((grid - pore_centre[:, None, None, None]) ** 2).sum(0)) <= 2.5
    crack = particle & (np.abs(grid[1] - (centre[1] - radius / 3)) < 0.8) & (np.abs(grid[2] - centre[2]) < radius / 2) & ~pore
    gap = particle & (dist > radius - 1.5) & (grid[0] < centre[0] - radius / 2)
    image = np.full(shape, 70.0)
    image[particle] = 190.0
    labels = np.zeros(shape, np.uint8)
    instances = np.zeros(shape, np.uint16)
    for cid, mask in ((PORE, pore), (CRACK, crack), (DELAMINATION, gap)):
        image[mask] = 25.0
        labels[mask] = cid
        instances[mask] = cid
    image += rng.normal(0, 6, shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels, instances


def write_tiny_dataset(folder: Path, n: int = 3, annotated_slices: tuple[int, ...] | None = None,
                       splits: tuple[str | None, ...] | None = None) -> Path:
    """Write ``n`` tiny volumes and a dataset.json; with ``annotated_slices`` only those z-slices carry labels."""
    volumes = []
    for i in range(n):
        image, labels, instances = tiny_volume(100 + i)
        if annotated_slices is not None:
            sparse = np.full_like(labels, IGNORE)
            sparse[list(annotated_slices)] = labels[list(annotated_slices)]
            labels = sparse
        vid = f"vol_{i:04d}"
        write_tiff(folder / "images" / f"{vid}.tif", image, SPACING)
        write_tiff(folder / "labels" / f"{vid}.tif", labels, SPACING)
        write_tiff(folder / "instances" / f"{vid}.tif", instances, SPACING)
        entry = {"id": vid, "image": f"images/{vid}.tif", "label": f"labels/{vid}.tif", "voxel_size_um": list(SPACING)}
        if annotated_slices is None:
            entry["instances"] = f"instances/{vid}.tif"
        if splits is not None and splits[i] is not None:
            entry["split"] = splits[i]
        volumes.append(entry)
    dataset = {"format": "roidetect-dataset/1", "name": "tiny",
               "classes": {"0": "background", "1": "pore", "2": "crack", "3": "delamination"},
               "ignore_label": 255, "volumes": volumes}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    return folder / "dataset.json"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_tiny_dataset(tmp_path / "data")


# ------------------------------------------------------------------ dataset.json


def test_read_dataset_resolves_paths_and_splits(dataset: Path) -> None:
    from roidetect.learn.dataset import read_dataset, split_entries

    spec = read_dataset(dataset.parent)
    assert [e.id for e in spec.volumes] == ["vol_0000", "vol_0001", "vol_0002"]
    assert all(Path(e.image).is_file() and Path(e.label).is_file() for e in spec.volumes)
    train, val = split_entries(spec.volumes, 0.34, seed=0)
    assert len(val) == 1 and len(train) == 2 and not {e.id for e in train} & {e.id for e in val}
    assert split_entries(spec.volumes, 0.34, seed=0) == (train, val)


def test_marked_splits_win(tmp_path: Path) -> None:
    from roidetect.learn.dataset import read_dataset, split_entries

    spec = read_dataset(write_tiny_dataset(tmp_path, n=3, splits=("val", None, "test")))
    train, val = split_entries(spec.volumes, 0.5, seed=0)
    assert [e.id for e in train] == ["vol_0001"] and [e.id for e in val] == ["vol_0000"]


@pytest.mark.parametrize("change, message", [
    ({"format": "other/1"}, "format"),
    ({"classes": {"1": "crack"}}, "label scheme"),
    ({"volumes": []}, "non-empty"),
    ({"volumes": [{"image": "a.tif"}]}, "'label'"),
    ({"label_map": {"1": 7}}, "label_map: 1=7"),
    ({"label_map": [1, 0]}, "label_map"),
    ({"ignore_label": 0, "label_map": {"0": 1}}, "ignore label"),
])
def test_bad_dataset_json_is_a_user_error(dataset: Path, change: dict, message: str) -> None:
    from roidetect.learn.dataset import read_dataset

    raw = json.loads(dataset.read_text())
    raw.update(change)
    dataset.write_text(json.dumps(raw))
    with pytest.raises(UserError, match=message):
        read_dataset(dataset)


def test_load_volume_maps_the_ignore_label_and_rejects_unknown_values(tmp_path: Path) -> None:
    from roidetect.learn.dataset import load_volume, read_dataset

    path = write_tiny_dataset(tmp_path, n=1)
    spec = read_dataset(path)
    entry = spec.volumes[0]
    labels = np.zeros((32, 32, 32), np.uint8)
    labels[:4] = 9
    write_tiff(entry.label, labels, SPACING)
    assert (load_volume(entry, {9: IGNORE}, (0.0, 1.0)).label[:4] == IGNORE).all()
    with pytest.raises(UserError, match="not in the label scheme.*label_map"):
        load_volume(entry, {}, (0.0, 1.0))


def test_a_label_map_reads_another_scheme_in_training_and_the_fingerprint(tmp_path: Path) -> None:
    """ilastik-style labels: 0 unlabelled, 1 background, 2 pore, 3 crack; 4 stays as written."""
    from roidetect.learn.dataset import load_volume, read_dataset
    from roidetect.learn.fingerprint import dataset_fingerprint

    path = write_tiny_dataset(tmp_path, n=1)
    raw = json.loads(path.read_text())
    raw["label_map"] = {"0": 255, "1": 0, "2": 1, "3": 2}
    path.write_text(json.dumps(raw))
    spec = read_dataset(path)
    entry = spec.volumes[0]
    stored = np.zeros((32, 32, 32), np.uint16)
    stored[:8], stored[8:16], stored[16:20], stored[20:22] = 1, 2, 3, 3
    write_tiff(entry.label, stored, SPACING)
    label = load_volume(entry, spec.label_map, (0.0, 1.0)).label
    assert label.dtype == np.uint8
    assert (label[:8] == 0).all() and (label[8:16] == 1).all() and (label[16:22] == 2).all()
    assert (label[22:] == IGNORE).all()
    voxels = dataset_fingerprint(spec, (0.5, 99.5), tmp_path / "cache")["volumes"][entry.id]["class_voxels"]
    assert voxels["pore"] == 8 * 32 * 32 and voxels["crack"] == 6 * 32 * 32 and voxels["delamination"] == 0
    stored[0, 0, 0] = 4  # unlisted values are kept as they are: 4 is no label of the scheme
    write_tiff(entry.label, stored, SPACING)
    with pytest.raises(UserError, match=r"label values \(4\)"):
        load_volume(entry, spec.label_map, (0.0, 1.0))


def test_an_image_that_is_a_label_map_is_loaded_with_a_warning(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from dataclasses import replace

    from roidetect.learn.dataset import load_volume, read_dataset

    entry = read_dataset(write_tiny_dataset(tmp_path, n=1)).volumes[0]
    with caplog.at_level("WARNING", logger="roidetect.learn.dataset"):
        load_volume(entry, {}, (0.0, 1.0))
        assert caplog.text == ""
        load_volume(replace(entry, image=entry.label), {}, (0.0, 1.0))  # the labels given as the image
    assert "volume vol_0000:" in caplog.text and "looks like a label map" in caplog.text


# ------------------------------------------------------------------ fingerprint and patch size


def test_fingerprint_counts_classes_and_is_cached(dataset: Path, tmp_path: Path) -> None:
    from roidetect.learn.dataset import read_dataset
    from roidetect.learn.fingerprint import dataset_fingerprint

    spec = read_dataset(dataset)
    fingerprint = dataset_fingerprint(spec, (0.5, 99.5), tmp_path / "cache")
    assert fingerprint["voxel_size_um"] == list(SPACING)
    assert fingerprint["shape_zyx"] == [32, 32, 32]
    total = sum(int((tiny_volume(100 + i)[1] == PORE).sum()) for i in range(3))
    assert fingerprint["class_voxels"]["pore"] == total
    assert abs(sum(fingerprint["class_fraction"].values()) - 1.0) < 1e-9
    for facts in fingerprint["volumes"].values():
        lo, hi = facts["intensity_range"]
        assert 0 <= lo < hi <= 255
    cached = list((tmp_path / "cache" / "fingerprints").glob("*.json"))
    assert len(cached) == 1
    # A second call reads the cache: prove it by planting a marker in the cached file.
    planted = json.loads(cached[0].read_text())
    planted["marker"] = True
    cached[0].write_text(json.dumps(planted))
    assert dataset_fingerprint(spec, (0.5, 99.5), tmp_path / "cache")["marker"] is True
    # Other percentiles are another fingerprint.
    assert "marker" not in dataset_fingerprint(spec, (1.0, 99.0), tmp_path / "cache")


def test_a_volume_marked_invert_trains_as_its_positive_twin(tmp_path: Path) -> None:
    """A negative-contrast image with ``"invert": true`` (its 0 padding kept at 0) loads as
    the same normalised image as the positive one: levels, fill value and voxels."""
    from roidetect.intensity import normalise
    from roidetect.learn.data import _loaded
    from roidetect.learn.dataset import read_dataset
    from roidetect.learn.fingerprint import dataset_fingerprint

    image, labels, _ = tiny_volume(7)
    image = np.pad(image, ((0, 0), (6, 6), (6, 6)))  # a 0 fill around the field of view
    labels = np.pad(labels, ((0, 0), (6, 6), (6, 6)))
    negative = np.where(image == 0, 0, 255 - image).astype(np.uint8)
    loaded = {}
    for name, pixels, flag in (("positive", image, False), ("negative", negative, True)):
        folder = tmp_path / name
        write_tiff(folder / "image.tif", pixels, SPACING)
        write_tiff(folder / "label.tif", labels, SPACING)
        entry = {"id": "v", "image": "image.tif", "label": "label.tif", **({"invert": True} if flag else {})}
        (folder / "dataset.json").write_text(json.dumps({"format": "roidetect-dataset/1", "volumes": [entry]}))
        spec = read_dataset(folder)
        fingerprint = dataset_fingerprint(spec, (0.5, 99.5), tmp_path / "cache")
        (volume,) = _loaded(spec, fingerprint, validation=False)
        loaded[name] = normalise(volume.image, *volume.intensity_range)
        assert volume.intensity_range.fill is not None
    np.testing.assert_allclose(loaded["negative"], loaded["positive"], atol=1e-6)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "dataset.json").write_text(json.dumps(
        {"format": "roidetect-dataset/1", "volumes": [{"image": "i.tif", "label": "l.tif", "invert": "yes"}]}))
    with pytest.raises(UserError, match="invert must be true or false"):
        read_dataset(tmp_path / "bad")


def test_a_padded_volume_is_normalised_as_predict_will(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Zero padding is the volume's fill value: left out of its range and normalised to 0."""
    from roidetect.intensity import normalise
    from roidetect.learn.data import annotated_volumes

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    plain = write_tiny_dataset(tmp_path / "plain", n=1)
    padded = write_tiny_dataset(tmp_path / "padded", n=1)
    pad = ((0, 0), (8, 8), (8, 8))
    for folder in ("images", "labels", "instances"):
        file = padded.parent / folder / "vol_0000.tif"
        write_tiff(file, np.pad(tifffile.imread(file), pad), SPACING)
    (_, [unpadded]) = annotated_volumes(plain, (0.5, 99.5), SPACING)
    (_, [volume]) = annotated_volumes(padded, (0.5, 99.5), SPACING)
    assert unpadded.intensity_range.fill is None and volume.intensity_range.fill == 0.0
    assert volume.intensity_range[:2] == pytest.approx(unpadded.intensity_range[:2], abs=2.0)
    image = normalise(volume.image, *volume.intensity_range)
    assert (image[:, :8] == 0.0).all() and (image[:, :, -8:] == 0.0).all()


@pytest.mark.parametrize("spacing, shape, divisor, budget", [
    ((1, 1, 1), (200, 200, 200), (16, 16, 16), 64**3),
    ((2, 1, 1), (200, 300, 300), (8, 8, 8), 64**3),
    ((1, 1, 1), (20, 500, 500), (16, 16, 16), 64**3),
    ((0.05, 0.05, 0.05), (32, 32, 32), (4, 4, 4), 64**3),
])
def test_default_patch_size_fits_budget_volume_and_divisor(spacing, shape, divisor, budget) -> None:
    from roidetect.learn.fingerprint import default_patch_size

    patch = default_patch_size(spacing, shape, divisor, budget)
    assert np.prod(patch) <= budget
    assert all(p % d == 0 and p >= d for p, d in zip(patch, divisor))
    assert all(p <= max(s, d) for p, s, d in zip(patch, shape, divisor))
    if spacing[0] > spacing[1] and shape[0] > 64:
        assert patch[0] < patch[1]  # coarse z gets fewer voxels


# ------------------------------------------------------------------ sampling


def test_sampler_centres_patches_on_requested_classes() -> None:
    from roidetect.learn.sampling import PatchSampler, crop, index_classes

    _, labels, _ = tiny_volume(3, (48, 48, 48))
    rng = np.random.default_rng(0)
    index = index_classes(labels, rng)
    assert set(index) == {BACKGROUND, PORE, CRACK, DELAMINATION}
    sampler = PatchSampler((16, 16, 16), {CRACK: 1.0}, jitter=0.25)
    for _ in range(20):
        which, start = sampler.sample([labels.shape], [index], rng)
        patch = crop(labels, start, (16, 16, 16), IGNORE)
        assert which == 0 and patch.shape == (16, 16, 16) and (patch == CRACK).any()


def test_sampler_draws_each_defect_region_equally_often() -> None:
    from roidetect.learn.sampling import index_classes

    labels = np.zeros((40, 40, 40), np.uint8)
    labels[2:30, 2:30, 2:10] = DELAMINATION  # one wide gap of 6,272 voxels
    for k in range(4):
        labels[34:36, 34:36, 2 + 8 * k:4 + 8 * k] = DELAMINATION  # four small gaps of 8 voxels
    labels[20, 20, 20] = PORE
    index = index_classes(labels, np.random.default_rng(0), max_per_class=5000)
    picks = np.unravel_index(index[DELAMINATION], labels.shape)
    share_small = float(np.mean(picks[0] >= 34))
    assert 0.7 < share_small < 0.9  # 4 of 5 regions; voxel-uniform picks would give 0.5 %
    assert (labels.reshape(-1)[index[DELAMINATION]] == DELAMINATION).all()
    assert (labels.reshape(-1)[index[PORE]] == PORE).all()


def test_sampler_only_centres_on_annotated_voxels_and_pads_small_volumes() -> None:
    from roidetect.learn.sampling import PatchSampler, crop, index_classes

    labels = np.full((6, 20, 20), IGNORE, np.uint8)
    labels[3] = BACKGROUND
    labels[3, 5:8, 5:8] = PORE
    rng = np.random.default_rng(1)
    index = index_classes(labels, rng)
    assert all((labels.reshape(-1)[idx] != IGNORE).all() for idx in index.values())
    sampler = PatchSampler((8, 16, 16), {BACKGROUND: 0.5, PORE: 0.5, CRACK: 1.0})
    for _ in range(10):
        _, start = sampler.sample([labels.shape], [index], rng)
        patch = crop(labels, start, (8, 16, 16), IGNORE)
        assert patch.shape == (8, 16, 16)
        assert (patch != IGNORE).any()
        assert (patch[6:] == IGNORE).all()  # padding beyond the 6 slices is never annotated


# ------------------------------------------------------------------ small-region weights


def test_small_regions_weigh_more_up_to_the_ceiling_and_large_ones_keep_one() -> None:
    from roidetect.learn.region_weights import RegionWeighting, region_weights

    labels = np.zeros((40, 40, 40), np.uint8)
    labels[2:30, 2:30, 2:10] = DELAMINATION  # 6,272 voxels: weight 1
    labels[34:36, 34:36, 2:4] = DELAMINATION  # 8 voxels: 400 / 8 = 50, capped at 8
    labels[34:37, 34:39, 20:25] = DELAMINATION  # 75 voxels: 400 / 75
    labels[10:12, 34:36, 34:36] = PORE  # a small region of a class not weighted
    labels[0, 0, 0] = IGNORE
    sparse = region_weights(labels, RegionWeighting((DELAMINATION,), 400.0, 8.0))
    weights = sparse.patch((0, 0, 0), labels.shape)
    assert weights.shape == labels.shape and weights.dtype == np.float32
    assert (weights[34:36, 34:36, 2:4] == 8.0).all()
    assert np.allclose(weights[34:37, 34:39, 20:25], 400 / 75)
    assert (weights[2:30, 2:30, 2:10] == 1.0).all()
    assert (weights[labels != DELAMINATION] == 1.0).all()
    assert len(sparse.values) == 8 + 75  # only voxels above 1 are stored


def test_weight_patches_match_the_crop_of_the_whole_map_also_outside_the_volume() -> None:
    from roidetect.learn.region_weights import RegionWeighting, region_weights
    from roidetect.learn.sampling import crop

    _, labels, _ = tiny_volume(5, (32, 32, 32))
    sparse = region_weights(labels, RegionWeighting((PORE, CRACK, DELAMINATION), 500.0, 4.0))
    whole = sparse.patch((0, 0, 0), labels.shape)
    assert whole.max() > 1.0
    for start in [(0, 0, 0), (5, 9, 20), (-4, 20, 25)]:
        assert np.array_equal(sparse.patch(start, (16, 16, 16)), crop(whole, start, (16, 16, 16), 1.0))


@pytest.mark.parametrize("settings, message", [
    ({"classes": ["gap"], "reference_voxels": 400, "max_weight": 8}, "unknown class"),
    ({"classes": ["background"], "reference_voxels": 400, "max_weight": 8}, "background"),
    ({"classes": ["crack"], "reference_voxels": 0, "max_weight": 8}, "reference_voxels"),
    ({"classes": ["crack"], "reference_voxels": 400, "max_weight": 0.5}, "max_weight"),
    ({"classes": ["crack"], "reference_voxels": "many", "max_weight": 8}, "numbers"),
])
def test_bad_small_region_weighting_is_a_user_error(settings: dict, message: str) -> None:
    from roidetect.learn.region_weights import RegionWeighting

    with pytest.raises(UserError, match=message):
        RegionWeighting.from_config(settings)
    assert RegionWeighting.from_config({"classes": [], "reference_voxels": 0, "max_weight": 0}) is None


# ------------------------------------------------------------------ losses


@pytest.mark.parametrize("name", ["DiceCELoss", "DiceFocalLoss"])
@pytest.mark.parametrize("batch_dice", [True, False])
def test_loss_ignores_unannotated_voxels(name: str, batch_dice: bool) -> None:
    from roidetect.learn.losses import build_loss

    loss = build_loss(name, class_weights=[0.5, 1.0, 2.0, 2.0], batch_dice=batch_dice, include_background=False)
    torch.manual_seed(0)
    target = torch.randint(0, 4, (2, 1, 8, 8, 8))
    target[:, :, 4:] = IGNORE
    logits = torch.randn(2, 4, 8, 8, 8, requires_grad=True)
    value = loss(logits, target)
    value.backward()
    assert torch.isfinite(value)
    assert logits.grad[:, :, 4:].abs().max() == 0  # no gradient from ignored voxels
    assert logits.grad[:, :, :4].abs().max() > 0
    changed = logits.detach().clone()
    changed[:, :, 4:] = torch.randn(2, 4, 4, 8, 8) * 10
    assert torch.allclose(loss(changed, target), value.detach())
    everything_ignored = torch.full_like(target, IGNORE)
    assert loss(logits, everything_ignored).item() == 0.0


def test_focal_loss_is_softmax_focal_over_every_class() -> None:
    from roidetect.learn.losses import build_loss

    torch.manual_seed(3)
    target = torch.randint(0, 4, (2, 1, 8, 8, 8))
    logits = torch.randn(2, 4, 8, 8, 8)
    # gamma 0: the focal term is the cross-entropy, so the loss is DiceCELoss's
    plain = build_loss("DiceFocalLoss", include_background=False, gamma=0.0)
    assert torch.allclose(plain(logits, target), build_loss("DiceCELoss", include_background=False)(logits, target))
    # the focal term alone trains the background logit too (a per-channel sigmoid focal
    # without the background channel would leave it no gradient)
    focal_only = build_loss("DiceFocalLoss", include_background=False, lambda_dice=0.0)
    trained = logits.clone().requires_grad_(True)
    focal_only(trained, target).backward()
    background = target[:, 0] == 0
    assert (trained.grad[:, 0][background] < 0).all()  # raising the background logit lowers the loss there
    # gamma > 0 weighs confident voxels down: never above the cross-entropy
    cross_entropy = build_loss("DiceFocalLoss", include_background=False, lambda_dice=0.0, gamma=0.0)
    assert focal_only(logits, target) < cross_entropy(logits, target)


@pytest.mark.parametrize("batch_dice", [True, False])
def test_voxel_weights_raise_the_loss_only_where_above_one(batch_dice: bool) -> None:
    from roidetect.learn.losses import build_loss

    loss = build_loss("DiceCELoss", batch_dice=batch_dice, include_background=False)
    torch.manual_seed(1)
    target = torch.randint(0, 4, (2, 1, 8, 8, 8))
    target[:, :, 6:] = IGNORE
    logits = torch.randn(2, 4, 8, 8, 8, requires_grad=True)
    ones = torch.ones(target.shape)
    assert torch.allclose(loss(logits, target, ones), loss(logits, target))
    weight = ones.clone()
    weight[0, 0, 1, 2, 3] = 5.0  # one annotated voxel
    weight[:, :, 6:] = 9.0  # ignored voxels: no effect
    value = loss(logits, target, weight)
    value.backward()
    assert value > loss(logits, target)
    assert logits.grad[:, :, 6:].abs().max() == 0


@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_loss_is_the_monai_loss_of_the_annotated_voxels(batch_dice: bool, channels_last: bool) -> None:
    import torch.nn.functional as F

    from roidetect.learn.losses import build_loss

    loss = build_loss("DiceCELoss", batch_dice=batch_dice)
    torch.manual_seed(2)
    target = torch.randint(0, 4, (2, 1, 8, 8, 8))
    target[0, 0, 5:] = IGNORE
    target[1, 0, :, :2] = IGNORE
    weight = 1 + 3 * torch.rand(target.shape)
    logits = torch.randn(2, 4, 8, 8, 8)
    keep = target[:, 0] != IGNORE  # (2, 8, 8, 8)
    per_sample = [(logits[i][:, keep[i]], target[i, 0][keep[i]]) for i in range(2)]
    if batch_dice:
        pooled = (torch.cat([p for p, _ in per_sample], dim=1), torch.cat([t for _, t in per_sample]))
        expected = loss.loss(pooled[0][None], pooled[1].reshape(1, 1, -1))
    else:
        expected = torch.stack([loss.loss(p[None], t.reshape(1, 1, -1)) for p, t in per_sample]).mean()
    picked = logits.permute(1, 0, 2, 3, 4)[:, keep]
    cross_entropy = F.cross_entropy(picked.T, target[:, 0][keep], reduction="none")
    expected_weighted = expected + ((weight[:, 0][keep] - 1) * cross_entropy).sum() / keep.sum()
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(loss(logits, target), expected, atol=1e-6)
    assert torch.allclose(loss(logits, target, weight), expected_weighted, atol=1e-6)


def test_unknown_loss_is_a_user_error() -> None:
    from roidetect.learn.losses import build_loss

    with pytest.raises(UserError, match="unknown loss"):
        build_loss("MSELoss")


# ------------------------------------------------------------------ augmentation


def test_augmentation_keeps_labels_in_the_scheme_and_is_seeded() -> None:
    from roidetect.learn.transforms import build_augmentation

    _, labels, _ = tiny_volume(5, (16, 24, 24))
    labels[:2] = IGNORE
    image = torch.rand(1, 16, 24, 24)
    transform = build_augmentation(flip_prob=0.5, rotate90_prob=1.0, zoom_prob=1.0, gamma_prob=1.0,
                                   noise_prob=1.0, blur_prob=1.0)
    outputs = []
    for _ in range(2):
        transform.set_random_state(seed=7)
        out = transform({"image": image.clone(), "label": torch.from_numpy(labels)[None]})
        outputs.append(out)
        assert out["image"].shape == (1, 16, 24, 24) and out["image"].dtype == torch.float32
        assert out["label"].dtype == torch.uint8
        assert set(torch.unique(out["label"]).tolist()) <= {0, 1, 2, 3, IGNORE}
        assert type(out["image"]) is torch.Tensor
    assert torch.equal(outputs[0]["image"], outputs[1]["image"])
    assert torch.equal(outputs[0]["label"], outputs[1]["label"])


# ------------------------------------------------------------------ calibration


def test_calibration_is_monotone_and_stays_in_unit_interval() -> None:
    from roidetect.learn.calibration import CalibrationSamples, fit_calibration

    rng = np.random.default_rng(0)
    samples = CalibrationSamples()
    scores = rng.uniform(0.3, 1.0, 200)
    samples.scores["pore"] = scores.tolist()
    samples.matched["pore"] = (rng.uniform(size=200) < scores).tolist()
    samples.scores["crack"] = [0.6, 0.7]
    samples.matched["crack"] = [True, False]
    curves = fit_calibration(samples, min_detections=10)
    assert set(curves) == {"pore"}
    x, y = np.asarray(curves["pore"]["x"]), np.asarray(curves["pore"]["y"])
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0) and y.min() > 0 and y.max() < 1
    assert y[-1] > y[0]


def test_calibration_smooths_each_step_and_pools_steps_left_out_of_order() -> None:
    from roidetect.learn.calibration import CalibrationSamples, fit_calibration

    samples = CalibrationSamples()
    # 10 false at low scores, then 3 real: two steps, 0 of 10 and 3 of 3
    samples.scores["pore"] = [0.1 + 0.01 * i for i in range(10)] + [0.8, 0.85, 0.9]
    samples.matched["pore"] = [False] * 10 + [True] * 3
    # 9 of 10 real, then 1 of 1: smoothed 10/12 > 2/3, so the two pool into 10 of 11
    samples.scores["crack"] = [0.5 + 0.01 * i for i in range(10)] + [0.95]
    samples.matched["crack"] = [True] * 9 + [False] + [True]
    curves = fit_calibration(samples, min_detections=10)
    assert curves["pore"] == {"x": [0.1, 0.19, 0.8, 0.9], "y": [1 / 12, 1 / 12, 0.8, 0.8]}
    assert curves["crack"] == {"x": [0.5, 0.95], "y": [pytest.approx(11 / 13)] * 2}


def _samples(scores: dict[str, list[float]], matched: dict[str, list[bool]], true: dict[str, int]) -> Any:
    """CalibrationSamples holding the given raw scores, match outcomes and true instance counts."""
    from roidetect.learn.calibration import CalibrationSamples

    samples = CalibrationSamples()
    for name in scores:
        samples.scores[name], samples.matched[name] = scores[name], matched[name]
        samples.true_instances[name] = true[name]
    return samples


def _f1_at(samples: Any, curve: dict[str, list[float]], name: str, threshold: float) -> float:
    score = np.interp(samples.scores[name], curve["x"], curve["y"])
    kept = score >= threshold
    true_kept = np.count_nonzero(kept & np.asarray(samples.matched[name]))
    return 2 * true_kept / (np.count_nonzero(kept) + samples.true_instances[name])


def test_min_score_is_the_highest_threshold_within_one_standard_error_of_the_best_f1() -> None:
    from roidetect.learn.calibration import min_scores_by_f1

    rng = np.random.default_rng(3)
    raw = rng.uniform(0.3, 1.0, 300)
    matched = rng.uniform(size=300) < raw ** 3
    curve = {"x": [0.3, 0.6, 0.8, 1.0], "y": [0.05, 0.2, 0.6, 0.95]}
    true = int(matched.sum()) + 40
    samples = _samples({"crack": raw.tolist()}, {"crack": matched.tolist()}, {"crack": true})
    minimum = min_scores_by_f1(samples, {"crack": curve})["crack"]
    levels = np.unique(np.interp(raw, curve["x"], curve["y"]))
    f1 = {t: _f1_at(samples, curve, "crack", t) for t in levels}
    best = max(f1.values())
    kept = sum(np.interp(raw, curve["x"], curve["y"]) >= max(f1, key=f1.get))
    tp = round(best * (kept + true) / 2)
    standard_error = np.sqrt(best * (1 - best) / (kept + true - tp))
    assert _f1_at(samples, curve, "crack", minimum) >= best - standard_error
    assert all(f1[t] < best - standard_error for t in levels if t > minimum + 1e-3)
    assert 0 < minimum < levels.max()  # neither everything nor nothing, for this mix
    assert minimum <= min(t for t in levels if t >= minimum)  # rounding keeps the chosen detections


def test_a_detection_of_a_true_defect_below_the_minimum_size_is_left_out_of_the_calibration() -> None:
    """It is neither right nor wrong, as in the evaluation; counted as matched it made the
    matched detections outnumber the true instances, and on one such volume the threshold
    fit took the square root of a negative number and failed."""
    from roidetect.detect import DetectionParams
    from roidetect.labels import PORE
    from roidetect.learn.calibration import CalibrationSamples, fit_calibration, min_scores_by_f1
    from roidetect.learn.validation import score_volume

    truth = np.zeros((24, 24, 24), np.uint8)
    truth[4:6, 4:6, 4:6] = PORE  # 8 voxels, below the minimum size of 0.002 um^3 (16 voxels)
    truth[12:17, 12:17, 12:17] = PORE  # 125 voxels
    pred = truth.copy()
    pred[3:6, 3:6, 3:6] = PORE  # 27 voxels: detected, and it matches the small pore
    probabilities = np.stack([(pred == c).astype(np.float32) for c in range(4)]) * 0.8 + 0.05
    detection = DetectionParams(min_voxels=1, min_volume_um3={"pore": 0.002, "crack": 0.002, "delamination": 0.002})
    scored = score_volume(probabilities, truth, None, (0.05, 0.05, 0.05), detection)
    assert len(scored.detections) == 2 and scored.counted.tolist().count(False) == 1
    samples = CalibrationSamples()
    for _ in range(10):
        samples.add(scored.detections, scored.result, scored.counted)
    assert samples.summary()["pore"] == {"detections": 10, "matched": 10, "true": 10}
    samples.scores["pore"][0] = 0.5  # two distinct scores, so a curve is fitted
    assert 0.0 <= min_scores_by_f1(samples, fit_calibration(samples))["pore"] <= 1.0


def test_min_score_drops_detections_that_add_nothing_and_keeps_those_that_do() -> None:
    from roidetect.learn.calibration import min_scores_by_f1

    curve = {"x": [0.5, 1.0], "y": [0.0, 1.0]}
    # pore: 200 real detections at calibrated 0.9 and 200 more real ones at 0.2: keeping the
    # low ones doubles the recall, so everything is kept. crack: 200 real at 0.9, and at 0.2
    # a mix of 10 real and 30 false that leaves F1 level: the higher threshold is kept.
    samples = _samples({"pore": [0.95] * 200 + [0.6] * 200, "crack": [0.95] * 200 + [0.6] * 40,
                        "delamination": [0.9, 0.7]},
                       {"pore": [True] * 400, "crack": [True] * 210 + [False] * 30,
                        "delamination": [False, False]},
                       {"pore": 400, "crack": 400, "delamination": 0})
    minimums = min_scores_by_f1(samples, {"pore": curve, "crack": curve, "delamination": curve})
    assert minimums["pore"] <= 0.2 and 0.89 < minimums["crack"] <= 0.9
    assert "delamination" not in minimums  # no true instance: no minimum
    assert min_scores_by_f1(samples, {}) == {}  # uncalibrated classes keep raw scores


def test_warmup_cosine_schedule() -> None:
    from roidetect.learn.module import warmup_cosine

    assert warmup_cosine(0.0, 0.1, 0.01) == 0.0
    assert warmup_cosine(0.05, 0.1, 0.01) == pytest.approx(0.5)
    assert warmup_cosine(0.1, 0.1, 0.01) == pytest.approx(1.0)
    assert warmup_cosine(1.0, 0.1, 0.01) == pytest.approx(0.01)
    values = [warmup_cosine(p, 0.1, 0.01) for p in np.linspace(0.1, 1.0, 20)]
    assert all(a >= b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_package_files_are_as_readable_as_any_new_file(umask: int, tmp_path: Path) -> None:
    """safetensors writes its files 0o600; a package's weights get the umask's mode like its card."""
    import os

    from roidetect.learn.bundle import CARD, WEIGHTS, save_package

    card = {"name": "t", "classes": {"0": "background", "1": "pore"}, "network": {"class": "Linear", "args": {}},
            "voxel_size_um": [1.0, 1.0, 1.0], "patch_size": [8, 8, 8],
            "normalisation": {"method": "volume_percentiles", "percentiles": [0.5, 99.5]}}
    old = os.umask(umask)
    try:
        package = save_package(tmp_path / "model", torch.nn.Linear(2, 2), card)
    finally:
        os.umask(old)
    for name in (WEIGHTS, CARD):
        assert (package / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_mostly_defects_warning_names_only_volumes_that_are_mostly_defects() -> None:
    from roidetect.learn.dataset import mostly_defects_warning

    usual = {"background": 950, "pore": 30, "crack": 20, "delamination": 0}
    shifted = {"background": 0, "pore": 900, "crack": 60, "delamination": 40}
    assert mostly_defects_warning({"a": usual, "b": {"background": 0, "pore": 0}}) is None
    warning = mostly_defects_warning({"a": usual, "b": shifted})
    assert warning is not None and "1 volume(s) (b 100 %)" in warning


def test_volumes_that_do_not_fit_the_free_memory_are_refused_before_loading(tmp_path: Path, monkeypatch) -> None:
    import roidetect.memory
    from roidetect.learn.data import annotated_volumes

    path = write_tiny_dataset(tmp_path, n=2)
    loaded = []
    monkeypatch.setattr("roidetect.learn.data._load", lambda *args: loaded.append(args) or None)
    monkeypatch.setattr(roidetect.memory, "available_memory_bytes", lambda: 100_000)  # two 32^3 volumes need more
    with pytest.raises(UserError, match=r"need about 0\.\d GB of memory once loaded .*crop them"):
        annotated_volumes(path, (0.5, 99.5), SPACING)
    assert not loaded
