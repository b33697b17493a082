"""Training and validation data for Lightning: patch streams and whole validation volumes.

Training draws class-balanced random patches, either from volumes held in memory (a
dataset folder) or from phantoms generated on the fly, so that every epoch is new. Each
epoch's stream is seeded by ``(seed, epoch, rank, worker)``: runs are reproducible, and
processes and workers never repeat each other. Validation hands over whole held-out
volumes, one at a time, for sliding-window inference.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from roidetect import labels as label_scheme
from roidetect.intensity import IntensityLevels, intensity_levels, normalise
from roidetect.learn.dataset import LoadedVolume
from roidetect.learn.region_weights import RegionWeighting, SparseWeights, region_weights
from roidetect.learn.sampling import PatchSampler, crop, index_classes

log = logging.getLogger(__name__)

TRAIN_SEEDS = 2**30
"""Training phantoms take seeds below this, validation phantoms at or above it: never the same."""


@dataclass(frozen=True)
class PhantomSettings:
    """How on-the-fly phantoms are made (arguments of :func:`roidetect.synth.make_phantom`)."""

    shape: tuple[int, int, int]
    voxel_size_um: tuple[float, float, float]
    preset: str
    randomise: bool
    patches_per_phantom: int
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Any :class:`roidetect.synth.SynthParams` field by name, applied after randomisation."""
    preset_weights: Mapping[str, float] | None = None
    """Relative weight of each preset when ``preset`` is ``any``; ``None``: equal."""


def make_phantom_volume(settings: PhantomSettings, seed: int, name: str, percentiles: Sequence[float]) -> LoadedVolume:
    """Generate one phantom and hold it as a :class:`LoadedVolume`."""
    from roidetect.synth import make_phantom

    phantom = make_phantom(settings.shape, settings.voxel_size_um, seed=seed, preset=settings.preset,
                           randomise=settings.randomise, preset_weights=settings.preset_weights,
                           **settings.overrides)
    image = np.asarray(phantom.image)
    spacing = tuple(float(s) for s in phantom.spacing_um)
    return LoadedVolume(name, image, np.asarray(phantom.labels, dtype=np.uint8), np.asarray(phantom.instances),
                        spacing, intensity_levels(image, tuple(percentiles)))


def make_phantom_volumes(settings: PhantomSettings, seeds: Sequence[int], names: Sequence[str],
                         percentiles: Sequence[float], workers: int = 0) -> list[LoadedVolume]:
    """Generate several phantoms, in up to ``workers`` processes (0 or 1: in this one).

    The volumes are the same whatever ``workers`` is: each depends on its seed alone. The
    processes start the platform's default way, as the data loader's workers do.
    """
    if workers <= 1 or len(seeds) <= 1:
        return [make_phantom_volume(settings, seed, name, percentiles) for seed, name in zip(seeds, names)]
    with ProcessPoolExecutor(max_workers=min(workers, len(seeds))) as pool:
        return list(pool.map(make_phantom_volume, repeat(settings), seeds, names, repeat(tuple(percentiles))))


@dataclass(frozen=True)
class _PatchSource:
    """One volume patches are cut from, with what sampling and the loss need of it."""

    volume: LoadedVolume
    index: dict[int, np.ndarray]
    """Sampled voxel positions per class (:func:`roidetect.learn.sampling.index_classes`)."""
    weights: SparseWeights | None
    """Small-region loss weights, or None without ``weighting``."""


