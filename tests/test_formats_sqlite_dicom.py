"""Checks specific to sqlite and dicom beyond the shared conformance suite.

sqlite: the file is plain SQL (any SQLite client reads it), options, the key
index, read-only readers, batched IN queries, damage.
dicom: the files are standard DICOM that pydicom reads back exactly, modes
outside DICOM's are refused, real pydicom test files round-trip (signed ones
as int16), and the VinBigData display transform (VOI LUT, MONOCHROME1
inversion, resize).  Signed images and volumes: tests/test_formats_images.py.
"""
from __future__ import annotations

import contextlib
import sqlite3

import numpy as np
import pytest

from storebench import fixtures, formats
from storebench.formats import ChecksumError, DatasetError, Sample
from storebench.formats._record import decode
from storebench.formats.testing import assert_all_same, assert_same

pydicom = pytest.importorskip("pydicom")
from pydicom.pixels import apply_modality_lut, apply_voi_lut  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage  # noqa: E402

from storebench.fixtures.dicom import BUNDLED, bundled_files, from_dicom_files  # noqa: E402
from storebench.formats.dicom import display_transform  # noqa: E402


def _tiny(n: int) -> list[Sample]:
    rng = np.random.default_rng(0)
    return [Sample(f"s{i:05d}", rng.integers(0, 255, (2, 3), dtype=np.uint8), label=i % 7)
            for i in range(n)]


def _same_size_garbage(f):
    f.write_bytes(np.random.default_rng(1).bytes(f.stat().st_size))


# --------------------------------------------------------------------------- sqlite


def test_sqlite_file_is_plain_sql(tmp_path):
    samples = list(fixtures.make_dataset("cifar", 30))
    formats.get("sqlite").write(samples, tmp_path / "ds")
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == \
        ["checksums.u32", "data.sqlite", "storebench.json"]  # no journal or WAL left behind
    con = sqlite3.connect(tmp_path / "ds" / "data.sqlite")
    rows = con.execute("SELECT pos, key, label, record FROM samples ORDER BY pos").fetchall()
    assert [(p, k, lab) for p, k, lab, _ in rows] == [(i, s.key, s.label) for i, s in enumerate(samples)]
    assert_all_same(samples, [decode(r[3]) for r in rows])
    assert con.execute("PRAGMA page_size").fetchone() == (4096,)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    plan = " ".join(str(r) for r in con.execute(
        "EXPLAIN QUERY PLAN SELECT record FROM samples WHERE key = ?", ("x",)))
    assert "USING INDEX samples_key" in plan
    con.close()


def test_sqlite_page_size_option(tmp_path):
    fmt = formats.get("sqlite", page_size=65536)
    assert fmt.id == "sqlite[65536]"
    samples = _tiny(20)
    fmt.write(samples, tmp_path / "ds")
    with contextlib.closing(sqlite3.connect(tmp_path / "ds" / "data.sqlite")) as con:
        assert con.execute("PRAGMA page_size").fetchone() == (65536,)
    with formats.open_dataset(tmp_path / "ds") as r:
        assert r.format == fmt
        assert_all_same(samples, list(r))
    for bad in (1000, 256, 131072, "4096"):
        with pytest.raises(ValueError, match="page_size"):
            formats.get("sqlite", page_size=bad)


def test_sqlite_get_uses_the_key_column_and_batches_chunk(tmp_path):
    samples = _tiny(1300)
    formats.get("sqlite").write(samples, tmp_path / "ds")
    with formats.get("sqlite").open(tmp_path / "ds") as r:
        assert_same(samples[777], r.get("s00777"))
        assert r._key_pos is None  # no key list was loaded for get()
        assert "s01299" in r and "s01300" not in r
        idx = list(range(1299, -1, -2)) + [5, 5, 0, 1299]  # > 500 distinct rows, repeats
        assert_all_same([samples[i] for i in idx], r.read_batch(idx))
    crc = tmp_path / "ds" / "checksums.u32"
    raw = bytearray(crc.read_bytes())
    raw[4 * 777] ^= 1
    crc.write_bytes(bytes(raw))
    with formats.get("sqlite").open(tmp_path / "ds", verify=True) as r:  # get() checks too
        assert_same(samples[776], r.get("s00776"))
        with pytest.raises(ChecksumError, match="s00777"):
            r.get("s00777")


def test_sqlite_reader_is_read_only(tmp_path):
    formats.get("sqlite").write(_tiny(5), tmp_path / "ds")
    f = tmp_path / "ds" / "data.sqlite"
    before = f.read_bytes()
    with formats.get("sqlite").open(tmp_path / "ds") as r:
        list(r)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            r.handles.execute("DELETE FROM samples")
    assert f.read_bytes() == before


