"""Checks specific to tiff beyond the shared conformance suite.

The files are standard tiled TIFF that ``tifffile.imread`` reads back as the
sample's own array, for every codec (the conformance suite runs only the
default and the bench variants); each codec's declared modes; region reads
decode only the tiles they overlap; tiles shrink for small images; BigTIFF
past the threshold; bad options; damage in tile data and page tables is a
DatasetError naming the file, fuzzed for every codec.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from storebench import formats
from storebench.formats import DatasetError, Sample
from storebench.formats.testing import assert_all_same, edge_samples, mode_sample, volume_edge_samples

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("imagecodecs")
from storebench.formats import tiff  # noqa: E402
from storebench.formats.testing._badinput import _check_fuzz  # noqa: E402

MISSING = tiff.unavailable_codecs()  # HTJ2K on Python 3.10's imagecodecs 2025.3.30
CODECS = sorted(c for c in tiff.CODECS if c not in MISSING)
OPTIONS = [{"compression": c} for c in CODECS] + [{"compression": "zstd", "predictor": True},
                                                  {"compression": "deflate", "predictor": True, "level": 9}]
HTJ2K = pytest.mark.skipif("htj2k" in MISSING, reason=MISSING.get("htj2k", ""))


def _id(opts: dict) -> str:
    return formats.get("tiff", **opts).id


@pytest.mark.skipif(not MISSING, reason="this imagecodecs has every codec")
def test_a_codec_imagecodecs_lacks_is_refused_with_the_reason():
    for name, why in MISSING.items():
        with pytest.raises(ValueError, match=f"'{name}' is unavailable here: imagecodecs"):
            formats.get("tiff", compression=name)
        assert all(v.get("compression") != name for v in tiff.TIFF.bench_variants), why


def _smooth(shape, dtype) -> np.ndarray:
    """A smooth image (what the image codecs are for) spanning much of the dtype's range."""
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    base = np.sin(x / 17.0) + np.cos(y / 11.0)  # -2..2
    if dtype == np.uint8:
        img = base * 60 + 128
    elif dtype == np.uint16:
        img = base * 15000 + 32768
    elif dtype == np.int16:
        img = base * 1000 - 24
    else:
        img = base * 0.3
    img = img.astype(dtype)
    return img if len(shape) == 2 else np.stack([img + k for k in range(shape[2])], axis=-1).astype(dtype)


def _samples(fmt) -> list[Sample]:
    """Edge cases, every declared mode, and multi-tile images (tile 16: 5x7 tiles) the format stores."""
    out = edge_samples() + [mode_sample(*m) for m in sorted(fmt.modes) if len(m) == 2]
    out += [Sample(f"big {dt} {c}", _smooth((70, 100, c) if c else (70, 100), np.dtype(dt)), label=c)
            for dt, c in sorted(m for m in fmt.modes if len(m) == 2)]
    return [s for s in out if s.mode in fmt.modes]


def _volumes(fmt) -> list[Sample]:
    out = volume_edge_samples() + [mode_sample(*m) for m in sorted(fmt.modes) if len(m) == 3]
    return [s for s in out if s.mode in fmt.modes]


@pytest.mark.parametrize("opts", OPTIONS, ids=_id)
def test_tifffile_reads_every_image_and_volume_back(opts, tmp_path):
    """``tifffile.imread`` of each file is the sample's image (shape and dtype exact; pixels exact
    for the lossless codecs), for 2-D images and, where stored, volumes as one page per slice."""
    fmt = formats.get("tiff", tile=16, **opts)
    for kind, samples in (("images", _samples(fmt)), ("volumes", _volumes(fmt))):
        if not samples:
            assert kind == "volumes" and fmt.compression == "jpeg"
            continue
        fmt.write(samples, tmp_path / kind)
        with fmt.open(tmp_path / kind) as r:
            assert_all_same(samples, list(r), lossless=fmt.lossless)
        for i, s in enumerate(samples):
            path = tmp_path / kind / "images" / f"{i:08d}.tif"
            img = tifffile.imread(path)
            assert img.dtype == s.image.dtype and img.shape == s.image.shape, (s.key, img.shape)
            if fmt.lossless:
                assert img.tobytes() == s.image.tobytes(), s.key
            elif s.image.size > 1000:  # JPEG at quality 90 on a smooth image
                assert np.abs(img.astype(int) - s.image).mean() < 3, s.key
            with tifffile.TiffFile(path) as t:
                assert len(t.pages) == (s.image.shape[0] if s.image.ndim == 4 else 1)
                page = t.pages[0]
                assert page.is_tiled and not t.is_bigtiff
                assert page.compression == tiff.CODECS[fmt.compression].tag
                assert page.tilelength % 16 == 0 and page.tilewidth % 16 == 0


