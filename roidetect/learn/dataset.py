"""Training datasets on disk: reading ``dataset.json`` and loading its volumes.

A dataset is a folder (or any place) with a ``dataset.json`` listing image/label volume
pairs with their voxel sizes; the format is documented in ``docs/architecture.md`` and, for
users exporting labels from other tools, in ``docs/training.md``. This module only reads
files (it never imports torch) and never modifies them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from roidetect import labels as label_scheme
from roidetect.errors import UserError
from roidetect.intensity import IntensityLevels, few_grey_values, few_values_message

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class VolumeEntry:
    """One image/label pair of a dataset; paths are absolute (HDF5/Zarr may carry ``:inner``)."""

    id: str
    image: str
    label: str
    instances: str | None = None
    voxel_size_um: tuple[float, float, float] | None = None
    split: str | None = None
    invert: bool = False
    """The image shows voids bright and solid dark; it is read flipped (:func:`open_image`)."""


@dataclass(frozen=True)
class DatasetSpec:
    """The content of a ``dataset.json``."""

    path: Path
    name: str
    classes: dict[int, str]
    ignore_label: int
    volumes: tuple[VolumeEntry, ...]
    generator: dict[str, Any] | None = None
    label_map: dict[int, int] = field(default_factory=dict)
    """Raw label values to labels of the scheme (:func:`label_values_map`): the dataset's
    ``label_map`` with its ``ignore_label`` read as 255."""


@dataclass
class LoadedVolume:
    """A volume held in memory for training or validation.

    Attributes
    ----------
    id : str
    image : ndarray, shape (Z, Y, X)
        Raw intensities as stored (any numeric type).
    label : ndarray of uint8, shape (Z, Y, X)
        The label scheme of :mod:`roidetect.labels`; 255 marks voxels that were not annotated.
    instances : ndarray of int, shape (Z, Y, X), or None
        One id per true defect (0 = none), when the dataset provides it.
    spacing_um : (3,) tuple of float
        Voxel size (z, y, x) in micrometres.
    intensity_range : IntensityLevels
        The image's robust (low, high) percentiles and fill value used to normalise it
        (:func:`roidetect.intensity.normalise`).
    """

    id: str
    image: np.ndarray
    label: np.ndarray
    instances: np.ndarray | None
    spacing_um: tuple[float, float, float]
    intensity_range: IntensityLevels


def dataset_json_path(path: str | os.PathLike) -> Path:
    """``path`` itself if it is a file, else ``path/dataset.json``."""
    path = Path(path).expanduser()
    return path / label_scheme.DATASET_FILE if path.is_dir() else path


def read_dataset(path: str | os.PathLike) -> DatasetSpec:
    """Read and check a ``dataset.json`` (or the folder holding one).

    Raises
    ------
    UserError
        Missing file, invalid JSON, unknown format, classes that do not follow the label
        scheme, or volumes without ``id``/``image``/``label``.
    """
    json_path = dataset_json_path(path)
    if not json_path.is_file():
        raise UserError(f"{json_path}: no dataset.json here; write one as described in docs/training.md "
                        "or make one with 'roidetect synth'")
    try:
        raw = json.loads(json_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{json_path}: not valid JSON ({exc})") from exc
    if raw.get("format") != label_scheme.DATASET_FORMAT:
        raise UserError(f"{json_path}: 'format' must be {label_scheme.DATASET_FORMAT!r}, got {raw.get('format')!r}")
    classes = _check_classes(json_path, raw.get("classes", {str(k): v for k, v in label_scheme.CLASS_NAMES.items()}))
    volumes = raw.get("volumes")
    if not isinstance(volumes, list) or not volumes:
        raise UserError(f"{json_path}: 'volumes' must be a non-empty list")
    entries = tuple(_entry(json_path, i, v) for i, v in enumerate(volumes))
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise UserError(f"{json_path}: volume ids must be unique")
    ignore_label = int(raw.get("ignore_label", label_scheme.IGNORE))
    label_map = label_values_map(ignore_label, raw.get("label_map", {}), f"{json_path}: label_map")
    return DatasetSpec(path=json_path, name=str(raw.get("name", json_path.parent.name)), classes=classes,
                       ignore_label=ignore_label, volumes=entries, generator=raw.get("generator"),
                       label_map=label_map)


def label_values_map(ignore_label: int, label_map: Any = None, where: str = "label_map") -> dict[int, int]:
    """Raw label values to labels of the scheme: ``label_map`` (checked with
    :func:`roidetect.labels.check_label_map`) and ``ignore_label`` -> 255.

    Raises
    ------
    UserError
        A bad ``label_map``, or one that maps ``ignore_label`` to a class.
    """
    mapping = label_scheme.check_label_map(label_map or {}, where)
    if ignore_label != label_scheme.IGNORE:
        if mapping.get(ignore_label, label_scheme.IGNORE) != label_scheme.IGNORE:
            raise UserError(f"{where}: maps {ignore_label} to {mapping[ignore_label]}, but {ignore_label} is the "
                            "ignore label (voxels not annotated); drop one of the two")
        mapping = {ignore_label: label_scheme.IGNORE, **mapping}
    return mapping


def dataset_files(path: str | os.PathLike) -> list[Path]:
    """The files a dataset is made of: its dataset.json and every volume's image, label and
    instances (HDF5/Zarr inner paths stripped), which no output may replace."""
    from roidetect.volume import split_inner_path

    spec = read_dataset(path)
    volumes = [p for e in spec.volumes for p in (e.image, e.label, e.instances) if p]
    return [spec.path, *(split_inner_path(p)[0] for p in volumes)]


def _check_classes(json_path: Path, classes: Any) -> dict[int, str]:
    if not isinstance(classes, dict):
        raise UserError(f"{json_path}: 'classes' must map label ids to names")
    checked: dict[int, str] = {}
    for key, name in classes.items():
        try:
            cid = int(key)
        except ValueError:
            raise UserError(f"{json_path}: class id {key!r} is not an integer") from None
        if label_scheme.CLASS_NAMES.get(cid) != str(name).lower():
            expected = ", ".join(f'"{k}": "{v}"' for k, v in label_scheme.CLASS_NAMES.items())
            raise UserError(f"{json_path}: class {key}: {name!r} does not follow roidetect's label scheme "
                            f"({expected}); relabel the volumes to these ids")
        checked[cid] = str(name).lower()
    return checked


def _entry(json_path: Path, index: int, item: Any) -> VolumeEntry:
    where = f"{json_path}: volumes[{index}]"
    if not isinstance(item, dict) or not all(k in item for k in ("image", "label")):
        raise UserError(f"{where} needs at least 'image' and 'label'")
    split = item.get("split")
    if split is not None and split not in SPLITS:
        raise UserError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    voxel = item.get("voxel_size_um")
    if voxel is not None:
        values = [float(voxel)] * 3 if np.isscalar(voxel) else [float(v) for v in voxel]
        if len(values) != 3 or min(values) <= 0:
            raise UserError(f"{where}: voxel_size_um must be one positive value or three (z, y, x)")
        voxel = tuple(values)
    invert = item.get("invert", False)
    if not isinstance(invert, bool):
        raise UserError(f"{where}: invert must be true or false, got {invert!r}")
    base = json_path.parent
    default_id = Path(str(item["image"]).split(":")[0]).stem
    return VolumeEntry(
        id=str(item.get("id", default_id)),
        image=str(base / str(item["image"])),
        label=str(base / str(item["label"])),
        instances=str(base / str(item["instances"])) if item.get("instances") else None,
        voxel_size_um=voxel,  # type: ignore[arg-type]
        split=split,
        invert=invert,
    )


def split_entries(entries: Sequence[VolumeEntry], val_fraction: float, seed: int) -> tuple[list[VolumeEntry], list[VolumeEntry]]:
    """Divide volumes into training and validation volumes.

    Volumes marked ``"split": "val"`` validate and ``"test"`` are left out. When none is
    marked ``val``, a seeded random ``val_fraction`` of the others (at least one) is held
    out; a dataset of a single volume validates on that volume.

    Returns
    -------
    train, val : lists of VolumeEntry
    """
    usable = [e for e in entries if e.split != "test"]
    marked = [e for e in usable if e.split == "val"]
    if marked:
        return [e for e in usable if e.split != "val"], marked
    if not usable:
        raise UserError("the dataset has no volumes outside the 'test' split to train on")
    if len(usable) == 1:
        return list(usable), list(usable)
    n_val = min(len(usable) - 1, max(1, round(val_fraction * len(usable))))
    order = np.random.default_rng(seed).permutation(len(usable))
    val_ids = {usable[i].id for i in order[:n_val]}
    return [e for e in usable if e.id not in val_ids], [e for e in usable if e.id in val_ids]


def open_image(entry: VolumeEntry, fill: str | None = "auto") -> tuple[Any, str | float | None]:
    """An entry's image as training reads it (flipped where ``invert`` is set), and its fill
    value setting for :func:`roidetect.intensity.intensity_levels`: ``"auto"``, or the value
    found before the flip and flipped with it (None: none). ``fill=None`` skips looking for
    it, for a caller that has the levels already."""
    from roidetect.intensity import flip_contrast
    from roidetect.volume import open_volume

    image = open_volume(entry.image, entry.voxel_size_um)
    return flip_contrast(image, fill) if entry.invert else (image, fill)


def load_volume(entry: VolumeEntry, label_map: dict[int, int], intensity_range: IntensityLevels) -> LoadedVolume:
    """Read an entry's image, labels (and instances) into memory.

    Label values are read through the dataset's ``label_map`` (:attr:`DatasetSpec.label_map`:
    its ignore label becomes 255); values then outside the label scheme are an error. An image
    with so few distinct values that it is a label map or a mask
    (:func:`roidetect.intensity.few_grey_values`) gets a warning.
    """
    from roidetect.volume import open_volume

    image, _ = open_image(entry, fill=None)  # the levels come with intensity_range
    label = open_volume(entry.label, image.spacing_um)
    if label.shape != image.shape:
        raise UserError(f"{entry.label}: label shape {label.shape} differs from image shape {image.shape}")
    label_array = _as_label_array(label.numpy(), label_map, entry.label)
    image_array = image.numpy()
    few = few_grey_values(image_array)
    if few is not None:
        log.warning("volume %s: %s; the network would learn nothing it can use on scans: check the dataset's "
                    "\"image\" entries", entry.id, few_values_message(entry.image, few))
    instances = None
    if entry.instances is not None:
        inst = open_volume(entry.instances, image.spacing_um)
        if inst.shape != image.shape:
            raise UserError(f"{entry.instances}: shape {inst.shape} differs from image shape {image.shape}")
        instances = inst.numpy()
    return LoadedVolume(entry.id, image_array, label_array, instances, image.spacing_um, intensity_range)


def _as_label_array(values: np.ndarray, label_map: dict[int, int], name: str) -> np.ndarray:
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise UserError(f"{name}: labels must be integers, not fractional values")
    values = label_scheme.relabel(values.astype(np.int64, copy=False), label_map)
    check_label_values(values, name)
    return values.astype(np.uint8)


def check_label_values(values: np.ndarray, name: str) -> None:
    """Refuse label values (any shape, read through the dataset's label map) other than the
    scheme's classes and 255; fractional values count as other values.

    Raises
    ------
    UserError
        Naming up to 5 of the other values.
    """
    allowed = [*label_scheme.CLASS_NAMES, label_scheme.IGNORE]
    other = np.asarray(values)[~np.isin(values, allowed)]
    if other.size:
        shown = ", ".join(f"{v:g}" for v in np.unique(other)[:5].astype(np.float64))
        raise UserError(f"{name}: label values ({shown}) are not in the label scheme (0 background, 1 pore, "
                        "2 crack, 3 delamination, 255 not annotated); map them to it with a label map "
                        "(--label-map, or \"label_map\" in dataset.json: docs/training.md), or relabel them")


MOSTLY_DEFECTS = 0.5
"""Share of a volume's annotated voxels above which its labels are taken to be of another
scheme: defects fill a few per cent of an electrode, while labels whose background is not 0
(ilastik counts its classes from 1) turn the background into defects."""


def mostly_defects_warning(class_voxels: dict[str, dict[str, int]]) -> str | None:
    """A warning naming the volumes whose annotated voxels are mostly defects, or None.

    Parameters
    ----------
    class_voxels : dict
        Volume id -> voxel count per class name of :data:`roidetect.labels.CLASS_NAMES`
        (read through the label map), as in a fingerprint's ``volumes[id]["class_voxels"]``.
    """
    shares = {}
    for volume, counts in class_voxels.items():
        annotated = sum(int(counts.get(name, 0)) for name in label_scheme.CLASS_NAMES.values())
        defects = sum(int(counts.get(name, 0)) for name in label_scheme.DEFECT_NAMES)
        if annotated and defects > MOSTLY_DEFECTS * annotated:
            shares[volume] = defects / annotated
    if not shares:
        return None
    named = ", ".join(f"{volume} {100 * share:.0f} %" for volume, share in sorted(shares.items()))
    return (f"defects fill most of the annotated voxels of {len(shares)} volume(s) ({named}); they are usually a "
            "few per cent of a scan. Is background labelled 0? Labels of another scheme (ilastik counts its "
            "classes from 1) need a label map (--label-map, or \"label_map\" in dataset.json: docs/training.md)")


def class_voxel_counts(labels: np.ndarray) -> dict[str, int]:
    """Voxels per class name in ``labels`` (read through the label map; other values not counted)."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    found = dict(zip(values.tolist(), counts.tolist()))
    return {name: int(found.get(cid, 0)) for cid, name in label_scheme.CLASS_NAMES.items()}
