"""Volumes on disk and in memory: lazy readers, voxel sizes, atomic writers.

A :class:`Volume` is a 3D greyscale array indexed ``(z, y, x)`` with a voxel size
``spacing_um`` and an ``origin_um`` in micrometres. Readers open files lazily (memory map,
page-by-page TIFF, HDF5 or Zarr chunks), so a scan larger than memory can be read block by
block with ``volume[z0:z1, y0:y1, x0:x1]``.

Supported inputs
----------------
- multi-page TIFF / BigTIFF, ImageJ hyperstacks and OME-TIFF, compressed or not (``.tif``,
  ``.tiff``, ``.btf``); the voxel size comes from the ImageJ or OME metadata. A TIFF whose
  OME metadata or resolution tags give the pixel but not the slice spacing has its pixel size
  offered in the message asking for the voxel size, not used;
- a folder of 2D TIFF slices, sorted by the numbers in their names (a warning when the names
  follow more than one pattern, or their numbers skip: other images or missing slices); a
  FIB-SEM slice's Thermo Fisher (FEI) pixel size is offered in the message asking for the
  voxel size, not used, as the slice spacing is not recorded;
- HDF5 (``file.h5:/group/dataset``); voxel size from the dataset attribute
  ``element_size_um`` (Fiji, ilastik), ``voxel_size_um`` or ``spacing_um``;
- Zarr arrays and OME-Zarr (NGFF 0.4 and 0.5) images (``image.zarr``, ``store.zarr:/path``);
- MRC / IMOD (``.mrc``, ``.rec``; memory-mapped), the format of IMOD, FIB-SEM slice-and-view
  exports and electron tomography; voxel size from the header's cell size (in angstrom). A
  cell size of 0 or of exactly 1 angstrom per voxel (what writers put when they know none)
  counts as no voxel size. The header's origin is not used;
- NIfTI-1/2 (``.nii`` memory-mapped, ``.nii.gz``), as nnU-Net and MONAI datasets hold them:
  stored x, y, z and read as z, y, x; voxel size from ``pixdim`` in the header's unit
  (micron, mm or metre; "unknown" counts as none). The affine's orientation is not applied;
- NumPy ``.npy`` (memory-mapped; no metadata, so the voxel size must be given).

Writers produce ImageJ-compatible TIFF (Fiji and napari show the right scale) and OME-Zarr
(NGFF 0.4), always through a temporary name and a rename.
"""

from __future__ import annotations

import json
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from roidetect.atomic import atomic_file
from roidetect.errors import UserError

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
MRC_SUFFIXES = (".mrc", ".rec")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)

_UNIT_TO_UM = {
    "um": 1.0, "µm": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "micrometre": 1.0, "\\u00b5m": 1.0, "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3, "m": 1e6, "meter": 1e6, "metre": 1e6,
    "cm": 1e4, "centimeter": 1e4, "a": 1e-4, "angstrom": 1e-4, "å": 1e-4,
}


class MissingVoxelSize(UserError):
    """The volume's file carries no voxel size and none was given (:func:`open_volume`)."""


class LazyArray(Protocol):
    """What a reader hands to :class:`Volume`: a shaped array that reads on slicing."""

    shape: tuple[int, ...]
    dtype: Any

    def __getitem__(self, key: Any) -> Any: ...


