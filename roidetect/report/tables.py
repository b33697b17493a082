"""The report's tables, as HTML: run facts, counts per class, the site plan, the detections."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from roidetect.labels import DEFECT_NAMES
from roidetect.report import html
from roidetect.report.figures import BOX_COLUMNS, class_colour, classes_in, milled_box
from roidetect.report.html import Markup
from roidetect.report.inputs import Prediction, Sites

MILLED_BOX = "milled_box_um"
"""The site tables show the six ``box_*_um`` columns of ``sites.csv`` as this one column."""

DETECTION_TABLE_ROWS = 25
"""Detections listed on the page (highest score first); all of them are in detections.csv."""

SITE_TABLES: tuple[tuple[str, tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]], ...] = (
    ("Where and what", (
        ("Site", ("rank", "site_id"), ()),
        ("Target", ("x_um", "y_um", "z_um", "depth_um", "fov_um"), ()),
        ("Contents", ("classes", "detection_ids"), ()),
        ("Result", ("score", "minutes_total"), ()),
        ("Stage", (), ("stage_", "tre_")),
    )),
    ("Why each site ranks where it does, and what it costs", (
        ("Site", ("rank",), ()),
        ("Score components (0..1)", (), ("score_",)),
        ("Time per step (min)", (), ("minutes_",)),
    )),
    ("How each site is milled", (
        ("Site", ("rank", "visit_order"), ()),
        ("Layout", ("plane_um", "standoff_um", "clearance_um"), ()),
        ("Milled volume", (), ("volume_",)),
        ("Imaging", (), ("imaging_",)),
    )),
    ("What each site exposes and destroys", (
        ("Site", ("rank",), ()),
        ("Exposes", ("n_detections", "feature_size_um"), ()),
        ("Removes", (MILLED_BOX, "destroys_ids"), ()),
        ("Other", (), ("",)),
    )),
)
"""The site tables: (title, column groups); a group is (title, column names, column-name prefixes).

A column goes to the first group that names it or whose prefix it starts with; ``rank`` is
repeated in every table. Columns of ``sites.csv`` not named here end in the last group.
"""

LIST_COLUMNS = ("detection_ids", "destroys_ids")
"""Columns holding ``;``-separated detection ids."""

_GROUP_PREFIXES = ("score_", "minutes_", "stage_", "volume_", "imaging_")
_TITLES = {"tre": "TRE", "tre flag": "TRE flag", "destroys ids": "destroys", "detection ids": "detections"}


# ---------------------------------------------------------------------------- summary


def _region_text(scan: dict[str, Any]) -> str:
    """``predict --region``'s box as ``"16:112, 20:108, 0:128 of 128 x 128 x 128"``."""
    box = ", ".join(f"{start}:{stop}" for start, stop in scan["region_zyx"])
    return f"{box} of {' x '.join(str(n) for n in scan.get('scan_shape_zyx') or [])}"


def summary(prediction: Prediction, sites: Sites | None) -> str:
    """Inputs, scan geometry, prediction run, model, parameters and the detection thresholds used (the
    model card's merged with the run's, from run.json), after the run's warnings, then detections per
    class."""
    run = prediction.run
    scan = run.get("scan") if isinstance(run.get("scan"), dict) else {}
    (dz, dy, dx), (oz, oy, ox) = prediction.spacing_um, prediction.origin_um
    size = [n * s for n, s in zip(prediction.shape, prediction.spacing_um)]
    shown = (_code(prediction.scan_note) if prediction.scan is not None
             else Markup(f'<span class="warn">{html.text(prediction.scan_note)}</span>'))
    inputs: list[tuple[str, Any]] = [
        ("prediction folder", _code(prediction.folder.resolve())), ("scan shown", shown),
        ("detections.csv sha256", _code(_sha256(prediction.folder / "detections.csv")[:16] + "…")),
    ]
    if sites is not None:
        inputs += [("sites folder", _code(sites.folder.resolve())),
                   ("sites.csv sha256", _code(_sha256(sites.folder / "sites.csv")[:16] + "…"))]
    geometry = [
        ("scan path", scan.get("path", "")),
        ("shape (z y x)", " x ".join(str(n) for n in prediction.shape)),
        ("voxel size (z y x)", f"{dz:g} x {dy:g} x {dx:g} µm"),
        ("physical size", " x ".join(f"{v:.4g}" for v in size) + " µm"),
        ("origin (z y x)", f"{oz:g}, {oy:g}, {ox:g} µm"),
        *([("region of the scan (voxels)", _region_text(scan))] if scan.get("region_zyx") else []),
        ("scan sha256", (scan.get("sha256") or "")[:16] + ("…" if scan.get("sha256") else "")),
    ]
    run_items = [("command", run.get("command", "")), ("started (UTC)", run.get("started_utc", "")),
                 ("roidetect", (run.get("versions") or {}).get("roidetect", "")),
                 ("wall time", _seconds((run.get("timings_s") or {}).get("total")))]
    parts = [
        ("Inputs", html.key_value_table(inputs)),
        ("Scan", html.key_value_table(geometry)),
        ("Prediction run", html.key_value_table(run_items)),
        ("Model", html.key_value_table(flatten(run.get("model") or {}))),
        ("Parameters", html.key_value_table(flatten(run.get("parameters") or {}))),
        ("Detection thresholds used", html.key_value_table(flatten(run.get("detection") or {}))),
    ]
    grid = "".join(f"<div><h3>{html.text(title)}</h3>{body}</div>" for title, body in parts if body)
    warned = _warning_paragraphs(run.get("warnings"))
    warnings = f"<h3>Warnings of the prediction run</h3>{warned}" if warned else ""
    return (f'{warnings}<div class="grid">{grid}</div>'
            f'<h3>Detections per class</h3>{class_table(prediction.detections)}')


