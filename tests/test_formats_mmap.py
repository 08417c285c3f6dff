"""Checks specific to npy and blosc2, the memory-mapped formats, beyond the shared conformance suite.

npy: ``np.load`` reads the files layout's files; the dataset's layout decides how it reads;
the ``advise`` option changes what a cold region reads from storage; the files layout keeps
a bounded number of maps; damaged per-sample files name themselves.
blosc2: ``blosc2.open`` reads our ``.b2nd`` files; chunk and block shapes derive from ``patch``
as nnU-Net derives them; a cold region reads only its blocks; damaged files name themselves.
"""
from __future__ import annotations

import numpy as np
import pytest

from storebench import fixtures, formats
from storebench.formats import DatasetError, Sample, dataset_files
from storebench.formats._mmap import PAGE, region_middle, region_ranges
from storebench.formats.npy import Npy
from storebench.formats.testing import FormatTests, assert_all_same
from storebench.formats.testing._regions import evict, storage_read_bytes


@pytest.fixture(autouse=True)
def _skip_unavailable_format(request):
    """Tests are named test_<format>_...; skip them where that format cannot load."""
    if request.node.cls is not None:  # a FormatTests class: npy, always there
        return
    name = request.node.originalname.split("_")[1]
    if name not in formats.available():
        pytest.skip(f"{name}: {formats.unavailable().get(name, 'not registered')}")


def _mixed() -> list[Sample]:
    rng = np.random.default_rng(3)
    return (list(fixtures.make_dataset("cifar", 3))
            + [Sample("uint16 2-D", rng.integers(0, 4096, (37, 23), dtype=np.uint16), label=2, meta={"v": 1}),
               Sample("int16 (H,W,1)", rng.integers(-1024, 3071, (5, 6, 1)).astype(np.int16),
                      boxes=[[0, 0, 1.5, 2]], box_labels=[7]),
               Sample("float32 rgba", rng.standard_normal((4, 3, 4)).astype(np.float32)),
               Sample("fortran order", np.asfortranarray(rng.integers(0, 255, (9, 7), dtype=np.uint8)))])


def _volumes() -> list[Sample]:
    rng = np.random.default_rng(4)
    return [Sample("ct", rng.integers(-1024, 3071, (7, 20, 18, 1)).astype(np.int16), label=1),
            Sample("mri", rng.standard_normal((5, 9, 11, 4)).astype(np.float32))]


def _large(tmp_path, fmt, name="ds") -> tuple[Sample, list]:
    """One 2048x2048 uint16 sample written by ``fmt``; (sample, the dataset's files)."""
    img = np.random.default_rng(14).integers(0, 4096, (2048, 2048)).astype(np.uint16)
    sample = Sample("large", img)
    fmt.write([sample], tmp_path / name)
    return sample, dataset_files(tmp_path / name)


def _cold_read_bytes(r, files, region) -> tuple[int, np.ndarray]:
    evict(files)
    before = storage_read_bytes()
    got = r.read_region(0, region)
    return storage_read_bytes() - before, got


def _skip_unless_evictable(fmt, path, files, nbytes):
    """Skip where evicting the files does not make a whole read read them (tmpfs).  Its own
    reader, closed after: pages a process has mapped cannot be evicted while it maps them."""
    evict(files)
    before = storage_read_bytes()
    with fmt.open(path) as r:
        r[0].image.tobytes()
    if storage_read_bytes() - before < nbytes // 2:
        pytest.skip("files cannot be evicted from the page cache here (tmpfs?)")


# --------------------------------------------------------------------------- npy


def test_npy_files_layout_is_what_np_load_reads(tmp_path):
    for name, samples in (("images", _mixed()), ("volumes", _volumes())):
        fmt = formats.get("npy", layout="files")
        fmt.write(samples, tmp_path / name)
        files = sorted((tmp_path / name / "images").iterdir())
        assert [p.name for p in files] == [f"{i:08d}.npy" for i in range(len(samples))]
        for s, p in zip(samples, files):
            for got in (np.load(p), np.load(p, mmap_mode="r")):
                assert got.dtype == s.image.dtype and got.shape == s.image.shape, p.name
                assert got.tobytes() == s.image.tobytes(), p.name
        with fmt.open(tmp_path / name) as r:
            assert_all_same(samples, list(r))
            assert not r[0].image.flags.writeable  # a view into the map, as np.load(mmap_mode="r")


