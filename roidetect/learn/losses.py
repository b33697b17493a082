"""Segmentation losses that skip voxels that were not annotated (label 255).

MONAI's ``DiceCELoss`` and ``DiceFocalLoss`` have no ignore label. Dice, cross-entropy and
focal terms are all sums over voxels, so the annotated voxels of each patch are gathered
into a 1D "image" ``(1, C, M)`` and the MONAI loss runs on that: unannotated voxels then
contribute nothing, neither to the loss nor to its gradient.

MONAI's own ``DiceFocalLoss`` applies a sigmoid focal term to each channel and, without the
background channel, never asks the background logit to win anywhere: wrong for one-class-
per-voxel labels. ``DiceFocalLoss`` here is therefore :class:`DiceSoftmaxFocal`, MONAI's
``DiceLoss`` plus its softmax ``FocalLoss`` over every class, the background included (as
``DiceCELoss``'s cross-entropy always is); with ``gamma = 0`` and no class weights it is
``DiceCELoss``.

Per-voxel weights ``w >= 1`` (:mod:`roidetect.learn.region_weights`) add the term
``sum((w - 1) * CE) / M`` over the ``M`` annotated voxels of the batch (CE without class
weights): with ``DiceCELoss``, ``lambda_ce = 1`` and no class weights the cross-entropy
becomes the ``w``-weighted sum, and weights of 1 leave the loss unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from roidetect import labels as label_scheme
from roidetect.errors import UserError

LOSSES = ("DiceCELoss", "DiceFocalLoss")


class IgnoreLabelLoss(nn.Module):
    """Wrap a MONAI segmentation loss so that voxels labelled ``ignore_label`` are skipped.

    Parameters
    ----------
    loss : nn.Module
        A MONAI loss taking logits ``(B, C, ...)`` and integer targets ``(B, 1, ...)``
        (built with ``to_onehot_y=True, softmax=True``).
    ignore_label : int
        Target value of unannotated voxels.
    batch_dice : bool
        True pools the annotated voxels of the whole batch into one Dice (stable for rare
        classes); False averages the loss of each patch.
    """

    def __init__(self, loss: nn.Module, ignore_label: int = label_scheme.IGNORE, batch_dice: bool = True) -> None:
        super().__init__()
        self.loss = loss
        self.ignore_label = ignore_label
        self.batch_dice = batch_dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Loss over annotated voxels.

        Parameters
        ----------
        logits : float tensor, shape (B, C, Z, Y, X)
        target : integer tensor, shape (B, 1, Z, Y, X) or (B, Z, Y, X)
            Class ids; ``ignore_label`` where not annotated.
        weight : float tensor, shape of ``target``, optional
            Per-voxel weights >= 1 of an extra cross-entropy term (see the module notes).

        Returns
        -------
        scalar tensor
            Zero (still attached to the graph) when no voxel is annotated.
        """
        if target.ndim == logits.ndim - 1:
            target = target.unsqueeze(1)
        batch, channels = logits.shape[:2]
        flat_target = target.reshape(-1).long()  # voxel order (sample, z, y, x)
        annotated = (flat_target != self.ignore_label).nonzero().squeeze(1)
        if annotated.numel() == 0:
            return logits.float().sum() * 0.0
        # (C, B * N) in one copy whatever the memory layout, then the annotated voxels by
        # index: on the CPU far cheaper, forward and backward, than a boolean mask.
        picked = logits.float().transpose(0, 1).reshape(channels, -1).index_select(1, annotated)  # (C, M)
        picked_target = flat_target.index_select(0, annotated)  # (M,)
        if self.batch_dice:
            loss = self.loss(picked.unsqueeze(0), picked_target.reshape(1, 1, -1))
        else:
            sample = annotated // (flat_target.numel() // batch)  # the patch of each annotated voxel
            rows_of_patches = (sample == i for i in sample.unique())
            loss = torch.stack([self.loss(picked[:, rows][None], picked_target[rows].reshape(1, 1, -1))
                                for rows in rows_of_patches]).mean()
        if weight is None:
            return loss
        extra = weight.reshape(-1).index_select(0, annotated).float() - 1.0
        cross_entropy = F.cross_entropy(picked.unsqueeze(0), picked_target.unsqueeze(0), reduction="none")[0]
        return loss + (extra * cross_entropy).sum() / picked_target.numel()


class DiceSoftmaxFocal(nn.Module):
    """Dice plus softmax focal loss, MONAI's parts, on logits ``(B, C, ...)`` and class ids ``(B, 1, ...)``.

    Parameters
    ----------
    include_background : bool
        Whether the Dice term counts the background channel (the focal term always does).
    weight : tensor of shape (C,), optional
        Class weights of the focal term; the Dice term gets the foreground ones when
        ``include_background`` is False.
    lambda_dice, lambda_focal : float
        Weights of the two terms.
    gamma : float
        Focal exponent: ``-(1 - p_t)^gamma * log(p_t)`` per voxel, summed over classes (so
        ``gamma = 0`` is the cross-entropy of ``DiceCELoss``) and averaged over voxels.
    **dice_args
        Other ``monai.losses.DiceLoss`` arguments (``smooth_nr``, ``batch``, ...).
    """

    def __init__(self, include_background: bool = True, weight: torch.Tensor | None = None, lambda_dice: float = 1.0,
                 lambda_focal: float = 1.0, gamma: float = 2.0, **dice_args: Any) -> None:
        from monai.losses import DiceLoss, FocalLoss

        super().__init__()
        if lambda_dice < 0 or lambda_focal < 0:
            raise ValueError("lambda_dice and lambda_focal must be >= 0")
        dice_weight = weight if weight is None or include_background else weight[1:]
        self.dice = DiceLoss(include_background=include_background, to_onehot_y=True, softmax=True,
                             weight=dice_weight, **dice_args)
        self.focal = FocalLoss(include_background=True, to_onehot_y=True, use_softmax=True, gamma=gamma,
                               weight=weight, reduction="none")
        self.lambda_dice = lambda_dice
        self.lambda_focal = lambda_focal

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        focal = self.focal(logits, target).sum(1).mean()  # per voxel over classes, then over voxels
        return self.lambda_dice * self.dice(logits, target) + self.lambda_focal * focal


def build_loss(name: str, class_weights: Sequence[float] | None = None, batch_dice: bool = True,
               ignore_label: int = label_scheme.IGNORE, **kwargs: Any) -> IgnoreLabelLoss:
    """A Dice+CE or Dice+softmax-focal loss (MONAI's parts) that ignores unannotated voxels.

    Parameters
    ----------
    name : {"DiceCELoss", "DiceFocalLoss"}
    class_weights : sequence of float, optional
        One weight per output channel (background first), applied to both terms.
    batch_dice : bool
        See :class:`IgnoreLabelLoss`.
    ignore_label : int
    **kwargs
        Other arguments of the MONAI loss (``include_background``, ``lambda_dice``,
        ``lambda_ce`` / ``lambda_focal``, ``gamma``, ``smooth_nr``, ...).
    """
    from monai import losses

    if name not in LOSSES:
        raise UserError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    weight = None if class_weights is None else torch.as_tensor([float(w) for w in class_weights])
    try:
        if name == "DiceFocalLoss":
            loss = DiceSoftmaxFocal(weight=weight, **kwargs)
        else:  # MONAI drops the background weight for Dice itself but needs the full vector for CE
            loss = losses.DiceCELoss(to_onehot_y=True, softmax=True, weight=weight, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot build {name} with arguments {kwargs}: {exc}") from exc
    return IgnoreLabelLoss(loss, ignore_label=ignore_label, batch_dice=batch_dice)
