"""Segmentation networks by name, built with MONAI.

Every hyperparameter is a keyword argument, so a model package's ``card.json`` (and a Hydra
``model`` config) can rebuild the exact network: ``build_network(card["network"]["class"],
**card["network"]["args"])``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from roidetect.errors import UserError

NETWORKS = ("UNet", "SegResNet", "DynUNet", "SwinUNETR")


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
