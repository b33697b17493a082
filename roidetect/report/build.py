"""Assemble the report: read the inputs, draw the figures, write the page and its PNG files."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from roidetect import __version__
from roidetect.atomic import atomic_dir, atomic_file, check_output_dir, check_outside_inputs
from roidetect.errors import UserError
from roidetect.report import figures, html, tables
from roidetect.report.html import Section
from roidetect.report.inputs import Prediction, Sites, load_prediction, load_sites
from roidetect.report.views import (Box, Focus, Geometry, Planes, choose_focus, display_range, orthogonal_planes,
                                    overlay, z_projection, zoom_window)
from roidetect.runlog import check_sites_planned_from
from roidetect.volume import split_inner_path

log = logging.getLogger(__name__)


@dataclass
class _Figures:
    """PNG images by file name, in the order they were drawn."""

    images: dict[str, bytes] = field(default_factory=dict)

    def add(self, name: str, fig: Any, dpi: int = 110) -> bytes:
        png = figures.png_bytes(fig, dpi)
        self.images[name] = png
        return png


def figures_folder(out: str | os.PathLike) -> Path:
    """Where the PNG copies of a report's figures go: ``report.html`` -> ``report_files/``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_files")


def write_report(pred_dir: str | os.PathLike, out: str | os.PathLike, sites_dir: str | os.PathLike | None = None,
                 *, scan: str | os.PathLike | None = None, focus: str | None = None, max_thumbnails: int = 12,
                 overwrite: bool = False, quiet: bool = False) -> Path:
    """Write a self-contained HTML report of a prediction folder (and its milling sites).

    Parameters
    ----------
    pred_dir : path
        Output folder of ``roidetect predict``.
    out : path
        The HTML file to write (``.html``); the figures are also written as PNG files to
        :func:`figures_folder` (``report_files/`` beside ``report.html``).
    sites_dir : path, optional
        Output folder of ``roidetect suggest`` for this prediction.
    scan : path, optional
        The scan to draw under the labels, when ``run.json``'s path is not reachable.
    focus : str, optional
        Where the orthogonal slices cross: ``"site:RANK"``, ``"detection:ID"`` or
        ``"Z,Y,X"`` in micrometres; by default the best site, else the best detection.
    max_thumbnails : int
        Sites drawn up close (best first).
    overwrite : bool
        Replace an existing report and figures folder.
    quiet : bool
        No progress bars.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    UserError
        Bad inputs (among them a ``scan`` that cannot be shown, or sites planned from another
        prediction), or ``out`` exists without ``overwrite``.
    """
    if max_thumbnails < 0:
        raise UserError(f"--thumbnails {max_thumbnails}: give 0 or more sites to draw up close")
    out = _check_out(Path(out), overwrite)
    check_output_dir(figures_folder(out), overwrite)
    prediction = load_prediction(pred_dir, scan)
    if prediction.scan is None:
        log.warning("%s", prediction.scan_note)
    scan_read = None if prediction.scan is None else split_inner_path(str(prediction.scan.path))[0]
    for output in (out, figures_folder(out)):
        check_outside_inputs(output, [pred_dir, sites_dir, scan_read])
    sites = load_sites(sites_dir) if sites_dir is not None else None
    if sites_dir is not None:
        check_sites_planned_from(sites_dir, pred_dir)
    drawn = _Figures()
    sections = _sections(prediction, sites, focus, max_thumbnails, drawn, quiet)
    document = html.page(f"roidetect report: {_scan_name(prediction)}", _header_lines(prediction, sites), sections,
                         f"Written {_now()} by roidetect {__version__}. Figures also as PNG files in "
                         f"<code>{html.text(figures_folder(out).name)}/</code>.")
    with atomic_dir(figures_folder(out), overwrite) as folder:
        for name, png in drawn.images.items():
            (folder / name).write_bytes(png)
    with atomic_file(out, overwrite) as tmp:
        tmp.write_text(document, encoding="utf-8")
    return out


def _check_out(out: Path, overwrite: bool) -> Path:
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {out}: give the report's file name, ending in .html")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give the report's file name, e.g. {out / 'report.html'}")
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    return out


def _sections(prediction: Prediction, sites: Sites | None, focus_spec: str | None, max_thumbnails: int,
              drawn: _Figures, quiet: bool) -> list[Section]:
    region = (prediction.run.get("scan") or {}).get("region_zyx") or [[0, 0]] * 3
    geometry = Geometry.of(prediction.labels, [start for start, _ in region])
    table = sites.table if sites is not None else None
    focus = choose_focus(geometry, prediction.detections, table, focus_spec)
    lo, hi = display_range(prediction.scan)
    sections = [
        Section("summary", "Summary", tables.summary(prediction, sites)),
        Section("slices", "Orthogonal slices", _slices(prediction, geometry, focus, lo, hi, drawn)),
        Section("projection", "Projection along z",
                _projection(prediction, geometry, table, drawn, quiet)),
        Section("distributions", "Size and depth", _distributions(prediction.detections, drawn)),
    ]
    if sites is not None:
        sections.append(Section("sites", "Milling sites", tables.site_tables(sites)))
        if len(table) and max_thumbnails > 0:  # type: ignore[arg-type]
            sections.append(Section("site-views", "Sites up close",
                                    _site_views(prediction, geometry, table.head(max_thumbnails), lo, hi, drawn)))
    sections.append(Section("detections", "Detections", tables.detection_table(prediction.detections)))
    return sections


