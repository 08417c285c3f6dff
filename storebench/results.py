"""Reading pytest-benchmark result JSON, with or without storebench's fields.

A result file is what ``pytest bench --benchmark-json=F`` or
``--benchmark-autosave`` writes.  storebench's suite adds to each benchmark's
``extra_info`` the operation, format id (or bound name), preset, ``n``, cache
state, loader settings, sizes on disk and efficiency, and to the file a
``storebench`` section (dataset checksums, options, version).  A file from
plain pytest-benchmark lacks those; it still loads, every benchmark as a
:class:`Bench` whose storebench properties are ``None``, and the callers warn
with :class:`ForeignResultsWarning` and show what they can.

A file that is not pytest-benchmark JSON at all raises :class:`ResultsError`
naming the file and the problem.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from storebench import formats

#: The order operations are shown in; groups not listed follow, sorted.
OPS = ("write", "open", "scan", "random", "batch", "patch", "loader", "bound")
_STATS = ("median", "min")


class ResultsError(ValueError):
    """A result file that cannot be used: names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


class ForeignResultsWarning(UserWarning):
    """Benchmarks without storebench's extra_info: only their times can be shown."""


def _number(x: Any) -> float | None:
    """``x`` as a finite float, or None for missing, non-numeric or non-finite values."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


@dataclass(frozen=True)
class Bench:
    """One benchmark of a result file.

    The storebench properties (``op``, ``label``, ``n``, ...) read the
    benchmark's ``extra_info`` and are ``None`` for a benchmark written by
    plain pytest-benchmark.  Times are seconds per round.
    """

    source: str  # the file it came from
    fullname: str
    name: str
    group: str
    extra: dict
    stats: dict

    # ---- times

    @property
    def median(self) -> float:
        return self.stats["median"]

    @property
    def iqr(self) -> float | None:
        return _number(self.stats.get("iqr"))

    @property
    def rounds(self) -> int | None:
        r = self.stats.get("rounds")
        return r if isinstance(r, int) else None

    @property
    def data(self) -> np.ndarray | None:
        """The raw round times (``--benchmark-save-data``), or None if absent."""
        d = self.stats.get("data")
        if not isinstance(d, list) or not d:
            return None
        arr = np.asarray([_number(x) for x in d], dtype=float)
        return None if np.isnan(arr).any() else arr

    # ---- storebench's fields

    @property
    def is_storebench(self) -> bool:
        """Whether extra_info says what one round did (operation and size)."""
        return isinstance(self.extra.get("op"), str) and isinstance(self.extra.get("n"), int)

    @property
    def op(self) -> str | None:
        op = self.extra.get("op")
        return op if isinstance(op, str) else None

    @property
    def is_bound(self) -> bool:
        """A bound row (group ``bound``), not a format row."""
        return self.group == "bound" or (self.is_storebench and "id" not in self.extra)

    @property
    def label(self) -> str:
        """The format id, the bound's name, or (foreign rows) the test's name with its parameters."""
        if self.is_storebench:
            key = "bound" if self.is_bound else "id"
            value = self.extra.get(key)
            if isinstance(value, str):
                if key == "id":  # ids of older storebench versions read as today's
                    return _canonical_id(value, self.extra.get("format"), self.extra.get("options"))
                return value
        return self.name

    def get(self, key: str) -> Any:
        """An extra_info value, None when absent."""
        return self.extra.get(key)

    @property
    def n(self) -> int | None:
        return self.extra.get("n") if self.is_storebench else None

    @property
    def items(self) -> int | None:
        """How many things one round handled: 1 reader for ``open``, else ``n`` images."""
        if not self.is_storebench:
            return None
        return 1 if self.unit == "opens/s" else self.n

    @property
    def unit(self) -> str | None:
        """``"opens/s"`` for open rows, ``"images/s"`` for the others, None when foreign."""
        if not self.is_storebench:
            return None
        return "opens/s" if self.op == "open" else "images/s"

    @property
    def rate(self) -> float | None:
        """Median rate: ``items / median`` (images/s or opens/s)."""
        return self.items / self.median if self.items and self.median > 0 else None

    @property
    def rate_iqr(self) -> float | None:
        """Interquartile range of the rate: ``items / q1 - items / q3``."""
        q1, q3 = _number(self.stats.get("q1")), _number(self.stats.get("q3"))
        if not self.items or not q1 or not q3:
            return None
        return self.items / q1 - self.items / q3

    @property
    def bytes_per_image(self) -> float | None:
        size, n = _number(self.get("bytes_on_disk")), self.n
        return size / n if size is not None and n else None


@dataclass
class Run:
    """One result file: its benchmarks and its file-level sections."""

    path: Path
    benches: list[Bench]
    machine_info: dict = field(default_factory=dict)
    commit_info: dict = field(default_factory=dict)
    storebench: dict | None = None  # the suite's JSON hook section
    datetime: str | None = None

    @property
    def datasets(self) -> list[dict]:
        """The dataset records of the storebench section (checksums, sizes); [] when foreign."""
        ds = (self.storebench or {}).get("datasets")
        return [d for d in ds if isinstance(d, dict)] if isinstance(ds, list) else []

    def raw_bytes_per_image(self, preset: str | None, n: int | None) -> float | None:
        """Pixel bytes per image of the source ``(preset, n)``, from the dataset records."""
        for d in self.datasets:
            if d.get("preset") == preset and d.get("n") == n and _number(d.get("raw_bytes")) and n:
                return d["raw_bytes"] / n
        return None


def _bench(path: Path, i: int, b: Any) -> Bench:
    """Validate one benchmark entry; a broken one is a :class:`ResultsError`."""
    if not isinstance(b, dict):
        raise ResultsError(path, f"benchmark #{i} is not an object")
    name = b.get("fullname") or b.get("name")
    if not isinstance(name, str):
        raise ResultsError(path, f"benchmark #{i} has no name")
    stats = b.get("stats")
    if not isinstance(stats, dict) or any(_number(stats.get(k)) is None for k in _STATS):
        raise ResultsError(path, f"benchmark {name!r} has no timing statistics "
                                 "(stats.median/stats.min); was it run with --benchmark-disable?")
    extra = cast(dict, b.get("extra_info")) if isinstance(b.get("extra_info"), dict) else {}
    return Bench(str(path), name, str(b.get("name") or name), str(b.get("group") or "default"),
                 extra, stats)


def load(path: str | Path) -> Run:
    """Read one result file.

    Raises
    ------
    ResultsError
        The file cannot be read, is not JSON, or is not pytest-benchmark
        output (no ``benchmarks`` list, a benchmark without statistics, or
        no benchmarks at all).  The message names the file and the problem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(path, "no such file") from None
    except IsADirectoryError:
        raise ResultsError(path, "is a directory, not a result JSON file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsError(path, f"cannot be read ({err})") from err
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ResultsError(path, f"is not JSON ({err})") from err
    if not isinstance(obj, dict) or not isinstance(obj.get("benchmarks"), list):
        raise ResultsError(path, "is not a pytest-benchmark result file (no 'benchmarks' list)")
    if not obj["benchmarks"]:
        raise ResultsError(path, "holds no benchmarks (were they all skipped?)")
    benches = [_bench(path, i, b) for i, b in enumerate(obj["benchmarks"])]
    sb = obj.get("storebench")

    def section(key):
        return obj[key] if isinstance(obj.get(key), dict) else {}

    return Run(path, benches, section("machine_info"), section("commit_info"),
               sb if isinstance(sb, dict) else None, obj.get("datetime"))


def load_all(paths: Iterable[str | Path]) -> list[Run]:
    """Read several result files (see :func:`load`)."""
    return [load(p) for p in paths]


def foreign_message(runs: Sequence[Run]) -> str | None:
    """A warning text when benchmarks lack storebench's fields, else None."""
    msgs = []
    for run in runs:
        bad = [b for b in run.benches if not b.is_storebench]
        if bad:
            what = "all" if len(bad) == len(run.benches) else f"{len(bad)} of {len(run.benches)}"
            msgs.append(f"{run.path}: {what} benchmarks lack storebench's extra_info (op, n, format "
                        "id), as in a plain pytest-benchmark file or a test that failed after its "
                        "rounds; they show times only, without images/s, MB/s, sizes on disk or plots")
    return "; ".join(msgs) or None


def op_order(group: str) -> tuple[int, str]:
    """Sort key putting groups in :data:`OPS` order."""
    return (OPS.index(group) if group in OPS else len(OPS), group)


_ids: dict[str, str] = {}


def _canonical_id(fmt_id: str, name: Any, options: Any) -> str:
    """:func:`storebench.formats.canonical_id`, memoized: a report asks for it per row."""
    key = json.dumps([fmt_id, name, options], sort_keys=True, default=repr)
    if key not in _ids:
        _ids[key] = formats.canonical_id(fmt_id, name if isinstance(name, str) else None, options)
    return _ids[key]
