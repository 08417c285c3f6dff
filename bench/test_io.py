"""Write, open, scan, random and batch benchmarks of every registered format.

Ids read ``test_scan[hdf5[gzip,level=4]-cifar-n1000-warm]``: format id, preset,
size, page-cache state.  Datasets come from the on-disk cache (built on first
use, outside the timer); each test asserts it saw all ``n`` samples, so the
smoke run (``--benchmark-disable``, n=10) checks every path once.
"""
from __future__ import annotations

import shutil

import pytest

from bench._data import Unsupported, np_order, source_kind, write_source
from bench._ops import batch_reads, random_reads, scan
from bench._pagecache import prewarm
from bench._run import format_info

#: Above this size a format without random access (r[i] reads other samples)
#: skips the random and batch benchmarks: they would be quadratic.
SEQUENTIAL_LIMIT = 10_000


def _open(ds):
    r = ds.open()
    r.handles  # noqa: B018 -- open files and load the index now, untimed
    return (r,)


def _close(args):
    args[0].close()


def _random_access(fmt, n):
    if not fmt.random_access and n > SEQUENTIAL_LIMIT:
        pytest.skip(f"{fmt.id} has no random access: r[i] reads other samples, "
                    f"quadratic at n={n}")


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


def test_open(runner, dataset, fmt, preset, n, cache):
    opened = []

    def target():
        r = fmt.open(dataset.path)
        r.handles  # noqa: B018 -- the files and index, which is what opening costs
        opened.append(r)
        return len(r)

    def close(_args):
        while opened:
            opened.pop().close()

    assert runner.reads(target, files=dataset.files, cache=cache, open_round=tuple,
                        close_round=close) == n
    runner.record(op="open", preset=preset, n=n, cache=cache, items=1, raw_bytes=None,
                  info=format_info(fmt, preset, n, cache=cache, ds=dataset), fmt_id=fmt.id,
                  rate_key="opens/s")


def test_scan(runner, dataset, fmt, preset, n, cache):
    count = runner.reads(scan, files=dataset.files, cache=cache,
                         open_round=lambda: _open(dataset), close_round=_close,
                         bounds=runner.bounds_for(fmt, "scan", preset, n))
    assert count == n
    runner.record(op="scan", preset=preset, n=n, cache=cache, items=n, raw_bytes=dataset.raw_bytes,
                  info=format_info(fmt, preset, n, cache=cache, ds=dataset), fmt_id=fmt.id)


def _keys(ds):
    with ds.open() as r:
        return r.keys()


def test_random(runner, session, dataset, fmt, preset, n, cache):
    _random_access(fmt, n)
    order = np_order(n, session.opts.seed).tolist()
    count, last = runner.reads(lambda r: random_reads(r, order), files=dataset.files, cache=cache,
                               open_round=lambda: _open(dataset), close_round=_close,
                               bounds=runner.bounds_for(fmt, "random", preset, n))
    assert count == n and last == _keys(dataset)[order[-1]]
    runner.record(op="random", preset=preset, n=n, cache=cache, items=n,
                  raw_bytes=dataset.raw_bytes,
                  info=format_info(fmt, preset, n, cache=cache, ds=dataset), fmt_id=fmt.id)


def test_batch(runner, session, dataset, fmt, preset, n, cache):
    _random_access(fmt, n)
    order, size = np_order(n, session.opts.seed), session.opts.batch_size
    count, last = runner.reads(lambda r: batch_reads(r, order, size), files=dataset.files,
                               cache=cache, open_round=lambda: _open(dataset), close_round=_close,
                               bounds=runner.bounds_for(fmt, "batch", preset, n))
    assert count == n and last == _keys(dataset)[order[-1]]
    runner.record(op="batch", preset=preset, n=n, cache=cache, items=n, raw_bytes=dataset.raw_bytes,
                  info=format_info(fmt, preset, n, cache=cache, ds=dataset, batch_size=size),
                  fmt_id=fmt.id)
