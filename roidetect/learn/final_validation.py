"""Score a network on whole validation volumes and fit its score calibration, per inference mode.

Training ends here, and ``roidetect calibrate`` runs the same step again on a finished model
package. There are two modes: plain inference (one pass) and test-time augmentation (the
softmax averaged over the 8 flips of z, y and x, as ``roidetect predict --tta``). Averaging
smooths the probabilities, so a detection's raw score (its mean class probability) shifts;
a calibration fitted on plain predictions then misjudges TTA detections (with the shipped
model, held-out crack recall fell from 0.66 to 0.49 under ``--tta``). So each mode gets its
own calibration and ``min_score``, fitted on the same validation volumes. The plain mode's
go to the card's top-level ``calibration`` and ``detection.min_score``, the TTA mode's to
its ``tta`` section (:mod:`roidetect.learn.bundle`).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from roidetect.inference.network import Augmentation, augmentations
from roidetect.learn.calibration import CalibrationSamples, fit_calibration, min_scores_by_f1

log = logging.getLogger(__name__)

TTA_AUGMENTATIONS = "flips of z, y and x"
"""What the card's ``tta`` section was fitted with: :func:`roidetect.inference.network.augmentations` without rotations."""


@dataclass
class ModeValidation:
    """One inference mode's validation.

    Attributes
    ----------
    metrics : dict
        ``overall`` (instance precision, recall, F1 and Dice per class, summed over the
        volumes), ``per_volume``, ``volumes`` and ``matching``.
    calibration : dict
        :func:`roidetect.learn.calibration.fit_calibration`'s curves.
    samples : CalibrationSamples
        The validation detections the curves were fitted on.
    """

    metrics: dict[str, Any]
    calibration: dict[str, Any]
    samples: CalibrationSamples

    @property
    def min_score(self) -> dict[str, float]:
        """Per calibrated class, the highest score threshold as good as the F1-best one (:func:`min_scores_by_f1`)."""
        return min_scores_by_f1(self.samples, self.calibration)


def validate(network: torch.nn.Module, volumes: Sequence[Any], patch_size: Sequence[int],
             sliding_window: Mapping[str, Any], detection: Any, min_detections: int,
             tta: bool = False, progress: bool = False) -> ModeValidation:
    """Score ``network`` on every volume and fit the calibration of one mode.

    Parameters
    ----------
    network : nn.Module
        In eval mode, on the device to run on.
    volumes : sequence of LoadedVolume
        Validation volumes (:mod:`roidetect.learn.data`): image, label, instances, spacing.
    patch_size : (3,) int
        Sliding-window size in voxels.
    sliding_window : mapping
        ``overlap``, ``sw_batch_size``, ``mode``.
    detection : DetectionParams
        Thresholds for :mod:`roidetect.detect`. Its ``min_score`` is ignored: a card's
        ``min_score`` is a calibrated probability, these scores are still raw, and the
        calibration is fitted on every detection.
    min_detections : int
        Classes with fewer validation detections get no calibration curve.
    tta : bool
        Average over the 8 flips instead of one pass.
    progress : bool
        Show a progress bar over the volumes.
    """
    from roidetect.intensity import normalise
    from roidetect.learn.module import volume_probabilities
    from roidetect.learn.validation import metrics_from_counts, score_volume

    detection = replace(detection, min_score={})
    variants = augmentations(False) if tta else [Augmentation()]
    samples = CalibrationSamples()
    totals = None
    per_volume = {}
    for volume in tqdm(volumes, desc="validation with TTA" if tta else "validation", unit="volume",
                       disable=not progress):
        image = torch.from_numpy(normalise(volume.image, *volume.intensity_range))[None]
        probabilities = volume_probabilities(network, image, patch_size, sliding_window, variants)
        scored = score_volume(probabilities, volume.label, volume.instances, volume.spacing_um, detection)
        samples.add(scored.detections, scored.result, scored.counted)
        totals = scored.counts if totals is None else totals + scored.counts
        per_volume[volume.id] = {"f1_mean": scored.result["mean"]["f1"], "dice_mean": scored.result["mean"]["dice"]}
    overall = metrics_from_counts(totals)
    metrics = {"overall": {k: _rounded(v) for k, v in overall.items()},
               "per_volume": {k: {m: _rounded(v) for m, v in d.items()} for k, d in per_volume.items()},
               "volumes": len(volumes),
               "matching": "roidetect.evaluate: tolerant Dice >= 0.5, one-to-one, same class"}
    return ModeValidation(metrics, fit_calibration(samples, min_detections), samples)


def validate_modes(network: torch.nn.Module, volumes: Sequence[Any], patch_size: Sequence[int],
                   sliding_window: Mapping[str, Any], detection: Any, min_detections: int,
                   tta: bool = True, progress: bool = False) -> dict[bool, ModeValidation]:
    """:func:`validate` plainly and, unless ``tta`` is false, with TTA; keyed by ``tta``."""
    return {mode: validate(network, volumes, patch_size, sliding_window, detection, min_detections,
                           tta=mode, progress=progress)
            for mode in ((False, True) if tta else (False,))}


