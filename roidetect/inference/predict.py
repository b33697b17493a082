"""``predict``: a scan in, a prediction folder out (``docs/architecture.md``).

The steps, each block by block so that memory stays bounded by the block size:

1. class probabilities from the network engine (or the classical baseline), quantised into
   ``probabilities.ome.zarr`` (and ``uncertainty.ome.zarr`` with TTA);
2. the sample's top surface (``surface.tif``);
3. detections (:func:`roidetect.detect.detect`), which fill ``instances.ome.zarr`` and
   ``labels.tif`` and give ``detections.csv`` / ``detections.json``;
4. ``run.json``, with every warning the run logged (``warnings``).

Every check a user can fail (scan, model, device, output folder, settings) runs before
anything is written, and the folder appears only when complete.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from roidetect.atomic import check_output_dir, check_outside_inputs, resumable_dir
from roidetect.errors import UserError
from roidetect.inference import outputs
from roidetect.inference.mapped import with_transient_mapping
from roidetect.inference.resume import Journal, identity, partial_dir, resumable_blocks, worth_keeping
from roidetect.inference.settings import (detection_params, fill_setting, given, load_settings, positive_int,
                                          triplet)
from roidetect.inference.sources import ClassicalSource, NormalisedReader, blank_outside_view
from roidetect.intensity import (DEFAULT_PERCENTILES, IntensityLevels, few_grey_values, few_values_message,
                                 fill_is_outside_view, flip_contrast, intensity_levels)
from roidetect.runlog import RunLog
from roidetect.volume import Volume, open_volume, parse_region, split_inner_path

log = logging.getLogger(__name__)

CLASSICAL = "classical"


class ModelRun(Protocol):
    """A model made ready for one scan: what :func:`predict` needs from it."""

    with_uncertainty: bool
    calibration: Mapping[str, Any] | None
    detection: Any
    """:class:`roidetect.detect.DetectionParams` for this model and the settings."""
    intensity: IntensityLevels
    """The scan's normalisation (robust range and fill value)."""

    def source(self) -> Any:
        """A probability source (:class:`~roidetect.inference.sources.ClassicalSource` or
        :class:`~roidetect.inference.engine.NetworkSource`)."""

    def describe(self) -> dict[str, Any]:
        """The ``model`` entry of run.json."""


