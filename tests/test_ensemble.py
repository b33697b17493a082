"""Ensembles: the averaging network, its card, and ``roidetect ensemble`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_train import train_args

from roidetect.cli import main
from roidetect.errors import UserError
from roidetect.learn.bundle import load_package, save_package
from roidetect.learn.networks import Ensemble, build_network, input_divisor

TINY = {"class": "UNet", "args": {"in_channels": 1, "out_channels": 4, "channels": [4, 8], "strides": [2],
                                  "num_res_units": 0}}


def _tiny_unet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(TINY["class"], **TINY["args"]).eval()


def test_ensemble_averages_the_members_probabilities() -> None:
    members = [_tiny_unet(1), _tiny_unet(2), _tiny_unet(3)]
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x), dim=1) for m in members]).mean(0)
        out = Ensemble(members)(x)
        single = Ensemble(members[:1])(x)
    assert out.shape == (2, 4, 16, 16, 16) and out.dtype == torch.float32
    torch.testing.assert_close(torch.softmax(out, dim=1), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.softmax(single, dim=1), torch.softmax(members[0](x), dim=1), rtol=1e-5, atol=1e-6)
    # Different members give a different average than any one of them.
    assert not torch.allclose(torch.softmax(out, dim=1), torch.softmax(members[0](x), dim=1), atol=1e-3)


def test_an_ensemble_is_rebuilt_from_its_card_entry() -> None:
    ensemble = Ensemble([_tiny_unet(1), _tiny_unet(2)])
    rebuilt = build_network("Ensemble", members=[TINY, TINY])
    rebuilt.load_state_dict(ensemble.state_dict(), strict=True)
    assert all(k.startswith(("members.0.", "members.1.")) for k in ensemble.state_dict())
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), ensemble(x))
    deeper = {"class": "UNet", "args": {**TINY["args"], "channels": [4, 4, 4], "strides": [2, (2, 2, 1)]}}
    assert input_divisor("Ensemble", {"members": [TINY, deeper]}) == (4, 4, 2)
    for bad in ({}, {"members": "UNet"}, {"members": [TINY], "extra": 1}, {"members": [{"args": {}}]}):
        with pytest.raises(UserError, match="Ensemble"):
            build_network("Ensemble", **bad)


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two tiny packages with the same card and different weights, and the dataset they were trained on."""
    from test_learn import write_tiny_dataset

    root = tmp_path_factory.mktemp("ensemble")
    dataset = write_tiny_dataset(root / "data")
    assert main(train_args(dataset, root / "run", "trainer.max_epochs=2", "calibration.tta=false")) == 0
    first = root / "run" / "model"
    card = json.loads((first / "card.json").read_text())
    torch.manual_seed(7)
    second = save_package(root / "other", build_network(card["network"]["class"], **card["network"]["args"]),
                          {**card, "name": "other"})
    return first, second, dataset


def test_ensemble_command_writes_a_calibrated_package_that_predicts(members: tuple[Path, Path, Path],
                                                                    tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    first, second, dataset = members
    originals = {p: p.read_bytes() for folder in (first, second) for p in folder.iterdir()}
    out = tmp_path / "both"
    with caplog.at_level("WARNING", logger="roidetect.learn.final_validation"):
        assert main(["ensemble", str(first), str(second), "--data", str(dataset), "--out", str(out), "--overlap",
                     "0.4", "--quiet"]) == 0
    trained = json.loads((first / "card.json").read_text())["training"]["data"]["train_volumes"]
    assert f"{len(trained)} of the 3 volumes to calibrate on were used to train this model or one of its members (" \
           f"{', '.join(trained)})" in caplog.text  # the first member trained on them
    assert {p: p.read_bytes() for p in originals} == originals  # the members are untouched

    card = json.loads((out / "card.json").read_text())
    assert card["network"]["class"] == "Ensemble" and len(card["network"]["args"]["members"]) == 2
    assert [m["source"] for m in card["ensemble"]["members"]] == [str(first), str(second)]
    assert card["ensemble"]["members"][0]["name"] == json.loads((first / "card.json").read_text())["name"]
    assert len({m["weights_sha256"] for m in card["ensemble"]["members"]}) == 2
    assert card["calibration_data"]["kind"] == "dataset" and card["tta"]["variants"] == 8
    assert card["metrics"]["validation"]["volumes"] == 3
    assert all(0 <= v <= 1 for v in card["detection"]["min_score"].values())
    assert card["sliding_window"]["overlap"] == 0.4  # calibrated on, and run by predict

    package = load_package(out)
    assert isinstance(package.network, Ensemble)
    scan = dataset.parent / "images" / "vol_0000.tif"
    pred = tmp_path / "pred"
    assert main(["predict", str(scan), "--model", str(out), "--out", str(pred), "--quiet"]) == 0
    run = json.loads((pred / "run.json").read_text())
    assert run["model"]["network"]["class"] == "Ensemble"
    scores = pd.read_csv(pred / "detections.csv")["score"]
    assert ((scores >= 0) & (scores <= 1)).all()


def test_ensemble_refuses_bad_requests(members: tuple[Path, Path, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    first, second, dataset = members
    out = tmp_path / "e"
    assert main(["ensemble", str(first), "--data", str(dataset), "--out", str(out), "--quiet"]) == 2
    assert "at least two models" in capsys.readouterr().err

    card = json.loads((second / "card.json").read_text())
    odd = save_package(tmp_path / "odd", load_package(second).network,
                       {**card, "normalisation": {**card["normalisation"], "percentiles": [1.0, 99.0]}})
    assert main(["ensemble", str(first), str(odd), "--data", str(dataset), "--out", str(out), "--quiet"]) == 2
    assert "normalisation" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:  # argparse: --data is required
        main(["ensemble", str(first), str(second), "--out", str(out), "--quiet"])
    assert exit_info.value.code == 2 and "--data" in capsys.readouterr().err
    assert main(["ensemble", str(first), str(second), "--data", str(tmp_path / "missing"), "--out", str(out),
                 "--quiet"]) == 2
    assert "no dataset.json" in capsys.readouterr().err
    assert main(["ensemble", str(first), str(second), "--data", str(dataset), "--out", str(out), "--overlap", "1.5",
                 "--quiet"]) == 2
    assert "overlap" in capsys.readouterr().err
    assert not out.exists()
