"""zarr's per-sample N-D arrays (``chunks``) and its tensorstore engine, beyond the conformance suite.

What zarr-python and tensorstore users see in the files, chunk shapes, reads that decode only
the chunks a region overlaps, damage and missing chunks (never zeros), a dataset moved or deleted
under an open tensorstore reader, and tensorstore under fork.  The flat layout's own checks are in
test_formats_columnar.py.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest

from storebench import fixtures, formats
from storebench.formats import DatasetError, Sample
from storebench.formats.testing import assert_all_same, assert_same, faults, volume_edge_samples

if "zarr" not in formats.available():
    pytest.skip(f"zarr: {formats.unavailable().get('zarr')}", allow_module_level=True)

import zarr  # after the skip: zarr 3 is Python 3.11+ only

from storebench.formats.zarr_ import chunk_shape

ts = pytest.importorskip("tensorstore")
ENGINES = ("zarr", "tensorstore")


def _images() -> list[Sample]:
    """2-D images of every dtype, grey (H, W) and (H, W, C), some smaller than a chunk."""
    rng = np.random.default_rng(5)
    floats = rng.standard_normal((40, 33)).astype(np.float32)
    floats[0, :4] = [np.nan, -0.0, np.inf, -np.inf]
    return [Sample("u16 2-D ü", rng.integers(0, 4096, (70, 45), np.uint16), label=2, meta={"view": "PA"}),
            Sample("rgb", rng.integers(0, 256, (37, 20, 3), np.uint8), boxes=[[0, 0, 5, 6]], box_labels=[1]),
            Sample("ct slice", rng.integers(-1024, 3072, (16, 16)).astype(np.int16)),
            Sample("mri", floats),
            Sample("tiny", np.array([[9]], np.uint8))]


def _ts_open(path: Path):
    return ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}, read=True).result()


def test_chunk_shape_is_the_side_on_each_spatial_axis_clipped_with_channels_whole():
    assert chunk_shape((2048, 2048), 256) == (256, 256)
    assert chunk_shape((30, 100, 3), 64) == (30, 64, 3)
    assert chunk_shape((300, 512, 512, 1), 64) == (64, 64, 64, 1)
    assert chunk_shape((5, 70, 70, 4), 64) == (5, 64, 64, 4)


def test_options_ids_and_flags():
    flat, arrays = formats.get("zarr"), formats.get("zarr", chunks=64, engine="tensorstore")
    assert flat.id == "zarr" and flat.chunks is None and flat.engine == "zarr"
    assert arrays.id == "zarr[chunks=64,engine=tensorstore]"
    assert formats.get("zarr", codec="blosc", chunks=32).id == "zarr[blosc,chunks=32]"
    assert not flat.partial_reads and not flat.random_access
    assert arrays.partial_reads and arrays.random_access
    assert arrays.bound.name == "bare-zarr[chunks=64,engine=tensorstore]"
    assert arrays.info()["engine"] == "tensorstore" and arrays.info()["tensorstore"]


@pytest.mark.parametrize("codec", ["none", "zstd", "blosc"])
def test_each_sample_is_its_own_array_that_zarr_and_tensorstore_read(codec, tmp_path):
    """``zarr.open_group(path)["images/<i>"]`` is sample i with its dtype, shape and chunks, and
    tensorstore's zarr3 driver reads the same pixels; the index holds no offsets."""
    fmt = formats.get("zarr", codec=codec, chunks=32)
    samples = _images()
    fmt.write(samples, tmp_path / "ds")
    group = zarr.open_group(tmp_path / "ds/data.zarr", mode="r")
    assert group.metadata.zarr_format == 3 and "pixels" not in group
    assert "x_offset" not in group["index"].attrs["columns"]
    for i, s in enumerate(samples):
        arr = group[f"images/{i}"]
        assert arr.dtype == s.image.dtype and arr.shape == s.image.shape
        assert arr.chunks == chunk_shape(s.image.shape, 32)
        assert [type(c).__name__ for c in arr.compressors] == \
            {"none": [], "zstd": ["ZstdCodec"], "blosc": ["BloscCodec"]}[codec]
        assert arr[...].tobytes() == s.image.tobytes()  # NaN payloads and -0.0 included
        t = _ts_open(tmp_path / f"ds/data.zarr/images/{i}")
        got = t.read().result()
        assert got.dtype == s.image.dtype and got.tobytes() == s.image.tobytes()
    assert group["index/label"][...].tolist() == [s.label for s in samples]
    with fmt.open(tmp_path / "ds") as r:
        assert_all_same(samples, list(r))


