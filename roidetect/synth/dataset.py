"""Write N phantoms as a dataset folder (format ``roidetect-dataset/1``), in parallel.

Layout (docs/architecture.md)::

    DIR/dataset.json
    DIR/images/vol_0000.tif      uint8/uint16 ImageJ TIFF with the voxel size
    DIR/labels/vol_0000.tif      uint8 label scheme
    DIR/instances/vol_0000.tif   uint16 defect ids (0 = none)
    DIR/manifests/vol_0000.json  one entry per defect
    DIR/previews/vol_0000.png    orthoslices (with preview=True)
    DIR/run.json

Volume ``i`` is ``make_phantom(seed=s_i, ...)`` where ``s_i`` is the ``i``-th child of the
dataset seed (``numpy.random.SeedSequence(seed).spawn(n)``), recorded per volume, so any one
volume can be remade alone and the result does not depend on the number of workers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from roidetect import __version__
from roidetect.atomic import atomic_dir, check_output_dir, check_outside_inputs
from roidetect.errors import UserError
from roidetect.labels import CLASS_NAMES, DATASET_FILE, DATASET_FORMAT, DEFECT_CLASSES, IGNORE
from roidetect.memory import available_memory_bytes
from roidetect.runlog import RunLog
from roidetect.synth.geometry import check_phases, load_geometry
from roidetect.synth.params import SynthParams, apply_overrides
from roidetect.synth.phantom import make_phantom, phantom_shape
from roidetect.synth.presets import checked_preset_weights, get_preset
from roidetect.synth.preview import write_preview
from roidetect.volume import split_inner_path, write_json, write_tiff


def volume_seeds(seed: int, n: int) -> list[int]:
    """The seed of each of ``n`` volumes derived from the dataset ``seed``."""
    return [int(child.generate_state(1, dtype=np.uint64)[0] >> 1)
            for child in np.random.SeedSequence(int(seed)).spawn(n)]


def write_dataset(out_dir: str | os.PathLike, n: int, shape: Sequence[int] | None = None,
                  voxel_size_um: float | Sequence[float] | None = None, seed: int = 0, preset: str = "cathode",
                  randomise: bool = False, preview: bool = False, workers: int | None = None,
                  geometry: str | os.PathLike | None = None, phases: Mapping[str, int] | None = None,
                  overrides: Mapping[str, Any] | None = None, overwrite: bool = False, quiet: bool = False,
                  name: str | None = None, preset_weights: Mapping[str, float] | None = None) -> Path:
    """Generate ``n`` phantoms and write them as a dataset folder.

    Parameters
    ----------
    out_dir : path
        Output folder; written atomically (an existing non-empty folder needs ``overwrite``).
    n : int
        Number of volumes.
    shape, voxel_size_um, seed, preset, randomise, geometry, phases, overrides, preset_weights
        As for :func:`roidetect.synth.make_phantom` (``overrides`` are its ``**overrides``);
        ``seed`` is the dataset seed from which each volume's seed is derived.
    preview : bool
        Also write PNG orthoslices with the labels overlaid.
    workers : int, optional
        Processes to use; default all CPU cores (1 runs in this process).
    quiet : bool
        No progress bar.
    name : str, optional
        Dataset name; default ``phantoms-<preset>``.

    Returns
    -------
    Path
        ``out_dir``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"--n {n!r}: give the number of volumes, at least 1")
    if workers is not None and int(workers) < 1:
        raise UserError(f"--workers {workers}: use at least 1")
    overrides = dict(overrides or {})
    preset_weights = checked_preset_weights(preset_weights)
    _check_inputs(preset, preset_weights, geometry, phases, overrides)
    full = load_geometry(geometry, phases) if geometry is not None and phases else None
    workers = _workers_that_fit(phantom_shape(shape, full), int(n), workers)
    check_output_dir(out_dir, overwrite)
    check_outside_inputs(out_dir, [None if geometry is None else split_inner_path(str(geometry))[0]])

    kwargs = {"shape": None if shape is None else [int(v) for v in shape], "voxel_size_um": voxel_size_um,
              "preset": preset, "randomise": bool(randomise), "geometry": None if geometry is None else str(geometry),
              "phases": None if phases is None else dict(phases), "preset_weights": preset_weights, **overrides}
    seeds = volume_seeds(seed, int(n))
    width = max(4, len(str(n - 1)))
    jobs = [(f"vol_{i:0{width}d}", s) for i, s in enumerate(seeds)]
    log = RunLog("synth", {"n": int(n), "seed": int(seed), "preview": bool(preview), "workers": workers, **kwargs})
    if geometry is not None:
        log.add_input("geometry", geometry)

    with atomic_dir(out_dir, overwrite) as tmp:
        for folder in ("images", "labels", "instances", "manifests", *(("previews",) if preview else ())):
            (tmp / folder).mkdir()
        with log.step("generate"):
            entries = _run_jobs(tmp, jobs, kwargs, preview, min(workers, len(jobs)), quiet)
        entries.sort(key=lambda e: e["id"])
        totals = {CLASS_NAMES[c]: sum(e["counts"][CLASS_NAMES[c]] for e in entries) for c in DEFECT_CLASSES}
        write_json(tmp / DATASET_FILE, {
            "format": DATASET_FORMAT,
            "name": name or f"phantoms-{preset}",
            "classes": {str(k): v for k, v in CLASS_NAMES.items()},
            "ignore_label": IGNORE,
            "volumes": entries,
            "generator": {"name": "roidetect.synth", "version": __version__, "seed": int(seed), "preset": preset,
                          "randomise": bool(randomise), "parameters": kwargs},
        })
        log.record(volumes=len(entries), defects=totals)
        log.write(tmp)
    return Path(out_dir)


