"""``roidetect train``: config composition, a short CPU run to a loadable package, sparse
labels, resume, DDP with two CPU processes, and one-line errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_learn import write_tiny_dataset

from roidetect.cli import main
from roidetect.labels import IGNORE
from roidetect.resources import config_dir

TINY_MODEL = ["model=unet_small", "model.args.channels=[4,8,16]", "model.args.strides=[2,2]",
              "model.args.num_res_units=0"]
GROUPS = ("data", "model", "loss", "optimizer", "trainer", "experiment", "debug")


def train_args(dataset: Path, out: Path, *extra: str) -> list[str]:
    """A tiny CPU training run: 2 epochs of 4 batches (debug=limit) unless ``extra`` says otherwise."""
    return ["train", "--quiet", "data=folder", f"data.path={dataset}", f"data.cache_dir={out.parent / 'cache'}",
            f"out={out}", "sliding_window.sw_batch_size=1", "trainer.accelerator=cpu", "debug=limit", *TINY_MODEL,
            *extra]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


def options_of(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml") if not p.stem.startswith("_"))


def test_the_progress_bar_redraws_every_step_on_a_terminal_and_seldom_into_a_log_file(
        dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from omegaconf import OmegaConf

    from roidetect.config import compose_config
    from roidetect.learn.train import LOG_FILE_REFRESH_STEPS, _build_trainer

    overrides = ["data=folder", f"data.path={dataset}", f"out={tmp_path / 'run'}", "trainer=cpu"]
    options = OmegaConf.to_container(compose_config("train", overrides), resolve=True)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert _build_trainer(options, tmp_path / "run").progress_bar_callback.refresh_rate == 1
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert _build_trainer(options, tmp_path / "run").progress_bar_callback.refresh_rate == LOG_FILE_REFRESH_STEPS


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options_of(g)])
def test_every_config_option_composes_and_builds(group: str, option: str, dataset: Path, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from roidetect.config import compose_config
    from roidetect.learn.data import build_training_data
    from roidetect.learn.losses import build_loss
    from roidetect.learn.module import build_optimizer
    from roidetect.learn.networks import build_network, input_divisor
    from roidetect.learn.train import _build_trainer, loss_options

    folder = [f"data.path={dataset}", f"data.cache_dir={tmp_path / 'cache'}"]
    data_choice = option if group == "data" else "folder"
    overrides = [f"{group}={option}", f"out={tmp_path / 'run'}"] + ([] if group == "data" else ["data=folder"])
    overrides += folder if data_choice == "folder" else []
    options = OmegaConf.to_container(compose_config("train", overrides), resolve=True)

    network = build_network(options["model"]["class"], **options["model"]["args"])
    divisor = input_divisor(options["model"]["class"], options["model"]["args"])
    if group == "model" and sum(p.numel() for p in network.parameters()) < 5_000_000:
        shape = tuple(2 * d for d in divisor)
        assert network(torch.zeros(1, 1, *shape)).shape == (1, 4, *shape)
    loss = build_loss(**loss_options(options["loss"]))
    assert torch.isfinite(loss(torch.randn(2, 4, 4, 4, 4), torch.randint(0, 4, (2, 1, 4, 4, 4))))
    assert build_optimizer(network.parameters(), options["optimizer"]) is not None
    if options["trainer"]["accelerator"] != "gpu" or torch.cuda.is_available():
        assert _build_trainer(options, tmp_path / "run") is not None
    if group == "data":
        small = {**options["data"], "patch_size": [16, 16, 16], "shape": [32, 32, 32], "val_phantoms": 1,
                 "num_workers": 0}
        data = build_training_data(small, 0, (8, 8, 8))
        batch = next(iter(data.datamodule.train_dataloader()))
        assert batch["image"].shape == (small["batch_size"], 1, 16, 16, 16)
        assert batch["label"].shape == (small["batch_size"], 1, 16, 16, 16)


@pytest.mark.parametrize("experiment", options_of("experiment"))
def test_experiments_fit_a_package_and_keep_the_held_out_geometry_unseen(experiment: str, tmp_path: Path) -> None:
    """Each recipe's weights fit the 20 MB a model package may hold, its patches fit its network,
    and where it draws the real NMC geometry it draws only x < 0.5 (training/default/'s held-out
    set uses x >= 0.5)."""
    from omegaconf import OmegaConf

    from roidetect.config import compose_config
    from roidetect.learn.networks import build_network, input_divisor

    options = OmegaConf.to_container(compose_config("train", [f"experiment={experiment}", f"out={tmp_path}"]),
                                     resolve=True)
    model, data = options["model"], options["data"]
    network = build_network(model["class"], **model["args"])
    assert 4 * sum(p.numel() for p in network.parameters()) < 20e6 - 100e3  # float32, and room for the card
    divisor = input_divisor(model["class"], model["args"])
    assert all(p % d == 0 for p, d in zip(data["patch_size"], divisor, strict=True))
    if data["kind"] == "synthetic" and data["preset"] in ("any", "nmc-real"):
        x_range = data["synth_overrides"].get("geometry_x_range")
        assert x_range is not None and 0.0 <= x_range[0] < x_range[1] <= 0.5


def test_synthetic_preset_weights_are_checked_and_recorded(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from roidetect.config import compose_config
    from roidetect.errors import UserError
    from roidetect.learn.data import build_training_data

    options = OmegaConf.to_container(compose_config("train", ["data=synthetic", f"out={tmp_path / 'run'}"]),
                                     resolve=True)
    small = {**options["data"], "preset": "any", "patch_size": [16, 16, 16], "shape": [32, 32, 32],
             "val_phantoms": 1, "num_workers": 0}
    data = build_training_data({**small, "preset_weights": {"anode": 2, "cathode": 1}}, 0, (8, 8, 8))
    assert data.summary["preset_weights"] == {"anode": 2.0, "cathode": 1.0}
    with pytest.raises(UserError, match="preset weights"):
        build_training_data({**small, "preset_weights": {"anodes": 1}}, 0, (8, 8, 8))
    with pytest.raises(UserError, match="need preset 'any'"):
        build_training_data({**small, "preset": "anode", "preset_weights": {"anode": 1}}, 0, (8, 8, 8))


def test_validation_phantoms_made_in_worker_processes_are_the_same_volumes(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from roidetect.config import compose_config
    from roidetect.learn.data import build_training_data

    options = OmegaConf.to_container(compose_config("train", ["data=synthetic", f"out={tmp_path / 'run'}"]),
                                     resolve=True)
    small = {**options["data"], "preset": "any", "patch_size": [16, 16, 16], "shape": [32, 32, 32],
             "val_phantoms": 3}
    serial = build_training_data({**small, "num_workers": 0}, 5, (8, 8, 8)).datamodule.val_volumes
    parallel = build_training_data({**small, "num_workers": 2}, 5, (8, 8, 8)).datamodule.val_volumes
    assert [v.id for v in parallel] == [v.id for v in serial] == ["val_phantom_0", "val_phantom_1", "val_phantom_2"]
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
        np.testing.assert_array_equal(a.instances, b.instances)
        assert a.spacing_um == b.spacing_um and a.intensity_range == b.intensity_range
    assert not np.array_equal(serial[0].image, serial[1].image)  # three phantoms, not one three times


def test_short_cpu_run_writes_a_loadable_package(dataset: Path, tmp_path: Path) -> None:
    from roidetect.learn.bundle import load_package

    out = tmp_path / "run"
    assert main(train_args(dataset, out, "debug=fast_dev_run", "name=tiny")) == 0
    package = load_package(out / "model")
    card = package.card
    assert card["name"] == "tiny" and card["network"]["class"] == "UNet"
    assert card["voxel_size_um"] == [0.05, 0.05, 0.05] and card["patch_size"] == [32, 32, 32]
    assert card["normalisation"]["percentiles"] == [0.5, 99.5]
    assert set(card["metrics"]["validation"]["overall"]) >= {"f1_mean", "dice_mean", "f1_pore", "dice_crack"}
    assert card["config"]["data"]["kind"] == "folder" and "torch" in card["versions"]
    assert card["training"]["fingerprint"]["class_fraction"]["pore"] > 0
    assert set(card["detection"]["min_score"]) <= set(card["calibration"])
    assert all(0 <= v <= 0.5 for v in card["detection"]["min_score"].values())
    tta = card["tta"]  # the calibration of `predict --tta`, fitted on flip-averaged validation predictions
    assert tta["variants"] == 8 and set(tta["min_score"]) <= set(tta["calibration"])
    assert all(0 <= v <= 0.5 for v in tta["min_score"].values())
    for curve in tta["calibration"].values():
        assert np.all(np.diff(curve["x"]) >= 0) and np.all(np.diff(curve["y"]) >= 0)
    assert set(tta["validation"]) >= {"f1_mean", "f1_pore", "recall_crack"}
    assert tta["calibration_samples"].keys() == card["training"]["calibration_samples"].keys()
    with torch.no_grad():
        logits = package.network(torch.zeros(1, 1, 32, 32, 32))
    assert logits.shape == (1, 4, 32, 32, 32)
    assert (out / "config.yaml").is_file() and (out / "run.json").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "train"
    few = [name for name, n in card["training"]["calibration_samples"].items() if n["detections"] < 10]
    assert few and all(any(m.startswith(f"{name} (plain)") for m in run["warnings"]) for name in few)
    scan = dataset.parent / "images" / "vol_0000.tif"
    assert main(["predict", str(scan), "--model", str(out / "model"), "--out", str(tmp_path / "pred"), "--quiet"]) == 0
    assert (tmp_path / "pred" / "detections.csv").is_file()


def test_sparse_slice_annotations_train(tmp_path: Path) -> None:
    from roidetect.learn.data import build_training_data
    from roidetect.learn.losses import build_loss

    dataset = write_tiny_dataset(tmp_path / "sparse", n=2, annotated_slices=(8, 16, 24))
    data_options = {"kind": "folder", "path": str(dataset), "val_path": None, "val_fraction": 0.5, "cache_dir": str(tmp_path / "cache"),
                    "percentiles": [0.5, 99.5], "patch_size": [16, 16, 16], "patch_voxels": 4096, "batch_size": 4,
                    "num_workers": 0, "patches_per_epoch": 8, "jitter": 0.25, "max_indexed": 1000,
                    "sampling": {"background": 0.25, "pore": 0.25, "crack": 0.25, "delamination": 0.25},
                    "augment": {"enabled": False}}
    data = build_training_data(data_options, 0, (4, 4, 4))
    batch = next(iter(data.datamodule.train_dataloader()))
    labels = batch["label"]
    annotated = labels != IGNORE
    assert annotated.any(dim=(1, 2, 3, 4)).all()  # every patch holds annotated voxels
    assert (~annotated).float().mean() > 0.5  # most voxels are not annotated
    logits = torch.randn(4, 4, 16, 16, 16, requires_grad=True)
    build_loss("DiceCELoss", include_background=False)(logits, labels).backward()
    assert logits.grad.permute(1, 0, 2, 3, 4)[:, ~annotated[:, 0]].abs().max() == 0

    out = tmp_path / "run"
    assert main(train_args(dataset, out, "data.val_fraction=0.5")) == 0
    card = json.loads((out / "model" / "card.json").read_text())
    assert card["training"]["fingerprint"]["annotated_fraction"] == pytest.approx(3 / 32)
    assert card["metrics"]["validation"]["volumes"] == 1


def test_resume_continues_from_the_last_checkpoint(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(train_args(dataset, out, "trainer.max_epochs=1")) == 0
    first = json.loads((out / "model" / "card.json").read_text())["training"]
    assert (first["epochs"], first["steps"]) == (1, 4)
    assert main(train_args(dataset, out, "trainer.max_epochs=2")) == 2  # the folder exists: refuse
    assert main(train_args(dataset, out, "trainer.max_epochs=2", "ema_decay=2", "--resume")) == 2
    assert (out / "checkpoints" / "last.ckpt").is_file()  # a bad setting on resume leaves the run alone
    assert main(train_args(dataset, out, "trainer.max_epochs=2", "--resume")) == 0
    second = json.loads((out / "model" / "card.json").read_text())["training"]
    assert (second["epochs"], second["steps"]) == (2, 8)  # 4 more steps, not 8
    assert (out / "csv" / "version_1" / "metrics.csv").is_file()
    assert main(train_args(dataset, out, "trainer.max_epochs=1", "--overwrite")) == 0
    assert json.loads((out / "model" / "card.json").read_text())["training"]["steps"] == 4


def test_last_checkpoint_is_written_after_every_validation(dataset: Path, tmp_path: Path) -> None:
    """last.ckpt follows the newest validation even when the score does not improve (Lightning's
    save_last writes it only with a new best), so a killed run loses at most one epoch."""
    out = tmp_path / "run"
    assert main(train_args(dataset, out, "trainer.max_epochs=3")) == 0
    steps = json.loads((out / "model" / "card.json").read_text())["training"]["steps"]
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, steps)


def test_interrupted_run_resumes_from_its_exception_checkpoint(dataset: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from roidetect.learn.module import SegmentationModule

    original = SegmentationModule.training_step

    def interrupted(self, batch, batch_idx):  # noqa: ANN001, ANN202 - stands in for Ctrl+C at step 6
        if self.global_step == 5:
            raise KeyboardInterrupt
        return original(self, batch, batch_idx)

    out = tmp_path / "run"
    handler = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(SegmentationModule, "training_step", interrupted)
    try:
        assert main(train_args(dataset, out)) == 130
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl+C while it shuts down
    assert (out / "checkpoints" / "on_exception.ckpt").is_file() and not (out / "model").exists()
    monkeypatch.setattr(SegmentationModule, "training_step", original)
    assert main(train_args(dataset, out, "--resume")) == 0
    training = json.loads((out / "model" / "card.json").read_text())["training"]
    assert (training["epochs"], training["steps"]) == (2, 8)
    assert not (out / "checkpoints" / "on_exception.ckpt").exists()


def test_checkpoints_load_without_pickle(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(train_args(dataset, out, "trainer.max_epochs=1")) == 0
    for name in ("best.ckpt", "last.ckpt"):
        state = torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert any(k.startswith("network.") for k in state["state_dict"])


def test_ema_weights_are_validated_checkpointed_and_packaged(dataset: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "run"
    assert main(train_args(dataset, out, "trainer.max_epochs=2", "ema_decay=0.5")) == 0
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    averaged = {k[len("network."):]: v for k, v in best["state_dict"].items() if k.startswith("network.")}
    raw = {k[len("network."):]: v for k, v in best["current_model_state"].items() if k.startswith("network.")}
    assert averaged.keys() == raw.keys()
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged)  # the average is not the raw weights
    packaged = load_file(out / "model" / "weights.safetensors")
    assert packaged.keys() == averaged.keys()
    assert all(torch.equal(packaged[k], averaged[k]) for k in packaged)  # and it is what ships
    assert main(train_args(dataset, out, "trainer.max_epochs=3", "ema_decay=0.5", "--resume")) == 0
    assert json.loads((out / "model" / "card.json").read_text())["training"]["steps"] == 12


@pytest.mark.parametrize("decay", ["1.5", "0", "yes"])
def test_bad_ema_decay_is_refused(decay: str, dataset: Path, tmp_path: Path) -> None:
    assert main(train_args(dataset, tmp_path / "run", f"ema_decay={decay}")) == 2
    assert not (tmp_path / "run").exists()  # nothing left behind: the corrected command needs no overwrite


def test_ddp_with_two_cpu_processes(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = train_args(dataset, out, "trainer=ddp", "trainer.devices=2", "trainer.max_epochs=1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "roidetect", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads((out / "model" / "card.json").read_text())
    assert card["training"]["devices"] == 2 and card["training"]["strategy"] == "DDPStrategy"
    assert card["training"]["steps"] == 4  # each process ran 4 steps on its own patches


def test_bad_override_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "model=no_such_network"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model/no_such_network" in err
    assert main(["train", "data=folder"]) == 2
    assert capsys.readouterr().err.strip() == ("roidetect train: error: data.path is required; "
                                                "set it with data.path=VALUE")


def test_help_lists_groups_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for group in GROUPS:
        assert f"  {group} " in text
    assert "segresnet" in text and "ddp" in text and "KEY=VALUE" in text


@pytest.mark.parametrize("source", ["volumes", "phantoms"])
def test_patch_stream_is_reproducible_and_new_each_epoch(source: str, dataset: Path) -> None:
    from roidetect.learn.data import PatchStream, PhantomSettings
    from roidetect.learn.dataset import load_volume, read_dataset
    from roidetect.learn.sampling import PatchSampler
    from roidetect.learn.transforms import build_augmentation

    volumes, phantoms = [], None
    if source == "volumes":
        volumes = [load_volume(e, {}, (0.0, 255.0)) for e in read_dataset(dataset).volumes]
    else:
        phantoms = PhantomSettings((32, 32, 32), (0.05, 0.05, 0.05), "cathode", True, patches_per_phantom=2)
    sampler = PatchSampler((16, 16, 16), {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0})

    def patches(epoch: int, rank: int) -> np.ndarray:
        stream = PatchStream(volumes, sampler, build_augmentation(), 4, 2, seed=3, epoch=epoch, rank=rank,
                             phantoms=phantoms)
        return np.stack([p["image"].numpy() for p in stream])

    first = patches(0, 0)
    assert first.shape == (4, 1, 16, 16, 16)
    assert np.array_equal(first, patches(0, 0))
    assert not np.array_equal(first, patches(1, 0))
    assert not np.array_equal(first, patches(0, 1))


def test_weighted_patches_carry_weights_aligned_with_their_labels() -> None:
    from roidetect.labels import DELAMINATION
    from roidetect.learn.data import PatchStream, PhantomSettings
    from roidetect.learn.region_weights import RegionWeighting
    from roidetect.learn.sampling import PatchSampler
    from roidetect.learn.transforms import build_augmentation

    phantoms = PhantomSettings((48, 48, 48), (0.05, 0.05, 0.05), "cathode", False, patches_per_phantom=4,
                               overrides={"delamination_rate": 1.0})
    sampler = PatchSampler((16, 16, 16), {DELAMINATION: 1.0})
    weighting = RegionWeighting((DELAMINATION,), 1e6, 3.0)  # every gap voxel weighs 3
    augment = build_augmentation(rotate90_planes=[[0, 1], [1, 2]], zoom_prob=1.0)
    stream = PatchStream([], sampler, augment, 8, 2, seed=4, phantoms=phantoms, weighting=weighting)
    patches = list(stream)
    assert all(p["weight"].shape == p["label"].shape and p["weight"].dtype == torch.float32 for p in patches)
    gaps = sum(int((p["label"] == DELAMINATION).sum()) for p in patches)
    assert gaps > 0
    for p in patches:  # after flips, rotations and zoom the weights still sit on the gaps
        assert torch.equal(p["weight"] == 3.0, p["label"] == DELAMINATION)
    plain = PatchStream([], sampler, augment, 8, 2, seed=4, phantoms=phantoms)
    assert all("weight" not in p for p in plain)


def test_training_with_small_region_weights_runs_and_records_them(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(train_args(dataset, out, "data.small_region_weight.classes=[delamination,crack]")) == 0
    card = json.loads((out / "model" / "card.json").read_text())
    assert card["training"]["data"]["small_region_weight"]["classes"] == ["delamination", "crack"]


def test_bad_small_region_weighting_exits_with_status_2(dataset: Path, tmp_path: Path, capsys) -> None:
    args = train_args(dataset, tmp_path / "run", "data.small_region_weight.classes=[voids]")
    assert main(args) == 2
    assert "small_region_weight" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()  # a folder the user made for the run stays, empty
    assert main(train_args(dataset, tmp_path / "empty", "data.small_region_weight.classes=[voids]")) == 2
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(True, False, "bf16-mixed"), (False, True, "bf16-mixed"),
                                                         (False, False, "32-true")])
def test_auto_precision_on_cpu_uses_bf16_only_where_it_is_native(monkeypatch, avx512_bf16, amx, expected):
    from roidetect.inference.model import resolve_precision as inference_precision
    from roidetect.learn.train import resolve_precision

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)  # says yes on plain AVX512
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("32-true", "cpu") == "32-true"
    native = expected == "bf16-mixed"  # predict's auto agrees
    assert inference_precision("auto", torch.device("cpu")) == (torch.bfloat16 if native else torch.float32)


def test_channels_last_training_matches_the_contiguous_layout() -> None:
    from roidetect.learn.module import SegmentationModule

    args = ({"class": "UNet", "args": {"in_channels": 1, "out_channels": 4, "channels": [4, 8, 16], "strides": [2, 2],
                                       "num_res_units": 1, "norm": "instance"}},
            {"name": "DiceCELoss"}, {"name": "AdamW", "lr": 1e-3}, [16, 16, 16],
            {"overlap": 0.25, "sw_batch_size": 1, "mode": "gaussian"}, {})
    generator = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(2, 1, 16, 16, 16, generator=generator),
             "label": torch.randint(0, 4, (2, 1, 16, 16, 16), generator=generator)}
    results = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        module = SegmentationModule(*args, channels_last=channels_last)
        conv = next(m for m in module.network.modules() if isinstance(m, torch.nn.Conv3d) and m.in_channels > 1)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d) == channels_last
        loss = module.loss(module(batch["image"]), batch["label"])
        loss.backward()
        results.append((loss.detach(), conv.weight.grad.contiguous()))
    (loss_a, grad_a), (loss_b, grad_b) = results
    assert torch.allclose(loss_a, loss_b, atol=1e-5)  # the layout changes the summation order only
    assert torch.allclose(grad_a, grad_b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("accelerator, available, expected", [("cpu", True, True), ("auto", False, True),
                                                              ("auto", True, False), ("gpu", True, False)])
def test_auto_channels_last_is_on_for_cpu_training(monkeypatch, accelerator, available, expected) -> None:
    from roidetect.learn.train import resolve_channels_last

    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert resolve_channels_last("auto", accelerator) == expected
    assert resolve_channels_last(False, "cpu") is False


def test_bad_channels_last_is_refused(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(train_args(dataset, tmp_path / "run", "channels_last=sometimes")) == 2
    assert "channels_last" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_init_starts_from_a_packages_network_and_weights(dataset: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from roidetect.runlog import sha256_of

    first = tmp_path / "first"
    assert main(train_args(dataset, first, "trainer.max_epochs=1")) == 0
    # a different model is asked for and the learning rate is 0: the package's network is
    # trained, and with nothing learnt its weights come out exactly as they went in
    second = tmp_path / "second"
    assert main(train_args(dataset, second, "trainer.max_epochs=1", "optimizer.lr=0",
                           "model.args.channels=[8,16,32]", f"init={first / 'model'}")) == 0
    before, after = load_file(first / "model" / "weights.safetensors"), load_file(second / "model" / "weights.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    card = json.loads((second / "model" / "card.json").read_text())
    assert card["network"]["args"]["channels"] == [4, 8, 16]
    init = card["training"]["init"]
    assert init["weights_sha256"] == sha256_of(first / "model" / "weights.safetensors")
    assert Path(init["package"]) == first / "model"
    assert json.loads((second / "run.json").read_text())["init"] == init


def test_init_refuses_unknown_packages_and_other_normalisation(dataset: Path, tmp_path: Path, capsys) -> None:
    assert main(train_args(dataset, tmp_path / "a", f"init={tmp_path / 'missing'}")) == 2
    assert "not a model package folder nor a shipped model" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # checked before the run folder is made: the same command can run again
    first = tmp_path / "first"
    assert main(train_args(dataset, first, "debug=fast_dev_run")) == 0
    capsys.readouterr()
    assert main(train_args(dataset, tmp_path / "b", "data.percentiles=[1,99]", f"init={first / 'model'}")) == 2
    assert "data.percentiles=[0.5, 99.5]" in capsys.readouterr().err
