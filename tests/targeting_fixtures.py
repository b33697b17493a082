"""Detections from ground truth, for the targeting tests.

A small electrode-like volume with known defects (simple numpy geometry): a wavy top surface,
solid below it, pores (balls), cracks (thin tilted discs) and delaminations (thin sheets
parallel to the surface) on a jittered lateral grid at various depths, plus a few small
"false positive" objects. Detection rows are computed from the instance map exactly as the
``detections.csv`` contract describes them (score 1 for true defects, low for the false
ones), and :func:`write_prediction_folder` writes a prediction folder in the contract format.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from roidetect.labels import CLASS_IDS
from roidetect.surface import depth_below_surface, surface_from_mask
from roidetect.targeting.geometry import ScanGeometry

SHAPE = (48, 128, 128)
SPACING = (0.5, 0.5, 0.5)
ORIGIN = (2.0, -10.0, 5.0)
CLASSES = ("pore", "crack", "delamination")


@dataclass(frozen=True)
class Phantom:
    instances: np.ndarray  # (Z, Y, X) int32, 0 = none
    surface_um: np.ndarray  # (Y, X) surface z in scan um
    detections: pd.DataFrame
    geometry: ScanGeometry

    @property
    def true_ids(self) -> set[int]:
        return set(self.detections.loc[self.detections["truth"], "id"])


@functools.lru_cache(maxsize=None)
def make_phantom(seed: int = 0) -> Phantom:
    """The test volume and its ground-truth detections (cached; treat as read-only)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE, dtype=np.float32)
    top = 6 + 2 * np.sin(2 * np.pi * x[0] / 64) * np.cos(2 * np.pi * y[0] / 128)
    solid = z >= top[None]
    instances = np.zeros(SHAPE, np.int32)
    kinds: dict[int, str] = {}
    truth: dict[int, bool] = {}
    label = 0
    for i in range(4):
        for j in range(4):
            label += 1
            cy, cx = 16 + 32 * i + rng.integers(-3, 4), 16 + 32 * j + rng.integers(-3, 4)
            cz = top[cy, cx] + rng.uniform(5, 32)
            kind = CLASSES[(i + j) % 3]
            _draw(instances, (z, y, x), (cz, cy, cx), kind, rng, label)
            kinds[label], truth[label] = kind, True
    for _ in range(4):  # small objects between the grid cells, scored low
        label += 1
        cy, cx = 32 * rng.integers(1, 4), 32 * rng.integers(1, 4)
        cz = top[cy, cx] + rng.uniform(4, 20)
        _draw(instances, (z, y, x), (cz, cy, cx), "pore", rng, label, radius=1.5)
        kinds[label], truth[label] = "pore", False
    instances[~solid] = 0
    surface = surface_from_mask(solid, SPACING) + np.float32(ORIGIN[0])
    geometry = ScanGeometry(SHAPE, SPACING, ORIGIN)
    return Phantom(instances, surface, detections_from_instances(instances, kinds, truth, surface, geometry, rng),
                   geometry)


def _draw(instances: np.ndarray, grid: tuple[np.ndarray, ...], centre: tuple[float, float, float], kind: str,
          rng: np.random.Generator, label: int, radius: float | None = None) -> None:
    window = tuple(slice(max(int(c) - 8, 0), int(c) + 9) for c in centre)
    z, y, x = (g[window] - c for g, c in zip(grid, centre))
    instances = instances[window]
    if kind == "pore":
        r = radius or rng.uniform(2.0, 3.0)
        mask = z * z + y * y + x * x <= r * r
    elif kind == "crack":
        normal = rng.normal(size=3)
        normal /= np.linalg.norm(normal)
        along = z * normal[0] + y * normal[1] + x * normal[2]
        mask = (np.abs(along) <= 0.75) & (z * z + y * y + x * x - along ** 2 <= 5.0 ** 2)
    else:
        mask = (np.abs(z) <= 0.5) & (y * y / 36 + x * x / 25 <= 1)
    instances[mask & (instances == 0)] = label


