"""``roidetect predict``: the prediction folder, resampling, TTA, classical, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
import zarr

from roidetect.cli import main
from roidetect.detect import DETECTION_COLUMNS
from roidetect.errors import UserError
from roidetect.inference import predict
from roidetect.learn.bundle import save_package
from roidetect.learn.networks import build_network
from roidetect.volume import open_volume, write_tiff

NETWORK = {"class": "UNet", "args": {"in_channels": 1, "out_channels": 4, "channels": [4, 8], "strides": [2],
                                     "num_res_units": 1}}
FAST = {"inference": {"window": 32, "block_size": 32, "precision": "float32"}}
PORES = [(16, 14, 14, 4), (16, 30, 34, 3), (24, 31, 31, 3)]  # z, y, x, radius; the last crosses (32, 32, 32)


def card(voxel_size_um: float = 0.1) -> dict:
    return {"name": "tiny", "classes": {"0": "background", "1": "pore", "2": "crack", "3": "delamination"},
            "network": NETWORK, "voxel_size_um": [voxel_size_um] * 3,
            "normalisation": {"method": "volume_percentiles", "percentiles": [0.5, 99.5]}, "patch_size": [32] * 3}


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_package(tmp_path_factory.mktemp("model") / "tiny", build_network("UNet", **NETWORK["args"]), card())


def phantom(shape: tuple[int, int, int] = (40, 48, 48), pores: list = PORES) -> np.ndarray:
    """Bright particles in grey binder, each with an enclosed dark pore; uint16."""
    rng = np.random.default_rng(11)
    z, y, x = np.indices(shape)
    image = np.full(shape, 0.35)
    for cz, cy, cx, r in pores:
        image[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= (r + 7) ** 2] = 1.0
    for cz, cy, cx, r in pores:
        image[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r * r] = 0.05
    image += rng.normal(0, 0.03, shape)
    return (image * 20000 + 1000).astype(np.uint16)


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiff(tmp_path_factory.mktemp("scan") / "scan.tif", phantom(), (0.1, 0.1, 0.1))


def read_run(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def test_prediction_folder_has_the_scans_geometry(scan: Path, package: Path, tmp_path: Path) -> None:
    out = predict(scan, tmp_path / "pred", model=package, quiet=True, settings=FAST)
    shape, spacing = (40, 48, 48), (0.1, 0.1, 0.1)
    labels = open_volume(out / "labels.tif")
    assert labels.shape == shape and labels.dtype == np.uint8
    np.testing.assert_allclose(labels.spacing_um, spacing, rtol=1e-6)
    with tifffile.TiffFile(out / "labels.tif") as tif:
        assert tif.is_imagej and tif.series[0].shape == shape
    probabilities = zarr.open_array(str(out / "probabilities.ome.zarr" / "0"), mode="r")
    assert probabilities.shape == (4, *shape) and probabilities.dtype == np.uint8
    assert np.abs(probabilities[...].astype(int).sum(axis=0) - 255).max() <= 3
    assert open_volume(out / "instances.ome.zarr").shape == shape
    assert tifffile.imread(out / "surface.tif").shape == shape[1:]
    table = pd.read_csv(out / "detections.csv")
    assert tuple(table.columns) == DETECTION_COLUMNS
    assert len(json.loads((out / "detections.json").read_text())["detections"]) == len(table)
    run = read_run(out)
    assert run["scan"]["shape_zyx"] == list(shape) and run["scan"]["sha256"]
    assert run["model"]["name"] == "tiny" and not run["model"]["resampled"]
    assert {"inference", "surface", "detect", "total"} <= set(run["timings_s"])
    assert not (out / "uncertainty.ome.zarr").exists()


def test_coarser_scan_is_resampled_and_outputs_keep_its_shape(package: Path, tmp_path: Path) -> None:
    coarse = write_tiff(tmp_path / "coarse.tif", phantom((20, 24, 28), [(10, 12, 14, 3)]), (0.2, 0.2, 0.2))
    out = predict(coarse, tmp_path / "pred", model=package, quiet=True, settings=FAST)
    labels = open_volume(out / "labels.tif")
    assert labels.shape == (20, 24, 28)
    np.testing.assert_allclose(labels.spacing_um, (0.2, 0.2, 0.2), rtol=1e-6)
    assert zarr.open_array(str(out / "probabilities.ome.zarr" / "0"), mode="r").shape == (4, 20, 24, 28)
    model = read_run(out)["model"]
    assert model["resampled"] and model["voxel_size_ratio"] == [2.0, 2.0, 2.0]
    assert model["window_scan_voxels"] == [16, 16, 16] and model["window_model_voxels"] == [32, 32, 32]


def test_default_windows_are_those_the_card_was_calibrated_with(scan: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    calibrated = card() | {"sliding_window": {"overlap": 0.5, "sw_batch_size": 1, "mode": "gaussian"}}
    package = save_package(tmp_path / "tiny-o5", build_network("UNet", **NETWORK["args"]), calibrated)
    settings = {"inference": {"block_size": 32, "precision": "float32"}}
    model = read_run(predict(scan, tmp_path / "patch", model=package, quiet=True, settings=settings))["model"]
    assert model["window_model_voxels"] == [32, 32, 32] and model["overlap"] == [0.5, 0.5, 0.5]
    wide = {"inference": settings["inference"] | {"window": "wide"}}
    model = read_run(predict(scan, tmp_path / "wide", model=package, quiet=True, settings=wide))["model"]
    # wide windows are 64^3, cut to the scan's shape
    assert model["window_model_voxels"] == [40, 48, 48] and model["overlap"] == [0.125, 0.125, 0.125]


def test_tta_writes_uncertainty(scan: Path, package: Path, tmp_path: Path) -> None:
    out = predict(scan, tmp_path / "pred", model=package, tta=True, quiet=True, settings=FAST)
    spread = zarr.open_array(str(out / "uncertainty.ome.zarr" / "0"), mode="r")[...]
    assert spread.shape == (4, 40, 48, 48) and spread.max() > 0
    assert read_run(out)["model"]["tta_variants"] == 8
    table = pd.read_csv(out / "detections.csv")
    assert table["uncertainty"].notna().all()


def test_classical_finds_the_phantoms_pores_once_each(scan: Path, tmp_path: Path) -> None:
    small_blocks = {"classical": {"block_size": 32}, "detection": {"block_size": 32}}
    out = predict(scan, tmp_path / "pred", model="classical", quiet=True, settings=small_blocks)
    table = pd.read_csv(out / "detections.csv")
    pores = table[table["class"] == "pore"]
    for cz, cy, cx, _ in PORES:
        distance = np.sqrt((pores["z"] - cz) ** 2 + (pores["y"] - cy) ** 2 + (pores["x"] - cx) ** 2)
        assert (distance < 2.0).sum() == 1, f"pore at {(cz, cy, cx)}"
    whole = predict(scan, tmp_path / "whole", model="classical", quiet=True,
                    settings={"classical": {"block_size": 64}, "detection": {"block_size": 64}})
    pd.testing.assert_frame_equal(pd.read_csv(whole / "detections.csv"), table)
    assert read_run(out)["model"]["kind"] == "classical"


def test_a_zero_border_is_normalised_as_void_not_taken_for_the_voids(scan: Path, package: Path,
                                                                   tmp_path: Path) -> None:
    """Padding (or the corners outside a reconstruction circle) filled with 0 is found and set
    aside; the classical baseline then finds the same pores, and run.json says what was done."""
    image = open_volume(scan).numpy()
    padded = np.pad(image, ((0, 0), (16, 16), (16, 16)))  # 64 % of the voxels are 0
    padded_scan = write_tiff(tmp_path / "padded.tif", padded, (0.1, 0.1, 0.1))
    small_blocks = {"classical": {"block_size": 32}, "detection": {"block_size": 32}}
    plain = predict(scan, tmp_path / "plain", model="classical", quiet=True, settings=small_blocks)
    out = predict(padded_scan, tmp_path / "padded", model="classical", quiet=True, settings=small_blocks)
    assert read_run(out)["fill_value"] == 0.0 and read_run(plain)["fill_value"] is None
    assert read_run(out)["intensity_range"] == pytest.approx(read_run(plain)["intensity_range"], rel=0.02)
    pores = pd.read_csv(out / "detections.csv").query("`class` == 'pore'")
    for cz, cy, cx, _ in PORES:
        distance = np.sqrt((pores["z"] - cz) ** 2 + (pores["y"] - cy - 16) ** 2 + (pores["x"] - cx - 16) ** 2)
        assert (distance < 2.0).sum() == 1, f"pore at {(cz, cy, cx)}"
    network = predict(padded_scan, tmp_path / "network", model=str(package), quiet=True, settings=FAST)
    assert read_run(network)["fill_value"] == 0.0 and read_run(network)["fill_outside_view"] is True
    # the padding lies outside the field of view: background there
    background = zarr.open_array(str(network / "probabilities.ome.zarr" / "0"), mode="r")[0]
    assert (background[:, :16] == 255).all() and (background[:, :, -16:] == 255).all()
    assert (open_volume(network / "labels.tif").numpy()[:, :16] == 0).all()
    off = predict(padded_scan, tmp_path / "off", model=str(package), quiet=True,
                  settings={**FAST, "inference": {**FAST["inference"], "fill_value": None}})
    assert read_run(off)["fill_value"] is None and read_run(off)["intensity_range"][0] == 0.0


@pytest.mark.parametrize("given", ["labels", "constant"])
def test_a_label_map_or_constant_given_as_the_scan_is_predicted_with_a_warning(given: str, scan: Path, tmp_path: Path,
                                                                               caplog: pytest.LogCaptureFixture) -> None:
    image = phantom()
    volume = (image > 15000).astype(np.uint8) * 2 if given == "labels" else np.full_like(image, 900)
    path = write_tiff(tmp_path / "labels.tif", volume, (0.1, 0.1, 0.1))
    small_blocks = {"classical": {"block_size": 32}, "detection": {"block_size": 32}}
    with caplog.at_level("WARNING", logger="roidetect.inference.predict"):
        out = predict(path, tmp_path / "pred", model="classical", quiet=True, settings=small_blocks)
        assert ("looks like a label map" if given == "labels" else "no contrast") in caplog.text
        assert str(path) in caplog.text
        caplog.clear()
        plain = predict(scan, tmp_path / "scan", model="classical", quiet=True, settings=small_blocks)
    assert caplog.text == ""
    assert [m for m in read_run(out)["warnings"] if str(path) in m]  # run.json keeps what the run warned about
    assert read_run(plain)["warnings"] == []


def test_blank_outside_view_sets_background_only_on_fill_voxels() -> None:
    from roidetect.inference.sources import BlockResult, blank_outside_view
    from roidetect.volume import Volume

    scan = np.full((4, 6, 6), 500, np.uint16)
    scan[:, :2] = 0  # outside the field of view
    core = (slice(0, 4), slice(0, 6), slice(0, 6))
    result = BlockResult(core, np.full((4, 4, 6, 6), 0.25, np.float32), np.full((4, 4, 6, 6), 0.1, np.float32))
    blanked = blank_outside_view(result, Volume.from_array(scan, 0.05), 0.0)
    assert (blanked.probabilities[0, :, :2] == 1).all() and (blanked.probabilities[1:, :, :2] == 0).all()
    assert (blanked.uncertainty[:, :, :2] == 0).all()
    assert (blanked.probabilities[:, :, 2:] == 0.25).all() and (blanked.uncertainty[:, :, 2:] == 0.1).all()


def test_detections_beside_the_fill_value_touch_the_border_of_the_data() -> None:
    from roidetect.inference.predict import _beside_fill
    from roidetect.volume import Volume

    scan = np.full((20, 40, 40), 500, np.uint16)
    scan[:, :, :6] = 0  # outside the field of view
    instances = np.zeros(scan.shape, np.uint32)
    instances[5:8, 10:14, 6:9] = 1  # starts right beside the fill
    instances[12:15, 10:14, 7:9] = 2  # one voxel away from it
    instances[5:8, 30:34, 20:25] = 3  # far inside
    found = _beside_fill(Volume.from_array(scan, 0.05), instances, 0.0, (8, 16, 16))
    assert found.tolist() == [1]


def test_cli_runs_and_refuses_to_overwrite(scan: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "pred"
    assert main(["predict", str(scan), "--out", str(out), "--model", "classical", "-q", "detection.min_voxels=4"]) == 0
    assert read_run(out)["parameters"]["detection"]["min_voxels"] == 4
    before = (out / "run.json").read_bytes()
    assert main(["predict", str(scan), "--out", str(out), "--model", "classical", "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "run.json").read_bytes() == before
    assert main(["predict", str(scan), "--out", str(out), "--model", "classical", "-q", "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred"]


def broken_packages(root: Path, package: Path) -> dict[str, Path]:
    """Model packages with no weights, and with weights of another network."""
    missing = root / "no_weights"
    missing.mkdir()
    (missing / "card.json").write_text((package / "card.json").read_text())
    mismatched = root / "mismatched"
    other = build_network("UNet", **{**NETWORK["args"], "channels": [8, 16]})
    save_package(mismatched, other, card())
    return {"no_weights": missing, "mismatched": mismatched}


def test_a_scan_with_inverted_contrast_predicts_like_the_usual_one_with_invert(scan: Path, package: Path,
                                                                             tmp_path: Path) -> None:
    """Bright voids and dark solid (negative phase contrast): --invert flips the grey values, so
    the prediction equals the usual scan's; a 0 fill outside the view is still found and set aside."""
    image = np.pad(open_volume(scan).numpy(), ((0, 0), (16, 16), (16, 16)))
    negative = np.where(image == 0, 0, 65535 - image).astype(np.uint16)  # the fill stays 0
    usual = write_tiff(tmp_path / "usual.tif", image, (0.1, 0.1, 0.1))
    flipped = write_tiff(tmp_path / "negative.tif", negative, (0.1, 0.1, 0.1))
    for model, settings in (("classical", {"classical": {"block_size": 32}, "detection": {"block_size": 32}}),
                            (str(package), FAST)):
        name = Path(model).name
        expected = predict(usual, tmp_path / f"usual-{name}", model=model, quiet=True, settings=settings)
        assert main(["predict", str(flipped), "--model", model, "--invert", "--out", str(tmp_path / name), "-q",
                     *(f"{section}.block_size={value['block_size']}" for section, value in settings.items()
                       if "block_size" in value),
                     *(f"inference.{key}={value}" for key, value in settings.get("inference", {}).items())]) == 0
        got = tmp_path / name
        np.testing.assert_array_equal(open_volume(got / "labels.tif").numpy(),
                                      open_volume(expected / "labels.tif").numpy())
        pd.testing.assert_frame_equal(pd.read_csv(got / "detections.csv"), pd.read_csv(expected / "detections.csv"))
        run = read_run(got)
        assert run["parameters"]["inference"]["invert"] is True and run["fill_outside_view"] is True
    assert len(pd.read_csv(tmp_path / "usual-classical" / "detections.csv").query("`class` == 'pore'")) >= len(PORES)
    plain = predict(flipped, tmp_path / "not-inverted", model="classical", quiet=True,
                    settings={"classical": {"block_size": 32}, "detection": {"block_size": 32}})
    assert not np.array_equal(open_volume(plain / "labels.tif").numpy(),
                              open_volume(tmp_path / "usual-classical" / "labels.tif").numpy())


