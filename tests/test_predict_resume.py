"""``roidetect predict --resume``: a run stopped part-way continues to the same result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from test_predict import FAST, package, scan  # noqa: F401  (module fixtures)

from roidetect.cli import main
from roidetect.errors import UserError
from roidetect.inference import predict
from roidetect.inference.resume import CARRIES, JOURNAL, Journal, partial_dir

NETWORK = {"inference": {**FAST["inference"], "block_size": 8}}  # a block per window: 8 blocks, with carries
CLASSICAL = {"classical": {"block_size": 24}, "detection": {"block_size": 32}}


def stop_after(monkeypatch: pytest.MonkeyPatch, blocks: int, error: type[BaseException] = KeyboardInterrupt) -> None:
    """Make the run stop (as Ctrl-C does) when it would record block number ``blocks + 1``."""
    original = Journal.mark
    calls = {"n": 0}

    def mark(self: Journal, core) -> None:
        calls["n"] += 1
        if calls["n"] > blocks:
            raise error("stopped")
        original(self, core)

    monkeypatch.setattr(Journal, "mark", mark)


def probabilities(folder: Path) -> np.ndarray:
    return zarr.open_array(str(folder / "probabilities.ome.zarr" / "0"), mode="r")[:]


@pytest.mark.parametrize("model", ["network", "classical"])
def test_a_stopped_run_resumes_to_the_uninterrupted_result(model: str, scan: Path, package: Path,  # noqa: F811
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen, settings = (package, NETWORK) if model == "network" else ("classical", CLASSICAL)
    whole = predict(scan, tmp_path / "whole", model=chosen, quiet=True, settings=settings)
    out = tmp_path / "pred"
    with monkeypatch.context() as patch:
        stop_after(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            predict(scan, out, model=chosen, quiet=True, settings=settings)
    partial = partial_dir(out)
    assert not out.exists() and partial.is_dir()
    assert len(json.loads((partial / JOURNAL).read_text())["done"]) == 3
    with pytest.raises(UserError, match="--resume"):  # not silently started over
        predict(scan, out, model=chosen, quiet=True, settings=settings)
    predict(scan, out, model=chosen, quiet=True, settings=settings, resume=True)
    assert not partial.exists() and not (out / JOURNAL).exists() and not (out / CARRIES).exists()
    np.testing.assert_array_equal(probabilities(out), probabilities(whole))
    pd.testing.assert_frame_equal(pd.read_csv(out / "detections.csv"), pd.read_csv(whole / "detections.csv"))
    assert json.loads((out / "run.json").read_text())["resumed"]["blocks_kept"] == 3


def test_resume_refuses_other_settings_and_overwrite_starts_over(scan: Path, package: Path,  # noqa: F811
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "pred"
    with monkeypatch.context() as patch:
        stop_after(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            predict(scan, out, model=package, quiet=True, settings=NETWORK)
    other = {"inference": {**NETWORK["inference"], "overlap": 0.5}}
    with pytest.raises(UserError, match=r"settings\.inference\.overlap"):
        predict(scan, out, model=package, quiet=True, settings=other, resume=True)
    assert partial_dir(out).is_dir()  # kept for the right command
    predict(scan, out, model=package, quiet=True, settings=other, overwrite=True)
    assert not partial_dir(out).exists() and (out / "detections.csv").is_file()


def test_a_run_that_finished_no_block_leaves_nothing(scan: Path, tmp_path: Path,  # noqa: F811
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "pred"
    with monkeypatch.context() as patch:
        stop_after(patch, 0, RuntimeError)
        with pytest.raises(RuntimeError):
            predict(scan, out, model="classical", quiet=True, settings=CLASSICAL)
    assert not out.exists() and not partial_dir(out).exists()


def test_cli_resume_without_a_stopped_run_starts_from_the_beginning(scan: Path, tmp_path: Path,  # noqa: F811
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "pred"
    with caplog.at_level("INFO"):
        assert main(["predict", str(scan), "--out", str(out), "--model", "classical", "--resume", "-q",
                     "classical.block_size=24"]) == 0
    assert (out / "detections.csv").is_file()
    assert json.loads((out / "run.json").read_text())["resumed"]["blocks_kept"] == 0


def test_resume_from_another_working_folder_finds_the_same_scan(scan: Path, tmp_path: Path,  # noqa: F811
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan is recognised by its checksum, not by the path as typed."""
    out = tmp_path / "pred"
    monkeypatch.chdir(scan.parent)
    with monkeypatch.context() as patch:
        stop_after(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            predict(scan.name, out, model="classical", quiet=True, settings=CLASSICAL)
    monkeypatch.chdir(tmp_path)
    predict(scan, out, model="classical", quiet=True, settings=CLASSICAL, resume=True)
    assert json.loads((out / "run.json").read_text())["resumed"]["blocks_kept"] == 2


def test_ctrl_c_on_the_command_line_keeps_the_blocks_and_says_how_to_resume(scan: Path, tmp_path: Path,  # noqa: F811
                                                                            monkeypatch: pytest.MonkeyPatch,
                                                                            caplog: pytest.LogCaptureFixture,
                                                                            capsys: pytest.CaptureFixture) -> None:
    import logging

    out = tmp_path / "pred"
    args = ["predict", str(scan), "--out", str(out), "--model", "classical", "-q", "classical.block_size=24"]
    stop_after(monkeypatch, 2)
    monkeypatch.setattr(logging.getLogger("asyncio"), "disabled", False)  # restored after the test
    with caplog.at_level("WARNING"):
        assert main(args) == 130
    assert "--resume" in caplog.text and partial_dir(out).is_dir()
    assert "interrupted; the output was not written" in capsys.readouterr().err
    assert logging.getLogger("asyncio").disabled  # no tracebacks of zarr's cut-short writes at exit
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0 and (out / "detections.csv").is_file()
