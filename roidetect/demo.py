"""``roidetect demo``: the whole pipeline on a phantom, in a few minutes on a laptop CPU.

Makes one annotated phantom scan (:mod:`roidetect.synth`), segments it with the shipped
default model (:func:`roidetect.inference.predict`), plans milling sites
(:func:`roidetect.targeting.suggest`), writes the HTML report
(:func:`roidetect.report.write_report`) and, because the phantom's truth is known, scores
the prediction (:func:`roidetect.evaluate.evaluate_prediction`). Layout of ``out_dir``::

    phantom/            the scan (images/vol_0000.tif) with its true labels and instances
    prediction/         roidetect predict's folder (labels.tif, detections.csv, ...)
    sites/              roidetect suggest's folder (sites.csv, milling_protocol.yaml, ...)
    report.html         the report; its figures as PNG in report_files/
    evaluation.json     roidetect evaluate's result against the phantom's truth
    run.json            what the demo ran, with timings
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from roidetect.errors import UserError
from roidetect.runlog import RunLog, recorded_command

log = logging.getLogger(__name__)

#: The demo phantom is 6.4 um wide at 50 nm voxels, smaller than a FIB crater; letting the
#: milled box reach past the scanned region (which a real scan of a larger sample allows)
#: keeps sites on the plan.
DEMO_SUGGEST_OVERRIDES = ("targeting.min_clearance_um=-100",)


@dataclass(frozen=True)
class DemoOutputs:
    """Where the demo wrote each result (all inside ``folder``)."""

    folder: Path
    scan: Path
    truth: Path
    prediction: Path
    sites: Path
    report: Path
    evaluation: Path

    def lines(self) -> list[str]:
        """One ``what: where`` line per output, for the terminal."""
        return [f"  scan (phantom)      {self.scan}",
                f"  true labels         {self.truth}",
                f"  prediction          {self.prediction}  (labels.tif, detections.csv, probabilities)",
                f"  milling sites       {self.sites}  (sites.csv, milling_protocol.yaml)",
                f"  report              {self.report}",
                f"  evaluation vs truth {self.evaluation}"]


def run_demo(out_dir: str | os.PathLike = "roidetect-demo", model: str | None = None,
             shape: Sequence[int] = (128, 128, 128), seed: int = 0, preset: str = "cathode",
             overwrite: bool = False, quiet: bool = False) -> DemoOutputs:
    """Run phantom -> predict -> suggest -> report -> evaluate into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Folder to write. A folder left by an earlier demo (it has a demo ``run.json``) is
        replaced; any other non-empty folder needs ``overwrite``.
    model : str, optional
        Model package folder or shipped name; default the shipped default model.
    shape : (Z, Y, X) ints
        Phantom shape in voxels (50 nm voxels).
    seed : int
        Phantom seed.
    preset : str
        Phantom preset (``cathode``, ``anode``, ``nmc-real``).
    overwrite : bool
        Replace a non-empty ``out_dir`` that an earlier demo did not write.
    quiet : bool
        No progress bars.

    Returns
    -------
    DemoOutputs

    Raises
    ------
    UserError
        A non-empty ``out_dir`` not written by the demo (without ``overwrite``), or a bad
        ``shape``, ``seed``, ``preset`` or ``model``.
    """
    from roidetect.config import compose_config
    from roidetect.evaluate import evaluate_prediction, format_report, json_ready
    from roidetect.inference import predict
    from roidetect.report import write_report
    from roidetect.synth import write_dataset
    from roidetect.targeting import suggest
    from roidetect.volume import write_json

    folder = _claim_folder(Path(out_dir), overwrite)
    outputs = DemoOutputs(folder=folder, scan=folder / "phantom" / "images" / "vol_0000.tif",
                          truth=folder / "phantom" / "labels" / "vol_0000.tif", prediction=folder / "prediction",
                          sites=folder / "sites", report=folder / "report.html",
                          evaluation=folder / "evaluation.json")
    run = RunLog("demo", {"model": model or "default", "shape": [int(n) for n in shape], "seed": int(seed),
                          "preset": preset, "suggest_overrides": list(DEMO_SUGGEST_OVERRIDES)})
    with run.step("phantom"):
        log.info("1/5 making a %s phantom of %s voxels (seed %d)", preset, "x".join(map(str, shape)), seed)
        write_dataset(folder / "phantom", 1, shape=shape, voxel_size_um=0.05, seed=seed, preset=preset,
                      workers=1, overwrite=True, quiet=quiet, name="demo")
    with run.step("predict"):
        log.info("2/5 finding defects with the %s model", model or "default")
        predict(outputs.scan, outputs.prediction, model=model, overwrite=True, quiet=quiet)
    with run.step("suggest"):
        log.info("3/5 planning milling sites")
        suggest(outputs.prediction, outputs.sites, compose_config("suggest", DEMO_SUGGEST_OVERRIDES),
                overwrite=True, quiet=quiet)
    with run.step("report"):
        log.info("4/5 writing the report")
        write_report(outputs.prediction, outputs.report, outputs.sites, overwrite=True, quiet=quiet)
    with run.step("evaluate"):
        log.info("5/5 scoring the prediction against the phantom's truth")
        instances = folder / "phantom" / "instances" / "vol_0000.tif"
        result = evaluate_prediction(outputs.prediction, outputs.truth, instances, outputs.sites)
        write_json(outputs.evaluation, json_ready(result), overwrite=True)
    if not quiet:
        print(format_report(result))
    run.add_input("scan", outputs.scan)
    run.write(folder)
    return outputs


def _claim_folder(folder: Path, overwrite: bool) -> Path:
    """Check that ``folder`` may be written: absent, empty, an earlier demo's, or ``overwrite``."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; give a folder for the demo's outputs")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite and recorded_command(folder) != "demo":
        raise UserError(f"{folder} exists and was not written by roidetect demo; "
                        "choose another --out or pass --overwrite")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
