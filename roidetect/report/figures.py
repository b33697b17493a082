"""The report's figures, drawn with matplotlib's object API (no pyplot, no global state).

Each function returns a :class:`matplotlib.figure.Figure`; :func:`png_bytes` renders it.
Images are placed with their physical extent in micrometres, so every panel has the
scan's true aspect ratio and carries a scale bar.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

from roidetect.labels import CLASS_IDS, CLASS_NAMES, COLOURS_RGB, DEFECT_CLASSES, DEFECT_NAMES
from roidetect.report.views import Box, Geometry, Planes, Projection, overlay

OTHER_COLOUR = "#9a9a9a"
"""Colour of a class name the label scheme does not know."""

_OUTLINE = [patheffects.withStroke(linewidth=2.5, foreground="black")]
_CROSSHAIR = {"color": "white", "lw": 0.8, "ls": (0, (4, 3)), "alpha": 0.7}
_SURFACE = {"color": "#00e5d4", "lw": 1.2}


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """Render a figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white", bbox_inches="tight", pad_inches=0.08)
    return buffer.getvalue()


def class_colour(name: str) -> str:
    """Hex colour of a class name (:data:`roidetect.labels.COLOURS_RGB`; grey if unknown)."""
    cid = CLASS_IDS.get(str(name).strip().lower())
    if cid is None:
        return OTHER_COLOUR
    return "#{:02x}{:02x}{:02x}".format(*COLOURS_RGB[cid])


def classes_in(detections: pd.DataFrame) -> list[str]:
    """Class names present in a detections table: the label scheme's order, then any others."""
    present = [str(c) for c in pd.unique(detections["class"])] if len(detections) else []
    known = [CLASS_NAMES[cid] for cid in DEFECT_CLASSES if CLASS_NAMES[cid] in present]
    return known + sorted(c for c in present if c not in known)


def scale_bar_length(span_um: float) -> float:
    """A round length (1, 2 or 5 times a power of ten) of about a fifth of ``span_um``."""
    target = max(span_um, 1e-12) / 5.0
    power = 10.0 ** np.floor(np.log10(target))
    return float(max(m * power for m in (1.0, 2.0, 5.0) if m * power <= target))


def add_scale_bar(ax: Axes, span_um: float, loc: str = "lower right") -> None:
    """Draw a labelled scale bar in data units (micrometres) on ``ax``, on a dark backing."""
    length = scale_bar_length(span_um)
    bar = AnchoredSizeBar(ax.transData, length, f"{length:g} µm", loc, pad=0.3, borderpad=0.4, sep=3,
                          color="white", frameon=True, size_vertical=span_um / 150, label_top=True,
                          fontproperties={"size": 8})
    bar.patch.set(facecolor="black", alpha=0.55, edgecolor="none")
    ax.add_artist(bar)


def _class_handles(names: Sequence[str], counts: dict[str, int] | None = None) -> list[Patch]:
    return [Patch(facecolor=class_colour(n), edgecolor="black", linewidth=0.5,
                  label=f"{n} ({counts[n]})" if counts else n) for n in names]


def _extents(geometry: Geometry, box: Box) -> tuple[tuple[float, float], ...]:
    return tuple(geometry.extent_um(axis, window) for axis, window in enumerate(box))


# ------------------------------------------------------------------ orthogonal slices


