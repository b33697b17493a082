"""Faster float32 kernels for 3D networks on the CPU, for inference.

Two PyTorch defaults cost a 3D U-Net about half its CPU time in float32:

- **Convolutions off oneDNN.** PyTorch's CPU dispatch sends a float32 convolution to oneDNN
  only when ``N * C * D * H`` of its input exceeds 20480 (a rule tuned for 2D images), so in a
  batch of one window the 3D convolutions at coarse levels (32 channels at 24^3, 64 at
  12^3) and the first one (1 channel) fall back to the generic ``slow_conv3d``: 8x slower
  than oneDNN for a 32-channel 24^3 input on an AVX2 CPU. :func:`use_cpu_kernels` routes
  every ``nn.Conv3d`` with zero padding straight to ``aten.mkldnn_convolution``.
- **Instance norm in channels-last.** ``instance_norm`` copies a channels-last input to the
  contiguous layout and back. For a batch of one sample the per-channel statistics of
  instance norm are those of batch norm in training mode, whose CPU kernel works on
  channels-last data directly; samples of a larger batch are normalised one by one.
  Layers with fewer than 8 channels keep ``instance_norm`` (the channels-last batch-norm
  kernel vectorises over channels and is slow there).

Together with the channels-last 3D memory format, the shipped UNet runs a 96^3 window in
about half the time (benchmarks/bench_inference.py). Results agree with the default kernels
to float32 rounding (summation order differs).
"""

from __future__ import annotations

import copy
import types

import torch
import torch.nn.functional as F
from torch import nn

_MIN_CHANNELS_LAST_NORM = 8


def use_cpu_kernels(network: nn.Module) -> nn.Module:
    """A copy of ``network`` whose 3D convolutions and instance norms use the kernels above.

    Parameters
    ----------
    network : nn.Module
        Any network; modules other than ``nn.Conv3d`` (zero padding) and
        ``nn.InstanceNorm3d`` (without running statistics) are left as they are.

    Returns
    -------
    nn.Module
        The copy (same class and attributes; only those modules' ``forward`` differs). The
        new kernels run for float32 CPU tensors outside autocast; anything else takes the
        modules' own ``forward``.
    """
    fast = copy.deepcopy(network)
    for module in fast.modules():
        if type(module) is nn.Conv3d and module.padding_mode == "zeros" and isinstance(module.padding, tuple):
            module.forward = types.MethodType(_onednn_conv3d, module)
        elif type(module) is nn.InstanceNorm3d and not module.track_running_stats:
            module.forward = types.MethodType(_channels_last_instance_norm, module)
    return fast


def _fast_path(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


def _onednn_conv3d(self: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    if not _fast_path(x) or x.dim() != 5:
        return nn.Conv3d.forward(self, x)
    return torch.ops.aten.mkldnn_convolution(x, self.weight, self.bias, list(self.padding), list(self.stride),
                                             list(self.dilation), self.groups)


def _channels_last_instance_norm(self: nn.InstanceNorm3d, x: torch.Tensor) -> torch.Tensor:
    if not _fast_path(x) or x.dim() != 5 or x.shape[1] < _MIN_CHANNELS_LAST_NORM:
        return nn.InstanceNorm3d.forward(self, x)
    samples = [F.batch_norm(x[i:i + 1], None, None, self.weight, self.bias, True, 0.0, self.eps)
               for i in range(x.shape[0])]
    return samples[0] if len(samples) == 1 else torch.cat(samples)
