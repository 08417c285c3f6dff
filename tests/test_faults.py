"""Faults and bad input, for every registered format: typed errors, never a crash,
a hang, a half-written dataset or wrong data that passes verify()."""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import re
import resource
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from faults import OK_OUTCOMES, damaged_copies, fault_samples, probe
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from storebench.fixtures import make_dataset
from storebench.formats import DatasetError
from storebench.formats.testing import assert_all_same, assert_same, format_params

DEFAULTS = format_params(variants=False)


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def _cifar(fmt, n, seed=0):
    return [s for s in make_dataset("cifar", n, seed=seed) if s.mode in fmt.modes]


# --------------------------------------------------------------------------- damaged files


@pytest.mark.parametrize("fmt", DEFAULTS)
def test_damaged_files_give_typed_errors_or_correct_data(fmt, tmp_path):
    """Truncations, byte flips, zeroed regions, deleted and renamed files, per file."""
    expected = fault_samples(fmt)
    src = tmp_path / "src"
    fmt.write(expected, src)
    outcomes = {label: probe(fmt, path, expected) for label, path in damaged_copies(fmt, src, tmp_path)}
    bugs = {k: v for k, v in outcomes.items() if v[0] not in OK_OUTCOMES}
    assert not bugs, "\n".join(f"{k}: {o}: {d}" for k, (o, d) in bugs.items())
    assert any(o == "typed error" for o, _ in outcomes.values())


@pytest.mark.parametrize("fmt", DEFAULTS)
def test_verify_reports_bad_keys(fmt, tmp_path):
    samples = _cifar(fmt, 6)
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        assert r.verify() == []
    crc = tmp_path / "ds" / "checksums.u32"
    raw = bytearray(crc.read_bytes())
    raw[4 * 2] ^= 0xFF  # sample 2's stored checksum no longer matches its data
    crc.write_bytes(bytes(raw))
    with fmt.open(tmp_path / "ds") as r:
        assert r.verify() == [samples[2].key]
        assert_same(samples[1], r[1], lossless=fmt.lossless)
    with fmt.open(tmp_path / "ds", verify=True) as r:
        with pytest.raises(DatasetError, match=re.escape(f"(key {samples[2].key!r}) does not match its checksum")):
            r[2]
        with pytest.raises(DatasetError, match="checksum"):
            list(r)
        assert r[3].key == samples[3].key


# --------------------------------------------------------------------------- interrupted writes


def _write_then_exit(fmt, path, n):
    fmt.write(make_dataset("cifar", n, seed=7), path, overwrite=True)
    os._exit(0)


@pytest.mark.parametrize("fmt", DEFAULTS)
def test_kill_9_mid_write_never_leaves_a_partial_dataset(fmt, tmp_path):
    if not fmt.modes >= {("uint8", 3)}:
        pytest.skip(f"{fmt.id} cannot store the cifar preset")
    previous = _cifar(fmt, 5, seed=1)
    path = tmp_path / "ds"
    fmt.write(previous, path)
    ctx = mp.get_context("fork")
    n = 400
    start = time.perf_counter()
    full = ctx.Process(target=_write_then_exit, args=(fmt, tmp_path / "timing", n))
    full.start()
    full.join()
    duration = time.perf_counter() - start
    rng = np.random.default_rng(0)
    for delay in rng.uniform(0.0, duration, size=6):
        proc = ctx.Process(target=_write_then_exit, args=(fmt, path, n))
        proc.start()
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        try:
            r = fmt.open(path)
        except (DatasetError, FileNotFoundError):
            continue  # "no dataset here" is allowed; a partial dataset is not
        with r:
            assert len(r) in (len(previous), n), f"partial dataset of {len(r)} samples after kill at {delay:.3f}s"
            assert r.verify() == []
            if len(r) == len(previous):
                assert_all_same(previous, list(r), lossless=fmt.lossless)
    fmt.write(previous, path, overwrite=True)  # the next write cleans up what the dead writers left
    assert _leftovers(tmp_path, "ds") == []
    with fmt.open(path) as r:
        assert r.verify() == []


# --------------------------------------------------------------------------- disk full


def _write_with_fsize_limit(fmt, path, conn):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    # Per-file limit: 8 KiB is below every format's largest file for 300 cifar images.
    resource.setrlimit(resource.RLIMIT_FSIZE, (8 * 1024, resource.RLIM_INFINITY))
    try:
        fmt.write(make_dataset("cifar", 300, seed=2), path)
        conn.send(("no error", ""))
    except BaseException as err:  # report whatever the writer raised
        conn.send((type(err).__name__, str(err)))
    conn.close()


@pytest.mark.parametrize("fmt", DEFAULTS)
def test_disk_full_is_a_clear_error_and_leaves_nothing(fmt, tmp_path):
    if not fmt.modes >= {("uint8", 3)}:
        pytest.skip(f"{fmt.id} cannot store the cifar preset")
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_write_with_fsize_limit, args=(fmt, tmp_path / "ds", child))
    proc.start()
    child.close()
    assert parent.poll(60), "writer hung on a full disk"
    kind, message = parent.recv()
    proc.join()
    assert kind == "OSError", f"{kind}: {message}"
    assert "No space left" in message or "too large" in message, message
    assert str(tmp_path / "ds") in message, message
    assert not (tmp_path / "ds").exists()
    assert _leftovers(tmp_path, "ds") == []


# --------------------------------------------------------------------------- concurrency


def _read_everything(reader):
    return [reader[i] for i in range(len(reader))] + list(reader)


@pytest.mark.parametrize("fmt", DEFAULTS)
def test_four_readers_while_another_process_writes(fmt, tmp_path):
    samples = _cifar(fmt, 40)
    if not samples:
        pytest.skip(f"{fmt.id} cannot store the cifar preset")
    fmt.write(samples, tmp_path / "ds")
    ctx = mp.get_context("spawn")
    writer = ctx.Process(target=_write_then_exit, args=(fmt, tmp_path / "other", 300))
    with fmt.open(tmp_path / "ds") as r, ctx.Pool(4) as pool:
        writer.start()
        results = pool.map(_read_everything, [r] * 4)
        writer.join()
    assert writer.exitcode == 0
    for got in results:
        assert_all_same(samples + samples, got, lossless=fmt.lossless)
    with fmt.open(tmp_path / "other") as other:
        assert len(other) == 300 and other.verify() == []


# --------------------------------------------------------------------------- stateful


class ReaderMachine(RuleBasedStateMachine):
    """Random sequences of open, read, read_batch, pickle, verify and close against a list."""

    fmt = None
    path = None
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


@pytest.mark.parametrize("fmt", DEFAULTS)
def test_stateful_reader(fmt):
    samples = _cifar(fmt, 12)
    if len(samples) < 12:
        pytest.skip(f"{fmt.id} cannot store the cifar preset")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ds"
        fmt.write(samples, path)
        machine = type("Machine", (ReaderMachine,), {"fmt": fmt, "path": path, "model": samples})
        run_state_machine_as_test(machine, settings=settings(max_examples=8, stateful_step_count=15))
