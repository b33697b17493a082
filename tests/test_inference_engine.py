"""The sliding-window engine: window grid, block independence, blending, TTA, resampling."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
import torch

from roidetect.inference.engine import NetworkSource
from roidetect.inference.model import choose_window, plan_windows, resolve_device
from roidetect.inference.network import Augmentation, WindowModel, augmentations, network_shape
from roidetect.inference.sources import NormalisedReader
from roidetect.inference.windows import WindowGrid, window_starts
from roidetect.intensity import IntensityLevels
from roidetect.errors import UserError
from roidetect.volume import Volume

IDENTITY = [Augmentation()]


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(3, 1, 4, channels=(4, 8), strides=(2,), num_res_units=1).eval()


@pytest.fixture(scope="module")
def volume96() -> Volume:
    rng = np.random.default_rng(7)
    return Volume.from_array(rng.normal(size=(96, 96, 96)).astype(np.float32), 1.0)


def run_blocks(source: NetworkSource, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Assemble a source's blocks into whole arrays; also count how often each voxel was written."""
    probabilities = np.zeros((4, *shape), np.float32)
    uncertainty = np.zeros((4, *shape), np.float32)
    written = np.zeros(shape, np.int32)
    has_uncertainty = False
    for result in source.blocks():
        probabilities[(slice(None), *result.core)] = result.probabilities
        written[result.core] += 1
        if result.uncertainty is not None:
            has_uncertainty = True
            uncertainty[(slice(None), *result.core)] = result.uncertainty
    return probabilities, (uncertainty if has_uncertainty else None), written


def source(volume: Volume, network: torch.nn.Module, block_size: int, window: int = 32, scale: float = 1.0,
           variants: list[Augmentation] = IDENTITY, sigma_scale: float = 0.125) -> NetworkSource:
    model = WindowModel(network, (scale,) * 3, (2, 2, 2), augmentations=variants)
    return NetworkSource(NormalisedReader(volume, IntensityLevels(0.0, 1.0)), model, (window,) * 3, 0.25, block_size,
                         batch_size=3, sigma_scale=sigma_scale)


@pytest.mark.parametrize("size,window,overlap", [(96, 32, 0.25), (100, 32, 0.5), (37, 16, 0.25), (16, 16, 0.25)])
def test_window_starts_match_monai(size: int, window: int, overlap: float) -> None:
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    interval = _get_scan_interval((size,), (window,), 1, (overlap,))
    expected = sorted({s[0].start for s in dense_patch_slices((size,), (window,), interval)})
    assert window_starts(size, window, overlap).tolist() == expected


@pytest.mark.parametrize("shape,block", [((96, 96, 96), 48), ((50, 37, 64), 20), ((20, 20, 20), 100)])
def test_block_cores_tile_the_volume_and_carries_go_forward(shape: tuple[int, ...], block: int) -> None:
    grid = WindowGrid(shape, (16, 16, 16), 0.25, block)
    covered = np.zeros(shape, np.int32)
    order = {b.index: i for i, b in enumerate(grid.blocks())}
    windows = 0
    for b in grid.blocks():
        covered[b.core] += 1
        windows += len(b.starts)
        for target, region in grid.carry_targets(b):
            assert order[target] > order[b.index]
            assert all(r.start >= e.start and r.stop <= e.stop for r, e in zip(region, b.extent))
    assert (covered == 1).all()
    assert windows == grid.n_windows


def test_blockwise_equals_whole_volume(network: torch.nn.Module, volume96: Volume) -> None:
    whole_source = source(volume96, network, block_size=96)
    split_source = source(volume96, network, block_size=48)
    assert whole_source.grid.n_blocks == 1 and split_source.grid.n_blocks == 8
    whole, _, _ = run_blocks(whole_source, volume96.shape)
    split, _, written = run_blocks(split_source, volume96.shape)
    assert (written == 1).all()
    np.testing.assert_allclose(split, whole, atol=1e-4)
    np.testing.assert_allclose(whole.sum(axis=0), 1.0, atol=1e-4)


