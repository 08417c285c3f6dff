"""The encoded-image formats store exactly what they declare: png and jpeg 2-D images of
their bit depths, dicom what the standard allows (signed CT slices, multi-frame volumes).

dicom: pydicom reads our int16 CT slices and multi-frame volumes back to the same
pixels (negative Hounsfield units included) with the tags a DICOM reader needs;
volume boxes stay in the index; read_region on a volume equals slicing.
png / jpeg: int16, float32, volumes and the wrong bit depths are refused by key.
"""
from __future__ import annotations

import numpy as np
import pytest

from storebench import formats
from storebench.formats import Sample
from storebench.formats.testing import assert_all_same, assert_same


def _hu_slab(depth: int, rows: int, cols: int) -> np.ndarray:
    """CT-like int16 HU (D, H, W): -1024 air around a body, bone up to 3071, no noise."""
    z, y, x = np.mgrid[0:depth, 0:rows, 0:cols]
    r = np.hypot((y - rows / 2) / (rows / 2.4), (x - cols / 2) / (cols / 2.2))
    hu = np.where(r < 1, 40 + 30 * np.cos(x / 3.0 + z), -1024.0)  # soft tissue inside, air outside
    hu = np.where(r < 0.35, 3071 - 200 * r - z, hu)  # dense bone in the middle
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16)


# --------------------------------------------------------------------------- dicom


pydicom = pytest.importorskip("pydicom")
from pydicom.pixels import apply_modality_lut, pixel_array  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
)


def _files(path):
    return sorted((path / "images").iterdir())


def test_pydicom_reads_our_int16_ct_slice_with_negative_hu(tmp_path):
    hu = _hu_slab(1, 40, 48)[0]
    hu[0, :3] = [-1024, -1, 3071]
    samples = [Sample("ct/slice", hu, label=1, boxes=[[2, 3, 20, 30]], box_labels=[5]),
               Sample("ct/(H,W,1)", hu[:7, :9, None].copy(), meta={"PhotometricInterpretation": "MONOCHROME1"})]
    assert hu.min() == -1024 and hu.max() == 3071
    fmt = formats.get("dicom")
    fmt.write(samples, tmp_path / "ds")
    sets = [pydicom.dcmread(f) for f in _files(tmp_path / "ds")]
    for s, ds in zip(samples, sets):
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == SecondaryCaptureImageStorage and "NumberOfFrames" not in ds
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 1)
        assert ds.SamplesPerPixel == 1 and (ds.Rows, ds.Columns) == s.image.shape[:2]
        assert (ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType) == (1, 0, "US")
        arr = ds.pixel_array
        assert arr.dtype == np.int16 and np.array_equal(arr, s.image.reshape(arr.shape))
        assert np.array_equal(apply_modality_lut(arr, ds), arr)  # identity rescale: stored values are HU
    assert [ds.PhotometricInterpretation for ds in sets] == ["MONOCHROME2", "MONOCHROME1"]
    with fmt.open(tmp_path / "ds") as r:
        assert_all_same(samples, list(r))
        assert r[0].image.min() == -1024