def test_a_region_is_predicted_in_scan_coordinates_and_scored_and_drawn_as_that_region(scan: Path,
                                                                                      tmp_path: Path) -> None:
    from roidetect.evaluate import evaluate_prediction
    from roidetect.report.inputs import load_prediction

    settings = {"classical": {"block_size": 32}, "detection": {"block_size": 32}}
    whole = predict(scan, tmp_path / "whole", model="classical", quiet=True, settings=settings)
    assert main(["predict", str(scan), "--model", "classical", "--region", "8:,20:,-32:", "--out",
                 str(tmp_path / "region"), "-q", "classical.block_size=32", "detection.block_size=32"]) == 0
    region = tmp_path / "region"
    info = read_run(region)["scan"]
    assert info["region_zyx"] == [[8, 40], [20, 48], [16, 48]] and info["scan_shape_zyx"] == [40, 48, 48]
    assert info["shape_zyx"] == [32, 28, 32] and info["origin_um"] == pytest.approx([0.8, 2.0, 1.6])
    assert read_run(whole)["scan"]["region_zyx"] is None
    # normalised and surfaced as in the whole scan: the same levels, the same surface over the region
    assert read_run(region)["intensity_range"] == read_run(whole)["intensity_range"]
    np.testing.assert_allclose(tifffile.imread(region / "surface.tif"),
                               tifffile.imread(whole / "surface.tif")[20:, 16:], atol=1e-5)
    # the two pores wholly inside the region, in scan coordinates (um; voxels count from the region's start)
    found = pd.read_csv(region / "detections.csv").query("`class` == 'pore'")
    for cz, cy, cx, _ in PORES[1:]:
        distance = np.sqrt((found["z_um"] - 0.1 * cz) ** 2 + (found["y_um"] - 0.1 * cy) ** 2
                           + (found["x_um"] - 0.1 * cx) ** 2)
        assert (distance < 0.2).sum() == 1, f"pore at {(cz, cy, cx)}"
        inside = found[distance < 0.2].iloc[0]
        assert (inside["z"], inside["y"], inside["x"]) == pytest.approx((cz - 8, cy - 20, cx - 16), abs=2.0)
    # the whole scan's truth is cut to the region to score it, and the report draws the region of the scan
    truth = write_tiff(tmp_path / "truth.tif", open_volume(whole / "labels.tif").numpy(), (0.1, 0.1, 0.1))
    scores = evaluate_prediction(region, truth)
    assert scores["shape_zyx"] == [32, 28, 32]
    drawn = load_prediction(region)
    assert drawn.scan is not None and drawn.scan.shape == (32, 28, 32)
    np.testing.assert_array_equal(drawn.scan[0], open_volume(scan)[8, 20:, 16:])