def orthoview_figure(images: Planes, geometry: Geometry, box: Box, point: Sequence[int],
                     surface_um: np.ndarray | None, caption: str, width_in: float = 11.0) -> Figure:
    """Three orthogonal planes through ``point`` laid out as in an orthogonal viewer.

    The xy plane is top left, the yz plane to its right (depth z to the right), the xz plane
    below it (depth z downwards). Dashed lines cross where the other planes cut.

    Parameters
    ----------
    images : Planes of RGB uint8 arrays
        From :func:`roidetect.report.views.overlay` of the planes inside ``box``.
    geometry : Geometry
    box : (z, y, x) slices
        The window the planes were cut to.
    point : (z, y, x) ints
        Voxel the planes pass through.
    surface_um : ndarray, shape (Y, X), or None
        z of the local sample top in scan coordinates (um), drawn as a line on the xz and yz planes.
    caption : str
        Shown beside the legend.
    """
    (z0, z1), (y0, y1), (x0, x1) = _extents(geometry, box)
    depth, height, width = z1 - z0, y1 - y0, x1 - x0
    side_w, side_h = max(depth, 0.3 * width), max(depth, 0.3 * height)
    fig_h = float(np.clip(width_in * (height + side_h) / (width + side_w), 3.5, 14.0))
    fig = Figure(figsize=(width_in, fig_h), layout="constrained")
    grid = fig.add_gridspec(2, 2, width_ratios=[width, side_w], height_ratios=[height, side_h])
    ax_xy, ax_zy = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ax_xz, ax_key = fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])
    pz, py, px = (geometry.to_um(axis, i) for axis, i in enumerate(point))

    ax_xy.imshow(images.xy, extent=(x0, x1, y1, y0))
    ax_xy.axvline(px, **_CROSSHAIR)
    ax_xy.axhline(py, **_CROSSHAIR)
    ax_xy.set(title=f"xy plane at z = {pz:.3g} µm\n(slice {geometry.scan_slice(0, point[0])})",
              xlabel="x (µm)", ylabel="y (µm)")

    ax_xz.imshow(images.xz, extent=(x0, x1, z1, z0))
    ax_xz.axvline(px, **_CROSSHAIR)
    ax_xz.axhline(pz, **_CROSSHAIR)
    ax_xz.set(title=f"xz plane at y = {py:.3g} µm\n(slice {geometry.scan_slice(1, point[1])})",
              xlabel="x (µm)", ylabel="z, depth (µm)")

    ax_zy.imshow(images.yz.transpose(1, 0, 2), extent=(z0, z1, y1, y0))
    ax_zy.axvline(pz, **_CROSSHAIR)
    ax_zy.axhline(py, **_CROSSHAIR)
    ax_zy.set(title=f"yz plane at x = {px:.3g} µm\n(slice {geometry.scan_slice(2, point[2])})",
              xlabel="z, depth (µm)", ylabel="y (µm)")

    if surface_um is not None:
        _, ys, xs = box
        x_um = [geometry.to_um(2, i) for i in range(xs.start, xs.stop)]
        y_um = [geometry.to_um(1, i) for i in range(ys.start, ys.stop)]
        ax_xz.plot(x_um, surface_um[point[1], xs], **_SURFACE)
        ax_zy.plot(surface_um[ys, point[2]], y_um, **_SURFACE)
        ax_xz.set_ylim(z1, z0)
        ax_zy.set_xlim(z0, z1)

    for ax, span in ((ax_xy, width), (ax_xz, width), (ax_zy, depth)):
        add_scale_bar(ax, span)
    handles = _class_handles(list(DEFECT_NAMES))
    handles.append(Line2D([], [], label="planes' intersections", **{**_CROSSHAIR, "color": "black"}))
    if surface_um is not None:
        handles.append(Line2D([], [], label="sample surface", **_SURFACE))
    ax_key.axis("off")
    ax_key.legend(handles=handles, loc="upper left", frameon=False, fontsize=9, title=caption,
                  title_fontproperties={"size": 9, "weight": "bold"}, alignment="left")
    return fig


# ------------------------------------------------------------------ projection with sites


