"""A ``dataset.json`` made from a folder of scans and a folder of their labels (``roidetect dataset``).

Scans and labels are paired by name, with what tools add to a name left out:

- the format's suffix (``.tif``, ``.ome.tif``, ``.nii.gz``, ``.mrc``, ``.zarr``, ...);
- nnU-Net's channel number on images (``case_001_0000.nii.gz`` is case ``case_001``);
- a word naming the role at the end of the name, after ``_``, ``-`` or ``.``: ``labels``,
  ``seg``, ``mask``, ``gt``, ... on labels and instances, ``image``, ``scan``, ``raw``, ... on
  images (``cell3_labels.tif`` goes with ``cell3.tif``).

A volume is a file of a format ``roidetect info`` reads, a Zarr store, or a sub-folder of TIFF
slices. An HDF5 file counts when it holds exactly one 3D dataset (written ``file.h5:/path``).
Every pair is checked before anything is written: that both open, that they have one shape,
that the voxel size is known, and that a sample of the label values (16 z-slices) holds only
what training accepts (:func:`roidetect.learn.dataset.check_label_values`). The paths written are relative to the
``dataset.json``, so the dataset can move with its folder. Nothing is read in full and no
input is changed.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from roidetect import labels as label_scheme
from roidetect.errors import UserError
from roidetect.learn.dataset import VolumeEntry, check_label_values, class_voxel_counts, mostly_defects_warning
from roidetect.volume import HDF5_SUFFIXES, MRC_SUFFIXES, NIFTI_SUFFIXES, TIFF_SUFFIXES, is_zarr, slice_files

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", *NIFTI_SUFFIXES, *TIFF_SUFFIXES, *MRC_SUFFIXES,
                   *HDF5_SUFFIXES, ".zarr", ".npy")
"""File name endings of volumes; compound ones (``.ome.tif``) before their last part."""
LABEL_WORDS = ("labels", "label", "labelled", "labeled", "seg", "segmentation", "segmented", "mask", "masks",
               "gt", "groundtruth", "truth", "annotation", "annotations", "annotated")
"""Words at the end of a label file's name that say what it is."""
INSTANCE_WORDS = ("instances", "instance", "ids")
"""Words at the end of an instances file's name that say what it is."""
IMAGE_WORDS = ("image", "images", "img", "scan", "raw", "data", "volume", "recon", "reconstruction", "tomo")
"""Words at the end of an image file's name that say what it is."""
_NNUNET_CHANNEL = re.compile(r"_\d{4}$")


def pair_folders(images: str | os.PathLike, labels: str | os.PathLike,
                 instances: str | os.PathLike | None = None) -> tuple[list[VolumeEntry], list[str]]:
    """Pair the volumes of ``images`` with those of ``labels`` (and ``instances``) by name.

    Returns
    -------
    pairs : list of VolumeEntry
        Sorted by id; absolute paths (HDF5: ``file.h5:/dataset``), no voxel size or split.
    unlabelled : list of str
        Images without labels, left out (a scan not annotated yet).

    Raises
    ------
    UserError
        A folder that is missing or holds no volume, two volumes of one folder with the same
        name once their suffixes are left out, or labels (or instances) without an image.
    """
    images, labels = Path(images), Path(labels)
    folders = {"image": images.resolve(), "label": labels.resolve(),
               "instances": None if instances is None else Path(instances).resolve()}
    shared = {role: [other for other, f in folders.items() if other != role and f == folders[role]]
              for role in folders}
    # in a folder shared with labels or instances, a name's last word tells what it is
    role_words = {"image": (), "label": LABEL_WORDS, "instances": INSTANCE_WORDS}
    found_images = _volumes_by_name(images, IMAGE_WORDS,
                                    exclude=tuple(w for r in shared["image"] for w in role_words[r]))
    found_labels = _volumes_by_name(labels, LABEL_WORDS, require="image" in shared["label"],
                                    exclude=INSTANCE_WORDS if "instances" in shared["label"] else ())
    found_images = _without_nnunet_channels(found_images, found_labels)
    found_instances = (_volumes_by_name(Path(instances), INSTANCE_WORDS + LABEL_WORDS, require=bool(shared["instances"]))
                       if instances is not None else {})
    for what, found in (("labels", found_labels), ("instances", found_instances)):
        orphans = sorted(set(found) - set(found_images))
        if orphans:
            raise UserError(f"{listing(found[o] for o in orphans)}: {what} without an image of the same name in "
                            f"{images}; rename them to match their scans (e.g. scan_a.tif and scan_a_labels.tif)")
    pairs = [VolumeEntry(key, found_images[key], found_labels[key], found_instances.get(key))
             for key in sorted(found_labels)]
    unlabelled = [found_images[key] for key in sorted(set(found_images) - set(found_labels))]
    return pairs, unlabelled