def test_each_codec_declares_what_it_stores_and_refuses_the_rest(tmp_path):
    u16 = Sample("xray", np.zeros((4, 4), np.uint16))
    f32 = Sample("mri", np.zeros((1, 4, 4, 1), np.float32))
    i16 = Sample("ct", np.zeros((4, 4), np.int16))
    rgba = Sample("rgba", np.zeros((4, 4, 4), np.uint8))
    refused = {"jpeg": [u16, rgba, Sample("vol", np.zeros((2, 4, 4, 1), np.uint8))],
               "jpeg2000": [f32], "htj2k": [f32], "jpegxl": [i16, f32]}
    for comp in CODECS:
        fmt = formats.get("tiff", compression=comp)
        assert fmt.lossless == (comp != "jpeg")
        assert fmt.partial_reads and fmt.random_access
        assert fmt.image_codec == ("tiff" if comp == "none" else f"tiff-{comp}")
        assert fmt.bound.name == ("bare-tifffile" if comp == "none" else f"bare-tifffile[{comp}]")
        for s in refused.get(comp, []):
            assert s.mode not in fmt.modes
            with pytest.raises(ValueError, match=f"image of key {s.key!r}: tiff cannot store"):
                fmt.write([s], tmp_path / comp)
            assert not (tmp_path / comp).exists()
    assert formats.get("tiff").modes == formats.ALL_MODES
    assert formats.get("tiff", compression="jpeg").modes == formats.modes_of(("uint8",), (0, 1, 3))


@pytest.mark.parametrize("bad, match", [
    ({"compression": "jpegls"}, "no compression tag for JPEG-LS"),
    ({"compression": "lzw"}, "compression: must be one of"),
    ({"compression": "jpeg2000", "level": 5}, "level: must be None with compression 'jpeg2000'"),
    ({"compression": "zstd", "level": 23}, r"level: must be None, or an int in 1\.\.22"),
    ({"compression": "jpeg", "level": 0}, r"1\.\.100"),
    ({"tile": 100}, "tile: must be a positive multiple of 16"),
    ({"tile": 0}, "tile: must be a positive multiple of 16"),
    ({"compression": "jpeg", "predictor": True}, "predictor: only with 'zstd' or 'deflate'"),
    ({"tile": 256.0}, "tile: must be int"),
])
def test_bad_options_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        formats.get("tiff", **bad)


def test_options_reach_the_file(tmp_path):
    img = _smooth((300, 200), np.uint16)
    for opts, want in [({"compression": "zstd", "predictor": True, "tile": 64}, (50000, 2, 64, 64)),
                       ({"compression": "deflate", "level": 1}, (8, 1, 256, 208)),
                       ({"compression": "jpegxl", "level": 3}, (50002, 1, 256, 208))]:
        fmt = formats.get("tiff", **opts)
        fmt.write([Sample("a", img), Sample("f", img.astype(np.float32))] if fmt.predictor else
                  [Sample("a", img)], tmp_path / fmt.id)
        with tifffile.TiffFile(tmp_path / fmt.id / "images" / "00000000.tif") as t:
            p = t.pages[0]
            assert (p.compression, p.predictor, p.tilelength, p.tilewidth) == want, fmt.id
        if fmt.predictor:  # floating-point differencing for float32
            with tifffile.TiffFile(tmp_path / fmt.id / "images" / "00000001.tif") as t:
                assert t.pages[0].predictor == 3
        with fmt.open(tmp_path / fmt.id) as r:
            assert r[0].image.tobytes() == img.tobytes()
    small, big = formats.get("tiff", compression="zstd", level=1), formats.get("tiff", compression="zstd", level=19)
    noisy = _smooth((256, 256), np.uint16) + np.random.default_rng(0).integers(0, 16, (256, 256), np.uint16)
    sizes = []
    for fmt in (small, big):
        fmt.write([Sample("n", noisy)], tmp_path / f"n{fmt.level}")
        sizes.append((tmp_path / f"n{fmt.level}" / "images" / "00000000.tif").stat().st_size)
    assert sizes[1] < sizes[0]  # the level is passed on


def test_small_images_get_small_tiles(tmp_path):
    fmt = formats.get("tiff")  # tile 256
    fmt.write([Sample("1x1", np.ones((1, 1), np.uint16)), Sample("strip", np.ones((3, 300), np.uint8))],
              tmp_path / "ds")
    fmt.write([Sample("vol", np.ones((2, 17, 5, 1), np.int16))], tmp_path / "vol")
    tiles = []
    for f in ("ds/images/00000000.tif", "ds/images/00000001.tif", "vol/images/00000000.tif"):
        with tifffile.TiffFile(tmp_path / f) as t:
            tiles.append((t.pages[0].tilelength, t.pages[0].tilewidth))
    assert tiles == [(16, 16), (16, 256), (32, 16)]
    assert (tmp_path / "ds" / "images" / "00000000.tif").stat().st_size < 2000  # not a padded 256x256 tile


