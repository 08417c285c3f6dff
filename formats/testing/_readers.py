"""FormatTests' checks that an open reader keeps reading the dataset it opened, and threads.

A mixin of :class:`~storebench.formats.testing.FormatTests`, like
:mod:`._processes`.  Every case compares every field of every sample with what
the reader returned before the change (pixels exact, lossy formats included):
a reader may keep returning that, or raise a typed error (DatasetError,
FileNotFoundError), never another dataset's samples under its keys.  The
scenarios live in :mod:`.faults`, which also prints them as the README's
concurrency matrix.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import faults

_OK = faults.OK_OUTCOMES


def _plans(n: int, *, threads: int = 8, ops: int = 12):
    """Hypothesis op lists, one per thread, for :func:`faults.hammer` on ``n`` samples."""
    i = st.integers(0, n - 1)
    op = st.one_of(st.tuples(st.just("item"), i), st.tuples(st.just("neg"), i),
                   st.tuples(st.just("batch"), st.lists(i, max_size=8)), st.tuples(st.just("get"), i),
                   st.tuples(st.just("iter"), st.integers(0, n)))
    return st.lists(st.lists(op, min_size=1, max_size=ops), min_size=threads, max_size=threads)


class ReaderPinningTests:
    """Overwritten, renamed, retargeted, chdir'd and deleted datasets under an open reader; threads."""

    def _run(self, fmt, scenario, tmp_path):
        if len(faults.concurrency_samples(fmt)) < 12:
            pytest.skip(f"{fmt.id} cannot store the cifar preset")
        outcome, detail = scenario(fmt, tmp_path)
        assert outcome in _OK, f"{outcome}: {detail}"

    def test_open_reader_when_another_process_writes_over_the_dataset(self, fmt, tmp_path):
        """Written over mid-scan by another process: the open reader, a pickled copy of it
        (a spawn worker) and a forked child read the old samples or raise a typed error."""
        self._run(fmt, faults.overwrite_while_reading, tmp_path)

    def test_open_reader_when_the_path_moves(self, fmt, tmp_path):
        """Renamed with another dataset written in its place, opened through a symlink that is
        retargeted, and opened by a relative path before ``os.chdir`` (which changes nothing)."""
        self._run(fmt, faults.moved_path, tmp_path)

    def test_open_reader_when_the_dataset_is_deleted(self, fmt, tmp_path):
        """Deleted: the old samples (from handles held open) or a typed error, never zeros."""
        self._run(fmt, faults.deleted, tmp_path)

    def test_one_reader_shared_by_8_threads(self, fmt):
        """8 threads on one unopened reader (they race to open it) mix r[i], r[i - n], read_batch,
        get and partial scans; every sample is compared with a single-threaded read."""
        samples = faults.concurrency_samples(fmt, 24)
        if len(samples) < 24:
            pytest.skip(f"{fmt.id} cannot store the cifar preset")
        with tempfile.TemporaryDirectory() as d:  # not tmp_path: hypothesis runs the body many times
            path = Path(d) / "ds"
            fmt.write(samples, path)
            r, ref = faults._reference(fmt, path, samples)
            with r:
                @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
                @given(plans=_plans(len(ref)))
                def hammer(plans):
                    with faults.pickle.loads(faults.pickle.dumps(r)) as clone:  # unopened
                        outcome, detail = faults.hammer(clone, ref, plans)
                    assert outcome == "correct data", f"{outcome}: {detail}"
                hammer()
