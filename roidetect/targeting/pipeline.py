"""``suggest``: prediction folder in, sites folder out (what ``roidetect suggest`` runs)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from roidetect.targeting.export import write_plan
from roidetect.targeting.instrument import Instrument
from roidetect.targeting.params import TargetingParams, plain
from roidetect.targeting.plan import Plan, plan
from roidetect.targeting.prediction import read_prediction
from roidetect.targeting.registration import fit_registration, read_fiducials

log = logging.getLogger(__name__)


def suggest(pred_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: Mapping[str, Any] | None = None, *,
            fiducials: str | os.PathLike | None = None, overwrite: bool = False, quiet: bool = False) -> Plan:
    """Plan milling sites for a prediction folder and write the sites folder.

    Parameters
    ----------
    pred_dir : path
        Output folder of ``roidetect predict`` (``detections.csv``, ``surface.tif``, ``run.json``).
    out_dir : path
        Folder to write: ``sites.csv``, ``candidates.csv``, ``sites.json``,
        ``milling_protocol.yaml`` and ``run.json``.
    cfg : mapping, optional
        The composed ``suggest`` config (``instrument`` and ``targeting`` nodes); defaults to
        ``roidetect.config.compose_config("suggest")``.
    fiducials : path, optional
        Fiducials CSV; adds stage coordinates and predicted TRE.
    overwrite : bool
        Replace an existing non-empty ``out_dir``.
    quiet : bool
        No progress bar.

    Returns
    -------
    Plan
    """
    from roidetect.atomic import atomic_dir, check_output_dir, check_outside_inputs
    from roidetect.runlog import RunLog

    if cfg is None:
        from roidetect.config import compose_config

        cfg = compose_config("suggest")
    check_output_dir(out_dir, overwrite)
    check_outside_inputs(out_dir, [pred_dir, fiducials])
    run = RunLog("suggest", parameters=plain(cfg))
    with run.step("read"):
        prediction = read_prediction(pred_dir)
        instrument = Instrument.from_config(cfg["instrument"])
        params = TargetingParams.from_config(cfg["targeting"])
        registration = None
        if fiducials is not None:
            scan, stage, names = read_fiducials(fiducials)
            registration = fit_registration(scan, stage, params.registration_kind, names)
    for role, path in prediction.files.items():
        run.add_input(role, path)
    if fiducials is not None:
        run.add_input("fiducials", fiducials)
    with run.step("plan"):
        result = plan(prediction.detections, prediction.surface, prediction.geometry, instrument, params,
                      registration, quiet=quiet)
    with atomic_dir(out_dir, overwrite) as tmp:
        with run.step("write"):
            write_plan(tmp, result, instrument)
        run.record(mode=result.mode, instrument=instrument.name, summary=result.summary,
                   registration=registration.to_dict() if registration is not None else None)
        run.write(tmp)
    summary = result.summary
    log.info("%d site(s) from %d candidate(s), %.1f of %.1f h; wrote %s", summary["sites"], summary["candidates"],
             summary["minutes_total"] / 60, summary["budget_minutes"] / 60, out_dir)
    for warning in summary["warnings"]:
        log.warning("warning: %s", warning)
    return result