@dataclass(frozen=True)
class Volume:
    """A 3D scan or label map with its geometry.

    Parameters
    ----------
    data : array-like, shape (Z, Y, X)
        A numpy array or a lazy array (memory map, HDF5 dataset, Zarr array, TIFF page
        reader) that returns numpy arrays when sliced.
    spacing_um : (3,) tuple of float
        Voxel size along z, y, x in micrometres; all positive.
    origin_um : (3,) tuple of float
        Position of voxel (0, 0, 0)'s centre in micrometres.
    path : str or None
        Where the data came from, used in messages.
    format : str
        Short name of the file format (``"tiff"``, ``"ome-zarr"``, ``"memory"``, ...).
    """

    data: LazyArray
    spacing_um: tuple[float, float, float]
    origin_um: tuple[float, float, float] = (0.0, 0.0, 0.0)
    path: str | None = None
    format: str = "memory"
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        spacing_um: float | Sequence[float],
        origin_um: Sequence[float] = (0.0, 0.0, 0.0),
        name: str = "array",
    ) -> Volume:
        """Wrap an in-memory array, checking its shape and voxel size like a reader does."""
        array = np.asarray(array)
        _check_array(array, name)
        return cls(array, _as_spacing(spacing_um, name), _as_triplet(origin_um), None, "memory")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def physical_size_um(self) -> tuple[float, float, float]:
        """Extent of the volume along z, y, x in micrometres."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing_um))  # type: ignore[return-value]

    @property
    def name(self) -> str:
        return self.path or "array"

    def __getitem__(self, key: Any) -> np.ndarray:
        """Read a block as a numpy array; float blocks are checked for NaN and infinity."""
        try:
            block = np.asarray(self.data[key])
        except UserError:
            raise
        except Exception as exc:  # corrupt or truncated files fail here, not at open
            raise UserError(f"{self.name}: cannot read voxel data ({_short(exc)}); "
                            "the file may be truncated or corrupt") from exc
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            raise UserError(f"{self.name} contains NaN or infinite values; "
                            "replace them (e.g. with 0) before running roidetect")
        return block

    def numpy(self) -> np.ndarray:
        """Read the whole volume into memory."""
        return self[...]

    def with_spacing(self, spacing_um: float | Sequence[float]) -> Volume:
        """Return the same volume with another voxel size (the data are not resampled)."""
        return replace(self, spacing_um=_as_spacing(spacing_um, self.name))

    def crop(self, box: tuple[slice, slice, slice]) -> Volume:
        """A box of the volume, read lazily through it, placed where it lies (``origin_um``).

        Parameters
        ----------
        box : (3,) slices
            ``slice(start, stop)`` along z, y, x in voxels, within the shape (:func:`parse_region`).
        """
        start = tuple(int(b.start) for b in box)
        origin = tuple(o + i * s for o, i, s in zip(self.origin_um, start, self.spacing_um))
        return replace(self, data=_Box(self.data, box), origin_um=origin)  # type: ignore[arg-type]


class _Box:
    """A box of a lazy array (``Volume.crop``); keys are slices with positive steps or integers."""

    def __init__(self, data: LazyArray, box: tuple[slice, slice, slice]) -> None:
        self._data = data
        self._start = tuple(int(b.start) for b in box)
        self.shape = tuple(int(b.stop) - int(b.start) for b in box)
        self.dtype = np.dtype(data.dtype)

    def __getitem__(self, key: Any) -> Any:
        inner: list[Any] = []
        for k, start, n in zip(_expand_key(key, len(self.shape)), self._start, self.shape):
            if isinstance(k, slice):
                first, stop, step = k.indices(n)
                if step < 0:
                    raise IndexError("a cropped volume reads with positive steps only")
                inner.append(slice(start + first, start + max(first, stop), step))
            elif isinstance(k, (int, np.integer)) and -n <= int(k) < n:
                inner.append(start + int(k) % n)
            else:
                raise IndexError(f"index {k!r} of a cropped volume of shape {self.shape}")
        return self._data[tuple(inner)]


def as_predicted(volume: Volume, scan_info: Any) -> Volume:
    """The part of a whole-scan volume (the scan, a truth) that a prediction covers.

    Parameters
    ----------
    volume : Volume
        A volume on the scan's grid.
    scan_info : mapping
        The ``scan`` entry of the prediction's ``run.json``; ``region_zyx`` (``[start, stop]``
        voxels per axis) and ``scan_shape_zyx`` are there when ``predict --region`` ran.

    Returns
    -------
    Volume
        ``volume`` cropped to the region when it has the whole scan's shape, else unchanged.
    """
    region = scan_info.get("region_zyx") if isinstance(scan_info, dict) else None
    if not region or list(volume.shape) != list(scan_info.get("scan_shape_zyx") or []):
        return volume
    return volume.crop(tuple(slice(int(start), int(stop)) for start, stop in region))  # type: ignore[arg-type]


def parse_region(text: str, shape: Sequence[int]) -> tuple[slice, slice, slice]:
    """The box ``"z0:z1,y0:y1,x0:x1"`` (voxels, Python slice bounds) of a volume of ``shape``.

    A bound left out is the volume's edge and a negative one counts from the end, as in
    Python: ``":,100:612,-512:"``.

    Raises
    ------
    UserError
        Not three ``start:stop`` ranges of integers, or a range that is empty within ``shape``.
    """
    parts = str(text).replace(" ", "").split(",")
    if len(parts) != 3 or any(part.count(":") != 1 for part in parts):
        raise UserError(f"--region {text}: give three ranges z0:z1,y0:y1,x0:x1 in voxels, e.g. 0:128,:,256:")
    box = []
    for part, n, axis in zip(parts, shape, "zyx"):
        try:
            bounds = [int(b) if b else None for b in part.split(":")]
        except ValueError:
            raise UserError(f"--region {text}: {part!r} is not start:stop in whole voxels") from None
        if any(b is not None and not -int(n) <= b <= int(n) for b in bounds):
            raise UserError(f"--region {text}: {axis} range {part} reaches beyond the scan's {n} voxels along {axis}")
        start, stop, _ = slice(*bounds).indices(int(n))
        if stop <= start:
            raise UserError(f"--region {text}: {axis} range {part} holds no voxel of the scan's {n}")
        box.append(slice(start, stop))
    return box[0], box[1], box[2]


# ---------------------------------------------------------------------------- opening


def open_volume(path: str | os.PathLike, voxel_size_um: float | Sequence[float] | None = None) -> Volume:
    """Open a 3D volume lazily, from any supported format.

    Parameters
    ----------
    path : str or path
        File or folder; HDF5 and Zarr take an inner path after a colon:
        ``scan.h5:/exchange/data``.
    voxel_size_um : float or (3,) sequence of float, optional
        Voxel size in micrometres (one value for isotropic voxels, or z, y, x). It overrides
        the file's metadata; it is required when the file carries none.

    Returns
    -------
    Volume
        With lazy ``data`` of shape (Z, Y, X).

    Raises
    ------
    UserError
        The file does not exist, cannot be read, is not 3D, is empty, or (:class:`MissingVoxelSize`)
        has no voxel size and none was given.
    """
    file_path, inner = split_inner_path(str(path))
    if not file_path.exists():
        raise UserError(f"{file_path}: no such file or folder")
    try:
        volume = _open_by_format(file_path, inner)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path}: cannot be read as a volume ({_short(exc)})") from exc
    name = str(path)
    _check_array(volume.data, name)
    if voxel_size_um is not None:
        spacing = _as_spacing(voxel_size_um, name)
    elif volume.spacing_um is not None:
        spacing = _as_spacing(volume.spacing_um, name)
    else:
        raise MissingVoxelSize(f"{name} carries no voxel size in its metadata; "
                        "pass it with --voxel-size UM (one value, or three for z y x)"
                        + _voxel_size_hint(file_path, volume))
    return replace(volume, spacing_um=spacing, path=name)


def _voxel_size_hint(path: Path, volume: Volume) -> str:
    """What the file says of its voxel size although it gives none, for the message asking for
    ``--voxel-size``: a NIfTI header's pixdim without a unit, a FIB-SEM slice's Thermo Fisher
    (FEI) pixel size, OME metadata without a z size, or a TIFF's resolution tags; empty when
    there is nothing.

    Slice-and-view images record the pixel's width and height but not the slice spacing, and
    cross-sections imaged at the 52 degree tilt are foreshortened along y unless the
    instrument's tilt correction was on. A TIFF's resolution tags, too, give the pixel but no
    slice spacing. So the numbers are offered, not used.
    """
    if volume.format == "nifti":
        return _nifti_hint(path)
    if volume.format not in ("tiff", "imagej-tiff", "ome-tiff", "tiff-folder"):
        return ""
    import tifffile

    first = path / volume.details["first"] if volume.format == "tiff-folder" else path
    try:
        with tifffile.TiffFile(first) as tif:
            return _fei_hint(tif) or _ome_hint(tif) or _resolution_hint(tif)
    except (OSError, ValueError, ET.ParseError):
        return ""


def _fei_hint(tif: Any) -> str:
    """A FIB-SEM slice's Thermo Fisher (FEI) pixel size, as a hint for ``--voxel-size``."""
    try:
        scan = (tif.fei_metadata or {}).get("Scan") or {}
        width, height = float(scan["PixelWidth"]), float(scan["PixelHeight"])
    except (KeyError, TypeError, ValueError):
        return ""
    if not (width > 0 and height > 0):
        return ""
    x_um, y_um = width * 1e6, height * 1e6
    return (f"; its Thermo Fisher (FEI) metadata give pixels of {x_um:.4g} um (x) by {y_um:.4g} um (y) but no "
            f"slice spacing: pass --voxel-size SLICE_UM {y_um:.4g} {x_um:.4g}, with y divided by sin(52 deg) = 0.788 "
            "if the cross-sections were imaged at the 52 deg stage tilt without tilt correction")


