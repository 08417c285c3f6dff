"""FormatTests' checks that start processes or damage files, and its state machine.

Kept apart from :mod:`._suite` only for length; :class:`ProcessTests` is a mixin
that takes the ``fmt`` and ``dataset_of`` fixtures from
:class:`~storebench.formats.testing.FormatTests`.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from .. import DatasetError, Format
from . import assert_all_same, assert_same
from ._common import child_context, cifar, leftovers
from ._workers import read_all, read_everything, write_then_exit, write_with_fsize_limit
from .faults import OK_OUTCOMES, damaged_copies, fault_samples, probe


class ProcessTests:
    """Worker processes, kill -9, disk full, readers beside a writer, damaged files, state machine."""

    # ----------------------------------------------------------------------- processes

    @pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
    def test_reader_in_worker_processes(self, fmt, method, dataset_of):
        """A reader used in the parent, then pickled to 2 workers, reads the same samples there
        (a format that is not ``fork_safe``: a forked worker's read is a RuntimeError naming spawn)."""
        with fmt.open(dataset_of(fmt)) as r:
            expected = read_all(r)  # handles are open in the parent before the workers start
            if method == "fork" and not fmt.fork_safe:
                with mp.get_context(method).Pool(1) as pool, pytest.raises(RuntimeError, match="spawn"):
                    pool.map(read_all, [r])
                return
            with mp.get_context(method).Pool(2) as pool:
                results = pool.map(read_all, [r, r, r])
            for got in results:
                assert_all_same(expected, got, lossless=True)
            assert_all_same(expected, read_all(r))  # the parent's handles still work

    def test_kill_9_mid_write_never_leaves_a_partial_dataset(self, fmt, tmp_path):
        if not fmt.modes >= {("uint8", 3)}:
            pytest.skip(f"{fmt.id} cannot store the cifar preset")
        previous = cifar(fmt, 5, seed=1)
        path = tmp_path / "ds"
        fmt.write(previous, path)
        ctx = child_context(fmt)
        n = 400
        start = time.perf_counter()
        full = ctx.Process(target=write_then_exit, args=(fmt, tmp_path / "timing", n))
        full.start()
        full.join()
        duration = time.perf_counter() - start
        rng = np.random.default_rng(0)
        for delay in rng.uniform(0.0, duration, size=6):
            proc = ctx.Process(target=write_then_exit, args=(fmt, path, n))
            proc.start()
            time.sleep(delay)
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it finished first: a forkserver's child is reaped by the server at once
            proc.join()
            try:
                r = fmt.open(path)
            except (DatasetError, FileNotFoundError):
                continue  # "no dataset here" is allowed; a partial dataset is not
            with r:
                assert len(r) in (len(previous), n), \
                    f"partial dataset of {len(r)} samples after kill at {delay:.3f}s"
                assert r.verify() == []
                if len(r) == len(previous):
                    assert_all_same(previous, list(r), lossless=fmt.lossless)
        fmt.write(previous, path, overwrite=True)  # the next write cleans up what the dead writers left
        assert leftovers(tmp_path, "ds") == []
        with fmt.open(path) as r:
            assert r.verify() == []

    def test_disk_full_is_a_clear_error_and_leaves_nothing(self, fmt, tmp_path):
        if not fmt.modes >= {("uint8", 3)}:
            pytest.skip(f"{fmt.id} cannot store the cifar preset")
        ctx = child_context(fmt)
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=write_with_fsize_limit, args=(fmt, tmp_path / "ds", child))
        proc.start()
        child.close()
        assert parent.poll(60), "writer hung on a full disk"
        kind, message = parent.recv()
        proc.join()
        assert kind == "OSError", f"{kind}: {message}"
        assert "No space left" in message or "too large" in message, message
        assert str(tmp_path / "ds") in message, message
        assert not (tmp_path / "ds").exists()
        assert leftovers(tmp_path, "ds") == []

    def test_four_readers_while_another_process_writes(self, fmt, tmp_path):
        samples = cifar(fmt, 40)
        if not samples:
            pytest.skip(f"{fmt.id} cannot store the cifar preset")
        fmt.write(samples, tmp_path / "ds")
        ctx = mp.get_context("spawn")
        writer = ctx.Process(target=write_then_exit, args=(fmt, tmp_path / "other", 300))
        with fmt.open(tmp_path / "ds") as r, ctx.Pool(4) as pool:
            writer.start()
            results = pool.map(read_everything, [r] * 4)
            writer.join()
        assert writer.exitcode == 0
        for got in results:
            assert_all_same(samples + samples, got, lossless=fmt.lossless)
        with fmt.open(tmp_path / "other") as other:
            assert len(other) == 300 and other.verify() == []

    # ----------------------------------------------------------------------- damaged files

    def test_damaged_files_give_typed_errors_or_correct_data(self, fmt, tmp_path):
        """Truncations, byte flips, zeroed regions, deleted and renamed files, per file.

        Each damaged copy is opened and read in a forked child with a timeout:
        a DatasetError or the right samples pass; a signal, a hang, an untyped
        exception, or wrong data that ``verify()`` does not flag is a bug.
        """
        expected = fault_samples(fmt)
        src = tmp_path / "src"
        fmt.write(expected, src)
        outcomes = {label: probe(fmt, path, expected) for label, path in damaged_copies(fmt, src, tmp_path)}
        bugs = {k: v for k, v in outcomes.items() if v[0] not in OK_OUTCOMES}
        assert not bugs, "\n".join(f"{k}: {o}: {d}" for k, (o, d) in bugs.items())
        assert any(o == "typed error" for o, _ in outcomes.values())

    # ----------------------------------------------------------------------- stateful

    def test_stateful_reader(self, fmt):
        """Random sequences of open, read, read_batch, get, pickle, verify and close."""
        samples = cifar(fmt, 12)
        if len(samples) < 12:
            pytest.skip(f"{fmt.id} cannot store the cifar preset")
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "ds"
            fmt.write(samples, path)
            machine = type("Machine", (ReaderMachine,), {"fmt": fmt, "path": path, "model": samples})
            run_state_machine_as_test(machine, settings=settings(max_examples=8, stateful_step_count=15))


