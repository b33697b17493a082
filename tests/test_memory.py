"""The free memory the commands that hold whole volumes check against: the machine's or the
control group's (a SLURM job, a container), whichever is smaller."""

from __future__ import annotations

from pathlib import Path

from roidetect.memory import available_memory_bytes

GB = 1 << 30


def fake_system(root: Path, cgroup: str, files: dict[str, str], available_gb: int = 100) -> tuple[Path, Path]:
    """A /proc with ``available_gb`` of MemAvailable and this process's ``cgroup`` lines, and a
    cgroup file system holding ``files`` (path -> content)."""
    proc, sys_cgroup = root / "proc", root / "cgroup"
    (proc / "self").mkdir(parents=True)
    kib = available_gb * 1048576
    (proc / "meminfo").write_text(f"MemTotal: {2 * kib} kB\nMemAvailable: {kib} kB\n")
    (proc / "self" / "cgroup").write_text(cgroup)
    for name, text in files.items():
        (sys_cgroup / name).parent.mkdir(parents=True, exist_ok=True)
        (sys_cgroup / name).write_text(text)
    return proc, sys_cgroup


def test_a_cgroup_v2_limit_below_the_machines_free_memory_counts(tmp_path):
    proc, cgroup = fake_system(tmp_path, "0::/slurm/job_7\n", {
        "slurm/job_7/memory.max": f"{8 * GB}\n", "slurm/job_7/memory.current": f"{3 * GB}\n",
        "slurm/job_7/memory.stat": f"anon 123\ninactive_file {GB}\n"})
    assert available_memory_bytes(proc, cgroup) == 6 * GB  # 8 - 3 + 1 reclaimable


def test_no_limit_leaves_the_machines_free_memory(tmp_path):
    proc, cgroup = fake_system(tmp_path, "0::/\n", {"memory.max": "max\n", "memory.current": "5\n"})
    assert available_memory_bytes(proc, cgroup) == 100 * GB
    v1 = tmp_path / "v1"
    proc, cgroup = fake_system(v1, "4:memory:/job\n1:cpu:/\n", {
        "memory/job/memory.limit_in_bytes": "9223372036854771712\n", "memory/job/memory.usage_in_bytes": "5\n"})
    assert available_memory_bytes(proc, cgroup) == 100 * GB


def test_a_cgroup_v1_limit_counts(tmp_path):
    proc, cgroup = fake_system(tmp_path, "4:memory:/job\n1:cpu:/\n", {
        "memory/job/memory.limit_in_bytes": f"{4 * GB}\n", "memory/job/memory.usage_in_bytes": f"{GB}\n",
        "memory/job/memory.stat": "total_inactive_file 0\n"})
    assert available_memory_bytes(proc, cgroup) == 3 * GB