def projection_figure(projection: Projection, geometry: Geometry, detections: pd.DataFrame,
                      sites: pd.DataFrame | None, width_in: float = 11.0) -> Figure:
    """The volume seen along z: mean scan intensity, defect footprints, detections and sites.

    Parameters
    ----------
    projection : Projection
        From :func:`roidetect.report.views.z_projection`.
    geometry : Geometry
    detections : DataFrame
        Drawn as dots at ``(x_um, y_um)`` in their class colour.
    sites : DataFrame or None
        Drawn as their field-of-view squares (``fov_um``) numbered by ``rank``.
    """
    rows, cols = projection.footprint.shape[1:]
    y0, x0 = geometry.to_um(1, -0.5), geometry.to_um(2, -0.5)
    height = rows * projection.factor * geometry.spacing_um[1]
    width = cols * projection.factor * geometry.spacing_um[2]
    label_image = np.zeros(projection.footprint.shape[1:], dtype=np.uint8)
    for index in reversed(range(len(DEFECT_CLASSES))):  # pores drawn last, on top
        label_image[projection.footprint[index]] = DEFECT_CLASSES[index]
    if projection.mean is not None:
        lo, hi = (float(v) for v in np.percentile(projection.mean, (1, 99)))
    else:
        lo, hi = 0.0, 1.0
    rgb = overlay(projection.mean, label_image, lo, hi, alpha=0.5)

    axes_width_in = width_in - 3.6  # room for the legend on the right and the axis labels
    fig_h = float(np.clip(axes_width_in * height / width + 0.8, 3.0, 14.0))
    fig = Figure(figsize=(width_in, fig_h), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(rgb, extent=(x0, x0 + width, y0 + height, y0))
    names = classes_in(detections)
    for name in names:
        rows = detections[detections["class"] == name]
        ax.scatter(rows["x_um"], rows["y_um"], s=16, color=class_colour(name), edgecolors="black",
                   linewidths=0.5, zorder=3)
    listed = list(DEFECT_NAMES) + [n for n in names if n not in CLASS_NAMES.values()]
    handles: list = _class_handles(listed, {n: int((detections["class"] == n).sum()) for n in listed})
    if sites is not None and len(sites):
        _draw_sites(ax, sites, (x0, x0 + width), (y0, y0 + height))
        handles.append(Patch(facecolor="none", edgecolor="white", linewidth=1.5,
                             label="site field of view (number = rank)", path_effects=_OUTLINE))
        if any(milled_box(site) is not None for _, site in sites.iterrows()):
            handles.append(Patch(facecolor="none", edgecolor="#ffe08a", linewidth=1.0, ls=(0, (4, 2)),
                                 label="milled area", path_effects=_OUTLINE))
    ax.set_xlim(x0, x0 + width)
    ax.set_ylim(y0 + height, y0)
    ax.set(xlabel="x (µm)", ylabel="y (µm)")
    add_scale_bar(ax, width)
    fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=9)
    return fig


def _draw_sites(ax: Axes, sites: pd.DataFrame, x_range: tuple[float, float], y_range: tuple[float, float]) -> None:
    """Field-of-view squares (clipped to the axes) and rank numbers (kept inside the axes, um ranges)."""
    for _, site in sites.iterrows():
        fov = _fov(site)
        x, y = float(site["x_um"]), float(site["y_um"])
        milled = milled_box(site)
        if milled is not None:
            (_, by0, bx0), (_, by1, bx1) = milled
            _draw_box(ax, (bx0, bx1), (by0, by1), edgecolor="#ffe08a", linewidth=1.0, ls=(0, (4, 2)), zorder=4)
        if fov > 0:
            _draw_box(ax, (x - fov / 2, x + fov / 2), (y - fov / 2, y + fov / 2), edgecolor="white", linewidth=1.5,
                      zorder=4)
        else:
            ax.plot([x], [y], marker="s", ms=10, mfc="none", mec="white", mew=1.5, zorder=4)
        # A field of view larger than the scan (SIMS: 11.8 um and up) would put the rank outside
        # the axes, where constrained layout cannot place it.
        label_x = float(np.clip(x - fov / 2, *x_range))
        label_y = float(np.clip(y - fov / 2, *y_range))
        ax.text(label_x, label_y, f" {int(site['rank'])}", color="white", fontsize=10,
                fontweight="bold", ha="left", va="bottom", path_effects=_OUTLINE, zorder=5)


