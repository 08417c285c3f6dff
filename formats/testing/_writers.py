"""FormatTests' checks of writers against each other and against what is already at the path.

Kept apart from :mod:`._suite` only for length; :class:`WriterTests` is a mixin
that takes the ``fmt`` fixture from :class:`~storebench.formats.testing.FormatTests`.

The races are made, not hoped for: each writer's samples end in a barrier, so
both reach the final check-and-rename together, after both passed the early
"is the path free?" check.  Trials per race: :func:`race_trials` (2, or 20
under a hypothesis profile of 100 examples or more, such as ``nightly``).
"""
from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

from .. import Format, Sample, _registry
from . import assert_all_same, mode_sample
from ._common import child_context, leftovers

_WAIT = 120  # seconds any one writer may take before the test calls it hung


def race_trials() -> int:
    """Trials of each race: 2 by default, 20 when the hypothesis profile asks for 100+ examples."""
    return 20 if settings().max_examples >= 100 else 2


def tagged_samples(fmt: Format, tag: int, n: int = 6) -> list[Sample]:
    """``n`` samples of writer ``tag``: keys, labels and pixels no other tag has."""
    base = mode_sample(*sorted(fmt.modes)[0])
    return [Sample(f"writer {tag}/{i}", np.roll(base.image, 3 * i + 17 * tag), label=100 * tag + i)
            for i in range(n)]


def _ending_with(samples: list[Sample], wait: Callable[[], Any]) -> Iterator[Sample]:
    yield from samples
    wait()  # the writer has every sample; it goes on to its manifest and rename only after this


def _write_in_child(fmt: Format, samples: list[Sample], path: Path, overwrite: bool, barrier, conn) -> None:
    """A forked writer: wait at ``barrier`` after the last sample, send what happened."""
    try:
        fmt.write(_ending_with(samples, lambda: barrier.wait(_WAIT)), path, overwrite=overwrite)
        conn.send(("ok", ""))
    except BaseException as err:  # report whatever the writer raised
        conn.send((type(err).__name__, str(err)))
    conn.close()


def _pause_in_child(fmt: Format, samples: list[Sample], path: Path, paused, go, conn) -> None:
    """A forked writer that stops after two samples until ``go`` is set."""
    def source():
        yield from samples[:2]
        paused.set()
        go.wait(_WAIT)
        yield from samples[2:]
    try:
        fmt.write(source(), path, overwrite=True)
        conn.send(("ok", ""))
    except BaseException as err:  # report whatever the writer raised
        conn.send((type(err).__name__, str(err)))
    conn.close()


def _die_mid_write(fmt: Format, samples: list[Sample], path: Path) -> None:
    """A forked writer that exits without cleaning up after two samples (as kill -9 would)."""
    def source():
        yield from samples[:2]
        os._exit(0)
    fmt.write(source(), path)


def _race(fmt: Format, path: Path, overwrite: bool, via: str) -> tuple[list[tuple[str, str]], list[list[Sample]]]:
    """Two writers of distinct samples to ``path`` at once; what each raised, and their samples."""
    mine = [tagged_samples(fmt, 1), tagged_samples(fmt, 2)]
    if via == "threads":
        barrier = threading.Barrier(2)
        outcomes: list[tuple[str, str]] = [("hung", "")] * 2

        def run(k: int) -> None:
            try:
                fmt.write(_ending_with(mine[k], lambda: barrier.wait(_WAIT)), path, overwrite=overwrite)
                outcomes[k] = ("ok", "")
            except BaseException as err:  # the test asserts on it
                outcomes[k] = (type(err).__name__, str(err))
        threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(2 * _WAIT)
        return outcomes, mine
    ctx = child_context(fmt)
    pbarrier = ctx.Barrier(2)
    pipes = [ctx.Pipe(duplex=False) for _ in mine]
    procs = [ctx.Process(target=_write_in_child, args=(fmt, s, path, overwrite, pbarrier, child))
             for s, (_parent, child) in zip(mine, pipes)]
    for p in procs:
        p.start()
    got = []
    for (parent, child), p in zip(pipes, procs):
        child.close()
        got.append(parent.recv() if parent.poll(2 * _WAIT) else ("hung", f"exit code {p.exitcode}"))
        p.join(_WAIT)
    return got, mine


def _temp_dirs(parent: Path, name: str) -> list[Path]:
    return [parent / n for n in leftovers(parent, name) if (parent / n).is_dir()]


def _whole_dataset_of_one(fmt: Format, path: Path, candidates: list[list[Sample]]) -> int:
    """Which candidate ``path`` holds, entirely; fails on a mix, a missing file or a bad checksum."""
    with fmt.open(path) as r:
        assert r.verify() == []
        got = list(r)
        keys = [s.key for s in got]
        which = [k for k, c in enumerate(candidates) if keys == [s.key for s in c]]
        assert which, f"{path} holds neither writer's samples: {keys}"
        assert_all_same(candidates[which[0]], got, lossless=fmt.lossless)
        assert_all_same(got, [r[i] for i in range(len(r))])
    return which[0]


