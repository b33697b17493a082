"""``run.json``: the warnings a run logged, and naming the command that wrote a folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from roidetect.runlog import RunLog, made_by_other_command


def test_warnings_logged_during_the_run_are_written_and_nothing_else(tmp_path: Path) -> None:
    child = logging.getLogger("roidetect.some.stage")
    record = RunLog("predict")
    child.warning("before: not this run's")
    with record.collecting_warnings():
        child.info("progress: not a warning")
        child.warning("scan %s is odd", "a.tif")
        logging.getLogger("elsewhere").warning("another library's")
    child.warning("after: not this run's")
    record.write(tmp_path)
    assert json.loads((tmp_path / "run.json").read_text())["warnings"] == ["scan a.tif is odd"]
    assert not any(type(h).__name__ == "_Collector" for h in logging.getLogger("roidetect").handlers)


def test_a_folder_of_another_command_is_named_by_its_run_json(tmp_path: Path) -> None:
    RunLog("suggest").write(tmp_path / "sites")
    assert made_by_other_command(tmp_path / "sites", "predict") == "; it is the output of 'roidetect suggest'"
    assert made_by_other_command(tmp_path / "sites", "suggest") == ""
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "run.json").write_text("[1, 2")  # unreadable: no hint, no error
    assert made_by_other_command(tmp_path / "odd", "predict") == ""
    assert made_by_other_command(tmp_path / "missing", "predict") == ""