class ReaderMachine(RuleBasedStateMachine):
    """Random sequences of open, read, read_batch, pickle, verify and close against a list.

    A test makes a subclass with ``fmt``, ``path`` (a dataset of ``model``)
    and ``model`` (12 samples) set.
    """

    fmt: Format
    path: Path
    model: list = []

    def __init__(self):
        super().__init__()
        self.reader = None
        self.lossless = self.fmt.lossless

    @rule()
    def open(self):
        if self.reader is not None:
            self.reader.close()
        self.reader = self.fmt.open(self.path)

    @precondition(lambda self: self.reader is not None)
    @rule(i=st.integers(-30, 30))
    def read(self, i):
        n = len(self.model)
        if -n <= i < n:
            assert_same(self.model[i], self.reader[i], lossless=self.lossless)
        else:
            with pytest.raises(IndexError):
                self.reader[i]

    @precondition(lambda self: self.reader is not None)
    @rule(idx=st.lists(st.integers(0, 11), max_size=10))
    def read_batch(self, idx):
        assert_all_same([self.model[i] for i in idx], self.reader.read_batch(idx), lossless=self.lossless)

    @precondition(lambda self: self.reader is not None)
    @rule(k=st.integers(0, 11))
    def get(self, k):
        assert_same(self.model[k], self.reader.get(self.model[k].key), lossless=self.lossless)

    @precondition(lambda self: self.reader is not None)
    @rule()
    def repickle(self):
        clone = pickle.loads(pickle.dumps(self.reader))
        self.reader.close()
        self.reader = clone

    @precondition(lambda self: self.reader is not None)
    @rule()
    def verify(self):
        assert self.reader.verify() == []

    @precondition(lambda self: self.reader is not None)
    @rule()
    def close(self):
        self.reader.close()
        with pytest.raises(ValueError, match="closed"):
            self.reader[0]
        self.reader = None

    @invariant()
    def length(self):
        if self.reader is not None:
            assert len(self.reader) == len(self.model)

    def teardown(self):
        if self.reader is not None:
            self.reader.close()