def test_npy_the_dataset_decides_the_layout_the_opener_the_advice(tmp_path):
    samples = _mixed()
    formats.get("npy", layout="files").write(samples, tmp_path / "files")
    formats.get("npy").write(samples, tmp_path / "flat")
    assert not (tmp_path / "flat" / "images").exists() and (tmp_path / "flat" / "pixels.npy").is_file()
    for path in ("files", "flat"):
        for fmt in (formats.get("npy"), formats.get("npy", layout="files"), formats.get("npy", advise="normal")):
            with fmt.open(tmp_path / path) as r:
                assert_all_same(samples, list(r))
                assert_all_same(samples, [r[i] for i in range(len(r))])
                whole = (slice(None), slice(None))
                assert [r.read_region(i, whole).tobytes() for i in range(len(r))] == \
                       [s.image.tobytes() for s in samples]
        with formats.open_dataset(tmp_path / path) as r:
            assert r.format.layout == path


def test_npy_options_ids_and_flags():
    assert formats.get("npy", layout="files").id == "npy[files]"
    assert formats.get("npy", advise="normal").id == "npy[advise=normal]"
    assert formats.get("npy").partial_reads and formats.get("npy", layout="files").partial_reads
    assert not formats.get("npy", advise="normal").partial_reads  # the kernel reads around each fault
    assert formats.get("npy", layout="files").bound.name == "bare-numpy[files]"
    for bad in ({"layout": "tree"}, {"advise": "sequential"}, {"layout": 1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            formats.get("npy", **bad)


def test_npy_region_ranges_cover_the_rows_in_as_few_ranges_as_read_no_more():
    # 2048-wide uint16: rows 4096 bytes apart, so 64 rows of 64 pixels are one 64-page range.
    got = region_ranges(1000, (2048, 2048), 2, (slice(100, 164), slice(10, 74)))
    assert got == [(1000 + 100 * 4096 + 20, 1000 + 163 * 4096 + 148)]
    # A wide image: each row its own range.
    wide = region_ranges(0, (10, 8192, 3), 1, (slice(2, 5), slice(100, 110)))
    assert wide == [(r * 8192 * 3 + 300, r * 8192 * 3 + 330) for r in (2, 3, 4)]
    # A volume: one range per slice, slices far apart.
    vol = region_ranges(0, (6, 512, 512, 1), 2, (slice(1, 4), slice(10, 20), slice(0, 64)))
    plane = 512 * 512 * 2
    assert vol == [(d * plane + 10 * 1024, d * plane + 19 * 1024 + 128) for d in (1, 2, 3)]
    # Whole slices back to back are one range.
    assert region_ranges(0, (4, 8, 8), 1, (slice(0, 4), slice(0, 8), slice(0, 8))) == [(0, 4 * 64)]
    for lo, hi in vol + wide + got:
        assert 0 <= lo < hi
    # The byte a reader probes (mincore) before asking for the ranges: the middle element's.
    assert region_middle(1000, (2048, 2048), 2, (slice(100, 164), slice(10, 74))) == 1000 + 132 * 4096 + 42 * 2
    assert region_middle(0, (6, 512, 512, 1), 2, (slice(1, 4), slice(10, 20), slice(0, 64))) == \
        2 * plane + 15 * 1024 + 32 * 2
    assert region_middle(0, (10, 8192, 3), 1, (slice(2, 5), slice(100, 110))) == 3 * 8192 * 3 + 105 * 3


@pytest.mark.parametrize("layout", ["flat", "files"])
def test_npy_advise_normal_reads_more_for_a_cold_region_than_random(tmp_path, layout):
    """A cold 64x64 region of a 2048x2048 uint16 image: "random" reads its 64 rows' pages
    (64 x 4 KiB), "normal" whatever the kernel reads around each fault (8 MiB windows here)."""
    region = (slice(1700, 1764), slice(1200, 1264))
    read = {}
    for advise in ("random", "normal"):
        fmt = formats.get("npy", layout=layout, advise=advise)
        sample, files = _large(tmp_path, fmt, advise)
        _skip_unless_evictable(fmt, tmp_path / advise, files, sample.image.nbytes)
        with fmt.open(tmp_path / advise) as r:
            r.read_region(0, (slice(0, 1), slice(0, 1)))  # opens the files and maps the image
            read[advise], got = _cold_read_bytes(r, files, region)
            assert got.tobytes() == sample.image[region].tobytes()
            assert got.flags.writeable and got.flags.c_contiguous
    assert read["random"] <= 64 * PAGE + 16 * PAGE, read
    assert read["normal"] > read["random"], read


def test_npy_files_layout_keeps_a_bounded_number_of_maps(tmp_path, monkeypatch):
    from storebench.formats import npy

    monkeypatch.setattr(npy, "CACHE", 4)
    samples = list(fixtures.make_dataset("cifar", 10))
    fmt = formats.get("npy", layout="files")
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        got = [r[i] for i in range(10)] + list(r)
        assert len(r._handles.maps.values()) == 4  # the 4 most recently used
        assert_all_same(samples * 2, got)  # images handed out stay valid after their map is dropped


def test_npy_damaged_per_sample_files_name_themselves(tmp_path):
    samples = _mixed()
    fmt = formats.get("npy", layout="files")
    for case, damage in [("truncated", lambda p: p.write_bytes(p.read_bytes()[:-5])),
                         ("grown", lambda p: p.write_bytes(p.read_bytes() + b"x")),
                         ("no header", lambda p: p.write_bytes(b"\x93NUMPY\x01\x00" + bytes(40))),
                         ("another array", lambda p: np.save(p, np.zeros((37, 23), np.float32))),
                         ("gone", lambda p: p.unlink())]:
        fmt.write(samples, tmp_path / case)
        damage(tmp_path / case / "images/00000003.npy")
        with fmt.open(tmp_path / case) as r:
            assert r[2] == samples[2]
            with pytest.raises(DatasetError, match="images/00000003.npy"):
                r[3]
            with pytest.raises(DatasetError, match="images/00000003.npy"):
                r.read_region(3, (slice(0, 1), slice(0, 1)))


# --------------------------------------------------------------------------- blosc2


def test_blosc2_files_are_what_blosc2_open_reads(tmp_path):
    import blosc2

    from storebench.formats.blosc2_ import chunks_and_blocks

    for name, samples in (("images", _mixed()), ("volumes", _volumes())):
        fmt = formats.get("blosc2", codec="lz4", clevel=5)
        fmt.write(samples, tmp_path / name)
        files = sorted((tmp_path / name / "images").iterdir())
        assert [p.name for p in files] == [f"{i:08d}.b2nd" for i in range(len(samples))]
        for s, p in zip(samples, files):
            for arr in (blosc2.open(str(p)), blosc2.open(str(p), mmap_mode="r")):
                got = arr[:]
                assert got.dtype == s.image.dtype and got.shape == s.image.shape, p.name
                assert got.tobytes() == s.image.tobytes(), p.name
                want = chunks_and_blocks(s.image.shape, s.image.itemsize, 64 if s.image.ndim == 4 else 224)
                assert (arr.chunks, arr.blocks) == want
                assert arr.cparams.codec == blosc2.Codec.LZ4 and arr.cparams.clevel == 5
        with fmt.open(tmp_path / name) as r:
            assert_all_same(samples, list(r))


def test_blosc2_chunks_and_blocks_derive_from_the_patch(tmp_path):
    import blosc2

    from storebench.formats.blosc2_ import L1, L3, SAFETY, chunks_and_blocks

    # nnU-Net's figures: blocks of half the patch within 80% of L1, chunks of blocks up to 80% of L3.
    assert chunks_and_blocks((2048, 2048), 2, 224) == ((768, 768), (64, 64))
    assert chunks_and_blocks((2048, 2048), 2, 64) == ((768, 768), (32, 32))
    assert chunks_and_blocks((96, 256, 256, 1), 2, 64) == ((96, 80, 80, 1), (32, 16, 16, 1))
    assert chunks_and_blocks((300, 512, 512, 1), 2, 64) == ((160, 64, 64, 1), (32, 16, 16, 1))
    assert chunks_and_blocks((1, 1), 1, 224) == ((1, 1), (1, 1))
    for shape, itemsize, patch in [((2500, 2000, 3), 1, 224), ((155, 240, 240, 4), 4, 128), ((7, 9), 4, 2),
                                   ((64, 64, 64, 1), 2, 32), ((3000, 17), 2, 512)]:
        chunks, blocks = chunks_and_blocks(shape, itemsize, patch)
        nsp = 3 if len(shape) == 4 else 2
        assert chunks[nsp:] == blocks[nsp:] == shape[nsp:]  # channels whole
        assert all(1 <= b <= c <= s for b, c, s in zip(blocks, chunks, shape))
        assert all(b <= max(1, patch // 2) for b in blocks[:nsp])
        assert np.prod(blocks) * itemsize <= SAFETY * L1 or max(blocks[:nsp]) == 1
        assert np.prod(chunks) * itemsize >= SAFETY * L3 or chunks == shape
    # The option reaches the files.
    img = np.zeros((300, 400), np.uint16)
    for patch, blocks in ((None, (64, 64)), (32, (16, 16)), (8, (4, 4))):
        fmt = formats.get("blosc2", patch=patch)
        fmt.write([Sample("x", img)], tmp_path / f"p{patch}")
        assert blosc2.open(str(tmp_path / f"p{patch}" / "images/00000000.b2nd")).blocks == blocks
    assert formats.get("blosc2", patch=32).id == "blosc2[patch=32]"
    for bad in ({"patch": 0}, {"codec": "snappy"}, {"clevel": 10}, {"nthreads": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            formats.get("blosc2", **bad)


def test_blosc2_a_cold_region_reads_only_its_blocks(tmp_path):
    """A cold 64x64 region of a 2048x2048 uint16 image (6 MB compressed) reads a few blocks."""
    fmt = formats.get("blosc2")
    sample, files = _large(tmp_path, fmt)
    size = sum(p.stat().st_size for p in files)
    region = (slice(1700, 1764), slice(1200, 1264))
    _skip_unless_evictable(fmt, tmp_path / "ds", files, size)
    with fmt.open(tmp_path / "ds") as r:
        r.read_region(0, (slice(0, 1), slice(0, 1)))
        nbytes, got = _cold_read_bytes(r, files, region)
    assert got.tobytes() == sample.image[region].tobytes()
    assert nbytes <= 256 << 10, f"{nbytes} bytes read for 4 blocks of a {size}-byte file"


def test_blosc2_decompression_threads_follow_the_option(tmp_path):
    samples = _mixed()[:2]
    for n in (1, 2):
        fmt = formats.get("blosc2", nthreads=n)
        fmt.write(samples, tmp_path / f"t{n}")
        with fmt.open(tmp_path / f"t{n}") as r:
            assert r[1] == samples[1]
            assert r._handles.arrays.get(1).arr.dparams.nthreads == n


def test_blosc2_damaged_files_name_themselves(tmp_path):
    samples = _mixed()
    fmt = formats.get("blosc2")
    for case, damage in [("truncated", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])),
                         ("empty", lambda p: p.write_bytes(b"")),
                         ("garbage", lambda p: p.write_bytes(b"not a frame" * 50)),
                         ("another array", lambda p: formats.get("blosc2").save(np.zeros((37, 23), np.float32), p)),
                         ("gone", lambda p: p.unlink())]:
        fmt.write(samples, tmp_path / case)
        damage(tmp_path / case / "images/00000003.b2nd")
        with fmt.open(tmp_path / case) as r:
            assert r[2] == samples[2]
            with pytest.raises(DatasetError, match="images/00000003.b2nd"):
                r[3]
            with pytest.raises(DatasetError, match="images/00000003.b2nd"):
                r.read_region(3, (slice(0, 1), slice(0, 1)))


# --------------------------------------------------------------------------- npy files layout, once-per-format tests


def _once_per_format_only(cls):
    """``cls`` with only FormatTests' once-per-format tests (worker processes, damaged files,
    pinning, kill -9 ...): tests/test_conformance.py runs those for default options only, and
    every other test for each bench variant already."""
    for name in dir(FormatTests):
        if name.startswith("test_") and name not in FormatTests.once_per_format:
            setattr(cls, name, None)  # pytest collects only callables
    return cls


@_once_per_format_only
class TestNpyFilesLayout(FormatTests):
    """npy's per-sample files open per read (through a bounded cache), unlike its default flat file."""

    format_cls = Npy
    format_options = {"layout": "files"}
