"""``roidetect dataset``: a dataset.json from folders of scans and labels."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import nibabel
import numpy as np
import pytest
import tifffile
from test_learn import SPACING, tiny_volume

from roidetect.cli import main
from roidetect.learn.dataset import read_dataset
from roidetect.volume import write_tiff


def _write(path: Path, array: np.ndarray, spacing: tuple[float, ...] | None = SPACING) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".nii.gz"):
        nibabel.save(nibabel.Nifti1Image(np.ascontiguousarray(array.T), np.eye(4)), path)
    elif spacing is None:
        tifffile.imwrite(path, array)  # a plain TIFF: no voxel size
    else:
        write_tiff(path, array, spacing)
    return path


def test_scans_and_labels_named_alike_make_a_dataset_training_reads(tmp_path: Path, capsys) -> None:
    for i, name in enumerate(("cell_a", "cell_b")):
        image, labels, instances = tiny_volume(200 + i)
        _write(tmp_path / "scans" / f"{name}.tif", image)
        _write(tmp_path / "annotations" / f"{name}_labels.tif", labels)
        _write(tmp_path / "ids" / f"{name}-instances.tif", instances)
    _write(tmp_path / "scans" / "cell_c.tif", tiny_volume(9)[0])  # not annotated yet
    (tmp_path / "scans" / "notes.txt").write_text("not a volume")
    out = tmp_path / "set"
    assert main(["dataset", str(tmp_path / "scans"), str(tmp_path / "annotations"), "--instances",
                 str(tmp_path / "ids"), "--out", str(out), "--quiet"]) == 0
    assert "2 volume(s) with instances" in capsys.readouterr().out
    raw = json.loads((out / "dataset.json").read_text())
    assert raw["volumes"][0] == {"id": "cell_a", "image": "../scans/cell_a.tif",
                                 "label": "../annotations/cell_a_labels.tif", "instances": "../ids/cell_a-instances.tif"}
    spec = read_dataset(out)
    assert [v.id for v in spec.volumes] == ["cell_a", "cell_b"]
    assert Path(spec.volumes[1].label).resolve() == (tmp_path / "annotations" / "cell_b_labels.tif").resolve()
    # the dataset moves with its folders: its paths are relative
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    tmp_path.rename(moved)
    assert Path(read_dataset(moved / "set").volumes[0].image).is_file()


def test_an_nnunet_layout_and_a_shared_folder_pair_up(tmp_path: Path) -> None:
    image, labels, _ = tiny_volume(5)
    _write(tmp_path / "imagesTr" / "case_001_0000.nii.gz", image)
    _write(tmp_path / "labelsTr" / "case_001.nii.gz", labels)
    assert main(["dataset", str(tmp_path / "imagesTr"), str(tmp_path / "labelsTr"), "--voxel-size", "0.05",
                 "--out", str(tmp_path / "nnunet.json"), "--quiet"]) == 0
    entry = json.loads((tmp_path / "nnunet.json").read_text())["volumes"][0]
    assert entry["id"] == "case_001" and entry["image"] == "imagesTr/case_001_0000.nii.gz"
    assert entry["voxel_size_um"] == [0.05, 0.05, 0.05]
    # scans and labels side by side; a label named vol_0000 keeps its number
    _write(tmp_path / "both" / "vol_0000.tif", image)
    _write(tmp_path / "both" / "vol_0000_seg.tif", labels)
    _write(tmp_path / "both" / "vol_0001.tif", image)
    _write(tmp_path / "both" / "vol_0001_seg.tif", labels)
    assert main(["dataset", str(tmp_path / "both"), str(tmp_path / "both"), "--out", str(tmp_path / "both"),
                 "--quiet"]) == 0
    volumes = json.loads((tmp_path / "both" / "dataset.json").read_text())["volumes"]
    assert [(v["id"], v["image"], v["label"]) for v in volumes] == [
        ("vol_0000", "vol_0000.tif", "vol_0000_seg.tif"), ("vol_0001", "vol_0001.tif", "vol_0001_seg.tif")]


def test_an_hdf5_scan_with_one_3d_dataset_is_listed_with_it(tmp_path: Path) -> None:
    image, labels, _ = tiny_volume(6)
    (tmp_path / "scans").mkdir()
    with h5py.File(tmp_path / "scans" / "tomo.h5", "w") as handle:
        handle.create_dataset("exchange/data", data=image).attrs["element_size_um"] = SPACING
        handle.create_dataset("exchange/theta", data=np.zeros(10))
    _write(tmp_path / "labels" / "tomo_mask.tif", labels)
    assert main(["dataset", str(tmp_path / "scans"), str(tmp_path / "labels"), "--out", str(tmp_path), "--quiet"]) == 0
    assert json.loads((tmp_path / "dataset.json").read_text())["volumes"][0]["image"] == "scans/tomo.h5:/exchange/data"
    assert read_dataset(tmp_path).volumes[0].id == "tomo"


def test_every_problem_is_listed_and_nothing_is_written(tmp_path: Path, capsys) -> None:
    image, labels, _ = tiny_volume(7)
    _write(tmp_path / "scans" / "a.tif", image)
    _write(tmp_path / "labels" / "a.tif", labels[:, :, :-1])  # another shape
    _write(tmp_path / "scans" / "b.tif", image)
    _write(tmp_path / "labels" / "b.tif", (labels + 4).astype(np.uint8))  # values of another tool's scheme
    _write(tmp_path / "scans" / "c.tif", image, spacing=None)  # no voxel size
    _write(tmp_path / "labels" / "c.tif", labels)
    out = tmp_path / "dataset.json"
    assert main(["dataset", str(tmp_path / "scans"), str(tmp_path / "labels"), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "3 problem(s), nothing written" in error
    assert "a.tif: shape" in error and "b.tif: label values (4, 5, 6" in error and "carries no voxel size" in error
    assert not out.exists()


@pytest.mark.parametrize("case, message", [
    ("orphan", "labels without an image of the same name"),
    ("twins", "two volumes named 'a'"),
    ("not_json", "give a .json file to write, or a folder"),
])
def test_folders_that_do_not_pair_are_refused(tmp_path: Path, capsys, case: str, message: str) -> None:
    image, labels, _ = tiny_volume(8)
    _write(tmp_path / "scans" / "a.tif", image)
    _write(tmp_path / "labels" / "a.tif", labels)
    if case == "orphan":
        _write(tmp_path / "labels" / "b.tif", labels)
    if case == "twins":
        _write(tmp_path / "scans" / "a_raw.tif", image)
    out = tmp_path / "labels" / "a.tif" if case == "not_json" else tmp_path / "d.json"
    assert main(["dataset", str(tmp_path / "scans"), str(tmp_path / "labels"), "--out", str(out),
                 "--overwrite"]) == 2
    assert message in capsys.readouterr().err


def test_labels_of_another_scheme_are_mapped_and_checked(tmp_path: Path, capsys) -> None:
    """ilastik-style labels (0 unlabelled, 1 background, 2 pore, 3 crack) with --label-map."""
    image, labels, _ = tiny_volume(11)
    labels[:2] = 255  # not annotated
    stored = np.where(labels == 255, 0, labels + 1).astype(np.uint8)
    _write(tmp_path / "scans" / "cell.tif", image)
    _write(tmp_path / "labels" / "cell.tif", stored)
    args = ["dataset", str(tmp_path / "scans"), str(tmp_path / "labels"), "--out", str(tmp_path / "set"), "--quiet"]
    assert main(args) == 2  # 4 (a delamination written as 3 + 1) is no label of the scheme without the map
    assert "label_map" in capsys.readouterr().err and not (tmp_path / "set").exists()
    assert main([*args, "--label-map", "0=255,1=0,2=1,3=2,4=3"]) == 0
    spec = read_dataset(tmp_path / "set")
    assert spec.label_map == {0: 255, 1: 0, 2: 1, 3: 2, 4: 3}
    from roidetect.learn.dataset import load_volume

    loaded = load_volume(spec.volumes[0], spec.label_map, (0.0, 1.0))
    np.testing.assert_array_equal(loaded.label[labels != 255], labels[labels != 255])
    for bad in ("1=7", "0=255,0=1", "pore"):
        assert main([*args, "--overwrite", "--label-map", bad]) == 2
        assert "--label-map" in capsys.readouterr().err


def test_labels_that_are_mostly_defects_get_a_warning(tmp_path: Path, caplog) -> None:
    """ilastik labels of three classes (1 background, 2 pore, 3 crack) pass the value check
    unmapped, but make the background a defect: the command warns."""
    image, labels, _ = tiny_volume(12)
    labels[labels == 3] = 2
    _write(tmp_path / "scans" / "cell.tif", image)
    _write(tmp_path / "labels" / "cell.tif", (labels + 1).astype(np.uint8))
    args = ["dataset", str(tmp_path / "scans"), str(tmp_path / "labels"), "--out", str(tmp_path / "set")]
    with caplog.at_level("WARNING"):
        assert main(args) == 0
    assert "cell 100 %" in caplog.text and "--label-map" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main([*args, "--overwrite", "--label-map", "1=0,2=1,3=2"]) == 0
    assert "defects fill" not in caplog.text


def test_val_and_test_volumes_are_marked_by_name_or_pattern(tmp_path: Path, capsys) -> None:
    from roidetect.learn.dataset import split_entries

    for i, name in enumerate(("cell_a", "cell_b", "cell_c", "old_x")):
        image, labels, _ = tiny_volume(20 + i)
        _write(tmp_path / "scans" / f"{name}.tif", image)
        _write(tmp_path / "labels" / f"{name}.tif", labels)
    args = ["dataset", str(tmp_path / "scans"), str(tmp_path / "labels"), "--out", str(tmp_path / "set"), "-q"]
    assert main([*args, "--val", "cell_b", "--test", "old_*,cell_c", "--invert"]) == 0
    assert "4 volume(s), 1 val, 2 test" in capsys.readouterr().out
    spec = read_dataset(tmp_path / "set")
    assert {v.id: v.split for v in spec.volumes} == {"cell_a": None, "cell_b": "val", "cell_c": "test",
                                                      "old_x": "test"}
    assert all(v.invert for v in spec.volumes)
    train, val = split_entries(spec.volumes, 0.2, seed=0)
    assert [v.id for v in train] == ["cell_a"] and [v.id for v in val] == ["cell_b"]
    for bad, message in ((["--test", "cell_z"], "no volume has that name"),
                         (["--val", "cell_*", "--test", "cell_a"], "not both"),
                         (["--val", "cell_*", "--test", "old_x"], "at least one to train on")):
        assert main([*args, "--overwrite", *bad]) == 2
        assert message in capsys.readouterr().err