def test_sqlite_damage_is_a_dataset_error(tmp_path):
    fmt = formats.get("sqlite")
    fmt.write(_tiny(50), tmp_path / "ds")
    f = tmp_path / "ds" / "data.sqlite"
    with contextlib.closing(sqlite3.connect(f, isolation_level=None)) as con:  # the file keeps its size
        con.execute("DELETE FROM samples WHERE pos >= 40")
    with pytest.raises(DatasetError, match="rows up to 39, the manifest says 50"):
        fmt.open(tmp_path / "ds")
    _same_size_garbage(f)
    with pytest.raises(DatasetError, match="data.sqlite is damaged"):
        fmt.open(tmp_path / "ds")
    f.unlink()
    with pytest.raises(DatasetError, match="data.sqlite is missing"):
        fmt.open(tmp_path / "ds")


def test_sqlite_unopenable_file_is_a_dataset_error_and_unreadable_a_permission_error(tmp_path, monkeypatch):
    """SQLite's "unable to open database file" names the dataset; EACCES is not called damage."""
    from storebench.formats import sqlite as sqlite_format

    fmt = formats.get("sqlite")
    fmt.write(_tiny(3), tmp_path / "ds")

    def cannot(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")
    with monkeypatch.context() as m:
        m.setattr(sqlite_format, "_connect", cannot)
        with pytest.raises(DatasetError, match=f"{tmp_path / 'ds'}: data.sqlite cannot be opened: unable to open"):
            fmt.open(tmp_path / "ds")
    real_open = sqlite_format.os.open

    def denied(path, *args, **kwargs):
        if str(path).endswith("data.sqlite"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(sqlite_format.os, "open", denied)
    with pytest.raises(PermissionError, match="data.sqlite"):
        fmt.open(tmp_path / "ds")


def test_sqlite_schema_that_is_not_utf8_is_a_dataset_error(tmp_path):
    """Fuzz seed sqlite 276: flipped schema text made the first query raise UnicodeDecodeError."""
    fmt = formats.get("sqlite")
    fmt.write(_tiny(3), tmp_path / "ds")
    f = tmp_path / "ds" / "data.sqlite"
    raw = bytearray(f.read_bytes())
    at = raw.index(b"samples_key")  # the index name inside sqlite_master's CREATE INDEX text
    raw[at:at + 2] = b"\xc6\xc6"
    f.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="data.sqlite is damaged"):
        fmt.open(tmp_path / "ds")


# --------------------------------------------------------------------------- dicom


def test_dicom_refuses_a_side_over_65535_by_key(tmp_path):
    """Rows and Columns are 16-bit: a side of 65536 is a ValueError naming key and limit, not
    pydicom's OSError; 65535 is stored."""
    fmt = formats.get("dicom")
    assert fmt.max_image_side == 65535
    wide = Sample("too wide", np.zeros((1, 65536), np.uint8))
    with pytest.raises(ValueError, match=r"image of key 'too wide': 1x65536 has a side over 65535"):
        fmt.write([wide], tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    fmt.write([Sample("widest", np.arange(65535, dtype=np.uint16).reshape(1, -1))], tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        assert r.verify() == [] and r[0].image.shape == (1, 65535)


@pytest.mark.parametrize("damage", ["truncated inside a US tag", "bad VR"])
def test_dicom_header_damage_pydicom_raises_untyped_is_a_dataset_error(damage, tmp_path):
    """Fuzz seeds dicom 56 and 91: pydicom's BytesLengthException (a truncated US value) and
    NotImplementedError (an unknown VR) were plain Exceptions escaping a read."""
    fmt = formats.get("dicom")
    fmt.write(_tiny(2), tmp_path / "ds")
    f = tmp_path / "ds" / "images" / "00000001.dcm"
    raw = bytearray(f.read_bytes())
    if damage == "bad VR":
        at = raw.index(bytes.fromhex("2800 0400"))  # (0028,0004) PhotometricInterpretation
        raw[at + 4:at + 6] = b"C\xb1"
    else:
        at = raw.index(bytes.fromhex("2800 0301"))  # (0028,0103) PixelRepresentation, VR US
        del raw[at + 9:]  # one byte of its two-byte value
    f.write_bytes(bytes(raw))
    with fmt.open(tmp_path / "ds") as r:
        assert_same(_tiny(2)[0], r[0])
        with pytest.raises(DatasetError, match="00000001.dcm is damaged"):
            r[1]
        if damage == "bad VR":
            assert r.verify() == [_tiny(2)[1].key]
        else:  # verify() sizes the files first
            with pytest.raises(DatasetError, match="images/ holds 2 files"):
                r.verify()




def test_dicom_files_are_standard(tmp_path):
    rng = np.random.default_rng(0)
    samples = [Sample("grey8", rng.integers(0, 256, (5, 7), dtype=np.uint8), label=1),
               Sample("grey16", rng.integers(0, 65536, (4, 3, 1), dtype=np.uint16)),
               Sample("rgb", rng.integers(0, 256, (3, 3, 3), dtype=np.uint8), boxes=[[0, 0, 2, 2]],
                      box_labels=[4]),
               Sample("cr", rng.integers(0, 4096, (6, 2), dtype=np.uint16),
                      meta={"PhotometricInterpretation": "MONOCHROME1"})]
    fmt = formats.get("dicom")
    fmt.write(samples, tmp_path / "ds")
    files = sorted((tmp_path / "ds" / "images").iterdir())
    assert [f.name for f in files] == [f"{i:08d}.dcm" for i in range(4)]
    sets = [pydicom.dcmread(f) for f in files]
    for s, ds in zip(samples, sets):
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == SecondaryCaptureImageStorage
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.BitsAllocated == ds.BitsStored == 8 * s.image.itemsize and ds.PixelRepresentation == 0
        assert "NumberOfFrames" not in ds and "RescaleSlope" not in ds  # unsigned 2-D: as before volumes
        assert np.array_equal(ds.pixel_array, s.image.reshape(ds.pixel_array.shape))
        assert ds.pixel_array.dtype == s.image.dtype
    assert [ds.PhotometricInterpretation for ds in sets] == \
        ["MONOCHROME2", "MONOCHROME2", "RGB", "MONOCHROME1"]
    assert sets[2].PlanarConfiguration == 0 and sets[2].SamplesPerPixel == 3
    assert len({ds.SOPInstanceUID for ds in sets}) == 4
    assert len({(ds.StudyInstanceUID, ds.SeriesInstanceUID) for ds in sets}) == 1
    assert sets[0].StudyInstanceUID != sets[0].SeriesInstanceUID
    with fmt.open(tmp_path / "ds") as r:
        assert_all_same(samples, list(r))
        assert r.dataset(-1).SOPInstanceUID == sets[3].SOPInstanceUID
        with pytest.raises(IndexError):
            r.dataset(4)
        assert r.info()["pydicom"] == pydicom.__version__


def test_dicom_modes_are_what_the_standard_allows():
    """Grey 8/16-bit unsigned and signed images and volumes, 8-bit RGB images; nothing else."""
    grey = {(dt, c) for dt in ("uint8", "uint16", "int16") for c in (0, 1)}
    volumes = {(dt, 1, formats.VOLUME) for dt in ("uint8", "uint16", "int16")}
    assert formats.get("dicom").modes == grey | {("uint8", 3)} | volumes


@pytest.mark.parametrize("mode", sorted(formats.ALL_MODES - formats.get("dicom").modes))
def test_dicom_refuses_modes_it_does_not_store(mode, tmp_path):
    dtype, channels = mode[:2]
    shape = (2, 2, channels) if channels else (2, 2)
    image = np.zeros((3, *shape) if len(mode) == 3 else shape, dtype)
    with pytest.raises(ValueError, match=f"key 'x': dicom cannot store {dtype}"):
        formats.get("dicom").write([Sample("x", image)], tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_dicom_refuses_a_volume_frame_side_over_65535_by_key(tmp_path):
    """Rows and Columns of a volume are its H and W, checked per frame."""
    fmt = formats.get("dicom")
    with pytest.raises(ValueError, match=r"key 'wide vol': 1x65536 has a side over 65535"):
        fmt.write([Sample("wide vol", np.zeros((2, 1, 65536, 1), np.int16))], tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_dicom_damage_is_a_dataset_error(tmp_path):
    fmt = formats.get("dicom")
    fmt.write(_tiny(3), tmp_path / "ds")
    f = tmp_path / "ds" / "images" / "00000001.dcm"
    _same_size_garbage(f)
    with fmt.open(tmp_path / "ds") as r:
        assert_same(_tiny(3)[0], r[0])
        with pytest.raises(DatasetError, match="00000001.dcm is damaged"):
            r[1]
        f.unlink()
        with pytest.raises(DatasetError, match="00000001.dcm is missing"):
            list(r)


def test_bundled_dicom_files_round_trip(tmp_path):
    """Real CT/MR/NM/US files: fixture -> dicom format -> back, equal to pydicom's pixel_array."""
    paths = bundled_files()
    samples = list(from_dicom_files(paths))
    assert [s.key for s in samples] == [n.removesuffix(".dcm") for n in BUNDLED]
    fmt = formats.get("dicom")
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        got = list(r)
    assert_all_same(samples, got)
    for i, (p, s) in enumerate(zip(paths, got)):
        ref = pydicom.dcmread(p).pixel_array
        assert s.image.dtype == ref.dtype.newbyteorder("=") and s.image.shape == ref.shape, p.name
        assert np.array_equal(s.image, ref), p.name
        stored = pydicom.dcmread(tmp_path / "ds" / "images" / f"{i:08d}.dcm")  # signed stays signed
        assert stored.PixelRepresentation == s.meta["PixelRepresentation"] == int(ref.dtype.kind == "i"), p.name
        assert stored.pixel_array.dtype == s.image.dtype and np.array_equal(stored.pixel_array, ref), p.name
    by_key = {s.key: s for s in got}
    assert by_key["CT_small"].meta == {"Modality": "CT", "PhotometricInterpretation": "MONOCHROME2",
                                       "BitsStored": 16, "PixelRepresentation": 1}
    assert by_key["CT_small"].image.dtype == np.int16
    assert by_key["JPEG2000"].image.min() < 0  # negative values survive
    assert np.array_equal(by_key["MR_small"].image, by_key["MR_small_bigendian"].image)
    assert by_key["examples_rgb_color"].image.shape == (240, 320, 3)


@pytest.mark.parametrize("name", ["SC_rgb_rle_2frame.dcm", "rtdose_1frame.dcm"])
def test_from_dicom_files_refuses_what_a_sample_cannot_hold(name):
    with pytest.raises(ValueError, match="frames|uint32"):
        list(from_dicom_files(bundled_files([name])))


def test_from_dicom_files_widens_signed_8_bit_to_int16(tmp_path):
    ds = pydicom.dcmread(bundled_files(["image_dfl.dcm"])[0])  # uint8 grey, re-tagged as signed
    ds.PixelRepresentation = 1
    ds.save_as(tmp_path / "s8.dcm")
    ref = pydicom.dcmread(tmp_path / "s8.dcm").pixel_array
    assert ref.dtype == np.int8 and ref.min() < 0
    (s,) = from_dicom_files([tmp_path / "s8.dcm"])
    assert s.image.dtype == np.int16 and np.array_equal(s.image, ref)
    assert s.meta["PixelRepresentation"] == 1 and s.meta["BitsStored"] == 8


def _as_monochrome1(src, dst):
    ds = pydicom.dcmread(src)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(dst)
    return dst


def test_display_transform_applies_voi_lut_and_resizes():
    ds = pydicom.dcmread(bundled_files(["MR_small.dcm"])[0])  # window 600 / 1600
    out = display_transform(ds)
    assert out.dtype == np.uint8 and out.shape == (64, 64)
    voi = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float32)
    expect = ((voi - voi.min()) * (255 / (voi.max() - voi.min()))).astype(np.uint8)
    assert np.array_equal(out, expect)
    assert out.min() == 0 and out.max() == 255
    ct = pydicom.dcmread(bundled_files(["JPEG2000.dcm"])[0])  # 1024 x 256
    assert display_transform(ct, size=64).shape == (256, 64)


def test_display_transform_inverts_monochrome1(tmp_path):
    """Bright in the raw pixels is dark on screen for MONOCHROME1, also after storage."""
    src = bundled_files(["MR_small.dcm"])[0]
    mono1 = _as_monochrome1(src, tmp_path / "mono1.dcm")
    a = display_transform(pydicom.dcmread(src)).astype(int)
    b = display_transform(pydicom.dcmread(mono1)).astype(int)
    assert np.abs(a + b - 255).max() <= 1  # 255 - x, up to truncation
    raw = pydicom.dcmread(src).pixel_array
    bright, dark = np.unravel_index(raw.argmax(), raw.shape), np.unravel_index(raw.argmin(), raw.shape)
    assert a[bright] == 255 and b[bright] == 0 and b[dark] == 255
    # Through the format: the MONOCHROME1 tag survives, so the stored file still displays right.
    fmt = formats.get("dicom")
    fmt.write(from_dicom_files([src, mono1]), tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        stored = [r.dataset(0), r.dataset(1)]
        assert np.array_equal(r[0].image, r[1].image)  # the pixels are the same...
    assert [d.PhotometricInterpretation for d in stored] == ["MONOCHROME2", "MONOCHROME1"]
    c, d = (display_transform(x).astype(int) for x in stored)
    assert np.abs(c + d - 255).max() <= 1 and d[bright] == 0  # ...the display is inverted


def test_display_transform_edge_cases():
    flat = pydicom.dcmread(bundled_files(["MR_small.dcm"])[0])
    flat.PixelData = bytes(len(flat.PixelData))  # a constant image
    del flat.WindowCenter, flat.WindowWidth
    assert not display_transform(flat).any()
    with pytest.raises(ValueError, match="grayscale"):
        display_transform(pydicom.dcmread(bundled_files(["examples_rgb_color.dcm"])[0]))
