"""Phantoms from a second, deliberately different generator: how the model fares off its own.

The shipped model is judged on scans from other generators. ``roidetect.synth`` made every
volume it was trained and held out on, so its held-out scores cannot show what the model
learnt about that one generator rather than about electrodes. This script shares no code
with ``roidetect.synth`` and none of its microstructure, defect or CT models: particles are
randomly oriented ellipsoids placed by rejection, the CBD is a thresholded smooth random
field near particle necks, pores are ellipsoids deep inside a particle, cracks are curved
slabs across one, delaminations are CBD skins lifted off a cap of a particle's surface, and
the scan is a Gaussian blur with Poisson-Gaussian noise, a brightness ramp and 8- or 16-bit
quantisation. It writes the folder layout of ``roidetect synth`` (``dataset.json``, images,
labels, instances, manifests), so ``evaluate_heldout.py`` scores it unchanged.

Usage::

    python training/default/independent_phantoms.py --out runs/independent --n 8 --seed 7 [--test-from 4]
    python training/default/evaluate_heldout.py --model models/default --out runs/independent-scores \\
        runs/independent
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from roidetect.labels import CLASS_NAMES, DATASET_FILE, DATASET_FORMAT, IGNORE
from roidetect.volume import write_json, write_tiff

VOXEL_UM = 0.05
PORE, CRACK, DELAMINATION = 1, 2, 3


def ellipsoid_mask(shape: tuple[int, int, int], centre: np.ndarray, radii: np.ndarray,
                   rotation: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
    """Boolean mask of a rotated ellipsoid inside its bounding box; returns (box, mask)."""
    reach = int(np.ceil(radii.max())) + 1
    lo = np.maximum(np.floor(centre).astype(int) - reach, 0)
    hi = np.minimum(np.floor(centre).astype(int) + reach + 1, shape)
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1) - centre
    local = grid @ rotation
    return tuple(slice(a, b) for a, b in zip(lo, hi)), ((local / radii) ** 2).sum(-1) <= 1.0


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def particles(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Particle id map (0 = none): ellipsoids placed by rejection until 30-50 % is solid."""
    ids = np.zeros(shape, np.int32)
    target, n = rng.uniform(0.3, 0.5) * ids.size, 0
    for _ in range(4000):
        radii = rng.uniform(7, 22) * rng.uniform(0.7, 1.0, 3)
        box, mask = ellipsoid_mask(shape, rng.uniform(0, shape), radii, random_rotation(rng))
        overlap = (ids[box][mask] > 0).mean() if mask.any() else 1.0
        if overlap > 0.05:
            continue
        n += 1
        ids[box][mask & (ids[box] == 0)] = n
        if (ids > 0).sum() >= target:
            break
    return ids