class _Counting:
    """Wraps a _Tiles' decode to record the tile indices it decodes."""

    def __init__(self, decode):
        self.decode, self.seen = decode, []

    def __call__(self, data, index, **kw):
        self.seen.append(index)
        return self.decode(data, index, **kw)


@pytest.mark.parametrize("comp", ["none", "zstd", pytest.param("htj2k", marks=HTJ2K)])
def test_a_region_decodes_only_the_tiles_it_overlaps(comp, tmp_path):
    fmt = formats.get("tiff", compression=comp, tile=32)
    img = _smooth((100, 130), np.uint16)  # 4 x 5 tiles
    vol = np.stack([_smooth((40, 70), np.uint16) + k for k in range(6)])[..., None]  # 6 pages of 2 x 3 tiles
    fmt.write([Sample("img", img)], tmp_path / "img")
    fmt.write([Sample("vol", vol)], tmp_path / "vol")
    with fmt.open(tmp_path / "img") as r, fmt.open(tmp_path / "vol") as rv:
        r.read_region(0, (slice(0, 1), slice(0, 1)))  # parses the file: its tables are cached
        rv.read_region(0, (slice(0, 1), slice(0, 1), slice(0, 1)))
        (t,), (tv,) = r._tables.values(), rv._tables.values()
        for table in (t, tv):  # the cached tables are what later reads use
            object.__setattr__(table, "decode", _Counting(table.decode))
        got = r.read_region(0, (slice(40, 70), slice(31, 33)))  # rows 1-2 x cols 0-1 of the tiles
        assert got.tobytes() == img[40:70, 31:33].tobytes()
        assert sorted(t.decode.seen) == [5, 6, 10, 11]
        t.decode.seen.clear()
        assert r.read_region(0, (slice(99, 100), slice(128, 130))).tobytes() == img[99:, 128:].tobytes()
        assert t.decode.seen == [19]  # the last tile only
        got = rv.read_region(0, (slice(2, 4), slice(33, 40), slice(0, 10)))
        assert got.tobytes() == vol[2:4, 33:40, 0:10].tobytes()
        assert tv.decode.seen == [3, 3]  # tile (1, 0) of pages 2 and 3
        t.decode.seen.clear()
        assert r[0].image.tobytes() == img.tobytes()
        assert sorted(t.decode.seen) == list(range(20))  # a whole read decodes every tile once


def test_threads_share_a_reader(tmp_path):
    fmt = formats.get("tiff", compression="zstd", tile=16)
    samples = [Sample(f"s{i}", _smooth((60 + i, 90), np.uint16) + np.uint16(i)) for i in range(12)]
    fmt.write(samples, tmp_path / "ds")
    rng = np.random.default_rng(3)
    asks = []
    for _ in range(400):
        i = int(rng.integers(12))
        y, x = int(rng.integers(0, 50)), int(rng.integers(0, 80))
        asks.append((i, (slice(y, y + 10), slice(x, x + 10))))
    with fmt.open(tmp_path / "ds") as r, ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda a: r.read_region(*a), asks))
    for (i, reg), arr in zip(asks, got):
        assert arr.tobytes() == samples[i].image[reg].tobytes()


def test_parsed_tables_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(tiff, "CACHED_FILES", 3)
    samples = [Sample(f"s{i}", np.full((20, 20), i, np.uint8)) for i in range(8)]
    formats.get("tiff").write(samples, tmp_path / "ds")
    with formats.get("tiff").open(tmp_path / "ds") as r:
        assert [int(s.image[0, 0]) for s in r] == list(range(8))
        assert list(r._tables) == [5, 6, 7]
        r[6]
        assert list(r._tables) == [5, 7, 6]


def test_bigtiff_past_the_threshold(tmp_path, monkeypatch):
    monkeypatch.setattr(tiff, "BIGTIFF_BYTES", 64 * 64 * 2 * 3 - 1)  # a 3-slice 64x64 uint16 volume passes it
    fmt = formats.get("tiff", tile=64)
    vol = Sample("vol", np.arange(3 * 64 * 64, dtype=np.uint16).reshape(3, 64, 64, 1))
    small = Sample("small", np.ones((1, 64, 64, 1), np.uint16))
    fmt.write([vol, small], tmp_path / "ds")
    kinds = []
    for i in range(2):
        with tifffile.TiffFile(tmp_path / "ds" / "images" / f"{i:08d}.tif") as t:
            kinds.append(t.is_bigtiff)
    assert kinds == [True, False]
    with fmt.open(tmp_path / "ds") as r:
        assert_all_same([vol, small], list(r))
    assert tifffile.imread(tmp_path / "ds" / "images" / "00000000.tif").tobytes() == vol.image.tobytes()


