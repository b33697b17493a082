"""Volume readers and writers: round trips through every format, and bad input."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import h5py
import mrcfile
import nibabel
import numpy as np
import pytest
import tifffile
import zarr

from roidetect.errors import UserError
from roidetect.volume import (
    IMOD_STAMP,
    Volume,
    create_ome_zarr,
    create_tiff,
    open_volume,
    parse_region,
    split_inner_path,
    value_range,
    write_json,
    write_ome_zarr,
    write_tiff,
)

SPACING = (0.2, 0.05, 0.05)


def _write_every_format(tmp_path: Path, array: np.ndarray) -> dict[str, str]:
    """Write ``array`` in each supported format; return the path strings to open."""
    paths = {}
    write_tiff(tmp_path / "imagej.tif", array, SPACING)
    paths["imagej"] = str(tmp_path / "imagej.tif")
    tifffile.imwrite(tmp_path / "zlib.tif", array, imagej=True, compression="zlib",
                     resolution=(1 / SPACING[2], 1 / SPACING[1]), metadata={"spacing": SPACING[0], "unit": "um"})
    paths["compressed"] = str(tmp_path / "zlib.tif")
    tifffile.imwrite(tmp_path / "big.btf", array, bigtiff=True, ome=True, tile=(16, 16), compression="zlib",
                     metadata={"axes": "ZYX", "PhysicalSizeX": 50, "PhysicalSizeXUnit": "nm",
                               "PhysicalSizeY": 50, "PhysicalSizeYUnit": "nm",
                               "PhysicalSizeZ": 0.2, "PhysicalSizeZUnit": "µm"})
    paths["ome-bigtiff-tiled"] = str(tmp_path / "big.btf")
    folder = tmp_path / "slices"
    folder.mkdir()
    for z, plane in enumerate(array):
        tifffile.imwrite(folder / f"slice_{z}.tif", plane, imagej=True,
                         resolution=(1 / SPACING[2], 1 / SPACING[1]), metadata={"spacing": SPACING[0], "unit": "um"})
    paths["folder"] = str(folder)
    with h5py.File(tmp_path / "scan.h5", "w") as handle:
        dataset = handle.create_dataset("exchange/data", data=array, chunks=(4, 8, 8), compression="gzip")
        dataset.attrs["element_size_um"] = SPACING
    paths["hdf5"] = f"{tmp_path / 'scan.h5'}:/exchange/data"
    write_ome_zarr(tmp_path / "scan.ome.zarr", array, SPACING, chunks=(4, 8, 8))
    paths["ome-zarr"] = str(tmp_path / "scan.ome.zarr")
    plain = zarr.open_array(str(tmp_path / "plain.zarr"), mode="w", shape=array.shape, dtype=array.dtype,
                            chunks=(4, 8, 8))
    plain[...] = array
    plain.attrs["voxel_size_um"] = list(SPACING)
    paths["zarr"] = str(tmp_path / "plain.zarr")
    _write_mrc(tmp_path / "scan.mrc", array, SPACING)
    paths["mrc"] = str(tmp_path / "scan.mrc")
    for name in ("scan.nii", "scan.nii.gz"):
        _write_nifti(tmp_path / name, array, SPACING)
        paths[name] = str(tmp_path / name)
    return paths


def _write_nifti(path: Path, array: np.ndarray, spacing_um: tuple[float, float, float], unit: str = "micron",
                 extra_axes: int = 0) -> None:
    """Write ``array`` (z, y, x) as NIfTI stores it: x, y, z, with pixdim in ``unit``."""
    data = array.T.reshape(array.shape[::-1] + (1,) * extra_axes)
    image = nibabel.Nifti1Image(data, np.diag([*spacing_um[::-1], 1.0]))
    image.header.set_xyzt_units(unit)
    nibabel.save(image, path)


def _write_mrc(path: Path, array: np.ndarray, spacing_um: tuple[float, float, float] | None,
               imod_flags: int = 0) -> None:
    """Write ``array`` as MRC; uint8 the way IMOD writes it (mode 0 with its stamp and flags)."""
    with mrcfile.new(path, overwrite=True) as mrc:
        if array.dtype == np.uint8:
            mrc.set_data(array.view(np.int8))
            extra = bytearray(bytes(mrc.header.extra2))
            extra[40:48] = np.array([IMOD_STAMP, imod_flags], "<i4").tobytes()
            mrc.header.extra2 = bytes(extra)
        else:
            mrc.set_data(array)
        if spacing_um is not None:
            mrc.voxel_size = tuple(s * 1e4 for s in spacing_um[::-1])  # x, y, z in angstrom


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_every_reader_returns_identical_arrays(tmp_path, small_scan, dtype):
    array = small_scan.astype(dtype)
    for name, path in _write_every_format(tmp_path, array).items():
        volume = open_volume(path)
        assert volume.shape == array.shape, name
        np.testing.assert_allclose(volume.spacing_um, SPACING, rtol=1e-6, err_msg=name)
        assert volume.dtype == array.dtype, name
        np.testing.assert_array_equal(volume.numpy(), array, err_msg=name)
        np.testing.assert_array_equal(volume[3:9, 5:20:2, -7:], array[3:9, 5:20:2, -7:], err_msg=name)
        np.testing.assert_array_equal(volume[4], array[4], err_msg=name)


def test_npy_needs_voxel_size_and_round_trips(tmp_path, small_scan):
    np.save(tmp_path / "scan.npy", small_scan)
    with pytest.raises(UserError, match="--voxel-size"):
        open_volume(tmp_path / "scan.npy")
    volume = open_volume(tmp_path / "scan.npy", voxel_size_um=0.05)
    assert volume.spacing_um == (0.05, 0.05, 0.05)
    assert isinstance(volume.data, np.memmap)
    np.testing.assert_array_equal(volume.numpy(), small_scan)


@pytest.mark.parametrize("angstrom", [None, 1.0])
def test_mrc_with_unset_cell_needs_voxel_size(tmp_path, small_scan, angstrom):
    path = tmp_path / "scan.rec"
    _write_mrc(path, small_scan, None if angstrom is None else (angstrom * 1e-4,) * 3)
    with pytest.raises(UserError, match="--voxel-size"):
        open_volume(path)
    volume = open_volume(path, voxel_size_um=0.05)
    assert volume.format == "mrc" and isinstance(volume.data, np.memmap)
    np.testing.assert_array_equal(volume.numpy(), small_scan)


def test_mrc_bytes_signed_only_where_imod_flags_say_so(tmp_path):
    array = np.array([0, 100, 200, 255], np.uint8).reshape(1, 2, 2).repeat(2, axis=0)
    _write_mrc(tmp_path / "unsigned.mrc", array, SPACING)
    _write_mrc(tmp_path / "signed.mrc", array, SPACING, imod_flags=1)
    unsigned = open_volume(tmp_path / "unsigned.mrc").numpy()
    assert unsigned.dtype == np.uint8 and unsigned.max() == 255
    signed = open_volume(tmp_path / "signed.mrc").numpy()
    assert signed.dtype == np.int8 and signed.min() < 0
    np.testing.assert_array_equal(signed.view(np.uint8), array)


def test_written_tiff_opens_in_tifffile_with_voxel_size(tmp_path, small_scan):
    write_tiff(tmp_path / "out.tif", small_scan, SPACING)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["spacing"] == pytest.approx(SPACING[0])
        assert tif.imagej_metadata["unit"] in ("um", "micron", "\\u00B5m")
        xres = tif.pages.first.tags["XResolution"].value
        assert xres[1] / xres[0] == pytest.approx(SPACING[2], rel=1e-5)
        np.testing.assert_array_equal(tif.asarray(), small_scan)


def test_non_imagej_types_written_as_ome_tiff(tmp_path):
    instances = np.arange(2 * 3 * 4, dtype=np.uint32).reshape(2, 3, 4) * 100_000
    write_tiff(tmp_path / "inst.tif", instances, SPACING)
    volume = open_volume(tmp_path / "inst.tif")
    assert volume.format == "ome-tiff"
    np.testing.assert_allclose(volume.spacing_um, SPACING, rtol=1e-6)
    np.testing.assert_array_equal(volume.numpy(), instances)


def test_lazy_volume_written_slice_by_slice(tmp_path, small_scan):
    write_tiff(tmp_path / "a.tif", small_scan, SPACING)
    source = open_volume(tmp_path / "a.tif")
    write_tiff(tmp_path / "b.tif", source)
    np.testing.assert_array_equal(open_volume(tmp_path / "b.tif").numpy(), small_scan)


def test_block_writers(tmp_path, small_scan):
    labels = (small_scan > 1000).astype(np.uint8)
    mm = create_tiff(tmp_path / "labels.tif", labels.shape, np.uint8, SPACING)
    mm[:16] = labels[:16]
    mm[16:] = labels[16:]
    mm.flush()
    del mm
    volume = open_volume(tmp_path / "labels.tif")
    assert volume.spacing_um == pytest.approx(SPACING)
    np.testing.assert_array_equal(volume.numpy(), labels)

    probs = np.stack([1 - labels, labels]).astype(np.uint8) * 255
    array = create_ome_zarr(tmp_path / "p.ome.zarr", probs.shape, np.uint8, SPACING, origin_um=(1, 2, 3),
                            channel_names=["background", "solid"])
    array[...] = probs
    group = zarr.open_group(str(tmp_path / "p.ome.zarr"), mode="r")
    assert [c["label"] for c in group.attrs["omero"]["channels"]] == ["background", "solid"]
    assert group.attrs["multiscales"][0]["axes"][0]["name"] == "c"
    np.testing.assert_array_equal(np.asarray(group["0"]), probs)
    with pytest.raises(UserError, match="4 dimensions"):
        open_volume(tmp_path / "p.ome.zarr")


def test_ome_zarr_origin_and_singleton_channel(tmp_path, small_scan):
    create_ome_zarr(tmp_path / "one.ome.zarr", (1, *small_scan.shape), small_scan.dtype, SPACING,
                    origin_um=(1.0, 2.0, 3.0))[...] = small_scan[None]
    volume = open_volume(tmp_path / "one.ome.zarr")
    assert volume.origin_um == (1.0, 2.0, 3.0)
    np.testing.assert_array_equal(volume[2:5, :, 7], small_scan[2:5, :, 7])


def test_voxel_size_override_and_validation(tmp_path, small_scan):
    write_tiff(tmp_path / "a.tif", small_scan, SPACING)
    assert open_volume(tmp_path / "a.tif", voxel_size_um=0.1).spacing_um == (0.1, 0.1, 0.1)
    assert open_volume(tmp_path / "a.tif", voxel_size_um=(0.3, 0.1, 0.1)).spacing_um == (0.3, 0.1, 0.1)
    for bad in (0, -0.05, (0.1, 0.0, 0.1), float("nan")):
        with pytest.raises(UserError, match="positive"):
            open_volume(tmp_path / "a.tif", voxel_size_um=bad)


def test_tiff_without_voxel_size_needs_one(tmp_path, small_scan):
    tifffile.imwrite(tmp_path / "plain.tif", small_scan)
    with pytest.raises(UserError, match="no voxel size"):
        open_volume(tmp_path / "plain.tif")
    assert open_volume(tmp_path / "plain.tif", voxel_size_um=0.05).shape == small_scan.shape


@pytest.mark.parametrize("case", ["missing", "truncated", "truncated-pages", "corrupt", "2d", "4d", "empty", "hdf5-no-dataset",
                                  "hdf5-group", "unsupported", "complex",
                                  "mrc-truncated", "mrc-axes", "mrc-2d", "folder-shapes", "folder-types"])
def test_bad_input_raises_one_line_user_error(tmp_path, small_scan, case):
    path = tmp_path / "scan.tif"
    if case == "truncated":
        write_tiff(path, small_scan, SPACING)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif case == "truncated-pages":  # cut inside the chain of pages: tifffile alone would see one 2D page
        tifffile.imwrite(path, small_scan)
        path.write_bytes(path.read_bytes()[: small_scan[0].nbytes + 400])
    elif case == "corrupt":
        path.write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(5000))
    elif case == "2d":
        tifffile.imwrite(path, small_scan[0])
    elif case == "4d":
        tifffile.imwrite(path, np.stack([small_scan, small_scan]), imagej=True, metadata={"axes": "TZYX"})
    elif case == "empty":
        path = tmp_path / "scan.npy"
        np.save(path, np.zeros((0, 4, 4), np.uint8))
    elif case in ("hdf5-no-dataset", "hdf5-group"):
        with h5py.File(tmp_path / "scan.h5", "w") as handle:
            handle.create_dataset("g/data", data=small_scan)
        path = tmp_path / ("scan.h5" if case == "hdf5-no-dataset" else "scan.h5:/g")
    elif case == "unsupported":
        path = tmp_path / "scan.png"
        path.write_bytes(b"\x89PNG")
    elif case == "complex":
        path = tmp_path / "scan.npy"
        np.save(path, np.zeros((4, 4, 4), np.complex64))
    elif case.startswith("folder"):  # one slice of another size, or re-saved as 8-bit
        path = tmp_path / "slices"
        path.mkdir()
        for z, plane in enumerate(small_scan[:4]):
            if z == 2:
                plane = plane[:, :-1] if case == "folder-shapes" else (plane >> 8).astype(np.uint8)
            tifffile.imwrite(path / f"slice_{z:03d}.tif", plane)
    elif case.startswith("mrc"):
        path = tmp_path / "scan.mrc"
        _write_mrc(path, small_scan[0] if case == "mrc-2d" else small_scan, SPACING)
        if case == "mrc-truncated":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        elif case == "mrc-axes":
            with mrcfile.open(path, mode="r+") as mrc:
                mrc.header.mapc, mrc.header.mapr = 2, 1
    with pytest.raises(UserError) as info:
        volume = open_volume(path, voxel_size_um=0.05)
        volume.numpy()  # truncation may only show when the pixels are read
    message = str(info.value)
    assert "\n" not in message
    assert str(path).split(":")[0] in message or path.name in message
    if "truncated" in case or case == "corrupt":
        assert "truncated or corrupt" in message


def test_nonfinite_values_are_refused_on_read(tmp_path, small_scan):
    array = small_scan.astype(np.float32)
    array[5, 6, 7] = np.nan
    write_tiff(tmp_path / "nan.tif", array, SPACING)
    volume = open_volume(tmp_path / "nan.tif")
    with pytest.raises(UserError, match="NaN"):
        volume.numpy()
    assert volume[0:4].shape == (4, 40, 48)  # blocks without NaN still read
    lo, hi, _, nonfinite = value_range(volume, max_slices=64)
    assert nonfinite and np.isfinite(lo) and np.isfinite(hi)


def test_split_inner_path():
    assert split_inner_path("a/b.h5:/x/y") == (Path("a/b.h5"), "/x/y")
    assert split_inner_path("a/b.zarr") == (Path("a/b.zarr"), None)
    assert split_inner_path("c.tif") == (Path("c.tif"), None)


def test_from_array_checks_shape():
    with pytest.raises(UserError, match="2D"):
        Volume.from_array(np.zeros((4, 4)), 0.1)
    volume = Volume.from_array(np.zeros((2, 3, 4)), 0.1)
    assert volume.physical_size_um == pytest.approx((0.2, 0.3, 0.4))


def test_write_json_atomic_and_numpy_aware(tmp_path):
    write_json(tmp_path / "x.json", {"a": np.float32(1.5), "b": np.arange(3)})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1.5, "b": [0, 1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


@pytest.mark.parametrize("names, warning", [
    ([f"slice_{i:04d}.tif" for i in range(8)], None),
    ([f"slice_{i}.tif" for i in range(0, 16, 2)], None),  # every other slice saved, evenly
    ([f"slice_{i:04d}.tif" for i in (0, 1, 2, 3, 5, 6, 7, 8)], "go from 3 to 5"),
    ([f"slice_{i:04d}_z={i * 0.3:.4f}um.tif" for i in range(8)], None),  # the position's digits step unevenly
    ([f"scan2_slice_{i:04d}.tif" for i in (0, 1, 2, 4, 5)], "go from 2 to 4"),
    ([f"slice_{i:04d}.tif" for i in range(4)] + [f"mask_{i:04d}.tif" for i in range(4)], "2 patterns"),
])
def test_slice_folders_with_missing_or_foreign_slices_warn(tmp_path, caplog, names, warning):
    folder = tmp_path / "slices"
    folder.mkdir()
    for name in names:
        tifffile.imwrite(folder / name, np.zeros((4, 5), np.uint16))
    with caplog.at_level("WARNING", logger="roidetect.volume"):
        volume = open_volume(folder, voxel_size_um=0.05)
    assert volume.shape == (len(names), 4, 5)
    messages = [r.getMessage() for r in caplog.records if r.name == "roidetect.volume"]
    if warning is None:
        assert not messages
    else:
        assert len(messages) == 1 and warning in messages[0] and str(folder) in messages[0]


def test_a_cropped_volume_reads_its_box_and_lies_where_the_box_does(small_scan):
    volume = Volume.from_array(small_scan, SPACING, origin_um=(1.0, 2.0, 3.0))
    box = parse_region("4:20, :30, -16:", volume.shape)
    assert box == (slice(4, 20), slice(0, 30), slice(32, 48))
    crop = volume.crop(box)
    expected = small_scan[4:20, :30, -16:]
    assert crop.shape == expected.shape and crop.dtype == small_scan.dtype
    assert crop.origin_um == pytest.approx((1.0 + 4 * SPACING[0], 2.0, 3.0 + 32 * SPACING[2]))
    for key in (..., 3, -1, (slice(2, 9, 3), 5), (slice(None), slice(-4, None), 0), (slice(5, 5),)):
        np.testing.assert_array_equal(crop[key], expected[key], err_msg=str(key))
    np.testing.assert_array_equal(crop.crop(parse_region("1:3,2:4,:", crop.shape)).numpy(), expected[1:3, 2:4])


@pytest.mark.parametrize("text, message", [("0:4,0:4", "three ranges"), ("0:4,a:,:", "whole voxels"),
                                           ("4:4,:,:", "holds no voxel"), ("0:40,:,:", "reaches beyond"),
                                           ("0:4:2,:,:", "three ranges")])
def test_bad_regions_are_refused_with_what_is_wrong(text, message):
    with pytest.raises(UserError, match=message):
        parse_region(text, (32, 40, 48))


def test_fib_sem_slices_offer_their_pixel_size_when_the_voxel_size_is_asked_for(tmp_path):
    folder = tmp_path / "slice_and_view"
    folder.mkdir()
    fei = "[User]\nDate=12/07/2026\n[Scan]\nPixelWidth=5e-09\nPixelHeight=6.2e-09\n"
    for z in range(4):
        tifffile.imwrite(folder / f"slice_{z:04d}.tif", np.zeros((6, 8), np.uint16),
                         extratags=[(34682, "s", 0, fei, True)])  # FEI_HELIOS
    with pytest.raises(UserError, match=r"--voxel-size SLICE_UM 0.0062 0.005, with y divided by sin\(52 deg\)"):
        open_volume(folder)
    assert open_volume(folder, voxel_size_um=(0.01, 0.0062, 0.005)).shape == (4, 6, 8)


def test_tiff_pixel_sizes_without_a_slice_spacing_are_offered_when_the_voxel_size_is_asked_for(tmp_path):
    image = np.zeros((3, 6, 8), np.uint16)
    # 20,000 pixels per centimetre in y, 40,000 in x: 0.5 um by 0.25 um
    tifffile.imwrite(tmp_path / "cm.tif", image, resolution=(40000, 20000), resolutionunit="CENTIMETER")
    with pytest.raises(UserError, match=r"resolution tags give pixels of 0.5 um \(y\) by 0.25 um \(x\).*"
                                        r"--voxel-size SLICE_UM 0.5 0.25"):
        open_volume(tmp_path / "cm.tif")
    tifffile.imwrite(tmp_path / "dpi.tif", image, resolution=(72, 72), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "none.tif", image, resolution=(2, 2), resolutionunit="NONE")
    tifffile.imwrite(tmp_path / "zero.tif", image, resolution=(3, 3), resolutionunit="CENTIMETER")
    with tifffile.TiffFile(tmp_path / "zero.tif") as tif:  # a resolution of 0/0, as some programs write
        offsets = [page.tags[name].valueoffset for page in tif.pages for name in ("XResolution", "YResolution")]
    with open(tmp_path / "zero.tif", "r+b") as f:
        for offset in offsets:
            f.seek(offset)
            f.write(struct.pack("<II", 0, 0))
    # a program's default dpi, a resolution without a unit, and 0/0
    for name in ("dpi.tif", "none.tif", "zero.tif"):
        with pytest.raises(UserError) as refused:
            open_volume(tmp_path / name)
        assert "resolution tags" not in str(refused.value) and "carries no voxel size" in str(refused.value)
        assert open_volume(tmp_path / name, voxel_size_um=0.05).shape == (3, 6, 8)
    tifffile.imwrite(tmp_path / "ome.tif", image, ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.04, "PhysicalSizeY": 30, "PhysicalSizeYUnit": "nm"})
    with pytest.raises(UserError, match=r"OME metadata give pixels of 0.03 um \(y\) by 0.04 um \(x\) but no "
                                        r"PhysicalSizeZ"):
        open_volume(tmp_path / "ome.tif")
    tifffile.imwrite(tmp_path / "imagej.tif", image, imagej=True, resolution=(4, 4),
                     metadata={"unit": "micron", "axes": "ZYX"})
    with pytest.raises(UserError, match=r"pixels of 0.25 um \(y\) by 0.25 um \(x\)"):
        open_volume(tmp_path / "imagej.tif")  # ImageJ's unit, but no slice spacing


def test_nifti_units_singleton_axes_and_scaled_data(tmp_path, small_scan, caplog, monkeypatch):
    _write_nifti(tmp_path / "mm.nii.gz", small_scan, tuple(s / 1000 for s in SPACING), unit="mm", extra_axes=1)
    monkeypatch.setattr("roidetect.volume.NIFTI_GZIP_WARN_BYTES", small_scan.nbytes - 1)
    with caplog.at_level("WARNING", logger="roidetect.volume"):
        volume = open_volume(tmp_path / "mm.nii.gz")
    assert "gunzip it first" in caplog.text
    np.testing.assert_allclose(volume.spacing_um, SPACING, rtol=1e-6)
    np.testing.assert_array_equal(volume.numpy(), small_scan)
    _write_nifti(tmp_path / "unknown.nii", small_scan, SPACING, unit="unknown")
    with pytest.raises(UserError, match=r"pixdim 0.2 0.05 0.05 \(z y x\) with the unit 'unknown'"):
        open_volume(tmp_path / "unknown.nii")
    assert open_volume(tmp_path / "unknown.nii", voxel_size_um=SPACING).spacing_um == SPACING
    image = nibabel.Nifti1Image(small_scan.T.astype(np.int16), np.eye(4))
    image.header.set_xyzt_units("micron")
    image.header.set_slope_inter(0.5, 10.0)
    nibabel.save(image, tmp_path / "scaled.nii")
    scaled = open_volume(tmp_path / "scaled.nii")
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled[3:5], small_scan[3:5].astype(np.int16) * 0.5 + 10.0)
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 4, 2), np.uint8), np.eye(4)), tmp_path / "4d.nii")
    with pytest.raises(UserError, match="4 dimensions"):
        open_volume(tmp_path / "4d.nii", voxel_size_um=0.05)
