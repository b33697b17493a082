"""``roidetect evaluate``: table, JSON, and one-line errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from roidetect.cli import main
from roidetect.detect import detections_from_labels
from roidetect.labels import CRACK, PORE
from roidetect.volume import write_json, write_ome_zarr, write_tiff

SPACING = (0.05, 0.05, 0.05)


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    """A prediction folder equal to its truth, the truth, and a sites folder."""
    labels = np.zeros((24, 32, 32), np.uint8)
    z, y, x = np.ogrid[:24, :32, :32]
    labels[(z - 8) ** 2 + (y - 8) ** 2 + (x - 8) ** 2 <= 9] = PORE
    labels[16, 4:28, 10:30] = CRACK
    ids = np.zeros(labels.shape, np.uint32)
    table = detections_from_labels(labels, SPACING, instances_out=ids)
    pred = tmp_path / "pred"
    pred.mkdir()
    write_tiff(pred / "labels.tif", labels, SPACING)
    write_ome_zarr(pred / "instances.ome.zarr", ids, SPACING)
    table.to_csv(pred / "detections.csv", index=False)
    write_tiff(tmp_path / "truth.tif", labels, SPACING)
    write_tiff(tmp_path / "truth_ids.tif", ids.astype(np.uint16), SPACING)
    write_tiff(tmp_path / "small.tif", labels[:-1], SPACING)
    sites = tmp_path / "sites"
    sites.mkdir()
    pd.DataFrame({"rank": [1], "site_id": [1], "z_um": table.z_um[:1], "y_um": table.y_um[:1],
                  "x_um": table.x_um[:1], "fov_um": [0.5], "depth_um": [0.4]}).to_csv(sites / "sites.csv", index=False)
    return {"pred": pred, "truth": tmp_path / "truth.tif", "ids": tmp_path / "truth_ids.tif",
            "small": tmp_path / "small.tif", "sites": sites, "out": tmp_path / "report.json"}


def test_evaluate_writes_table_and_json(folders, capsys):
    status = main(["evaluate", str(folders["pred"]), "--truth", str(folders["truth"]), "--instances",
                   str(folders["ids"]), "--sites", str(folders["sites"]), "--out", str(folders["out"]), "--quiet"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "pore" in printed and "crack" in printed and "site hit-rate" in printed
    report = json.loads(folders["out"].read_text())
    assert report["instance"]["pore"]["f1"] == 1.0 and report["voxel"]["crack"]["dice"] == 1.0
    assert report["sites"]["hit_rate"]["1"] == 1.0
    assert report["inputs"]["truth"] == str(folders["truth"])
    assert report["instance"]["delamination"]["precision"] is None  # NaN -> null, strict JSON


def test_existing_output_needs_overwrite(folders):
    args = ["evaluate", str(folders["pred"]), "--truth", str(folders["truth"]), "--out", str(folders["out"]), "-q"]
    assert main(args) == 0
    assert main(args) == 2
    assert main([*args, "--overwrite"]) == 0


def test_truth_of_another_label_scheme_is_read_through_a_label_map(folders, capsys):
    from roidetect.volume import open_volume

    truth = open_volume(folders["truth"]).numpy()
    shifted = folders["truth"].with_name("ilastik.tif")
    write_tiff(shifted, truth + 2, SPACING)  # another scheme: 2 background, 3 pore, 4 crack
    args = ["evaluate", str(folders["pred"]), "--truth", str(shifted), "-q"]
    assert main(args) == 2
    assert "--label-map" in capsys.readouterr().err
    out = folders["out"]
    assert main([*args, "--label-map", "2=0,3=1,4=2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["instance"]["pore"]["f1"] == 1.0 and report["voxel"]["crack"]["dice"] == 1.0
    assert report["inputs"]["label_map"] == {"2": 0, "3": 1, "4": 2}
    assert main([*args, "--label-map", "1=9"]) == 2


@pytest.mark.parametrize("case", ["shape", "no_labels", "no_folder", "no_truth", "bad_sites", "other_sites",
                                  "threshold"])
def test_user_errors_exit_2(folders, case, capsys):
    pred, truth = folders["pred"], folders["truth"]
    extra: list[str] = []
    if case == "shape":
        truth = folders["small"]
    elif case == "no_labels":
        (pred / "labels.tif").unlink()
    elif case == "no_folder":
        pred = pred.parent / "absent"
    elif case == "no_truth":
        truth = truth.parent / "absent.tif"
    elif case == "bad_sites":
        extra = ["--sites", str(pred)]
    elif case == "other_sites":  # sites that 'roidetect suggest' planned from another prediction's detections
        write_json(folders["sites"] / "run.json", {"command": "suggest", "inputs": {"detections.csv": {
            "path": "/elsewhere/pred/detections.csv", "sha256": "0" * 64}}})
        extra = ["--sites", str(folders["sites"] / "sites.csv")]
    else:
        extra = ["--match-threshold", "0"]
    status = main(["evaluate", str(pred), "--truth", str(truth), "-q", *extra])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("roidetect evaluate: error:") and err.count("\n") == 1