@pytest.mark.parametrize("dtype, sop_class", [
    ("int16", MultiFrameGrayscaleWordSecondaryCaptureImageStorage),
    ("uint16", MultiFrameGrayscaleWordSecondaryCaptureImageStorage),
    ("uint8", MultiFrameGrayscaleByteSecondaryCaptureImageStorage),
])
def test_pydicom_reads_our_multi_frame_volume(dtype, sop_class, tmp_path):
    hu = _hu_slab(7, 24, 20)
    if dtype == "int16":
        vol = hu
    elif dtype == "uint16":
        vol = (hu.astype(np.int32) + 1024).astype(np.uint16) * 16  # 12 bits, shifted to the top
    else:
        vol = ((hu.astype(np.int32) + 1024) // 17).astype(np.uint8)
    boxes = [[0, 0, 0, 20, 24, 7], [2.5, 3, 1, 10, 12.5, 4]]
    samples = [Sample("case 0", vol[..., None], label=2, boxes=boxes, box_labels=[1, 7],
                      meta={"spacing": "0.7x0.7x2.5"}),
               Sample("case 1/thin", vol[3:4, ::2, ::3, None].copy()),  # one frame
               Sample("case 2", vol[::-1, :5, :6, None].copy(), meta={"PhotometricInterpretation": "MONOCHROME1"})]
    fmt = formats.get("dicom")
    fmt.write(samples, tmp_path / "ds")
    files = _files(tmp_path / "ds")
    assert len(files) == len(samples)  # one multi-frame file per volume
    for s, f in zip(samples, files):
        ds = pydicom.dcmread(f)
        d, h, w, _ = s.image.shape
        assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == sop_class
        assert (ds.NumberOfFrames, ds.Rows, ds.Columns, ds.SamplesPerPixel) == (d, h, w, 1)
        bits = 8 * s.image.itemsize
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (bits, bits, bits - 1)
        assert ds.PixelRepresentation == (1 if dtype == "int16" else 0)
        assert ds.PhotometricInterpretation == "MONOCHROME2"  # the multi-frame SC IODs allow nothing else
        assert ds.PresentationLUTShape == "IDENTITY" and ds.BurnedInAnnotation == "NO"
        assert (ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType) == (1, 0, "US")
        assert ds.FrameIncrementPointer == 0x00182002 and list(ds.FrameLabelVector) == [str(z) for z in range(d)]
        arr = ds.pixel_array
        assert arr.dtype == s.image.dtype and np.array_equal(arr.reshape(s.image.shape), s.image)
        if d > 1:
            assert arr.shape == (d, h, w)
            with open(f, "rb") as fh:  # frame z is slice z: pydicom's frame-by-frame read agrees
                assert np.array_equal(pixel_array(fh, index=d - 1), s.image[d - 1, :, :, 0])
    if dtype == "int16":
        assert pydicom.dcmread(files[0]).pixel_array.min() == -1024
    with fmt.open(tmp_path / "ds") as r:
        assert_all_same(samples, list(r))
        assert r[0].boxes.shape == (2, 6) and r[1].boxes.shape == (0, 6)
        np.testing.assert_array_equal(r[0].boxes, np.float32(boxes))


def test_read_region_on_a_dicom_volume_equals_slicing(tmp_path):
    vol = _hu_slab(9, 16, 12)[..., None]
    s = Sample("ct", vol, boxes=[[1, 1, 1, 5, 5, 5]], box_labels=[3])
    fmt = formats.get("dicom")
    fmt.write([s, Sample("small", vol[:2, :3, :4].copy())], tmp_path / "ds")
    regions = [(slice(0, 9), slice(0, 16), slice(0, 12)),  # whole
               (slice(2, 6), slice(3, 11), slice(4, 9)),
               (slice(8, 9), slice(15, 16), slice(11, 12)),  # one voxel in the far corner
               (slice(0, 1), slice(0, 16), slice(5, 6))]
    with fmt.open(tmp_path / "ds") as r:
        assert fmt.partial_reads is False  # the whole file is decoded, then sliced
        for reg in regions:
            got = r.read_region(0, reg)
            assert got.dtype == np.int16 and got.shape == vol[reg].shape
            assert np.array_equal(got, vol[reg]) and got.flags.c_contiguous and got.flags.writeable
        got = r.read_regions([1, 0], [(slice(1, 2), slice(0, 3), slice(2, 4)), regions[1]])
        assert np.array_equal(got[0], vol[1:2, 0:3, 2:4]) and np.array_equal(got[1], vol[regions[1]])
        with pytest.raises(IndexError, match="ct"):
            r.read_region(0, (slice(0, 10), slice(0, 16), slice(0, 12)))  # past the last frame
        with pytest.raises(IndexError):
            r.read_region(0, (slice(0, 4), slice(0, 4)))  # a volume needs three slices
        assert_same(s, r[0])


def test_dicom_golden_files_keep_their_meaning():
    """The golden dataset (uint8 / uint16 / RGB written before int16 and volumes) reads as before."""
    from pathlib import Path

    from storebench.formats.testing import golden_samples

    golden = Path(__file__).parent / "golden" / "dicom"
    fmt = formats.get("dicom")
    with fmt.open(golden, verify=True) as r:
        assert r.verify() == []
        assert_all_same(golden_samples(fmt.modes), list(r))
    for f in _files(golden):
        assert pydicom.dcmread(f).PixelRepresentation == 0


# --------------------------------------------------------------------------- png and jpeg


def test_png_modes_are_8_and_16_bit_2d_only():
    from storebench.formats import png

    assert png.MODES == {("uint8", c) for c in range(5)} | {("uint16", 0), ("uint16", 1)}
    assert formats.get("png").modes == png.MODES
    assert formats.get("zip").modes == png.MODES  # zip's default encoding stores PNG members
    assert formats.get("jpeg").modes == {("uint8", 0), ("uint8", 1), ("uint8", 3)}


@pytest.mark.parametrize("name", ["png", "jpeg"])
@pytest.mark.parametrize("image", [
    np.array([[-1024, 0], [1, 3071]], np.int16),
    np.array([[0.5, -0.0]], np.float32),
    np.zeros((2, 3, 4, 1), np.uint8),  # a volume
    np.zeros((2, 3, 4, 1), np.int16),
], ids=["int16", "float32", "uint8 volume", "int16 volume"])
def test_png_and_jpeg_refuse_int16_float32_and_volumes_by_key(name, image, tmp_path):
    fmt = formats.get(name)
    ok = Sample("fine", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=rf"key 'ct/refused 1': {name} cannot store {image.dtype} images") as err:
        fmt.write([ok, Sample("ct/refused 1", image)], tmp_path / "ds")
    assert "it stores" in str(err.value) and "uint8" in str(err.value)  # says what it does store
    assert not (tmp_path / "ds").exists()


def test_jpeg_refuses_uint16_and_png_stores_uint16_grey(tmp_path):
    grey16 = (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4)
    with pytest.raises(ValueError, match="key 'xray': jpeg cannot store uint16"):
        formats.get("jpeg").write([Sample("xray", grey16)], tmp_path / "j")
    with pytest.raises(ValueError, match="key 'rgb16': png cannot store uint16"):
        formats.get("png").write([Sample("rgb16", np.zeros((2, 2, 3), np.uint16))], tmp_path / "p")
    formats.get("png").write([Sample("xray", grey16)], tmp_path / "p")
    with formats.open_dataset(tmp_path / "p") as r:
        assert r[0].image.dtype == np.uint16 and np.array_equal(r[0].image, grey16)