# ---------------------------------------------------------------------------- header and summary


def _scan_name(prediction: Prediction) -> str:
    scan = prediction.run.get("scan") or {}
    path = scan.get("path") if isinstance(scan, dict) else None
    return Path(str(path)).name if path else prediction.folder.name


def _header_lines(prediction: Prediction, sites: Sites | None) -> list[str]:
    (nz, ny, nx), (dz, dy, dx) = prediction.shape, prediction.spacing_um
    counts = _class_counts(prediction.detections)
    found = ", ".join(f"{n} {name}" for name, n in counts.items()) or "no detections"
    lines = [f"{nz} x {ny} x {nx} voxels (z y x) of {dz:g} x {dy:g} x {dx:g} µm &middot; {html.text(found)}"]
    model = prediction.run.get("model")
    if isinstance(model, dict) and model.get("name"):
        lines.append(f"model {html.text(model['name'])}")
    if sites is not None:
        lines.append(f"{len(sites.table)} milling site{'s' if len(sites.table) != 1 else ''} from "
                     f"<code>{html.text(sites.folder)}</code>")
    return lines


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _class_counts(detections: pd.DataFrame) -> dict[str, int]:
    return {name: int((detections["class"] == name).sum()) for name in figures.classes_in(detections)}


# ---------------------------------------------------------------------------- figures


def _overlay_planes(prediction: Prediction, point: tuple[int, int, int], box: Box, lo: float, hi: float) -> Planes:
    """The planes through ``point`` as RGB images: the scan in grey, the labels in colour."""
    labels = orthogonal_planes(prediction.labels, point, box)
    grey = orthogonal_planes(prediction.scan, point, box) if prediction.scan is not None else None
    return Planes(*(overlay(getattr(grey, name) if grey else None, getattr(labels, name), lo, hi)
                    for name in ("xy", "xz", "yz")))


def _slices(prediction: Prediction, geometry: Geometry, focus: Focus, lo: float, hi: float, drawn: _Figures) -> str:
    pz, py, px = (geometry.to_um(axis, i) for axis, i in enumerate(focus.voxel))
    where = f"through the {html.text(focus.description)} at z, y, x = {pz:.3g}, {py:.3g}, {px:.3g} µm"
    views = [("orthoslices.png", geometry.whole, "Whole scan")]
    zoom = zoom_window(geometry, focus)
    if zoom is not None:
        views.append(("orthoslices_zoom.png", zoom, "Close-up"))
    parts = []
    if prediction.scan is None:
        parts.append(f'<p class="note"><span class="warn">{html.text(prediction.scan_note)}</span> '
                     "Labels are drawn on a grey background.</p>")
    for name, box, title in views:
        images = _overlay_planes(prediction, focus.voxel, box, lo, hi)
        fig = figures.orthoview_figure(images, geometry, box, focus.voxel, prediction.surface_um,
                                       f"{title}: {focus.description}")
        png = drawn.add(name, fig)
        parts.append(html.figure(png, f"{title} orthogonal slices",
                                 f"{title}: xy, xz and yz planes {where}; defect labels in their class colours."))
    return "".join(parts)


def _projection(prediction: Prediction, geometry: Geometry, sites: pd.DataFrame | None, drawn: _Figures,
                quiet: bool) -> str:
    projection = z_projection(prediction.labels, prediction.scan, progress=not quiet)
    fig = figures.projection_figure(projection, geometry, prediction.detections, sites)
    png = drawn.add("projection.png", fig)
    if projection.mean is None:
        grey = "no scan: grey background"
    elif projection.z_step == 1:
        grey = "mean scan intensity along z"
    else:
        grey = f"mean scan intensity along z over one slice in {projection.z_step}"
    marks = ("; squares: the sites' fields of view, numbered by rank, and (dashed) the area each one mills"
             if sites is not None and len(sites) else "")
    return html.figure(png, "projection along z",
                       f"Seen from the top (along z): {grey}; tinted: columns holding a defect of that class; "
                       f"dots: detection centroids{marks}. One pixel is {projection.factor} x {projection.factor} "
                       "voxels.")


def _distributions(detections: pd.DataFrame, drawn: _Figures) -> str:
    png = drawn.add("distributions.png", figures.distributions_figure(detections))
    return html.figure(png, "size and depth distributions",
                       "Equivalent diameter (sphere of equal volume) and depth of the centroid below the local "
                       "sample surface, per class.")


def _site_views(prediction: Prediction, geometry: Geometry, sites: pd.DataFrame, lo: float, hi: float,
                drawn: _Figures) -> str:
    parts = []
    for _, site in sites.iterrows():
        rank = int(site["rank"])
        point = geometry.to_voxel((site["z_um"], site["y_um"], site["x_um"]))
        box = geometry.box_um(*figures.site_extent_um(site, min_half_um=16 * min(geometry.spacing_um)))
        planes = _overlay_planes(prediction, point, box, lo, hi)
        fig = figures.site_figure(site, planes, geometry, box, point, prediction.surface_um)
        png = drawn.add(f"site_{rank:02d}.png", fig)
        parts.append(html.figure(png, f"site {rank}", tables.site_caption(site)))
    return ('<p class="note">Each site at its target (+): the plane at the target depth with the field of view '
            '(square) and the milled area (dashed), and the vertical plane through the target with the sample '
            'surface and the milled box.</p>'
            f'<div class="thumbs">{"".join(parts)}</div>')
