"""`roidetect demo`: phantom -> predict (shipped default model) -> suggest -> report -> evaluate."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from roidetect.cli import main
from roidetect.learn.bundle import load_package
from roidetect.resources import models_dir, shipped_models


def test_default_model_ships_small_with_its_card_and_loads_without_pickle():
    assert "default" in shipped_models()
    folder = models_dir() / "default"
    assert {"weights.safetensors", "card.json", "README.md"} <= {p.name for p in folder.iterdir()}
    assert sum(p.stat().st_size for p in folder.iterdir()) < 20 * 2**20
    package = load_package("default")
    assert package.card["classes"] == {"0": "background", "1": "pore", "2": "crack", "3": "delamination"}
    assert package.card["voxel_size_um"] == [0.05, 0.05, 0.05]
    assert not package.network.training


def test_a_model_folder_may_be_given_from_the_home_directory(tmp_path, monkeypatch):
    import shutil

    from roidetect.learn.bundle import resolve_model_path

    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(models_dir() / "default", tmp_path / "mine")
    assert resolve_model_path("~/mine") == tmp_path / "mine"
    assert load_package("~/mine").card["name"] == "default"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--out", str(out), "--shape", "64", "64", "64", "--seed", "3", "--quiet"]) == 0
    return out


def test_demo_writes_every_stage(demo_dir):
    assert (demo_dir / "phantom" / "images" / "vol_0000.tif").is_file()
    assert (demo_dir / "prediction" / "labels.tif").is_file()
    detections = pd.read_csv(demo_dir / "prediction" / "detections.csv")
    assert set(detections["class"]) <= {"pore", "crack", "delamination"}
    assert (demo_dir / "sites" / "sites.csv").is_file()
    html = (demo_dir / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html
    evaluation = json.loads((demo_dir / "evaluation.json").read_text())
    assert evaluation["instance"]["any"]["true"] > 0
    assert evaluation["instance"]["pore"]["tp"] > 0  # the shipped model finds real defects
    run = json.loads((demo_dir / "run.json").read_text())
    assert run["command"] == "demo"
    assert {"phantom", "predict", "suggest", "report", "evaluate"} <= set(run["timings_s"])


def test_demo_replaces_its_own_folder_but_not_a_users(demo_dir, tmp_path, capsys):
    assert main(["demo", "--out", str(demo_dir), "--shape", "48", "48", "48", "--quiet"]) == 0
    assert json.loads((demo_dir / "run.json").read_text())["parameters"]["shape"] == [48, 48, 48]
    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "scan.tif").write_bytes(b"mine")
    assert main(["demo", "--out", str(precious), "--quiet"]) == 2
    assert "not written by roidetect demo" in capsys.readouterr().err
    assert (precious / "scan.tif").read_bytes() == b"mine"