def predict(scan: str | os.PathLike | Volume, out_dir: str | os.PathLike, model: str | os.PathLike | None = None,
            device: str | None = None, tta: bool | None = None, voxel_size_um: float | Sequence[float] | None = None,
            overwrite: bool = False, quiet: bool = False, settings: Mapping[str, Any] | None = None,
            region: str | None = None, resume: bool = False) -> Path:
    """Segment a scan and write its prediction folder.

    Parameters
    ----------
    scan : path or Volume
        Anything :func:`roidetect.volume.open_volume` reads, or an opened volume.
    out_dir : path
        The prediction folder to create.
    model : str or path, optional
        A model package folder, the name of a shipped model, or ``"classical"``; default
        ``settings["model"]`` (``"default"``, the shipped default model).
    device : str, optional
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; default ``settings["device"]``.
    tta : bool, optional
        Test-time augmentation; default ``settings["tta"]["enabled"]``.
    voxel_size_um : float or (3,) floats, optional
        Overrides the scan's voxel size (z, y, x).
    overwrite : bool
        Replace an existing output folder.
    quiet : bool
        No progress bars.
    settings : mapping, optional
        Overrides of ``configs/predict.yaml``, nested like the file.
    region : str, optional
        Predict only this box of the scan, ``"z0:z1,y0:y1,x0:x1"`` in scan voxels
        (:func:`roidetect.volume.parse_region`); default ``settings["region"]`` (the whole scan).
        Outputs keep scan coordinates; the normalisation and the surface come from the whole scan.
    resume : bool
        Continue the run that stopped while writing ``out_dir``, from the blocks its partial
        folder holds (:mod:`roidetect.inference.resume`); same scan, model and settings.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    UserError
        Unreadable scan, unknown or broken model, unavailable device, bad settings, an
        existing output folder without ``overwrite``, an output folder that is or holds the
        scan or the model, an interrupted run's partial folder without ``resume`` or
        ``overwrite``, or ``resume`` of a run made otherwise; nothing is written then.
    """
    cfg = load_settings(settings)
    cfg["model"] = str(model) if model is not None else str(cfg["model"])
    cfg["device"] = device if device is not None else cfg["device"]
    cfg["tta"]["enabled"] = bool(tta) if tta is not None else bool(cfg["tta"]["enabled"])
    cfg["region"] = region if region is not None else cfg.get("region")
    record = RunLog("predict", cfg)
    with record.collecting_warnings():
        volume = scan if isinstance(scan, Volume) else open_volume(scan, voxel_size_um)
        if isinstance(scan, Volume) and voxel_size_um is not None:
            volume = volume.with_spacing(voxel_size_um)
        check_output_dir(out_dir, overwrite)
        volume = with_transient_mapping(volume)
        inputs = [None if volume.path is None else split_inner_path(volume.path)[0]]
        run_cfg = cfg
        if cfg["inference"]["invert"] not in (True, False):
            raise UserError(f"inference.invert={cfg['inference']['invert']}: choose true or false")
        if cfg["inference"]["invert"]:
            volume, run_cfg = _invert_contrast(volume, cfg)
        whole = volume
        box = None if cfg["region"] is None else parse_region(cfg["region"], whole.shape)
        if box is not None:
            volume = whole.crop(box)
        run: ModelRun
        if cfg["model"] == CLASSICAL:
            if cfg["tta"]["enabled"]:
                raise UserError("--tta applies to networks; the classical model has nothing to average")
            run = _ClassicalRun(volume, run_cfg, whole)
        else:
            from roidetect.inference.network_run import NetworkRun

            network_run = NetworkRun(volume, run_cfg, whole)
            inputs.append(network_run.package.path)
            run = network_run
        check_outside_inputs(out_dir, inputs)
        _warn_if_not_greyscale(volume)
        chunks = triplet(cfg["output"]["chunks"], "output.chunks")
        detect_blocks = triplet(cfg["detection"]["block_size"], "detection.block_size")
        scan_info = _scan_info(volume, record, scan, whole, box)
        partial = partial_dir(out_dir)
        expected = identity(scan_info, run.describe(), cfg)
        done = resumable_blocks(partial, expected, resume, overwrite)
        if resume:
            record.record(resumed={"partial": str(partial), "blocks_kept": len(done)})
            if done:
                log.info("resuming with %d finished block(s) from %s", len(done), partial)
            else:
                log.info("%s holds no interrupted prediction to resume; starting from the beginning", partial)
        try:
            with resumable_dir(out_dir, partial, overwrite, keep=worth_keeping) as tmp:
                journal = Journal(tmp, expected, done)
                _write_prediction(tmp, volume, whole, box, cfg, run, record, scan_info, chunks, detect_blocks, journal,
                                  quiet)
        except BaseException:
            if worth_keeping(partial):
                log.warning("the prediction stopped; its finished blocks are kept in %s: run the same command with "
                            "--resume to continue it", partial)
            raise
    log.info("prediction written to %s", out_dir)
    return Path(out_dir)


