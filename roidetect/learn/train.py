"""``train(cfg)``: the whole training run behind ``roidetect train`` and ``training/train.py``.

1. check the run folder (``out``), or find the checkpoint to resume from; with ``init``,
   take the network and its starting weights from a model package (fine-tuning);
2. read or generate the data, fingerprint it, choose the patch size;
3. build the network, loss and optimiser from the config and fit with Lightning
   (checkpoints, CSV/TensorBoard logs, progress bar);
4. reload the best checkpoint (highest mean instance F1 on the validation volumes),
   validate it once more, calibrate its instance scores, and write the model package
   (``weights.safetensors`` + ``card.json``) and ``run.json``.

Run folder::

    OUT/config.yaml           resolved config          OUT/checkpoints/{best,last}.ckpt
    OUT/csv/version_N/        metrics.csv              OUT/tensorboard/version_N/
    OUT/model/                the model package        OUT/run.json
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from roidetect.errors import UserError
from roidetect.labels import CLASS_NAMES
from roidetect.learn.networks import cpu_has_native_bf16

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
CONFIG_FILE = "config.yaml"
MODEL_DIR = "model"
_RESUMABLE = ("last.ckpt", "on_exception.ckpt")
# Settings a resumed run may change without a warning.
_CHANGEABLE_ON_RESUME = ("resume", "overwrite", "quiet", "trainer.max_epochs", "trainer.max_steps", "trainer.max_time")


def train(cfg: Any) -> Path | None:
    """Train a segmentation model as configured and write its model package.

    Parameters
    ----------
    cfg : DictConfig or mapping
        The composed ``configs/train.yaml`` (see :func:`roidetect.config.compose_config`).

    Returns
    -------
    Path or None
        The model package folder; None in processes other than the first under DDP.

    Raises
    ------
    UserError
        Bad data, an existing run folder without ``overwrite``/``resume``, nothing to resume.
    KeyboardInterrupt
        When interrupted; ``OUT/checkpoints`` then holds the state to resume from.
    """
    import lightning.pytorch as pl
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from roidetect.learn.data import build_training_data
    from roidetect.learn.module import SegmentationModule
    from roidetect.learn.networks import input_divisor
    from roidetect.runlog import RunLog

    options = _as_dict(cfg)
    out = Path(options["out"]).expanduser()
    first_process = rank_zero_only.rank == 0
    _quieten(bool(options["quiet"]))
    start = _initial_package(options)  # checked before the run folder is touched
    _check_outputs_apart_from_inputs(options, out, start)
    existed = out.exists()
    checkpoint = _prepare_run_folder(out, options, first_process)
    runlog = RunLog("train", options)
    with runlog.collecting_warnings():
        with _cleared_on_user_error(out, existed, fresh=first_process and checkpoint is None):
            if start is not None:
                _start_from(start, options, runlog)
            pl.seed_everything(int(options["seed"]), workers=True, verbose=False)
            network = {"class": options["model"]["class"], "args": dict(options["model"]["args"])}
            with runlog.step("data"):
                data = build_training_data(options["data"], int(options["seed"]),
                                           input_divisor(network["class"], network["args"]))
            channels_last = resolve_channels_last(options.get("channels_last", False), _accelerator(options))
            module = SegmentationModule(network, loss_options(options["loss"]), options["optimizer"],
                                        list(data.patch_size), options["sliding_window"], options["detection"],
                                        channels_last)
            if start is not None:
                module.network.load_state_dict(start.network.state_dict())
            trainer = _build_trainer(options, out)
        if first_process:
            log.info("training %s on patches %s; run folder %s", network["class"], list(data.patch_size), out)
        started = time.perf_counter()
        with runlog.step("fit"):
            _fit(trainer, module, data.datamodule, checkpoint)
        fit_seconds = time.perf_counter() - started
        if not trainer.is_global_zero:
            return None
        best = _best_checkpoint(trainer)
        if best is not None:
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            module.network.load_state_dict({k[len("network."):]: v for k, v in state.items()
                                            if k.startswith("network.")})
        with runlog.step("calibrate"):
            modes = _final_validation(module, data.datamodule.val_volumes, options["calibration"])
        card = _model_card(options, module, data, modes, trainer, best, fit_seconds)
        package = Path(options["package"]).expanduser() if options.get("package") else out / MODEL_DIR
        _write_package(package, module.network, card)
        runlog.record(package=str(package), best_checkpoint=str(best) if best else None,
                      epochs=int(trainer.current_epoch), steps=int(trainer.global_step),
                      metrics=modes[False].metrics["overall"])
        runlog.write(out)
    log.info("mean instance F1 %.3f on %d validation volume(s); model package in %s",
             modes[False].metrics["overall"]["f1_mean"], len(data.datamodule.val_volumes), package)
    return package


def _as_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data; a missing required value is a :class:`UserError`."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if not isinstance(cfg, DictConfig):
        return dict(cfg)
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", "") or "a setting"
        raise UserError(f"{key} is required; set it with {key}=VALUE") from exc
    except OmegaConfBaseException as exc:
        raise UserError(f"bad config ({' '.join(str(exc).split())})") from exc


@contextlib.contextmanager
def _cleared_on_user_error(out: Path, existed: bool, fresh: bool) -> Iterator[None]:
    """Undo a fresh run folder when a bad setting (data, loss, trainer, ``ema_decay``) shows
    up before training starts, so that the corrected command runs without ``overwrite=true``.

    Everything in a fresh run's folder was written by this run (a new folder, an empty one,
    or one ``overwrite`` emptied); an empty folder that was there before stays.
    """
    try:
        yield
    except UserError:
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
            if existed:
                out.mkdir(parents=True, exist_ok=True)
        raise


def _check_outputs_apart_from_inputs(options: dict[str, Any], out: Path, start: Any) -> None:
    """The run folder and ``package`` must not be, or hold, a file of the dataset or the
    ``init`` package: ``overwrite=true`` would remove it."""
    from roidetect.atomic import check_outside_inputs
    from roidetect.learn.dataset import dataset_files

    data = options["data"]
    datasets = [data.get("path"), data.get("val_path")] if data.get("kind") == "folder" else []
    inputs = [file for dataset in datasets if dataset for file in dataset_files(dataset)]
    inputs.append(None if start is None else start.path)
    for output in (out, options.get("package")):
        if output:
            check_outside_inputs(output, inputs)


def _initial_package(options: dict[str, Any]) -> Any:
    """The model package named by ``init`` (None without one), checked against the run.

    Its normalisation must be the data's, since the weights learnt grey values normalised
    that way, and its classes roidetect's.
    """
    if not options.get("init"):
        return None
    from roidetect.learn.bundle import load_package

    init = str(options["init"])
    try:
        package = load_package(init)
    except UserError as exc:
        raise UserError(f"init={init}: {exc}") from exc
    card = package.card
    if {int(k): v for k, v in card["classes"].items()} != CLASS_NAMES:
        raise UserError(f"init={init}: its classes {card['classes']} are not roidetect's {CLASS_NAMES}")
    percentiles = [float(p) for p in card["normalisation"].get("percentiles", [])]
    wanted = [float(p) for p in options["data"]["percentiles"]]
    if card["normalisation"].get("method") != "volume_percentiles" or percentiles != wanted:
        raise UserError(f"init={init} normalises scans with {card['normalisation']}; "
                        f"set data.percentiles={percentiles} to fine-tune it")
    return package


def _start_from(package: Any, options: dict[str, Any], runlog: Any) -> None:
    """Make the run train ``package``'s network: it replaces ``options["model"]`` (so the
    card's ``network`` and ``config`` name the network that was trained; ``OUT/config.yaml``
    keeps the settings as given), and the package with its weights' sha256 goes into
    ``run.json`` and the card (``training.init``)."""
    from roidetect.learn.bundle import WEIGHTS
    from roidetect.runlog import sha256_of

    network = package.card["network"]
    if dict(options["model"]) != dict(network):
        log.info("init=%s: training its network (%s %s) in place of model (%s %s)", options["init"],
                 network["class"], network.get("args"), options["model"].get("class"), options["model"].get("args"))
    log.info("fine-tuning: the network starts from the weights of %s (%s)", package.path, package.card["name"])
    options["model"] = {"class": network["class"], "args": dict(network.get("args", {}))}
    options["init"] = {"package": str(package.path), "name": package.card["name"],
                       "weights_sha256": sha256_of(package.path / WEIGHTS)}
    runlog.record(init=options["init"])


def _quieten(quiet: bool) -> None:
    """Hide library chatter that says nothing about the user's run."""
    for pattern in (".*does not have many workers.*", ".*`isinstance\\(treespec, LeafSpec\\)`.*",
                    ".*Your `IterableDataset` has `__len__` defined.*", ".*upsample_trilinear3d_backward_out.*",
                    # fresh runs: Lightning looks for a checkpoint to resume (resuming is explicit here)
                    ".*was called without a model. The last model of the previous `fit`.*",
                    ".*is set, but there is no last checkpoint available.*",
                    ".*Checkpoint directory .* exists and is not empty.*",
                    # mid-epoch resume: the epoch's patch stream restarts, which is harmless here
                    ".*your dataloader is not resumable.*",
                    ".*is smaller than the logging interval.*"):
        warnings.filterwarnings("ignore", message=pattern)
    lightning_log = logging.getLogger("lightning")
    if lightning_log.handlers and logging.getLogger().handlers:
        lightning_log.propagate = False  # Lightning has its own handler: print its messages once
    if quiet:
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)


