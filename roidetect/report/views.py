"""What the report's figures show, as numpy arrays: points, windows, planes and projections.

Everything here reads lazily from :class:`roidetect.volume.Volume` objects: a plane through
a point, a window around it, or a z-projection accumulated slab by slab, so a scan far
larger than memory is never loaded whole. Positions in micrometres are scan coordinates,
``origin_um + index * spacing_um`` (voxel centres), as everywhere in roidetect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from skimage.measure import block_reduce
from tqdm import tqdm

from roidetect.errors import UserError
from roidetect.labels import COLOURS_RGB, DEFECT_CLASSES
from roidetect.volume import Volume

Box = tuple[slice, slice, slice]
"""A window of a volume: one slice per axis (z, y, x)."""


@dataclass(frozen=True)
class Geometry:
    """Shape, voxel size and origin of a volume (all (z, y, x); micrometres).

    ``first_voxel`` is the scan's voxel at index 0: a region's start (``predict --region``),
    so that slice numbers can be given in the scan's own numbering.
    """

    shape: tuple[int, int, int]
    spacing_um: tuple[float, float, float]
    origin_um: tuple[float, float, float]
    first_voxel: tuple[int, int, int] = (0, 0, 0)

    @classmethod
    def of(cls, volume: Volume, first_voxel: Sequence[int] = (0, 0, 0)) -> Geometry:
        return cls(volume.shape, volume.spacing_um, volume.origin_um,
                   tuple(int(i) for i in first_voxel))  # type: ignore[arg-type]

    def scan_slice(self, axis: int, index: int) -> int:
        """The scan's slice number of ``index`` along ``axis``."""
        return int(self.first_voxel[axis] + index)

    def to_voxel(self, point_um: Sequence[float]) -> tuple[int, int, int]:
        """Nearest voxel (z, y, x) to a point in micrometres, clipped into the volume."""
        index = np.rint((np.asarray(point_um, float) - self.origin_um) / self.spacing_um).astype(int)
        return tuple(int(np.clip(i, 0, n - 1)) for i, n in zip(index, self.shape))  # type: ignore[return-value]

    def contains_um(self, point_um: Sequence[float]) -> bool:
        """Whether a point (z, y, x) in micrometres lies within the volume's outer voxel edges."""
        return all(self.to_um(axis, -0.5) <= float(v) <= self.to_um(axis, n - 0.5)
                   for axis, (v, n) in enumerate(zip(point_um, self.shape)))

    def to_um(self, axis: int, index: float) -> float:
        """Position in micrometres of (fractional) voxel ``index`` along ``axis``."""
        return float(self.origin_um[axis] + index * self.spacing_um[axis])

    def extent_um(self, axis: int, window: slice) -> tuple[float, float]:
        """Edges (not centres) of the voxels ``window`` spans along ``axis``, in micrometres."""
        return self.to_um(axis, window.start - 0.5), self.to_um(axis, window.stop - 0.5)

    def window(self, centre: Sequence[int], half_um: Sequence[float]) -> Box:
        """The voxels within ``half_um`` (z, y, x) of ``centre``, clipped into the volume."""
        slices = []
        for c, h, s, n in zip(centre, half_um, self.spacing_um, self.shape):
            half = max(1, int(np.ceil(h / s)))
            slices.append(slice(max(0, c - half), min(n, c + half + 1)))
        return tuple(slices)  # type: ignore[return-value]

    def box_um(self, lo_um: Sequence[float], hi_um: Sequence[float]) -> Box:
        """The voxels whose centres lie between ``lo_um`` and ``hi_um`` (z, y, x), at least one per axis."""
        lo = np.floor((np.asarray(lo_um, float) - self.origin_um) / self.spacing_um + 0.5).astype(int)
        hi = np.floor((np.asarray(hi_um, float) - self.origin_um) / self.spacing_um + 0.5).astype(int) + 1
        slices = []
        for a, b, n in zip(lo, hi, self.shape):
            a = int(np.clip(a, 0, n - 1))
            slices.append(slice(a, int(np.clip(b, a + 1, n))))
        return tuple(slices)  # type: ignore[return-value]

    @property
    def whole(self) -> Box:
        return tuple(slice(0, n) for n in self.shape)  # type: ignore[return-value]


@dataclass(frozen=True)
class Focus:
    """The point the orthogonal slices pass through.

    Attributes
    ----------
    voxel : (z, y, x) ints
    description : str
        What the point is, for captions ("site 1", "detection 7 (crack)", ...).
    size_um : float
        Size of what is there (a site's field of view, a detection's diameter; 0 if none),
        used to choose a zoom window.
    """

    voxel: tuple[int, int, int]
    description: str
    size_um: float