def dataset_entries(pairs: Sequence[VolumeEntry], dataset_dir: str | os.PathLike,
                    voxel_size_um: float | Sequence[float] | None = None,
                    label_map: dict[int, int] | None = None) -> list[dict[str, Any]]:
    """The ``volumes`` of a ``dataset.json`` in ``dataset_dir`` for checked ``pairs``.

    Parameters
    ----------
    pairs : sequence of VolumeEntry
        From :func:`pair_folders`.
    dataset_dir : path
        The folder the ``dataset.json`` will be in; paths are written relative to it.
    voxel_size_um : float or (3,) floats, optional
        Written into every entry (z, y, x); without it every image must carry its own.
    label_map : dict of int to int, optional
        Raw label values to labels of the scheme, the ignore label included
        (:func:`roidetect.learn.dataset.label_values_map`).

    Raises
    ------
    UserError
        Every problem found (the first 10 named): a volume that does not open, a label shape that
        differs from its image's, an image without a voxel size, labels with values outside
        the scheme.

    A label volume whose sampled annotated voxels are mostly defects gets a warning
    (:func:`roidetect.learn.dataset.mostly_defects_warning`).
    """
    from roidetect.intensity import sample_voxels
    from roidetect.volume import open_volume

    problems: list[str] = []
    entries = []
    class_voxels = {}
    for pair in pairs:
        try:
            image = open_volume(pair.image, voxel_size_um)
        except UserError as exc:
            problems.append(str(exc))
            continue
        for role in ("label", "instances"):
            path = getattr(pair, role)
            if path is None:
                continue
            try:
                other = open_volume(path, image.spacing_um)
            except UserError as exc:
                problems.append(str(exc))
                continue
            if other.shape != image.shape:
                problems.append(f"{path}: shape {other.shape} differs from its image's {image.shape} ({pair.image})")
            elif role == "label":
                try:
                    sample = label_scheme.relabel(sample_voxels(other, max_voxels=100_000, max_slices=16),
                                                  label_map or {})
                    check_label_values(sample, path)
                    class_voxels[pair.id] = class_voxel_counts(sample)
                except UserError as exc:
                    problems.append(str(exc))
        entry: dict[str, Any] = {"id": pair.id, "image": _relative(pair.image, dataset_dir),
                                 "label": _relative(pair.label, dataset_dir)}
        if pair.instances is not None:
            entry["instances"] = _relative(pair.instances, dataset_dir)
        if voxel_size_um is not None:
            entry["voxel_size_um"] = [float(v) for v in image.spacing_um]
        entries.append(entry)
    if problems:
        more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise UserError(f"{len(problems)} problem(s), nothing written: " + "; ".join(problems[:10]) + more)
    warning = mostly_defects_warning(class_voxels)
    if warning:
        log.warning("in a sample of 16 z-slices per label volume, %s", warning)
    return entries


def split_marks(ids: Sequence[str], val: str | None = None, test: str | None = None) -> dict[str, str]:
    """The ``split`` of each volume that ``val`` or ``test`` names.

    Parameters
    ----------
    ids : sequence of str
        The volume ids of the dataset.
    val, test : str, optional
        Comma-separated ids or shell patterns (``cell_c``, ``cell_*``).

    Returns
    -------
    dict
        Volume id -> ``"val"`` or ``"test"``; ids not named are absent (training volumes).

    Raises
    ------
    UserError
        A pattern that matches no volume, a volume named for both, or no volume left to train on.
    """
    marks: dict[str, str] = {}
    for split, text in (("val", val), ("test", test)):
        for pattern in (p.strip() for p in (text or "").split(",") if p.strip()):
            matched = fnmatch.filter(ids, pattern)
            if not matched:
                raise UserError(f"--{split} {pattern}: no volume has that name (volumes: {listing(ids)})")
            both = [i for i in matched if marks.get(i, split) != split]
            if both:
                raise UserError(f"--{split} {pattern}: {listing(both)} already in the other split; a volume "
                                "validates or tests, not both")
            marks.update(dict.fromkeys(matched, split))
    if ids and len(marks) == len(ids):
        raise UserError("--val and --test hold out every volume; leave at least one to train on")
    return marks


