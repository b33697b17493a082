"""Choosing how a model package runs on a scan: device, precision, window and resampling."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from roidetect.errors import UserError
from roidetect.inference.regrid import model_span, scan_length
from roidetect.learn.networks import cpu_has_native_bf16

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"

PATCH_OVERLAP = 0.25
"""Overlap of windows the size of the training patch (MONAI's usual choice)."""

MAX_AUTO_WINDOW = 160
"""Largest default window edge in model voxels (activation memory grows with its cube)."""

_PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises
    ------
    UserError
        Unknown device names, and CUDA asked for where it is not available.
    """
    key = str(name).strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UserError(f"--device {name}: CUDA is not available ({build}); use --device cpu or auto")
        try:
            device = torch.device(key)
        except RuntimeError as exc:
            raise UserError(f"--device {name}: not a device name; use cuda or cuda:N") from exc
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return device
    raise UserError(f"--device {name}: unknown device; choose auto, cpu, cuda or cuda:N")


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """Autocast dtype from ``float32``, ``bfloat16``, ``float16`` or ``auto``.

    ``auto`` is bfloat16 where the hardware computes it natively (CUDA GPUs with bf16, CPUs
    with AVX512-BF16 or AMX), otherwise float32.
    """
    key = str(name).strip().lower()
    if key == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if key not in _PRECISIONS:
        raise UserError(f"inference.precision={name}: choose auto, {', '.join(_PRECISIONS)}")
    return _PRECISIONS[key]


WINDOW_MODES = ("patch", "wide")
"""Named window choices of ``inference.window`` (:func:`choose_window`)."""


def choose_window(patch: Sequence[int], divisor: Sequence[int], window: str | Sequence[int] | None = "patch",
                  overlap: float | None = None, calibrated_overlap: float = PATCH_OVERLAP
                  ) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Window shape (model voxels) and relative overlap per axis.

    ``"patch"`` (the default; ``None`` means the same) is the inference a model's calibration
    was fitted with: windows the size of the training patch at the card's overlap
    (``calibrated_overlap``, the card's ``sliding_window.overlap``). Detection scores and
    ``min_score`` then mean what the card says. ``"wide"`` trades that for speed: windows twice
    the patch, at most :data:`MAX_AUTO_WINDOW` voxels but never less than the patch, overlapping
    by as many voxels as patch-sized windows at :data:`PATCH_OVERLAP` would (12 voxels for a 48
    patch), so far fewer windows run. Explicit shapes overlap like ``"wide"`` unless ``overlap``
    is given.

    Parameters
    ----------
    patch : (3,) ints
        The card's training patch size.
    divisor : (3,) ints
        Window edges are rounded up to multiples of these.
    window : "patch", "wide", None or (3,) ints
        Which windows to run.
    overlap : float, optional
        Relative overlap instead of the mode's.
    calibrated_overlap : float
        The card's ``sliding_window.overlap``, used by ``"patch"``.
    """
    calibrated = window is None or window == "patch"
    if calibrated:
        shape = list(patch)
    elif window == "wide":
        shape = [max(p, min(2 * p, MAX_AUTO_WINDOW)) for p in patch]
    else:
        shape = list(window)
    rounded = tuple(int(math.ceil(w / d)) * d for w, d in zip(shape, divisor))
    if overlap is not None:
        overlaps = (float(overlap),) * 3
    elif calibrated:
        overlaps = (float(calibrated_overlap),) * 3
    else:
        overlaps = tuple(min(PATCH_OVERLAP, PATCH_OVERLAP * p / w) for p, w in zip(patch, rounded))
    return rounded, overlaps  # type: ignore[return-value]


@dataclass(frozen=True)
class WindowPlan:
    """How windows map between scan and model voxels.

    Attributes
    ----------
    scale : (3,) floats
        Model voxels per scan voxel (1.0 on every axis when the scan is not resampled).
    scan_window : (3,) ints
        Window shape in scan voxels (at most the scan's shape).
    model_window : (3,) ints
        The most model voxels a scan window takes (before padding to the divisor): at most
        the requested window, so that resampled windows run at the size the model was
        calibrated with (:mod:`roidetect.inference.regrid`).
    voxel_ratio : (3,) floats
        Scan voxel size divided by the model's.
    """

    scale: tuple[float, float, float]
    scan_window: tuple[int, int, int]
    model_window: tuple[int, int, int]
    voxel_ratio: tuple[float, float, float]

    @property
    def resampled(self) -> bool:
        return any(s != 1.0 for s in self.scale)


def plan_windows(scan_shape: Sequence[int], scan_spacing_um: Sequence[float], model_spacing_um: Sequence[float],
                 window: Sequence[int], tolerance: float, warn_ratio: float,
                 max_coarser: float | None = None, max_finer: float | None = None) -> WindowPlan:
    """Window shapes for a scan, resampling when its voxel size differs from the model's.

    Parameters
    ----------
    scan_shape : (3,) ints
    scan_spacing_um, model_spacing_um : (3,) floats
        Voxel sizes z, y, x in micrometres.
    window : (3,) ints
        Window shape in model voxels (from :func:`choose_window`).
    tolerance : float
        The scan is resampled when a voxel-size ratio differs from 1 by more than this.
    warn_ratio : float
        A ratio beyond ``warn_ratio`` (or below its inverse) logs a warning.
    max_coarser : float, optional
        A scan whose voxels are more than this many times the model's along any axis is
        refused (:class:`UserError`): the model's thinnest defects would be far below the
        scan's resolution, and its grid would hold the scan's voxels times the ratios'
        product. None: no limit.
    max_finer : float, optional
        A scan whose voxels are more than this many times finer than the model's along any
        axis is refused too: tomography of electrodes does not reach such voxels, so the
        voxel size is most likely in the wrong unit. None: no limit.
    """
    ratio = tuple(float(s) / float(m) for s, m in zip(scan_spacing_um, model_spacing_um))
    if max_coarser is not None and max(ratio) > max_coarser:
        grid = tuple(math.ceil(n * r) for n, r in zip(scan_shape, ratio))
        raise UserError(f"the scan's voxels ({_fmt(scan_spacing_um)} um) are {_fmt(ratio)} times the model's "
                        f"({_fmt(model_spacing_um)} um): the model would run on a {_fmt(grid)} grid "
                        f"({math.prod(grid) / 1e9:.3g} billion voxels), and the thin defects it was trained on "
                        f"(1-3 of its voxels) are far below this scan's resolution. Use a model trained at this "
                        f"voxel size (docs/training.md), or add inference.max_coarser={math.ceil(max(ratio))} to the "
                        f"command to run anyway (the limit is {max_coarser:g})")
    finer = 1.0 / min(ratio)
    if max_finer is not None and finer > max_finer * (1.0 + 1e-9):  # at the limit despite rounding: accepted
        extent = tuple(n * s for n, s in zip(scan_shape, scan_spacing_um))
        raise UserError(f"the scan's voxels ({_fmt(scan_spacing_um)} um) are {_fmt([1 / r for r in ratio])} times "
                        f"finer than the model's ({_fmt(model_spacing_um)} um), so the whole scan would be "
                        f"{_fmt(extent)} um across: is the voxel size in micrometres (--voxel-size, or the file's "
                        f"metadata; 50 nm is 0.05)? If it is right, use a model trained at this voxel size "
                        f"(docs/training.md), or add inference.max_finer={math.ceil(round(finer, 6))} to the command "
                        f"to run anyway (the limit is {max_finer:g})")
    resample = any(abs(r - 1.0) > tolerance for r in ratio)
    if any(r > warn_ratio or r < 1.0 / warn_ratio for r in ratio):
        log.warning("scan voxel size %s um differs from the model's %s um by a factor of %s; resampling to the "
                    "model's voxel size, expect lower accuracy than on scans like its training data",
                    _fmt(scan_spacing_um), _fmt(model_spacing_um), _fmt(ratio))
    scale = ratio if resample else (1.0, 1.0, 1.0)
    scan_window = tuple(min(n, scan_length(w, s)) for w, s, n in zip(window, scale, scan_shape))
    model_window = tuple(model_span(w, s) for w, s in zip(scan_window, scale))
    return WindowPlan(scale, scan_window, model_window, ratio)  # type: ignore[arg-type]


def _fmt(values: Sequence[float]) -> str:
    return "x".join(f"{v:.4g}" for v in values)
