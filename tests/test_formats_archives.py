"""Checks specific to jpeg, zip and tar beyond the shared conformance suite.

jpeg: quality on photographs, exact non-pixel fields, every installed decoder.
zip: many worker processes sharing one pickled reader, unsafe member names.
tar: the ``webdataset`` library reads our shards; random access and scans go
through the offset index only, never the member headers.
"""
from __future__ import annotations

import gc
import io
import json
import multiprocessing as mp
import tarfile
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from storebench import fixtures, formats
from storebench.formats import DatasetError, Sample
from storebench.formats.testing import assert_all_same, assert_same


def _resize_in_manifest(path):
    """Record the files' current sizes, as a dataset crafted this way would."""
    manifest = json.loads((path / formats.MANIFEST).read_text())
    for name in manifest["files"]:
        if not name.endswith("/"):
            manifest["files"][name] = (path / name).stat().st_size
    (path / formats.MANIFEST).write_text(json.dumps(manifest))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# --------------------------------------------------------------------------- jpeg


@pytest.mark.parametrize(("preset", "n"), [("cifar", 200), ("imagenet", 12), ("fundus", 4)])
def test_jpeg_quality_90_keeps_photos_above_30db(preset, n, tmp_path):
    samples = list(fixtures.make_dataset(preset, n))
    fmt = formats.get("jpeg")
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        got = list(r)
    assert_all_same(samples, got, lossless=False)  # exact key, label, boxes, meta, shape, dtype
    worst = min(_psnr(a.image, b.image) for a, b in zip(samples, got))
    assert worst >= 30, f"{preset}: worst PSNR {worst:.1f} dB at quality 90"


def test_jpeg_grey_shapes_and_fields_are_exact(tmp_path):
    grey = fixtures.make_sample("cifar", 0).image[..., 1].copy()
    samples = [Sample("2d", grey, 4, boxes=[[0, 0, 8, 8]], box_labels=[1], meta={"a": 1}),
               Sample("3d", grey[..., None], meta={"b": None}),
               Sample("rgb", fixtures.make_sample("cifar", 1).image)]
    fmt = formats.get("jpeg", quality=95)
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        for s, got in zip(samples, [r[0], r[1], r[-1]]):
            assert_same(s, got, lossless=False)
            assert _psnr(s.image, got.image) >= 35
        assert r.info()["jpeg_decoder"].split()[0] in ("simplejpeg", "opencv", "pillow")


@pytest.mark.parametrize("image", [np.zeros((4, 4), np.uint16), np.zeros((4, 4, 4), np.uint8),
                                   np.zeros((4, 4, 2), np.uint8)], ids=["uint16", "rgba", "la"])
