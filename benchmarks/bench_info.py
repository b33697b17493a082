"""How fast `roidetect info` describes a large scan, and how much memory it takes.

Writes a 1024^3 uint16 BigTIFF (2 GiB; plain ImageJ-style and, with --compressed, a tiled
zlib OME-BigTIFF), then runs `roidetect info` on each in a fresh process and prints wall time
and peak resident memory. The pixel data are never read whole: the value range comes from
16 evenly spaced z-slices.

    python benchmarks/bench_info.py [--size 1024] [--compressed] [--workdir /tmp/roidetect-bench]

Measured 2026-11-30 on the 2-core development VM (Intel Xeon, local SSD; `--compressed`,
a training run sharing the cores):

    file                        on disk  info wall (s)  peak RSS (MiB)
    BigTIFF, uncompressed        2.00 GiB           0.25              67
    BigTIFF, zlib strips         1.89 GiB           0.39              72

The target is under 2 s without reading the pixel data into memory: the peak RSS stays at
the size of the Python process itself (the file is 2 GiB).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

from roidetect.atomic import atomic_file

CHILD = ("import resource, sys; from roidetect.cli import main; rc = main(sys.argv[1:]); "
         "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)")


def make_scan(path: Path, size: int, compressed: bool) -> None:
    """A size^3 uint16 BigTIFF with voxel size metadata, written slab by slab."""
    if path.exists():
        return
    shape = (size, size, size)
    yy, xx = np.mgrid[:size, :size]
    base = ((np.sin(yy / 17.0) + np.cos(xx / 23.0)) * 8000 + 20000).astype(np.uint16)
    pages = (base + np.uint16(z % 1000) for z in range(size))
    meta = {"axes": "ZYX", "PhysicalSizeX": 0.05, "PhysicalSizeY": 0.05, "PhysicalSizeZ": 0.05}
    with atomic_file(path) as tmp:
        if compressed:
            tifffile.imwrite(tmp, pages, shape=shape, dtype=np.uint16, bigtiff=True, ome=True, rowsperstrip=64,
                             compression="zlib", compressionargs={"level": 1}, metadata=meta)
        else:
            tifffile.imwrite(tmp, pages, shape=shape, dtype=np.uint16, bigtiff=True, ome=True, metadata=meta)


def run_info(path: Path) -> tuple[float, float]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CHILD, "info", str(path)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    rss_kb = int(next(line.split()[1] for line in result.stderr.splitlines() if line.startswith("MAXRSS_KB")))
    return wall, rss_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--compressed", action="store_true", help="also measure a strip-compressed zlib OME-BigTIFF")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/roidetect-bench"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    cases = [("BigTIFF, uncompressed", args.workdir / f"scan_{args.size}.ome.tif", False)]
    if args.compressed:
        cases.append(("BigTIFF, zlib strips", args.workdir / f"scan_{args.size}_zlib.ome.tif", True))
    print(f"{'file':<24} {'on disk':>10} {'info wall (s)':>14} {'peak RSS (MiB)':>15}")
    for label, path, compressed in cases:
        make_scan(path, args.size, compressed)
        run_info(path)  # warm the interpreter's import caches; the file itself is not read whole
        wall, rss = run_info(path)
        print(f"{label:<24} {path.stat().st_size / 2**30:>8.2f} GiB {wall:>14.2f} {rss:>15.0f}")


if __name__ == "__main__":
    main()