def _ome_hint(tif: Any) -> str:
    """The pixel size of OME metadata that give y and x but no z, as a hint for ``--voxel-size``."""
    if not tif.is_ome:
        return ""
    _, y_um, x_um = _ome_physical_sizes(tif.ome_metadata)
    if y_um is None or x_um is None or not (y_um > 0 and x_um > 0):
        return ""
    return _pixel_hint("OME metadata", y_um, x_um, "no PhysicalSizeZ")


# Dots per inch that image programs write by default, which say nothing of the pixel.
_DEFAULT_DPI = (72.0, 96.0, 150.0, 300.0, 600.0, 1200.0, 2400.0)

# Micrometres per unit of the TIFF ResolutionUnit tag: 2 inch, 3 centimetre, and 4 and 5
# tifffile's millimetre and micrometre; 1 (none) has no unit.
_RESOLUTION_UNIT_UM = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}


def _resolution_hint(tif: Any) -> str:
    """The pixel size of a TIFF's resolution tags, as a hint for ``--voxel-size``: in the
    ImageJ metadata's unit where there is one, else in the ResolutionUnit tag's. Nothing for
    a resolution without a unit, or at a default dots-per-inch of image programs."""
    page = tif.pages.first
    yx = _resolution_um(page)
    if yx is None:
        return ""
    factor = _unit_factor((tif.imagej_metadata or {}).get("unit")) if tif.is_imagej else None
    if factor is None:
        unit_tag = page.tags.get("ResolutionUnit")
        unit = int(unit_tag.value) if unit_tag is not None else 2  # the TIFF default is inch
        factor = _RESOLUTION_UNIT_UM.get(unit)
        if factor is None or (unit == 2 and any(abs(1.0 / yx[1] - dpi) < 1e-6 for dpi in _DEFAULT_DPI)):
            return ""
    return _pixel_hint("TIFF resolution tags", yx[0] * factor, yx[1] * factor, "no slice spacing")


def _pixel_hint(source: str, y_um: float, x_um: float, lacking: str) -> str:
    """The hint for ``--voxel-size`` from a pixel size (um) that ``source`` gives without the
    slice spacing (``lacking`` says what is missing)."""
    return (f"; its {source} give pixels of {y_um:.4g} um (y) by {x_um:.4g} um (x) but {lacking}: "
            f"pass --voxel-size SLICE_UM {y_um:.4g} {x_um:.4g}, or one value if the voxels are cubic")


def _nifti_hint(path: Path) -> str:
    """What a NIfTI header without a unit gives as voxel size, for the message asking for one."""
    import nibabel

    x, y, z = (float(v) for v in nibabel.load(path).header.get_zooms()[:3])
    return (f"; its header gives pixdim {z:g} {y:g} {x:g} (z y x) with the unit 'unknown': pass those as "
            "--voxel-size if they are micrometres")


def split_inner_path(path: str) -> tuple[Path, str | None]:
    """Split ``'scan.h5:/a/b'`` into ``(Path('scan.h5'), '/a/b')``; no colon gives ``None``."""
    match = re.match(r"^(.*?\.(?:h5|hdf5|hdf|he5|zarr))(?::(.*))?$", path, flags=re.IGNORECASE)
    if match and match.group(2) is not None:
        return Path(match.group(1)), match.group(2) or "/"
    return Path(path), None


def _open_by_format(path: Path, inner: str | None) -> Volume:
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        return _open_hdf5(path, inner)
    if suffix == ".zarr" or (path.is_dir() and is_zarr(path)):
        return _open_zarr(path, inner)
    if inner is not None:
        raise UserError(f"{path}: an inner path ':{inner}' only applies to HDF5 and Zarr files")
    if path.is_dir():
        return _open_tiff_folder(path)
    if suffix in TIFF_SUFFIXES:
        return _open_tiff(path)
    if suffix in MRC_SUFFIXES:
        return _open_mrc(path)
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        return _open_nifti(path)
    if suffix == ".npy":
        return _open_npy(path)
    raise UserError(f"{path}: unsupported format {suffix or '(no suffix)'}; use TIFF, a folder "
                    "of TIFF slices, HDF5 (file.h5:/dataset), Zarr/OME-Zarr, MRC (.mrc, .rec), NIfTI (.nii, .nii.gz) "
                    "or .npy")


# TIFF --------------------------------------------------------------------------------


def _open_tiff(path: Path) -> Volume:
    import tifffile

    with _TiffWarnings() as warnings:
        try:
            tif = tifffile.TiffFile(path)
            series = tif.series[0]
            shape, axes = tuple(series.shape), series.axes
        except Exception as exc:
            raise UserError(f"{path}: not a readable TIFF ({_short(exc)}); "
                            "the file may be truncated or corrupt") from exc
    broken = [w for w in warnings.messages if any(sign in w for sign in _BROKEN_TIFF_SIGNS)]
    if broken:
        tif.close()
        raise UserError(f"{path}: not a readable TIFF ({broken[0][:200]}); the file may be truncated or corrupt")
    if len(shape) != 3:
        tif.close()
        _raise_not_3d(str(path), shape, axes)
    spacing = _tiff_spacing(tif)
    fmt = "ome-tiff" if tif.is_ome else "imagej-tiff" if tif.is_imagej else "tiff"
    compression = series.keyframe.compression
    details = {"axes": axes, "bigtiff": tif.is_bigtiff, "compression": getattr(compression, "name", str(compression)),
               "pages": len(series.pages)}
    offset = series.dataoffset
    if offset is not None and _fits_in_file(path, offset, shape, series.dtype):
        tif.close()
        data = np.memmap(path, dtype=series.dtype, mode="r", offset=offset, shape=shape)
        details["access"] = "memory map"
    else:
        data = _TiffPageStack(tif, series)
        details["access"] = "page by page"
    return Volume(data, spacing, (0.0, 0.0, 0.0), str(path), fmt, details)  # type: ignore[arg-type]