def _warning_paragraphs(messages: Any) -> str:
    """One highlighted paragraph per warning message (none for None or an empty list)."""
    return "".join(f'<p><span class="warn">{html.text(m)}</span></p>' for m in messages or [])


def class_table(detections: pd.DataFrame) -> str:
    """One row per class (every defect class, found or not): count, volume, size, depth, score."""
    names = list(DEFECT_NAMES)
    names += [n for n in classes_in(detections) if n not in names]
    rows = []
    for name in names:
        part = detections[detections["class"] == name]
        rows.append([
            Markup(html.swatch(class_colour(name)) + html.text(name)), len(part),
            _stat(part, "volume_um3", "sum"), _stat(part, "equivalent_diameter_um", "median"),
            _stat(part, "depth_um", "min"), _stat(part, "depth_um", "median"), _stat(part, "score", "mean"),
        ])
    header = ["class", "detections", "total volume (µm³)", "median diameter (µm)",
              "shallowest (µm; < 0 above the surface)", "median depth (µm)", "mean score"]
    return html.table(header, rows)


def flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dictionaries as ``("a.b", value)`` pairs; lists joined with commas."""
    items: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items += flatten(value, f"{name}.")
        elif isinstance(value, (list, tuple)):
            items.append((name, ", ".join(html.format_value(v) for v in value)))
        else:
            items.append((name, value))
    return items


def _stat(rows: pd.DataFrame, column: str, how: str) -> float | None:
    if column not in rows or rows.empty:
        return None
    values = pd.to_numeric(rows[column], errors="coerce").dropna()
    return float(getattr(values, how)()) if len(values) else None


def _code(value: Any) -> Markup:
    return Markup(f"<code>{html.text(value)}</code>")


def _seconds(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return ""
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- sites


def site_tables(sites: Sites) -> str:
    """The plan's summary (from ``sites.json``) and the site tables of :data:`SITE_TABLES`."""
    parts = [_plan_summary(sites.plan)]
    if sites.table.empty:
        return "".join(parts) + '<p class="note">The plan holds no sites.</p>'
    table = _with_milled_box(sites.table)
    for title, groups in _site_table_columns(list(table.columns)):
        columns = [c for _, cols in groups for c in cols]
        rows = [[_site_cell(c, row[c]) for c in columns] for _, row in table.iterrows()]
        parts += [f"<h3>{html.text(title)}</h3>",
                  html.table([heading(c) for c in columns], rows, [(t, len(cols)) for t, cols in groups])]
    return "".join(parts)