def test_volumes_are_4d_arrays_chunked_in_cubes(tmp_path):
    fmt = formats.get("zarr", chunks=4)
    vols = volume_edge_samples()
    fmt.write(vols, tmp_path / "ds")
    group = zarr.open_group(tmp_path / "ds/data.zarr", mode="r")
    for i, s in enumerate(vols):
        arr = group[f"images/{i}"]
        assert arr.shape == s.image.shape and arr.ndim == 4
        assert arr.chunks == tuple(min(4, n) for n in s.image.shape[:3]) + (s.image.shape[3],)
        assert _ts_open(tmp_path / f"ds/data.zarr/images/{i}").read().result().tobytes() == s.image.tobytes()


def test_flat_layout_reads_through_tensorstore_too(tmp_path):
    """The default layout's ``pixels`` is an array tensorstore opens; engine="tensorstore" reads it."""
    samples = _images()
    formats.get("zarr", chunk_kib=4).write(samples, tmp_path / "ds")
    t = _ts_open(tmp_path / "ds/data.zarr/pixels")
    offsets = zarr.open_group(tmp_path / "ds/data.zarr", mode="r")["index/x_offset"][...].tolist()
    for s, start in zip(samples, offsets):
        assert t[start:start + s.image.nbytes].read().result().tobytes() == s.image.tobytes()
    with formats.get("zarr", engine="tensorstore").open(tmp_path / "ds") as r:
        assert_all_same(samples, list(r))
        assert_all_same(samples[::-1], r.read_batch([4, 3, 2, 1, 0]))


@pytest.mark.parametrize("engine", ENGINES)
def test_all_zero_and_negative_zero_chunks_are_stored(engine, tmp_path):
    """zarr leaves out chunks equal to the fill value unless told: -0.0 would read back +0.0 and a
    missing chunk could not be told from a deleted one.  Every chunk is on disk."""
    neg = Sample("neg zero", np.full((20, 20), -0.0, np.float32))
    zero = Sample("zeros", np.zeros((20, 20, 2), np.uint16))
    fmt = formats.get("zarr", chunks=8, engine=engine)
    fmt.write([neg, zero], tmp_path / "ds")
    for i in range(2):
        chunks = [f for f in (tmp_path / f"ds/data.zarr/images/{i}/c").rglob("*") if f.is_file()]
        assert len(chunks) == 9  # 3x3 chunks of 8x8
    with fmt.open(tmp_path / "ds") as r:
        assert r[0].image.tobytes() == neg.image.tobytes() and np.signbit(r[0].image).all()
        assert_same(zero, r[1])