def loss_options(loss: Mapping[str, Any]) -> dict[str, Any]:
    """``build_loss`` arguments from the ``loss`` config (``args`` flattened)."""
    return {"name": loss["name"], "class_weights": loss.get("class_weights"), "batch_dice": loss.get("batch_dice", True),
            **dict(loss.get("args", {}))}


def _prepare_run_folder(out: Path, options: dict[str, Any], first_process: bool) -> Path | None:
    """Check ``out`` and return the checkpoint to resume from (None for a fresh run).

    Only the first process checks and writes; the others (DDP) only look up the checkpoint.
    """
    from omegaconf import OmegaConf

    if options["resume"]:
        found = [out / CHECKPOINTS / name for name in _RESUMABLE if (out / CHECKPOINTS / name).is_file()]
        if not found:
            raise UserError(f"{out}: no checkpoint to resume from in {out / CHECKPOINTS}; "
                            "start the run without resume=true")
        if first_process:
            _warn_changed_settings(out / CONFIG_FILE, options)
            OmegaConf.save(OmegaConf.create(options), out / CONFIG_FILE)
        return max(found, key=lambda p: p.stat().st_mtime)
    package = options.get("package")
    if first_process and package and not options["overwrite"]:
        from roidetect.atomic import check_output_dir

        check_output_dir(Path(package).expanduser(), overwrite=False)
    if first_process:
        if out.exists() and not out.is_dir():
            raise UserError(f"out={out} exists and is not a folder; choose another out")
        if out.is_dir() and any(out.iterdir()):
            if not options["overwrite"]:
                raise UserError(f"run folder {out} exists and is not empty; add resume=true to continue it "
                                "or overwrite=true to start again")
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(options), out / CONFIG_FILE)
    return None


