"""training/gpu/: a model package split into pieces a device call can return, and joined back."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "training" / "gpu"
SHIPPED = ROOT / "models" / "default"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None
                                or shutil.which("split") is None, reason="needs bash and coreutils")


def _run(script: str, *args: object, **env: str) -> subprocess.CompletedProcess:
    env_path = f"{Path(sys.executable).parent}:/usr/bin:/bin"  # python3 of this interpreter's environment
    return subprocess.run(["bash", str(SCRIPTS / script), *map(str, args)], capture_output=True, text=True,
                          env={"PATH": env_path, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_package_split_into_pieces_joins_back_byte_for_byte(tmp_path: Path) -> None:
    pieces = tmp_path / "device files"  # a space in the path, as a download folder may have
    split = _run("split_package.sh", SHIPPED, pieces, "1M")
    assert split.returncode == 0, split.stderr
    parts = sorted(pieces.glob("weights.safetensors.part*"))
    size = (SHIPPED / "weights.safetensors").stat().st_size
    assert len(parts) == -(-size // 2**20) and len(parts) > 1
    assert all(p.stat().st_size <= 2**20 for p in parts)

    joined = _run("join_package.sh", pieces, tmp_path / "model")
    assert joined.returncode == 0, joined.stderr
    assert _sha256(tmp_path / "model" / "weights.safetensors") == _sha256(SHIPPED / "weights.safetensors")
    assert (tmp_path / "model" / "card.json").read_bytes() == (SHIPPED / "card.json").read_bytes()
    assert "loaded" in joined.stdout
    # The folder exists now: joining again refuses to write over it.
    again = _run("join_package.sh", pieces, tmp_path / "model")
    assert again.returncode == 2 and "exists" in again.stderr


@pytest.mark.parametrize("damage", ["flip a byte", "lose a piece"])
def test_a_damaged_or_incomplete_set_of_pieces_leaves_no_package(tmp_path: Path, damage: str) -> None:
    pieces = tmp_path / "out"
    assert _run("split_package.sh", SHIPPED, pieces, "1M").returncode == 0
    middle = pieces / "weights.safetensors.part1"
    if damage == "flip a byte":
        data = bytearray(middle.read_bytes())
        data[100] ^= 0xFF
        middle.write_bytes(bytes(data))
    else:
        middle.unlink()
    joined = _run("join_package.sh", pieces, tmp_path / "model")
    assert joined.returncode != 0
    assert not (tmp_path / "model").exists()
    assert not list(tmp_path.glob("model.partial-*"))


def test_the_scripts_refuse_missing_inputs_with_status_2(tmp_path: Path) -> None:
    assert _run("split_package.sh", tmp_path / "nothing", tmp_path / "out").returncode == 2
    assert _run("join_package.sh", tmp_path / "nothing", tmp_path / "model").returncode == 2
    assert _run("device_train.sh", "six minutes", tmp_path / "out").returncode == 2


def test_a_failed_training_run_ends_the_device_script_with_its_status_and_its_log(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _run("device_train.sh", 30, out, "trainer=no_such_trainer", ROIDETECT_DEVICE_RUN=str(tmp_path / "run"))
    assert result.returncode == 2  # roidetect train's status for a bad override
    assert "no model package" in result.stderr
    assert "no_such_trainer" in (out / "train.log").read_text()
    assert not list(out.glob("weights.*"))