def detections_from_instances(instances: np.ndarray, kinds: dict[int, str], truth: dict[int, bool],
                              surface_um: np.ndarray, geometry: ScanGeometry,
                              rng: np.random.Generator) -> pd.DataFrame:
    """One contract row per instance (plus a ``truth`` column the planner ignores)."""
    spacing = np.asarray(geometry.spacing_um)
    origin = np.asarray(geometry.origin_um)
    rows = []
    for label in sorted(kinds):
        coords = np.argwhere(instances == label)
        if len(coords) == 0:
            continue
        centre = coords.mean(axis=0)
        um = coords * spacing
        eigval, eigvec = np.linalg.eigh(np.cov(um.T) if len(um) > 1 else np.zeros((3, 3)))
        axes = 4 * np.sqrt(np.clip(eigval, 0, None))
        volume = len(coords) * float(np.prod(spacing))
        score = 1.0 if truth[label] else float(rng.uniform(0.2, 0.4))
        rows.append({
            "id": label, "class": kinds[label], "class_id": CLASS_IDS[kinds[label]], "score": score,
            "score_raw": score, "max_probability": score, "uncertainty": np.nan, "voxels": len(coords),
            "volume_um3": volume, "z": centre[0], "y": centre[1], "x": centre[2],
            "z_um": origin[0] + centre[0] * spacing[0], "y_um": origin[1] + centre[1] * spacing[1],
            "x_um": origin[2] + centre[2] * spacing[2],
            "depth_um": float(depth_below_surface(surface_um - origin[0], [centre[0]], [centre[1]], [centre[2]],
                                                  spacing)[0]),
            **dict(zip(("bbox_z0", "bbox_y0", "bbox_x0"), coords.min(axis=0).tolist())),
            **dict(zip(("bbox_z1", "bbox_y1", "bbox_x1"), (coords.max(axis=0) + 1).tolist())),
            "equivalent_diameter_um": (6 * volume / np.pi) ** (1 / 3),
            "axis_major_um": axes[2], "axis_middle_um": axes[1], "axis_minor_um": axes[0],
            "normal_z": eigvec[0, 0], "normal_y": eigvec[1, 0], "normal_x": eigvec[2, 0],
            "flatness": axes[0] / axes[1] if axes[1] > 0 else 1.0,
            "touches_border": bool((coords.min(axis=0) == 0).any()
                                   or (coords.max(axis=0) == np.array(SHAPE) - 1).any()),
            "truth": truth[label],
        })
    return pd.DataFrame(rows)


def write_prediction_folder(folder: Path, phantom: Phantom) -> Path:
    """A prediction folder as ``roidetect predict`` writes it (the parts targeting reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    phantom.detections.drop(columns="truth").to_csv(folder / "detections.csv", index=False)
    tifffile.imwrite(folder / "surface.tif", phantom.surface_um.astype(np.float32))
    geometry = phantom.geometry
    run = {"command": "predict", "scan": {"path": "phantom.tif", "shape_zyx": list(geometry.shape_zyx),
                                          "voxel_size_um": list(geometry.spacing_um),
                                          "origin_um": list(geometry.origin_um), "sha256": "0" * 64}}
    (folder / "run.json").write_text(json.dumps(run))
    return folder


def write_scan(path: Path, phantom: Phantom, seed: int = 0) -> Path:
    """A uint16 TIFF of the phantom: bright solid, dark voids and defects, Gaussian noise."""
    from roidetect.volume import write_tiff

    geometry = phantom.geometry
    z_um = geometry.origin_um[0] + np.arange(geometry.shape_zyx[0]) * geometry.spacing_um[0]
    solid = z_um[:, None, None] >= phantom.surface_um[None]
    image = np.where(solid & (phantom.instances == 0), 3000.0, 300.0)
    image += np.random.default_rng(seed).normal(0, 80, image.shape)
    return write_tiff(path, np.clip(image, 0, 65535).astype(np.uint16), geometry.spacing_um)

