"""Intensity normalisation shared by training and inference (pure numpy).

Scans from different instruments have arbitrary grey values, so every volume is mapped to
a common range by its own robust percentiles: ``(x - p_low) / (p_high - p_low)``, which
puts the dark voids near 0 and the bright solid near 1 whatever the bit depth or gain.
The percentiles are estimated from a strided subsample, so huge scans need not be read
whole.

Many reconstructions set everything outside the field of view (the corners of each slice
outside the reconstruction circle) or padding to one constant, usually 0, well below the
voids. Such a *fill value* would become ``p_low`` and shift every grey value, and the
network would see a flat region darker than anything it was trained on. So the fill value
is found in the subsample (:func:`find_fill`), left out of the percentiles, and mapped to
0, the void level, by :func:`normalise`. When it also holds the corners of the slices
(:func:`fill_is_outside_view`), it marks where the scan has no data.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

DEFAULT_PERCENTILES = (0.5, 99.5)
FILL_MIN_FRACTION = 0.01
"""A fill value covers at least this fraction of the scan's voxels ..."""
FILL_GAP = 0.02
"""... and no more than :data:`FILL_MAX_NEAR` of the other voxels lie within this fraction of
the grey-value range above it: it stands apart from the voids' noise."""
FILL_MAX_NEAR = 0.005
OUTSIDE_VIEW_CORNERS = 0.9
"""The fill value marks the outside of the field of view when it holds at least this share of
the corners of the sampled slices."""
FEW_GREY_VALUES = 16
"""A volume with at most this many distinct values is not a greyscale tomogram (whose noise
alone spreads it over many more) but a label map, a mask or a constant."""


class IntensityLevels(NamedTuple):
    """How a scan's grey values are normalised: ``lo`` -> 0, ``hi`` -> 1, ``fill`` -> 0.

    ``fill`` is the scan's fill value (outside the field of view, padding), or None.
    """

    lo: float
    hi: float
    fill: float | None = None


