"""Checks specific to hdf5 beyond the shared conformance suite.

The chunked layout is what h5py users expect (an N-D dataset per image, of its
dtype, shape, chunks and compression), a region read inflates only the chunks
it overlaps and never holds the whole volume, damaged chunked files are typed
errors (the suite damages only the default layout), and the default options
still write today's flat file.  The stack layout is the notebooks' one
``(N, ...)`` dataset with the chunks asked for (one per image, h5py's guess,
contiguous), read back by h5py as the APTOS notebook does.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import re
import tracemalloc

import numpy as np
import pytest

from storebench import formats
from storebench.formats import DatasetError, Sample
from storebench.formats.testing import assert_all_same, check_roundtrip
from storebench.formats.testing._badinput import fuzz
from storebench.formats.testing._common import in_forked_child
from storebench.formats.testing._workers import read_all
from storebench.formats.testing.faults import OK_OUTCOMES, damaged_copies, fault_samples, probe

h5py = pytest.importorskip("h5py")

CHUNKED = {"layout": "chunked"}
GZIP_CHUNKED = {"compression": "gzip", "level": 1, "layout": "chunked"}
STACK = {"layout": "stack"}
APTOS = {"compression": "gzip", "level": 2, "layout": "stack"}  # the APTOS notebook's: one gzip-2 chunk per image


def _images() -> list[Sample]:
    rng = np.random.default_rng(0)
    nan = np.array([0x7FC00001, 0xFFC12345, 0x80000000, 0x7F800000], np.uint32).view(np.float32)
    return [
        Sample("xray", rng.integers(0, 4096, (300, 520), np.uint16), 1),
        Sample("rgb", rng.integers(0, 256, (40, 600, 3), np.uint8)),
        Sample("ct slice", rng.integers(-1024, 3072, (70, 9, 1), np.int16), boxes=[[0, 0, 9, 70]], box_labels=[2]),
        Sample("mri", np.resize(nan, (5, 7)), meta={"modality": "T1"}),
    ]


def _volumes() -> list[Sample]:
    rng = np.random.default_rng(1)
    return [
        Sample("ct", rng.integers(-1024, 3072, (70, 130, 90, 1), np.int16), 1,
               boxes=[[1, 2, 3, 40, 50, 60]], box_labels=[5]),
        Sample("brats", rng.standard_normal((20, 16, 16, 4)).astype(np.float32)),
    ]


def _resize_in_manifest(path):
    """Record the files' current sizes, as a dataset crafted this way would."""
    manifest = json.loads((path / formats.MANIFEST).read_text())
    for name in manifest["files"]:
        manifest["files"][name] = (path / name).stat().st_size
    (path / formats.MANIFEST).write_text(json.dumps(manifest))


# --------------------------------------------------------------------------- options and files