def _write_prediction(out: Path, volume: Volume, whole: Volume, box: tuple[slice, slice, slice] | None,
                      cfg: dict[str, Any], run: ModelRun, record: RunLog, scan_info: dict[str, Any],
                      chunks: tuple[int, int, int], detect_blocks: tuple[int, int, int], journal: Journal,
                      quiet: bool) -> None:
    """Fill the prediction folder ``out`` for ``volume``: the whole scan, or its ``box`` of ``whole``.

    Each block of probabilities is recorded in ``journal`` once written; blocks it holds
    already (a resumed run) are skipped.

    The surface of a region is found in the whole scan's columns above it, so depths count
    from the sample's top, not from the region's first slice.
    """
    from roidetect.detect import detect
    from roidetect.surface import solid_cut, surface_from_scan, upside_down_message

    fill = run.intensity.fill
    outside_view = fill is not None and fill_is_outside_view(whole, fill)
    smooth_um = float(cfg["surface"]["smooth_um"])
    columns, inside = _columns_above(whole, box, smooth_um)
    cut = solid_cut(columns, fill)  # what counts as material, for the surface and the upside-down check
    upside_down = upside_down_message(columns, cut)  # before the long step, so that it shows early
    if upside_down:
        log.warning(upside_down)
    with record.step("inference"):
        source = run.source()
        writer = outputs.ProbabilityWriter(out, volume.shape, volume.spacing_um, volume.origin_um,
                                           run.with_uncertainty, chunks, resume=bool(journal.done))
        with tqdm(total=source.total, unit=source.unit, desc="inference", disable=quiet) as bar:
            for result in source.blocks(bar.update, set(journal.done), journal.carry_folder):
                writer.write(blank_outside_view(result, volume, fill) if outside_view else result)
                journal.mark(result.core)
    with record.step("surface"):
        surface = surface_from_scan(columns, cut, smooth_um=smooth_um, progress=not quiet)[inside]
        surface -= np.float32(volume.origin_um[0] - whole.origin_um[0])  # from the region's first slice
        outputs.write_surface(out / outputs.SURFACE, surface + np.float32(volume.origin_um[0]), volume.spacing_um)
    with record.step("detect"):
        instances, labels = outputs.create_label_outputs(out, volume.shape, volume.spacing_um, volume.origin_um, chunks)
        table = detect(writer.probabilities, volume.spacing_um, volume.origin_um, surface, run.detection,
                       run.calibration, writer.uncertainty, instances, labels,
                       detect_blocks, progress=not quiet)
        if outside_view and len(table):
            table.loc[table["id"].isin(_beside_fill(volume, instances, fill, detect_blocks)), "touches_border"] = True
        outputs.write_detections(out, table, scan_info)
    record.record(scan=scan_info, model=run.describe(), intensity_range=[run.intensity.lo, run.intensity.hi],
                  fill_value=fill, fill_outside_view=outside_view,
                  detection=asdict(run.detection),
                  detections={"total": int(len(table)), **table["class"].value_counts().to_dict()})
    journal.finish()
    record.write(out)
    log.info("%d detections found", len(table))


def _columns_above(whole: Volume, box: tuple[slice, slice, slice] | None,
                   smooth_um: float) -> tuple[Volume, tuple[slice, slice]]:
    """The whole scan's full-depth columns over a region, widened by the surface's smoothing
    window (so that the region's edges are smoothed as in the whole scan), and where the
    region's own columns lie among them (y, x)."""
    if box is None:
        return whole, (slice(None), slice(None))
    wide, inside = [slice(0, whole.shape[0])], []
    for axis in (1, 2):
        pad = int(np.ceil(smooth_um / whole.spacing_um[axis]))
        start, stop = max(box[axis].start - pad, 0), min(box[axis].stop + pad, whole.shape[axis])
        wide.append(slice(start, stop))
        inside.append(slice(box[axis].start - start, box[axis].stop - start))
    return whole.crop((wide[0], wide[1], wide[2])), (inside[0], inside[1])


def _invert_contrast(volume: Volume, cfg: dict[str, Any]) -> tuple[Volume, dict[str, Any]]:
    """``inference.invert``: the scan with its grey values flipped, and the settings with its
    fill value (found in, or given in, the scan's own grey values) flipped too
    (:func:`~roidetect.intensity.flip_contrast`)."""
    flipped, fill = flip_contrast(volume, fill_setting(cfg["inference"]["fill_value"]))
    return flipped, {**cfg, "inference": {**cfg["inference"], "fill_value": fill}}


