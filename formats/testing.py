"""Reusable checks for format authors, in the spirit of ``zarr.testing``.

storebench's own conformance suite is built from these, and a third-party
format package can run the same checks on its module::

    from storebench.formats.testing import check_roundtrip
    check_roundtrip(MyFormat(), samples, tmp_path / "ds")
"""
from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import _registry
from ._api import Format, Reader, Sample


def format_params(*, variants: bool = True) -> list:
    """One ``pytest.param`` per format instance, with ``id`` the format id.

    With ``variants`` every entry of a format's ``bench_variants`` is an
    instance of its own.  Formats whose library is missing appear as skipped
    params that carry the install hint as the reason.
    """
    import pytest

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
    clone = pickle.loads(pickle.dumps(r))
    assert clone is not r and len(clone) == n
    assert_all_same(scanned, list(clone))
    clone.close()


def check_roundtrip(fmt: Format, samples: Sequence[Sample], path: Path,
                    batch: Sequence[int] | None = None) -> None:
    """Write ``samples`` with ``fmt`` to ``path`` (streaming) and check every read path."""
    report = fmt.write(iter(samples), path)
    assert report.count == len(samples)
    assert report.bytes_on_disk > 0 and report.n_files >= 1
    with fmt.open(path) as r:
        check_reader(fmt, r, samples, batch)
