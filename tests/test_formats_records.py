"""The key-value, record and archive formats store CT volumes that their own libraries read back.

For pickle, shelve, sqlite, lmdb, tfrecord, parquet, tar and zip: an int16
``(D, H, W, 1)`` CT volume in Hounsfield units (with ``(N, 6)`` lesion boxes,
and one volume without) written by storebench is read by the format's own
library (``pickle.load``, ``shelve.open``, ``sqlite3`` and ``lmdb`` with our
record decoder, or ``pickle.loads`` for ``lmdb[pickle]``, ``tfrecord``'s reader,
``pyarrow.parquet``, ``tarfile`` with ``np.load``, ``zipfile``) to the same pixels and boxes.  Each format's bound
builds the same Samples its reader returns for volumes and for int16 and
float32 images, and tar puts only uint8 2-D images in PNG members.
"""
from __future__ import annotations

import io
import json
import pickle
import shelve
import sqlite3
import struct
import tarfile
import zipfile
from pathlib import Path

import lmdb
import numpy as np
import pytest

from storebench import fixtures, formats
from storebench.formats import NO_BOXES_3D, Sample, lmdb_
from storebench.formats._bound import OPS, NoBound, Pool
from storebench.formats._record import MAGIC_VOLUME, decode
from storebench.formats.testing import assert_all_same, assert_same


@pytest.fixture(scope="module")
def ct() -> list[Sample]:
    """Two small CT volumes of the ``ct`` preset (one with lesion boxes, one without), and a third shape."""
    out = list(fixtures.make_dataset("ct", 2, side=32, slices=8))
    assert len(out[0].boxes) and not len(out[1].boxes) and out[0].image.min() < 0
    rng = np.random.default_rng(0)
    out.append(Sample("ct/odd", rng.integers(-1024, 3072, (5, 7, 9, 1)).astype(np.int16), 1,
                      [[0, 1, 0, 9, 7, 5]], [1], {"modality": "CT"}))
    return out