def _check_inputs(preset: str, preset_weights: Mapping[str, float] | None, geometry: str | os.PathLike | None,
                  phases: Mapping[str, int] | None, overrides: Mapping[str, Any]) -> None:
    """Fail before any work on a bad preset (or weights given with a named one), parameter, phase list or
    geometry file."""
    get_preset(preset, np.random.default_rng(0), preset_weights)  # a throwaway draw: checks the name and weights
    apply_overrides(SynthParams(), overrides)
    if phases is not None:
        check_phases(phases)
    if geometry is not None:
        if not phases:
            raise UserError(f"geometry {geometry} needs its phase values, e.g. --phases particle=85,binder=170")
        load_geometry(geometry, phases)


PEAK_BYTES_PER_VOXEL = 80
"""Memory that making one phantom holds at its peak, per voxel: 64 bytes measured (peak RSS of
``roidetect synth`` at 96^3 and 160^3, less the interpreter), rounded up for randomised imaging."""


def _workers_that_fit(shape: tuple[int, int, int], n: int, workers: int | None) -> int:
    """How many phantoms to make at once: ``workers`` (default: every CPU core), at most ``n``,
    and by default no more than the free memory holds (:data:`PEAK_BYTES_PER_VOXEL`).

    Raises
    ------
    UserError
        One phantom of ``shape`` does not fit the free memory, or the ``workers`` asked for do not.
    """
    per_phantom = PEAK_BYTES_PER_VOXEL * int(np.prod(shape, dtype=np.int64))
    free = available_memory_bytes()
    size = " x ".join(map(str, shape))
    if free is not None and per_phantom > free:
        raise UserError(f"a {size} phantom needs about {per_phantom / 1e9:.1f} GB of memory while it is made, and "
                        f"{free / 1e9:.1f} GB are free; choose a smaller --shape (phantoms are made whole in memory, "
                        f"about {PEAK_BYTES_PER_VOXEL} bytes per voxel)")
    fits = n if free is None else max(1, int(free // per_phantom))
    if workers is not None:
        if min(int(workers), n) > fits:
            raise UserError(f"--workers {workers}: {min(int(workers), n)} phantoms of {size} at once need about "
                            f"{min(int(workers), n) * per_phantom / 1e9:.1f} GB of memory and {free / 1e9:.1f} GB "
                            f"are free; use --workers {fits}{' or fewer' if fits > 1 else ''}")
        return int(workers)
    return max(1, min(os.cpu_count() or 1, n, fits))


def _run_jobs(tmp: Path, jobs: list[tuple[str, int]], kwargs: dict[str, Any], preview: bool, workers: int,
              quiet: bool) -> list[dict[str, Any]]:
    progress = tqdm(total=len(jobs), desc="phantoms", unit="vol", disable=quiet)
    entries = []
    try:
        if workers <= 1:
            for volume_id, volume_seed in jobs:
                entries.append(write_volume(tmp, volume_id, volume_seed, kwargs, preview))
                progress.update()
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(write_volume, tmp, volume_id, volume_seed, kwargs, preview)
                           for volume_id, volume_seed in jobs]
                try:
                    for future in as_completed(futures):
                        entries.append(future.result())
                        progress.update()
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    finally:
        progress.close()
    return entries


def write_volume(out_dir: Path, volume_id: str, seed: int, kwargs: dict[str, Any], preview: bool) -> dict[str, Any]:
    """Make one phantom and write its files; returns its ``dataset.json`` entry."""
    phantom = make_phantom(seed=seed, **kwargs)
    spacing = list(phantom.spacing_um)
    write_tiff(out_dir / "images" / f"{volume_id}.tif", phantom.image, spacing)
    write_tiff(out_dir / "labels" / f"{volume_id}.tif", phantom.labels, spacing)
    write_tiff(out_dir / "instances" / f"{volume_id}.tif", phantom.instances, spacing)
    manifest = {**phantom.manifest, "id": volume_id}
    write_json(out_dir / "manifests" / f"{volume_id}.json", manifest)
    entry = {
        "id": volume_id,
        "image": f"images/{volume_id}.tif",
        "label": f"labels/{volume_id}.tif",
        "instances": f"instances/{volume_id}.tif",
        "manifest": f"manifests/{volume_id}.json",
        "voxel_size_um": spacing,
        "seed": seed,
        "preset": manifest["preset"],
        "counts": manifest["counts"],
    }
    if preview:
        write_preview(out_dir / "previews" / f"{volume_id}.png", phantom.image, phantom.labels, phantom.instances)
        entry["preview"] = f"previews/{volume_id}.png"
    return entry
