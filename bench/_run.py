"""Running a benchmark's rounds and recording its row.

:class:`Runner` (the ``runner`` fixture) wraps ``benchmark.pedantic`` with a
fixed number of rounds, no calibration, and the page-cache state: before
each round the previous reader is closed, a fresh one opened and the files
evicted (cold), none of it timed.  After the rounds it writes the row's
``extra_info`` (plain JSON types) and registers the row for the summary.

Efficiency: a scan, random, batch or loader row, warm or cold, also times its
bound (and, for batch and loader, the gather) once per round, just before its
own round, outside the benchmark's timer; a loader epoch is compared with the
bound's batch loop (``bound_op`` in extra_info); a patch row is compared with
patches copied out of in-memory images (``patch-gather``).  ``efficiency`` is
the row's images/s over its bound's, each from its fastest round, so both rates come
from the same minute of machine load; the bound rows of group ``bound`` show
the same loops alone.  Bounds always read warm: a cold row's efficiency is
what the disk costs.  Write and open rows have no bound.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ._bounds import GATHER, Bound, BoundRun, NoBound, open_bound
from ._data import Dataset, Unsupported, jsonable, np_order
from ._ops import OPS, RoundMeter
from ._pagecache import CacheState
from ._results import Row


def format_info(fmt, preset: str, n: int, *, cache: str | None, ds: Dataset | None = None,
                loader=None, batch_size: int | None = None) -> dict:
    """The static extra_info of a format row."""
    return {
        "format": fmt.name, "id": fmt.id, "options": jsonable(fmt.options),
        "format_version": fmt.version, "lossless": fmt.lossless, "preset": preset, "n": n,
        "bytes_on_disk": ds.bytes_on_disk if ds else None, "n_files": ds.n_files if ds else None,
        "cache": cache, "batch_size": batch_size,
        "workers": loader.workers if loader else None,
        "mp_context": loader.mp_context if loader else None,
        "persistent": loader.persistent if loader else None,
    }


class _Slot:
    """What a round reads, passed by reference: pytest-benchmark keeps the last
    round's arguments alive while it sets up the next, and a cold round must be
    able to drop the previous reader (and its memory map) first."""

    __slots__ = ("args",)

    def __init__(self):
        self.args: tuple | None = None


class Runner:
    """One benchmark row: rounds under a cache state, then its record."""

    def __init__(self, benchmark, session, request):
        self.benchmark = benchmark
        self.session = session
        self.name = request.node.callspec.id
        self.rounds = session.opts.rounds
        self.paired: dict[str, list[float]] = {}  # bound name -> its round times
        self.bound_op: str | None = None  # the bound's op, when it differs from the row's
        self.gained: list[int] = []  # pages each cold round of reads() brought into the page cache
        # test_scan -> group "scan", test_bound -> "bound": one group per operation.
        benchmark.group = request.node.originalname.removeprefix("test_")

    def pedantic(self, target: Callable, setup: Callable | None = None) -> Any:
        return self.benchmark.pedantic(target, setup=setup, rounds=self.rounds)

    def open_bound(self, bound: Bound, op: str, preset: str, n: int) -> BoundRun:
        """``bound``'s loop for ``op`` on ``(preset, n)``, with this session's pool, order,
        batch size and cache, and the dataset of ``bound.dataset_of``.  Raises NoBound."""
        s = self.session
        dataset = None
        if bound.dataset_of is not None:
            try:
                dataset = s.data.dataset(bound.dataset_of, preset, n).path
            except Unsupported as err:
                raise NoBound(str(err)) from err
        return open_bound(bound, op, pool=s.pool(preset, n), perm=np_order(n, s.opts.seed),
                          batch=s.opts.batch_size, root=s.data.root, dataset=dataset)

    def bounds_for(self, fmt, op: str, preset: str, n: int) -> list[BoundRun]:
        """The bounds a read row is compared with: its own, and the gather for batches.

        A loader epoch is compared with the bound's batch loop (the same
        shuffled batches, in one process, without the DataLoader).  Bounds read
        from memory or prewarmed files whatever the row's cache state, so a cold
        row's efficiency is what reading from disk costs against the least work.
        """
        bound_op = "batch" if op == "loader" else op
        if bound_op not in OPS:
            return []
        out = []
        for bound in (fmt.bound,) + ((GATHER,) if bound_op == "batch" else ()):
            try:
                out.append(self.open_bound(bound, bound_op, preset, n))
            except NoBound:
                pass  # e.g. no gather of ragged images: no ratio, nothing to time
        if out:
            self.bound_op = out[0].info["op"]  # a bound measured for scans only times a scan
        return out

    def reads(self, target: Callable, *, files, cache: str, open_round: Callable[[], tuple],
              close_round: Callable[[tuple], None] = lambda args: None,
              bounds: Sequence[BoundRun] = (), meter: RoundMeter | None = None) -> Any:
        """Time ``target(*open_round())`` under ``cache``, with ``bounds`` interleaved.

        Warm: the files are read once, and one ``open_round()`` serves every
        round.  Cold: before each round the last round's arguments are closed
        (unmapping what it mapped), the files evicted, ``open_round()`` called
        afresh and the files evicted again (verified); each round must read
        pages back from disk.  Each bound runs once before each round, timed here.
        ``meter`` (if given) starts right before each round and stops right
        after it, outside the timer; ``self.gained`` holds the pages each cold
        round brought into the page cache.
        """
        state = CacheState(cache, files)
        state.start()
        slot = _Slot()
        self.gained = state.gained

        def setup():
            if meter is not None:
                meter.stop()  # the last round's figures, before anything else runs
            if slot.args is not None and state.reopen:
                state.done()
                close_round(slot.args)
                slot.args = None  # the last reference: unmaps what the reader mapped
            for b in bounds:
                t = time.perf_counter()
                b.run()
                self.paired.setdefault(b.name, []).append(time.perf_counter() - t)
            if slot.args is None:
                state.before_open()
                slot.args = open_round()
            state.ready()
            if meter is not None:
                meter.start()
            return (slot,), {}

        try:
            result = self.pedantic(lambda s: target(*s.args), setup)
            if meter is not None:
                meter.stop()
            state.done()
        finally:
            if slot.args is not None:
                close_round(slot.args)
                slot.args = None
            for b in bounds:
                b.close()
        return result

    def record(self, *, op: str, preset: str, n: int, cache: str | None, info: dict,
               items: int | None, raw_bytes: int | None, fmt_id: str | None = None,
               bound: str | None = None, rate_key: str = "images/s") -> Row:
        """Fill extra_info and register the row.

        ``items`` images and ``raw_bytes`` pixel bytes are handled per round;
        images/s (or ``rate_key``) and MB/s come from the fastest round: on a
        shared machine other processes only ever add time.  A format row's
        bound is the one its format declares.
        """
        if fmt_id is not None and bound is None:
            bound = self.session.format(fmt_id).bound.name
        b = self.benchmark
        extra = b.extra_info
        extra.update(info)
        extra.update(op=op, rounds=self.rounds)
        row = Row(self.name, op, preset, n, cache, extra, fmt_id=fmt_id, bound=bound)
        stats = getattr(b.stats, "stats", None)
        if stats is not None and stats.min > 0 and items:
            t = stats.min
            row.rate = items / t
            extra[rate_key] = round(row.rate, 1)
            if raw_bytes is not None:
                extra["MB/s"] = round(raw_bytes / t / 1e6, 2)
            for name, times in self.paired.items():
                ratio = round(row.rate / (n / min(times)), 4)
                if name == "gather" and name != bound:
                    extra["vs_gather"] = ratio
                else:
                    extra.update({"bound": name, f"bound_{rate_key}": round(n / min(times), 1),
                                  "efficiency": ratio})
                    if self.bound_op not in (None, op):
                        extra["bound_op"] = self.bound_op
        return self.session.results.add(row)
