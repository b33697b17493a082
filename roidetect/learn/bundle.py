"""Model packages: a folder with ``weights.safetensors`` and ``card.json``. No pickle.

``card.json`` describes the model completely enough to run it (keys marked * are required):

- ``format``*: ``"roidetect-model/1"``
- ``name``*: short name; ``classes``*: ``{"0": "background", "1": "pore", ...}``
- ``network``*: ``{"class": "UNet", "args": {...}}``, rebuilt by
  :func:`roidetect.learn.networks.build_network`
- ``voxel_size_um``*: ``[z, y, x]`` the model was trained at
- ``normalisation``*: ``{"method": "volume_percentiles", "percentiles": [0.5, 99.5]}``
  (see :mod:`roidetect.intensity`)
- ``patch_size``*: ``[z, y, x]`` training patch size in voxels (the default inference window)
- ``sliding_window``: ``overlap``, ``sw_batch_size``, ``mode`` of the patch-sized windows the
  calibration was fitted with; ``roidetect predict`` runs the same windows and overlap by
  default (``inference.window=patch``); missing entries take :data:`DEFAULT_SLIDING_WINDOW`
- ``detection``: thresholds for :mod:`roidetect.detect` (``high_threshold``,
  ``low_threshold``, ``min_volume_um3`` and ``min_score`` per class name)
- ``calibration``: per class name ``{"x": [...], "y": [...]}``, a monotone piecewise-linear
  map from raw instance score to probability of being real (isotonic regression)
- ``tta``: the same for ``roidetect predict --tta``, fitted on TTA predictions of the same
  validation volumes: ``augmentations``, ``variants``, ``min_score`` and ``calibration``
  (used in place of the top-level ones under TTA), ``validation`` (metrics) and
  ``calibration_samples`` (:mod:`roidetect.learn.final_validation`)
- ``calibration_data``: the volumes both calibrations were fitted on: ``{"kind":
  "validation", "volumes": [ids]}`` (training) or ``{"kind": "dataset", "path": ...,
  "volumes": [ids]}`` (``roidetect calibrate --data``)
- ``training``, ``metrics``, ``versions``, ``config``: provenance for the model card.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from roidetect.errors import UserError
from roidetect.learn.networks import build_network
from roidetect.resources import models_dir, shipped_models
from roidetect.volume import write_json

FORMAT = "roidetect-model/1"
REQUIRED_KEYS = ("format", "name", "classes", "network", "voxel_size_um", "normalisation", "patch_size")
WEIGHTS = "weights.safetensors"
CARD = "card.json"
DEFAULT_SLIDING_WINDOW = {"overlap": 0.25, "sw_batch_size": 1, "mode": "gaussian"}
"""What a card without (part of) ``sliding_window`` is calibrated and predicted with."""


@dataclass
class ModelPackage:
    """A loaded model: the network in eval mode, its card, and where it came from."""

    network: nn.Module
    card: dict[str, Any]
    path: Path


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """Turn a model package folder (``~`` expanded) or the name of a shipped model into a folder path."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        return candidate
    if str(name_or_path) in shipped_models():
        return models_dir() / str(name_or_path)
    known = ", ".join(shipped_models()) or "none installed"
    raise UserError(f"unknown model {str(name_or_path)!r}: not a model package folder nor a shipped model "
                    f"(shipped: {known}; roidetect predict also takes 'classical')")


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a package's ``card.json``."""
    card_path = Path(path) / CARD
    if not card_path.is_file():
        raise UserError(f"{path}: not a model package (no {CARD})")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{card_path}: not valid JSON ({exc})") from exc
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise UserError(f"{card_path}: missing keys {', '.join(missing)}")
    if card["format"] != FORMAT:
        raise UserError(f"{card_path}: format {card['format']!r} is not {FORMAT!r}")
    return card


def load_package(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> ModelPackage:
    """Load a model package without pickle.

    Raises
    ------
    UserError
        Unknown name, missing files, or weights that do not match the network in the card.
    """
    from safetensors.torch import load_file

    path = resolve_model_path(name_or_path)
    card = read_card(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise UserError(f"{path}: model package has no {WEIGHTS}")
    network = build_network(card["network"]["class"], **card["network"].get("args", {}))
    try:
        state = load_file(weights, device=str(device))
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise UserError(f"{weights}: cannot read the weights ({exc})") from exc
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise UserError(f"{weights}: weights do not match the network in {CARD} ({first})") from exc
    network.to(device).eval()
    return ModelPackage(network, card, path)


def sliding_window_of(card: dict[str, Any], path: str | os.PathLike = "card.json") -> dict[str, Any]:
    """The card's ``sliding_window``, completed from :data:`DEFAULT_SLIDING_WINDOW`.

    Raises
    ------
    UserError
        When its ``overlap`` is not a number in [0, 1) (``path`` names the package).
    """
    window = {**DEFAULT_SLIDING_WINDOW, **(card.get("sliding_window") or {})}
    overlap = window["overlap"]
    if not (isinstance(overlap, (int, float)) and 0 <= overlap < 1):
        raise UserError(f"{path}: card.json sliding_window.overlap={overlap}: must be a number in [0, 1)")
    return window


def save_package(path: str | os.PathLike, network: nn.Module, card: dict[str, Any]) -> Path:
    """Write ``weights.safetensors`` and ``card.json`` into ``path`` (created if missing).

    Each file is written atomically. ``card`` must hold the keys in :data:`REQUIRED_KEYS`
    (``format`` is filled in).
    """
    from safetensors.torch import save_file

    from roidetect.atomic import atomic_file, give_default_permissions

    card = {"format": FORMAT, **card}
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise ValueError(f"model card lacks {', '.join(missing)}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
    with atomic_file(path / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
        give_default_permissions(tmp)
    write_json(path / CARD, card)
    return path