def _warn_if_not_greyscale(volume: Volume) -> None:
    """Warn when the scan has so few distinct values that it is a label map, a mask or a
    constant rather than a tomogram (:func:`roidetect.intensity.few_grey_values`)."""
    values = few_grey_values(volume)
    if values is None:
        return
    log.warning("%s; its detections will mean nothing: check that you gave the scan",
                few_values_message(volume.path or "the scan", values))


def _beside_fill(volume: Volume, instances: Any, fill: float, block_shape: tuple[int, int, int]) -> np.ndarray:
    """Ids of the detections touching (26-connected) a voxel at the fill value, block by block."""
    from scipy import ndimage

    from roidetect.blockwise import iter_blocks

    found: set[int] = set()
    for block in iter_blocks(volume.shape, block_shape, halo=1):
        outside = np.asarray(volume[block.padded]) == fill
        if outside.any():
            near = ndimage.binary_dilation(outside, np.ones((3, 3, 3), bool))[block.core_in_padded]
            found.update(int(i) for i in np.unique(np.asarray(instances[block.core])[near]) if i)
    return np.array(sorted(found), dtype=np.int64)


def _scan_info(volume: Volume, record: RunLog, scan: Any, whole: Volume,
               box: tuple[slice, slice, slice] | None) -> dict[str, Any]:
    """The ``scan`` entry of run.json (and detections.json); checksums the scan's file.

    Shape and origin are those of what was predicted (``volume``); with ``--region`` also the
    box (``region_zyx``: [start, stop) voxels of the scan) and the whole scan's shape.
    """
    sha256 = None
    if not isinstance(scan, Volume) and volume.path is not None:
        record.add_input("scan", volume.path)
        sha256 = record.data["inputs"]["scan"]["sha256"]
    return {"path": volume.path, "shape_zyx": list(volume.shape), "voxel_size_um": list(volume.spacing_um),
            "origin_um": list(volume.origin_um), "dtype": str(volume.dtype), "format": volume.format,
            "sha256": sha256, "region_zyx": None if box is None else [[b.start, b.stop] for b in box],
            "scan_shape_zyx": list(whole.shape)}


class _ClassicalRun:
    """``--model classical``: the training-free baseline through the same block-wise pipeline."""

    with_uncertainty = False
    calibration = None

    def __init__(self, volume: Volume, cfg: dict[str, Any], whole: Volume | None = None) -> None:
        """``whole``: the whole scan when ``volume`` is a region of it; it sets the levels."""
        from roidetect.classical import ClassicalParams, fit_levels

        self.volume = volume
        self.cfg = cfg
        section = dict(cfg["classical"])
        self.block_size = positive_int(section.pop("block_size"), "classical.block_size")
        chosen = given(section)
        for key, value in chosen.items():
            try:
                ClassicalParams.from_mapping({key: value})
            except (TypeError, ValueError) as exc:
                raise UserError(f"classical.{key}={value}: not a valid value ({exc})") from exc
        params = ClassicalParams.from_mapping(chosen)
        levels_from = whole or volume
        self.intensity = intensity_levels(levels_from, DEFAULT_PERCENTILES,
                                          fill_setting(cfg["inference"]["fill_value"]))
        fit = "void_level" not in chosen and "solid_level" not in chosen
        self.params = fit_levels(levels_from, params, self.intensity) if fit else params
        self.detection = detection_params(None, cfg["detection"])

    def source(self) -> ClassicalSource:
        reader = NormalisedReader(self.volume, self.intensity)
        return ClassicalSource(reader, self.volume.spacing_um, self.params.as_dict(), self.block_size)

    def describe(self) -> dict[str, Any]:
        return {"name": CLASSICAL, "kind": "classical", "params": self.params.as_dict(),
                "normalisation": {"method": "volume_percentiles", "percentiles": list(DEFAULT_PERCENTILES)}}
