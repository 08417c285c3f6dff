"""``storebench compare OLD.json NEW.json``: which benchmarks changed, with confidence.

Benchmarks are matched by ``fullname``.  For each pair the ratio of median
round times ``new / old`` is reported (above 1 is slower) with a percentile
bootstrap 95% confidence interval: both sides' raw round times
(``stats.data``, saved by ``--benchmark-save-data``) are resampled with
replacement and the ratio of the resampled medians is taken, ``n_boot``
times.  The generator is seeded from ``seed`` and the benchmark's name, so
the output is the same on every run and does not depend on which other
benchmarks are compared.

A change is *significant* when its interval excludes 1.  A benchmark saved
without raw timings gets the ratio only, no interval, and is never
significant; the output says how to get the timings.  So is one with a
single round on either side: one time says nothing about the spread.  ``compare`` exits
with 1 when some benchmark is significantly slower by more than
``fail_above`` (``0.10``: its median time grew by more than 10%).
"""
from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from .results import Bench, ResultsError, Run

N_BOOT = 10_000
CONFIDENCE = 0.95
MIN_ROUNDS = 2  # raw times needed on each side for an interval
_CHUNK = 2_000_000  # resampled values held at once


@dataclass(frozen=True)
class Change:
    """One benchmark in both runs: the ratio of median times and its interval."""

    old: Bench
    new: Bench
    ratio: float
    lo: float | None = None  # None: no interval, ``no_interval`` says why
    hi: float | None = None
    no_interval: str | None = None

    @property
    def significant(self) -> bool:
        return self.lo is not None and (self.lo > 1 or cast(float, self.hi) < 1)

    @property
    def verdict(self) -> str:
        """``slower``, ``faster`` or ``""`` (no significant change)."""
        if not self.significant:
            return ""
        return "slower" if cast(float, self.lo) > 1 else "faster"

    def fails(self, fail_above: float) -> bool:
        """Significantly slower, and the median time grew by more than ``fail_above``."""
        return self.verdict == "slower" and self.ratio > 1 + fail_above


@dataclass
class Comparison:
    changes: list[Change]
    only_old: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    machine_diff: list[str] = field(default_factory=list)

    @property
    def missing_data(self) -> list[Change]:
        """Benchmarks compared without an interval."""
        return [c for c in self.changes if c.lo is None]


