"""`roidetect demo`: phantom -> predict (shipped default model) -> suggest -> report -> evaluate."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from roidetect.cli import main
from roidetect.resources import shipped_models

pytestmark = pytest.mark.skipif("default" not in shipped_models(), reason="no shipped default model")


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
