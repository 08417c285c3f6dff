"""Write, open, scan, random and batch benchmarks of every registered format (patches: test_patch).

Ids read ``test_scan[hdf5[gzip,level=4]-cifar-n1000-warm]``: format id, preset,
size, page-cache state.  Datasets come from the on-disk cache (built on first
use, outside the timer); each test asserts it saw all ``n`` samples, so the
smoke run (``--benchmark-disable``, n=10) checks every path once.
"""
from __future__ import annotations

import shutil

import pytest

from bench._case import require_random_access
from bench._data import Unsupported, np_order, source_kind, write_source
from bench._ops import batch_reads, random_reads, scan
from bench._pagecache import prewarm
from bench._run import format_info


def test_write(runner, session, fmt, source, preset, n):
    try:
        session.data.check_modes(fmt, source)
    except Unsupported as err:
        pytest.skip(str(err))
    out = session.data.scratch(fmt.id)
    make = write_source(source)
    prewarm(source.files)

    def setup():
        shutil.rmtree(out, ignore_errors=True)  # the previous round's dataset
        return (make(),), {}

    try:
        report = runner.pedantic(lambda samples: fmt.write(samples, out), setup)
        assert report.count == n
        assert report.bytes_on_disk > 0 and report.n_files >= 1
    finally:
        shutil.rmtree(out, ignore_errors=True)
    info = format_info(fmt, preset, n, cache=None)
    info.update(bytes_on_disk=report.bytes_on_disk, n_files=report.n_files,
                bytes_per_image=round(report.bytes_on_disk / n, 1), source=source_kind(source),
                fsync=True)
    runner.record(op="write", preset=preset, n=n, cache=None, info=info, items=n,
                  raw_bytes=source.raw_bytes, fmt_id=fmt.id)


def test_open(runner, case):
    opened = []

    def target():
        r = case.fmt.open(case.dataset.path)
        r.handles
        opened.append(r)
        return len(r)

    def close(_args):
        while opened:
            opened.pop().close()

    assert case.reads(runner, target, None, open_round=tuple, close_round=close) == case.n
    case.record(runner, "open", items=1, rate_key="opens/s")


def test_scan(runner, case):
    assert case.reads(runner, scan, "scan") == case.n
    case.record(runner, "scan")


def _keys(ds):
    with ds.open() as r:
        return r.keys()


def test_random(runner, session, case):
    require_random_access(case.fmt, case.n)
    order = np_order(case.n, session.opts.seed).tolist()
    count, last = case.reads(runner, lambda r: random_reads(r, order), "random")
    assert count == case.n and last == _keys(case.dataset)[order[-1]]
    case.record(runner, "random")


def test_batch(runner, session, case):
    require_random_access(case.fmt, case.n)
    order, size = np_order(case.n, session.opts.seed), session.opts.batch_size
    count, last = case.reads(runner, lambda r: batch_reads(r, order, size), "batch")
    assert count == case.n and last == _keys(case.dataset)[order[-1]]
    case.record(runner, "batch", batch_size=size)