def choose_focus(geometry: Geometry, detections: pd.DataFrame, sites: pd.DataFrame | None,
                 spec: str | None = None) -> Focus:
    """Pick the point the orthogonal slices go through.

    Parameters
    ----------
    geometry : Geometry
    detections : DataFrame
        ``detections.csv`` rows (``id``, ``class``, ``score``, ``z_um``, ``y_um``, ``x_um``, ...).
    sites : DataFrame or None
        ``sites.csv`` rows sorted best first.
    spec : str, optional
        ``"site:RANK"``, ``"detection:ID"`` or ``"Z,Y,X"`` in micrometres. By default the
        top-ranked site's target, else the detection with the highest score, else the centre.

    Raises
    ------
    UserError
        ``spec`` is malformed or names a site or detection that does not exist.
    """
    if spec:
        return _focus_from_spec(spec, geometry, detections, sites)
    if sites is not None and len(sites):
        return _site_focus(sites.iloc[0], geometry)
    if len(detections):
        return _detection_focus(detections.loc[detections["score"].idxmax()], geometry)
    centre = tuple(n // 2 for n in geometry.shape)
    return Focus(centre, "centre of the volume (no sites or detections)", 0.0)  # type: ignore[arg-type]


def _focus_from_spec(spec: str, geometry: Geometry, detections: pd.DataFrame, sites: pd.DataFrame | None) -> Focus:
    kind, _, value = spec.partition(":")
    try:
        if kind == "site" and value:
            if sites is None:
                raise UserError(f"--focus {spec}: no sites folder was given")
            match = sites[sites["rank"] == int(value)]
            if match.empty:
                raise UserError(f"--focus {spec}: no site has rank {value} (ranks {_span(sites['rank'])})")
            return _site_focus(match.iloc[0], geometry)
        if kind == "detection" and value:
            match = detections[detections["id"] == int(value)]
            if match.empty:
                raise UserError(f"--focus {spec}: no detection has id {value}")
            return _detection_focus(match.iloc[0], geometry)
        point = [float(v) for v in spec.split(",")]
    except ValueError as exc:
        raise UserError(f"--focus {spec}: give site:RANK, detection:ID or Z,Y,X in um") from exc
    if len(point) != 3:
        raise UserError(f"--focus {spec}: give site:RANK, detection:ID or Z,Y,X in um")
    if not geometry.contains_um(point):
        extent = ", ".join(f"{name} {geometry.to_um(axis, -0.5):g}..{geometry.to_um(axis, n - 0.5):g}"
                           for axis, (name, n) in enumerate(zip("zyx", geometry.shape)))
        raise UserError(f"--focus {spec}: the point lies outside the volume ({extent} um)")
    return Focus(geometry.to_voxel(point), f"point z, y, x = {spec} um", 0.0)


def _span(values: pd.Series) -> str:
    return f"{values.min()}..{values.max()}" if len(values) else "none"


def _site_focus(site: pd.Series, geometry: Geometry) -> Focus:
    point = (site["z_um"], site["y_um"], site["x_um"])
    size = float(site["fov_um"]) if "fov_um" in site and pd.notna(site["fov_um"]) else 0.0
    return Focus(geometry.to_voxel(point), f"target of site {int(site['rank'])}", size)


def _detection_focus(row: pd.Series, geometry: Geometry) -> Focus:
    point = (row["z_um"], row["y_um"], row["x_um"])
    size = float(row["equivalent_diameter_um"]) if pd.notna(row.get("equivalent_diameter_um")) else 0.0
    return Focus(geometry.to_voxel(point), f"detection {int(row['id'])} ({row['class']}, score {row['score']:.2f})",
                 size)


def zoom_window(geometry: Geometry, focus: Focus, min_voxels: int = 24) -> Box | None:
    """A window around the focus big enough to show what is there, or None if it is half the volume or more.

    Its half-width is 1.5 times the focus' size, at least ``min_voxels`` voxels.
    """
    half = max(1.5 * focus.size_um, min_voxels * min(geometry.spacing_um))
    box = geometry.window(focus.voxel, (half, half, half))
    covered = [(s.stop - s.start) / n for s, n in zip(box[1:], geometry.shape[1:])]
    return None if min(covered) > 0.5 else box


@dataclass(frozen=True)
class Planes:
    """Three orthogonal planes through a point, cut to a window.

    Attributes
    ----------
    xy : ndarray, shape (Y', X')
        The plane at the point's z.
    xz : ndarray, shape (Z', X')
        The plane at the point's y.
    yz : ndarray, shape (Z', Y')
        The plane at the point's x.
    """

    xy: np.ndarray
    xz: np.ndarray
    yz: np.ndarray


def orthogonal_planes(volume: Volume, point: Sequence[int], box: Box) -> Planes:
    """Read the xy, xz and yz planes through ``point`` (voxels) inside ``box``; nothing more."""
    z, y, x = (int(v) for v in point)
    zs, ys, xs = box
    return Planes(volume[z, ys, xs], volume[zs, y, xs], volume[zs, ys, x])


def display_range(scan: Volume | None) -> tuple[float, float]:
    """Grey levels mapped to black and white: the scan's robust percentiles (0, 1 without a scan)."""
    if scan is None:
        return 0.0, 1.0
    from roidetect.intensity import robust_range

    return robust_range(scan)


def overlay(grey: np.ndarray | None, labels: np.ndarray, lo: float, hi: float, alpha: float = 0.55) -> np.ndarray:
    """An RGB image of a greyscale plane with the defect classes painted in their colours.

    Parameters
    ----------
    grey : ndarray, shape (H, W), or None
        Scan values; None draws a dark grey background (no scan available).
    labels : ndarray of uint8, shape (H, W)
        Label ids (:mod:`roidetect.labels`).
    lo, hi : float
        Grey values shown as black and white.
    alpha : float
        Opacity of the label colours.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
    """
    if grey is None:
        base = np.full(labels.shape, 0.25, dtype=np.float32)
    else:
        base = np.clip((np.asarray(grey, dtype=np.float32) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    rgb = np.repeat(base[..., None], 3, axis=-1)
    for cid in DEFECT_CLASSES:
        mask = labels == cid
        if mask.any():
            colour = np.asarray(COLOURS_RGB[cid], dtype=np.float32) / 255.0
            rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colour
    return np.round(rgb * 255).astype(np.uint8)


@dataclass(frozen=True)
class Projection:
    """A view of the volume along z, reduced in (y, x) by ``factor``.

    Attributes
    ----------
    mean : ndarray of float32, shape (H, W), or None
        Mean scan value along z (from every ``z_step``-th slice); None without a scan.
    footprint : ndarray of bool, shape (3, H, W)
        Whether any voxel of the column block belongs to pore, crack, delamination.
    factor : int
        Voxels per pixel along y and x.
    z_step : int
        Stride of the scan slices averaged into ``mean``.
    """

    mean: np.ndarray | None
    footprint: np.ndarray
    factor: int
    z_step: int


def z_projection(labels: Volume, scan: Volume | None = None, max_pixels: int = 1024, max_planes: int = 256,
                 slab: int = 16, progress: bool = False) -> Projection:
    """Project the volume along z, reading ``slab`` slices at a time.

    Every slice of the labels is read (thin cracks must not be skipped); the scan's mean is
    taken over at most ``max_planes`` evenly strided slices. Both are reduced in (y, x) by
    block pooling so the longer side is at most ``max_pixels``.

    Parameters
    ----------
    labels : Volume, shape (Z, Y, X)
    scan : Volume or None
        Same shape as ``labels``.
    max_pixels, max_planes, slab : int
    progress : bool
        Show a progress bar over the slabs.
    """
    nz, ny, nx = labels.shape
    factor = max(1, int(np.ceil(max(ny, nx) / max_pixels)))
    z_step = max(1, int(np.ceil(nz / max_planes)))
    height, width = -(-ny // factor), -(-nx // factor)
    footprint = np.zeros((len(DEFECT_CLASSES), height, width), dtype=bool)
    total = np.zeros((height, width), dtype=np.float64) if scan is not None else None
    count = 0
    for z0 in tqdm(range(0, nz, slab), desc="projection", unit="slab", disable=not progress):
        z1 = min(z0 + slab, nz)
        block = labels[z0:z1]
        for i, cid in enumerate(DEFECT_CLASSES):
            footprint[i] |= _pool((block == cid).any(axis=0), factor, np.max).astype(bool)
        if total is not None:
            first = -(-z0 // z_step) * z_step
            if first < z1:
                planes = scan[first:z1:z_step].astype(np.float64)  # type: ignore[index]
                total += _pool(planes.sum(axis=0), factor, np.mean)
                count += planes.shape[0]
    mean = (total / max(count, 1)).astype(np.float32) if total is not None else None
    return Projection(mean, footprint, factor, z_step)


def _pool(plane: np.ndarray, factor: int, func: object) -> np.ndarray:
    if factor == 1:
        return plane
    return block_reduce(plane, (factor, factor), func, cval=0 if func is np.max else float(np.mean(plane)))