def binder(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CBD: a smooth random field, thresholded, kept in void near particles (denser at necks)."""
    solid = ids > 0
    distance = ndimage.distance_transform_edt(~solid)
    field = ndimage.gaussian_filter(rng.normal(size=ids.shape), rng.uniform(1.5, 3.0))
    field /= field.std()
    necks = ndimage.uniform_filter(solid.astype(np.float32), 9) > 0.3
    level = np.where(necks, -0.5, rng.uniform(0.6, 1.2))
    return ~solid & (distance <= rng.uniform(3, 7)) & (field > level)


# The add_* functions cut defects into the (Z, Y, X) maps in place: ``labels`` (class),
# ``instances`` (id from ``next_id`` on), ``records`` (one dict per defect); they return the
# next free id. ``ids`` is the particle id map, ``cbd`` the binder mask.


def add_pores(ids: np.ndarray, labels: np.ndarray, instances: np.ndarray, rng: np.random.Generator,
              next_id: int, records: list[dict]) -> int:
    """Ellipsoidal voids at least 2 voxels inside a particle."""
    depth = ndimage.distance_transform_edt(ids > 0)
    for _ in range(int(rng.integers(5, 25))):
        radii = rng.uniform(1.8, 5.0) * rng.uniform(0.6, 1.0, 3)
        candidates = np.argwhere(depth > radii.max() + 2)
        if not len(candidates):
            return next_id
        box, mask = ellipsoid_mask(ids.shape, candidates[rng.integers(len(candidates))] + 0.0, radii,
                                   random_rotation(rng))
        if (labels[box][mask] != 0).any() or mask.sum() < 8:
            continue
        labels[box][mask], instances[box][mask] = PORE, next_id
        records.append({"id": next_id, "class": "pore", "voxels": int(mask.sum())})
        next_id += 1
    return next_id


def add_cracks(ids: np.ndarray, labels: np.ndarray, instances: np.ndarray, rng: np.random.Generator,
               next_id: int, records: list[dict]) -> int:
    """Curved slabs 1-3 voxels wide across one particle (often to its surface)."""
    for particle in rng.permutation(np.unique(ids[ids > 0]))[: int(rng.integers(3, 12))]:
        inside = ids == particle
        if inside.sum() < 2000:
            continue
        points = np.argwhere(inside)
        centre = points.mean(0)
        normal = rng.normal(size=3)
        normal /= np.linalg.norm(normal)
        offset = (points - centre) @ normal
        bend = rng.uniform(-0.03, 0.03) * ((points - centre) ** 2).sum(1)
        width = rng.uniform(1.0, 3.0)
        keep = np.abs(offset - bend - rng.uniform(-3, 3)) <= width / 2
        if rng.random() < 0.5:  # a crack stopping short of the surface
            keep &= ndimage.distance_transform_edt(inside)[tuple(points.T)] > 2
        voxels = points[keep]
        voxels = voxels[labels[tuple(voxels.T)] == 0]
        if len(voxels) < 20:
            continue
        labels[tuple(voxels.T)], instances[tuple(voxels.T)] = CRACK, next_id
        records.append({"id": next_id, "class": "crack", "voxels": len(voxels)})
        next_id += 1
    return next_id


def add_delaminations(ids: np.ndarray, cbd: np.ndarray, labels: np.ndarray, instances: np.ndarray,
                      rng: np.random.Generator, next_id: int, records: list[dict]) -> int:
    """Lift a CBD skin off a cap of a particle: a void gap of 2-5 voxels, then 2-4 voxels of CBD."""
    for particle in rng.permutation(np.unique(ids[ids > 0]))[: int(rng.integers(3, 10))]:
        points = np.argwhere(ids == particle)
        centre = points.mean(0)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        gap, wall = rng.uniform(2.0, 5.0), rng.uniform(2.0, 4.0)
        lo = np.maximum(points.min(0) - 10, 0)
        hi = np.minimum(points.max(0) + 11, ids.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        distance = ndimage.distance_transform_edt(ids[box] != particle)
        grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1) - centre
        cos = (grid @ direction) / np.maximum(np.linalg.norm(grid, axis=-1), 1e-9)
        free = (ids[box] == 0) & (labels[box] == 0)
        cap = free & (cos > rng.uniform(0.2, 0.7))
        opening = cap & (distance > 0) & (distance <= gap)
        if opening.sum() < 30:
            continue
        cbd[box][cap & (distance > gap) & (distance <= gap + wall)] = True
        cbd[box][opening] = False
        labels[box][opening], instances[box][opening] = DELAMINATION, next_id
        records.append({"id": next_id, "class": "delamination", "voxels": int(opening.sum())})
        next_id += 1
    return next_id


def scan(ids: np.ndarray, cbd: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blurred, noisy, shaded, quantised image of the phases (defects are void)."""
    attenuation = np.where(cbd, rng.uniform(0.25, 0.5), 0.0)
    grains = 1.0 + rng.uniform(0, 0.08) * ndimage.gaussian_filter(rng.normal(size=ids.shape), 1.0) * 3
    attenuation = np.where((ids > 0) & (labels == 0), grains, attenuation).astype(np.float32)
    image = ndimage.gaussian_filter(attenuation, rng.uniform(0.9, 2.0))
    ramp = 1 + rng.uniform(-0.15, 0.15) * np.linspace(-1, 1, ids.shape[2])[None, None, :]
    image = image * ramp + 0.05
    photons = rng.uniform(200, 2000)
    image = rng.poisson(np.clip(image, 0, None) * photons) / photons + rng.normal(0, rng.uniform(0.02, 0.08), ids.shape)
    if rng.random() < 0.5:
        return np.clip(image * 120 + 40, 0, 255).astype(np.uint8)
    return np.clip(image * 20000 + 3000, 0, 65535).astype(np.uint16)


def phantom(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """(image, labels, instances, defect records) of one phantom."""
    rng = np.random.default_rng(seed)
    ids = particles(shape, rng)
    cbd = binder(ids, rng)
    labels = np.zeros(shape, np.uint8)
    instances = np.zeros(shape, np.int32)
    records: list[dict] = []
    next_id = add_pores(ids, labels, instances, rng, 1, records)
    next_id = add_cracks(ids, labels, instances, rng, next_id, records)
    add_delaminations(ids, cbd, labels, instances, rng, next_id, records)
    return scan(ids, cbd, labels, rng), labels, instances, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--test-from", type=int, default=None, metavar="K",
                        help="mark volumes K and up \"split\": \"test\" (roidetect calibrate --data leaves them out; "
                             "evaluate_heldout.py --split test scores only them)")
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty; choose a new folder")
    volumes = []
    for i, seed in enumerate(np.random.SeedSequence(args.seed).generate_state(args.n, np.uint64)):
        seed = int(seed) | 2**40  # far above the training seed range, as evaluate_heldout.py checks
        vid = f"vol_{i:04d}"
        image, labels, instances, records = phantom((args.size,) * 3, seed)
        for folder, data in (("images", image), ("labels", labels), ("instances", instances)):
            write_tiff(args.out / folder / f"{vid}.tif", data, VOXEL_UM)
        manifest = {"id": vid, "seed": seed, "generator": "independent_phantoms.py", "defects": records}
        write_json(args.out / "manifests" / f"{vid}.json", manifest)
        counts = {c: sum(r["class"] == c for r in records) for c in ("pore", "crack", "delamination")}
        volumes.append({"id": vid, "image": f"images/{vid}.tif", "label": f"labels/{vid}.tif",
                        "instances": f"instances/{vid}.tif", "manifest": f"manifests/{vid}.json",
                        "voxel_size_um": [VOXEL_UM] * 3, "seed": seed, "counts": counts})
        if args.test_from is not None and i >= args.test_from:
            volumes[-1]["split"] = "test"
        print(vid, image.dtype, counts, flush=True)
    write_json(args.out / DATASET_FILE, {
        "format": DATASET_FORMAT, "name": args.out.name,
        "classes": {str(k): v for k, v in CLASS_NAMES.items()},
        "ignore_label": IGNORE, "volumes": volumes})


if __name__ == "__main__":
    main()