class WriterTests:
    """What overwrite may replace; two writers of one path; whose temp dirs a cleanup may delete."""

    def test_overwrite_replaces_only_a_dataset(self, fmt, tmp_path):
        """A file, a folder without a manifest, a symlink (to anything): FileExistsError, untouched."""
        samples = tagged_samples(fmt, 1, 2)
        project = tmp_path / "my-project"
        (project / "src").mkdir(parents=True)
        (project / "src" / "thesis.tex").write_text("years of work")
        damaged = tmp_path / "damaged"
        damaged.mkdir()
        (damaged / "storebench.json").write_text("{not json")
        a_file = tmp_path / "notes.txt"
        a_file.write_text("keep me")
        dataset = tmp_path / "dataset"
        fmt.write(samples, dataset)
        links = {"link-to-project": project, "link-to-file": a_file, "link-to-dataset": dataset,
                 "dangling-link": tmp_path / "nowhere"}
        for name, target in links.items():
            os.symlink(target, tmp_path / name)
        before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
        for victim in [project, damaged, a_file, project / "src", *(tmp_path / n for n in links)]:
            with pytest.raises(FileExistsError, match=re.escape(str(victim))):
                fmt.write(samples, victim, overwrite=True)
            with pytest.raises(FileExistsError, match=re.escape(str(victim))):
                fmt.write(samples, victim)
            assert leftovers(victim.parent, victim.name) == []
        assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
        assert (project / "src" / "thesis.tex").read_text() == "years of work"
        assert a_file.read_text() == "keep me"
        assert {n: os.readlink(tmp_path / n) for n in links} == {n: str(t) for n, t in links.items()}
        # A dataset of any format is replaced.
        other = next(f for f in [_registry.get("npy"), _registry.get("pickle")] if f.name != fmt.name)
        other.write([], tmp_path / "other")
        fmt.write(samples, tmp_path / "other", overwrite=True)
        assert _whole_dataset_of_one(fmt, tmp_path / "other", [samples]) == 0
        assert leftovers(tmp_path, "other") == []

    @pytest.mark.parametrize("via", ["threads", "processes"])
    @pytest.mark.parametrize("overwrite", [False, True], ids=["create", "overwrite"])
    def test_two_writers_of_one_path(self, fmt, tmp_path, via, overwrite):
        """create: exactly one wins, the other gets FileExistsError naming the path.
        overwrite: both win, in turn; the dataset is wholly one writer's."""
        for trial in range(race_trials()):
            path = tmp_path / f"ds{trial}"
            if overwrite:
                fmt.write(tagged_samples(fmt, 0, 3), path)
            outcomes, mine = _race(fmt, path, overwrite, via)
            kinds = sorted(kind for kind, _ in outcomes)
            if overwrite:
                assert kinds == ["ok", "ok"], outcomes
            else:
                assert kinds == ["FileExistsError", "ok"], outcomes
                message = next(m for kind, m in outcomes if kind == "FileExistsError")
                assert str(path) in message and "already exists" in message, message
            winner = _whole_dataset_of_one(fmt, path, mine)
            if not overwrite:
                assert outcomes[winner][0] == "ok", (winner, outcomes)
            assert leftovers(tmp_path, path.name) == [], "a writer left its temp dir or lock behind"

    @pytest.mark.parametrize("via", ["thread", "process"])
    def test_live_writers_temp_dir_survives_another_writer(self, fmt, tmp_path, via):
        """A writer paused mid-write keeps its temp dir while another writer of the path runs."""
        path = tmp_path / "ds"
        first, second = tagged_samples(fmt, 1), tagged_samples(fmt, 2)
        if via == "thread":
            paused, go = threading.Event(), threading.Event()
            outcome = [("hung", "")]

            def source():
                yield from first[:2]
                paused.set()
                go.wait(_WAIT)
                yield from first[2:]

            def run():
                try:
                    fmt.write(source(), path, overwrite=True)
                    outcome[0] = ("ok", "")
                except BaseException as err:  # the test asserts on it
                    outcome[0] = (type(err).__name__, str(err))
            worker = threading.Thread(target=run)
            worker.start()
        else:
            ctx = child_context(fmt)
            paused, go = ctx.Event(), ctx.Event()
            parent, child = ctx.Pipe(duplex=False)
            worker = ctx.Process(target=_pause_in_child, args=(fmt, first, path, paused, go, child))
            worker.start()
            child.close()
        try:
            assert paused.wait(_WAIT), "the first writer never started"
            theirs = _temp_dirs(tmp_path, "ds")
            assert len(theirs) == 1, theirs
            files = sorted(p.name for p in theirs[0].rglob("*"))
            fmt.write(second, path, overwrite=True)  # cleans stale siblings first
            assert _whole_dataset_of_one(fmt, path, [first, second]) == 1
            assert _temp_dirs(tmp_path, "ds") == theirs
            assert sorted(p.name for p in theirs[0].rglob("*")) == files
        finally:
            go.set()
            worker.join(_WAIT)
        if via == "process":
            outcome = [parent.recv() if parent.poll(_WAIT) else ("hung", "")]
        assert outcome[0] == ("ok", ""), outcome
        assert _whole_dataset_of_one(fmt, path, [first, second]) == 0
        assert leftovers(tmp_path, "ds") == []

    def test_dead_writers_temp_dir_is_cleaned(self, fmt, tmp_path):
        """A writer that died mid-write leaves its temp dir unlocked; the next write removes it.

        A temp dir without a lock file (an earlier storebench's) cannot be proven abandoned
        and is left alone.
        """
        path = tmp_path / "ds"
        proc = child_context(fmt).Process(target=_die_mid_write, args=(fmt, tagged_samples(fmt, 1), path))
        proc.start()
        proc.join(_WAIT)
        assert proc.exitcode == 0
        assert len(_temp_dirs(tmp_path, "ds")) == 1, leftovers(tmp_path, "ds")
        legacy = tmp_path / ".ds.tmp-999999999-abcd1234"
        legacy.mkdir()
        fmt.write(tagged_samples(fmt, 2), path)
        assert leftovers(tmp_path, "ds") == [legacy.name]
        assert _whole_dataset_of_one(fmt, path, [tagged_samples(fmt, 2)]) == 0
