"""training/default/: evaluate_heldout.py's pooling of the held-out scores (no prediction run) and
independent_phantoms.py's phantoms."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "training" / "default"


def load_script(name: str):
    """Import training/default/NAME.py as a module."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def heldout():
    return load_script("evaluate_heldout")


def _result(tp: int, fn: int, matched: list[int], minimum: float = 0.003) -> dict:
    return {"instance": {"delamination": {"tp": tp, "fn": fn}},
            "matches": {"delamination": [[100 + t, t, 0.8] for t in matched]},
            "settings": {"min_true_volume_um3": {"delamination": minimum}}}


def test_recall_by_signal_and_opening_count_matched_gaps_and_skip_uncounted_ones(heldout) -> None:
    gap = heldout.Gap
    gaps = [{1: gap(1.2, 0.01, "CBD side"), 2: gap(2.5, 0.01, "particle side"), 3: gap(2.7, 0.01, "CBD side"),
             4: gap(9.0, 0.001, "collector")},  # gap 4: below the minimum volume
            {7: gap(1.4, 0.02, "particle side")}]
    results = [_result(tp=2, fn=1, matched=[1, 3]), _result(tp=0, fn=1, matched=[])]
    pairs = heldout.counted_gaps(gaps, results)
    rows = heldout.recall_by_signal(pairs)
    by_bin = {(r["signal_from"], r["signal_to"]): r for r in rows}
    assert by_bin[(1.0, 1.5)]["true"] == 2 and by_bin[(1.0, 1.5)]["found"] == 1
    assert by_bin[(2.0, 3.0)]["true"] == 2 and by_bin[(2.0, 3.0)]["recall"] == 0.5
    assert by_bin[(5.0, math.inf)]["true"] == 0 and math.isnan(by_bin[(5.0, math.inf)]["recall"])
    assert sum(r["true"] for r in rows) == 4
    by_opening = {r["opened"]: r for r in heldout.recall_by_opening(pairs)}
    assert by_opening["CBD side"]["true"] == 2 and by_opening["CBD side"]["recall"] == 1.0
    assert by_opening["particle side"]["true"] == 2 and by_opening["particle side"]["found"] == 0
    assert by_opening["collector"]["true"] == 0


def test_counted_gaps_stops_when_the_counts_disagree(heldout) -> None:
    with pytest.raises(SystemExit, match="counted 3"):
        heldout.counted_gaps([{1: heldout.Gap(1.2, 0.01, "CBD side")}], [_result(tp=1, fn=2, matched=[1])])