class PatchStream(IterableDataset):
    """A fixed number of augmented training patches per epoch.

    Parameters
    ----------
    volumes : sequence of LoadedVolume
        Volumes to cut patches from (empty when ``phantoms`` is given).
    sampler : PatchSampler
    transform : callable
        MONAI augmentation (see :mod:`roidetect.learn.transforms`).
    patches : int
        Patches per epoch for this process, shared among the DataLoader workers in whole
        batches (rounded up to a multiple of ``batch_size``).
    batch_size : int
    seed, epoch, rank : int
        Seed the stream.
    phantoms : PhantomSettings, optional
        Generate a new phantom every ``patches_per_phantom`` patches instead of using
        ``volumes``.
    percentiles : (2,) float
        Normalisation percentiles for generated phantoms.
    max_indexed : int
        Voxel positions remembered per class and volume for sampling.
    weighting : RegionWeighting, optional
        Also yield per-voxel loss weights that favour small defect regions.

    Yields
    ------
    dict
        ``image`` float32 (1, Z, Y, X), ``label`` uint8 (1, Z, Y, X) and, with
        ``weighting``, ``weight`` float32 (1, Z, Y, X) (>= 1, see
        :mod:`roidetect.learn.region_weights`).
    """

    def __init__(self, volumes: Sequence[LoadedVolume], sampler: PatchSampler, transform: Any, patches: int,
                 batch_size: int, seed: int, epoch: int = 0, rank: int = 0, phantoms: PhantomSettings | None = None,
                 percentiles: Sequence[float] = (0.5, 99.5), max_indexed: int = 20_000,
                 weighting: RegionWeighting | None = None) -> None:
        super().__init__()
        self.sampler, self.transform = sampler, transform
        self.batch_size = max(1, int(batch_size))
        self.batches = max(1, -(-int(patches) // self.batch_size))
        self.seed, self.epoch, self.rank = int(seed), int(epoch), int(rank)
        self.phantoms, self.percentiles, self.max_indexed = phantoms, tuple(percentiles), max_indexed
        self.weighting = weighting
        rng = np.random.default_rng([self.seed, 0x1D])
        self.sources = [self._source(v, rng) for v in volumes]

    def __len__(self) -> int:
        return self.batches * self.batch_size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        count = self.batch_size * (self.batches // workers + (1 if worker < self.batches % workers else 0))
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        self.transform.set_random_state(seed=int(rng.integers(2**31)))
        for sources, n in self._groups(rng, count):
            for _ in range(n):
                yield self._patch(sources, rng)

    def _source(self, volume: LoadedVolume, rng: np.random.Generator) -> _PatchSource:
        weights = None if self.weighting is None else region_weights(volume.label, self.weighting)
        return _PatchSource(volume, index_classes(volume.label, rng, self.max_indexed), weights)

    def _groups(self, rng: np.random.Generator, count: int) -> Iterator[tuple[list[_PatchSource], int]]:
        if self.phantoms is None:
            yield self.sources, count
            return
        while count > 0:
            seed = int(rng.integers(TRAIN_SEEDS))
            volume = make_phantom_volume(self.phantoms, seed, f"phantom_{seed}", self.percentiles)
            n = min(count, self.phantoms.patches_per_phantom)
            yield [self._source(volume, rng)], n
            count -= n

    def _patch(self, sources: list[_PatchSource], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        which, start = self.sampler.sample([s.volume.label.shape for s in sources], [s.index for s in sources], rng)
        source, size = sources[which], self.sampler.patch_size
        image = normalise(crop(source.volume.image, start, size, None), *source.volume.intensity_range)
        label = crop(source.volume.label, start, size, label_scheme.IGNORE)
        patch = {"image": torch.from_numpy(np.ascontiguousarray(image))[None],
                 "label": torch.from_numpy(np.ascontiguousarray(label))[None]}
        if source.weights is not None:
            patch["weight"] = torch.from_numpy(source.weights.patch(start, size))[None]
        return self.transform(patch)


class ValidationVolumes(Dataset):
    """Whole held-out volumes, normalised, one item per volume.

    Items are dicts: ``image`` float32 tensor (1, Z, Y, X), ``label`` uint8 ndarray
    (Z, Y, X), ``instances`` ndarray or None, ``spacing_um``, ``id`` and ``index`` (the
    volume's position in the list).
    """

    def __init__(self, volumes: Sequence[LoadedVolume]) -> None:
        self.volumes = list(volumes)

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, i: int) -> dict[str, Any]:
        v = self.volumes[i]
        return {"image": torch.from_numpy(normalise(v.image, *v.intensity_range))[None], "label": v.label,
                "instances": v.instances, "spacing_um": v.spacing_um, "id": v.id, "index": i}


def first_item(batch: list[Any]) -> Any:
    """Collate function for batches of one whole volume: no stacking."""
    return batch[0]


class PatchDataModule(pl.LightningDataModule):
    """Patch streams for training, whole volumes for validation.

    The training stream is rebuilt every epoch (the trainer reloads it) with the epoch
    and the process rank in its seed.

    Parameters
    ----------
    train_volumes : sequence of LoadedVolume
        In-memory training volumes (empty with ``phantoms``).
    val_volumes : sequence of LoadedVolume
    sampler : PatchSampler
    augment : mapping
        Arguments of :func:`roidetect.learn.transforms.build_augmentation`.
    batch_size, num_workers, patches_per_epoch, seed : int
    phantoms : PhantomSettings, optional
    percentiles : (2,) float
    max_indexed : int
        Voxel positions remembered per class and volume for sampling.
    weighting : RegionWeighting, optional
        Small-region loss weights for the training patches.
    """

    def __init__(self, train_volumes: Sequence[LoadedVolume], val_volumes: Sequence[LoadedVolume],
                 sampler: PatchSampler, augment: Mapping[str, Any], batch_size: int, num_workers: int,
                 patches_per_epoch: int, seed: int, phantoms: PhantomSettings | None = None,
                 percentiles: Sequence[float] = (0.5, 99.5), max_indexed: int = 20_000,
                 weighting: RegionWeighting | None = None) -> None:
        super().__init__()
        from roidetect.learn.transforms import augmentation_from_config

        self.train_volumes, self.val_volumes = list(train_volumes), list(val_volumes)
        self.sampler, self.transform = sampler, augmentation_from_config(augment)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.patches_per_epoch, self.seed = int(patches_per_epoch), int(seed)
        self.phantoms, self.percentiles, self.max_indexed = phantoms, tuple(percentiles), int(max_indexed)
        self.weighting = weighting
        self._stream: PatchStream | None = None

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        rank = trainer.global_rank if trainer is not None else 0
        if self._stream is None:
            self._stream = PatchStream(self.train_volumes, self.sampler, self.transform, self.patches_per_epoch,
                                       self.batch_size, self.seed, phantoms=self.phantoms, percentiles=self.percentiles,
                                       max_indexed=self.max_indexed, weighting=self.weighting)
        self._stream.epoch, self._stream.rank = epoch, rank
        return DataLoader(self._stream, batch_size=self.batch_size, num_workers=self.num_workers,
                          persistent_workers=False, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(ValidationVolumes(self.val_volumes), batch_size=1, collate_fn=first_item, num_workers=0)


@dataclass
class TrainingData:
    """Everything the trainer needs from the ``data`` config.

    Attributes
    ----------
    datamodule : PatchDataModule
    fingerprint : dict
        Of the training volumes (for phantoms: of the validation phantoms).
    patch_size : (3,) int
    voxel_size_um : (3,) float
        The voxel size the model is trained at (median of the training volumes).
    summary : dict
        What was trained on, for the model card.
    """

    datamodule: PatchDataModule
    fingerprint: dict[str, Any]
    patch_size: tuple[int, int, int]
    voxel_size_um: list[float]
    summary: dict[str, Any]


def build_training_data(data: Mapping[str, Any], seed: int, divisor: Sequence[int]) -> TrainingData:
    """Read or generate the volumes, fingerprint them and build the data module.

    Parameters
    ----------
    data : mapping
        The resolved ``data`` config (``configs/data/*.yaml``).
    seed : int
    divisor : (3,) int
        Patch edges must be multiples of these (:func:`roidetect.learn.networks.input_divisor`).
    """
    from roidetect.errors import UserError
    from roidetect.learn.fingerprint import default_patch_size, fingerprint_arrays, summarise
    from roidetect.synth.presets import checked_preset_weights

    percentiles = tuple(float(p) for p in data["percentiles"])
    weighting = RegionWeighting.from_config(data.get("small_region_weight"))
    phantoms = None
    if data["kind"] == "folder":
        train_volumes, val_volumes, fingerprint, summary = _folder_volumes(data, seed, percentiles)
        # the shapes and voxel size of the volumes as loaded: the patch size follows them
        fingerprint = summarise({v.id: {**fingerprint["volumes"][v.id], "voxel_size_um": list(v.spacing_um),
                                        "shape_zyx": list(v.image.shape)} for v in train_volumes}, percentiles)
    elif data["kind"] == "synthetic":
        phantoms = PhantomSettings(tuple(int(s) for s in data["shape"]),  # type: ignore[arg-type]
                                   tuple(float(s) for s in data["voxel_size_um"]),  # type: ignore[arg-type]
                                   str(data["preset"]), bool(data["randomise"]), int(data["patches_per_phantom"]),
                                   dict(data.get("synth_overrides") or {}),
                                   checked_preset_weights(data.get("preset_weights")))  # before any phantom is made
        train_volumes = []
        if data.get("val_path"):  # at the phantoms' voxel size, which the package records
            val_volumes, _ = _dataset_volumes(data["val_path"], data, percentiles, validation=True,
                                              target_um=phantoms.voxel_size_um)
        else:
            count = int(data["val_phantoms"])  # made by as many processes as the loader will have workers
            val_volumes = make_phantom_volumes(phantoms, [TRAIN_SEEDS + seed * 1000 + i for i in range(count)],
                                               [f"val_phantom_{i}" for i in range(count)], percentiles,
                                               int(data["num_workers"]))
        fingerprint = fingerprint_arrays([(v.id, v.image, v.label, v.spacing_um) for v in val_volumes], percentiles)
        fingerprint["voxel_size_um"] = list(phantoms.voxel_size_um)
        fingerprint["shape_zyx"] = list(phantoms.shape)
        summary = {"kind": "synthetic", "preset": phantoms.preset, "shape_zyx": list(phantoms.shape),
                   "voxel_size_um": list(phantoms.voxel_size_um), "randomise": phantoms.randomise,
                   "synth_overrides": dict(phantoms.overrides), "preset_weights": phantoms.preset_weights,
                   "val_volumes": [v.id for v in val_volumes], "val_path": data.get("val_path")}
    else:
        raise UserError(f"data.kind={data['kind']!r}: choose folder or synthetic")
    if not val_volumes:
        raise UserError("no validation volumes: mark some volumes \"split\": \"val\", set data.val_fraction, "
                        "data.val_phantoms or data.val_path")
    if data["patch_size"] == "auto":
        patch = default_patch_size(fingerprint["voxel_size_um"], fingerprint["shape_zyx"], divisor,
                                   int(data["patch_voxels"]))
    else:
        patch = tuple(int(p) for p in data["patch_size"])
        if len(patch) != 3 or any(p % d for p, d in zip(patch, divisor)):
            raise UserError(f"data.patch_size={list(patch)}: give three edges (z, y, x), each a multiple of "
                            f"{list(divisor)} for this network, or auto")
    sampler = PatchSampler(patch, {label_scheme.class_id(k): float(v) for k, v in data["sampling"].items()},  # type: ignore[arg-type]
                           float(data["jitter"]))
    module = PatchDataModule(train_volumes, val_volumes, sampler, data["augment"], data["batch_size"],
                             data["num_workers"], data["patches_per_epoch"], seed, phantoms, percentiles,
                             int(data["max_indexed"]), weighting)
    summary.update(patch_size=list(patch), patches_per_epoch=int(data["patches_per_epoch"]),
                   batch_size=int(data["batch_size"]), sampling=dict(data["sampling"]),
                   small_region_weight=None if weighting is None else dict(data["small_region_weight"]))
    return TrainingData(module, fingerprint, patch, list(fingerprint["voxel_size_um"]), summary)  # type: ignore[arg-type]


def _folder_volumes(data: Mapping[str, Any], seed: int, percentiles: tuple[float, ...]) -> tuple[list[LoadedVolume], list[LoadedVolume], dict[str, Any], dict[str, Any]]:
    """Training and validation volumes of a dataset, all at the training volumes' median voxel
    size (:mod:`roidetect.learn.resample`), the dataset's fingerprint and the card's summary
    (``resampled_volumes``: the ids of the dataset's volumes that were resampled)."""
    from roidetect.learn.dataset import dataset_json_path, split_entries
    from roidetect.learn.resample import needs_resampling

    if data.get("val_path"):
        train_volumes, fingerprint = _dataset_volumes(data["path"], data, percentiles, validation=False)
        target = _median_voxel_size(fingerprint, train_volumes)
        val_volumes, _ = _dataset_volumes(data["val_path"], data, percentiles, validation=True, target_um=target)
        own = train_volumes
    else:
        spec, fingerprint = _fingerprinted(data["path"], data, percentiles)
        train_entries, val_entries = split_entries(spec.volumes, float(data["val_fraction"]), seed)
        target = _median_voxel_size(fingerprint, train_entries)
        train_volumes = _load_at(train_entries, spec, fingerprint, target)
        val_volumes = _load_at(val_entries, spec, fingerprint, target)
        own = train_volumes + val_volumes
    summary = {"kind": "folder", "path": str(data["path"]),
               "resolved_path": str(dataset_json_path(data["path"]).resolve()), "val_path": data.get("val_path"),
               "train_volumes": [v.id for v in train_volumes], "val_volumes": [v.id for v in val_volumes],
               "resampled_volumes": [v.id for v in own if target is not None
                                     and needs_resampling(fingerprint["volumes"][v.id]["voxel_size_um"], target)]}
    return train_volumes, val_volumes, fingerprint, summary


def _fingerprinted(path: str, data: Mapping[str, Any], percentiles: tuple[float, ...]) -> tuple[Any, dict[str, Any]]:
    from roidetect.learn.dataset import mostly_defects_warning, read_dataset
    from roidetect.learn.fingerprint import dataset_fingerprint

    spec = read_dataset(path)
    fingerprint = dataset_fingerprint(spec, percentiles, data.get("cache_dir"))
    warning = mostly_defects_warning({vid: facts["class_voxels"] for vid, facts in fingerprint["volumes"].items()})
    if warning:
        log.warning("%s: %s", spec.path, warning)
    return spec, fingerprint


def annotated_volumes(path: str | os.PathLike, percentiles: tuple[float, ...],
                      voxel_size_um: Sequence[float]) -> tuple[Any, list[LoadedVolume]]:
    """A dataset (``dataset.json`` or its folder), read once: its ``DatasetSpec`` and every
    volume not marked ``test``, in memory, at ``voxel_size_um`` (z, y, x; a model's) where
    its own differs by more than 5 % (:mod:`roidetect.learn.resample`).

    Each volume keeps the intensity range of its own ``percentiles``, as ``roidetect predict`` uses.
    """
    spec, fingerprint = _fingerprinted(str(path), {}, percentiles)
    return spec, _loaded(spec, fingerprint, validation=False, target_um=voxel_size_um)


def _dataset_volumes(path: str, data: Mapping[str, Any], percentiles: tuple[float, ...], validation: bool,
                     target_um: Sequence[float] | None = None) -> tuple[list[LoadedVolume], dict[str, Any]]:
    """Every volume of a dataset not marked ``test`` (see :func:`_loaded`), and its fingerprint."""
    spec, fingerprint = _fingerprinted(path, data, percentiles)
    return _loaded(spec, fingerprint, validation, target_um), fingerprint


def _loaded(spec: Any, fingerprint: dict[str, Any], validation: bool,
            target_um: Sequence[float] | None = None) -> list[LoadedVolume]:
    """The volumes of ``spec`` not marked ``test``; for validation only those marked ``val``, if any.

    All at ``target_um``, by default the median voxel size of these volumes."""
    entries = [e for e in spec.volumes if e.split != "test"]
    if validation and any(e.split == "val" for e in entries):
        entries = [e for e in entries if e.split == "val"]
    target = _median_voxel_size(fingerprint, entries) if target_um is None else tuple(float(t) for t in target_um)
    return _load_at(entries, spec, fingerprint, target)


def _median_voxel_size(fingerprint: dict[str, Any], entries: Sequence[Any]) -> tuple[float, float, float] | None:
    """Per-axis median voxel size (z, y, x), as fingerprinted, of ``entries`` (anything with the
    ``id`` of a fingerprinted volume); None for no entries."""
    if not entries:
        return None
    median = np.median([fingerprint["volumes"][e.id]["voxel_size_um"] for e in entries], axis=0)
    return (float(median[0]), float(median[1]), float(median[2]))


def _load_at(entries: Sequence[Any], spec: Any, fingerprint: dict[str, Any],
             target_um: tuple[float, float, float] | None) -> list[LoadedVolume]:
    """``entries`` loaded one at a time, each resampled to ``target_um`` where it differs;
    volumes too far from it, or more than the free memory holds, are refused before any is read."""
    from roidetect.learn.resample import at_voxel_size, check_voxel_sizes

    if target_um is None:
        return []
    check_voxel_sizes({e.id: fingerprint["volumes"][e.id]["voxel_size_um"] for e in entries}, target_um,
                      str(spec.path))
    _check_memory(entries, fingerprint, target_um, str(spec.path))
    return [at_voxel_size(_load(e, spec, fingerprint), target_um) for e in entries]


def _check_memory(entries: Sequence[Any], fingerprint: dict[str, Any], target_um: Sequence[float],
                  dataset: str) -> None:
    """Refuse volumes that would not fit the free memory once loaded (at ``target_um``).

    A volume holds its image as stored (float32 once resampled), its labels (1 byte per
    voxel) and its instances as stored, at its shape after resampling.
    """
    from roidetect.errors import UserError
    from roidetect.learn.dataset import open_image
    from roidetect.learn.resample import needs_resampling
    from roidetect.memory import available_memory_bytes
    from roidetect.volume import open_volume

    free = available_memory_bytes()
    if free is None:
        return
    sizes = {}
    for entry in entries:
        facts = fingerprint["volumes"][entry.id]
        image, _ = open_image(entry, fill=None)
        per_voxel = image.dtype.itemsize + 1
        if entry.instances is not None:
            per_voxel += open_volume(entry.instances, image.spacing_um).dtype.itemsize
        voxels = float(np.prod(facts["shape_zyx"], dtype=np.float64))
        if needs_resampling(facts["voxel_size_um"], target_um):
            voxels *= float(np.prod(np.asarray(facts["voxel_size_um"]) / np.asarray(target_um)))
            per_voxel += max(0, 4 - image.dtype.itemsize)
        sizes[entry.id] = voxels * per_voxel
    need = sum(sizes.values())
    if need > free:
        biggest = sorted(sizes.items(), key=lambda item: -item[1])[:3]
        largest = ", ".join(f"{vid} {size / 1e9:.1f} GB" for vid, size in biggest)
        raise UserError(f"{dataset}: its {len(sizes)} volume(s) need about {need / 1e9:.1f} GB of memory once loaded "
                        f"({largest}), and {free / 1e9:.1f} GB are free. Training holds its volumes in memory: crop "
                        "them to their annotated parts (with sparse annotations, the labelled slices and a margin), "
                        "use fewer, or train where more memory is free")


def _load(entry: Any, spec: Any, fingerprint: dict[str, Any]) -> LoadedVolume:
    from roidetect.learn.dataset import load_volume

    facts = fingerprint["volumes"][entry.id]
    lo, hi = facts["intensity_range"]
    return load_volume(entry, spec.label_map, IntensityLevels(float(lo), float(hi), facts["fill_value"]))