@pytest.mark.parametrize("case", ["no_scan", "image_2d", "no_voxel_size", "unknown_model", "no_weights",
                                  "mismatched", "bad_override", "bad_min_score", "bad_window", "bad_fill", "cuda",
                                  "tta_classical", "no_default_model", "too_coarse", "bad_max_coarser", "too_fine",
                                  "bad_max_finer", "bad_invert", "bad_region",
                                  "region_outside"])
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(case: str, scan: Path, package: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    tifffile.imwrite(inputs / "slice.tif", np.zeros((8, 8), np.uint8))
    np.save(inputs / "raw.npy", np.zeros((8, 8, 8), np.uint8))
    broken = broken_packages(inputs, package)
    monkeypatch.setattr("roidetect.inference.network_run.shipped_models", lambda: [])
    args = {
        "no_scan": [str(inputs / "missing.tif")],
        "image_2d": [str(inputs / "slice.tif")],
        "no_voxel_size": [str(inputs / "raw.npy"), "--model", "classical"],
        "unknown_model": [str(scan), "--model", "no-such-model"],
        "no_weights": [str(scan), "--model", str(broken["no_weights"])],
        "mismatched": [str(scan), "--model", str(broken["mismatched"])],
        "bad_override": [str(scan), "--model", "classical", "inference.no_such_key=1"],
        "bad_min_score": [str(scan), "--model", "classical", "detection.min_score={void: 0.5}"],
        "bad_window": [str(scan), "--model", str(package), "inference.window=huge"],
        "bad_fill": [str(scan), "--model", "classical", "inference.fill_value=dark"],
        "cuda": [str(scan), "--model", str(package), "--device", "cuda"],
        "tta_classical": [str(scan), "--model", "classical", "--tta"],
        "no_default_model": [str(scan)],
        "too_coarse": [str(scan), "--model", str(package), "--voxel-size", "0.5"],  # 5 times the model's 0.1 um
        "bad_max_coarser": [str(scan), "--model", str(package), "inference.max_coarser=0.5"],
        "too_fine": [str(scan), "--model", str(package), "--voxel-size", "0.0001"],  # nm taken for um: 1000x finer
        "bad_max_finer": [str(scan), "--model", str(package), "inference.max_finer=none"],
        "bad_invert": [str(scan), "--model", "classical", "inference.invert=sometimes"],
        "bad_region": [str(scan), "--model", "classical", "--region", "0:8,0:8"],
        "region_outside": [str(scan), "--model", "classical", "--region", "0:8,0:8,40:100"],  # x holds 48
    }[case]
    out = tmp_path / "out" / "pred"
    assert main(["predict", *args, "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("roidetect predict: error:") and "\n" not in err
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_no_default_model_message_says_what_to_do(scan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("roidetect.inference.network_run.shipped_models", lambda: [])
    with pytest.raises(UserError, match="no default model is installed.*--model"):
        predict(scan, tmp_path / "pred", quiet=True)


def test_classical_prediction_does_not_import_torch(scan: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; from roidetect.inference import predict; "
            f"predict({str(scan)!r}, {str(tmp_path / 'pred')!r}, model='classical', quiet=True); "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_min_score_of_the_card_and_the_settings_merge_per_class() -> None:
    from roidetect.inference.settings import detection_params

    card = {"min_score": {"pore": 0.4, "crack": 0.3}, "min_volume_um3": {"pore": 0.01}}
    params = detection_params(card, {"min_score": {"crack": 0.0}, "high_threshold": None})
    assert params.min_score == {"pore": 0.4, "crack": 0.0}
    assert params.min_volume_um3["pore"] == 0.01 and params.high_threshold == 0.5
    with pytest.raises(UserError):
        detection_params(card, {"min_score": {"pore": 1.5}})


def test_one_number_sets_min_score_and_min_volume_of_every_class() -> None:
    from roidetect.inference.settings import detection_params
    from roidetect.labels import DEFECT_NAMES

    card = {"min_score": {"pore": 0.4, "crack": 0.3, "delamination": 0.2}, "min_volume_um3": {"pore": 0.01}}
    params = detection_params(card, {"min_score": 0, "min_volume_um3": 0.5})
    assert params.min_score == dict.fromkeys(DEFECT_NAMES, 0.0)
    assert params.min_volume_um3 == dict.fromkeys(DEFECT_NAMES, 0.5)
    for bad in (2, "abc", True):
        with pytest.raises(UserError):
            detection_params(card, {"min_score": bad})
