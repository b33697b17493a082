"""Ensembles of trained model packages, calibrated as one model (``roidetect ensemble``).

Networks trained with different seeds or on different hardware make different mistakes, and
averaging their softmax probabilities cancels part of them (nnU-Net ships its five folds
this way). An ensemble package holds the members' weights (``members.{i}.*``) and a card
whose ``network`` is :class:`roidetect.learn.networks.Ensemble`; everything downstream
(``predict``, ``--tta``, ``calibrate``, ``evaluate``) runs it like any other package. Its
inference costs the sum of its members'.

The averaged probabilities are smoother than any member's, so the members' score
calibrations and ``min_score`` do not carry over: the ensemble is calibrated afresh, plainly
and for TTA, on annotated volumes (:func:`roidetect.learn.final_validation.calibrate_package`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from roidetect.errors import UserError

log = logging.getLogger(__name__)

MATCHING_KEYS = ("classes", "voxel_size_um", "normalisation", "patch_size")
"""Card entries every member must share: they fix what the members' outputs mean."""


def ensemble_package(models: Sequence[str], out: str | Path, data: str | Path, name: str | None = None,
                     device: str = "auto", overwrite: bool = False, progress: bool = True,
                     overlap: float | None = None) -> dict[str, Any]:
    """Combine model packages into one ensemble package, calibrated on ``data``.

    Parameters
    ----------
    models : sequence of str
        Two or more model package folders or shipped model names (an ensemble member may
        itself be an ensemble).
    out : path
        The new package folder.
    data : path
        Annotated volumes to calibrate on: a ``dataset.json`` or its folder
        (:mod:`roidetect.learn.dataset`); volumes marked ``test`` are left out.
    name : str, optional
        The new card's ``name`` (default: the members' names joined by ``+``).
    device, overwrite, progress, overlap
        As :func:`roidetect.learn.final_validation.calibrate_package`; ``overlap`` replaces
        the first member's ``sliding_window.overlap``.

    Returns
    -------
    dict
        The new card.

    Raises
    ------
    UserError
        Fewer than two models, members whose cards differ in :data:`MATCHING_KEYS`, an
        ``out`` that is or holds a member or a file of ``data``, or any error of loading a
        package or calibrating.
    """
    from roidetect.atomic import check_output_dir, check_outside_inputs
    from roidetect.learn.bundle import load_package, save_package
    from roidetect.learn.final_validation import calibrate_package
    from roidetect.learn.networks import Ensemble

    if len(models) < 2:
        raise UserError("an ensemble needs at least two models")
    check_output_dir(out, overwrite)
    packages = [load_package(model, "cpu") for model in models]
    check_outside_inputs(out, [package.path for package in packages])  # --data's files: calibrate_package
    card = ensemble_card(packages, [str(model) for model in models], name)
    network = Ensemble([package.network for package in packages])
    with tempfile.TemporaryDirectory(prefix="roidetect-ensemble-") as staging:
        save_package(staging, network, card)
        log.info("ensemble of %d models; calibrating it on %s", len(packages), data)
        return calibrate_package(staging, out, device=device, overwrite=overwrite, progress=progress, data=data,
                                 overlap=overlap)


def ensemble_card(packages: Sequence[Any], sources: Sequence[str], name: str | None = None) -> dict[str, Any]:
    """The uncalibrated card of an ensemble of loaded packages (:class:`roidetect.learn.bundle.ModelPackage`).

    The shared entries come from the first member, as do ``sliding_window`` (completed
    with :data:`roidetect.learn.bundle.DEFAULT_SLIDING_WINDOW`) and the detection
    thresholds (``min_score`` is refitted by calibration). ``ensemble.members`` records
    each member's name, ``source`` (the folder or shipped name as given, so a shared
    card carries no local absolute path), its weights' sha256 and its own ``training`` and
    ``metrics``.
    """
    from roidetect.learn.bundle import WEIGHTS, sliding_window_of
    from roidetect.learn.networks import ENSEMBLE
    from roidetect.runlog import library_versions, sha256_of

    first = packages[0].card
    for package in packages[1:]:
        for key in MATCHING_KEYS:
            if package.card[key] != first[key]:
                raise UserError(f"{package.path}: card.json {key} {package.card[key]!r} differs from "
                                f"{first[key]!r} in {packages[0].path}; ensemble members must share "
                                f"{', '.join(MATCHING_KEYS)}")
    members = [{"name": p.card["name"], "source": source, "weights_sha256": sha256_of(p.path / WEIGHTS),
                "training": p.card.get("training", {}), "metrics": p.card.get("metrics", {})}
               for p, source in zip(packages, sources)]
    return {"name": name or "+".join(p.card["name"] for p in packages),
            **{key: first[key] for key in MATCHING_KEYS},
            "network": {"class": ENSEMBLE, "args": {"members": [p.card["network"] for p in packages]}},
            "sliding_window": sliding_window_of(first, packages[0].path),
            "detection": first.get("detection", {}),
            "ensemble": {"members": members,
                         "combination": "mean of the members' softmax probabilities"},
            "versions": library_versions()}
