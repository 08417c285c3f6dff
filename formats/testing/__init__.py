"""Reusable checks for format authors, in the spirit of ``zarr.testing``.

:class:`FormatTests` is the whole conformance suite as a pytest class: a
format package's test file is a ten-line subclass that names its format::

    from storebench.formats.testing import FormatTests
    from my_package.my_format import MyFormat

    class TestMyFormat(FormatTests):
        format_cls = MyFormat

The helpers it is built from work on their own too::

    from storebench.formats.testing import check_roundtrip
    check_roundtrip(MyFormat(), samples, tmp_path / "ds")

:mod:`storebench.formats.testing.faults` damages datasets and classifies what
a reader makes of them (the README's fault matrix).  Everything here needs
pytest; :class:`FormatTests` also needs hypothesis (``storebench[test]``) and
is imported on first use.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import _registry
from .._api import Format, Reader, Sample
from .._sample import VOLUME

__all__ = ["FormatTests", "assert_all_same", "assert_same", "check_reader", "check_regions", "check_roundtrip",
           "edge_samples", "format_params", "golden_samples", "mode_sample", "volume_edge_samples",
           "write_golden"]


def __getattr__(name: str):
    # FormatTests imports hypothesis and the fixtures; bench needs only format_params.
    if name == "FormatTests":
        from ._suite import FormatTests
        return FormatTests
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def format_params(*, variants: bool | None = None) -> list:
    """One ``pytest.param`` per format instance, with ``id`` the format id.

    With ``variants`` every entry of a format's ``bench_variants`` is an
    instance of its own; None (the default) means yes unless the environment
    sets ``STOREBENCH_FORMAT_VARIANTS=defaults`` (what CI sets where a run
    needs only each format's default options).  Formats whose library is
    missing appear as skipped params that carry the install hint as the reason.
    """
    import pytest

    if variants is None:
        variants = os.environ.get("STOREBENCH_FORMAT_VARIANTS", "all") != "defaults"
    params = []
    for cls in _registry.available().values():
        for opts in (cls.bench_variants if variants else ({},)):
            fmt = cls(**opts)
            params.append(pytest.param(fmt, id=fmt.id))
    for name, why in _registry.unavailable().items():
        params.append(pytest.param(None, id=name, marks=pytest.mark.skip(reason=f"{name}: {why}")))
    return params


def assert_same(expected: Sample, got: Sample, *, lossless: bool = True) -> None:
    """Assert ``got`` is ``expected``: every field exact; pixels exact when ``lossless``.

    A lossy format must still return the exact key, label, boxes, box labels,
    meta, image dtype and image shape.
    """
    assert isinstance(got, Sample), f"reader returned {type(got).__name__}, not a Sample"
    assert got.key == expected.key, f"key {got.key!r} != {expected.key!r}"
    where = f"sample {expected.key!r}"
    assert type(got.label) is int and got.label == expected.label, f"{where}: label {got.label!r}"
    assert dict(got.meta) == dict(expected.meta), f"{where}: meta {got.meta!r} != {expected.meta!r}"
    for field, dtype in (("boxes", np.float32), ("box_labels", np.int64)):
        a, b = getattr(expected, field), getattr(got, field)
        assert b.dtype == dtype, f"{where}: {field} dtype {b.dtype}"
        assert b.shape == a.shape, f"{where}: {field} shape {b.shape} != {a.shape}"
        assert np.array_equal(a, b), f"{where}: {field} differ"
    assert got.image.dtype == expected.image.dtype, f"{where}: image dtype {got.image.dtype}"
    assert got.image.shape == expected.image.shape, \
        f"{where}: image shape {got.image.shape} != {expected.image.shape}"
    if lossless:
        assert got.image.tobytes() == expected.image.tobytes(), f"{where}: pixels differ"


def assert_all_same(expected: Sequence[Sample], got: Sequence[Sample], *, lossless: bool = True):
    got = list(got)
    assert len(got) == len(expected), f"{len(got)} samples read, {len(expected)} expected"
    for a, b in zip(expected, got):
        assert_same(a, b, lossless=lossless)


def check_reader(fmt: Format, r: Reader, samples: Sequence[Sample],
                 batch: Sequence[int] | None = None) -> None:
    """Every access path of ``r`` returns ``samples``: len, keys, iter, r[i], get, batch, pickle."""
    lossless = fmt.lossless
    n = len(samples)
    assert len(r) == n
    assert list(r.keys()) == [s.key for s in samples]
    scanned = list(r)
    assert_all_same(samples, scanned, lossless=lossless)
    # Lossy or not, every access path must agree with the scan.
    for i, s in enumerate(scanned):
        assert_same(s, r[i])
        assert_same(s, r.get(s.key))
        assert_same(s, r[i - n])
    idx = list(batch) if batch is not None else list(range(n))[::-1]
    assert_all_same([scanned[i] for i in idx], r.read_batch(idx))
    check_regions(r, scanned, samples if lossless else None)
    clone = pickle.loads(pickle.dumps(r))
    assert clone is not r and len(clone) == n
    assert_all_same(scanned, list(clone))
    clone.close()


def fixed_regions(shape) -> list[tuple[slice, ...]]:
    """The whole image, its last pixel, its first row (or plane) and its middle, for ``shape``."""
    sides = shape[:3] if len(shape) == 4 else shape[:2]
    whole = tuple(slice(None) for _ in sides)
    last = tuple(slice(n - 1, n) for n in sides)
    first = (slice(0, 1),) + tuple(slice(None) for _ in sides[1:])
    middle = tuple(slice(n // 4, max(n // 4 + 1, 3 * n // 4)) for n in sides)
    return [whole, last, first, middle]


def check_regions(r: Reader, scanned: Sequence[Sample], originals: Sequence[Sample] | None = None,
                  regions: Sequence[Sequence[tuple[slice, ...]]] | None = None) -> None:
    """``r.read_region`` and ``read_regions`` give exactly ``image[region]`` of what the reader scans
    (and, given ``originals``, of what was written): dtype, shape and bytes, as new C-contiguous
    writable arrays.  ``regions[i]`` are sample ``i``'s (default :func:`fixed_regions`)."""
    asked_i, asked_r, want = [], [], []
    for i, s in enumerate(scanned):
        for reg in (fixed_regions(s.image.shape) if regions is None else regions[i]):
            expect = s.image[reg]
            got = r.read_region(i, reg)
            where = f"sample {i} ({s.key!r}) region {reg}"
            assert isinstance(got, np.ndarray), f"{where}: read_region returned {type(got).__name__}"
            assert got.dtype == expect.dtype and got.shape == expect.shape, \
                f"{where}: {got.dtype} {got.shape}, expected {expect.dtype} {expect.shape}"
            assert got.tobytes() == expect.tobytes(), f"{where}: pixels differ from the whole read's"
            assert got.flags.c_contiguous and got.flags.writeable, f"{where}: not a writable C-contiguous array"
            if originals is not None:
                assert got.tobytes() == originals[i].image[reg].tobytes(), f"{where}: pixels differ from written"
            asked_i.append(i)
            asked_r.append(reg)
            want.append(expect)
    if asked_i:
        got_all = r.read_regions(asked_i[::-1], asked_r[::-1])
        assert [g.tobytes() for g in got_all] == [w.tobytes() for w in want[::-1]], "read_regions differs"


def check_roundtrip(fmt: Format, samples: Sequence[Sample], path: Path,
                    batch: Sequence[int] | None = None) -> None:
    """Write ``samples`` with ``fmt`` to ``path`` (streaming) and check every read path."""
    report = fmt.write(iter(samples), path)
    assert report.count == len(samples)
    assert report.bytes_on_disk > 0 and report.n_files >= 1
    with fmt.open(path) as r:
        check_reader(fmt, r, samples, batch)


# --------------------------------------------------------------------------- samples


def _f32(rows) -> np.ndarray:
    return np.array(rows, np.float32)


def _i64(values) -> np.ndarray:
    return np.array(values, np.int64)


def edge_samples() -> list[Sample]:
    """Hand-picked corners: 1x1, uint16 2-D and (H, W, 1), RGBA with unicode key and
    every meta type, boxes (40 of them once), 2-channel, and the empty key; two 3x3 uint8
    images, the group a ``fixed_shape`` format stores (``_common.supported``)."""
    ramp = np.arange(4 * 5 * 4, dtype=np.uint8).reshape(4, 5, 4)
    many = np.tile(np.array([[0, 0, 2, 3]], np.float32), (40, 1))
    return [
        Sample("1x1", np.array([[7]], np.uint8)),
        Sample("uint16 grey", (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4), label=3),
        Sample("uint16 (H,W,1)", np.full((2, 3, 1), 65535, np.uint16)),
        Sample("rgba/ünï cødé 🙂", ramp, label=0, meta={"rad_id": "R9", "score": 0.5, "ok": True, "n": None}),
        Sample("rgb", ramp[..., :3].copy(), boxes=_f32([[0, 0, 5, 4], [1.5, 0.25, 2, 3]]),
               box_labels=_i64([2, 13])),
        Sample("grey + alpha", ramp[..., :2].copy(), label=9),
        Sample("many boxes", np.zeros((3, 3), np.uint8), boxes=many, box_labels=np.arange(40)),
        Sample("", np.ones((1, 9, 1), np.uint8), label=-1),
        Sample("ct slice", np.array([[-1024, -1, 0], [1, 3071, -32768], [32767, 7, -7]], np.int16), label=1),
        Sample("mri float", np.array([[0.0, -0.0, np.inf], [-np.inf, 1e-45, 3.5]], np.float32)[..., None]
               .repeat(2, -1) * np.array([1, -1], np.float32), label=2),
        Sample("nan payloads", np.array([0x7FC00000, 0x7FC00001, 0xFFC12345, 0x7F800001], np.uint32)
               .view(np.float32).reshape(2, 2), label=3),
        Sample("grey twin/ünï 🙂", (np.arange(9, dtype=np.uint8) * 29).reshape(3, 3), label=4,
               boxes=_f32([[0, 0, 3, 3], [1, 1, 1, 2]]), box_labels=_i64([7, -1]),
               meta={"rad_id": "R2", "score": -1.5, "ok": False, "n": None}),
    ]


def volume_edge_samples() -> list[Sample]:
    """Hand-picked volumes: 1x1x1, int16 CT with negative values and 6-column boxes, float32
    with 4 channels (as BraTS' modalities), a thin slab, uint8 / uint16 ones, and a second CT
    of the first one's shape (the group a ``fixed_shape`` format stores)."""
    z, y, x = np.mgrid[0:5, 0:6, 0:7]
    hu = (x * 300 - 1024 + y * 11 - z * 5).astype(np.int16)[..., None]
    mri = np.stack([(x + y * 0.5 + z * 0.25).astype(np.float32) * k for k in (1, -1, 0.5, 2)], axis=-1)
    mri[0, 0, 0, 0] = np.nan
    mri[1, 0, 0, 1] = -0.0
    return [
        Sample("1x1x1", np.array([[[[-5]]]], np.int16)),
        Sample("ct/case 1", hu, label=1, boxes=_f32([[0, 0, 0, 7, 6, 5], [1.5, 2, 0.5, 3, 4, 4.5]]),
               box_labels=_i64([1, 4]), meta={"spacing": "0.7x0.7x2.5"}),
        Sample("mri 4ch", mri, label=0),
        Sample("slab", np.arange(1 * 9 * 2 * 2, dtype=np.float32).reshape(1, 9, 2, 2), label=-1),
        Sample("u8 rgb vol", (x * y + z).astype(np.uint8)[..., None].repeat(3, -1), label=2),
        Sample("u16 vol", (x * 9000 + z).astype(np.uint16)[..., None]),
        Sample("ct/case 2", np.ascontiguousarray(hu[::-1] + 7), label=3, meta={"spacing": "1x1x1"}),
    ]


def mode_sample(dtype: str, channels: int, kind: str | None = None, *, key: str | None = None) -> Sample:
    """A 5x7 sample (``kind="volume"``: a 3x5x7 volume) of one mode whose pixels span the
    dtype's range: ``mode_sample(*mode)`` for any mode.

    Neighbouring values differ in their high and low bits alike, so a format
    that drops a byte, a channel or the byte order does not read it back equal;
    float32 pixels are every kind of bit pattern (NaN payloads, -0.0, infinities).
    """
    volume = kind == VOLUME
    shape: tuple[int, ...] = (5, 7, channels) if channels else (5, 7)
    if volume:
        shape = (3, *shape)
    bits = 32 if dtype == "float32" else np.dtype(dtype).itemsize * 8
    flat = np.arange(int(np.prod(shape)), dtype=np.uint64) * np.uint64(2654435761) % np.uint64(1 << bits)
    if dtype == "float32":
        img = flat.astype(np.uint32).view(np.float32)
    else:
        img = flat.astype(f"u{bits // 8}").view(dtype)
    name = f"{dtype}x{channels}" + ("x volume" if volume else "")
    return Sample(key if key is not None else name, img.reshape(shape), label=channels)


def golden_samples(modes=None) -> list[Sample]:
    """The samples of a golden dataset: fixed arithmetic patterns, never a random generator
    or a library whose output could change, so the same samples can be rebuilt forever.

    With ``modes`` (a format's ``modes``), only those it can store.
    """
    y, x = np.mgrid[0:12, 0:16]
    grad = (x * 13 + y * 7).astype(np.uint8)
    rgb = np.stack([grad, grad[::-1], (x * y).astype(np.uint8)], axis=-1)
    out = [
        Sample("golden/rgb 0", rgb, label=1, boxes=_f32([[1, 2, 8.5, 10]]), box_labels=_i64([3]),
               meta={"rad_id": "R1", "score": 0.25, "checked": True, "note": None}),
        Sample("golden/grey ü", grad, label=0),
        Sample("golden/grey (H,W,1)", grad[:5, :7, None].copy(), label=2),
        Sample("golden/xray16", (x * 4000 + y * 97).astype(np.uint16), label=-1,
               boxes=_f32([[0, 0, 16, 12], [3, 3, 4, 5]]), box_labels=_i64([0, 13]), meta={"view": "PA"}),
        Sample("golden/rgba", np.concatenate([rgb, grad[..., None]], axis=-1), label=7),
        Sample("golden/grey+alpha", np.stack([grad, 255 - grad], axis=-1), label=5),
        Sample("golden/uint16 rgb", (rgb.astype(np.uint16) * 257), label=4),
    ]
    return out if modes is None else [s for s in out if s.mode in modes]


def write_golden(fmt: Format, path: os.PathLike | str):
    """Write (or rewrite) ``fmt``'s golden dataset of :func:`golden_samples` at ``path``.

    Run it once when a format is added or its on-disk version is bumped on
    purpose, and commit the result: ``FormatTests(golden=path)`` then proves
    that later readers still read it.  A ``fixed_shape`` format writes the largest group of
    one shape and dtype (``_common.supported``).  Returns the :class:`WriteReport`.
    """
    from ._common import supported

    return fmt.write(supported(fmt, golden_samples(fmt.modes)), path, overwrite=True)