def _bytes_equal(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _write(name: str, samples, tmp_path: Path, **opts) -> Path:
    fmt = formats.get(name, **opts)
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        assert_all_same(samples, list(r))
    return tmp_path / "ds"


# --------------------------------------------------------------------------- own libraries


def test_pickle_file_is_pickle_load_of_each_sample(ct, tmp_path):
    ds = _write("pickle", ct, tmp_path)
    got = []
    with open(ds / "samples.pkl", "rb") as f:
        while f.tell() < (ds / "samples.pkl").stat().st_size:
            got.append(pickle.load(f))  # records lie back to back
    assert_all_same(ct, got)
    assert got[1].boxes.shape == (0, 6)


def test_shelve_open_gives_each_volume_by_key(ct, tmp_path):
    ds = _write("shelve", ct, tmp_path)
    with shelve.open(str(ds / "shelf"), "r") as shelf:
        assert sorted(shelf.keys()) == sorted(s.key for s in ct)
        for s in ct:
            assert_same(s, shelf[s.key])


def test_sqlite_rows_hold_volume_records(ct, tmp_path):
    ds = _write("sqlite", ct, tmp_path)
    con = sqlite3.connect(ds / "data.sqlite")
    try:
        rows = con.execute("SELECT pos, key, label, record FROM samples ORDER BY pos").fetchall()
    finally:
        con.close()
    assert [(p, k, lab) for p, k, lab, _ in rows] == [(i, s.key, s.label) for i, s in enumerate(ct)]
    for s, (*_, record) in zip(ct, rows):
        assert record[:4] == MAGIC_VOLUME
        assert_same(s, decode(record))


def test_lmdb_values_are_volume_records(ct, tmp_path):
    ds = _write("lmdb", ct, tmp_path)
    with lmdb.open(str(ds / "data.mdb"), subdir=False, readonly=True, lock=False) as env, env.begin() as txn:
        for i, s in enumerate(ct):
            value = txn.get(struct.pack(">Q", i))
            assert value[:4] == MAGIC_VOLUME
            got = decode(value)
            assert_same(s, got)
            _bytes_equal(s.image, got.image)


def test_lmdb_pickle_is_what_real_pythons_reader_reads(ct, tmp_path, monkeypatch):
    """``encoding="pickle"``: the "three ways" article's ``pickle.loads(txn.get(f"{i:08}".encode("ascii")))``
    gives each sample as a plain dict; the record variant is unchanged (and does not unpickle)."""
    fmt = formats.get("lmdb", encoding="pickle")
    assert fmt.id == "lmdb[pickle]" and fmt.executes_code and fmt.bound.name == "bare-lmdb[pickle]"
    default = formats.get("lmdb")
    assert default.id == "lmdb" and not default.executes_code and default.bound.name == "bare-lmdb"
    with pytest.raises(ValueError, match="encoding: must be one of record, pickle, got 'json'"):
        formats.get("lmdb", encoding="json")
    cifar = list(fixtures.make_dataset("cifar", 13))
    for samples, name in ((ct, "ct"), (cifar, "cifar")):
        ds = _write("lmdb", samples, tmp_path / name, encoding="pickle")
        with lmdb.open(str(ds / "data.mdb"), subdir=False, readonly=True, lock=False) as env, \
                env.begin() as txn:
            for i, s in enumerate(samples):
                d = pickle.loads(txn.get(f"{i:08}".encode("ascii")))
                assert type(d) is dict and sorted(d) == ["box_labels", "boxes", "image", "key", "label", "meta"]
                assert (d["key"], d["label"], d["meta"]) == (s.key, s.label, dict(s.meta))
                _bytes_equal(s.image, d["image"])
                _bytes_equal(s.boxes, d["boxes"])
                _bytes_equal(s.box_labels, d["box_labels"])
            assert txn.get(struct.pack(">Q", 0)) is None  # no record-variant keys
    with lmdb.open(str(tmp_path / "cifar" / "ds" / "data.mdb"), subdir=False, readonly=True, lock=False) as env, \
            env.begin() as txn:
        assert pickle.loads(txn.get(b"00000012"))["key"] == cifar[12].key == "cifar/0000012"
    monkeypatch.setattr(lmdb_, "MAX_PICKLED", 12)  # 10**8 in truth: 9-digit keys would sort out of order
    with pytest.raises(ValueError, match=r"key 'cifar/0000012': lmdb\[pickle\] holds at most 12 samples"):
        fmt.write(cifar, tmp_path / "over")
    assert not (tmp_path / "over").exists()
    formats.get("lmdb").write(cifar, tmp_path / "records")  # the record variant has no such limit


def test_lmdb_pickle_damage_is_a_dataset_error(tmp_path):
    """A value that does not unpickle, or unpickles to something else than the sample dict, names the sample."""
    fmt = formats.get("lmdb", encoding="pickle")
    samples = list(fixtures.make_dataset("cifar", 3))
    fmt.write(samples, tmp_path / "ds")
    path = tmp_path / "ds" / "data.mdb"
    with lmdb.open(str(path), subdir=False, readonly=True, lock=False) as env, env.begin() as txn:
        values = [txn.get(f"{i:08}".encode("ascii")) for i in range(3)]
    raw = path.read_bytes()  # values lie in the file as written: damage them in place
    at = [raw.index(v) for v in values]
    raw = bytearray(raw)
    raw[at[1] + 40:at[1] + len(values[1])] = bytes(len(values[1]) - 40)
    raw[at[2]:at[2] + len(values[2])] = pickle.dumps([1, 2], protocol=5).ljust(len(values[2]), b".")
    path.write_bytes(bytes(raw))
    with fmt.open(tmp_path / "ds") as r:
        assert_same(samples[0], r[0])
        with pytest.raises(formats.DatasetError, match=r"data.mdb: sample 1 does not unpickle"):
            r[1]
        with pytest.raises(formats.DatasetError, match=r"sample 2 does not unpickle: ValueError\('not a dict"):
            r[2]
        with pytest.raises(formats.DatasetError, match="sample 1"):
            list(r)


def test_tfrecord_reader_gives_the_volume_features(ct, tmp_path):
    from tfrecord.reader import tfrecord_loader
    ds = _write("tfrecord", ct, tmp_path)
    got = list(tfrecord_loader(str(ds / "data.tfrecord"), None))
    assert len(got) == len(ct)
    for s, d in zip(ct, got):
        assert d["shape"].tolist() == list(s.image.shape)  # (D, H, W, C): four ints
        assert bytes(d["dtype"]) == b"int16"
        _bytes_equal(s.image, np.frombuffer(bytes(d["image"]), np.int16).reshape(d["shape"].tolist()))
        np.testing.assert_array_equal(d["boxes"].reshape(-1, 6), s.boxes)
        np.testing.assert_array_equal(d["box_labels"], s.box_labels)
        assert bytes(d["key"]).decode() == s.key and int(d["label"][0]) == s.label


def test_parquet_table_has_depth_and_six_float_boxes(ct, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    ds = _write("parquet", ct, tmp_path, row_group_size=2)
    table = pq.read_table(ds / "data.parquet")
    assert table.schema.field("boxes").type == pa.list_(pa.list_(pa.float32(), 6))
    for s, row in zip(ct, table.to_pylist(), strict=True):
        assert (row["depth"], row["height"], row["width"], row["channels"]) == s.image.shape
        assert row["dtype"] == "int16" and row["image"] == s.image.tobytes()
        assert row["boxes"] == s.boxes.tolist() and row["box_labels"] == s.box_labels.tolist()
        assert (json.loads(row["meta"]) if row["meta"] else {}) == s.meta


def test_parquet_images_have_depth_zero_and_files_without_depth_read(tmp_path):
    """2-D images have depth 0; a file written before the depth column existed still reads."""
    import pyarrow.parquet as pq
    images = [Sample("hu", np.arange(-6, 6, dtype=np.int16).reshape(3, 4), 1, [[0, 0, 2, 3]], [5]),
              Sample("mri", np.array([[np.nan, -0.0], [1.5, np.inf]], np.float32)[..., None], 2)]
    ds = _write("parquet", images, tmp_path)
    file = ds / "data.parquet"
    table = pq.read_table(file)
    assert table.column("depth").to_pylist() == [0, 0]
    pq.write_table(table.drop_columns(["depth"]), file)  # the layout of storebench before volumes
    manifest = json.loads((ds / "storebench.json").read_text())
    manifest["files"]["data.parquet"] = file.stat().st_size
    (ds / "storebench.json").write_text(json.dumps(manifest))
    with formats.get("parquet").open(ds) as r:
        assert_all_same(images, list(r))
        _bytes_equal(images[1].image, r[1].image)  # NaN and -0.0 bits kept


def test_tar_volume_member_is_a_npy_that_np_load_reads(ct, tmp_path):
    ds = _write("tar", ct, tmp_path)
    with tarfile.open(ds / "shard-000000.tar") as tf:
        assert tf.getnames() == [f"s{i:09d}.{ext}" for i in range(len(ct)) for ext in ("npy", "json")]
        for i, s in enumerate(ct):
            _bytes_equal(s.image, np.load(io.BytesIO(tf.extractfile(f"s{i:09d}.npy").read())))
            meta = json.loads(tf.extractfile(f"s{i:09d}.json").read())
            assert meta["shape"] == list(s.image.shape) and meta["boxes"] == s.boxes.tolist()


def test_tar_puts_only_uint8_images_in_png_members(tmp_path):
    samples = [Sample("u8", np.zeros((4, 5, 3), np.uint8)), Sample("u16", np.ones((4, 5), np.uint16)),
               Sample("i16", np.full((4, 5, 1), -1000, np.int16)), Sample("f32", np.ones((4, 5, 4), np.float32))]
    ds = _write("tar", samples, tmp_path)
    with tarfile.open(ds / "shard-000000.tar") as tf:
        assert [n for n in tf.getnames() if not n.endswith(".json")] == [
            "s000000000.png", "s000000001.npy", "s000000002.npy", "s000000003.npy"]
    vol = [Sample("u8 volume", np.arange(24, dtype=np.uint8).reshape(2, 3, 4, 1))]
    ds = _write("tar", vol, tmp_path / "vol")
    with tarfile.open(ds / "shard-000000.tar") as tf:
        _bytes_equal(vol[0].image, np.load(io.BytesIO(tf.extractfile("s000000000.npy").read())))


def test_zip_raw_member_is_the_volume_record_and_png_refuses_volumes(ct, tmp_path):
    ds = _write("zip", ct, tmp_path, encoding="raw", compression="deflate")
    with zipfile.ZipFile(ds / "data.zip") as zf:
        assert zf.namelist() == [f"{i:08d}.bin" for i in range(len(ct))]
        for i, s in enumerate(ct):
            got = decode(zf.read(f"{i:08d}.bin"))
            assert_same(s, got)
            _bytes_equal(s.image, got.image)
        assert decode(zf.read("00000001.bin")).boxes is NO_BOXES_3D  # no boxes: (0, 6)
    assert got.boxes.shape == (1, 6)
    with pytest.raises(ValueError, match="image of key 'ct/0000000': zip cannot store int16"):
        formats.get("zip").write(ct, tmp_path / "png")
    assert not (tmp_path / "png").exists()


# --------------------------------------------------------------------------- bounds


FORMATS = [formats.get(n) for n in ("pickle", "shelve", "sqlite", "lmdb", "tfrecord", "parquet", "tar")]
FORMATS += [formats.get("zip", encoding="raw"), formats.get("parquet", row_group_size=2),
            formats.get("lmdb", encoding="pickle")]


def _images() -> list[Sample]:
    rng = np.random.default_rng(1)
    return [Sample("hu", rng.integers(-1024, 3072, (6, 5)).astype(np.int16), 1, [[0, 0, 2, 3]], [5]),
            Sample("mri", rng.standard_normal((4, 7, 4)).astype(np.float32), 2),
            Sample("nan", np.array([[np.nan, -0.0], [1.5, -np.inf]], np.float32), 3)]


@pytest.mark.parametrize("kind", ["volumes", "images"])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.id)
def test_bound_gives_the_volumes_and_images_the_format_reads(fmt, op, kind, ct, tmp_path):
    samples = ct if kind == "volumes" else _images()
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        want = [r[i].image for i in range(len(r))]
    seen: list[np.ndarray] = []
    n = 2 * len(samples) + 1  # more positions than the pool: bounds cycle through it
    perm = np.random.default_rng(2).permutation(n)
    b = fmt.bound.open(pool=Pool.of(samples, tag=f"t-{fmt.id}-{kind}"), op=op, perm=perm, batch=2,
                       root=tmp_path / "cache", touch=seen.append, dataset=tmp_path / "ds")
    try:
        assert b.run() == n
    finally:
        b.close()
    order = (np.arange(n) if b.info["op"] == "scan" else perm) % len(samples)
    assert len(seen) == n
    for img, i in zip(seen, order.tolist()):
        _bytes_equal(want[i], img)


def test_zip_png_bound_is_not_measured_for_volumes(ct, tmp_path):
    bound = formats.get("zip").bound
    with pytest.raises(NoBound, match=r"PNG members cannot hold int16 \(D, H, W, 1\)"):
        bound.open(pool=Pool.of(ct, tag="t-zip-png"), op="scan", perm=np.arange(3), batch=2,
                   root=tmp_path / "cache", touch=lambda img: None)
    assert not (tmp_path / "cache").exists()  # refused before building anything