def test_jpeg_refuses_what_baseline_jpeg_cannot_hold(image, tmp_path):
    with pytest.raises(ValueError, match=rf"jpeg cannot store {image.dtype} images"):
        formats.get("jpeg").write([Sample("x", image)], tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_every_installed_jpeg_decoder_gives_the_same_rgb(tmp_path):
    from storebench.formats import jpeg
    img = np.zeros((16, 16, 3), np.uint8)
    img[:, :8, 0] = 250  # red left half: a BGR mix-up would show it as blue
    img[:, 8:, 2] = 250
    data = jpeg.ENCODE(img, 90)
    grey = jpeg.ENCODE(img[..., 0], 90)
    for load in jpeg.LOADERS:
        try:
            name, decode, encode = load()
        except ImportError:  # simplejpeg and OpenCV are optional
            continue
        rgb = decode(data, False)
        assert rgb.dtype == np.uint8 and rgb.shape == (16, 16, 3), name
        assert _psnr(img, rgb) >= 35, name
        assert rgb[:, :8, 0].min() > 200 and rgb[:, :8, 2].max() < 50, f"{name}: channels swapped"
        assert _psnr(img[..., 0], decode(grey, True).reshape(16, 16)) >= 35, name
        if encode is not None:
            assert _psnr(img, jpeg.DECODE(encode(img, 90), False)) >= 35, name


def test_jpeg_damaged_or_missing_file(tmp_path):
    samples = list(fixtures.make_dataset("cifar", 3))
    formats.get("jpeg").write(samples, tmp_path / "ds")
    (tmp_path / "ds/images/00000001.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (tmp_path / "ds/images/00000002.jpg").unlink()
    with formats.open_dataset(tmp_path / "ds") as r:
        assert r[0].key == samples[0].key
        with pytest.raises(DatasetError, match="00000001.jpg is damaged"):
            r[1]
        with pytest.raises(DatasetError, match="00000002.jpg is missing"):
            r[2]


# --------------------------------------------------------------------------- zip

_reader = None


def _set_reader(r):
    global _reader
    _reader = r


def _read(i):
    return _reader[i]


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("opts", [{}, {"encoding": "raw", "compression": "deflate"}],
                         ids=["png", "raw-deflate"])
def test_zip_four_workers_share_one_reader(opts, method, tmp_path):
    fmt = formats.get("zip", **opts)
    fmt.write(fixtures.make_dataset("cifar", 64), tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        serial = [r[i] for i in range(len(r))]  # the parent's handle is open before the fork
        order = np.random.default_rng(0).permutation(len(r)).tolist()
        with mp.get_context(method).Pool(4, initializer=_set_reader, initargs=(r,)) as pool:
            got = pool.map(_read, order, chunksize=3)
        assert_all_same([serial[i] for i in order], got)
        assert_all_same(serial, list(r))  # the parent's handle still works


def test_zip_png_refuses_uint16_colour_and_raw_keeps_it(tmp_path):
    s = Sample("rgb16", np.arange(24, dtype=np.uint16).reshape(2, 4, 3) * 2000)
    with pytest.raises(ValueError, match="zip cannot store uint16"):
        formats.get("zip").write([s], tmp_path / "png")
    fmt = formats.get("zip", encoding="raw")
    fmt.write([s], tmp_path / "raw")
    with fmt.open(tmp_path / "raw") as r:
        assert_same(s, r[0])


@pytest.mark.parametrize("name", ["../00000009.png", "/etc/00000009.png", "a/../../x.png"])
def test_zip_member_escaping_the_root_is_refused(name, tmp_path):
    formats.get("zip").write(fixtures.make_dataset("cifar", 2), tmp_path / "ds")
    with zipfile.ZipFile(tmp_path / "ds/data.zip", "a") as zf:
        zf.writestr(name, b"x")
    _resize_in_manifest(tmp_path / "ds")
    with pytest.raises(DatasetError, match="escapes the dataset"):
        formats.open_dataset(tmp_path / "ds")


@pytest.mark.parametrize("damage", ["truncated", "directory", "member"])
def test_zip_damaged_archive(damage, tmp_path):
    formats.get("zip").write(fixtures.make_dataset("cifar", 2), tmp_path / "ds")
    f = tmp_path / "ds/data.zip"
    raw = bytearray(f.read_bytes())
    if damage == "truncated":
        del raw[len(raw) // 2:]
    elif damage == "directory":
        raw[-22:] = bytes(22)  # the end-of-central-directory record
    else:
        raw[100:110] = bytes(10)  # inside the first PNG: its CRC no longer matches
    f.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="data.zip"):
        with formats.open_dataset(tmp_path / "ds") as r:
            r[0]


# --------------------------------------------------------------------------- tar


def _mixed() -> list[Sample]:
    return (list(fixtures.make_dataset("cifar", 5))
            + [Sample("uint16.x/y z", (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4),
                      label=2, meta={"view": "PA", "ok": True}),
               Sample("grey (H,W,1)", np.arange(30, dtype=np.uint8).reshape(5, 6, 1),
                      boxes=[[0, 0, 1.5, 2]], box_labels=[7])]
            + list(fixtures.make_dataset("imagenet", 2)))


def test_webdataset_reads_our_shards(tmp_path):
    wds = pytest.importorskip("webdataset")
    samples = _mixed()
    formats.get("tar", shard_size=3).write(samples, tmp_path / "ds")
    urls = sorted(str(p) for p in (tmp_path / "ds").glob("shard-*.tar"))
    assert len(urls) == 3
    got = []
    # webdataset 1.0.2 never closes the shard files it opens: ignore exactly that
    # ResourceWarning, and collect inside the filter so the files die here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"unclosed file .*shard-\d+\.tar", ResourceWarning)
        for d in wds.WebDataset(urls, shardshuffle=False).decode():
            meta = d["json"]
            if "png" in d:
                with Image.open(io.BytesIO(d["png"])) as im:
                    image = np.asarray(im).reshape(meta["shape"])
            else:
                image = d["npy"]
            got.append(Sample(meta["key"], image, meta["label"], meta["boxes"],
                              meta["box_labels"], meta["meta"]))
        gc.collect()
    assert [d.key for d in got] == [s.key for s in samples]
    assert_all_same(samples, got)


def test_tar_shards_by_count_and_bytes(tmp_path):
    samples = _mixed()
    for opts, shards in [({"shard_size": 4}, 3), ({"shard_bytes": 1}, len(samples))]:
        fmt = formats.get("tar", **opts)
        fmt.write(samples, tmp_path / fmt.id)
        assert len(list((tmp_path / fmt.id).glob("shard-*.tar"))) == shards
        with fmt.open(tmp_path / fmt.id) as r:
            assert_all_same(samples, list(r))
            assert_all_same(samples[::-1], r.read_batch(range(len(samples) - 1, -1, -1)))


def test_tar_reads_exact_bytes_through_the_index_without_parsing_headers(tmp_path):
    samples = _mixed()
    formats.get("tar").write(samples, tmp_path / "ds")
    shard = tmp_path / "ds/shard-000000.tar"
    raw = bytearray(shard.read_bytes())
    raw[:512] = b"\xff" * 512  # wreck the first member's tar header, not its data
    shard.write_bytes(bytes(raw))
    with formats.open_dataset(tmp_path / "ds", verify=True) as r:
        assert_all_same(samples, [r[i] for i in range(len(r))])
        assert_all_same(samples, list(r))  # scans read blocks by offset too
        assert_all_same(samples, r.read_batch(np.arange(len(r))[::-1])[::-1])
    raw[600:700] = bytes(100)  # now the first member's data
    shard.write_bytes(bytes(raw))
    with formats.open_dataset(tmp_path / "ds", verify=True) as r, \
            pytest.raises(DatasetError, match="s000000000|checksum"):
        list(r)


@pytest.mark.parametrize("name", ["../s000000000.png", "/s000000000.png", "x/../../s0.png"])
def test_tar_shard_rewritten_with_escaping_names_is_a_dataset_error(name, tmp_path):
    # Reads go through the offset index, never through member names, so a hostile
    # shard cannot make the reader touch a path; its bytes fail to decode instead.
    formats.get("tar").write(fixtures.make_dataset("cifar", 2), tmp_path / "ds")
    shard = tmp_path / "ds/shard-000000.tar"
    size = shard.stat().st_size
    with tarfile.open(shard, "w") as tf:
        info = tarfile.TarInfo(name)
        info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))
        info = tarfile.TarInfo(name.replace(".png", ".json"))
        data = json.dumps({"key": "x"}).encode()
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with open(shard, "ab") as f:  # as long as before, so only the names are wrong
        f.write(bytes(size - shard.stat().st_size))
    with formats.open_dataset(tmp_path / "ds") as r:
        with pytest.raises(DatasetError, match="shard-000000.tar member s000000000 is damaged"):
            list(r)
        with pytest.raises(DatasetError, match="s000000001 is damaged"):
            r[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_tar_reader_shared_by_threads_over_more_shards_than_it_keeps_open(tmp_path):
    """One sample per shard and 150 shards: the reader keeps 64 open, so 8 threads reading at
    random evict each other's shards; every sample must still be its own (a descriptor closed
    and reused between another thread's lookup and read once gave another shard's pixels)."""
    from storebench.formats.testing import faults

    fmt = formats.get("tar", shard_size=1)
    samples = list(fixtures.make_dataset("cifar", 150, seed=4))
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        ref = [r[i] for i in range(len(r))]
        assert_all_same(samples, ref)
        outcome, detail = faults.hammer(r, ref, faults.thread_plans(len(ref), seed=0, ops=50))
        assert outcome == "correct data", detail
        assert len(r.handles) <= 64
