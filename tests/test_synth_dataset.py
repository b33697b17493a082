"""Dataset folders from `write_dataset` and `roidetect synth`: layout, readability, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from roidetect.cli import main
from roidetect.errors import UserError
from roidetect.labels import CLASS_NAMES, IGNORE
from roidetect.synth import make_phantom, write_dataset
from roidetect.synth.dataset import volume_seeds
from roidetect.synth.geometry import packaged_geometry, parse_phases
from roidetect.volume import open_volume

SHIPPED = packaged_geometry("taufactor_nmc/electrode.tiff")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    write_dataset(out, 2, shape=(40, 40, 40), seed=3, preview=True, workers=1, quiet=True)
    return out


def test_dataset_layout_and_contents(dataset):
    spec = json.loads((dataset / "dataset.json").read_text())
    assert spec["format"] == "roidetect-dataset/1"
    assert spec["classes"] == {str(k): v for k, v in CLASS_NAMES.items()}
    assert spec["ignore_label"] == IGNORE
    assert spec["generator"]["name"] == "roidetect.synth" and spec["generator"]["seed"] == 3
    assert [v["id"] for v in spec["volumes"]] == ["vol_0000", "vol_0001"]
    assert (dataset / "run.json").is_file()
    for entry, seed in zip(spec["volumes"], volume_seeds(3, 2)):
        image = open_volume(dataset / entry["image"])
        labels = open_volume(dataset / entry["label"]).numpy()
        instances = open_volume(dataset / entry["instances"]).numpy()
        manifest = json.loads((dataset / entry["manifest"]).read_text())
        assert image.shape == labels.shape == instances.shape == (40, 40, 40)
        assert image.spacing_um == pytest.approx(entry["voxel_size_um"])
        assert entry["voxel_size_um"] == pytest.approx([0.05] * 3)
        assert labels.dtype == np.uint8 and instances.dtype == np.uint16
        assert manifest["id"] == entry["id"] and manifest["seed"] == entry["seed"] == seed
        assert sorted(np.unique(instances[instances > 0]).tolist()) == [d["id"] for d in manifest["defects"]]
        assert (dataset / entry["preview"]).stat().st_size > 0
        # each volume can be remade alone from its recorded seed
        np.testing.assert_array_equal(make_phantom(shape=(40, 40, 40), seed=seed).labels, labels)


def test_parallel_workers_write_the_same_volumes(tmp_path, dataset):
    write_dataset(tmp_path / "ds", 2, shape=(40, 40, 40), seed=3, workers=2, quiet=True)
    for name in ("vol_0000", "vol_0001"):
        for folder in ("images", "labels", "instances"):
            np.testing.assert_array_equal(open_volume(tmp_path / "ds" / folder / f"{name}.tif").numpy(),
                                          open_volume(dataset / folder / f"{name}.tif").numpy())


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "ds"
    write_dataset(out, 1, shape=(32, 32, 32), workers=1, quiet=True)
    with pytest.raises(UserError, match="--overwrite"):
        write_dataset(out, 1, shape=(32, 32, 32), workers=1, quiet=True)
    write_dataset(out, 1, shape=(32, 32, 32), seed=1, workers=1, quiet=True, overwrite=True)
    assert json.loads((out / "dataset.json").read_text())["generator"]["seed"] == 1


def test_cli_synth_with_overrides(tmp_path):
    out = tmp_path / "cli"
    code = main(["synth", "--out", str(out), "--n", "1", "--shape", "32", "32", "32", "--voxel-size", "0.1",
                 "--seed", "4", "--preset", "anode", "--set", "bit_depth=8", "--set", "collector=true", "--quiet"])
    assert code == 0
    spec = json.loads((out / "dataset.json").read_text())
    image = open_volume(out / spec["volumes"][0]["image"])
    assert image.dtype == np.uint8 and image.spacing_um == pytest.approx((0.1, 0.1, 0.1))
    manifest = json.loads((out / spec["volumes"][0]["manifest"]).read_text())
    assert manifest["preset"] == "anode" and manifest["microstructure"]["collector"] is True


def test_cli_synth_preset_weights(tmp_path):
    out = tmp_path / "weighted"
    code = main(["synth", "--out", str(out), "--n", "2", "--shape", "32", "32", "32", "--preset", "any",
                 "--preset-weights", "anode=1, cathode=0", "--quiet", "--workers", "1"])
    assert code == 0
    spec = json.loads((out / "dataset.json").read_text())
    assert [v["preset"] for v in spec["volumes"]] == ["anode", "anode"]
    assert spec["generator"]["parameters"]["preset_weights"] == {"anode": 1.0, "cathode": 0.0}


def test_cli_geometry_on_the_shipped_nmc_labelling(tmp_path):
    out = tmp_path / "geo"
    code = main(["synth", "--out", str(out), "--n", "1", "--shape", "48", "48", "48", "--geometry", str(SHIPPED),
                 "--phases", "particle=85,binder=170", "--quiet", "--workers", "1"])
    assert code == 0
    spec = json.loads((out / "dataset.json").read_text())
    manifest = json.loads((out / spec["volumes"][0]["manifest"]).read_text())
    assert manifest["geometry"]["phases"] == {"particle": 85, "binder": 170}
    assert manifest["geometry"]["source"].endswith("electrode.tiff")
    assert sum(manifest["counts"].values()) > 0
    run = json.loads((out / "run.json").read_text())
    assert "sha256" in run["inputs"]["geometry"]


@pytest.mark.parametrize("extra, message", [
    (["--preset", "cathodes"], "unknown preset"),
    (["--set", "photonz=3"], "did you mean photons"),
    (["--preset", "any", "--preset-weights", "anode:2"], "NAME=WEIGHT"),
    (["--preset", "any", "--preset-weights", "anodes=2"], "choose from"),
    (["--preset", "any", "--preset-weights", "anode=2,anode=1"], "given twice"),
    (["--preset", "any", "--preset-weights", "anode=0"], "not all 0"),
    (["--preset-weights", "anode=2"], "need preset 'any'"),
    (["--set", "photons"], "KEY=VALUE"),
    (["--shape", "8", "32", "32"], "shape"),
    (["--n", "0"], "at least 1"),
    (["--geometry", str(SHIPPED), "--phases", "particle85"], "NAME=INTEGER"),
    (["--geometry", str(SHIPPED), "--phases", "particle=85,granite=170"], "unknown phase"),
    (["--geometry", str(SHIPPED), "--phases", "particle=86"], "does not occur"),
    (["--geometry", str(SHIPPED)], "phase values"),
    (["--phases", "particle=85"], "needs --geometry"),
    (["--geometry", "missing.tif", "--phases", "particle=1"], "no such file"),
])
def test_cli_bad_input_exits_2(tmp_path, capsys, extra, message):
    out = tmp_path / "bad"
    assert main(["synth", "--out", str(out), "--quiet", "--workers", "1", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_parse_phases():
    assert parse_phases("particle=85, binder=170,pore=0") == {"particle": 85, "binder": 170, "pore": 0}
    with pytest.raises(UserError, match="twice"):
        parse_phases("particle=1,particle=2")
    with pytest.raises(UserError, match="share a value"):
        parse_phases("particle=1,binder=1")
    with pytest.raises(UserError, match="particle phase"):
        parse_phases("binder=1")


def test_phantoms_that_do_not_fit_the_free_memory_are_refused_before_any_work(tmp_path, monkeypatch):
    import roidetect.synth.dataset as synth_dataset

    one = synth_dataset.PEAK_BYTES_PER_VOXEL * 32 ** 3  # one 32^3 phantom
    monkeypatch.setattr(synth_dataset, "available_memory_bytes", lambda: int(2.5 * one))
    with pytest.raises(UserError, match="smaller --shape"):
        write_dataset(tmp_path / "big", 1, shape=(48, 48, 48), quiet=True)
    with pytest.raises(UserError, match="--workers 2 or fewer"):
        write_dataset(tmp_path / "many", 4, shape=(32, 32, 32), workers=3, quiet=True)
    assert not (tmp_path / "big").exists() and not (tmp_path / "many").exists()
    out = write_dataset(tmp_path / "fits", 3, shape=(32, 32, 32), quiet=True)  # default workers: as many as fit
    assert json.loads((out / "run.json").read_text())["parameters"]["workers"] <= 2
    assert len(list((out / "images").iterdir())) == 3


def test_running_out_of_memory_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    import roidetect.synth as synth

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 29.8 GiB for an array with shape (2000, 2000, 2000)")

    monkeypatch.setattr(synth, "write_dataset", exhausted)
    assert main(["synth", "--out", str(tmp_path / "x"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of memory (Unable to allocate 29.8 GiB" in err