# ------------------------------------------------------------------ distributions


def distributions_figure(detections: pd.DataFrame, width_in: float = 11.0) -> Figure:
    """Size and depth of the detections, per class.

    Three panels: histograms of the equivalent diameter (um) and of the depth below the
    sample surface (um), and depth against diameter, one colour per class.
    """
    fig = Figure(figsize=(width_in, 3.6), layout="constrained")
    ax_size, ax_depth, ax_both = fig.subplots(1, 3)
    names = classes_in(detections)
    size = pd.to_numeric(detections.get("equivalent_diameter_um"), errors="coerce") if len(detections) else None
    depth = pd.to_numeric(detections.get("depth_um"), errors="coerce") if len(detections) else None
    ax_size.set(title="Size", xlabel="equivalent diameter (µm)", ylabel="detections")
    ax_depth.set(title="Depth", xlabel="depth below the surface (µm)", ylabel="detections")
    ax_both.set(title="Depth against size", xlabel="equivalent diameter (µm)", ylabel="depth (µm)")
    if not names:
        for ax in (ax_size, ax_depth, ax_both):
            ax.text(0.5, 0.5, "no detections", ha="center", va="center", transform=ax.transAxes, color="0.4")
        return fig
    log_size = _use_log_bins(size)
    size_bins = _bins(size, log_size)
    depth_bins = _bins(depth, False)
    for name in names:
        rows = detections["class"] == name
        colour, n = class_colour(name), int(rows.sum())
        if size is not None and size_bins is not None:
            ax_size.hist(size[rows].dropna(), size_bins, histtype="step", lw=1.8, color=colour, label=f"{name} ({n})")
        if depth is not None and depth_bins is not None:
            ax_depth.hist(depth[rows].dropna(), depth_bins, histtype="step", lw=1.8, color=colour, label=name)
        if size is not None and depth is not None:
            ax_both.scatter(size[rows], depth[rows], s=14, color=colour, edgecolors="black", linewidths=0.4)
    if log_size:
        ax_size.set_xscale("log")
        ax_both.set_xscale("log")
    ax_both.invert_yaxis()
    for ax, values in ((ax_size, size), (ax_depth, depth), (ax_both, depth)):
        if values is None or values.dropna().empty:
            ax.text(0.5, 0.5, "column missing or empty", ha="center", va="center", transform=ax.transAxes,
                    color="0.4")
    ax_size.legend(handles=_class_handles(names, {n: int((detections["class"] == n).sum()) for n in names}),
                   fontsize=8, frameon=False)
    return fig


def _use_log_bins(values: pd.Series | None) -> bool:
    if values is None:
        return False
    finite = values.dropna()
    finite = finite[finite > 0]
    return len(finite) > 1 and finite.max() / finite.min() > 20


def _bins(values: pd.Series | None, log: bool, count: int = 24) -> np.ndarray | None:
    if values is None:
        return None
    finite = values.dropna()
    if log:
        finite = finite[finite > 0]
    if finite.empty:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        lo, hi = lo - 0.5 * max(abs(lo), 1e-3), hi + 0.5 * max(abs(hi), 1e-3)
    return np.geomspace(lo, hi, count + 1) if log else np.linspace(lo, hi, count + 1)


# ------------------------------------------------------------------ per-site thumbnails


BOX_COLUMNS = ("box_z0_um", "box_z1_um", "box_y0_um", "box_y1_um", "box_x0_um", "box_x1_um")
"""``sites.csv`` columns of the milled box (scan coordinates, um)."""