_BROKEN_TIFF_SIGNS = ("invalid page offset", "failed to reshape", "invalid tag", "corrupted")
"""tifffile warnings that mean the page chain or the declared shape is broken (a truncated or
corrupt file): tifffile then returns fewer pages than the file declares."""


class _TiffWarnings(logging.Handler):
    """Collects (and keeps off the terminal) the warnings tifffile logs while a file opens."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self._logger = logging.getLogger("tifffile")

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> _TiffWarnings:
        self._propagate = self._logger.propagate
        self._logger.addHandler(self)
        self._logger.propagate = False
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate = self._propagate


def _fits_in_file(path: Path, offset: int, shape: tuple[int, ...], dtype: Any) -> bool:
    return offset + int(np.prod(shape)) * np.dtype(dtype).itemsize <= path.stat().st_size


class _TiffPageStack:
    """Reads the z-slices of a TIFF series one page at a time (compressed or tiled files)."""

    def __init__(self, tif: Any, series: Any) -> None:
        self._tif = tif
        self._pages = series.pages
        self.shape = tuple(series.shape)
        self.dtype = np.dtype(series.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        zsel, rest = _split_key(key, self.shape)
        with self._tif.filehandle.lock:
            planes = [np.asarray(self._pages[int(z)].asarray())[rest] for z in zsel]
        return _stack(planes, zsel, self.shape, rest, self.dtype)


def _tiff_spacing(tif: Any) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) in um from OME metadata, or from ImageJ's unit and spacing with the
    resolution tags; None where the file does not give all three."""
    if tif.is_ome:
        return _ome_tiff_spacing(tif.ome_metadata)
    if not tif.is_imagej:
        return None
    meta = tif.imagej_metadata or {}
    unit = _unit_factor(meta.get("unit", ""))
    yx = _resolution_um(tif.pages.first)
    z = meta.get("spacing")
    if yx is None or unit is None or z is None:
        return None
    return (float(z) * unit, yx[0] * unit, yx[1] * unit)


def _resolution_um(page: Any) -> tuple[float, float] | None:
    """Pixel size (y, x) from the TIFF resolution tags, in the file's unit (None if unset)."""
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    x, y = _rational(tags["XResolution"].value), _rational(tags["YResolution"].value)
    if not (x > 0 and y > 0):  # unset (0/0, written by some programs) or meaningless
        return None
    return (1.0 / y, 1.0 / x)


def _rational(value: Any) -> float:
    """A TIFF RATIONAL (numerator, denominator) or a number as a float; NaN for a zero
    denominator."""
    if isinstance(value, tuple):
        return value[0] / value[1] if value[1] else float("nan")
    return float(value)


