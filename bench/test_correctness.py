"""Correctness rows: what a claim says fails, measured, next to our format doing the same thing.

* ``test_zip_shared_handle`` (claim 002b, the SURF packed-data-formats
  tutorial: "one ``ZipFile`` handle shared by forked workers fails
  (BadZipFile / bad magic); a handle per worker works"): a ``zip`` dataset
  of raw ImageNet-like members (``zip[encoding=raw]``) read by ``K`` forked
  DataLoader workers (``multiprocessing`` fork without torch), members in a
  shuffled order, (a) through ONE ``zipfile.ZipFile`` opened (and read) in
  the parent before the fork, as the tutorial's Dataset did in
  ``__init__``, and (b) through our zip Reader, also opened and read in the
  parent, which opens a handle of its own in each worker.  A read counts as
  an error when it raised (the type names are kept), as wrong when its
  bytes (a) or its Sample (b) differ from the expected checksum.  Forked
  children share the parent's open file description, so one child's seek
  moves every child's file offset: the shared handle's reads race.

The row's extra_info: ``op="correctness"``, ``claim``, ``workers``,
``reads`` (per handle kind), ``shared_errors``, ``shared_wrong``,
``per_worker_errors``, ``per_worker_wrong``, ``error_types`` (sorted, with
counts in ``error_counts``) and ``worker_pids`` (distinct processes that read).
The test asserts only our side: (b) has no error and no wrong sample; (a) is
what the claim measures, never asserted.  One round (the experiment is its
own repetition); it runs at the tutorial's setting only (``imagenet``,
``MEMBERS`` members, ``--workers`` values of 2 or more, 4 if none is).
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from bench._run import format_info
from storebench import fixtures, formats

PRESET = "imagenet"  # the tutorial's ImageNet subset, resized: RGB uint8, short side 160-512
MEMBERS = 64  # members of the archive (32 in smoke runs)
READS_PER_WORKER = 150  # reads per worker and handle kind (40 in smoke runs)
FORMAT_ID = "zip[encoding=raw]"  # raw records: nothing to decode, the bytes are what is compared
BATCH = 4
TIMEOUT_S = 120  # a DataLoader worker that hangs fails the row instead of the run


def pytest_generate_tests(metafunc):
    if metafunc.definition.originalname != "test_zip_shared_handle":
        return
    from bench import _session

    s = _session.get(metafunc.config)
    workers = [w for w in s.opts.workers if w >= 2] or [4]
    metafunc.parametrize("workers", workers, ids=[f"w{w}" for w in workers])


class _Reads:
    """A map-style dataset whose item ``k`` reads member ``order[k]`` and says how it went:
    ``(pid, "ok" | "wrong" | the exception's type name)``; nothing else leaves the worker."""

    def __init__(self, order: list[int], read: Callable[[int], str], expected: list[str]):
        self.order, self.read, self.expected = order, read, expected

    def __len__(self):
        return len(self.order)

    def __getitem__(self, k):
        i = self.order[k]
        try:
            got = self.read(i)
        except Exception as err:  # what the claim is about: any failure of the read, by type
            return os.getpid(), type(err).__name__
        return os.getpid(), "ok" if got == self.expected[i] else "wrong"


_FORKED: _Reads | None = None  # the dataset a multiprocessing fork pool's children inherit


def _forked_item(k: int):
    assert _FORKED is not None
    return _FORKED[k]


def _run_forked(data: _Reads, workers: int) -> list[tuple[int, str]]:
    """Every item of ``data`` read by ``workers`` forked processes: a torch DataLoader if
    torch is importable (as the tutorial), else a multiprocessing fork pool."""
    try:
        from torch.utils.data import DataLoader
    except ImportError:
        global _FORKED
        _FORKED = data
        try:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                return pool.map(_forked_item, range(len(data)), chunksize=BATCH)
        finally:
            _FORKED = None
    with warnings.catch_warnings():  # more workers than cores is the point here (bench._loader needs torch)
        warnings.filterwarnings("ignore", "This DataLoader will create", UserWarning)
        dl: DataLoader[tuple[int, str]] = DataLoader(
            data, batch_size=BATCH, num_workers=workers, multiprocessing_context="fork",  # type: ignore[arg-type]  # a duck-typed map-style dataset
            collate_fn=list, timeout=TIMEOUT_S)
        return [item for batch in dl for item in batch]


def _tally(results: list[tuple[int, str]], types: Counter) -> tuple[int, int, set[int]]:
    """(errors, wrong, pids) of one handle kind's reads; error type names counted into ``types``."""
    errors = [what for _pid, what in results if what not in ("ok", "wrong")]
    types.update(errors)
    return len(errors), sum(what == "wrong" for _pid, what in results), {pid for pid, _what in results}


def test_zip_shared_handle(runner, session, workers):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("the claim is about forked workers: this platform cannot fork")
    fmt = session.formats.get(FORMAT_ID)
    if fmt is None and session.opts.formats is None:  # every format: zip's raw variant, whatever variants run
        fmt = formats.from_id(FORMAT_ID)
    if fmt is None:
        pytest.skip(f"{FORMAT_ID} is not among --formats")
    smoke = session.opts.smoke
    members, per_worker = (32, 40) if smoke else (MEMBERS, READS_PER_WORKER)
    ds = session.dataset_or_skip(fmt, PRESET, members)
    with ds.source.open() as src:
        want_samples = [fixtures.sample_checksum(s) for s in src]
    rng = np.random.default_rng(session.opts.seed)
    reads = workers * per_worker
    order = [int(i) for i in (rng.permutation(reads) % members)]

    def experiment():
        # (a) one ZipFile, opened and read in the parent before the workers fork, shared by all.
        zf = zipfile.ZipFile(ds.path / "data.zip")
        try:
            infos = sorted(zf.infolist(), key=lambda z: z.filename)
            want_bytes = [hashlib.sha1(zf.read(z)).hexdigest() for z in infos]
            shared = _run_forked(_Reads(order, lambda i: hashlib.sha1(zf.read(infos[i])).hexdigest(),
                                        want_bytes), workers)
        finally:
            zf.close()
        # (b) our Reader, opened and read in the parent too: each worker opens a handle of its own.
        with ds.open() as r:
            r[0]
            own = _run_forked(_Reads(order, lambda i: fixtures.sample_checksum(r[i]), want_samples), workers)
        return shared, own

    runner.rounds = 1
    runner.benchmark.group = "correctness"
    shared, own = runner.pedantic(experiment)
    types: Counter = Counter()
    shared_errors, shared_wrong, shared_pids = _tally(shared, types)
    own_errors, own_wrong, own_pids = _tally(own, types)
    info = format_info(fmt, PRESET, members, cache="warm", ds=ds, batch_size=BATCH)
    info.update(claim="002b", workers=workers, mp_context="fork", reads=reads, members=members,
                loader="torch DataLoader" if _has_torch() else "multiprocessing fork pool",
                shared_errors=shared_errors, shared_wrong=shared_wrong,
                per_worker_errors=own_errors, per_worker_wrong=own_wrong,
                error_types=sorted(types), error_counts=dict(sorted(types.items())),
                worker_pids=len(shared_pids | own_pids))
    runner.record(op="correctness", preset=PRESET, n=members, cache="warm", info=info, items=None,
                  raw_bytes=None, fmt_id=fmt.id)
    assert len(shared) == len(own) == reads
    assert os.getpid() not in shared_pids | own_pids and len(shared_pids) == len(own_pids) == workers
    assert (own_errors, own_wrong) == (0, 0), f"our zip Reader in forked workers: {dict(types)}"


def _has_torch() -> bool:
    try:
        import torch.utils.data  # noqa: F401
    except ImportError:
        return False
    return True