def milled_box(site: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """A site's milled box as (lo, hi) corners (z, y, x) in um, or None when ``sites.csv`` has none."""
    if not all(c in site and pd.notna(site[c]) for c in BOX_COLUMNS):
        return None
    values = np.asarray([float(site[c]) for c in BOX_COLUMNS])
    return values[0::2], values[1::2]


def _fov(site: pd.Series) -> float:
    return float(site["fov_um"]) if "fov_um" in site and pd.notna(site["fov_um"]) else 0.0


def site_extent_um(site: pd.Series, min_half_um: float) -> tuple[np.ndarray, np.ndarray]:
    """The region (lo, hi corners, z y x, um) a site's close-up shows.

    It holds the target, the field of view and the milled box with a margin of a fifth of
    their size, and reaches at least ``min_half_um`` from the target along every axis.
    """
    target = np.asarray([site["z_um"], site["y_um"], site["x_um"]], dtype=float)
    half = max(_fov(site) / 2, min_half_um)
    lo, hi = target - half, target + half
    box = milled_box(site)
    if box is not None:
        lo, hi = np.minimum(lo, box[0]), np.maximum(hi, box[1])
    margin = 0.2 * (hi - lo).max() / 2
    return lo - margin, hi + margin


def _draw_box(ax: Axes, x: tuple[float, float], y: tuple[float, float], **style: object) -> None:
    rect = Rectangle((x[0], y[0]), x[1] - x[0], y[1] - y[0], fill=False, **style)
    rect.set_path_effects(_OUTLINE)
    ax.add_patch(rect)


def site_figure(site: pd.Series, images: Planes, geometry: Geometry, box: Box, point: Sequence[int],
                surface_um: np.ndarray | None, width_in: float = 5.4) -> Figure:
    """A site up close: the xy plane at the target depth and the xz plane through the target.

    Parameters
    ----------
    site : Series
        A ``sites.csv`` row (``rank``, ``x_um``, ``y_um``, ``z_um``; optional ``fov_um`` and
        the milled box :data:`BOX_COLUMNS`).
    images : Planes of RGB uint8 arrays
        Overlays of the planes through ``point`` inside ``box`` (only ``xy`` and ``xz`` are drawn).
    geometry, box, point, surface_um
        As in :func:`orthoview_figure`.
    """
    (z0, z1), (y0, y1), (x0, x1) = _extents(geometry, box)
    fig = Figure(figsize=(width_in, width_in * 0.5), layout="constrained")
    ax_xy, ax_xz = fig.subplots(1, 2)
    x, y, z = float(site["x_um"]), float(site["y_um"]), float(site["z_um"])
    ax_xy.imshow(images.xy, extent=(x0, x1, y1, y0))
    ax_xz.imshow(images.xz, extent=(x0, x1, z1, z0))
    fov = _fov(site)
    if fov > 0:
        _draw_box(ax_xy, (x - fov / 2, x + fov / 2), (y - fov / 2, y + fov / 2), edgecolor="white", lw=1.3)
    milled = milled_box(site)
    if milled is not None:
        (bz0, by0, bx0), (bz1, by1, bx1) = milled
        dashed = {"edgecolor": "#ffe08a", "lw": 1.2, "ls": (0, (4, 2))}
        _draw_box(ax_xy, (bx0, bx1), (by0, by1), **dashed)
        _draw_box(ax_xz, (bx0, bx1), (bz0, bz1), **dashed)
    for ax, vertical in ((ax_xy, y), (ax_xz, z)):
        ax.plot([x], [vertical], marker="+", ms=12, mew=1.5, color="white", path_effects=_OUTLINE)
    if surface_um is not None:
        xs = box[2]
        x_um = [geometry.to_um(2, i) for i in range(xs.start, xs.stop)]
        ax_xz.plot(x_um, surface_um[point[1], xs], **_SURFACE)
    ax_xy.set(xlim=(x0, x1), ylim=(y1, y0))
    ax_xz.set(xlim=(x0, x1), ylim=(z1, z0))
    ax_xy.set_title(f"xy at z = {z:.3g} µm", fontsize=9)
    ax_xz.set_title(f"xz at y = {y:.3g} µm", fontsize=9)
    for ax in (ax_xy, ax_xz):
        ax.tick_params(labelsize=7)
        add_scale_bar(ax, x1 - x0)
    return fig
