"""The `roidetect` command: help, `info`, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from roidetect.cli import COMMANDS, main
from roidetect.volume import write_tiff


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_info_prints_geometry(tmp_path, small_scan, capsys):
    write_tiff(tmp_path / "scan.tif", small_scan, (0.1, 0.05, 0.05))
    assert main(["info", str(tmp_path / "scan.tif")]) == 0
    out = capsys.readouterr().out
    assert "32 x 40 x 48" in out and "uint16" in out and "0.1 x 0.05 x 0.05 um" in out
    assert "3.2 x 2 x 2.4 um" in out and "imagej-tiff" in out
    assert main(["info", str(tmp_path / "scan.tif"), "--json", "--voxel-size", "0.2"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["voxel_size_um_zyx"] == [0.2, 0.2, 0.2]
    lo, hi = facts["value_range"]
    assert lo <= small_scan.max() and hi >= lo
    assert facts["distinct_values"] is None and "distinct values" not in out


def test_info_flags_a_label_map(tmp_path, small_scan, capsys):
    labels = (small_scan > np.median(small_scan)).astype(np.uint8) * 3
    write_tiff(tmp_path / "labels.tif", labels, (0.1, 0.1, 0.1))
    assert main(["info", str(tmp_path / "labels.tif")]) == 0
    assert "distinct values 2: 0, 3 (a label map" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "labels.tif"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["distinct_values"] == [0, 3]


def test_info_describes_a_file_without_voxel_size(tmp_path, small_scan, capsys):
    """A label export without metadata is inspected, not refused: the voxel size reads unknown."""
    tifffile.imwrite(tmp_path / "labels.tif", (small_scan > np.median(small_scan)).astype(np.uint8))
    assert main(["info", str(tmp_path / "labels.tif")]) == 0
    out = capsys.readouterr().out
    assert "voxel size      unknown" in out and "--voxel-size" in out and "32 x 40 x 48" in out
    assert "physical size" not in out and "distinct values 2" in out
    assert main(["info", str(tmp_path / "labels.tif"), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["voxel_size_um_zyx"] is None and facts["physical_size_um_zyx"] is None
    assert "no voxel size" in facts["voxel_size_missing"]


@pytest.mark.parametrize("case", ["missing", "nan", "2d", "bad-voxel"])
def test_info_bad_input_exit_2_one_line(tmp_path, small_scan, capsys, case):
    path = tmp_path / "scan.tif"
    args = ["info", str(path)]
    if case == "nan":
        data = small_scan.astype(np.float32)
        data[:, 3, 3] = np.inf
        write_tiff(path, data, 0.1)
    elif case == "2d":
        tifffile.imwrite(path, small_scan[0])
    elif case == "bad-voxel":
        write_tiff(path, small_scan, 0.1)
        args += ["--voxel-size", "-1"]
    before = sorted(tmp_path.iterdir())
    assert main(args) == 2
    assert sorted(tmp_path.iterdir()) == before
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("roidetect info: error:")
    assert "scan.tif" in err


def test_console_entry_point_exit_status(tmp_path):
    result = subprocess.run([sys.executable, "-m", "roidetect", "info", str(tmp_path / "none.tif")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no such file" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("argv, hint", [
    (["predict", "scan.tif", "--out", "p", "--set", "inference.overlap=0.5"], True),
    (["train", "--set", "trainer.max_epochs=1"], True),
    (["info", "scan.tif", "--set", "a=1"], False),
    (["info", "scan.tif", "--bogus"], False),
])
def test_unrecognized_arguments_exit_2_and_name_the_command(capsys, argv, hint):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"roidetect {argv[0]}: error: unrecognized arguments:")
    assert f"see 'roidetect {argv[0]} --help'" in err
    assert ("takes settings as KEY=VALUE, without --set" in err) == hint
