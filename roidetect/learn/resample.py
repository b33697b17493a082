"""Annotated volumes brought to one voxel size, as ``roidetect predict`` brings a scan to its model's.

``predict`` resamples a scan whose voxel size differs from the model's by more than 5 %
(``inference.resample_tolerance``), so the network always sees the voxel size it was trained
at. Training and calibration do the same with annotated volumes: each volume whose voxel size
differs from the target by more than ``predict``'s tolerance (5 %) along an axis is resampled to
it once, when it is loaded. The target is the median voxel size of the training volumes (the
one the package records), or the package's voxel size when calibrating. Without this, a
dataset mixing 35 nm and 70 nm scans would teach the network defects at two scales and
calibrate its scores on voxels ``predict`` never shows it.

The grid is :mod:`roidetect.inference.regrid`'s: target voxel ``j`` covers source coordinates
``[j / s, (j + 1) / s)``, ``s`` target voxels per source voxel. The image is interpolated
linearly after a Gaussian anti-aliasing blur where it is made coarser (standard deviation
``(1 / s - 1) / 2`` source voxels); labels and instances take the nearest source voxel, so
255 (not annotated) stays 255. Where the image holds its fill value (outside the field of
view), the resampled image holds it exactly, as the fill is recognised by equality.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
from scipy import ndimage

from roidetect.errors import UserError
from roidetect.learn.dataset import LoadedVolume

log = logging.getLogger(__name__)

@functools.cache
def predict_limits() -> tuple[float, float, float]:
    """``predict``'s defaults for resampling (``configs/predict.yaml``, ``inference``), which
    training and calibration follow: the relative voxel-size difference along any axis above
    which a volume is resampled (``resample_tolerance``, 0.05), and how many times coarser
    (``max_coarser``, 4: resampled, such a volume would hold 64 times the voxels) or finer
    (``max_finer``, 20: a voxel size in the wrong unit) than the target a volume may be
    (null there: no limit)."""
    from roidetect.inference.settings import load_settings

    inference = load_settings()["inference"]
    limit = [math.inf if inference[key] is None else float(inference[key]) for key in ("max_coarser", "max_finer")]
    return float(inference["resample_tolerance"]), limit[0], limit[1]


def needs_resampling(spacing_um: Sequence[float], target_um: Sequence[float]) -> bool:
    """Whether a volume of ``spacing_um`` (z, y, x) differs from ``target_um`` by more than
    ``predict``'s ``resample_tolerance`` (:func:`predict_limits`) along any axis."""
    tolerance = predict_limits()[0]
    return any(abs(s / t - 1.0) > tolerance for s, t in zip(spacing_um, target_um))


def check_voxel_sizes(spacings_um: Mapping[str, Sequence[float]], target_um: Sequence[float], where: str) -> None:
    """Refuse volumes too far from ``target_um`` to resample, before any is loaded.

    Parameters
    ----------
    spacings_um : mapping of volume id to (3,) float
        Each volume's voxel size (z, y, x) in um.
    target_um : (3,) float
        The voxel size they are brought to.
    where : str
        The dataset, for the message.

    Raises
    ------
    UserError
        A volume's voxels are more times coarser or finer than the target's along an axis than
        ``predict`` allows a scan (:func:`predict_limits`).
    """
    _, max_coarser, max_finer = predict_limits()
    target = [float(t) for t in target_um]
    for vid, spacing in spacings_um.items():
        ratios = [float(s) / t for s, t in zip(spacing, target)]
        if max(ratios) > max_coarser or min(ratios) < 1.0 / max_finer:
            raise UserError(f"{where}: volume {vid} has voxels of {_um(spacing)} um, too far from the "
                            f"{_um(target)} um the others are brought to (at most {max_coarser:g} times coarser "
                            f"or {max_finer:g} times finer); check its voxel size, or train on volumes of "
                            "similar voxel size")


def at_voxel_size(volume: LoadedVolume, target_um: Sequence[float]) -> LoadedVolume:
    """``volume`` resampled to ``target_um`` (z, y, x), or itself where it is within
    ``predict``'s tolerance of it (:func:`needs_resampling`).

    Returns
    -------
    LoadedVolume
        Image as float32 (float64 stays so; the fill value exact where the source holds it), labels uint8 and
        instances of their type, all of shape ``round(shape * s)`` with ``s`` =
        ``volume.spacing_um / target_um`` per axis (at least 1 voxel); ``spacing_um`` the target.
    """
    target = tuple(float(t) for t in target_um)
    if not needs_resampling(volume.spacing_um, target):
        return volume
    scale = [float(s) / t for s, t in zip(volume.spacing_um, target)]
    shape = tuple(max(1, round(n * s)) for n, s in zip(volume.image.shape, scale))
    image = np.asarray(volume.image, dtype=np.result_type(volume.image.dtype, np.float32))
    sigma = [(1.0 / s - 1.0) / 2.0 if s < 1.0 else 0.0 for s in scale]
    if any(sigma):
        image = ndimage.gaussian_filter(image, sigma, mode="nearest")
    resampled = _regrid(image, scale, shape, order=1)
    fill = volume.intensity_range.fill
    if fill is not None:
        at_fill = _regrid((np.asarray(volume.image) == fill).view(np.uint8), scale, shape, order=0).astype(bool)
        resampled[at_fill] = fill
    label = _regrid(volume.label, scale, shape, order=0)
    instances = None if volume.instances is None else _regrid(volume.instances, scale, shape, order=0)
    log.info("volume %s: resampled from %s um (%s voxels) to %s um (%s voxels), as predict resamples scans",
             volume.id, _um(volume.spacing_um), "x".join(map(str, volume.image.shape)), _um(target),
             "x".join(map(str, shape)))
    return replace(volume, image=resampled, label=label, instances=instances, spacing_um=target)


def _regrid(array: np.ndarray, scale: Sequence[float], shape: tuple[int, ...], order: int) -> np.ndarray:
    """``array`` sampled at the centres of the target voxels: target voxel ``j`` has its centre at
    source coordinate ``(j + 0.5) / s - 0.5``."""
    matrix = [1.0 / s for s in scale]
    offset = [0.5 / s - 0.5 for s in scale]
    return ndimage.affine_transform(array, matrix, offset=offset, output_shape=shape, output=array.dtype,
                                    order=order, mode="nearest")


def _um(values: Sequence[float]) -> str:
    return " x ".join(f"{float(v):.4g}" for v in values)