def _with_milled_box(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its ``box_*_um`` columns replaced by one :data:`MILLED_BOX` column of text."""
    boxes = [milled_box(row) for _, row in table.iterrows()]
    if any(box is None for box in boxes):
        return table
    text = [" ".join(f"{axis} {html.format_value(lo[i])}–{html.format_value(hi[i])}" for i, axis in enumerate("zyx"))
            for lo, hi in boxes]  # type: ignore[misc]
    return table.drop(columns=list(BOX_COLUMNS)).assign(**{MILLED_BOX: text})


def _site_table_columns(columns: list[str]) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """The columns present, placed into :data:`SITE_TABLES`; tables with nothing but ``rank`` are dropped."""
    taken: set[str] = set()
    tables = []
    for title, groups in SITE_TABLES:
        placed = []
        for group, names, prefixes in groups:
            chosen = [c for c in columns if c in names or (c not in taken and prefixes and c.startswith(prefixes))]
            taken.update(chosen)
            if chosen:
                placed.append((group, chosen))
        if any(c != "rank" for _, cols in placed for c in cols):
            tables.append((title, placed))
    return tables


def _plan_summary(plan: dict[str, Any]) -> str:
    summary = plan.get("summary") if isinstance(plan.get("summary"), dict) else {}
    instrument = plan.get("instrument") if isinstance(plan.get("instrument"), dict) else {}
    registration = plan.get("registration") if isinstance(plan.get("registration"), dict) else {}
    items: list[tuple[str, Any]] = [
        ("instrument", instrument.get("name", "")), ("description", instrument.get("description", "")),
        ("mode", plan.get("mode", "")), ("material", plan.get("material", "")),
        ("sites", summary.get("sites", "")), ("total time (min)", summary.get("minutes_total", "")),
        ("budget (min)", summary.get("budget_minutes", "")),
        ("classes found", ", ".join(summary.get("classes_found") or [])),
        ("classes covered", ", ".join(summary.get("classes_covered") or [])),
        ("detections / targetable / candidates", " / ".join(
            str(summary[k]) for k in ("detections", "detections_targetable", "candidates") if k in summary)),
        ("stage travel (µm)", summary.get("travel_um", "")),
        ("registration", registration.get("kind", "")), ("FRE (µm)", registration.get("fre_um", "")),
    ]
    warnings = _warning_paragraphs(summary.get("warnings"))
    conventions = plan.get("conventions") if isinstance(plan.get("conventions"), dict) else {}
    notes = (f"<details><summary>Conventions of sites.csv</summary>"
             f"{html.key_value_table(conventions.items())}</details>" if conventions else "")
    return html.key_value_table(items) + warnings + notes


def heading(column: str) -> str:
    """A column title: units in brackets, group prefixes dropped (``volume_laser_um3`` -> ``laser (µm³)``)."""
    unit = ""
    for suffix, name in (("_um3", "µm³"), ("_um", "µm"), ("_min", "min")):
        if column.endswith(suffix):
            column, unit = column[: -len(suffix)], name
            break
    for prefix in _GROUP_PREFIXES:
        if column.startswith(prefix) and column != prefix:
            column = column[len(prefix):]
            break
    if column == "total" and not unit:
        unit = "min"
    column = column.replace("_", " ")
    column = _TITLES.get(column, column)
    return f"{column} ({unit})" if unit else column


def _split_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v for v in value.replace(",", ";").replace("|", ";").replace(" ", ";").split(";") if v]
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    return [html.format_value(value)]


def _site_cell(column: str, value: Any) -> Any:
    if column == "classes":
        return Markup("".join(html.chip(n, class_colour(n)) for n in _split_list(value)))
    if column in LIST_COLUMNS:
        ids = _split_list(value)
        return " ".join(ids[:8]) + (f" … (+{len(ids) - 8})" if len(ids) > 8 else "")
    return value


def site_caption(site: pd.Series) -> str:
    """One line under a site's picture: rank, classes, depth to remove, score and total time."""
    bits = [f"<b>Site {int(site['rank'])}</b>"]
    if "classes" in site:
        bits.append(str(_site_cell("classes", site["classes"])))
    for column, label in (("depth_um", "remove {} µm"), ("score", "score {}"), ("minutes_total", "{} min in total")):
        if column in site and pd.notna(site[column]):
            bits.append(label.format(html.format_value(float(site[column]))))
    return " &middot; ".join(bits)


# ---------------------------------------------------------------------------- detections


def detection_table(detections: pd.DataFrame) -> str:
    """The highest-scoring detections (at most :data:`DETECTION_TABLE_ROWS`)."""
    if detections.empty:
        return '<p class="note">No detections: the prediction found no pores, cracks or delaminations.</p>'
    wanted = ["id", "class", "score", "equivalent_diameter_um", "depth_um", "volume_um3", "x_um", "y_um", "z_um",
              "flatness", "uncertainty", "touches_border"]
    columns = [c for c in wanted if c in detections and detections[c].notna().any()]
    best = detections.sort_values("score", ascending=False, kind="stable").head(DETECTION_TABLE_ROWS)
    rows = [[Markup(html.chip(str(v), class_colour(str(v)))) if c == "class" else v
             for c, v in zip(columns, row)] for row in best[columns].itertuples(index=False)]
    note = (f'<p class="note">The {len(best)} highest-scoring of {len(detections)} detections; '
            "all are in detections.csv.</p>" if len(detections) > len(best) else "")
    return note + html.table([heading(c) for c in columns], rows)