def _damaged(tmp_path, comp, damage) -> Path:
    fmt = formats.get("tiff", compression=comp, tile=16)
    fmt.write([Sample("a", _smooth((64, 64), np.uint8)), Sample("b", _smooth((40, 40), np.uint8))],
              tmp_path / "ds")
    damage(tmp_path / "ds" / "images" / "00000000.tif")
    return tmp_path / "ds"


def _garble_tiles(f: Path) -> None:
    with tifffile.TiffFile(f) as t:
        start = t.pages[0].dataoffsets[5]
    data = bytearray(f.read_bytes())
    data[start:start + 40] = np.random.default_rng(0).bytes(40)
    f.write_bytes(bytes(data))


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[:-100])


@pytest.mark.parametrize("comp", ["zstd", "deflate", "jpeg2000", pytest.param("htj2k", marks=HTJ2K), "jpegxl"])
def test_damaged_tile_data_is_a_dataset_error_naming_the_file(comp, tmp_path):
    path = _damaged(tmp_path, comp, _garble_tiles)
    with formats.get("tiff", compression=comp, tile=16).open(path) as r:
        with pytest.raises(DatasetError, match=r"images/00000000\.tif is damaged"):
            r[0]
        assert r.read_region(0, (slice(0, 16), slice(0, 16))).shape == (16, 16)  # tile 0 is whole
        assert r[1].key == "b"
        assert r.verify() == ["a"]


def test_truncated_files_and_missing_pages_name_the_file(tmp_path, caplog):
    caplog.set_level(logging.CRITICAL, "tifffile")
    path = _damaged(tmp_path, "none", _truncate)
    with formats.get("tiff", tile=16).open(path) as r:
        with pytest.raises(DatasetError, match=r"images/00000000\.tif is damaged: ValueError: tiles 12\.\.15 of "
                                               r"page 0 end at byte \d+, past the \d+-byte file"):
            r[0]
    fmt = formats.get("tiff")
    vol = np.zeros((3, 4, 4, 1), np.int16)
    fmt.write([Sample("v", vol)], tmp_path / "vol")
    tifffile.imwrite(tmp_path / "vol" / "images" / "00000000.tif", vol[:2, ..., 0], tile=(16, 16),
                     photometric="minisblack")
    with fmt.open(tmp_path / "vol") as r:
        with pytest.raises(DatasetError, match=r"00000000\.tif is damaged: ValueError: holds 2 pages, the index says"):
            r[0]
    other = formats.get("tiff", compression="zstd")
    other.write([Sample("v", vol)], tmp_path / "zstd")
    (tmp_path / "vol" / "images" / "00000000.tif").write_bytes(
        (tmp_path / "zstd" / "images" / "00000000.tif").read_bytes())
    with fmt.open(tmp_path / "vol") as r:
        with pytest.raises(DatasetError, match="is not the tiled 4x4x1 int16 image the index and options say"):
            r.read_region(0, (slice(0, 1), slice(0, 1), slice(0, 1)))
    (tmp_path / "vol" / "images" / "00000000.tif").unlink()
    with fmt.open(tmp_path / "vol") as r:
        with pytest.raises(DatasetError, match=r"images/00000000\.tif is missing"):
            r[0]


@pytest.mark.parametrize("opts", [{"compression": c} for c in CODECS if c != "none"]
                         + [{"compression": "zstd", "predictor": True}], ids=_id)
def test_fuzzed_damage_for_every_codec(opts, tmp_path, caplog):
    """The conformance suite fuzzes the default (uncompressed) files; here every codec's decoder
    meets damaged files too: a DatasetError or the right samples, never a crash."""
    caplog.set_level(logging.CRITICAL, "tifffile")
    _check_fuzz(formats.get("tiff", **opts), range(500, 524), tmp_path)


@HTJ2K
def test_bound_reads_with_tifffile(tmp_path):
    from storebench.formats._bound import Pool

    samples = _samples(formats.get("tiff", compression="htj2k"))[:6]
    pool = Pool.of(samples, "t")
    fmt = formats.get("tiff", compression="htj2k", tile=32)
    assert fmt.bound.name == "bare-tifffile[htj2k,tile=32]"
    seen: list[np.ndarray] = []
    run = fmt.bound.open(pool=pool, op="random", perm=np.arange(6)[::-1], batch=2, root=tmp_path, touch=seen.append)
    assert run.run() == 6
    assert [a.tobytes() for a in seen] == [s.image.tobytes() for s in samples[::-1]]
    files = sorted((tmp_path / "bounds" / "t" / fmt.bound.name).iterdir())
    assert [f.name for f in files] == [f"{i:08d}.tif" for i in range(6)]
