"""roidetect.inference.cpu_kernels: same results as PyTorch's kernels, in both memory layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from roidetect.errors import UserError
from roidetect.inference.cpu_kernels import use_cpu_kernels
from roidetect.inference.network_run import NetworkRun
from roidetect.inference.settings import load_settings
from roidetect.learn.bundle import save_package
from roidetect.volume import Volume


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(3, 1, 4, channels=(8, 16, 32), strides=(2, 2), num_res_units=1, norm="instance").eval()


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_outputs_match_pytorch_kernels(unet: nn.Module, batch: int, channels_last: bool) -> None:
    fast = use_cpu_kernels(unet)
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    x = torch.randn(batch, 1, 32, 32, 32)
    with torch.no_grad():
        expected = unet(x)
        got = fast.to(memory_format=layout)(x.contiguous(memory_format=layout))
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    if channels_last:  # the fast instance norm keeps the layout instead of copying
        assert got.is_contiguous(memory_format=torch.channels_last_3d)


def test_original_network_is_untouched_and_kernels_are_used(unet: nn.Module) -> None:
    fast = use_cpu_kernels(unet)
    convs = [m for m in fast.modules() if isinstance(m, nn.Conv3d)]
    norms = [m for m in fast.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert convs and norms
    assert all("forward" in vars(m) for m in convs + norms)
    assert not any("forward" in vars(m) for m in unet.modules())
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad(), torch.profiler.profile() as prof:
        fast(x)
    ops = {event.key for event in prof.key_averages()}
    assert "aten::mkldnn_convolution" in ops
    assert "aten::slow_conv3d_forward" not in ops  # PyTorch's own dispatch sends small 3D inputs here


def test_other_dtypes_take_the_modules_own_forward() -> None:
    conv = nn.Conv3d(2, 3, 3, padding=1).double()
    norm = nn.InstanceNorm3d(8, affine=True).double()
    fast_conv, fast_norm = use_cpu_kernels(conv), use_cpu_kernels(norm)
    x, y = torch.randn(1, 2, 8, 8, 8, dtype=torch.float64), torch.randn(2, 8, 6, 6, 6, dtype=torch.float64)
    assert torch.equal(fast_conv(x), conv(x))
    assert torch.equal(fast_norm(y), norm(y))


def test_affine_instance_norm_matches() -> None:
    norm = nn.InstanceNorm3d(16, affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    x = torch.randn(3, 16, 10, 12, 14).contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        assert torch.allclose(use_cpu_kernels(norm)(x), norm(x.contiguous()), atol=1e-5)


def test_predict_setting_auto_turns_kernels_on_for_cpu_float32(unet: nn.Module, tmp_path) -> None:
    card = {"name": "t", "classes": {"0": "background", "1": "pore", "2": "crack", "3": "delamination"},
            "network": {"class": "UNet", "args": {"in_channels": 1, "out_channels": 4, "channels": [8, 16, 32],
                                                  "strides": [2, 2], "num_res_units": 1, "norm": "instance"}},
            "voxel_size_um": [1.0, 1.0, 1.0], "patch_size": [16, 16, 16],
            "normalisation": {"method": "volume_percentiles", "percentiles": [0.5, 99.5]}}
    package = save_package(tmp_path / "model", unet, card)
    volume = Volume.from_array(np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32), 1.0)
    results = {}
    for setting in ("auto", False):
        cfg = load_settings({"model": str(package), "device": "cpu",
                             "inference": {"precision": "float32", "cpu_kernels": setting}})
        run = NetworkRun(volume, cfg)
        assert run.describe()["cpu_kernels"] is (setting == "auto")
        assert run.describe()["channels_last"] is (setting == "auto")
        probabilities = np.zeros((4, 40, 40, 40), np.float32)
        for block in run.source().blocks():
            probabilities[(slice(None), *block.core)] = block.probabilities
        results[setting] = probabilities
    assert np.abs(results["auto"] - results[False]).max() < 1e-4
    bad = load_settings({"model": str(package), "device": "cpu", "inference": {"cpu_kernels": "fast"}})
    with pytest.raises(UserError, match="inference.cpu_kernels=fast"):
        NetworkRun(volume, bad)
