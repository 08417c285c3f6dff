"""Formats declare their image codec, libraries, capability flags and bound; bounds give their Samples.

Every registered format (each bench variant) names a bound that exists and
opens, whose Samples are the ones the format reads; a format defined here,
registered nowhere, gets decode-only when it stores PNG files and the floor
when it stores raw pixels, with no edit to bench/.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from storebench import fixtures, formats
from storebench.formats import Format, Reader, Sample
from storebench.formats._bound import FLOOR, GATHER, OPS, PREAD, Bound, NoBound, Pool
from storebench.formats.png import decode, encode
from storebench.formats.testing import format_params
from storebench.formats.testing._common import supported

PARAMS = format_params()


def _samples(fmt: Format) -> list[Sample]:
    """Five samples of two shapes (and uint16 gray where the format stores it): spans must be exact."""
    out = list(fixtures.make_dataset("cifar", 3))
    rng = np.random.default_rng(0)
    out.append(Sample("odd/shape", rng.integers(0, 256, (20, 17, 3), np.uint8), 4,
                      [[1, 2, 10, 12]], [3], {"note": "x"}))
    if ("uint16", 0) in fmt.modes:
        out.append(Sample("gray16", rng.integers(0, 4096, (12, 9), np.uint16), 1))
    else:
        out.append(Sample("gray8", rng.integers(0, 256, (12, 9, 3), np.uint8), 1))
    return out


def _run(bound: Bound, pool: Pool, op: str, n: int, root: Path, dataset: Path | None = None):
    """The images ``bound`` hands to its consumer for ``op``, and the pool positions it visited."""
    seen = []
    perm = np.random.default_rng(1).permutation(n)
    b = bound.open(pool=pool, op=op, perm=perm, batch=3, root=root, touch=seen.append, dataset=dataset)
    try:
        assert b.run() == n
        seen_again = len(seen)
        assert b.run() == n and len(seen) == 2 * seen_again  # a run can be repeated
    finally:
        b.close()
    order = (np.arange(n) if b.info["op"] == "scan" else perm) % pool.m
    return seen[:n], order.tolist(), b


# --------------------------------------------------------------------------- declarations


@pytest.mark.parametrize("fmt", PARAMS)
def test_every_format_declares_a_codec_libraries_and_a_bound_that_exists(fmt):
    assert isinstance(fmt.image_codec, str) and fmt.image_codec
    assert isinstance(fmt.libraries, tuple) and all(isinstance(d, str) for d in fmt.libraries)
    versions = type(fmt).library_versions()
    assert all(isinstance(v, str) for v in versions.values())
    b = fmt.bound
    assert isinstance(b, Bound) and callable(b.fn)
    assert b.ops and set(b.ops) <= set(OPS) and "scan" in b.ops
    assert b.name.startswith(b.kind) and (b.kind in ("floor", "decode-only") or b.kind.startswith("bare-"))
    assert b.name != GATHER.name  # the gather is a reference row, no format's bound
    assert isinstance(fmt.random_access, bool)


def test_bounds_of_different_options_are_different_rows():
    names = [p.values[0].bound.name for p in PARAMS if p.values[0] is not None]
    by_name: dict[str, set] = {}
    for p in PARAMS:
        if p.values[0] is not None:
            by_name.setdefault(p.values[0].bound.name, set()).add(p.values[0].name)
    assert all(len(owners) == 1 for owners in by_name.values()), by_name  # no two formats share a row
    assert len(names) >= len(formats.available())


def test_capability_flags_are_each_true_for_some_format_and_false_for_another():
    fmts = [p.values[0] for p in PARAMS if p.values[0] is not None]
    for flag in ("random_access", "executes_code", "lossless"):
        values = {getattr(f, flag) for f in fmts}
        assert values == {True, False}, flag
    avail = formats.available()
    if "parquet" in avail:
        assert not formats.get("parquet").random_access  # r[i] decodes a row group of 1000
        assert formats.get("parquet", row_group_size=1).random_access
    if "zarr" in avail:
        assert not formats.get("zarr").random_access  # r[i] decodes a 1 MiB chunk
    if "hdf5" in avail:
        assert formats.get("hdf5").random_access and not formats.get("hdf5", compression="lzf").random_access
    assert formats.get("npy").random_access
    assert formats.get("zip", encoding="raw").image_codec == "raw" and formats.get("zip").image_codec == "png"


def test_png_has_one_encoder_and_one_decoder():
    img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert np.array_equal(decode(encode(img)), img)
    gray = np.arange(12, dtype=np.uint16).reshape(3, 4, 1) * 1000
    assert np.array_equal(decode(encode(gray)).reshape(3, 4, 1), gray)


# --------------------------------------------------------------------------- each bound's Samples


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("fmt", PARAMS)
def test_bound_builds_the_samples_the_format_reads(tmp_path, fmt, op):
    samples = supported(fmt, _samples(fmt))  # a fixed_shape format: one shape of them
    fmt.write(samples, tmp_path / "ds")
    pool = Pool.of(samples, tag=f"test-{fmt.name}")
    n = 2 * len(samples) + 1  # more positions than the pool holds: bounds cycle through it
    with fmt.open(tmp_path / "ds") as r:
        want = [r[i].image for i in range(len(r))]
    seen, order, b = _run(fmt.bound, pool, op, n, tmp_path / "cache", tmp_path / "ds")
    assert b.info["bound"] == fmt.bound.name and b.info["op"] == fmt.bound.op_for(op)
    assert len(seen) == n
    for img, i in zip(seen, order):
        assert img.dtype == want[i].dtype and img.shape == want[i].shape, (i, img.shape)
        np.testing.assert_array_equal(img, want[i])
    # The store is built once: a second bound on the same pool reuses it.
    stores = sorted(p.name for p in (tmp_path / "cache").rglob("*"))
    _run(fmt.bound, pool, op, n, tmp_path / "cache", tmp_path / "ds")
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*")) == stores
    assert not any(name.startswith(".") for name in stores)  # no temporaries left


@pytest.mark.parametrize("op", ["scan", "random", "batch"])
def test_floor_gather_and_pread_use_the_pool(tmp_path, op):
    samples = list(fixtures.make_dataset("cifar", 4))
    pool = Pool.of(samples, tag="t")
    seen, order, _b = _run(FLOOR, pool, op, 9, tmp_path)
    for img, i in zip(seen, order):
        np.testing.assert_array_equal(img, samples[i].image)
    ragged = Pool.of(_samples(formats.get("npy")), tag="r")
    # pread: the pool's records in one file, read back sample by sample, whole Samples
    seen, order, b = _run(PREAD, ragged, op, 9, tmp_path / "pread")
    assert b.info["bound"] == "pread" and len(seen) == 9
    for img, i in zip(seen, order):
        np.testing.assert_array_equal(img, ragged.args[i][1])
    assert [p.name for p in (tmp_path / "pread").rglob("*") if p.is_file()] == ["pread.bin"]
    with pytest.raises(NoBound, match="equal-shaped"):
        GATHER.open(pool=ragged, op="batch", perm=np.arange(4), batch=2, root=tmp_path, touch=id)


# --------------------------------------------------------------------------- third-party formats


class _IndexReader(Reader):
    def _open_handles(self):
        self._index = json.loads((self.path / "keys.json").read_text())
        return None

    def _read(self, i):
        return Sample(self._index[i], self._image(i))


class PngFolder(Format):
    """A plug-in storing one PNG file per image; registered nowhere."""

    name = "pngfolder"
    image_codec = "png"

    def _write(self, samples, root):
        keys = []
        for i, s in enumerate(samples):
            (root / f"{i:06d}.png").write_bytes(encode(s.image))
            keys.append(s.key)
        (root / "keys.json").write_text(json.dumps(keys))


class _PngReader(_IndexReader):
    def _image(self, i):
        return decode((self.path / f"{i:06d}.png").read_bytes())


class RawFolder(Format):
    """A plug-in storing raw ``.npy`` files; it declares nothing but its name."""

    name = "rawfolder"

    def _write(self, samples, root):
        keys = []
        for i, s in enumerate(samples):
            np.save(root / f"{i:06d}.npy", s.image)
            keys.append(s.key)
        (root / "keys.json").write_text(json.dumps(keys))


class _RawReader(_IndexReader):
    def _image(self, i):
        return np.load(self.path / f"{i:06d}.npy")


PngFolder.reader, RawFolder.reader = _PngReader, _RawReader


def test_a_third_party_png_format_gets_decode_only_and_a_raw_one_the_floor(tmp_path):
    from bench._params import bound_params

    png_fmt, raw_fmt = PngFolder(), RawFolder()
    assert png_fmt.bound.name == "decode-only[pngfolder]" and png_fmt.bound.ops == ("scan",)
    assert raw_fmt.bound is FLOOR
    ids = [p.id for p in bound_params({"pngfolder": png_fmt, "rawfolder": raw_fmt})]
    assert ids == ["floor-scan", "floor-random", "floor-batch", "gather-batch", "pread-scan", "pread-random",
                   "pread-batch", "decode-only[pngfolder]-scan"]
    samples = list(fixtures.make_dataset("cifar", 4))
    png_fmt.write(samples, tmp_path / "ds")
    seen, order, b = _run(png_fmt.bound, Pool.of(samples, tag="p"), "random", 7, tmp_path, tmp_path / "ds")
    assert b.info["op"] == "scan" and b.info["codec"] == "png"  # in memory, order does not matter
    for img, i in zip(seen, order):
        np.testing.assert_array_equal(img, samples[i].image)
    with pytest.raises(NoBound, match="reads the format's dataset"):
        png_fmt.bound.open(pool=Pool.of(samples, tag="p"), op="scan", perm=np.arange(2), batch=2,
                           root=tmp_path, touch=id)
