"""`roidetect report`: a self-contained HTML page and PNG figures from a prediction folder."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage.measure import label, regionprops

from roidetect.cli import main
from roidetect.labels import CLASS_NAMES, CRACK, DELAMINATION, PORE
from roidetect.report import figures_folder, write_report
from roidetect.runlog import sha256_of
from roidetect.surface import surface_from_mask
from roidetect.volume import write_json, write_ome_zarr, write_tiff

SPACING = (0.1, 0.1, 0.1)


def make_scan_and_labels(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bright particles below a flat top, with pores, a crack and a delamination in them.

    Returns a uint16 scan and a uint8 label map, both (Z, Y, X).
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z, y, x = np.ogrid[:nz, :ny, :nx]
    top = nz // 6
    image = np.full(shape, 300.0)
    labels = np.zeros(shape, np.uint8)
    radius = min(ny, nx) // 5
    centres = [(top + radius + 1, ny // 4 + dy, nx // 4 + dx) for dy in (0, ny // 2) for dx in (0, nx // 2)]
    for cz, cy, cx in centres:
        inside = (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= radius ** 2
        image[inside] = 2500.0
        shell = inside & ((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 >= (radius - 1) ** 2) & (y < cy) & (z > cz)
        labels[shell & (cx < nx // 2) & (cy < ny // 2)] = DELAMINATION
    for cz, cy, cx in centres[1:]:
        r = max(2, radius // 4)
        pore = (z - cz) ** 2 + (y - cy - r) ** 2 + (x - cx) ** 2 <= r ** 2
        labels[pore] = PORE
    cz, cy, cx = centres[-1]
    crack = (np.abs((x - cx) - (z - cz)) <= 0) & ((z - cz) ** 2 + (y - cy + radius // 2) ** 2 <= (radius // 2) ** 2)
    labels[crack & (labels == 0)] = CRACK
    image[labels > 0] = 350.0
    image += rng.normal(0, 120, shape)
    return np.clip(image, 0, 65535).astype(np.uint16), labels


def detections_table(labels: np.ndarray, surface_um: np.ndarray, spacing=SPACING, seed: int = 0) -> pd.DataFrame:
    """Rows in the detections.csv contract (the columns the report reads), one per component."""
    rng = np.random.default_rng(seed)
    rows = []
    for cid in (PORE, CRACK, DELAMINATION):
        for region in regionprops(label(labels == cid)):
            cz, cy, cx = region.centroid
            z0, y0, x0, z1, y1, x1 = region.bbox
            volume = region.area * float(np.prod(spacing))
            rows.append({
                "id": len(rows) + 1, "class": CLASS_NAMES[cid], "class_id": cid,
                "score": round(float(rng.uniform(0.5, 1.0)), 3), "voxels": int(region.area),
                "volume_um3": volume, "z": cz, "y": cy, "x": cx,
                "z_um": cz * spacing[0], "y_um": cy * spacing[1], "x_um": cx * spacing[2],
                "depth_um": cz * spacing[0] - float(surface_um[int(round(cy)), int(round(cx))]),
                "bbox_z0": z0, "bbox_y0": y0, "bbox_x0": x0, "bbox_z1": z1, "bbox_y1": y1, "bbox_x1": x1,
                "equivalent_diameter_um": (6 * volume / np.pi) ** (1 / 3), "touches_border": False,
            })
    return pd.DataFrame(rows, columns=["id", "class", "class_id", "score", "voxels", "volume_um3", "z", "y", "x",
                                       "z_um", "y_um", "x_um", "depth_um", "bbox_z0", "bbox_y0", "bbox_x0",
                                       "bbox_z1", "bbox_y1", "bbox_x1", "equivalent_diameter_um",
                                       "touches_border"])


def make_prediction_folder(root: Path, shape=(40, 64, 64), seed: int = 0, empty: bool = False) -> Path:
    """A scan file and a prediction folder in the docs/architecture.md format."""
    scan, labels = make_scan_and_labels(shape, seed)
    if empty:
        labels[:] = 0
    write_tiff(root / "scan.tif", scan, SPACING)
    pred = root / "pred"
    pred.mkdir()
    write_tiff(pred / "labels.tif", labels, SPACING)
    instances = np.zeros(shape, np.uint32)
    write_ome_zarr(pred / "instances.ome.zarr", instances, SPACING)
    onehot = np.stack([labels == c for c in range(4)]).astype(np.uint8) * 255
    write_ome_zarr(pred / "probabilities.ome.zarr", onehot, SPACING,
                   channel_names=["background", "pore", "crack", "delamination"])
    surface = surface_from_mask(scan > 1400, SPACING)
    tifffile.imwrite(pred / "surface.tif", surface, imagej=True, metadata={"unit": "um", "axes": "YX"})
    detections_table(labels, surface, seed=seed).to_csv(pred / "detections.csv", index=False)
    write_json(pred / "run.json", {
        "command": "predict", "started_utc": "2025-01-01T00:00:00+00:00", "versions": {"roidetect": "0.1.0"},
        "timings_s": {"total": 12.5},
        "scan": {"path": str(root / "scan.tif"), "shape_zyx": list(shape), "voxel_size_um": list(SPACING),
                 "origin_um": [0.0, 0.0, 0.0], "sha256": "0" * 64},
        "model": {"name": "classical", "voxel_size_um": [0.1, 0.1, 0.1]},
        "parameters": {"tta": False, "block": [64, 64, 64], "thresholds": {"pore": 0.5, "crack": 0.4}},
        "detection": {"high_threshold": 0.5, "min_score": {"pore": 0.458, "delamination": 0.192}},
    })
    return pred


def make_sites_folder(root: Path, detections: pd.DataFrame, count: int = 3, fov: float = 1.5) -> Path:
    """A sites folder with one site per top detection, with the columns of `roidetect suggest`."""
    folder = root / "sites"
    folder.mkdir()
    best = detections.sort_values("score", ascending=False).head(count).reset_index(drop=True)
    rows = []
    for rank, det in enumerate((row for _, row in best.iterrows()), start=1):
        depth = max(det["depth_um"] - 0.2, 0.0)
        minutes = {"setup": 15.0, "laser": 0.0, "fib_rough": 3.0 * rank, "fib_polish": 2.0, "imaging": 4.8}
        rows.append({
            "rank": rank, "site_id": f"site_{rank:03d}", "visit_order": count + 1 - rank,
            "x_um": det["x_um"], "y_um": det["y_um"], "z_um": det["z_um"], "plane_um": det["z_um"] - 0.2,
            "depth_um": depth, "fov_um": fov, "detection_ids": str(det["id"]), "classes": det["class"],
            "n_detections": 1, "score": det["score"], "score_priority": 1.0, "score_confidence": det["score"],
            **{f"minutes_{k}": v for k, v in minutes.items()}, "minutes_total": sum(minutes.values()),
            "box_z0_um": det["z_um"] - depth - 0.2, "box_z1_um": det["z_um"] - 0.2,
            **{f"box_{a}{e}_um": det[f"{a}_um"] + (-1 if e == 0 else 1) * 0.6 * fov for a in "yx" for e in (0, 1)},
            "destroys_ids": "",
        })
    pd.DataFrame(rows).to_csv(folder / "sites.csv", index=False)
    write_json(folder / "sites.json", {
        "format": "roidetect-sites/1", "units": {"length": "um", "time": "min"}, "mode": "top-down",
        "instrument": {"name": "nanoct_gafib_sims", "description": "nano-CT + Ga-FIB + SIMS"},
        "summary": {"sites": len(rows), "minutes_total": sum(r["minutes_total"] for r in rows),
                    "warnings": ["removal rate of NMC is uncalibrated"]},
        "conventions": {"rank": "order of choice, best first"}, "sites": rows})
    return folder


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("report")
    pred = make_prediction_folder(root)
    sites = make_sites_folder(root, pd.read_csv(pred / "detections.csv"))
    return pred, sites


def _checksums(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"https?://", page), "the page must not reference anything online"
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources, "the page should hold images"
    for source in sources:
        assert source.startswith(("data:image/png;base64,", "#")), source
    assert "<script" not in page and "<link" not in page


# ---------------------------------------------------------------------------- the page


def test_report_with_sites_is_self_contained_and_complete(folders, tmp_path):
    pred, sites = folders
    before = _checksums(pred.parent)
    out = write_report(pred, tmp_path / "report.html", sites, quiet=True)
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    detections = pd.read_csv(pred / "detections.csv")
    for name in detections["class"].unique():
        assert name in page
    table = pd.read_csv(sites / "sites.csv")
    for rank in table["rank"]:
        assert f"Site {rank}</b>" in page
    assert str(pred.resolve()) in page and str(sites.resolve()) in page
    for heading in ("<th>priority</th>", "<th>confidence</th>", "<th>fib rough</th>", "total (min)", "milled box (µm)", "nanoct_gafib_sims",
                    "uncalibrated", "Detection thresholds used", "min_score.delamination"):
        assert heading in page
    pngs = sorted(p.name for p in figures_folder(out).iterdir())
    assert {"orthoslices.png", "projection.png", "distributions.png"} <= set(pngs)
    assert {f"site_{r:02d}.png" for r in table["rank"]} <= set(pngs)
    assert page.count("data:image/png;base64,") == len(pngs)
    for name in pngs:
        assert (figures_folder(out) / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _checksums(pred.parent) == before, "inputs must not change"


def test_the_prediction_runs_warnings_open_the_summary(folders, tmp_path):
    pred, _ = folders
    plain = write_report(pred, tmp_path / "plain.html", quiet=True).read_text(encoding="utf-8")
    assert "Warnings of the prediction run" not in plain
    warned = shutil.copytree(pred, tmp_path / "warned")
    run = json.loads((warned / "run.json").read_text())
    (warned / "run.json").write_text(json.dumps({**run, "warnings": ["scan.tif holds only 4 distinct values <0-3>"]}))
    page = write_report(warned, tmp_path / "warned.html", quiet=True).read_text(encoding="utf-8")
    shown = page.index("scan.tif holds only 4 distinct values &lt;0-3&gt;")  # escaped
    assert page.index("Warnings of the prediction run") < shown < page.index("<h3>Inputs</h3>")


@pytest.mark.filterwarnings("error::UserWarning")
def test_field_of_view_wider_than_the_scan_keeps_the_layout(folders, tmp_path):
    pred, _ = folders
    detections = pd.read_csv(pred / "detections.csv")
    wide = make_sites_folder(tmp_path, detections, count=2, fov=20.0)  # SIMS field over a 6.4 um scan
    out = write_report(pred, tmp_path / "wide.html", wide, quiet=True)
    assert (figures_folder(out) / "projection.png").is_file()


def test_report_without_sites_focuses_on_best_detection(folders, tmp_path):
    pred, _ = folders
    out = write_report(pred, tmp_path / "r.html", quiet=True)
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    best = pd.read_csv(pred / "detections.csv").sort_values("score").iloc[-1]
    assert f"detection {best['id']} ({best['class']}" in page
    assert "Milling sites" not in page
    assert not any(p.name.startswith("site_") for p in figures_folder(out).iterdir())


def test_empty_detections_give_a_valid_report(tmp_path):
    pred = make_prediction_folder(tmp_path, shape=(24, 32, 32), empty=True)
    assert pd.read_csv(pred / "detections.csv").empty
    out = write_report(pred, tmp_path / "empty.html", quiet=True)
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "No detections" in page and "centre of the volume" in page


def test_missing_scan_is_reported_not_fatal(folders, tmp_path):
    pred, _ = folders
    copy = tmp_path / "pred"
    copy.mkdir()
    for name in ("labels.tif", "detections.csv", "surface.tif"):
        (copy / name).write_bytes((pred / name).read_bytes())
    run = json.loads((pred / "run.json").read_text())
    run["scan"]["path"] = str(tmp_path / "moved-away.tif")
    (copy / "run.json").write_text(json.dumps(run))
    page = write_report(copy, tmp_path / "r.html", quiet=True).read_text(encoding="utf-8")
    assert "scan not shown" in page and "moved-away.tif" in page
    page = write_report(copy, tmp_path / "r.html", scan=pred.parent / "scan.tif", overwrite=True,
                        quiet=True).read_text(encoding="utf-8")
    assert "scan not shown" not in page


# ---------------------------------------------------------------------------- command line


def test_cli_writes_report_and_refuses_to_overwrite(folders, tmp_path, capsys):
    pred, sites = folders
    out = tmp_path / "report.html"
    assert main(["report", str(pred), str(sites), "--out", str(out), "--quiet", "--focus", "site:2"]) == 0
    assert "target of site 2" in out.read_text(encoding="utf-8")
    written = out.read_bytes()
    assert main(["report", str(pred), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert out.read_bytes() == written
    assert main(["report", str(pred), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert out.read_bytes() != written


@pytest.mark.parametrize("case", ["missing", "not-prediction", "bad-csv", "bad-sites", "swapped", "not-html",
                                  "bad-focus", "focus-outside", "scan-missing", "scan-other-shape"])
def test_cli_bad_input_exit_2_one_line(folders, tmp_path, capsys, case):
    pred, sites = folders
    args = ["report", str(pred), "--out", str(tmp_path / "r.html"), "--quiet"]
    if case == "missing":
        args[1] = str(tmp_path / "nowhere")
    elif case == "not-prediction":
        (tmp_path / "folder").mkdir()
        (tmp_path / "folder" / "run.json").write_text("{}")
        args[1] = str(tmp_path / "folder")
    elif case == "bad-csv":
        copy = tmp_path / "pred"
        copy.mkdir()
        for name in ("labels.tif", "run.json"):
            (copy / name).write_bytes((pred / name).read_bytes())
        (copy / "detections.csv").write_text("a,b\n1,2\n")
        args[1] = str(copy)
    elif case == "bad-sites":
        args.insert(2, str(pred))  # a prediction folder is not a sites folder
    elif case == "swapped":  # a sites folder, with the run.json suggest writes, given as the prediction
        shutil.copytree(sites, tmp_path / "sites")
        (tmp_path / "sites" / "run.json").write_text(json.dumps({"command": "suggest"}))
        args[1:2] = [str(tmp_path / "sites"), str(pred)]
    elif case == "not-html":
        args[3] = str(tmp_path / "report")
    elif case == "bad-focus":
        args[2:2] = [str(sites)]
        args += ["--focus", "site:99"]
    elif case == "focus-outside":  # the volume spans 0..4 um in z
        args += ["--focus", "40,1,1"]
    elif case == "scan-missing":  # a scan given by hand must be shown, not silently left out
        args += ["--scan", str(tmp_path / "nowhere.tif")]
    elif case == "scan-other-shape":
        write_tiff(tmp_path / "small.tif", np.zeros((8, 8, 8), np.uint16), SPACING)
        args += ["--scan", str(tmp_path / "small.tif")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("roidetect report: error:")
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "r_files").exists()
    made_by = {"bad-sites": "predict", "swapped": "suggest"}.get(case)  # named from the folder's run.json
    assert (f"it is the output of 'roidetect {made_by}'" in err) == (made_by is not None)


def test_sites_planned_from_other_detections_are_refused(folders, tmp_path, capsys):
    pred, sites = folders
    planned = tmp_path / "sites"
    shutil.copytree(sites, planned)
    write_json(planned / "run.json", {"command": "suggest", "inputs": {"detections.csv": {
        "path": str(pred / "detections.csv"), "sha256": sha256_of(pred / "detections.csv")}}})
    assert main(["report", str(pred), str(planned), "--out", str(tmp_path / "same.html"), "--quiet"]) == 0
    changed = tmp_path / "pred"
    shutil.copytree(pred, changed)
    detections = pd.read_csv(pred / "detections.csv")
    detections.iloc[1:].to_csv(changed / "detections.csv", index=False)  # one detection removed since
    capsys.readouterr()
    assert main(["report", str(changed), str(planned), "--out", str(tmp_path / "other.html"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "planned from" in err and "roidetect suggest" in err
    assert not (tmp_path / "other.html").exists()


def test_unreachable_recorded_scan_is_logged(folders, tmp_path, caplog):
    pred, _ = folders
    copy = tmp_path / "pred"
    shutil.copytree(pred, copy)
    run = json.loads((pred / "run.json").read_text())
    run["scan"]["path"] = str(tmp_path / "moved-away.tif")
    (copy / "run.json").write_text(json.dumps(run))
    with caplog.at_level("WARNING"):
        write_report(copy, tmp_path / "r.html", quiet=True)
    assert any("scan not shown" in r.getMessage() and "moved-away.tif" in r.getMessage() for r in caplog.records)


def test_plan_without_sites_still_reports(folders, tmp_path):
    pred, sites = folders
    empty = tmp_path / "sites"
    empty.mkdir()
    header = (sites / "sites.csv").read_text().splitlines()[0]
    (empty / "sites.csv").write_text(f"# units: um, minutes\n{header}\n")
    page = write_report(pred, tmp_path / "r.html", empty, quiet=True).read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "The plan holds no sites" in page and "Sites up close" not in page