def test_manifest_entries_become_gaps(heldout, tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    entries = [{"id": 1, "class": "delamination", "signal": 2.0, "volume_um3": 0.01, "interface": "particle-binder",
                "side": "binder"},
               {"id": 2, "class": "delamination", "signal": 3.0, "volume_um3": 0.02, "interface": "particle-binder",
                "side": "particle"},
               {"id": 3, "class": "delamination", "signal": 4.0, "volume_um3": 0.5, "interface": "coating-collector"},
               {"id": 4, "class": "pore", "volume_um3": 0.01}]
    entries[1]["wall_vox"] = 3.0
    manifest = {"defects": entries, "voxel_size_um": [0.05] * 3, "imaging": {"resolution_um_used": 0.1}}
    (tmp_path / "manifests" / "v.json").write_text(json.dumps(manifest))
    gaps = heldout.delamination_gaps(tmp_path, {"manifest": "manifests/v.json"})
    assert {i: g.opened for i, g in gaps.items()} == {1: "CBD side", 2: "particle side", 3: "collector"}
    assert gaps[2].signal == 3.0 and gaps[3].volume_um3 == 0.5
    assert gaps[2].wall == pytest.approx(1.5)          # 3 voxels of 50 nm behind a 100 nm resolution
    assert gaps[1].wall is None and gaps[3].wall is None


def test_recall_by_wall_bins_particle_cbd_gaps_by_side(heldout) -> None:
    gap = heldout.Gap
    pairs = [(gap(2.0, 0.01, "CBD side", 0.3), False), (gap(2.0, 0.01, "CBD side", 1.2), True),
             (gap(2.0, 0.01, "particle side", 0.7), True), (gap(2.0, 0.01, "particle side", 0.9), False),
             (gap(2.0, 0.5, "collector"), True)]
    rows = {(r["opened"], r["wall_from"]): r for r in heldout.recall_by_wall(pairs)}
    assert rows[("CBD side", 0.0)]["true"] == 1 and rows[("CBD side", 0.0)]["found"] == 0
    assert rows[("CBD side", 1.0)]["recall"] == 1.0
    assert rows[("particle side", 0.5)]["true"] == 2 and rows[("particle side", 0.5)]["recall"] == 0.5
    assert sum(r["true"] for r in rows.values()) == 4  # the collector gap has no CBD wall
    assert heldout.recall_by_wall([(gap(2.0, 0.01, "CBD side"), True)]) is None  # manifest without walls


def test_pooled_sums_counts_over_volumes(heldout) -> None:
    results = [{"instance": {c: {"tp": 3, "fp": 1, "fn": 0} for c in heldout.CLASSES}},
               {"instance": {c: {"tp": 1, "fp": 0, "fn": 4} for c in heldout.CLASSES}}]
    table = heldout.pooled(results)
    assert table["crack"]["true"] == 8 and table["crack"]["precision"] == 0.8
    assert table["crack"]["f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 4))


def test_phantoms_without_signals_skip_the_signal_table(heldout, tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "v.json").write_text('{"defects": [{"id": 1, "class": "delamination"}]}')
    assert heldout.delamination_gaps(tmp_path, {"manifest": "manifests/v.json"}) is None
    scores = {c: {"f1": 0.5, "precision": 0.5, "recall": 0.5, "true": 2} for c in heldout.CLASSES}
    table = heldout.markdown({"all": {"volumes": 1, "model": scores, "classical": scores}})
    assert "| all | 1 | model |" in table and "signal" not in table


@pytest.fixture(scope="module")
def independent():
    return load_script("independent_phantoms")


def test_independent_phantom_maps_agree_with_its_records(independent) -> None:
    image, labels, instances, records = independent.phantom((48, 48, 48), seed=3)
    assert image.shape == labels.shape == instances.shape == (48, 48, 48)
    assert image.dtype in (np.uint8, np.uint16) and image.std() > 0
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(labels > 0, instances > 0)
    class_ids = {"pore": 1, "crack": 2, "delamination": 3}
    assert sorted(np.unique(instances[instances > 0]).tolist()) == [r["id"] for r in records]
    for record in records:
        mask = instances == record["id"]
        assert mask.sum() == record["voxels"] and (labels[mask] == class_ids[record["class"]]).all()
    again = independent.phantom((48, 48, 48), seed=3)
    np.testing.assert_array_equal(again[0], image)


def test_independent_dataset_has_the_synth_layout(independent, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "independent"
    monkeypatch.setattr("sys.argv", ["independent_phantoms.py", "--out", str(out), "--n", "2", "--size", "40"])
    independent.main()
    volumes = json.loads((out / "dataset.json").read_text())["volumes"]
    assert [v["id"] for v in volumes] == ["vol_0000", "vol_0001"]
    for volume in volumes:
        assert volume["seed"] >= 2**30  # outside the training seed range, as evaluate_heldout.py requires
        for key in ("image", "label", "instances", "manifest"):
            assert (out / volume[key]).is_file()


def test_tta_reaches_predict_and_gets_its_own_folder(heldout, tmp_path: Path, monkeypatch) -> None:
    calls = []

    def fake_run(argv):  # predict makes its folder, evaluate writes its JSON
        calls.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True) if argv[0] == "predict" else out.write_text("{}")

    monkeypatch.setattr(heldout, "run", fake_run)
    volume = {"id": "vol_0000", "image": "images/v.tif", "label": "labels/v.tif", "instances": "instances/v.tif",
              "voxel_size_um": [0.05, 0.05, 0.05]}
    heldout.score_volume(tmp_path / "set", volume, "models/default", tmp_path, tta=True)
    heldout.score_volume(tmp_path / "set", volume, "models/default", tmp_path)
    predicts = [c for c in calls if c[0] == "predict"]
    assert "--tta" in predicts[0] and "--tta" not in predicts[1]
    assert predicts[0][predicts[0].index("--out") + 1].endswith("set-vol_0000-default-tta")
    assert predicts[1][predicts[1].index("--out") + 1].endswith("set-vol_0000-default")


def test_masked_scans_and_a_perfect_prediction_inside_the_circle(tmp_path: Path) -> None:
    """mask_heldout.py: corners outside the circle take the fill value (labels 0 there), and a
    prediction equal to the truth scores F1 1 inside the circle, whatever the margin."""
    from roidetect.synth import write_dataset
    from roidetect.volume import open_volume, write_ome_zarr, write_tiff

    masked = load_script("mask_heldout")
    source = write_dataset(tmp_path / "cathode", n=1, shape=(48, 48, 48), seed=3, preset="cathode", quiet=True)
    masked.mask_dataset(Path(source), tmp_path / "fov" / "cathode", fill=0.0)
    data = tmp_path / "fov" / "cathode"
    entry = json.loads((data / "dataset.json").read_text())["volumes"][0]
    outside = masked.outside_circle((48, 48))
    image, labels = open_volume(data / entry["image"]).numpy(), open_volume(data / entry["label"]).numpy()
    assert (image[:, outside] == 0).all() and (labels[:, outside] == 0).all()
    original = open_volume(Path(source) / entry["image"]).numpy()
    assert np.array_equal(image[:, ~outside], original[:, ~outside])

    pred = tmp_path / "scores" / f"cathode-{entry['id']}-default"
    pred.mkdir(parents=True)
    write_tiff(pred / "labels.tif", labels, (0.05,) * 3)
    write_ome_zarr(pred / "instances.ome.zarr", open_volume(data / entry["instances"]).numpy().astype(np.uint32), (0.05,) * 3)
    (pred / "run.json").write_text(json.dumps({"detection": {"min_volume_um3": {"pore": 0, "crack": 0, "delamination": 0}}}))
    for margin in (0, 8):
        totals = masked.score(tmp_path / "scores", [data], "default", margin)
        assert all(t["fp"] == 0 and t["fn"] == 0 for t in totals.values())
        assert sum(t["tp"] for t in totals.values()) > 0


def test_fringes_overshoot_at_edges_and_leave_flat_regions_and_labels_alone(tmp_path: Path) -> None:
    """fringe_heldout.py: an unsharp mask of the scan, labels copied byte for byte."""
    from roidetect.synth import write_dataset
    from roidetect.volume import open_volume

    fringes = load_script("fringe_heldout")
    step = np.full((8, 8, 32), 1000, np.uint16)
    step[..., 16:] = 3000
    fringed = fringes.with_fringes(step, 1.0, 1.5)
    assert np.array_equal(fringes.with_fringes(step, 0.0, 1.5), step)
    assert fringed[4, 4, 16] > 3000 + 500 and fringed[4, 4, 15] < 1000 - 500  # about 0.37 of the 2000 step
    assert fringed[4, 4, 2] == 1000 and fringed[4, 4, 29] == 3000

    source = Path(write_dataset(tmp_path / "anode", n=1, shape=(48, 48, 48), seed=4, preset="anode", quiet=True))
    fringes.fringe_dataset(source, tmp_path / "fringes" / "anode", 1.0, 1.5)
    entry = json.loads((tmp_path / "fringes" / "anode" / "dataset.json").read_text())["volumes"][0]
    for key in ("label", "instances"):
        assert (tmp_path / "fringes" / "anode" / entry[key]).read_bytes() == (source / entry[key]).read_bytes()
    scan = open_volume(tmp_path / "fringes" / "anode" / entry["image"]).numpy()
    assert scan.shape == (48, 48, 48) and not np.array_equal(scan, open_volume(source / entry["image"]).numpy())


def _summary(per_volume: dict[str, dict[str, tuple[int, int, int]]]) -> dict:
    """A heldout.json with one dataset whose model rows hold these (tp, fp, fn) per class."""
    rows = {vid: {c: dict(zip(("tp", "fp", "fn"), counts[c])) for c in ("pore", "crack", "delamination")}
            for vid, counts in per_volume.items()}
    return {"set": {"volumes": len(rows), "per_volume": {"model": rows, "classical": rows}}, "all": {}}


def test_paired_comparison_passes_a_consistently_better_model_only() -> None:
    paired = load_script("paired_comparison")
    base = {f"v{i}": {"pore": (8, 2, 2), "crack": (5, 5, 5), "delamination": (0, 0, 0)} for i in range(6)}
    better = {vid: {**counts, "crack": (6 + i % 2, 4, 4 - i % 2)} for i, (vid, counts) in enumerate(base.items())}
    result = paired.compare(_summary(base), _summary(better))
    assert result["volumes"] == 6 and result["better"] == 6 and result["worse"] == 0
    assert result["paired_difference"] > 2 * result["standard_error"] > 0 and result["passes"]
    assert result["pooled_a"]["delamination"] == 0.0  # nothing true, nothing found: left out per volume
    assert math.isclose(result["pooled_a"]["pore"], 0.8)

    mixed = {vid: {**counts, "crack": (8, 2, 2) if i == 0 else (5, 6, 5)} for i, (vid, counts) in enumerate(base.items())}
    result = paired.compare(_summary(base), _summary(mixed))
    assert result["better"] == 1 and result["worse"] == 5 and not result["passes"]
    assert paired.compare(_summary(base), _summary(base))["paired_difference"] == 0.0


def test_paired_comparison_refuses_files_of_different_volumes() -> None:
    paired = load_script("paired_comparison")
    one = {"v0": {"pore": (1, 0, 0), "crack": (1, 0, 0), "delamination": (1, 0, 0)}}
    two = {"v1": one["v0"]}
    with pytest.raises(SystemExit, match="different volumes"):
        paired.compare(_summary(one), _summary(two))


def test_counts_keep_each_volumes_tp_fp_fn_for_the_paired_comparison(heldout) -> None:
    result = {"instance": {c: {"tp": i, "fp": 2 * i, "fn": 3, "f1": 0.5} for i, c in
                           enumerate(("pore", "crack", "delamination"))}}
    assert heldout.counts(result) == {"pore": {"tp": 0, "fp": 0, "fn": 3}, "crack": {"tp": 1, "fp": 2, "fn": 3},
                                      "delamination": {"tp": 2, "fp": 4, "fn": 3}}