def test_a_region_reads_only_the_chunks_it_overlaps(tmp_path):
    """zarr-python's reads go through the reader's store: a 10x10 region across a chunk corner
    reads those four chunk files and nothing else (the array's metadata once, when first opened)."""
    img = np.arange(100 * 90, dtype=np.uint16).reshape(100, 90)
    fmt = formats.get("zarr", chunks=16)
    fmt.write([Sample("a", img)], tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        store = r._store
        keys: list[str] = []
        read = store._read
        store._read = lambda key, *a: keys.append(key) or read(key, *a)
        region = (slice(28, 38), slice(44, 54))  # rows 1..2, cols 2..3 of the 16-pixel chunks
        assert r.read_region(0, region).tobytes() == img[region].tobytes()
        assert sorted(keys) == ["images/0/c/1/2", "images/0/c/1/3", "images/0/c/2/2", "images/0/c/2/3",
                                "images/0/zarr.json"]
        keys.clear()
        assert r.read_region(0, (slice(0, 1), slice(89, 90))).tobytes() == img[:1, 89:].tobytes()
        assert keys == ["images/0/c/0/5"]


@pytest.mark.parametrize("engine", ENGINES)
def test_read_batch_and_read_regions(engine, tmp_path):
    fmt = formats.get("zarr", chunks=16, engine=engine)
    samples = _images()
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        idx = [3, 0, 3, 4, 1]
        assert_all_same([samples[i] for i in idx], r.read_batch(idx))
        regions = [(slice(1, 30), slice(2, 3)), (slice(0, 70), slice(40, 45)), (slice(5, 6), slice(0, 1)),
                   (slice(0, 1), slice(0, 1))]
        got = r.read_regions([3, 0, 2, 4], regions)
        for i, reg, arr in zip([3, 0, 2, 4], regions, got):
            assert arr.dtype == samples[i].image.dtype and arr.tobytes() == samples[i].image[reg].tobytes()


@pytest.mark.parametrize("engine", ENGINES)
def test_open_arrays_are_kept_up_to_handles(engine, tmp_path, monkeypatch):
    from storebench.formats import zarr_

    monkeypatch.setattr(zarr_, "HANDLES", 3)
    samples = list(fixtures.make_dataset("cifar", 8))
    fmt = formats.get("zarr", chunks=16, engine=engine)
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        for i in [0, 1, 2, 0, 3, 4, 0, 7]:
            assert_same(samples[i], r[i])
        assert list(r._arrays) == [4, 0, 7]  # the three most recently read


# --------------------------------------------------------------------------- damage


def _damage_chunk(path: Path, how: str) -> None:
    chunk = min(f for f in (path / "data.zarr/images/1/c").rglob("*") if f.is_file())
    if how == "delete":
        chunk.unlink()
    elif how == "truncate":
        with open(chunk, "r+b") as f:
            f.truncate(chunk.stat().st_size // 2)
    elif how == "metadata gone":
        (path / "data.zarr/images/1/zarr.json").unlink()
    else:  # another shape in the array's metadata
        meta = path / "data.zarr/images/1/zarr.json"
        doc = json.loads(meta.read_text())
        doc["shape"][0] -= 1
        meta.write_text(json.dumps(doc))


@pytest.mark.parametrize("codec", ["none", "zstd"])
@pytest.mark.parametrize("how", ["delete", "truncate", "metadata gone", "metadata shape"])
@pytest.mark.parametrize("engine", ENGINES)
def test_damaged_arrays_are_dataset_errors_never_zeros(engine, how, codec, tmp_path):
    fmt = formats.get("zarr", codec=codec, chunks=16, engine=engine)
    samples = _images()
    fmt.write(samples, tmp_path / "ds")
    _damage_chunk(tmp_path / "ds", how)
    with fmt.open(tmp_path / "ds") as r:  # the index is whole: opening works
        assert_same(samples[0], r[0])
        with pytest.raises(DatasetError, match=r"data\.zarr/images/1") as info:
            r[1]
        assert str(info.value).startswith(str(tmp_path / "ds"))
        with pytest.raises(DatasetError, match=r"images/1"):
            r.read_region(1, (slice(0, 2), slice(0, 2)))
        with pytest.raises(DatasetError):
            list(r)
        assert_same(samples[2], r[2])


# --------------------------------------------------------------------------- pinning, without fork


@pytest.mark.parametrize("opts", [{"chunks": 8, "engine": "tensorstore"}, {"engine": "tensorstore"}],
                         ids=["arrays", "flat"])
def test_tensorstore_reads_the_dataset_it_opened(opts, tmp_path):
    """Renamed (another dataset written at its path), written over, and deleted under an open
    tensorstore reader: the old samples or a typed error, never the new ones or zeros.  (The
    conformance suite's pinning tests also fork, which tensorstore does not survive: see below.)"""
    fmt = formats.get("zarr", **opts)
    samples = faults.concurrency_samples(fmt)
    other = faults.written_over(samples)
    fmt.write(samples, tmp_path / "ds")
    r, ref = faults._reference(fmt, tmp_path / "ds", samples)
    with r:
        (tmp_path / "ds").rename(tmp_path / "moved")
        fmt.write(other, tmp_path / "ds")
        outcome, detail = faults.read_every_way(r, ref, "renamed, open reader: ")
        assert outcome == "correct data", detail  # still the dataset it opened, through /proc/self/fd
        clone = pickle.loads(pickle.dumps(r))  # a spawn worker's reopen: the path is another dataset now
        with clone:
            outcome, detail = faults.read_every_way(clone, ref, "renamed, unpickled copy: ")
        assert outcome == "typed error" and "moved, deleted or written over" in detail, detail
    r, ref = faults._reference(fmt, tmp_path / "ds", other)
    with r:
        fmt.write(samples, tmp_path / "ds", overwrite=True)
        assert faults.read_every_way(r, ref, "written over: ")[0] in faults.OK_OUTCOMES
    r, ref = faults._reference(fmt, tmp_path / "ds", samples)
    with r:
        shutil.rmtree(tmp_path / "ds")
        outcome, detail = faults.read_every_way(r, ref, "deleted: ")
        assert outcome == "typed error", detail  # tensorstore reads by path: the files are gone


@pytest.mark.parametrize("scenario", [faults.moved_path, faults.deleted, faults.overwrite_while_reading],
                         ids=lambda f: f.__name__)
def test_zarr_python_arrays_are_pinned_in_forked_children_too(scenario, tmp_path):
    """The conformance suite's pinning scenarios (open reader, pickled copy, forked child) on the
    per-sample layout read by zarr-python, which survives fork."""
    outcome, detail = scenario(formats.get("zarr", chunks=8), tmp_path)
    assert outcome in faults.OK_OUTCOMES, f"{outcome}: {detail}"


# --------------------------------------------------------------------------- tensorstore and fork


def _read_first(r, conn):
    try:
        conn.send(("read", r[0].key))
    except RuntimeError as err:
        conn.send(("RuntimeError", str(err)))
    finally:
        conn.close()


def test_tensorstore_reader_in_a_child_forked_after_reading_is_refused_not_aborted(tmp_path):
    """tensorstore aborts a forked child that uses it once the parent has: the reader says so
    with a RuntimeError naming the way out instead, and a spawn worker reads."""
    from storebench.formats.testing._common import in_forked_child

    fmt = formats.get("zarr", chunks=8, engine="tensorstore")
    samples = faults.concurrency_samples(fmt, 4)
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        assert_same(samples[0], r[0])
        outcome, detail = in_forked_child(_read_first, (r,), 60)
        assert outcome == "RuntimeError" and "spawn" in detail, (outcome, detail)
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            assert_same(samples[2], pool.submit(r.__getitem__, 2).result(timeout=120))


def test_tensorstore_reader_opened_but_not_read_forks_fine(tmp_path):
    """Opening reads the index with zarr-python only: a process that opened (not read) a
    tensorstore reader can fork DataLoader workers, each reading through its own tensorstore."""
    fmt = formats.get("zarr", chunks=8, engine="tensorstore")
    samples = faults.concurrency_samples(fmt, 4)
    fmt.write(samples, tmp_path / "ds")
    code = f"""
import os, sys
from storebench import formats
r = formats.get("zarr", chunks=8, engine="tensorstore").open({str(tmp_path / "ds")!r})
pid = os.fork()
if pid == 0:
    ok = r[3].key == {samples[3].key!r} and r.read_region(1, (slice(0, 5), slice(2, 9))).shape == (5, 7, 3)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print(status, r[0].key)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0", samples[0].key]
