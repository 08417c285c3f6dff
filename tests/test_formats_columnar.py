"""Checks specific to zarr, parquet and tfrecord beyond the shared conformance suite.

zarr: a plain zarr v3 group, codecs that really compress, chunk options, deleted chunks (the flat
layout; per-sample arrays and the tensorstore engine are in test_formats_zarr.py).
parquet: the table other tools see, r[i] reads the pixels of one row group, scans stay small, the
page index.
tfrecord: the ``tfrecord`` package reads our files and index, r[i] reads one record.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from storebench import fixtures, formats
from storebench.formats import DatasetError, Sample
from storebench.formats.testing import assert_all_same, assert_same


@pytest.fixture(autouse=True)
def _skip_unavailable_format(request):
    """Tests are named test_<format>_...; skip them where that format cannot load (zarr on 3.10)."""
    name = request.node.originalname.split("_")[1]
    if name not in formats.available():
        pytest.skip(f"{name}: {formats.unavailable().get(name, 'not registered')}")


def _mixed() -> list[Sample]:
    return (list(fixtures.make_dataset("cifar", 6))
            + [Sample("uint16/2-D ü", (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4),
                      label=2, meta={"view": "PA", "ok": True, "n": None}),
               Sample("grey (H,W,1)", np.arange(30, dtype=np.uint8).reshape(5, 6, 1),
                      boxes=[[0, 0, 1.5, 2], [1, 1, 6, 5]], box_labels=[7, 3]),
               Sample("rgba", np.full((4, 3, 4), 200, np.uint8), label=0),
               Sample("la", np.arange(2 * 3 * 2, dtype=np.uint16).reshape(2, 3, 2))]
            + list(fixtures.make_dataset("imagenet", 2)))


# --------------------------------------------------------------------------- zarr


def test_zarr_dataset_is_a_plain_zarr_v3_group(tmp_path):
    import zarr
    samples = _mixed()
    formats.get("zarr", chunk_kib=16).write(samples, tmp_path / "ds")
    group = zarr.open_group(tmp_path / "ds/data.zarr", mode="r")
    assert group.metadata.zarr_format == 3
    pixels = group["pixels"]
    assert pixels.dtype == np.uint8 and pixels.chunks == (16 * 1024,)
    assert pixels.shape == (sum(s.image.nbytes for s in samples),)
    offsets = group["index/x_offset"][...]
    for s, start in zip(samples, offsets.tolist()):  # pixels back to back, in write order
        raw = pixels[start:start + s.image.nbytes]
        assert raw.view(s.image.dtype).reshape(s.image.shape).tobytes() == s.image.tobytes()
    assert group["index/label"][...].tolist() == [s.label for s in samples]


@pytest.mark.parametrize("codec", ["zstd", "blosc"])
def test_zarr_codec_compresses_photos(codec, tmp_path):
    import zarr
    samples = list(fixtures.make_dataset("imagenet", 8))
    sizes = {}
    for c in ("none", codec):
        fmt = formats.get("zarr", codec=c, chunk_kib=64)
        fmt.write(samples, tmp_path / c)
        sizes[c] = sum(f.stat().st_size for f in (tmp_path / c / "data.zarr/pixels").rglob("c/*"))
        with fmt.open(tmp_path / c) as r:
            assert_all_same(samples, list(r))
    pixels = zarr.open_array(tmp_path / codec / "data.zarr/pixels", mode="r")
    expected = {"zstd": "ZstdCodec", "blosc": "BloscCodec"}[codec]
    assert [type(x).__name__ for x in pixels.compressors] == [expected]
    assert sizes[codec] < 0.95 * sizes["none"], sizes


def test_zarr_small_dataset_is_not_padded_to_a_chunk(tmp_path):
    samples = _mixed()[:3]
    report = formats.get("zarr").write(samples, tmp_path / "ds")  # 1 MiB chunks by default
    assert report.bytes_on_disk < 64 * 1024


def test_zarr_read_batch_merges_neighbours_into_one_read(tmp_path):
    fmt = formats.get("zarr", chunk_kib=4)
    samples = list(fixtures.make_dataset("cifar", 40))
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        calls = []
        get = r._get
        r._get = lambda a, b: calls.append((a, b)) or get(a, b)
        idx = [5, 3, 4, 3, 30, 31]
        assert_all_same([samples[i] for i in idx], r.read_batch(idx))
        assert len(calls) == 2, calls  # 3..5 and 30..31; the gap between is many chunks


def test_zarr_deleted_chunk_reads_as_zeros_and_verify_catches_it(tmp_path):
    fmt = formats.get("zarr", chunk_kib=4)
    samples = list(fixtures.make_dataset("cifar", 10))
    fmt.write(samples, tmp_path / "ds")
    (tmp_path / "ds/data.zarr/pixels/c/2").unlink()  # bytes 8192..12287: part of 2, all of 3
    with fmt.open(tmp_path / "ds") as r:
        assert r[3].image.shape == (32, 32, 3) and not r[3].image.any()  # zarr's fill value
    with fmt.open(tmp_path / "ds", verify=True) as r:
        assert_same(samples[4], r[4])
        with pytest.raises(DatasetError, match="sample 3 .*checksum"):
            r[3]
        with pytest.raises(DatasetError, match="data.zarr/ holds 2. files"):
            r.verify()  # counts the files too


@pytest.mark.parametrize("opts", [{"codec": "lz4"}, {"chunk_kib": 0}, {"chunks": 0}, {"chunks": True},
                                  {"chunks": "64"}, {"chunk_kib": 16, "chunks": 64}, {"engine": "ts"}])
def test_zarr_bad_options(opts):
    with pytest.raises(ValueError, match=next(iter(opts))):
        formats.get("zarr", **opts)


# --------------------------------------------------------------------------- parquet


def test_parquet_table_is_what_other_tools_see(tmp_path):
    import pyarrow.parquet as pq
    samples = _mixed()
    formats.get("parquet", row_group_size=5, compression="zstd").write(samples, tmp_path / "ds")
    pf = pq.ParquetFile(tmp_path / "ds/data.parquet")
    md = pf.metadata
    assert [md.row_group(k).num_rows for k in range(md.num_row_groups)] == [5, 5, 2]
    assert md.row_group(0).column(2).compression == "ZSTD"
    rows = pf.read().to_pylist()
    for s, row in zip(samples, rows, strict=True):
        assert (row["key"], row["label"], row["dtype"]) == (s.key, s.label, s.image.dtype.name)
        shape = (row["height"], row["width"]) + ((row["channels"],) if row["channels"] else ())
        assert shape == s.image.shape and row["image"] == s.image.tobytes()
        assert row["boxes"] == s.boxes.tolist() and row["box_labels"] == s.box_labels.tolist()
        assert (json.loads(row["meta"]) if row["meta"] else {}) == s.meta


def test_parquet_random_access_reads_the_pixels_of_one_row_group(tmp_path):
    fmt = formats.get("parquet", row_group_size=10)
    samples = list(fixtures.make_dataset("cifar", 50))
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:  # the other columns were read here, once
        pf, groups = r.handles, []
        read_row_group = pf.read_row_group
        pf.read_row_group = lambda k, **kw: groups.append((k, kw["columns"])) or read_row_group(k, **kw)
        pf.read = pf.iter_batches = None  # a whole-file read would now fail
        assert_same(samples[23], r[23])
        assert_same(samples[27], r[27])  # same row group: decoded once, kept
        assert_same(samples[-1], r[-1])
        assert groups == [(2, ["image"]), (4, ["image"])]
        assert_all_same([samples[i] for i in (41, 3, 45, 7, 3)], r.read_batch([41, 3, 45, 7, 3]))
        assert [k for k, _ in groups] == [2, 4, 0, 4]  # row groups in file order, each once


def test_parquet_scan_holds_one_row_group_at_a_time(tmp_path):
    import pyarrow as pa
    fmt = formats.get("parquet", row_group_size=8)
    fmt.write(fixtures.make_dataset("imagenet", 64), tmp_path / "ds")
    file_bytes = (tmp_path / "ds/data.parquet").stat().st_size
    with fmt.open(tmp_path / "ds") as r:
        base = pa.total_allocated_bytes()
        peak = 0
        for _ in r:
            peak = max(peak, pa.total_allocated_bytes() - base)
    # pyarrow's default pre_buffer=True would keep every row group read so far.
    assert peak < file_bytes / 3, (peak, file_bytes)


def test_parquet_tuned_variant_has_one_row_per_group_and_page_index_is_an_option(tmp_path):
    import pyarrow.parquet as pq
    tuned = formats.get("parquet", row_group_size=1)
    assert tuned.random_access and {"row_group_size": 1} in tuned.bench_variants
    samples = list(fixtures.make_dataset("cifar", 7))
    tuned.write(samples, tmp_path / "tuned")
    formats.get("parquet", row_group_size=3, page_index=True).write(samples, tmp_path / "paged")
    md = pq.ParquetFile(tmp_path / "tuned/data.parquet").metadata
    assert md.num_row_groups == 7 and not md.row_group(0).column(2).has_offset_index
    md = pq.ParquetFile(tmp_path / "paged/data.parquet").metadata
    assert [md.row_group(k).num_rows for k in range(md.num_row_groups)] == [3, 3, 1]
    assert all(md.row_group(k).column(2).has_offset_index for k in range(md.num_row_groups))
    assert "PLAIN_DICTIONARY" not in md.row_group(0).column(2).encodings  # pixels: never a dictionary
    with tuned.open(tmp_path / "tuned") as r:
        assert_all_same(samples, list(r))


@pytest.mark.parametrize("opts", [{"row_group_size": 0}, {"compression": "gzip"}, {"page_index": 1}])
def test_parquet_bad_options(opts):
    with pytest.raises(ValueError, match=next(iter(opts))):
        formats.get("parquet", **opts)


# --------------------------------------------------------------------------- tfrecord


def _from_features(d) -> Sample:
    dtype = np.dtype(bytes(d["dtype"]).decode())
    image = np.frombuffer(bytes(d["image"]), dtype).reshape(tuple(d["shape"].tolist()))
    meta = bytes(d["meta"])
    return Sample(bytes(d["key"]).decode(), image, int(d["label"][0]), d["boxes"].reshape(-1, 4),
                  d["box_labels"], json.loads(meta) if meta else {})


def test_tfrecord_package_reads_our_records_and_index(tmp_path):
    from tfrecord.reader import tfrecord_loader
    from tfrecord.tools.tfrecord2idx import create_index
    samples = _mixed()
    formats.get("tfrecord").write(samples, tmp_path / "ds")
    data, index = str(tmp_path / "ds/data.tfrecord"), str(tmp_path / "ds/data.tfindex")
    create_index(data, str(tmp_path / "rebuilt.tfindex"))
    assert (tmp_path / "rebuilt.tfindex").read_text() == (tmp_path / "ds/data.tfindex").read_text()
    assert_all_same(samples, [_from_features(d) for d in tfrecord_loader(data, None)])
    # With the index the package can split the file between workers.
    halves = [list(tfrecord_loader(data, index, shard=(k, 2))) for k in range(2)]
    assert_all_same(samples, [_from_features(d) for d in halves[0] + halves[1]])
    assert len(halves[0]) == len(samples) // 2


def test_tfrecord_random_access_reads_one_record(tmp_path, monkeypatch):
    fmt = formats.get("tfrecord")
    samples = _mixed()
    fmt.write(samples, tmp_path / "ds")
    index = (tmp_path / "ds/data.tfindex").read_text().splitlines()
    sizes = [int(line.split()[1]) for line in index]
    with fmt.open(tmp_path / "ds") as r:
        reads = []
        pread = r._pread
        monkeypatch.setattr(r, "_pread", lambda n, at: reads.append(n) or pread(n, at))
        assert_same(samples[7], r[7])
        assert_same(samples[-1], r[-1])
        assert reads == [sizes[7], sizes[-1]]
        reads.clear()
        assert_all_same([samples[i] for i in (3, 2, 9)], r.read_batch([3, 2, 9]))
        assert reads == [sizes[2] + sizes[3], sizes[9]]  # neighbours in one read


def test_tfrecord_verify_checks_the_record_crc(tmp_path):
    fmt = formats.get("tfrecord")
    samples = _mixed()
    fmt.write(samples, tmp_path / "ds")
    f = tmp_path / "ds/data.tfrecord"
    start, size = map(int, (tmp_path / "ds/data.tfindex").read_text().splitlines()[3].split())
    raw = bytearray(f.read_bytes())
    raw[start + size // 2] ^= 0xFF  # inside sample 3's pixels: the Example still parses
    f.write_bytes(bytes(raw))
    with fmt.open(tmp_path / "ds") as r:
        assert r[3].image.tobytes() != samples[3].image.tobytes()  # no check without verify
    with fmt.open(tmp_path / "ds", verify=True) as r:
        assert_same(samples[2], r[2])
        with pytest.raises(DatasetError, match="record 3 of data.tfrecord is damaged"):
            r[3]


def test_tfrecord_import_leaves_torch_alone():
    code = ("import sys, storebench.formats.tfrecord_; "
            "assert 'torch' not in sys.modules and 'tfrecord.torch' not in sys.modules")
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True,
                   cwd=Path(formats.__file__).parents[1])
