"""No output may replace an input, not even with ``--overwrite`` (``check_outside_inputs``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from roidetect.atomic import check_outside_inputs
from roidetect.cli import main
from roidetect.errors import UserError


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_output_may_not_be_an_input_or_hold_one(tmp_path: Path) -> None:
    scan = tmp_path / "scans" / "a.tif"
    for out in (scan, tmp_path / "scans", tmp_path, tmp_path / "scans" / ".." / "scans"):
        with pytest.raises(UserError, match="would replace the input"):
            check_outside_inputs(out, [None, scan])
    for out in (tmp_path / "scans" / "pred", tmp_path / "pred", tmp_path / "scans" / "a"):  # beside or inside
        check_outside_inputs(out, [None, scan])


def test_predict_into_the_scans_own_folder_is_refused_and_the_slices_survive(tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    slices = tmp_path / "slices"
    slices.mkdir()
    rng = np.random.default_rng(0)
    for z in range(12):
        tifffile.imwrite(slices / f"s_{z:03d}.tif", rng.integers(0, 60000, (32, 32), dtype=np.uint16))
    before = snapshot(slices)
    assert main(["predict", str(slices), "--voxel-size", "0.05", "--model", "classical", "--out", str(slices),
                 "--overwrite", "-q"]) == 2
    assert "would replace the input" in capsys.readouterr().err
    assert snapshot(slices) == before


def test_training_into_the_datasets_folder_is_refused_and_the_dataset_survives(tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    from test_learn import write_tiny_dataset

    dataset = write_tiny_dataset(tmp_path / "data")
    before = snapshot(dataset.parent)
    for out in ([f"out={dataset.parent}"], [f"out={tmp_path / 'run'}", f"package={dataset.parent / 'labels'}"]):
        assert main(["train", "data=folder", f"data.path={dataset}", *out, "overwrite=true", "trainer=cpu",
                     "quiet=true"]) == 2
        assert "would replace the input" in capsys.readouterr().err
    assert snapshot(dataset.parent) == before


def test_suggest_into_the_prediction_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from targeting_fixtures import make_phantom, write_prediction_folder

    pred = write_prediction_folder(tmp_path / "pred", make_phantom())
    before = snapshot(pred)
    assert main(["suggest", str(pred), "--out", str(pred), "--overwrite", "--quiet"]) == 2
    assert "would replace the input" in capsys.readouterr().err
    assert snapshot(pred) == before


def test_a_report_whose_figures_folder_is_an_input_is_refused(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    """``report.html`` writes its figures to ``report_files/``, which may be the prediction's name."""
    scan, pred, sites = tmp_path / "scan.tif", tmp_path / "report_files", tmp_path / "sites_files"
    tifffile.imwrite(scan, np.random.default_rng(0).integers(0, 60000, (32, 32, 32), dtype=np.uint16))
    assert main(["predict", str(scan), "--voxel-size", "0.05", "--model", "classical", "--out", str(pred), "-q"]) == 0
    assert main(["suggest", str(pred), "--out", str(sites), "--quiet"]) == 0
    before = snapshot(tmp_path)
    for out in ("report.html", "sites.html"):
        assert main(["report", str(pred), str(sites), "--out", str(tmp_path / out), "--overwrite", "--quiet"]) == 2
        assert "would replace the input" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_calibrating_onto_the_calibration_data_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from test_learn import write_tiny_dataset

    dataset = write_tiny_dataset(tmp_path / "data")
    copy = shutil.copytree(Path(__file__).parents[1] / "models" / "default", tmp_path / "model")
    before = snapshot(tmp_path)
    assert main(["calibrate", str(copy), "--data", str(dataset), "--out", str(dataset.parent / "images"),
                 "--overwrite", "--quiet"]) == 2
    assert "would replace the input" in capsys.readouterr().err
    assert snapshot(tmp_path) == before
