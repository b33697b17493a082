"""Segmentation networks by name, built with MONAI.

Every hyperparameter is a keyword argument, so a model package's ``card.json`` (and a Hydra
``model`` config) can rebuild the exact network: ``build_network(card["network"]["class"],
**card["network"]["args"])``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from roidetect.errors import UserError

NETWORKS = ("UNet", "SegResNet", "DynUNet", "SwinUNETR")


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN computes bfloat16 natively on this CPU (AVX512-BF16 / AMX).

    Elsewhere (e.g. AVX2-only CPUs) bfloat16 is emulated and about 10x slower than float32,
    so training and inference choose float32 there.
    """
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def build_network(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate a MONAI 3D segmentation network.

    Parameters
    ----------
    name : {"UNet", "SegResNet", "DynUNet", "SwinUNETR"}
        Class name in ``monai.networks.nets``.
    **kwargs
        The network's constructor arguments (``in_channels``, ``out_channels`` and the
        architecture's own); ``spatial_dims`` defaults to 3.

    Returns
    -------
    torch.nn.Module
        Maps (B, in_channels, Z, Y, X) float tensors to (B, out_channels, Z, Y, X) logits.
    """
    from monai.networks import nets

    if name not in NETWORKS:
        raise UserError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
    kwargs = dict(kwargs)
    kwargs.setdefault("spatial_dims", 3)
    try:
        return getattr(nets, name)(**kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise UserError(f"cannot build {name} with arguments {kwargs}: {exc}") from exc


def input_divisor(name: str, args: Mapping[str, Any]) -> tuple[int, int, int]:
    """What every input edge (z, y, x) of ``name`` built with ``args`` must be a multiple of.

    It is the network's total down-sampling per axis: the product of the strides for UNet
    and DynUNet, ``2 ** (len(blocks_down) - 1)`` for SegResNet and ``patch_size * 16`` for
    SwinUNETR. Training patch sizes are rounded to it.
    """
    import numpy as np

    if name in ("UNet", "DynUNet"):
        factors = np.ones(3, dtype=int)
        for stride in args.get("strides", ()):
            factors *= np.broadcast_to(np.asarray(stride, dtype=int), (3,))
        return tuple(int(f) for f in factors)  # type: ignore[return-value]
    if name == "SegResNet":
        return (2 ** (len(args.get("blocks_down", (1, 2, 2, 4))) - 1),) * 3  # type: ignore[return-value]
    if name == "SwinUNETR":
        return (int(args.get("patch_size", 2)) * 16,) * 3  # type: ignore[return-value]
    raise UserError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