def _ome_tiff_spacing(xml: str | None) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) in um from OME-XML; None unless it gives all three."""
    z, y, x = _ome_physical_sizes(xml)
    return None if z is None or y is None or x is None else (z, y, x)


def _ome_physical_sizes(xml: str | None) -> tuple[float | None, float | None, float | None]:
    """``PhysicalSize{Z,Y,X}`` of the first ``Pixels`` element in um (micrometres where no unit is
    given, as OME's default); None for a size that is missing or in a unit of no length."""
    pixels = next((el for el in ET.fromstring(xml).iter() if el.tag.endswith("Pixels")), None) if xml else None
    if pixels is None:
        return (None, None, None)
    sizes = []
    for axis in ("Z", "Y", "X"):
        value = pixels.get(f"PhysicalSize{axis}")
        factor = _unit_factor(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        sizes.append(None if value is None or factor is None else float(value) * factor)
    return (sizes[0], sizes[1], sizes[2])


# folder of TIFF slices ---------------------------------------------------------------


def _open_tiff_folder(path: Path) -> Volume:
    import tifffile

    files = slice_files(path)
    if not files:
        raise UserError(f"{path}: folder holds no TIFF slices (*.tif, *.tiff)")
    _warn_about_slice_names(path, [p.name for p in files])
    try:
        with tifffile.TiffFile(files[0]) as tif:
            first = tif.series[0]
            plane_shape, dtype = tuple(first.shape), np.dtype(first.dtype)
            spacing = _tiff_spacing(tif)  # ImageJ/OME slices can carry all three sizes
    except Exception as exc:
        raise UserError(f"{files[0]}: not a readable TIFF ({_short(exc)})") from exc
    if len(plane_shape) != 2:
        raise UserError(f"{files[0]}: slices in a folder must be 2D greyscale images, this one has shape "
                        f"{plane_shape}")
    data = _TiffSliceFolder(files, plane_shape, dtype)
    return Volume(data, spacing, (0.0, 0.0, 0.0), str(path), "tiff-folder",  # type: ignore[arg-type]
                  {"slices": len(files), "first": files[0].name, "access": "slice by slice"})


class _TiffSliceFolder:
    """Reads z-slices from a sorted list of 2D TIFF files on demand."""

    def __init__(self, files: list[Path], plane_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._files = files
        self.shape = (len(files), *plane_shape)
        self.dtype = dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        import tifffile

        zsel, rest = _split_key(key, self.shape)
        planes = []
        for z in zsel:
            plane = tifffile.imread(self._files[int(z)])
            if plane.shape != self.shape[1:]:
                raise UserError(f"{self._files[int(z)]}: slice has shape {plane.shape}, the first slice "
                                f"has {self.shape[1:]}; all slices must match")
            if plane.dtype != self.dtype:  # e.g. slices re-saved as 8-bit: their grey values would not compare
                raise UserError(f"{self._files[int(z)]}: slice holds {plane.dtype} values, the first slice "
                                f"{self.dtype}; all slices must have one data type")
            planes.append(plane[rest])
        return _stack(planes, zsel, self.shape, rest, self.dtype)


def _warn_about_slice_names(folder: Path, names: list[str]) -> None:
    """Warn when a folder's slice names suggest two series or missing slices.

    Names are compared with their numbers replaced by ``#``: more than one pattern
    (``slice_#.tif`` beside ``mask_#.tif``) means other images are stacked in with the slices.
    Within one pattern, slice numbers that step unevenly (``57, 58, 60``) mean a slice is
    missing, so every slice after it sits one slice off in z. The slice number is the first
    number that differs between names (``slice_0001_z=0.0100um.tif``: 0001, not 0100).
    """
    patterns: dict[str, int] = {}
    for name in names:
        pattern = re.sub(r"\d+", "#", name)
        patterns[pattern] = patterns.get(pattern, 0) + 1
    if len(patterns) > 1:
        listing = ", ".join(f"{p} ({n})" for p, n in sorted(patterns.items(), key=lambda item: -item[1])[:4])
        log.warning("%s: the slices are named in %d patterns: %s; are other images in the folder? They are "
                    "stacked in as slices", folder, len(patterns), listing)
        return
    groups = [re.findall(r"\d+", name) for name in names]  # one pattern: as many numbers in every name
    varying = [i for i in range(len(groups[0])) if len({g[i] for g in groups}) > 1]
    if len(names) < 3 or not varying:
        return
    numbers = [int(g[varying[0]]) for g in groups]  # the number the names are sorted by
    steps = np.diff(numbers)
    usual = int(np.median(steps))
    jumps = np.flatnonzero(steps != usual)
    if usual > 0 and len(jumps):
        first = int(jumps[0])
        log.warning("%s: slice numbers step by %d but go from %d to %d%s; if slices are missing, the z positions "
                    "after a gap are off by the slices missing", folder, usual, numbers[first], numbers[first + 1],
                    f" (and {len(jumps) - 1} more uneven steps)" if len(jumps) > 1 else "")


def slice_files(folder: Path) -> list[Path]:
    """The TIFF slices of a folder (hidden files left out), sorted by the numbers in their names."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith(".")),
                  key=_natural_key)


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


# HDF5 --------------------------------------------------------------------------------


def _open_hdf5(path: Path, inner: str | None) -> Volume:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except Exception as exc:
        raise UserError(f"{path}: not a readable HDF5 file ({_short(exc)})") from exc
    datasets: list[str] = []
    handle.visititems(lambda name, obj: datasets.append("/" + name) if isinstance(obj, h5py.Dataset) else None)
    listing = ", ".join(datasets[:10]) or "none"
    if inner is None:
        handle.close()
        raise UserError(f"{path}: name the dataset to read, e.g. {path}:{datasets[0] if datasets else '/data'} "
                        f"(datasets in the file: {listing})")
    obj = handle.get(inner)
    if not isinstance(obj, h5py.Dataset):
        handle.close()
        what = "a group" if obj is not None else "not in the file"
        raise UserError(f"{path}:{inner} is {what}, not a dataset (datasets in the file: {listing})")
    spacing = _spacing_from_attrs(obj.attrs)
    details = {"dataset": inner, "chunks": obj.chunks, "compression": obj.compression, "access": "HDF5 chunks"}
    return Volume(obj, spacing, (0.0, 0.0, 0.0), f"{path}:{inner}", "hdf5", details)  # type: ignore[arg-type]


def _spacing_from_attrs(attrs: Any) -> tuple[float, float, float] | None:
    for key in ("element_size_um", "voxel_size_um", "spacing_um"):
        if key in attrs:
            value = np.atleast_1d(np.asarray(attrs[key], dtype=float))
            if value.size == 1:
                value = np.repeat(value, 3)
            if value.size == 3:
                return (float(value[0]), float(value[1]), float(value[2]))
    return None


# Zarr / OME-Zarr ---------------------------------------------------------------------


def is_zarr(path: Path) -> bool:
    """Whether a folder is a Zarr store or group (v2 or v3 markers), whatever its name."""
    return any((path / marker).exists() for marker in (".zarray", ".zgroup", "zarr.json"))


def _open_zarr(path: Path, inner: str | None) -> Volume:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
        if inner and inner.strip("/"):
            node = node[inner.strip("/")]
    except Exception as exc:
        raise UserError(f"{path}{':' + inner if inner else ''}: not a readable Zarr store ({_short(exc)})") from exc
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if multiscales:
        return _open_ome_zarr_image(path, node, multiscales[0])
    if not hasattr(node, "shape"):
        arrays = list(node.array_keys()) if hasattr(node, "array_keys") else []
        raise UserError(f"{path}: a Zarr group without OME multiscales metadata; name the array, "
                        f"e.g. {path}:/{arrays[0] if arrays else 'data'} (arrays: {', '.join(arrays) or 'none'})")
    return Volume(node, _spacing_from_attrs(attrs), (0.0, 0.0, 0.0), str(path), "zarr",  # type: ignore[arg-type]
                  {"chunks": node.chunks, "access": "Zarr chunks"})


def _open_ome_zarr_image(path: Path, group: Any, ms: dict[str, Any]) -> Volume:
    dataset = ms["datasets"][0]
    array = group[dataset["path"]]
    axes = [a["name"] if isinstance(a, dict) else str(a) for a in ms.get("axes", ["z", "y", "x"][-array.ndim:])]
    units = [a.get("unit") if isinstance(a, dict) else None for a in ms.get("axes", [{}] * array.ndim)]
    scale = np.ones(array.ndim)
    translation = np.zeros(array.ndim)
    for transforms in (dataset.get("coordinateTransformations", []), ms.get("coordinateTransformations", [])):
        for t in transforms:
            if t.get("type") == "scale":
                scale = scale * np.asarray(t["scale"], dtype=float)
            elif t.get("type") == "translation":
                translation = translation + np.asarray(t["translation"], dtype=float)
    spatial = [i for i, a in enumerate(axes) if a in ("z", "y", "x")]
    others = [i for i, a in enumerate(axes) if a not in ("z", "y", "x")]
    if len(spatial) != 3 or any(array.shape[i] != 1 for i in others):
        _raise_not_3d(str(path), tuple(array.shape), "".join(a.upper() for a in axes))
    data: Any = array
    if others:
        data = _SqueezedAxes(array, others)
    factors = [(_unit_factor(units[i]) if units[i] else 1.0) for i in spatial]
    if any(f is None for f in factors):
        raise UserError(f"{path}: unknown spatial unit in OME-Zarr axes {units}")
    spacing = tuple(float(scale[i] * f) for i, f in zip(spatial, factors))
    origin = tuple(float(translation[i] * f) for i, f in zip(spatial, factors))
    return Volume(data, spacing, origin, str(path), "ome-zarr",  # type: ignore[arg-type]
                  {"level": dataset["path"], "chunks": array.chunks, "access": "Zarr chunks",
                   "levels": len(ms["datasets"])})


class _SqueezedAxes:
    """View of a Zarr array with its singleton non-spatial axes (c, t) removed."""

    def __init__(self, array: Any, singleton_axes: list[int]) -> None:
        self._array = array
        self._axes = singleton_axes
        self.shape = tuple(s for i, s in enumerate(array.shape) if i not in singleton_axes)
        self.dtype = array.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            key = tuple(slice(None) for _ in self.shape)
        key = tuple(key) + (slice(None),) * (len(self.shape) - len(key))
        full: list[Any] = []
        it = iter(key)
        for i in range(self._array.ndim):
            full.append(0 if i in self._axes else next(it))
        return np.asarray(self._array[tuple(full)])


# MRC ---------------------------------------------------------------------------------


MRC_HEADER_BYTES = 1024
MRC_UNSET_ANGSTROM = (0.0, 1.0)
"""Voxel sizes (angstrom) that mean "unknown": 0 when the cell is unset, 1 when a writer copied
the voxel count into the cell size. No electrode scan has 0.1 nm voxels."""


def _open_mrc(path: Path) -> Volume:
    """Header with ``mrcfile``, voxel data as a read-only memory map of our own.

    mrcfile's own memory map closes when its file object is garbage collected, so the map the
    :class:`Volume` keeps is made here from the header's mode, shape and data offset.
    """
    import mrcfile
    from mrcfile.utils import data_dtype_from_header, data_shape_from_header

    try:
        with mrcfile.open(path, mode="r", header_only=True) as mrc:
            header = mrc.header.copy()
    except Exception as exc:
        raise UserError(f"{path}: not a readable MRC file ({_short(exc)})") from exc
    axes = (int(header.mapc), int(header.mapr), int(header.maps))
    if axes not in ((1, 2, 3), (0, 0, 0)):
        raise UserError(f"{path}: MRC axis order (mapc, mapr, maps) = {axes}; roidetect reads only the "
                        "standard order (1, 2, 3): x along columns, y along rows, z along sections")
    try:
        dtype = data_dtype_from_header(header)
    except Exception as exc:
        raise UserError(f"{path}: MRC mode {int(header.mode)} is not a greyscale data type roidetect reads "
                        "(modes 0, 1, 2, 6 and 12 are)") from exc
    if int(header.mode) == 0 and _imod_unsigned_bytes(header):
        dtype = np.dtype(np.uint8)
    shape = tuple(int(n) for n in data_shape_from_header(header))
    offset = MRC_HEADER_BYTES + int(header.nsymbt)
    if not _fits_in_file(path, offset, shape, dtype):
        raise UserError(f"{path}: the MRC header declares {' x '.join(map(str, shape))} voxels of {dtype.name}, "
                        "more than the file holds; the file may be truncated or corrupt")
    data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    details = {"mode": int(header.mode), "access": "memory map"}
    return Volume(data, _mrc_spacing(header), (0.0, 0.0, 0.0), str(path), "mrc", details)  # type: ignore[arg-type]


IMOD_STAMP = 1146047817
"""IMOD's mark (``imodStamp``, header bytes 152-155) that ``imodFlags`` (156-159) is meaningful."""


def _imod_unsigned_bytes(header: Any) -> bool:
    """True for IMOD's mode-0 files, whose bytes are unsigned unless flag bit 0 says signed.

    MRC2014 reads mode 0 as signed, which would turn every grey value above 127 of such a
    file (IMOD's default for 8-bit data) negative.
    """
    stamp, flags = np.frombuffer(bytes(header.extra2)[40:48], dtype=header.dtype["nx"])
    return int(stamp) == IMOD_STAMP and not int(flags) & 1


def _mrc_spacing(header: Any) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) in micrometres from the cell size, or None when it is unset."""
    counts = (int(header.mz), int(header.my), int(header.mx))
    cell = (float(header.cella.z), float(header.cella.y), float(header.cella.x))
    if min(counts) <= 0:
        return None
    angstrom = tuple(c / n for c, n in zip(cell, counts))
    if any(not np.isfinite(a) or a <= 0 or a in MRC_UNSET_ANGSTROM for a in angstrom):
        return None
    return tuple(a * _UNIT_TO_UM["angstrom"] for a in angstrom)  # type: ignore[return-value]


# NIfTI -------------------------------------------------------------------------------


NIFTI_GZIP_WARN_BYTES = 512 * 2**20
"""A ``.nii.gz`` scan larger than this (uncompressed) gets a warning: without an index, every
block read decompresses the file from its start."""


def _open_nifti(path: Path) -> Volume:
    import nibabel

    try:
        image = nibabel.load(path)
        proxy = image.dataobj
        shape = tuple(int(n) for n in proxy.shape)
    except Exception as exc:
        raise UserError(f"{path}: not a readable NIfTI file ({_short(exc)})") from exc
    extra = len(shape) - 3
    if extra > 0 and any(n != 1 for n in shape[3:]):
        _raise_not_3d(str(path), shape, "XYZ" + "T" * extra)
    if len(shape) < 3:
        _raise_not_3d(str(path), shape[::-1], "")
    compressed = path.name.lower().endswith(".gz")
    details = {"axes": "stored x, y, z; read as z, y, x", "access": "gzip stream" if compressed else "memory map"}
    if compressed and np.prod(shape) * np.dtype(proxy.dtype).itemsize > NIFTI_GZIP_WARN_BYTES:
        log.warning("%s: a compressed NIfTI file is decompressed from its start for every block read; for a scan "
                    "this large, gunzip it first (an uncompressed .nii is memory-mapped)", path)
    return Volume(_NiftiZYX(proxy, extra), _nifti_spacing(image.header), (0.0, 0.0, 0.0), str(path), "nifti",
                  details)  # type: ignore[arg-type]


def _nifti_spacing(header: Any) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) in micrometres from ``pixdim`` and the header's spatial unit, or
    None when the unit is "unknown" or a size is not positive."""
    factor = _unit_factor(header.get_xyzt_units()[0])  # "micron", "mm", "meter"; "unknown" gives None
    x, y, z = (float(v) for v in header.get_zooms()[:3])
    if factor is None or not min(x, y, z) > 0:
        return None
    return (z * factor, y * factor, x * factor)


class _NiftiZYX:
    """A NIfTI image's data, stored (x, y, z[, 1...]), read as (z, y, x) a block at a time.

    Data with a scale (``scl_slope``, ``scl_inter``) read as float32.
    """

    def __init__(self, proxy: Any, singleton_axes: int) -> None:
        self._proxy = proxy
        self._tail = (0,) * singleton_axes
        self.shape = tuple(int(n) for n in proxy.shape[:3])[::-1]
        scaled = any(np.isfinite(v) and v != unset for v, unset in ((proxy.slope, 1.0), (proxy.inter, 0.0)))
        self.dtype = np.dtype(np.float32) if scaled else np.dtype(proxy.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        block = np.asarray(self._proxy[_expand_key(key, 3)[::-1] + self._tail])
        return np.ascontiguousarray(block.T).astype(self.dtype, copy=False)


# NPY ---------------------------------------------------------------------------------


def _open_npy(path: Path) -> Volume:
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise UserError(f"{path}: not a readable .npy file ({_short(exc)})") from exc
    return Volume(data, None, (0.0, 0.0, 0.0), str(path), "npy", {"access": "memory map"})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- checks


def _check_array(data: Any, name: str) -> None:
    shape = tuple(int(s) for s in data.shape)
    if len(shape) == 2:
        raise UserError(f"{name} is a 2D image (shape {shape}); roidetect needs a 3D volume (z, y, x): "
                        "give a multi-page TIFF, a folder of slices, or a 3D array")
    if len(shape) != 3:
        _raise_not_3d(name, shape, "")
    if min(shape) == 0:
        raise UserError(f"{name} is empty (shape {shape})")
    kind = np.dtype(data.dtype).kind
    if kind not in "biuf":
        raise UserError(f"{name} has data type {data.dtype}; roidetect reads integer or float greyscale volumes")


def _raise_not_3d(name: str, shape: tuple[int, ...], axes: str) -> None:
    where = f" with axes {axes}" if axes else ""
    if len(shape) < 3:
        raise UserError(f"{name} has shape {shape}{where}; roidetect needs a 3D volume (z, y, x)")
    raise UserError(f"{name} has {len(shape)} dimensions (shape {shape}{where}); roidetect needs one 3D "
                    "greyscale volume (z, y, x): split channels or time points first")


def _as_triplet(value: float | Sequence[float]) -> tuple[float, float, float]:
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3:
        raise ValueError(f"expected one or three values, got {arr.size}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def _as_spacing(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    try:
        spacing = _as_triplet(value)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{name}: voxel size {value!r} is not one or three numbers in um") from exc
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise UserError(f"{name}: voxel size {spacing} um must be positive; pass --voxel-size UM")
    return spacing


def _unit_factor(unit: str | None) -> float | None:
    """Micrometres per ``unit`` (None for 'pixel' or unknown units)."""
    if unit is None:
        return None
    key = str(unit).strip().lower().replace("\u00b5", "µ")
    return _UNIT_TO_UM.get(key)


def _expand_key(key: Any, ndim: int) -> tuple[Any, ...]:
    """An index as one entry per axis: the Ellipsis expanded, missing axes taken whole."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1:]
    return tuple(key) + (slice(None),) * (ndim - len(key))


def _split_key(key: Any, shape: tuple[int, ...]) -> tuple[range | list[int], tuple[Any, ...]]:
    """Split an index into the z positions to read and the in-plane index."""
    key = _expand_key(key, len(shape))
    zkey, rest = key[0], key[1:]
    if isinstance(zkey, slice):
        return range(*zkey.indices(shape[0])), rest
    if isinstance(zkey, (int, np.integer)):
        return [int(zkey) % shape[0]], rest
    raise TypeError("z index must be an integer or a slice")


def _stack(planes: list[np.ndarray], zsel: Any, shape: tuple[int, ...], rest: tuple[Any, ...],
           dtype: np.dtype) -> np.ndarray:
    if isinstance(zsel, list):  # an integer z index drops the axis
        return planes[0]
    if planes:
        return np.stack(planes)
    plane_shape = np.empty(shape[1:], dtype=bool)[rest].shape
    return np.empty((0, *plane_shape), dtype=dtype)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


# ---------------------------------------------------------------------------- summaries


def value_range(volume: Volume, max_slices: int = 16) -> tuple[float, float, int, bool]:
    """Minimum and maximum over evenly spaced z-slices, without reading the whole volume.

    Returns
    -------
    lo, hi : float
        Range over the slices read (NaN and infinity excluded).
    slices_read : int
        How many z-slices were read (equal to Z when the volume has at most ``max_slices``).
    nonfinite : bool
        Whether any NaN or infinite value was seen in those slices.
    """
    nz = volume.shape[0]
    picks = np.unique(np.linspace(0, nz - 1, min(nz, max_slices)).round().astype(int))
    lo, hi, nonfinite = np.inf, -np.inf, False
    for z in picks:
        plane = np.asarray(volume.data[int(z)])
        if plane.dtype.kind == "f":
            finite = np.isfinite(plane)
            nonfinite |= not finite.all()
            plane = plane[finite]
        if plane.size:
            lo, hi = min(lo, float(plane.min())), max(hi, float(plane.max()))
    return lo, hi, len(picks), nonfinite


# ---------------------------------------------------------------------------- writing


def write_tiff(path: str | os.PathLike, data: np.ndarray | Volume, spacing_um: float | Sequence[float] | None = None,
               overwrite: bool = True, compression: str | None = None) -> Path:
    """Write a 3D array as a TIFF that Fiji, napari and roidetect read with its voxel size.

    uint8, uint16 and float32 arrays are written as ImageJ hyperstacks (``spacing`` and
    ``unit=um`` in the ImageJ metadata, x/y in the resolution tags); other types as OME-TIFF
    with ``PhysicalSize{X,Y,Z}`` in micrometres. Files over 4 GB become BigTIFF. Lazy
    volumes are written one z-slice at a time, so memory stays at one slice.

    Parameters
    ----------
    path : path
        Destination; written under a temporary name, then renamed.
    data : ndarray or Volume, shape (Z, Y, X)
    spacing_um : float or (3,) sequence, optional
        Voxel size (z, y, x) in micrometres; taken from ``data`` when it is a Volume.
    compression : str, optional
        tifffile compression name (e.g. ``"zlib"``); ImageJ reads only uncompressed files
        natively, so the default is none.
    """
    import tifffile

    if isinstance(data, Volume):
        spacing = data.spacing_um if spacing_um is None else _as_spacing(spacing_um, str(path))
        source: Any = data.data
    else:
        if spacing_um is None:
            raise ValueError("spacing_um is required for a plain array")
        spacing = _as_spacing(spacing_um, str(path))
        source = data
    _check_array(source, str(path))
    shape, dtype = tuple(source.shape), np.dtype(source.dtype)
    imagej = dtype in [np.dtype(d) for d in IMAGEJ_DTYPES]
    kwargs = _tiff_metadata_kwargs(spacing, shape, imagej)
    bigtiff = int(np.prod(shape)) * dtype.itemsize > 2**32 - 2**25
    pages = (np.asarray(source[z]) for z in range(shape[0]))
    with atomic_file(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, pages, shape=shape, dtype=dtype, bigtiff=bigtiff, photometric="minisblack",
                         compression=compression, **kwargs)
    return Path(path)


def create_tiff(path: str | os.PathLike, shape: Sequence[int], dtype: Any,
                spacing_um: float | Sequence[float]) -> np.memmap:
    """Create an uncompressed ImageJ TIFF and return it as a writable memory map.

    For writing large outputs block by block: fill the returned array, then ``flush()``
    and drop it. The caller owns atomicity (write it inside :func:`roidetect.atomic.atomic_dir`).
    ``dtype`` must be uint8, uint16 or float32.
    """
    import tifffile

    dtype = np.dtype(dtype)
    if dtype not in [np.dtype(d) for d in IMAGEJ_DTYPES]:
        raise ValueError(f"create_tiff writes ImageJ types only (uint8, uint16, float32), not {dtype}")
    spacing = _as_spacing(spacing_um, str(path))
    kwargs = _tiff_metadata_kwargs(spacing, tuple(shape), True)
    bigtiff = int(np.prod(shape)) * dtype.itemsize > 2**32 - 2**25
    return tifffile.memmap(path, shape=tuple(shape), dtype=dtype, bigtiff=bigtiff, photometric="minisblack", **kwargs)


def _tiff_metadata_kwargs(spacing: tuple[float, float, float], shape: tuple[int, ...], imagej: bool) -> dict[str, Any]:
    z, y, x = spacing
    resolution = (1.0 / x, 1.0 / y)
    if imagej:
        return {"imagej": True, "resolution": resolution,
                "metadata": {"spacing": z, "unit": "um", "axes": "ZYX"}}
    return {"ome": True, "resolution": resolution, "resolutionunit": "NONE",
            "metadata": {"axes": "ZYX", "PhysicalSizeX": x, "PhysicalSizeXUnit": "µm",
                         "PhysicalSizeY": y, "PhysicalSizeYUnit": "µm",
                         "PhysicalSizeZ": z, "PhysicalSizeZUnit": "µm"}}


def _zarr_format_kwargs() -> dict[str, Any]:
    import zarr

    return {"zarr_format": 2} if int(zarr.__version__.split(".")[0]) >= 3 else {}


def create_ome_zarr(path: str | os.PathLike, shape: Sequence[int], dtype: Any, spacing_um: float | Sequence[float],
                    origin_um: Sequence[float] = (0.0, 0.0, 0.0), chunks: Sequence[int] | None = None,
                    channel_names: Sequence[str] | None = None) -> Any:
    """Create an empty single-scale OME-Zarr (NGFF 0.4) image and return its writable array.

    Parameters
    ----------
    shape : (Z, Y, X) or (C, Z, Y, X)
        With channels, ``channel_names`` names them (napari shows them as layers).
    spacing_um, origin_um : voxel size and origin along z, y, x in micrometres.
    chunks : sequence of int, optional
        Chunk shape; defaults to 64 x 256 x 256 voxels (one channel per chunk).

    The caller owns atomicity (write it inside :func:`roidetect.atomic.atomic_dir`).
    """
    import zarr

    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"OME-Zarr images here are (Z, Y, X) or (C, Z, Y, X), got shape {shape}")
    spacing = _as_spacing(spacing_um, str(path))
    origin = _as_triplet(origin_um)
    spatial = shape[-3:]
    if chunks is None:
        chunks = tuple(min(n, c) for n, c in zip(spatial, (64, 256, 256)))
        if len(shape) == 4:
            chunks = (1, *chunks)
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    scale, translation = list(spacing), list(origin)
    if len(shape) == 4:
        axes = [{"name": "c", "type": "channel"}, *axes]
        scale, translation = [1.0, *scale], [0.0, *translation]
    fmt = _zarr_format_kwargs()
    group = zarr.open_group(str(path), mode="w", **fmt)
    attrs: dict[str, Any] = {"multiscales": [{
        "version": "0.4", "name": Path(path).name, "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": scale}, {"type": "translation", "translation": translation}]}],
    }]}
    if len(shape) == 4:
        names = list(channel_names) if channel_names is not None else [f"channel {i}" for i in range(shape[0])]
        attrs["omero"] = {"channels": [{"label": n, "active": True} for n in names]}
    group.attrs.update(attrs)
    return zarr.open_array(str(Path(path) / "0"), mode="w", shape=shape, chunks=tuple(chunks),
                           dtype=np.dtype(dtype), fill_value=0, **fmt)


def write_ome_zarr(path: str | os.PathLike, data: np.ndarray, spacing_um: float | Sequence[float],
                   origin_um: Sequence[float] = (0.0, 0.0, 0.0), chunks: Sequence[int] | None = None,
                   channel_names: Sequence[str] | None = None, overwrite: bool = True) -> Path:
    """Write an in-memory (Z, Y, X) or (C, Z, Y, X) array as an OME-Zarr image, atomically."""
    with atomic_file(path, overwrite=overwrite) as tmp:
        array = create_ome_zarr(tmp, data.shape, data.dtype, spacing_um, origin_um, chunks, channel_names)
        array[...] = data
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, overwrite: bool = True) -> Path:
    """Write ``obj`` as indented JSON, atomically (numpy scalars and arrays are converted)."""
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    return Path(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