def calibration_source(volumes: Sequence[Any], dataset: Any = None) -> dict[str, Any]:
    """The card's ``calibration_data``: which volumes the calibration was fitted on.

    ``{"kind": "validation", "volumes": [ids]}`` for the training run's validation volumes,
    ``{"kind": "dataset", "path": ..., "name": ..., "volumes": [ids]}`` for a dataset given
    to ``roidetect calibrate --data`` (``dataset``: its ``DatasetSpec``; the folder as given:
    a card shared with others carries no one's absolute paths), with the dataset's
    ``generator`` record when it has one (phantoms from ``roidetect synth``: seed, preset and
    settings, so they can be made again where the path does not exist).
    """
    ids = [str(v.id) for v in volumes]
    if dataset is None:
        return {"kind": "validation", "volumes": ids}
    source = {"kind": "dataset", "path": str(dataset.path.parent), "name": dataset.name, "volumes": ids}
    return source | ({"generator": dataset.generator} if dataset.generator else {})


def with_calibration(card: Mapping[str, Any], modes: Mapping[bool, ModeValidation],
                     source: Mapping[str, Any]) -> dict[str, Any]:
    """``card`` with the validation's results where the card keeps them.

    The plain mode sets ``calibration``, ``detection.min_score``, ``metrics.validation`` and
    ``training.calibration_samples``; the TTA mode, when validated, sets the ``tta`` section;
    ``source`` (:func:`calibration_source`) becomes ``calibration_data``. Everything else in
    ``card`` stays as it is. A warning names each class left without a calibration curve.
    """
    plain = modes[False]
    for tta, mode in modes.items():
        _warn_uncalibrated(mode, "with TTA" if tta else "plain")
    card = {**card,
            "detection": {**card.get("detection", {}), "min_score": plain.min_score},
            "calibration": plain.calibration,
            "calibration_data": dict(source),
            "metrics": {**card.get("metrics", {}), "validation": plain.metrics},
            "training": {**card.get("training", {}), "calibration_samples": plain.samples.summary()}}
    if True in modes:
        tta = modes[True]
        card["tta"] = {"augmentations": TTA_AUGMENTATIONS, "variants": len(augmentations(False)),
                       "min_score": tta.min_score, "calibration": tta.calibration,
                       "validation": tta.metrics["overall"], "calibration_samples": tta.samples.summary()}
    return card


def _warn_uncalibrated(mode: ModeValidation, name: str) -> None:
    """Log a warning for each defect class the calibration volumes left without a curve."""
    for cls, counts in mode.samples.summary().items():
        if cls not in mode.calibration:
            log.warning("%s (%s): %d detection(s), %d real, of %d true on the calibration volumes: too few or "
                        "all scored alike, so its scores stay raw mean probabilities and no min_score hides "
                        "any; calibrate on more annotated volumes (calibration.min_detections)",
                        cls, name, counts["detections"], counts["matched"], counts["true"])