def test_flat_blending_equals_monai_constant_mode(network: torch.nn.Module) -> None:
    from monai.inferers import sliding_window_inference

    rng = np.random.default_rng(3)
    array = rng.normal(size=(40, 48, 56)).astype(np.float32)
    ours, _, _ = run_blocks(source(Volume.from_array(array, 1.0), network, 24, window=16, sigma_scale=1e6),
                            array.shape)
    with torch.inference_mode():
        theirs = sliding_window_inference(torch.from_numpy(array)[None, None], (16, 16, 16), 4,
                                          lambda x: torch.softmax(network(x), 1), overlap=0.25, mode="constant")
    np.testing.assert_allclose(ours, theirs[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("rotations", [False, True])
def test_augmentations_invert_and_are_distinct(rotations: bool) -> None:
    x = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4, 4)
    variants = augmentations(rotations)
    assert variants[0] == Augmentation()
    assert len(variants) == (16 if rotations else 8)
    seen = set()
    for variant in variants:
        moved = variant.forward(x)
        torch.testing.assert_close(variant.inverse(moved), x)
        seen.add(tuple(moved.flatten().tolist()))
    assert len(seen) == len(variants)


def test_tta_gives_uncertainty_and_is_block_independent(network: torch.nn.Module) -> None:
    rng = np.random.default_rng(5)
    volume = Volume.from_array(rng.normal(size=(48, 48, 48)).astype(np.float32), 1.0)
    plain, none, _ = run_blocks(source(volume, network, 48), volume.shape)
    whole, spread, _ = run_blocks(source(volume, network, 48, variants=augmentations()), volume.shape)
    split, spread_split, _ = run_blocks(source(volume, network, 24, variants=augmentations()), volume.shape)
    assert none is None and spread is not None and spread_split is not None
    assert spread.min() >= 0 and spread.max() > 0.01
    np.testing.assert_allclose(whole.sum(axis=0), 1.0, atol=1e-4)
    np.testing.assert_allclose(split, whole, atol=1e-4)
    np.testing.assert_allclose(spread_split, spread, atol=1e-3)
    assert np.abs(whole - plain).max() > 1e-3  # the flips were really averaged


def test_resampled_windows_cover_the_scan(network: torch.nn.Module) -> None:
    rng = np.random.default_rng(9)
    volume = Volume.from_array(rng.normal(size=(20, 30, 44)).astype(np.float32), 2.0)
    probabilities, _, written = run_blocks(source(volume, network, 16, window=16, scale=2.0), volume.shape)
    assert (written == 1).all()
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-3)


def test_plan_resamples_and_warns_only_when_voxel_sizes_differ(caplog: pytest.LogCaptureFixture) -> None:
    same = plan_windows((100, 100, 100), (0.051,) * 3, (0.05,) * 3, (64,) * 3, 0.05, 1.5)
    assert not same.resampled and same.scan_window == (64, 64, 64)
    assert "resampling" not in caplog.text
    with caplog.at_level(logging.WARNING):
        coarse = plan_windows((40, 200, 200), (0.1,) * 3, (0.05,) * 3, (64,) * 3, 0.05, 1.5)
    assert coarse.resampled and coarse.scale == (2.0, 2.0, 2.0)
    assert coarse.scan_window == (32, 32, 32) and coarse.model_window == (64, 64, 64)
    assert "resampling" in caplog.text


def test_plan_refuses_scans_much_coarser_than_the_model() -> None:
    at_limit = plan_windows((40, 200, 200), (0.2, 0.05, 0.05), (0.05,) * 3, (64,) * 3, 0.05, 1.5, max_coarser=4)
    assert at_limit.scale == (4.0, 1.0, 1.0)
    with pytest.raises(UserError, match=r"5x1x1 times the model's.*160x200x200 grid.*inference.max_coarser=5"):
        plan_windows((32, 200, 200), (0.25, 0.05, 0.05), (0.05,) * 3, (64,) * 3, 0.05, 1.5, max_coarser=4)
    # Finer scans only make the model's grid smaller, and no limit means none.
    assert plan_windows((200, 200, 200), (0.005,) * 3, (0.05,) * 3, (64,) * 3, 0.05, 1.5, max_coarser=4).resampled
    assert plan_windows((8, 8, 8), (1.0,) * 3, (0.05,) * 3, (64,) * 3, 0.05, 1.5, max_coarser=None).resampled


def test_plan_refuses_scans_so_fine_that_the_voxel_size_is_in_the_wrong_unit() -> None:
    at_limit = plan_windows((40, 200, 200), (0.0025, 0.05, 0.05), (0.05,) * 3, (64,) * 3, 0.05, 1.5, max_finer=20)
    assert at_limit.scale == pytest.approx((0.05, 1.0, 1.0))
    with pytest.raises(UserError, match=r"1000x1000x1000 times finer.*0.0064x0.0064x0.0064 um across.*"
                                        r"inference.max_finer=1000"):
        plan_windows((128, 128, 128), (0.00005,) * 3, (0.05,) * 3, (64,) * 3, 0.05, 1.5, max_finer=20)
    assert plan_windows((8, 8, 8), (0.00005,) * 3, (0.05,) * 3, (64,) * 3, 0.05, 1.5, max_finer=None).resampled


