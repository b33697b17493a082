"""The LightningModule: a MONAI network, a masked loss, AdamW with warm-up and cosine decay,
and validation on whole volumes with Gaussian sliding-window inference.

Every constructor argument is a plain dictionary or list (from the Hydra config), stored
with ``save_hyperparameters`` so that checkpoints hold only plain data and can be loaded
with ``weights_only=True``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from roidetect.inference.network import Augmentation
from roidetect.inference.settings import detection_params
from roidetect.labels import DEFECT_NAMES
from roidetect.learn.losses import build_loss
from roidetect.learn.networks import build_network
from roidetect.learn.validation import COUNT_FIELDS, metrics_from_counts, score_volume

MONITOR = "val/f1_mean"
"""The metric that picks the best checkpoint: mean instance F1 over the defect classes."""


def warmup_cosine(progress: float, warmup_fraction: float, min_lr_ratio: float) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to ``min_lr_ratio``.

    Parameters
    ----------
    progress : float
        Fraction of training done, in [0, 1] (by steps, or by time under ``max_time``).
    warmup_fraction : float
        Fraction of training spent warming up from 0.
    min_lr_ratio : float
        Factor reached at the end.
    """
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup_fraction:
        return progress / warmup_fraction
    decay = (progress - warmup_fraction) / max(1.0 - warmup_fraction, 1e-12)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * decay))


@torch.no_grad()
def volume_probabilities(network: torch.nn.Module, image: torch.Tensor, patch_size: Sequence[int],
                         sliding_window: Mapping[str, Any],
                         augmentations: Sequence[Augmentation] = (Augmentation(),)) -> np.ndarray:
    """Class probabilities of a whole volume by Gaussian-weighted sliding-window inference.

    Parameters
    ----------
    network : nn.Module
        Maps (B, 1, z, y, x) to logits (B, 4, z, y, x); runs on its own device.
    image : float tensor, shape (1, Z, Y, X)
        The normalised volume.
    patch_size : (3,) int
        Window shape.
    sliding_window : mapping
        ``overlap``, ``sw_batch_size`` and ``mode`` of
        :func:`monai.inferers.sliding_window_inference`.
    augmentations : sequence of Augmentation
        The softmax is averaged over these (each mapped back), as ``roidetect predict --tta``
        averages :func:`roidetect.inference.network.augmentations`; default: the identity.

    Returns
    -------
    ndarray of float32, shape (4, Z, Y, X)
    """
    from monai.inferers import sliding_window_inference

    device = next(network.parameters()).device
    total = None
    for augmentation in augmentations:
        logits = sliding_window_inference(augmentation.forward(image[None].to(device)),
                                          roi_size=tuple(int(p) for p in patch_size),
                                          sw_batch_size=int(sliding_window["sw_batch_size"]), predictor=network,
                                          overlap=float(sliding_window["overlap"]), mode=str(sliding_window["mode"]))
        probabilities = augmentation.inverse(torch.softmax(logits.float(), dim=1))
        total = probabilities if total is None else total + probabilities
    return (total / len(augmentations))[0].cpu().numpy()


def build_optimizer(parameters: Iterable[torch.nn.Parameter], settings: Mapping[str, Any]) -> torch.optim.Optimizer:
    """A ``torch.optim`` optimiser from the ``optimizer`` config (``name``, ``lr``, ``weight_decay``, ``args``)."""
    from roidetect.errors import UserError

    optimizer_class = getattr(torch.optim, str(settings["name"]), None)
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, torch.optim.Optimizer)):
        raise UserError(f"optimizer.name={settings['name']!r} is not an optimiser in torch.optim (e.g. AdamW, SGD)")
    try:
        return optimizer_class(parameters, lr=float(settings["lr"]), weight_decay=float(settings.get("weight_decay", 0.0)),
                               **dict(settings.get("args", {})))
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot build {settings['name']} with {dict(settings)}: {exc}") from exc


