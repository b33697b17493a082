"""Calibration per inference mode: flip-averaged validation, ``predict --tta`` using the card's
``tta`` section, and ``roidetect calibrate`` refitting an existing package (training writes
the section: ``test_train.test_short_cpu_run_writes_a_loadable_package``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_train import train_args

from roidetect.cli import main
from roidetect.inference.network import Augmentation, augmentations
from roidetect.learn.module import volume_probabilities

WINDOW = {"overlap": 0.25, "sw_batch_size": 1, "mode": "gaussian"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny package trained without the TTA calibration, as models made before it were."""
    from test_learn import write_tiny_dataset

    root = tmp_path_factory.mktemp("calibrate")
    dataset = write_tiny_dataset(root / "data")
    assert main(train_args(dataset, root / "run", "trainer.max_epochs=2", "calibration.tta=false")) == 0
    return root / "run" / "model"


def _asymmetric_image() -> torch.Tensor:
    z, y, x = np.mgrid[:24, :20, :28].astype(np.float32)
    return torch.from_numpy(np.sin(z / 3.0) + 0.1 * y + (x > 20)).float()[None]


def test_flip_averaging_maps_each_flip_back() -> None:
    # A 1x1x1 convolution commutes with every flip, so the average of the flips mapped back
    # is the plain prediction; a flip left unmapped would move structures and break this.
    torch.manual_seed(0)
    pointwise = torch.nn.Conv3d(1, 4, 1).eval()
    image = _asymmetric_image()
    plain = volume_probabilities(pointwise, image, (16, 16, 16), WINDOW)
    averaged = volume_probabilities(pointwise, image, (16, 16, 16), WINDOW, augmentations(False))
    assert plain.shape == averaged.shape == (4, 24, 20, 28)
    np.testing.assert_allclose(averaged, plain, atol=1e-5)
    # A kernel with a direction does not commute: the average then differs, and stays a distribution.
    directed = torch.nn.Conv3d(1, 4, 3, padding=1).eval()
    plain = volume_probabilities(directed, image, (16, 16, 16), WINDOW)
    averaged = volume_probabilities(directed, image, (16, 16, 16), WINDOW, augmentations(False))
    assert np.abs(averaged - plain).max() > 1e-3
    np.testing.assert_allclose(averaged.sum(axis=0), 1.0, atol=1e-5)
    one_flip = volume_probabilities(directed, image, (16, 16, 16), WINDOW, [Augmentation((2,))])
    expected = np.flip(volume_probabilities(directed, torch.flip(image, (1,)), (16, 16, 16), WINDOW), 1)
    np.testing.assert_allclose(one_flip, expected, atol=1e-5)


def _predict(model: Path, scan: Path, out: Path, *extra: str) -> dict:
    assert main(["predict", str(scan), "--model", str(model), "--out", str(out), "--quiet", *extra]) == 0
    return json.loads((out / "run.json").read_text())


