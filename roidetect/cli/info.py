"""``roidetect info SCAN``: shape, type, voxel size and format of a volume, without loading it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from roidetect.cli.common import add_command, add_voxel_size, voxel_size
from roidetect.errors import UserError


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "info", "describe a scan: shape, voxel size, value range, format",
                         "Print shape, data type, voxel size, physical size, value range and format of a "
                         "volume. Pixel data are not loaded: the value range is read from up to 16 evenly "
                         "spaced z-slices, which also show a label map or a mask given as a scan (16 or "
                         "fewer distinct values).")
    parser.add_argument("scan", help="TIFF, folder of TIFF slices, file.h5:/dataset, Zarr/OME-Zarr, MRC, NIfTI or .npy")
    add_voxel_size(parser)
    parser.add_argument("--json", action="store_true", help="print the description as JSON")
    parser.set_defaults(handler=run)


def describe(scan: str, voxel_size_um: Any = None) -> dict[str, Any]:
    """The facts ``roidetect info`` prints, as a dictionary.

    A file without a voxel size is described all the same: ``voxel_size_um_zyx`` and
    ``physical_size_um_zyx`` are then None and ``voxel_size_missing`` says what to do.
    """
    from roidetect.intensity import few_grey_values
    from roidetect.volume import MissingVoxelSize, open_volume, split_inner_path, value_range

    try:
        volume, missing = open_volume(scan, voxel_size_um), None
    except MissingVoxelSize as exc:
        volume, missing = open_volume(scan, 1.0), str(exc)
    lo, hi, slices, nonfinite = value_range(volume)
    if nonfinite:
        raise UserError(f"{scan} ({' x '.join(map(str, volume.shape))} {volume.dtype}) contains NaN or infinite "
                        "values; replace them (e.g. with 0) before running roidetect")
    few = few_grey_values(volume)
    path, _ = split_inner_path(scan)
    on_disk = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return {
        "path": scan,
        "format": volume.format,
        "shape_zyx": list(volume.shape),
        "dtype": str(volume.dtype),
        "voxel_size_um_zyx": None if missing else list(volume.spacing_um),
        "physical_size_um_zyx": None if missing else [round(v, 6) for v in volume.physical_size_um],
        "voxel_size_missing": missing,
        "origin_um_zyx": list(volume.origin_um),
        "value_range": [lo, hi],
        "value_range_slices_read": slices,
        "distinct_values": None if few is None else few.tolist(),
        "size_in_memory_bytes": volume.nbytes,
        "size_on_disk_bytes": on_disk,
        **{k: v for k, v in volume.details.items()},
    }


def run(args: argparse.Namespace) -> int:
    facts = describe(args.scan, voxel_size(args))
    if args.json:
        print(json.dumps(facts, indent=2, default=str))
        return 0
    z, y, x = facts["shape_zyx"]
    lo, hi = facts["value_range"]
    sampled = facts["value_range_slices_read"]
    lines = [
        f"file            {facts['path']}",
        f"format          {facts['format']}",
        f"shape (z y x)   {z} x {y} x {x} voxels",
        f"data type       {facts['dtype']} ({_human_bytes(facts['size_in_memory_bytes'])} in memory, "
        f"{_human_bytes(facts['size_on_disk_bytes'])} on disk)",
        *_size_lines(facts),
        f"value range     {lo:g} .. {hi:g}"
        + (f" (from {sampled} of {z} z-slices)" if sampled < z else ""),
    ]
    if facts["distinct_values"] is not None:
        few = facts["distinct_values"]
        lines.append(f"distinct values {len(few)}: {', '.join(f'{v:g}' for v in few)} "
                     "(a label map, a mask or a constant, not a greyscale scan)")
    for key in ("axes", "compression", "bigtiff", "chunks", "dataset", "level", "levels", "slices", "mode", "access"):
        if key in facts and facts[key] is not None:
            lines.append(f"{key:<16}{facts[key]}")
    print("\n".join(lines))
    return 0


def _size_lines(facts: dict[str, Any]) -> list[str]:
    """The voxel size and physical size lines, or why the voxel size is unknown."""
    if facts["voxel_size_um_zyx"] is None:
        return [f"voxel size      unknown: {facts['voxel_size_missing']}"]
    dz, dy, dx = facts["voxel_size_um_zyx"]
    pz, py, px = facts["physical_size_um_zyx"]
    return [f"voxel size      {dz:g} x {dy:g} x {dx:g} um (z y x)", f"physical size   {pz:g} x {py:g} x {px:g} um"]


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n} B"
