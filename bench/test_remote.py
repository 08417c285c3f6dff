"""Reads from an object store (``--store s3``): every remote-capable format's datasets, uploaded to
a local S3 endpoint, read from ``s3://`` by the format's own library.

Ids read ``test_remote_scan[parquet-cifar-n1000]``.  Per row, in extra_info:
GET requests and bytes per sample (counted by the server), whether the reads
were byte ranges, read amplification (bytes sent over the samples' pixel
bytes), the client's CPU time, the time to first sample (a new reader: open
plus the first read), and the latency model's projected epoch
(:mod:`bench._remote`).  A format that reads local files only is skipped with
its ``local_only`` reason, so ``-rs`` lists every one.  Collected only with
``--store s3`` (bench/conftest.py).
"""
from __future__ import annotations

import time

import pytest

from bench._case import require_random_access
from bench._data import np_order
from bench._ops import PatchPlan, batch_reads, patch_reads, random_reads, scan, source_images
from bench._remote import S3Meter, remote_info
from storebench import formats


@pytest.fixture
def remote(session, fmt, dataset, s3_server):
    """``dataset`` uploaded to the session's S3 endpoint (once), as its ``s3://`` URL."""
    if fmt.remote_reads is None:
        pytest.skip(f"local-only for --store s3: {fmt.local_only}")
    prefix = "bench/" + dataset.path.relative_to(session.data.root).as_posix()
    return s3_server.upload(dataset.path, prefix)


def _run(runner, session, fmt, preset, n, dataset, url, s3_server, op, target, first, *,
         items_bytes: int | None = None, extra_info: dict | None = None, rate_key: str = "images/s"):
    opts = session.opts

    def open_round():
        r = formats.open_dataset(url, storage_options=s3_server.storage_options)
        r.handles
        return (r,)

    meter = S3Meter(s3_server)
    # a new reader per round (opened outside the timer): a reader's caches never serve a later round
    result = runner.reads(target, files=[], cache="fresh", open_round=open_round,
                          close_round=lambda a: a[0].close(), meter=meter)
    t = time.perf_counter()  # time to first sample: a new reader (new client), open + one read
    with formats.open_dataset(url, storage_options=s3_server.storage_options) as r:
        first(r)
    ttfs = time.perf_counter() - t
    wanted = dataset.raw_bytes if items_bytes is None else items_bytes  # what the reads were for
    extra = remote_info(meter.rounds, n=n, raw_bytes=wanted, opts=opts, remote_reads=fmt.remote_reads)
    extra["time_to_first_sample_s"] = round(ttfs, 4)
    extra["url"] = url
    runner.record(op=f"s3-{op}", preset=preset, n=n, cache="s3", items=n, raw_bytes=wanted,
                  info={**_info(fmt, preset, n, dataset), **extra, **(extra_info or {})}, fmt_id=fmt.id,
                  bound="none", rate_key=rate_key)
    return result


def _info(fmt, preset, n, dataset):
    from bench._run import format_info
    return format_info(fmt, preset, n, cache="s3", ds=dataset)


def test_remote_scan(runner, session, fmt, preset, n, dataset, remote, s3_server):
    count = _run(runner, session, fmt, preset, n, dataset, remote, s3_server, "scan", scan,
                 lambda r: next(iter(r)))
    assert count == n


def test_remote_random(runner, session, fmt, preset, n, dataset, remote, s3_server):
    require_random_access(fmt, n)
    order = np_order(n, session.opts.seed).tolist()
    count, _last = _run(runner, session, fmt, preset, n, dataset, remote, s3_server, "random",
                        lambda r: random_reads(r, order), lambda r: r[order[0]])
    assert count == n


def test_remote_batch(runner, session, fmt, preset, n, dataset, remote, s3_server):
    require_random_access(fmt, n)
    order, size = np_order(n, session.opts.seed), session.opts.batch_size
    count, _last = _run(runner, session, fmt, preset, n, dataset, remote, s3_server, "batch",
                        lambda r: batch_reads(r, order, size), lambda r: r.read_batch(order[:size]))
    assert count == n


def test_remote_patch(runner, session, fmt, preset, n, dataset, remote, s3_server):
    """One seeded random patch per sample (``--patch``) through ``read_region``: read amplification is
    bytes transferred over the patches' pixel bytes."""
    require_random_access(fmt, n)
    source = session.data.source(preset, n)
    plan = PatchPlan.of(source_images(source), session.opts.patch_for, session.opts.seed,
                        np_order(n, session.opts.seed).tolist())
    first = plan.order[0]
    count = _run(runner, session, fmt, preset, n, dataset, remote, s3_server, "patch",
                 lambda r: patch_reads(r, plan.order, plan.regions),
                 lambda r: r.read_region(first, plan.regions[first]),
                 items_bytes=plan.patch_bytes, rate_key="patches/s",
                 extra_info={**plan.info(), "partial_reads": bool(fmt.partial_reads)})
    assert count == n