def _warn_changed_settings(saved_path: Path, options: dict[str, Any]) -> None:
    from omegaconf import OmegaConf

    if not saved_path.is_file():
        return
    saved = _flatten(OmegaConf.to_container(OmegaConf.load(saved_path), resolve=True))  # type: ignore[arg-type]
    current = _flatten(options)
    changed = sorted(k for k in set(saved) | set(current)
                     if saved.get(k) != current.get(k) and not k.startswith(_CHANGEABLE_ON_RESUME))
    if changed:
        log.warning("resuming with settings that differ from the first run: %s", ", ".join(changed))


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resolve_precision(precision: Any, accelerator: str) -> Any:
    """Lightning precision for ``auto``: bf16-mixed on GPUs with bf16, 16-mixed on other GPUs;
    on CPUs bf16-mixed where oneDNN computes bf16 natively (AVX512-BF16 / AMX), else 32-true
    (emulated bf16 is about 10x slower than float32 on AVX2-only CPUs)."""
    if precision != "auto":
        return precision
    if _on_cuda(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def resolve_channels_last(setting: Any, accelerator: str) -> bool:
    """``channels_last`` for ``auto``: on when training runs on the CPU, where a step of the
    default recipe is about 1.3x faster on channels-last tensors (benchmarks/bench_train_throughput.py)."""
    if setting == "auto":
        return accelerator in ("auto", "cpu") and not _on_cuda(accelerator)
    if not isinstance(setting, bool):
        raise UserError(f"channels_last={setting!r}: give true, false or auto")
    return setting


def _accelerator(options: dict[str, Any]) -> str:
    """The run's ``trainer.accelerator`` (Lightning's default ``auto`` when unset)."""
    return str(options["trainer"].get("accelerator", "auto"))


def _on_cuda(accelerator: str) -> bool:
    """Whether Lightning trains on a CUDA GPU with this ``trainer.accelerator`` (``auto`` picks one if present)."""
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


LOG_FILE_REFRESH_STEPS = 100
"""Progress-bar refresh interval, in steps, when stderr is not a terminal (a batch job's log
file): redrawn every step, the bar writes about 2 kB/s there, 11 MB over a 90-minute run."""


def _build_trainer(options: dict[str, Any], out: Path) -> Any:
    import lightning.pytorch as pl
    from lightning.pytorch import callbacks as cb
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from roidetect.learn.module import MONITOR

    settings = dict(options["trainer"])
    settings["precision"] = resolve_precision(settings.get("precision", "auto"), _accelerator(options))
    quiet = bool(options["quiet"])
    folder = out / CHECKPOINTS

    def last(**when: int) -> Any:  # last.ckpt, overwritten at each of ``when`` (Lightning takes one kind per callback)
        return cb.ModelCheckpoint(dirpath=folder, filename="last", save_top_k=1, enable_version_counter=False, **when)

    callbacks: list[Any] = [
        cb.ModelCheckpoint(dirpath=folder, filename="best", monitor=MONITOR, mode="max", save_top_k=1,
                           auto_insert_metric_name=False, enable_version_counter=False),
        # After every validation, improved or not (Lightning's save_last writes only with a new best).
        last(every_n_epochs=1),
        cb.OnExceptionCheckpoint(dirpath=folder),
    ]
    every = options["checkpoint"].get("every_n_train_steps")
    if every:
        callbacks.append(last(every_n_train_steps=int(every)))
    callbacks += _weight_averaging(options.get("ema_decay"))
    if not quiet and not sys.stderr.isatty():
        callbacks.append(cb.TQDMProgressBar(refresh_rate=LOG_FILE_REFRESH_STEPS))
    loggers = {"csv": lambda: CSVLogger(out, name="csv"),
               "tensorboard": lambda: TensorBoardLogger(out, name="tensorboard", default_hp_metric=False)}
    unknown = [name for name in options["loggers"] if name not in loggers]
    if unknown:
        raise UserError(f"loggers={list(options['loggers'])}: unknown {unknown}; choose from csv, tensorboard")
    chosen = [loggers[name]() for name in options["loggers"]]
    if chosen:
        callbacks.append(cb.LearningRateMonitor(logging_interval="step"))
    try:
        return pl.Trainer(default_root_dir=out, callbacks=callbacks, logger=chosen or False,
                          enable_progress_bar=not quiet, enable_model_summary=not quiet,
                          reload_dataloaders_every_n_epochs=1, **settings)
    except (TypeError, ValueError) as exc:
        raise UserError(f"trainer settings {settings}: {' '.join(str(exc).split())}") from exc


def _weight_averaging(decay: Any) -> list[Any]:
    """The EMA callback for ``ema_decay`` (none when it is null).

    With it, validation, ``best.ckpt``'s ``state_dict`` and so the model package hold the
    exponential moving average of the weights, updated after every optimiser step; the raw
    weights stay in the checkpoint's ``current_model_state`` for resuming.
    """
    if decay is None:
        return []
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < float(decay) < 1.0:
        raise UserError(f"ema_decay={decay!r}: give a number between 0 and 1 (e.g. 0.999), or null for none")
    from lightning.pytorch.callbacks import EMAWeightAveraging

    return [EMAWeightAveraging(decay=float(decay))]


def _fit(trainer: Any, module: Any, datamodule: Any, checkpoint: Path | None) -> None:
    """``trainer.fit``; an interrupt (Lightning exits on Ctrl+C) becomes KeyboardInterrupt."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(checkpoint) if checkpoint else None,
                    weights_only=True)
    except SystemExit as exc:
        if trainer.interrupted:
            raise KeyboardInterrupt from exc
        raise


def _best_checkpoint(trainer: Any) -> Path | None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.best_model_path:
            return Path(callback.best_model_path)
    return None


def _final_validation(module: Any, volumes: list[Any], calibration: Mapping[str, Any]) -> dict[bool, Any]:
    """Validate the chosen weights on every validation volume and fit the score calibration,
    plain and, unless ``calibration.tta`` is false, with TTA; keyed by ``tta``."""
    from roidetect.learn.final_validation import validate_modes

    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    module.to(device).eval()
    return validate_modes(module.network, volumes, module.hparams.patch_size, module.hparams.sliding_window,
                          module.detection, int(calibration["min_detections"]),
                          tta=bool(calibration.get("tta", True)))


def _model_card(options: dict[str, Any], module: Any, data: Any, modes: dict[bool, Any], trainer: Any,
                best: Path | None, seconds: float) -> dict[str, Any]:
    from dataclasses import asdict

    from roidetect.learn.final_validation import calibration_source, with_calibration
    from roidetect.runlog import library_versions

    fingerprint = {k: v for k, v in data.fingerprint.items() if k != "volumes"}
    return with_calibration({
        "name": options["name"],
        "classes": {str(k): v for k, v in CLASS_NAMES.items()},
        "network": dict(module.hparams.network),
        "voxel_size_um": [float(v) for v in data.voxel_size_um],
        "normalisation": {"method": "volume_percentiles", "percentiles": [float(p) for p in options["data"]["percentiles"]]},
        "patch_size": [int(p) for p in data.patch_size],
        "sliding_window": dict(options["sliding_window"]),
        "detection": asdict(module.detection),
        "training": {
            "data": data.summary,
            "fingerprint": fingerprint,
            "epochs": int(trainer.current_epoch),
            "steps": int(trainer.global_step),
            "fit_time_s": round(seconds, 1),
            "seed": int(options["seed"]),
            "precision": str(trainer.precision),
            "devices": int(trainer.num_devices),
            "nodes": int(trainer.num_nodes),
            "strategy": type(trainer.strategy).__name__,
            "hardware": _hardware(),
            "best_checkpoint": best.name if best else None,
            "init": options.get("init"),
        },
        "versions": library_versions(),
        "config": options,
    }, modes, calibration_source(data.datamodule.val_volumes))


def _hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _write_package(package: Path, network: torch.nn.Module, card: dict[str, Any]) -> None:
    from roidetect.atomic import atomic_dir
    from roidetect.learn.bundle import save_package

    with atomic_dir(package, overwrite=True) as tmp:
        save_package(tmp, network, card)