def test_calibrate_adds_the_tta_section_and_predict_tta_uses_it(trained: Path, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    original = {p.name: p.read_bytes() for p in trained.iterdir()}
    old_card = json.loads(original["card.json"])
    new = tmp_path / "calibrated"
    assert main(["calibrate", str(trained), "--out", str(new), "--quiet"]) == 0
    assert {p.name: p.read_bytes() for p in trained.iterdir()} == original  # the input is untouched
    assert (new / "weights.safetensors").read_bytes() == original["weights.safetensors"]
    card = json.loads((new / "card.json").read_text())
    # The plain mode is refitted on the same volumes with the same weights: nothing moves.
    assert card["calibration"] == old_card["calibration"]
    assert card["detection"] == old_card["detection"]
    assert card["calibration_data"] == old_card["calibration_data"]
    assert card["calibration_data"]["kind"] == "validation" and card["calibration_data"]["volumes"]
    assert card["tta"]["variants"] == 8

    scan = Path(old_card["config"]["data"]["path"]).parent / "images" / "vol_0000.tif"
    plain = _predict(new, scan, tmp_path / "plain")
    assert plain["model"]["calibration"] == "plain"
    assert plain["detection"]["min_score"] == {**plain["detection"]["min_score"], **card["detection"]["min_score"]}
    tta = _predict(new, scan, tmp_path / "tta", "--tta")
    assert tta["model"]["calibration"] == "tta" and tta["model"]["tta_variants"] == 8
    assert tta["detection"]["min_score"] == {**tta["detection"]["min_score"], **card["tta"]["min_score"]}
    scores = pd.read_csv(tmp_path / "tta" / "detections.csv")["score"]
    assert ((scores >= 0) & (scores <= 1)).all()

    with caplog.at_level(logging.WARNING):
        old = _predict(trained, scan, tmp_path / "old", "--tta")
    assert old["model"]["calibration"] == "plain"
    assert "calibrated without TTA" in caplog.text and "roidetect calibrate" in caplog.text


def test_calibrate_refuses_bad_requests(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "keep.txt").write_text("user data")
    assert main(["calibrate", str(trained), "--out", str(existing), "--quiet"]) == 2
    assert (existing / "keep.txt").read_text() == "user data"
    bare = _bare_copy(trained, tmp_path / "bare")
    assert main(["calibrate", str(bare), "--out", str(tmp_path / "new"), "--quiet"]) == 2
    assert "no training config" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert main(["calibrate", str(trained), "--out", str(tmp_path / "new"), "--overlap", "1", "--quiet"]) == 2
    assert "--overlap 1.0: must be in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def _bare_copy(package: Path, folder: Path) -> Path:
    """``package`` without its training config, as a package shared without its recipe would be."""
    folder.mkdir()
    card = json.loads((package / "card.json").read_text())
    del card["config"]
    (folder / "card.json").write_text(json.dumps(card))
    (folder / "weights.safetensors").write_bytes((package / "weights.safetensors").read_bytes())
    return folder


def test_calibrate_on_the_users_own_annotated_volumes(trained: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from test_learn import write_tiny_dataset

    # Sparse annotation (two slices per volume), one volume kept for testing: calibration
    # uses the other two, and needs no training config.
    dataset = write_tiny_dataset(tmp_path / "mine", annotated_slices=(10, 20), splits=(None, "test", None))
    spec = json.loads(dataset.read_text())
    spec["generator"] = {"name": "roidetect.synth", "seed": 201}  # as roidetect synth records it
    dataset.write_text(json.dumps(spec))
    bare = _bare_copy(trained, tmp_path / "bare")
    original = {p.name: p.read_bytes() for p in bare.iterdir()}
    new = tmp_path / "mine-calibrated"
    assert main(["calibrate", str(bare), "--out", str(new), "--data", str(dataset.parent), "--overlap", "0.5",
                 "--quiet"]) == 0
    assert {p.name: p.read_bytes() for p in bare.iterdir()} == original
    assert (new / "weights.safetensors").read_bytes() == original["weights.safetensors"]
    card = json.loads((new / "card.json").read_text())
    before = json.loads(original["card.json"])["sliding_window"]
    assert card["sliding_window"] == before | {"overlap": 0.5} and before["overlap"] != 0.5
    assert card["calibration_data"] == {"kind": "dataset", "path": str(dataset.parent),
                                        "name": "tiny", "volumes": ["vol_0000", "vol_0002"],
                                        "generator": {"name": "roidetect.synth", "seed": 201}}
    assert card["metrics"]["validation"]["volumes"] == 2 and card["tta"]["variants"] == 8
    for section in (card["calibration"], card["tta"]["calibration"]):
        for curve in section.values():
            assert np.all(np.diff(curve["y"]) >= 0) and 0 <= min(curve["y"]) <= max(curve["y"]) <= 1
    assert all(0 <= v <= 1 for v in card["detection"]["min_score"].values())

    only_test = write_tiny_dataset(tmp_path / "test-only", n=2, splits=("test", "test"))
    assert main(["calibrate", str(bare), "--out", str(tmp_path / "none"), "--data", str(only_test),
                 "--quiet"]) == 2
    assert "no volume to calibrate on" in capsys.readouterr().err
    assert main(["calibrate", str(bare), "--out", str(tmp_path / "none"), "--data", str(tmp_path / "missing"),
                 "--quiet"]) == 2
    assert "no dataset.json" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_calibrating_on_the_volumes_a_model_trained_on_warns_and_names_them(trained: Path, tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from test_learn import write_tiny_dataset

    card = json.loads((trained / "card.json").read_text())
    train_ids = card["training"]["data"]["train_volumes"]
    assert train_ids and card["training"]["data"]["val_volumes"]
    own = trained.parent.parent / "data"
    with caplog.at_level(logging.WARNING, logger="roidetect.learn.final_validation"):
        assert main(["calibrate", str(trained), "--out", str(tmp_path / "own"), "--data", str(own), "--quiet"]) == 0
    warned = [r.getMessage() for r in caplog.records if "used to train this model" in r.getMessage()]
    assert len(warned) == 1 and f"{len(train_ids)} of the 3 volumes" in warned[0]
    assert all(i in warned[0] for i in train_ids)
    caplog.clear()
    # the card keeps the dataset resolved where training ran, so calibrating from another
    # folder still recognises it, although the card's "path" was given relative
    relative = _bare_copy(trained, tmp_path / "relative")
    relative_card = json.loads((relative / "card.json").read_text())
    assert Path(relative_card["training"]["data"]["resolved_path"]) == (own / "dataset.json").resolve()
    relative_card["training"]["data"]["path"] = "data"
    (relative / "card.json").write_text(json.dumps(relative_card))
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="roidetect.learn.final_validation"):
        assert main(["calibrate", str(relative), "--out", str(tmp_path / "elsewhere"), "--data", str(own),
                     "--quiet"]) == 0
    assert "used to train this model" in caplog.text
    caplog.clear()
    other = write_tiny_dataset(tmp_path / "other")  # the same ids, in another dataset: not trained on
    with caplog.at_level(logging.WARNING, logger="roidetect.learn.final_validation"):
        assert main(["calibrate", str(trained), "--out", str(tmp_path / "other-cal"), "--data", str(other),
                     "--quiet"]) == 0
    assert "used to train this model" not in caplog.text


def test_a_card_without_sliding_window_calibrates_and_predicts_with_the_defaults(trained: Path, tmp_path: Path) -> None:
    from test_learn import write_tiny_dataset

    from roidetect.learn.bundle import DEFAULT_SLIDING_WINDOW

    dataset = write_tiny_dataset(tmp_path / "mine", n=1)
    bare = _bare_copy(trained, tmp_path / "bare")
    card = json.loads((bare / "card.json").read_text())
    del card["sliding_window"]
    (bare / "card.json").write_text(json.dumps(card))
    new = tmp_path / "calibrated"
    assert main(["calibrate", str(bare), "--out", str(new), "--data", str(dataset), "--quiet"]) == 0
    assert json.loads((new / "card.json").read_text())["sliding_window"] == DEFAULT_SLIDING_WINDOW


class _GapNetwork(torch.nn.Module):
    """Logits that call bright input voxels delamination with probability about 0.7."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))  # gives the network a device

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        bright = (image > 0.5).float()
        return torch.cat([1.0 - bright, 0 * image, 0 * image, bright * 2.0 + (1 - bright) * -5.0], dim=1)


def test_calibration_scores_every_detection_whatever_min_score_the_card_holds() -> None:
    """A card's min_score is a calibrated probability; refitting must not apply it to raw scores.

    Before the fix a card whose delamination min_score was 1.0 (the one-standard-error rule can
    choose it on a few validation volumes) dropped every gap before the fit, and the refitted
    card had no delamination threshold at all.
    """
    from types import SimpleNamespace

    from roidetect.detect import DetectionParams
    from roidetect.learn.final_validation import validate

    image = np.zeros((32, 32, 32), np.float32)
    image[10:14, 8:24, 8:24] = 1.0  # a gap 4 voxels thick
    label = (image > 0).astype(np.uint8) * 3
    volume = SimpleNamespace(id="v", image=image, intensity_range=(0.0, 1.0), label=label,
                             instances=(label > 0).astype(np.uint32), spacing_um=(0.05, 0.05, 0.05))
    params = {"min_volume_um3": {"pore": 0.0, "crack": 0.0, "delamination": 0.0}}
    runs = [validate(_GapNetwork(), [volume], (32, 32, 32), WINDOW,
                     DetectionParams(**params, min_score=min_score), min_detections=1)
            for min_score in ({}, {"pore": 1.0, "crack": 1.0, "delamination": 1.0})]
    for run in runs:
        assert run.samples.summary()["delamination"] == {"detections": 1, "matched": 1, "true": 1}
        assert 0.5 < run.samples.scores["delamination"][0] < 1.0


def test_a_class_left_without_a_calibration_curve_is_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from roidetect.learn.calibration import CalibrationSamples
    from roidetect.learn.final_validation import ModeValidation, with_calibration

    samples = CalibrationSamples()
    samples.scores["pore"], samples.matched["pore"] = [0.6, 0.9] * 10, [False, True] * 10
    samples.scores["crack"], samples.matched["crack"] = [0.7] * 3, [True] * 3
    samples.true_instances.update(pore=12, crack=4, delamination=0)
    mode = ModeValidation({"overall": {}}, {"pore": {"x": [0.6, 0.9], "y": [0.0, 1.0]}}, samples)
    with caplog.at_level("WARNING", logger="roidetect.learn.final_validation"):
        card = with_calibration({}, {False: mode, True: mode}, {"kind": "validation", "volumes": ["v"]})
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert set(card["calibration"]) == {"pore"}
    assert any(m.startswith("crack (plain): 3 detection(s), 3 real, of 4 true") for m in warned)
    assert any(m.startswith("crack (with TTA)") for m in warned)
    assert any(m.startswith("delamination (plain): 0 detection(s)") for m in warned)
    assert not any(m.startswith("pore") for m in warned)