def _medians(samples: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """Medians of ``n_boot`` resamples (with replacement) of ``samples``, in chunks."""
    k = len(samples)
    step = max(1, _CHUNK // k)
    out = np.empty(n_boot)
    for start in range(0, n_boot, step):
        m = min(step, n_boot - start)
        out[start:start + m] = np.median(samples[rng.integers(0, k, size=(m, k))], axis=1)
    return out


def bootstrap_ratio(old: np.ndarray, new: np.ndarray, *, seed: int | Sequence[int] = 0,
                    n_boot: int = N_BOOT, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of ``median(new) / median(old)``.

    Parameters
    ----------
    old, new : ndarray
        Raw round times of each run (at least one value each).
    seed : int or sequence of int
        Seed of the generator; the same seed gives the same interval.
    n_boot : int
        Number of resamples.
    confidence : float
        Coverage of the interval, e.g. 0.95.

    Returns
    -------
    (lo, hi) : tuple of float
    """
    rng = np.random.default_rng(seed)
    ratios = _medians(np.asarray(new, float), rng, n_boot) / _medians(np.asarray(old, float), rng, n_boot)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(ratios, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _machine_diff(old: dict, new: dict) -> list[str]:
    """Machine facts that differ between two runs' machine_info (CPU, kernel, libraries)."""
    def get(d, *path):
        for p in path:
            d = d.get(p) if isinstance(d, dict) else None
        return d

    paths = [("node",), ("cpu", "brand_raw"), ("cpu", "count"), ("python_version",), ("release",),
             ("storebench", "data_dir_fs"), ("storebench", "ram_bytes")]
    libs = set(get(old, "storebench", "libraries") or {}) | set(get(new, "storebench", "libraries") or {})
    paths += [("storebench", "libraries", lib) for lib in sorted(libs)]
    return [".".join(p) for p in paths if get(old, *p) != get(new, *p)]


def _no_interval(a: Bench, b: Bench) -> str | None:
    """Why two benchmarks get no interval (no raw times, one round, zero time), else None."""
    if a.data is None or b.data is None:
        return "no raw data"
    if min(len(a.data), len(b.data)) < MIN_ROUNDS:
        return "1 round"
    if a.median <= 0:
        return "zero time"
    return None


def compare(old: Run, new: Run, *, seed: int = 0, n_boot: int = N_BOOT,
            confidence: float = CONFIDENCE) -> Comparison:
    """Match the benchmarks of two runs by fullname and compare their median times.

    Raises
    ------
    ResultsError
        No benchmark of ``new`` has a counterpart in ``old``.
    """
    olds = {b.fullname: b for b in old.benches}
    news = {b.fullname: b for b in new.benches}
    common = sorted(olds.keys() & news.keys())
    if not common:
        raise ResultsError(new.path, f"no benchmark matches one of {old.path} by name; "
                                     "compare runs of the same suite")
    changes = []
    for name in common:
        a, b = olds[name], news[name]
        ratio = b.median / a.median if a.median > 0 else float("inf")
        why = _no_interval(a, b)
        if why is not None:
            changes.append(Change(a, b, ratio, no_interval=why))
            continue
        lo, hi = bootstrap_ratio(cast(np.ndarray, a.data), cast(np.ndarray, b.data),
                                 seed=[seed, zlib.crc32(name.encode())], n_boot=n_boot, confidence=confidence)
        changes.append(Change(a, b, ratio, lo, hi))
    return Comparison(changes, sorted(olds.keys() - news.keys()), sorted(news.keys() - olds.keys()),
                      _machine_diff(old.machine_info, new.machine_info))


# --------------------------------------------------------------------------- output


def fmt_time(seconds: float) -> str:
    """``812 ns``, ``1.23 ms``, ``4.56 s``."""
    for scale, unit in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def _display_names(changes: Sequence[Change]) -> list[str]:
    names = [c.new.name for c in changes]
    return names if len(set(names)) == len(names) else [c.new.fullname for c in changes]


def render(cmp: Comparison, *, fail_above: float, confidence: float = CONFIDENCE) -> str:
    """The comparison as an aligned text table with a summary."""
    names = _display_names(cmp.changes)
    ci = f"{confidence:.0%} CI"
    rows = [("benchmark", "old median", "new median", "new/old", ci, "")]
    for name, c in zip(names, cmp.changes):
        interval = f"[{c.lo:.3f}, {c.hi:.3f}]" if c.lo is not None else cast(str, c.no_interval)
        mark = c.verdict + (f" > +{fail_above:.0%}" if c.fails(fail_above) else "")
        rows.append((name, fmt_time(c.old.median), fmt_time(c.new.median), f"{c.ratio:.3f}", interval, mark))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = ["  ".join(cell.ljust(w) if i in (0, 4, 5) else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths[:5]))
    slower = [c for c in cmp.changes if c.verdict == "slower"]
    faster = [c for c in cmp.changes if c.verdict == "faster"]
    failing = [c for c in cmp.changes if c.fails(fail_above)]
    lines += ["", f"{len(cmp.changes)} benchmarks compared (time ratio new/old, above 1 is slower): "
                  f"{len(slower)} significantly slower, {len(faster)} significantly faster, "
                  f"{len(failing)} slower by more than {fail_above:.0%}."]
    reasons = {c.no_interval for c in cmp.missing_data}
    if "no raw data" in reasons:
        lines.append("note: benchmarks saved without raw timings (stats.data) get no interval and no "
                     "verdict; run with --benchmark-save-data (storebench run does).")
    if "1 round" in reasons:
        lines.append(f"note: benchmarks with fewer than {MIN_ROUNDS} rounds get no interval and no "
                     "verdict; run with --rounds 3 or more.")
    for what, names_ in (("only in OLD", cmp.only_old), ("only in NEW", cmp.only_new)):
        if names_:
            lines.append(f"note: {len(names_)} benchmarks {what}, not compared.")
    if cmp.machine_diff:
        lines.append("note: the runs differ in machine_info: " + ", ".join(cmp.machine_diff) + ".")
    return "\n".join(lines) + "\n"


def to_csv(cmp: Comparison) -> str:
    """One row per benchmark: names, medians, ratio, interval, verdict."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["fullname", "old_median_s", "new_median_s", "ratio", "ci_low", "ci_high", "verdict"])
    for c in cmp.changes:
        w.writerow([c.new.fullname, repr(c.old.median), repr(c.new.median), repr(c.ratio),
                    "" if c.lo is None else repr(c.lo), "" if c.hi is None else repr(c.hi), c.verdict])
    return out.getvalue()
