"""``predict`` with a network: load the package, plan windows, build the block-wise source."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from roidetect.errors import UserError
from roidetect.inference.cpu_kernels import use_cpu_kernels
from roidetect.inference.engine import NetworkSource
from roidetect.inference.model import (DEFAULT_MODEL, WINDOW_MODES, choose_window, plan_windows, resolve_device,
                                       resolve_precision)
from roidetect.inference.network import Augmentation, WindowModel, augmentations
from roidetect.inference.settings import detection_params, fill_setting, positive_int, triplet
from roidetect.inference.sources import NormalisedReader
from roidetect.intensity import intensity_levels
from roidetect.learn.networks import input_divisor
from roidetect.resources import shipped_models
from roidetect.volume import Volume

log = logging.getLogger(__name__)

class NetworkRun:
    """A model package, ready to run on one scan.

    Parameters
    ----------
    volume : Volume
        The scan, or the region of it to predict.
    cfg : dict
        Resolved ``predict.yaml`` settings (``model``, ``device``, ``tta``, ``inference``).
    whole : Volume, optional
        The whole scan when ``volume`` is a region of it: its grey values set the
        normalisation, so that a region is normalised as the scan is.
    """

    def __init__(self, volume: Volume, cfg: dict[str, Any], whole: Volume | None = None) -> None:
        from roidetect.learn.bundle import load_package, sliding_window_of

        self.volume = volume
        self.cfg = cfg
        settings = cfg["inference"]
        _check_engine_settings(settings)
        self.device = resolve_device(cfg["device"])
        self.precision = resolve_precision(settings["precision"], self.device)
        if cfg["model"] == DEFAULT_MODEL and DEFAULT_MODEL not in shipped_models() and not Path(DEFAULT_MODEL).is_dir():
            raise UserError("no default model is installed (models/default is missing); pass --model with a model "
                            "package folder, a shipped model name, or 'classical'")
        self.package = load_package(cfg["model"], self.device)
        card = self.package.card
        percentiles = _percentiles(card, self.package.path)
        if settings["threads"] is not None:
            torch.set_num_threads(int(settings["threads"]))
        network = card["network"]
        divisor = input_divisor(network["class"], network.get("args", {}))
        patch = triplet(card["patch_size"], f"{self.package.path}: card.json patch_size")
        calibrated_overlap = sliding_window_of(card, self.package.path)["overlap"]
        window, self.overlap = choose_window(patch, divisor, _window_setting(settings["window"]), settings["overlap"],
                                             calibrated_overlap)
        self.plan = plan_windows(volume.shape, volume.spacing_um, _voxel_size(card, self.package.path), window,
                                 float(settings["resample_tolerance"]), float(settings["warn_ratio"]),
                                 *(None if settings[key] is None else float(settings[key])
                                   for key in ("max_coarser", "max_finer")))
        variants = augmentations(bool(cfg["tta"]["rotations"])) if cfg["tta"]["enabled"] else [Augmentation()]
        self.cpu_kernels = _cpu_kernels(settings["cpu_kernels"], self.device, self.precision)
        network = use_cpu_kernels(self.package.network) if self.cpu_kernels else self.package.network
        self.model = WindowModel(network, self.plan.scale, divisor, self.precision,
                                 _channels_last(settings["channels_last"], self.precision, self.cpu_kernels), variants)
        self.intensity = intensity_levels(whole or volume, percentiles, fill_setting(settings["fill_value"]))
        self.calibration_mode, self.calibration, card_detection = _calibration_for_mode(
            card, bool(cfg["tta"]["enabled"]), self.package.path)
        self.detection = detection_params(card_detection, cfg["detection"])

    @property
    def with_uncertainty(self) -> bool:
        return self.model.with_uncertainty

    def source(self) -> NetworkSource:
        settings = self.cfg["inference"]
        reader = NormalisedReader(self.volume, self.intensity)
        return NetworkSource(reader, self.model, self.plan.scan_window, self.overlap,
                             int(settings["block_size"]), int(settings["batch_size"]), float(settings["sigma_scale"]))

    def describe(self) -> dict[str, Any]:
        card = self.package.card
        return {
            "name": card["name"], "kind": "network", "path": str(self.package.path.resolve()),
            "network": card["network"], "voxel_size_um": card["voxel_size_um"], "patch_size": card["patch_size"],
            "normalisation": card["normalisation"], "classes": card["classes"],
            "device": str(self.device), "precision": str(self.precision).removeprefix("torch."),
            "cpu_kernels": self.cpu_kernels,
            "channels_last": self.model.memory_format == torch.channels_last_3d,
            "threads": torch.get_num_threads(),
            "window_scan_voxels": list(self.plan.scan_window), "window_model_voxels": list(self.plan.model_window),
            "overlap": list(self.overlap),
            "resampled": self.plan.resampled, "voxel_size_ratio": list(self.plan.voxel_ratio),
            "tta_variants": len(self.model.augmentations),
            "calibration": self.calibration_mode,
        }


def _cpu_kernels(setting: Any, device: torch.device, precision: torch.dtype) -> bool:
    """``auto``: on for float32 on the CPU (:mod:`roidetect.inference.cpu_kernels`)."""
    return _flag(setting, "cpu_kernels", device.type == "cpu" and precision == torch.float32)


def _channels_last(setting: Any, precision: torch.dtype, cpu_kernels: bool) -> bool:
    """``auto``: channels-last with bf16/fp16 and with the CPU kernels (faster there), else contiguous."""
    return _flag(setting, "channels_last", precision != torch.float32 or cpu_kernels)


def _flag(setting: Any, key: str, auto: bool) -> bool:
    """An ``inference.KEY`` setting of auto, true or false; ``auto`` gives ``auto``."""
    if setting == "auto":
        return auto
    if not isinstance(setting, bool):
        raise UserError(f"inference.{key}={setting}: choose auto, true or false")
    return setting


def _percentiles(card: dict[str, Any], path: Path) -> tuple[float, float]:
    norm = card["normalisation"]
    if not isinstance(norm, dict) or norm.get("method") != "volume_percentiles":
        raise UserError(f"{path}: card.json normalisation {norm!r} is not supported; "
                        "expected {\"method\": \"volume_percentiles\", \"percentiles\": [low, high]}")
    try:
        low, high = (float(p) for p in norm.get("percentiles", (0.5, 99.5)))
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: card.json normalisation percentiles must be two numbers") from exc
    if not 0.0 <= low < high <= 100.0:
        raise UserError(f"{path}: card.json normalisation percentiles {low}, {high} must satisfy 0 <= low < high <= 100")
    return low, high


def _voxel_size(card: dict[str, Any], path: Path) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in card["voxel_size_um"])
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: card.json voxel_size_um must be three numbers (z, y, x)") from exc
    if len(values) != 3 or min(values) <= 0:
        raise UserError(f"{path}: card.json voxel_size_um must be three positive numbers (z, y, x)")
    return values  # type: ignore[return-value]


def _calibration_for_mode(card: dict[str, Any], tta: bool,
                          path: Path) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
    """Which calibration fits the inference mode (``"plain"`` or ``"tta"``), its curves, and
    the card's detection section with that mode's ``min_score``.

    Under TTA the card's ``tta`` section (fitted on TTA predictions) replaces the top-level
    ``calibration`` and ``detection.min_score``; a card without one keeps them, with a warning,
    since averaged probabilities score differently (see :mod:`roidetect.learn.final_validation`).
    """
    detection = dict(card.get("detection") or {})
    if not tta:
        return "plain", card.get("calibration"), detection
    section = card.get("tta")
    if section is None:
        log.warning("%s: the scores of this model were calibrated without TTA; under --tta they and the "
                    "min_score filter are off (refit them with 'roidetect calibrate')", path)
        return "plain", card.get("calibration"), detection
    return "tta", section.get("calibration"), {**detection, "min_score": section.get("min_score", {})}


def _window_setting(value: Any) -> str | tuple[int, int, int] | None:
    """``inference.window``: ``patch``, ``wide``, null (``patch``) or a shape."""
    if value is None or value in WINDOW_MODES:
        return value
    if isinstance(value, str):
        raise UserError(f"inference.window={value}: choose {' or '.join(WINDOW_MODES)}, or give a window edge in "
                        "model voxels (one value or [z, y, x])")
    return triplet(value, "inference.window")


def _check_engine_settings(settings: dict[str, Any]) -> None:
    """The engine's numeric settings, checked before any work."""
    for key in ("block_size", "batch_size") + (("threads",) if settings["threads"] is not None else ()):
        positive_int(settings[key], f"inference.{key}")
    for key, low, high in (("overlap", 0.0, 1.0), ("sigma_scale", 1e-3, 1e6), ("max_coarser", 1.0, math.inf),
                             ("max_finer", 1.0, math.inf)):
        value = settings[key]
        if value is not None and not (isinstance(value, (int, float)) and low <= value < high):
            raise UserError(f"inference.{key}={value}: must be a number in [{low}, {high})")
