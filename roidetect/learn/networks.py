"""Segmentation networks by name, built with MONAI.

Every hyperparameter is a keyword argument, so a model package's ``card.json`` (and a Hydra
``model`` config) can rebuild the exact network: ``build_network(card["network"]["class"],
**card["network"]["args"])``. An :class:`Ensemble` of trained networks is described the same
way, by its members' classes and arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from roidetect.errors import UserError

NETWORKS = ("UNet", "SegResNet", "DynUNet", "SwinUNETR")
"""Trainable architectures (``monai.networks.nets`` classes)."""

ENSEMBLE = "Ensemble"
"""The class name of :class:`Ensemble` in a card's ``network``."""


class Ensemble(nn.Module):
    """Several trained networks with the same classes, whose softmax probabilities are averaged.

    ``forward`` maps (B, in_channels, Z, Y, X) to (B, C, Z, Y, X) float32 log-probabilities,
    the log of the members' mean softmax, so a softmax of the output is that mean. Parameters
    are named ``members.{i}.{name}`` after the members' own.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise UserError("an ensemble needs at least one member network")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = torch.softmax(self.members[0](x).float(), dim=1)
        for member in self.members[1:]:
            total = total + torch.softmax(member(x).float(), dim=1)
        return torch.log((total / len(self.members)).clamp_min(torch.finfo(torch.float32).tiny))


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively: AVX512-BF16 or AMX.

    Elsewhere bfloat16 is emulated, so training and inference choose float32 there: about
    10x slower than float32 on AVX2-only CPUs, and 2.5x on AVX512 CPUs without BF16 (Intel
    Xeon up to Ice Lake; `docs/inference.md`), where oneDNN's own check
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) still says yes.
    """
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def build_network(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate a MONAI 3D segmentation network.

    Parameters
    ----------
    name : {"UNet", "SegResNet", "DynUNet", "SwinUNETR", "Ensemble"}
        Class name in ``monai.networks.nets``, or ``Ensemble``.
    **kwargs
        The network's constructor arguments (``in_channels``, ``out_channels`` and the
        architecture's own); ``spatial_dims`` defaults to 3. For ``Ensemble``: ``members``, a
        list of ``{"class": name, "args": {...}}``, one per member network.

    Returns
    -------
    torch.nn.Module
        Maps (B, in_channels, Z, Y, X) float tensors to (B, out_channels, Z, Y, X) logits.
    """
    from monai.networks import nets

    if name == ENSEMBLE:
        members = kwargs.get("members")
        if (set(kwargs) != {"members"} or not isinstance(members, list)
                or not all(isinstance(m, Mapping) and "class" in m for m in members)):
            raise UserError(f"{ENSEMBLE} takes one argument, members: a list of {{'class': ..., 'args': ...}}")
        return Ensemble([build_network(m["class"], **m.get("args", {})) for m in members])
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
    SwinUNETR, and the least common multiple over the members for an ``Ensemble``. Training
    patch sizes are rounded to it.
    """
    import numpy as np

    if name == ENSEMBLE:
        divisors = [input_divisor(m["class"], m.get("args", {})) for m in args.get("members", ())]
        return tuple(int(np.lcm.reduce(axis)) for axis in zip(*divisors))  # type: ignore[return-value]
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