def calibrate_package(model: str, out: str | Path, device: str = "auto", overwrite: bool = False,
                      progress: bool = True, data: str | Path | None = None,
                      overlap: float | None = None) -> dict[str, Any]:
    """Refit a model package's calibrations (plain and TTA) and write the result as a new package.

    Without ``data`` the volumes are the validation volumes the card's ``config`` made in
    training: the same phantoms (same seeds) or the same annotated files, which must still be
    where the config says. With ``data`` they are the annotated volumes of that dataset not
    marked ``test`` (the user's own scans: the scores then mean "probability of being real"
    on scans like those). The weights are copied unchanged; the card's calibration entries
    are replaced (:func:`with_calibration`). ``model`` itself is not touched.

    Parameters
    ----------
    model : str
        A model package folder or a shipped model's name.
    out : path
        The new package folder.
    device : str
        auto | cpu | cuda | cuda:N.
    overwrite : bool
        Replace ``out`` if it exists.
    progress : bool
        Show progress bars.
    data : path, optional
        A dataset (``dataset.json`` or the folder holding it, :mod:`roidetect.learn.dataset`).
    overlap : float, optional
        Relative overlap of the patch-sized windows to calibrate with, in [0, 1); it replaces
        the card's ``sliding_window.overlap``, which ``roidetect predict`` runs by default.

    Returns
    -------
    dict
        The new card.

    Raises
    ------
    UserError
        Unknown model, neither ``data`` nor a training ``config`` in the card, validation
        data that is gone, a dataset without annotated volumes, an overlap outside [0, 1), an
        existing ``out`` without ``overwrite``, or an ``out`` that is or holds the model or a
        file of ``data``.
    """
    from roidetect.atomic import atomic_dir, check_output_dir, check_outside_inputs
    from roidetect.errors import UserError
    from roidetect.inference.model import resolve_device
    from roidetect.inference.settings import detection_params
    from roidetect.learn.bundle import CARD, WEIGHTS, load_package, sliding_window_of
    from roidetect.learn.dataset import dataset_files
    from roidetect.volume import write_json

    if overlap is not None and not 0 <= overlap < 1:
        raise UserError(f"--overlap {overlap}: must be in [0, 1) (0.25 and 0.5 are usual)")
    check_output_dir(out, overwrite)
    package = load_package(model, resolve_device(device))
    check_outside_inputs(out, [package.path, *([] if data is None else dataset_files(data))])
    sliding_window = sliding_window_of(package.card, package.path)
    if overlap is not None:
        sliding_window["overlap"] = float(overlap)
    card = {**package.card, "sliding_window": sliding_window}
    dataset = None
    if data is None:
        volumes, detection = _training_validation(package)
    else:
        dataset, volumes = _calibration_volumes(data, card)
        detection = detection_params(card.get("detection"), {})
    min_detections = int((card.get("config") or {}).get("calibration", {}).get("min_detections", 10))
    modes = validate_modes(package.network, volumes, card["patch_size"], card["sliding_window"], detection,
                           min_detections, progress=progress)
    card = with_calibration(card, modes, calibration_source(volumes, dataset))
    with atomic_dir(out, overwrite) as tmp:
        shutil.copyfile(package.path / WEIGHTS, tmp / WEIGHTS)
        write_json(tmp / CARD, card)
    log.info("validation mean F1 %.3f plain, %.3f with TTA, on %d volume(s)",
             modes[False].metrics["overall"]["f1_mean"], modes[True].metrics["overall"]["f1_mean"], len(volumes))
    return card


def _training_validation(package: Any) -> tuple[list[Any], Any]:
    """The validation volumes and detection thresholds of the card's training config."""
    from roidetect.errors import UserError
    from roidetect.inference.settings import detection_params
    from roidetect.learn.data import build_training_data
    from roidetect.learn.networks import input_divisor

    config = package.card.get("config")
    if not config or "data" not in config:
        raise UserError(f"{package.path}: card.json has no training config to rebuild the validation volumes "
                        "from; give annotated volumes with --data")
    network = package.card["network"]
    data = build_training_data(config["data"], int(config["seed"]),
                               input_divisor(network["class"], network.get("args", {})))
    return list(data.datamodule.val_volumes), detection_params(None, config.get("detection") or {})


def _calibration_volumes(path: str | Path, card: Mapping[str, Any]) -> tuple[Any, list[Any]]:
    """A dataset's ``DatasetSpec`` and its annotated volumes not marked ``test``, normalised as the card says."""
    from roidetect.errors import UserError
    from roidetect.learn.data import annotated_volumes

    spec, volumes = annotated_volumes(path, tuple(float(p) for p in card["normalisation"]["percentiles"]),
                                      card["voxel_size_um"])
    if not volumes:
        raise UserError(f"{path}: no volume to calibrate on (every volume is marked \"split\": \"test\")")
    trained = _trained_on(card, spec.path, [v.id for v in volumes])
    if trained:
        log.warning("%s: %d of the %d volumes to calibrate on were used to train this model or one of its "
                    "members (%s); its scores are higher on them than on new scans, so the calibration comes out "
                    "overconfident and the reported F1 too high. Calibrate on other annotated scans, or mark these "
                    "\"split\": \"test\" to leave them out", spec.path, len(trained), len(volumes), ", ".join(trained))
    return spec, volumes


def _trained_on(card: Mapping[str, Any], dataset_json: Path, ids: Sequence[str]) -> list[str]:
    """Those of ``ids`` (volumes of ``dataset_json``) that the card's model, or a member of
    the ensemble it is, was trained on.

    Known for models trained on a dataset (``training.data.kind`` "folder"), whose card names
    the training volumes and the dataset's path: its ``dataset.json`` resolved where training
    ran (``resolved_path``), and as it was given (``path``; cards made before
    ``resolved_path`` have only that, read relative to the current folder).
    """
    from roidetect.learn.dataset import dataset_json_path

    members = (card.get("ensemble") or {}).get("members") or []
    trained: set[str] = set()
    for training in [card.get("training"), *(m.get("training") for m in members)]:
        data = (training or {}).get("data") or {}
        if data.get("kind") == "folder" and data.get("path"):
            used = Path(data["resolved_path"]) if data.get("resolved_path") else dataset_json_path(data["path"]).resolve()
            if used == Path(dataset_json).resolve():
                trained.update(data.get("train_volumes") or [])
    return [i for i in ids if i in trained]


def _rounded(value: Any) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 4)