def test_hdf5_ids_options_and_flags():
    assert formats.get("hdf5").id == "hdf5"
    assert formats.get("hdf5", layout="chunked", chunks=64).id == "hdf5[layout=chunked,chunks=64]"
    assert formats.get("hdf5", **GZIP_CHUNKED).id == "hdf5[gzip,level=1,layout=chunked]"
    assert formats.get("hdf5", compression="lzf", layout="chunked").id == "hdf5[lzf,layout=chunked]"
    # The stack's chunks default to one per image, and say so in the id (one spelling, one id).
    assert formats.get("hdf5", **STACK) == formats.get("hdf5", layout="stack", chunks="image")
    assert formats.get("hdf5", **APTOS).id == "hdf5[gzip,level=2,layout=stack,chunks=image]"
    assert formats.from_id("hdf5[layout=stack,chunks=auto]").chunks == "auto"
    for bad, match in [({"layout": "tiled"}, "layout"), ({"layout": "chunked", "chunks": 0}, "chunks"),
                       ({"layout": "chunked", "chunks": True}, "chunks"),
                       ({"layout": "chunked", "chunks": "64"}, "chunks"),
                       ({"chunks": 64}, "chunked layout's"), ({"layout": "chunked", "chunk_kib": 64}, "chunk_kib"),
                       ({"layout": "chunked", "chunks": "image"}, "positive int"),
                       ({"layout": "stack", "chunks": 64}, "'image', 'auto' or 'none'"),
                       ({"layout": "stack", "chunks": "tiled"}, "'image', 'auto' or 'none'"),
                       ({"layout": "stack", "chunk_kib": 64}, "chunk_kib"), ({"chunks": "image"}, "flat one"),
                       ({"layout": "stack", "chunks": "none", "compression": "gzip"}, "contiguous and takes no compr"),
                       ({"layout": "stack", "chunks": "none", "compression": "lzf"}, "compresses chunks only")]:
        with pytest.raises(ValueError, match=match):
            formats.get("hdf5", **bad)
    variants = ({}, {"compression": "lzf"}, CHUNKED, GZIP_CHUNKED, STACK, APTOS,
                {"layout": "stack", "chunks": "auto"}, {"compression": "lzf", "layout": "stack", "chunks": "auto"},
                {"layout": "stack", "chunks": "none"})
    flags = {formats.get("hdf5", **v).id: formats.get("hdf5", **v) for v in variants}
    assert {k: (f.partial_reads, f.random_access, f.fixed_shape) for k, f in flags.items()} == {
        "hdf5": (True, True, False), "hdf5[lzf]": (False, False, False),
        "hdf5[layout=chunked]": (True, True, False), "hdf5[gzip,level=1,layout=chunked]": (True, True, False),
        # Compressed, one chunk per image inflates the whole image for a region; "auto" chunks
        # span images, so an item reads (and inflates) its neighbours' pixels too.
        "hdf5[layout=stack,chunks=image]": (True, True, True),
        "hdf5[gzip,level=2,layout=stack,chunks=image]": (False, True, True),
        "hdf5[layout=stack,chunks=auto]": (True, False, True),
        "hdf5[lzf,layout=stack,chunks=auto]": (True, False, True),
        "hdf5[layout=stack,chunks=none]": (True, True, True)}
    assert flags["hdf5"].bound.name == flags["hdf5[lzf]"].bound.name == "bare-h5py"
    assert flags["hdf5[gzip,level=1,layout=chunked]"].bound.name == "bare-h5py[gzip,level=1,layout=chunked]"
    assert flags["hdf5[layout=stack,chunks=none]"].bound.name == "bare-h5py[layout=stack,chunks=none]"
    assert CHUNKED in formats.get("hdf5").bench_variants and STACK in formats.get("hdf5").bench_variants


def test_hdf5_default_writes_the_flat_file_of_before(tmp_path):
    samples = _images()
    formats.get("hdf5").write(samples, tmp_path / "ds")
    with h5py.File(tmp_path / "ds" / "data.h5", "r") as f:
        assert set(f) == {"pixels", "index"} and "layout" not in f.attrs
        px = f["pixels"]
        assert px.dtype == np.uint8 and px.ndim == 1 and px.compression is None
        assert px.chunks == (min(1 << 20, px.shape[0]),)
        assert "x_offset" in f["index"]
        img = samples[0].image  # the first image's bytes start the flat dataset
        assert px[:img.nbytes].tobytes() == img.tobytes()
    manifest = json.loads((tmp_path / "ds" / formats.MANIFEST).read_text())
    assert manifest["format_version"] == 1
    assert manifest["options"] == {"compression": "none", "level": None, "chunk_kib": 1024,
                                   "layout": "flat", "chunks": None}


def _stacks() -> dict[str, list[Sample]]:
    """Fixed-shape sets: 8 RGB fundus-sized images, 3 grey uint16 images, 2 float32 volumes."""
    rng = np.random.default_rng(5)
    return {"rgb": [Sample(f"fundus/{i}.png", rng.integers(0, 256, (256, 256, 3), np.uint8), i % 5,
                           meta={"diagnosis": i % 5}) for i in range(8)],
            "grey": [Sample(f"xray {i}", rng.integers(0, 4096, (40, 30), np.uint16), 1,
                            boxes=[[1, 2, 10, 20]], box_labels=[i]) for i in range(3)],
            "volumes": [Sample(f"mri {i}", rng.standard_normal((4, 5, 6, 2)).astype(np.float32)) for i in range(2)]}


