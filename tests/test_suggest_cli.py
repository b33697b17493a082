"""``roidetect suggest`` on a prediction folder: outputs, user errors, OpenFIBSEM protocol."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from targeting_fixtures import make_phantom, write_prediction_folder, write_scan

from roidetect.cli import main
from roidetect.targeting.plan import site_columns

SMALL_FOV = "instrument.imaging.fov_um.value=6"
OUTPUTS = ("sites.csv", "candidates.csv", "sites.json", "milling_protocol.yaml", "run.json")


@pytest.fixture
def pred_dir(tmp_path: Path) -> Path:
    return write_prediction_folder(tmp_path / "pred", make_phantom())


def _fiducials(path: Path, noise_um: float = 0.05) -> Path:
    """Six fiducials around the scan, mapped to a stage frame rotated by 90 degrees about z."""
    rng = np.random.default_rng(3)
    scan = np.array([[5, -10, 2], [69, -10, 4], [5, 54, 3], [69, 54, 6], [37, 22, 20], [20, 40, 12]], float)
    stage = scan[:, [1, 0, 2]] * [-1, 1, 1] + [12000.0, -3000.0, 4000.0] + rng.normal(0, noise_um, scan.shape)
    table = pd.DataFrame(np.c_[scan, stage], columns=["x_um", "y_um", "z_um", "stage_x_um", "stage_y_um",
                                                      "stage_z_um"])
    table.insert(0, "name", [f"F{i}" for i in range(len(table))])
    table.to_csv(path, index=False)
    return path


def test_suggest_writes_the_plan(pred_dir, tmp_path):
    out = tmp_path / "sites"
    assert main(["suggest", str(pred_dir), "--out", str(out), "--top", "4", "--quiet", SMALL_FOV]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    table = pd.read_csv(out / "sites.csv")
    assert list(table.columns) == site_columns(registered=False)
    assert table["rank"].tolist() == [1, 2, 3, 4]
    document = json.loads((out / "sites.json").read_text())
    assert document["units"]["length"] == "um" and "coordinates" in document["conventions"]
    assert [s["site_id"] for s in document["sites"]] == table["site_id"].tolist()
    for site in document["sites"]:
        assert math.isclose(site["minutes_total"], sum(step["minutes"] for step in site["steps"]))
    protocol = yaml.safe_load((out / "milling_protocol.yaml").read_text())
    assert set(protocol["milling"]) == set(table["site_id"])
    assert [s["id"] for s in protocol["sites"]] == table.sort_values("visit_order")["site_id"].tolist()
    assert json.loads((out / "run.json").read_text())["command"] == "suggest"
    assert len(pd.read_csv(out / "candidates.csv")) >= 4


def test_suggest_with_fiducials_adds_stage_coordinates(pred_dir, tmp_path):
    out = tmp_path / "sites"
    fiducials = _fiducials(tmp_path / "fiducials.csv")
    assert main(["suggest", str(pred_dir), "--out", str(out), "--fiducials", str(fiducials), "--quiet",
                 "--mode", "cross-section", "--budget-hours", "12", SMALL_FOV]) == 0
    table = pd.read_csv(out / "sites.csv")
    assert list(table.columns) == site_columns(registered=True)
    assert table["minutes_total"].sum() <= 12 * 60
    np.testing.assert_allclose(table["stage_x_um"], 12000 - table["y_um"], atol=0.5)
    np.testing.assert_allclose(table["stage_y_um"], -3000 + table["x_um"], atol=0.5)
    assert (table["tre_um"] < 0.5).all() and not table["tre_flag"].any()
    registration = json.loads((out / "sites.json").read_text())["registration"]
    assert registration["kind"] == "rigid" and registration["fre_um"] < 0.5
    protocol = yaml.safe_load((out / "milling_protocol.yaml").read_text())
    position = protocol["sites"][0]["stage_position"]
    site = table.set_index("site_id").loc[protocol["sites"][0]["id"]]
    assert position["x"] == pytest.approx(site["stage_x_um"] * 1e-6)
    assert position["t"] == pytest.approx(math.radians(52))


def test_overrides_may_follow_options_and_overwrite_replaces(pred_dir, tmp_path):
    out = tmp_path / "sites"
    assert main(["suggest", str(pred_dir), "--out", str(out), "--quiet", SMALL_FOV, "targeting.top_k=2"]) == 0
    assert len(pd.read_csv(out / "sites.csv")) == 2
    assert main(["suggest", str(pred_dir), "--quiet", "--out", str(out), "--overwrite", "--top", "3", SMALL_FOV]) == 0
    assert len(pd.read_csv(out / "sites.csv")) == 3


def _break_detections(pred: Path, tmp: Path) -> list[str]:
    (pred / "detections.csv").unlink()
    return []


def _malformed_fiducials(pred: Path, tmp: Path) -> list[str]:
    bad = tmp / "fiducials.csv"
    bad.write_text("x_um,y_um,z_um,stage_x_um\n1,2,3,4\n")
    return ["--fiducials", str(bad)]


def _unknown_instrument(pred: Path, tmp: Path) -> list[str]:
    return ["--instrument", "nanoct_hammer_and_chisel"]


def _existing_output(pred: Path, tmp: Path) -> list[str]:
    (tmp / "sites").mkdir()
    (tmp / "sites" / "keep.txt").write_text("mine")
    return []


def _bad_override(pred: Path, tmp: Path) -> list[str]:
    return ["targeting.no_such_option=1"]


@pytest.mark.parametrize("breakage", [_break_detections, _malformed_fiducials, _unknown_instrument, _existing_output,
                                      _bad_override])
def test_bad_input_exits_2_and_writes_nothing(pred_dir, tmp_path, capsys, breakage):
    extra = breakage(pred_dir, tmp_path)
    out = tmp_path / "sites"
    before = sorted(p.name for p in out.iterdir()) if out.exists() else None
    assert main(["suggest", str(pred_dir), "--out", str(out), "--quiet", *extra]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("roidetect suggest: error:")
    assert (sorted(p.name for p in out.iterdir()) if out.exists() else None) == before


@pytest.mark.parametrize("mode, sites", [("top-down", 2), ("cross-section", 1)])
def test_protocol_loads_and_runs_on_the_openfibsem_demo_microscope(pred_dir, tmp_path, monkeypatch, mode, sites):
    pytest.importorskip("fibsem")
    monkeypatch.setenv("FIBSEM_SIM_NO_DELAY", "1")
    monkeypatch.chdir(tmp_path)  # OpenFIBSEM writes alignment images to the working folder by default
    from fibsem import utils
    from fibsem.milling import FibsemMillingStage, get_milling_stages
    from fibsem.structures import FibsemStagePosition

    out = tmp_path / "sites"
    assert main(["suggest", str(pred_dir), "--out", str(out), "--top", str(sites), "--mode", mode, "--quiet",
                 "--fiducials", str(_fiducials(tmp_path / "fiducials.csv")), SMALL_FOV]) == 0
    protocol = yaml.safe_load((out / "milling_protocol.yaml").read_text())
    microscope, _ = utils.setup_session(manufacturer="Demo", session_path=str(tmp_path / "session"),
                                        setup_logging=False)
    assert len(protocol["sites"]) == sites
    for site in protocol["sites"]:
        stages = get_milling_stages(site["id"], protocol["milling"])
        assert len(stages) == len(protocol["milling"][site["id"]]) >= 1
        assert all(isinstance(stage, FibsemMillingStage) for stage in stages)
        position = FibsemStagePosition.from_dict(site["stage_position"])
        microscope.move_stage_absolute(position)
        assert microscope.get_stage_position().is_close(position, tol=1e-9)
        for stage in stages:
            assert stage.pattern.volume > 0 and 1e-12 <= stage.milling.milling_current <= 1e-7
            stage.imaging.path = str(tmp_path)
            stage.run(microscope)


def test_suggest_plans_on_the_output_of_predict(tmp_path):
    """The pipeline end to end: roidetect predict (classical baseline) -> roidetect suggest."""
    scan = write_scan(tmp_path / "scan.tif", make_phantom())
    assert main(["predict", str(scan), "--model", "classical", "--out", str(tmp_path / "pred"), "--quiet"]) == 0
    assert main(["suggest", str(tmp_path / "pred"), "--out", str(tmp_path / "sites"), "--quiet"]) == 0
    for name in ("sites.csv", "sites.json", "milling_protocol.yaml"):
        assert (tmp_path / "sites" / name).is_file()
    assert len(pd.read_csv(tmp_path / "sites" / "sites.csv")) >= 1