def sample_voxels(volume: Any, max_voxels: int = 2_000_000, max_slices: int = 64,
                  exclude: float | None = None) -> np.ndarray:
    """A deterministic strided subsample of a volume's voxels.

    Parameters
    ----------
    volume : array-like or :class:`roidetect.volume.Volume`, shape (Z, Y, X)
        Anything that returns numpy arrays when sliced.
    max_voxels : int
        Upper bound on the number of voxels returned.
    max_slices : int
        At most this many evenly spaced z-slices are read.
    exclude : float, optional
        A value left out of the sample (the scan's fill value).

    Returns
    -------
    ndarray, shape (N,)
        The sampled values, N <= ``max_voxels``.
    """
    nz, ny, nx = (int(s) for s in volume.shape)
    zs = np.unique(np.linspace(0, nz - 1, min(nz, max_slices)).round().astype(int))
    per_slice = max(1, max_voxels // len(zs))
    step = max(1, int(np.ceil(np.sqrt(ny * nx / per_slice))))
    parts = [np.asarray(volume[int(z), ::step, ::step]).ravel() for z in zs]
    values = np.concatenate(parts)[:max_voxels]
    return values if exclude is None else values[values != exclude]


def intensity_levels(volume: Any, percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
                     fill: str | float | None = "auto") -> IntensityLevels:
    """A volume's normalisation: its robust percentiles and fill value, from a subsample.

    Parameters
    ----------
    volume : array-like or Volume, shape (Z, Y, X)
    percentiles : (2,) float
        The percentiles mapped to 0 and 1.
    fill : "auto", float or None
        The fill value: ``"auto"`` finds it (:func:`find_fill`), a number is taken as given,
        None means the scan has none.

    Returns
    -------
    IntensityLevels
        The percentiles leave the fill value out. A constant volume gets ``hi = lo + 1`` so
        that normalising it cannot divide by zero.
    """
    values = sample_voxels(volume)
    if fill == "auto":
        fill = find_fill(values)
    elif fill is not None:
        fill = float(fill)
    if fill is not None and (values != fill).any():
        values = values[values != fill]
    lo, hi = (float(v) for v in np.percentile(values.astype(np.float64), percentiles))
    if not hi > lo:
        hi = lo + 1.0
    return IntensityLevels(lo, hi, fill)


def robust_range(volume: Any, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> tuple[float, float]:
    """The (low, high) intensity percentiles of a volume, without its fill value."""
    lo, hi, _ = intensity_levels(volume, percentiles)
    return lo, hi


def find_fill(values: np.ndarray) -> float | None:
    """The fill value of a sample of a scan's voxels, or None.

    A fill value is the sample's minimum, covering at least :data:`FILL_MIN_FRACTION` of it,
    with at most :data:`FILL_MAX_NEAR` of the other voxels within :data:`FILL_GAP` of the
    range (to their 99.5th percentile) above it: a constant well below the voids and their
    noise. Voids clipped to the minimum keep their noise right above it, so they are not
    a fill value. Bright values are never taken for fill (a saturated current collector
    also stands apart).

    Parameters
    ----------
    values : ndarray, shape (N,)
        Voxel values (:func:`sample_voxels`).
    """
    if values.size == 0 or not np.issubdtype(values.dtype, np.number):
        return None
    lowest = values.min()
    at = values == lowest
    if at.mean() < FILL_MIN_FRACTION or at.all():
        return None
    rest = values[~at].astype(np.float64)
    span = float(np.percentile(rest, 99.5)) - float(lowest)
    near = np.count_nonzero(rest <= float(lowest) + FILL_GAP * span)
    return float(lowest) if near <= FILL_MAX_NEAR * rest.size else None


def fill_is_outside_view(volume: Any, fill: float, max_slices: int = 64) -> bool:
    """Whether ``fill`` holds the corners of the scan's slices, so it lies outside the field of view.

    A reconstruction circle, or padding all round, leaves the four corners of every slice at
    the fill value; voids clipped to the minimum hold some corners, not nearly all of them.

    Parameters
    ----------
    volume : array-like or Volume, shape (Z, Y, X)
    fill : float
        The scan's fill value.
    max_slices : int
        At most this many evenly spaced z-slices are read (their 2 x 2 corners only).
    """
    nz, ny, nx = (int(s) for s in volume.shape)
    zs = np.unique(np.linspace(0, nz - 1, min(nz, max_slices)).round().astype(int))
    corners = np.concatenate([np.asarray(volume[int(z), ::max(ny - 1, 1), ::max(nx - 1, 1)]).ravel()
                              for z in zs])
    return bool(np.mean(corners == fill) >= OUTSIDE_VIEW_CORNERS)


def few_grey_values(volume: Any, limit: int = FEW_GREY_VALUES) -> np.ndarray | None:
    """A volume's distinct values when it has at most ``limit`` of them, else None.

    Read from a subsample (up to 100,000 voxels of 16 evenly spaced z-slices): enough to
    catch a label map, a mask or a constant given in place of a scan, whose noise alone would
    show dozens of values in any sample (randomised 8-bit phantoms: 90 or more).

    Parameters
    ----------
    volume : array-like or Volume, shape (Z, Y, X)
    limit : int
        The most distinct values a volume may have to be reported.

    Returns
    -------
    ndarray, shape (N,) or None
        The sorted distinct values (N <= ``limit``; the fill value included), or None.
    """
    distinct = np.unique(sample_voxels(volume, max_voxels=100_000, max_slices=16))
    return distinct if distinct.size <= limit else None


def few_values_message(name: str, values: np.ndarray) -> str:
    """What :func:`few_grey_values` found, in words: ``name`` holds one value, or only a few
    and looks like a label map or a mask."""
    shown = ", ".join(f"{v:g}" for v in np.asarray(values, dtype=np.float64))
    if values.size == 1:
        return f"{name} holds one value ({shown}) in every voxel sampled: there is no contrast to find defects in"
    return (f"{name} holds only {values.size} distinct values ({shown}): it looks like a label map or a mask, "
            "not a greyscale scan")


def invert(values: Any) -> np.ndarray:
    """Grey values mirrored within their type: integers bitwise (uint16: x -> 65535 - x,
    int16: x -> -1 - x), floats negated. The order of values reverses and the robust
    percentiles swap, so a scan with bright voids and dark solid normalises like a usual one."""
    values = np.asarray(values)
    return np.negative(values) if values.dtype.kind == "f" else np.invert(values)


class InvertedGrey:
    """A lazy volume's data read through :func:`invert` (``inference.invert``).

    Parameters
    ----------
    data : array-like, shape (Z, Y, X)
        What a :class:`roidetect.volume.Volume` holds: sliced, it returns numpy arrays.
    """

    def __init__(self, data: Any) -> None:
        self._data = data
        self.shape = tuple(int(s) for s in data.shape)
        self.dtype = np.dtype(data.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        return invert(self._data[key])


def flip_contrast(volume: Any, fill: str | float | None = "auto") -> tuple[Any, float | None]:
    """A scan with bright voids and dark solid, read as a usual one, and its fill value.

    Parameters
    ----------
    volume : Volume
        The scan as stored (``predict --invert``, a dataset volume with ``"invert": true``).
    fill : "auto", float or None
        Its fill value in its own grey values: ``"auto"`` finds it (:func:`find_fill`) before
        the flip, since a fill below the dark phase would lie above everything after it.

    Returns
    -------
    (Volume, float or None)
        The volume with :class:`InvertedGrey` data (``details["inverted"]`` set), and the fill
        value flipped with it (None: the scan has none).
    """
    from dataclasses import replace

    if fill == "auto":
        fill = find_fill(sample_voxels(volume))
    if fill is not None:
        fill = float(invert(np.asarray(fill).astype(volume.dtype)))
    flipped = replace(volume, data=InvertedGrey(volume.data), details={**volume.details, "inverted": True})
    return flipped, fill


def normalise(block: np.ndarray, lo: float, hi: float, fill: float | None = None) -> np.ndarray:
    """Map intensities so that ``lo`` -> 0 and ``hi`` -> 1 (float32, not clipped); voxels
    equal to ``fill`` (the scan's fill value, if any) -> 0."""
    block = np.asarray(block)
    out = ((block.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32, copy=False)
    if fill is not None:
        out[block == fill] = 0.0
    return out