@pytest.mark.parametrize("options", [STACK, APTOS, {"layout": "stack", "chunks": "auto"},
                                     {"compression": "lzf", "layout": "stack", "chunks": "auto"},
                                     {"layout": "stack", "chunks": "none"}], ids=lambda v: formats.get("hdf5", **v).id)
def test_hdf5_stack_is_one_dataset_of_all_images_that_h5py_reads_as_the_notebook(tmp_path, options):
    """``images`` is (N, H, W, C), (N, H, W) or (N, D, H, W, C) in the samples' dtype; the APTOS
    notebook's lookup (``np.where`` over ``names``, then ``images[i]``) finds each image; chunks
    are one image (1, H, W, C), h5py's guess for the whole array, or none (contiguous)."""
    fmt = formats.get("hdf5", **options)
    for kind, samples in _stacks().items():
        path = tmp_path / kind
        check_roundtrip(fmt, samples, path, batch=[1, 0, 1, -1])
        first = samples[0].image
        with h5py.File(path / "data.h5", "r") as f:
            images, names = f["images"], f["names"]
            assert f.attrs["layout"] == "stack" and images.shape == (len(samples), *first.shape)
            assert images.dtype == first.dtype and names.asstr()[()].tolist() == [s.key for s in samples]
            all_names = names[()]
            for s in samples:
                i = np.where(all_names == s.key.encode())[0][0]
                assert images[i].tobytes() == s.image.tobytes()
            assert (images.compression, images.compression_opts) == \
                ({"none": None, "gzip": "gzip", "lzf": "lzf"}[fmt.compression], fmt.level)
            if fmt.chunks == "image":
                assert images.chunks == (1, *first.shape)
            elif fmt.chunks == "none":
                assert images.chunks is None and images.id.get_create_plist().get_layout() == h5py.h5d.CONTIGUOUS
            else:  # exactly what h5py picks for the whole array, as the notebook's create_dataset did
                with h5py.File(tmp_path / f"guess-{kind}.h5", "w") as g:
                    guess = g.create_dataset("x", shape=images.shape, dtype=images.dtype, chunks=True).chunks
                assert images.chunks == guess
                if kind == "rgb":  # 8 x 256 x 256 x 3: chunks of pixels of 2 images, 2 of the 3 channels
                    assert images.chunks != (1, *first.shape) and images.chunks[0] > 1
    fmt.write([], tmp_path / "empty")
    with h5py.File(tmp_path / "empty" / "data.h5", "r") as f:
        assert "images" not in f and f["names"].shape == (0,)  # no image, no shape to give it


@pytest.mark.parametrize("options", [STACK, {"layout": "stack", "chunks": "auto"}], ids=["image", "auto"])
def test_hdf5_stack_refuses_a_second_shape_or_dtype_by_key_and_leaves_nothing(tmp_path, options):
    fmt = formats.get("hdf5", **options)
    good = _stacks()["rgb"][:3]
    for bad, what in [(Sample("cropped", good[0].image[:, :255]), r"uint8 \(256, 255, 3\)"),
                      (Sample("16 bit", good[0].image.astype(np.uint16)), r"uint16 \(256, 256, 3\)")]:
        with pytest.raises(ValueError, match=re.escape(repr(bad.key)) + f".*{what}.*"
                           + re.escape("uint8 (3, 256, 256, 3) so far") + ".*fixed-shape presets only"):
            fmt.write([*good, bad, good[0]], tmp_path / "ds")
        assert list(tmp_path.iterdir()) == []  # no dataset, no temp dir, no staged pixels


@pytest.mark.parametrize(("options", "comp", "opts"), [
    (CHUNKED, None, None), (GZIP_CHUNKED, "gzip", 1),
    ({"compression": "gzip", "layout": "chunked", "chunks": 64}, "gzip", 4),
    ({"compression": "lzf", "layout": "chunked", "chunks": 32}, "lzf", None)], ids=lambda v: str(v))