class SegmentationModule(pl.LightningModule):
    """Trains a segmentation network on patches and validates it on whole volumes.

    Parameters
    ----------
    network : mapping
        ``{"class": name, "args": {...}}`` for :func:`roidetect.learn.networks.build_network`.
    loss : mapping
        Keyword arguments of :func:`roidetect.learn.losses.build_loss` (``name``, ...).
    optimizer : mapping
        ``name`` (a ``torch.optim`` class), ``lr``, ``weight_decay``, ``args`` (other
        constructor arguments), ``warmup_fraction`` and ``min_lr_ratio``.
    patch_size : (3,) int
        Training patch and sliding-window size (z, y, x).
    sliding_window : mapping
        ``overlap``, ``sw_batch_size`` and ``mode`` of
        :func:`monai.inferers.sliding_window_inference`.
    detection : mapping
        :class:`roidetect.detect.DetectionParams` fields for validation; null values keep
        detect's defaults (merged as ``roidetect predict`` merges them).
    channels_last : bool
        Keep the network's weights and the batches in the channels-last 3D memory format
        (oneDNN's fast layout on the CPU; the results differ only by float rounding).
    """

    def __init__(self, network: Mapping[str, Any], loss: Mapping[str, Any], optimizer: Mapping[str, Any],
                 patch_size: Sequence[int], sliding_window: Mapping[str, Any], detection: Mapping[str, Any],
                 channels_last: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.network = build_network(network["class"], **network["args"])
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.network.to(memory_format=self.memory_format)
        self.loss = build_loss(**loss)
        self.detection = detection_params(None, detection)
        self._val_counts = np.zeros((0, len(DEFECT_NAMES), len(COUNT_FIELDS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, 4, Z, Y, X) of a normalised batch (B, 1, Z, Y, X)."""
        return self.network(x.contiguous(memory_format=self.memory_format))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["image"]), batch["label"], batch.get("weight"))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch["image"].shape[0],
                 sync_dist=True)
        return loss

    def predict_probabilities(self, image: torch.Tensor) -> np.ndarray:
        """Class probabilities (4, Z, Y, X) of a whole normalised volume (1, Z, Y, X)."""
        return volume_probabilities(self.network, image, self.hparams.patch_size, self.hparams.sliding_window)

    def on_validation_epoch_start(self) -> None:
        volumes = len(self.trainer.datamodule.val_volumes)
        self._val_counts = np.zeros((volumes, len(DEFECT_NAMES), len(COUNT_FIELDS)))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        probabilities = self.predict_probabilities(batch["image"])
        scored = score_volume(probabilities, batch["label"], batch["instances"], batch["spacing_um"], self.detection)
        self._val_counts[batch["index"]] = scored.counts

    def on_validation_epoch_end(self) -> None:
        # Under DDP the sampler pads the volume list, so some volumes are scored twice, with
        # the same counts: the element-wise maximum over processes counts each volume once.
        counts = torch.as_tensor(self._val_counts, dtype=torch.float64, device=self.device)
        counts = self.trainer.strategy.reduce(counts, reduce_op="max")
        metrics = metrics_from_counts(counts.sum(dim=0).cpu().numpy())
        values = {f"val/{k}": (0.0 if math.isnan(v) else v) for k, v in metrics.items()}
        # The values are the same in every process already; sync_dist keeps Lightning content.
        self.log(MONITOR, values.pop(MONITOR), prog_bar=True, sync_dist=True)
        self.log_dict(values, sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        settings = dict(self.hparams.optimizer)
        optimizer = build_optimizer(self.parameters(), settings)
        warmup, floor = float(settings["warmup_fraction"]), float(settings["min_lr_ratio"])
        trainer = self.trainer
        total_steps = trainer.estimated_stepping_batches
        timer = next((c for c in trainer.callbacks if isinstance(c, pl.callbacks.Timer)), None)

        def factor(step: int) -> float:
            if math.isfinite(total_steps) and total_steps > 0:
                progress = step / total_steps
            elif timer is not None and timer.time_remaining("train") is not None:
                elapsed = timer.time_elapsed("train")
                progress = elapsed / max(elapsed + timer.time_remaining("train"), 1e-9)
            else:
                progress = 0.0
            return warmup_cosine(progress, warmup, floor)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