def test_default_window_is_the_calibrated_patch_and_wide_keeps_its_overlap_band() -> None:
    assert choose_window((48, 48, 48), (8, 8, 8)) == ((48, 48, 48), (0.25, 0.25, 0.25))
    assert choose_window((48, 48, 48), (8, 8, 8), None, None, 0.5) == ((48, 48, 48), (0.5, 0.5, 0.5))
    assert choose_window((48, 48, 48), (8, 8, 8), "patch", 0.1, 0.5)[1] == (0.1, 0.1, 0.1)
    window, overlap = choose_window((64, 64, 64), (8, 8, 8), "wide")
    assert window == (128, 128, 128) and overlap == (0.125, 0.125, 0.125)
    window, overlap = choose_window((96, 96, 96), (8, 8, 8), "wide", None, 0.5)
    assert window == (160, 160, 160) and np.allclose(overlap, 0.15)
    assert choose_window((30, 200, 64), (8, 8, 8), "wide")[0] == (64, 200, 128)
    assert choose_window((64, 64, 64), (8, 8, 8), (50, 50, 50), 0.5) == ((56, 56, 56), (0.5, 0.5, 0.5))


def test_windows_of_a_few_voxels_still_reach_the_network_with_more_than_one_voxel_deep_down() -> None:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    deep = UNet(3, 1, 4, channels=(4, 8, 16, 32), strides=(2, 2, 2), num_res_units=1, norm="instance").eval()
    model = WindowModel(deep, (1.0, 1.0, 1.0), (8, 8, 8))
    for shape in ((8, 8, 8), (3, 5, 2), (1, 1, 1)):  # each would be one voxel at the deepest level
        mean, _ = model(torch.rand(1, 1, *shape))
        assert tuple(mean.shape) == (1, 4, *shape)
        torch.testing.assert_close(mean.sum(dim=1), torch.ones(1, *shape))
    assert network_shape((3, 5, 2), (8, 8, 8)) == (8, 16, 8)
    assert network_shape((8, 9, 8), (8, 8, 8)) == (8, 16, 8)  # already more than one voxel deep down
    assert network_shape((5, 40, 40), (8, 8, 8)) == (8, 40, 40)


def test_model_window_handles_odd_scan_windows(network: torch.nn.Module) -> None:
    model = WindowModel(network, (1.0, 1.0, 1.0), (2, 2, 2))
    for shape in itertools.product((5, 8), (7,), (9, 12)):
        mean, std = model(torch.rand(2, 1, *shape))
        assert tuple(mean.shape) == (2, 4, *shape) and std is None


def test_unknown_or_missing_devices_are_user_errors() -> None:
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "cuda")


def _dark_is_pore() -> torch.nn.Module:
    """A per-voxel network: pore where the input is darker than 0.5 (a steep sigmoid), else background."""
    network = torch.nn.Conv3d(1, 4, 1)
    with torch.no_grad():
        network.weight.copy_(torch.tensor([8.0, -8.0, 0.0, 0.0]).view(4, 1, 1, 1, 1))
        network.bias.copy_(torch.tensor([-4.0, 4.0, -10.0, -10.0]))
    return network.eval()


def _dark_ball(edge_um: float, voxel_um: float, radius_um: float, blur_um: float = 0.08) -> np.ndarray:
    """A bright cube with a dark ball at its centre, imaged with partial volume (4^3 samples
    per voxel) and a Gaussian blur of ``blur_um`` (standard deviation)."""
    from scipy import ndimage

    n = int(round(edge_um / voxel_um))
    sub = (np.arange(4 * n) + 0.5) * voxel_um / 4 - edge_um / 2
    inside = (sub[:, None, None] ** 2 + sub[None, :, None] ** 2 + sub[None, None, :] ** 2) < radius_um ** 2
    image = 1.0 - inside.reshape(n, 4, n, 4, n, 4).mean(axis=(1, 3, 5))
    return ndimage.gaussian_filter(image, blur_um / voxel_um).astype(np.float32)


@pytest.mark.parametrize("scan_voxel_um", [0.025, 0.035, 0.07, 0.1])
def test_a_defect_scores_alike_at_any_scan_voxel_size(scan_voxel_um: float) -> None:
    """A score is calibrated on the model's voxels (50 nm here); a scan of the same ball
    at another voxel size must score it alike (within 0.025; 0.007-0.017 now). Interpolated
    windows lowered it by 0.03-0.06, and on the held-out phantoms re-gridded to 35 nm
    ``min_score`` then hid every pore."""
    from roidetect.detect import detect_in_memory

    def pore_score(voxel_um: float) -> float:
        volume = Volume.from_array(_dark_ball(2.1, voxel_um, 0.3), voxel_um)
        model = WindowModel(_dark_is_pore(), (voxel_um / 0.05,) * 3, (2, 2, 2))
        probabilities, _, _ = run_blocks(NetworkSource(NormalisedReader(volume, IntensityLevels(0.0, 1.0)), model, (32,) * 3, 0.25,
                                                       64, batch_size=2), volume.shape)
        table = detect_in_memory(probabilities, (voxel_um,) * 3).table
        assert list(table["class"]) == ["pore"]
        return float(table["score_raw"].iloc[0])

    assert pore_score(scan_voxel_um) == pytest.approx(pore_score(0.05), abs=0.025)