def test_hdf5_chunked_images_are_h5py_datasets_of_their_dtype_shape_and_chunks(tmp_path, options, comp, opts):
    """``h5py.File(path)["images/00000000"][...]`` is the image; chunks are the asked side per
    spatial axis clipped to the image (256 for images and 64 for volumes by default), channels whole."""
    fmt = formats.get("hdf5", **options)
    side = options.get("chunks")
    for name, samples, default in (("images", _images(), 256), ("volumes", _volumes(), 64)):
        check_roundtrip(fmt, samples, tmp_path / name)
        with h5py.File(tmp_path / name / "data.h5", "r") as f:
            assert f.attrs["layout"] == "chunked" and len(f["images"]) == len(samples)
            for i, s in enumerate(samples):
                ds = f[f"images/{i:08d}"]
                got = ds[...]
                assert got.dtype == s.image.dtype and got.shape == s.image.shape
                assert got.tobytes() == s.image.tobytes()
                spatial = 3 if s.image.ndim == 4 else 2
                want = tuple(min(side or default, n) for n in s.image.shape[:spatial]) + s.image.shape[spatial:]
                assert ds.chunks == want == fmt.chunk_shape(s.image.shape)
                assert (ds.compression, ds.compression_opts) == (comp, opts)
                region = tuple(slice(n // 3, n // 3 + max(1, n // 4)) for n in s.image.shape[:spatial])
                assert ds[region].tobytes() == s.image[region].tobytes()
    with h5py.File(tmp_path / "images" / "data.h5", "r") as f:
        assert f["images/00000000"].chunks[:2] == ((side or 256), (side or 256))  # 300x520: not clipped


def test_hdf5_each_layout_opens_only_its_own_file_and_open_dataset_both(tmp_path):
    samples = _images()
    formats.get("hdf5").write(samples, tmp_path / "flat")
    formats.get("hdf5", layout="chunked", chunks=64).write(samples, tmp_path / "chunked")
    formats.get("hdf5", **APTOS).write(_stacks()["grey"], tmp_path / "stack")
    with pytest.raises(DatasetError, match=re.escape("'chunked' layout, not 'flat'")):
        formats.get("hdf5").open(tmp_path / "chunked")
    with pytest.raises(DatasetError, match=re.escape("'flat' layout, not 'chunked'")):
        formats.get("hdf5", layout="chunked").open(tmp_path / "flat")
    with pytest.raises(DatasetError, match=re.escape("'stack' layout, not 'flat'")):
        formats.get("hdf5").open(tmp_path / "stack")
    with pytest.raises(DatasetError, match=re.escape("'chunked' layout, not 'stack'")):
        formats.get("hdf5", **STACK).open(tmp_path / "chunked")
    for name, want in (("flat", samples), ("chunked", samples), ("stack", _stacks()["grey"])):
        with formats.open_dataset(tmp_path / name) as r:
            assert_all_same(want, list(r))
    with formats.open_dataset(tmp_path / "chunked") as r:
        assert r.format.id == "hdf5[layout=chunked,chunks=64]"
    with formats.open_dataset(tmp_path / "stack") as r:
        assert r.format.id == "hdf5[gzip,level=2,layout=stack,chunks=image]"


# --------------------------------------------------------------------------- partial reads


def _damage_chunk(path, i: int, coord: tuple[int, ...]) -> None:
    """Garble the stored bytes of the chunk of image ``i`` that holds ``coord``."""
    with h5py.File(path / "data.h5", "r") as f:
        info = f[f"images/{i:08d}"].id.get_chunk_info_by_coord(coord)
    with open(path / "data.h5", "r+b") as h:
        h.seek(info.byte_offset + info.size // 4)
        h.write(np.random.default_rng(2).bytes(info.size // 2))


@pytest.mark.parametrize("kind", ["image", "volume"])
def test_hdf5_chunked_region_reads_inflate_only_the_chunks_they_overlap(tmp_path, kind):
    """With one chunk garbled, a region beside it reads right, one over it and the whole image are
    a DatasetError naming the image: HDF5 inflated only the chunks each region overlaps."""
    rng = np.random.default_rng(3)
    if kind == "image":
        img = (np.add.outer(np.arange(512), np.arange(512)) * 5 + rng.integers(0, 9, (512, 512))).astype(np.uint16)
        far, near, hit = (384, 384), (slice(0, 384), slice(0, 384)), (slice(380, 390), slice(380, 390))
    else:
        img = rng.integers(-1024, 3072, (128, 128, 128, 1)).astype(np.int16)
        far, near, hit = (64, 64, 64, 0), (slice(0, 64), slice(0, 128), slice(0, 128)), (slice(60, 70),) * 3
    fmt = formats.get("hdf5", compression="gzip", level=1, layout="chunked", chunks=128 if kind == "image" else 64)
    fmt.write([Sample("big", img)], tmp_path / "ds")
    _damage_chunk(tmp_path / "ds", 0, far)
    with fmt.open(tmp_path / "ds") as r:
        assert r.read_region(0, near).tobytes() == img[near].tobytes()
        for read in (lambda: r.read_region(0, hit), lambda: r[0]):
            with pytest.raises(DatasetError, match=re.escape("images/00000000 unreadable")):
                read()


def _peak_patch_memory(path, conn):
    """Peak RSS growth (bytes) of reading 8 patches, then of one whole read, sent on ``conn``."""
    def rss(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) << 10 for line in f if line.startswith(field))
    with formats.open_dataset(path) as r:
        r.read_region(0, (slice(0, 8),) * 3)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak to the RSS of now
        base = rss("VmRSS:")
        starts = np.random.default_rng(4).integers(0, 160, (8, 3))
        for z, y, x in starts.tolist():
            r.read_region(0, (slice(z, z + 32), slice(y, y + 64), slice(x, x + 64)))
        patches = rss("VmHWM:") - base
        image = r[0].image  # held while the peak is read
        whole = rss("VmHWM:") - base
        del image
    conn.send((patches, whole))
    conn.close()


def test_hdf5_chunked_patch_reads_never_hold_the_volume(tmp_path):
    """Peak RSS while reading 32x64x64 patches of a 100 MB int16 volume grows by less than a tenth of
    it (a patch's chunks, 4 MB at most); one whole read grows it by the volume (so the measurement can fail)."""
    z, y, x = np.ogrid[0:192, 0:512, 0:512]
    vol = ((x + y) % 700 - 1024 + z).astype(np.int16)[..., None]
    formats.get("hdf5", **GZIP_CHUNKED).write([Sample("ct", vol)], tmp_path / "ds")
    got = in_forked_child(_peak_patch_memory, (tmp_path / "ds",), 120)
    assert all(isinstance(v, int) for v in got), got
    patches, whole = got
    assert patches < vol.nbytes / 10, f"patch reads grew peak RSS by {patches} for a {vol.nbytes}-byte volume"
    assert whole > vol.nbytes / 2, f"a whole read grew peak RSS by only {whole}: measurement broken?"


# --------------------------------------------------------------------------- writing and processes


@pytest.mark.parametrize("options", [{}, CHUNKED, GZIP_CHUNKED, APTOS, {"layout": "stack", "chunks": "auto"}],
                         ids=["flat", "chunked", "gzip-chunked", "stack", "stack-auto"])
def test_hdf5_writes_stream(tmp_path, options):
    """Writing 16 images of 4 MiB from a generator holds a few of them at most (numpy's allocations,
    traced): the dataset is never in memory."""
    fmt = formats.get("hdf5", **options)
    one = np.arange(1024 * 1024, dtype=np.float32).reshape(1024, 1024)

    def samples():
        for k in range(16):
            yield Sample(f"s{k}", one + k)
    tracemalloc.start()
    try:
        fmt.write(samples(), tmp_path / "ds")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * one.nbytes, f"{fmt.id}: writing peaked at {peak} bytes for 16 x {one.nbytes}"
    with fmt.open(tmp_path / "ds") as r:
        assert len(r) == 16 and r[15].image.tobytes() == (one + 15).tobytes()


def _regions_in_worker(reader) -> list:
    return [reader.read_region(i, (slice(1, 3), slice(0, 2))) for i in range(len(reader))]


def test_hdf5_chunked_reader_in_forked_workers(tmp_path):
    fmt = formats.get("hdf5", **GZIP_CHUNKED)
    samples = _images()
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        expected = read_all(r)  # handles open in the parent before the fork
        with mp.get_context("fork").Pool(2) as pool:
            results = pool.map(read_all, [r, r])
            regions = pool.map(_regions_in_worker, [r])
        for got in results:
            assert_all_same(expected, got)
        assert [a.tobytes() for a in regions[0]] == [s.image[1:3, 0:2].tobytes() for s in samples]
        assert_all_same(expected, read_all(r))


# --------------------------------------------------------------------------- damage


def _crafted(tmp_path, edit):
    """A chunked dataset of :func:`_images` after ``edit(h5py file)``, sizes recorded anew."""
    path = tmp_path / "ds"
    formats.get("hdf5", **CHUNKED).write(_images(), path)
    with h5py.File(path / "data.h5", "r+") as f:
        edit(f)
    _resize_in_manifest(path)
    return path


def _replace(f, name, data):
    del f[name]
    f.create_dataset(name, data=data)


def _group_for_dataset(f):
    del f["images/00000001"]
    f.create_group("images/00000001")


@pytest.mark.parametrize(("edit", "i", "at_open", "match"), [
    (lambda f: _replace(f, "images/00000001", np.zeros((40, 600, 4), np.uint8)), 1, False,
     r"images/00000001 is uint8 \(40, 600, 4\), the index says uint8 \(40, 600, 3\)"),
    (lambda f: _replace(f, "images/00000001", np.zeros((40, 600, 3), np.uint16)), 1, False,
     "images/00000001 is uint16"),
    (lambda f: _replace(f, "images/00000000", np.zeros((300, 520), ">u2")), 0, False, "images/00000000 is >u2"),
    (lambda f: f.move("images/00000001", "images/x"), 1, False, "images/00000001 unreadable"),
    (_group_for_dataset, 1, False, "images/00000001 unreadable"),
    (lambda f: f.__delitem__("images/00000002"), 2, True, "holds 3 images, the index 4"),
    (lambda f: f.__delitem__("images"), 0, True, "damaged"),
    (lambda f: f.attrs.__setitem__("layout", "tiled"), 0, True, "'tiled' layout"),
], ids=["channels", "dtype", "byte order", "renamed", "a group", "missing", "no images", "layout"])
def test_hdf5_chunked_images_that_do_not_match_the_index_are_dataset_errors(tmp_path, edit, i, at_open, match):
    """An image dataset of another shape, dtype or byte order than the index says, or none, is a
    DatasetError naming it on every read path; a wrong image count or layout one at open."""
    path = _crafted(tmp_path, edit)
    if at_open:
        with pytest.raises(DatasetError, match=match):
            formats.get("hdf5", **CHUNKED).open(path)
        return
    with formats.get("hdf5", **CHUNKED).open(path) as r:
        assert r[2] == _images()[2]
        for read in (lambda: r[i], lambda: r.read_region(i, (slice(0, 2), slice(0, 2))), lambda: list(r),
                     lambda: r.read_batch([2, i])):
            with pytest.raises(DatasetError, match=match) as info:
                read()
            assert "unreadable" in match or "unreadable" not in str(info.value)  # said once, not wrapped


@pytest.mark.parametrize(("edit", "match"), [
    (lambda f: _replace(f, "images", np.zeros((3, 40, 31), np.uint16)),
     r"images is uint16 \(3, 40, 31\), the index says 3 images of uint16 \(40, 30\)"),
    (lambda f: _replace(f, "images", np.zeros((2, 40, 30), np.uint16)), r"images is uint16 \(2, 40, 30\)"),
    (lambda f: _replace(f, "images", np.zeros((3, 40, 30), ">u2")), r"images is >u2 \(3, 40, 30\)"),
    (lambda f: f.__delitem__("images"), "damaged"),
    (lambda f: f.attrs.__setitem__("layout", "flat"), "'flat' layout, not 'stack'"),
], ids=["shape", "count", "byte order", "no images", "layout"])
def test_hdf5_stack_that_does_not_match_the_index_is_a_dataset_error_at_open(tmp_path, edit, match):
    path = tmp_path / "ds"
    formats.get("hdf5", **STACK).write(_stacks()["grey"], path)
    with h5py.File(path / "data.h5", "r+") as f:
        edit(f)
    _resize_in_manifest(path)
    with pytest.raises(DatasetError, match=match):
        formats.get("hdf5", **STACK).open(path)


@pytest.mark.parametrize("options", [CHUNKED, GZIP_CHUNKED, APTOS], ids=["chunked", "gzip-chunked", "stack"])
def test_hdf5_chunked_damaged_files_give_typed_errors_or_correct_data(tmp_path, options):
    """The suite's fault matrix (truncations, flips, zeroed runs, deleted files), for the chunked
    layout it runs only on the default flat one."""
    fmt = formats.get("hdf5", **options)
    expected = fault_samples(fmt)
    fmt.write(expected, tmp_path / "src")
    outcomes = {label: probe(fmt, path, expected) for label, path in damaged_copies(fmt, tmp_path / "src", tmp_path)}
    bugs = {k: v for k, v in outcomes.items() if v[0] not in OK_OUTCOMES}
    assert not bugs, "\n".join(f"{k}: {o}: {d}" for k, (o, d) in bugs.items())
    assert any(o == "typed error" for o, _ in outcomes.values())


@pytest.mark.parametrize("options", [CHUNKED, GZIP_CHUNKED, APTOS], ids=["chunked", "gzip-chunked", "stack"])
def test_hdf5_chunked_fuzzed_damage_gives_typed_errors_or_correct_data(tmp_path, options):
    fmt = formats.get("hdf5", **options)
    results = fuzz(fmt, range(24), tmp_path)
    bugs = {s: r for s, r in results.items() if r[1] not in OK_OUTCOMES}
    assert not bugs, "\n".join(f"seed {s} ({what}): {o}: {d}" for s, (what, o, d) in bugs.items())
    assert any(o == "typed error" for _w, o, _d in results.values())


def _regions_of_damaged(fmt, path, expected, conn):
    """Every sample's whole region and a corner of it, read from a damaged copy: the right pixels
    or a DatasetError, sent on ``conn``."""
    try:
        with fmt.open(path) as r:
            for i, s in enumerate(expected):
                for reg in ((slice(None), slice(None)), (slice(0, 1), slice(0, 1))):
                    if r.read_region(i, reg).tobytes() != s.image[reg].tobytes() and not r.verify():
                        conn.send(("wrong data", f"sample {i} region {reg}"))
                        return
        conn.send(("correct data", ""))
    except DatasetError as err:
        conn.send(("typed error", str(err)[-200:]))
    except BaseException as err:  # the point is to classify everything
        conn.send(("untyped error", f"{type(err).__name__}: {err}"))


def test_hdf5_region_reads_of_damaged_files_are_typed_errors_or_correct_data(tmp_path):
    """Region reads (flat uncompressed hyperslabs, chunked ones) of every damaged copy."""
    for options in ({}, GZIP_CHUNKED):
        fmt = formats.get("hdf5", **options)
        expected = fault_samples(fmt)
        src = tmp_path / f"src-{fmt.id}"
        fmt.write(expected, src)
        work = tmp_path / f"work-{fmt.id}"
        work.mkdir()
        outcomes = {label: in_forked_child(_regions_of_damaged, (fmt, path, expected), 20)
                    for label, path in damaged_copies(fmt, src, work)}
        bugs = {k: v for k, v in outcomes.items() if v[0] not in OK_OUTCOMES}
        assert not bugs, f"{fmt.id}: " + "\n".join(f"{k}: {o}: {d}" for k, (o, d) in bugs.items())