def dataset_document(entries: Sequence[dict[str, Any]], name: str, ignore_label: int = label_scheme.IGNORE,
                     label_map: dict[int, int] | None = None) -> dict[str, Any]:
    """The whole ``dataset.json`` for ``entries``; ``label_map`` (raw label values to labels of
    the scheme) is written when given."""
    document = {"format": label_scheme.DATASET_FORMAT, "name": name,
                "classes": {str(k): v for k, v in label_scheme.CLASS_NAMES.items()},
                "ignore_label": int(ignore_label)}
    if label_map:
        document["label_map"] = {str(raw): int(label) for raw, label in sorted(label_map.items())}
    return {**document, "volumes": list(entries)}


def _without_nnunet_channels(images: dict[str, str], labels: dict[str, str]) -> dict[str, str]:
    """``images`` with nnU-Net's channel number (``_0000``) left out of the names that only match
    a label without it (``case_001_0000`` for ``case_001``; ``vol_0000`` stays where a label has it)."""
    renamed = {}
    for key, path in images.items():
        bare = _NNUNET_CHANNEL.sub("", key)
        renamed[bare if key not in labels and bare in labels and bare not in images else key] = path
    return renamed


def _volumes_by_name(folder: Path, words: Sequence[str], require: bool = False,
                     exclude: Sequence[str] = ()) -> dict[str, str]:
    """The volumes in ``folder`` (not recursive), keyed by their name without suffix and role
    ``words``; with ``require`` only names ending in one of ``words``, and never those ending in
    one of ``exclude``."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    found: dict[str, str] = {}
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        volume = _as_volume(path)
        if volume is None:
            continue
        stem, key = _key(path.name, ()), _key(path.name, words)
        if (require and key == stem) or (exclude and _key(path.name, exclude) != stem):
            continue
        if key in found:
            raise UserError(f"{found[key]} and {volume}: two volumes named {key!r} once the suffixes are left out; "
                            "keep one of them in the folder")
        found[key] = volume
    if not found:
        raise UserError(f"{folder}: holds no volume (TIFF, a folder of TIFF slices, NIfTI, MRC, HDF5, Zarr or .npy)"
                        + (" whose name ends in " + ", ".join(words[:4]) + ", ..." if require else ""))
    return found


def _as_volume(path: Path) -> str | None:
    """``path`` as a volume ``open_volume`` reads (HDF5 with its one 3D dataset), or None."""
    name = path.name.lower()
    if name.startswith("."):
        return None
    if path.is_dir() and not name.endswith(".zarr") and not is_zarr(path):
        return str(path) if slice_files(path) else None
    if not name.endswith(VOLUME_SUFFIXES):
        return None
    if name.endswith(HDF5_SUFFIXES):
        return f"{path}:{_only_3d_dataset(path)}"
    return str(path)


def _only_3d_dataset(path: Path) -> str:
    """The path of the one 3D dataset in an HDF5 file."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            found: list[str] = []
            handle.visititems(lambda name, obj: found.append("/" + name)
                              if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None)
    except OSError as exc:
        raise UserError(f"{path}: not a readable HDF5 file ({exc})") from exc
    if len(found) != 1:
        raise UserError(f"{path}: holds {len(found)} 3D datasets ({', '.join(found[:5]) or 'none'}); a folder of "
                        "volumes needs one per file: list this one in dataset.json by hand (file.h5:/dataset)")
    return found[0]


def _key(name: str, words: Sequence[str]) -> str:
    """``name`` without its volume suffix and trailing role ``words``."""
    lower = name.lower()
    suffix = next((s for s in VOLUME_SUFFIXES if lower.endswith(s)), "")
    key = name[: len(name) - len(suffix)] if suffix else name
    if not words:
        return key
    pattern = re.compile(r"[_.\-](" + "|".join(map(re.escape, words)) + r")$", flags=re.IGNORECASE)
    while True:
        shorter = pattern.sub("", key)
        if shorter == key or not shorter:
            return key
        key = shorter


def _relative(path: str, folder: str | os.PathLike) -> str:
    """``path`` (HDF5 ``:inner`` kept) relative to ``folder``, with forward slashes."""
    from roidetect.volume import split_inner_path

    file, inner = split_inner_path(path)
    relative = Path(os.path.relpath(Path(file).resolve(), Path(folder).resolve())).as_posix()
    return relative if inner is None else f"{relative}:{inner}"


def listing(paths: Any) -> str:
    """The first 5 of ``paths`` joined, and how many more there are."""
    shown = list(paths)
    return ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")
