"""Result tables: one per operation (benchmark group), as markdown and CSV.

A row is one benchmark: format id (or bound name) × preset × size × cache
state × loader setting.  Rates are medians over the rounds
(``n / median round time``), so they match the JSON's ``stats.median``;
the IQR column is the interquartile range of that rate (``n/q1 - n/q3``).
MB/s is the median rate times the source's pixel bytes per image.
``efficiency`` is copied from the suite's ``extra_info``: its paired ratio
to the named bound, each from its fastest round.  Patch rows (group
``patch``, and the ``patch-gather`` bound) count patches/s, their MB/s is of
patch pixels, and they add the patch shape, the format's ``partial_reads``,
the bytes a cold round read from storage per patch, the read amplification
(that over the patch's pixel bytes) and the round's peak RSS.

The CSV keeps every column at full precision, so that scripts can read it;
the markdown drops empty columns and puts columns that are the same on every
row (say, ``preset cifar``) into the caption above the table.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .results import Bench, Run, op_order


@dataclass(frozen=True)
class Column:
    """A table column: its CSV name, markdown header, value and markdown format."""

    name: str
    header: str
    value: Callable[[Bench, Run], Any]
    fmt: Callable[[Any], str] = str
    descriptive: bool = False  # a key column: shown in markdown only when it varies


def fmt_rate(x: float) -> str:
    """``12,345`` above 1000, ``123`` above 100, else three significant digits."""
    if x >= 1000:
        return f"{x:,.0f}"
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def fmt_seconds(x: float) -> str:
    return f"{x:.3g}"


def fmt_percent(x: float) -> str:
    return f"{x:.1%}"


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def _unit(b: Bench) -> str | None:
    """The rate's unit: patches/s for patch rows (formats and their bound), else the row's own."""
    return "patches/s" if b.op == "patch" and b.is_storebench else b.unit


def _mb_per_s(b: Bench, run: Run) -> float | None:
    """Median MB/s: the median rate times the source's pixel bytes per image (per patch for patch rows)."""
    if b.rate is None:
        return None
    per_patch = b.get("patch_bytes")  # patch rows, and random-patch workload rows
    if isinstance(per_patch, (int, float)) or _unit(b) == "patches/s":
        return b.rate * per_patch / 1e6 if isinstance(per_patch, (int, float)) else None
    if b.unit != "images/s":
        return None
    per_image = run.raw_bytes_per_image(b.get("preset"), b.n)
    if per_image is None:  # no dataset records: the suite's own MB/s over images/s
        mbs, ips = b.get("MB/s"), b.get("images/s")
        if not isinstance(mbs, (int, float)) or not isinstance(ips, (int, float)) or ips <= 0:
            return None
        per_image = mbs * 1e6 / ips
    return b.rate * per_image / 1e6


def _patch(b: Bench, run: Run) -> str | None:
    shape = b.get("patch_shape")
    return "x".join(map(str, shape)) if isinstance(shape, list) and shape else None


def fmt_times(x: float) -> str:
    return f"{x:.3g}x"


def fmt_mb(x: float) -> str:
    return f"{x:,.1f}"


def _loader(b: Bench, run: Run) -> str | None:
    """``w0`` or ``w2-fork-persist``, as in the benchmark ids; None for other rows."""
    w = b.get("workers")
    if not isinstance(w, int):
        return None
    return "w0" if w == 0 else f"w{w}-{b.get('mp_context')}" + ("-persist" if b.get("persistent") else "")


COLUMNS: tuple[Column, ...] = (
    Column("name", "format", lambda b, r: b.label),
    Column("op", "op", lambda b, r: b.op, descriptive=True),
    Column("preset", "preset", lambda b, r: b.get("preset"), descriptive=True),
    Column("n", "n", lambda b, r: b.n, fmt_int),
    Column("cache", "cache", lambda b, r: b.get("cache"), descriptive=True),
    Column("loader", "loader", _loader, descriptive=True),
    Column("workers", "workers", lambda b, r: b.get("workers"), descriptive=True),
    Column("mp_context", "start method", lambda b, r: b.get("mp_context"), descriptive=True),
    Column("persistent", "persistent", lambda b, r: b.get("persistent"), descriptive=True),
    Column("batch_size", "batch", lambda b, r: b.get("batch_size"), descriptive=True),
    Column("unit", "unit", lambda b, r: _unit(b), descriptive=True),
    Column("patch", "patch", _patch, descriptive=True),
    Column("partial_reads", "partial reads", lambda b, r: b.get("partial_reads"), descriptive=True),
    Column("rate_median", "images/s", lambda b, r: b.rate, fmt_rate),
    Column("rate_iqr", "IQR", lambda b, r: b.rate_iqr, fmt_rate),
    Column("MB/s", "MB/s", _mb_per_s, fmt_rate),
    Column("bytes_per_image", "bytes/image", lambda b, r: b.bytes_per_image, fmt_int),
    Column("n_files", "files", lambda b, r: b.get("n_files"), fmt_int),
    Column("efficiency", "efficiency", lambda b, r: b.get("efficiency"), fmt_percent),
    Column("read_bytes_per_patch", "read/patch", lambda b, r: b.get("read_bytes_per_patch"), fmt_int),
    Column("amplification", "amplification", lambda b, r: b.get("amplification"), fmt_times),
    Column("cached_bytes_per_patch", "cached/patch", lambda b, r: b.get("cached_bytes_per_patch"), fmt_int),
    Column("cache_amplification", "cache amplification", lambda b, r: b.get("cache_amplification"), fmt_times),
    Column("peak_rss_mb", "peak RSS MB", lambda b, r: b.get("peak_rss_mb"), fmt_mb),
    Column("rss_growth_mb", "RSS growth MB", lambda b, r: b.get("rss_growth_mb"), fmt_mb),
    Column("image_mb_max", "largest image MB", lambda b, r: b.get("image_mb_max"), fmt_mb, descriptive=True),
    Column("bound", "bound", lambda b, r: None if b.is_bound else b.get("bound"), descriptive=True),
    Column("median_s", "median s", lambda b, r: b.median, fmt_seconds),
    Column("iqr_s", "IQR s", lambda b, r: b.iqr, fmt_seconds),
    Column("rounds", "rounds", lambda b, r: b.rounds, descriptive=True),
    Column("run", "run", lambda b, r: r.path.name, descriptive=True),
    Column("benchmark", "benchmark", lambda b, r: b.fullname),
)
#: Columns the markdown leaves out: the loader settings (the ``loader`` column sums them up),
#: the unit (in the header), the pytest node id and the page-residency estimate of patch
#: reads (CSV only).
_MD_HIDDEN = {"workers", "mp_context", "persistent", "unit", "benchmark", "cached_bytes_per_patch",
              "cache_amplification"}


def _sort_key(b: Bench, run: Run) -> tuple:
    def s(x):
        return "" if x is None else str(x)

    def i(x):
        return -1 if not isinstance(x, (int, float)) else x

    return (s(b.label), s(b.op), s(b.get("preset")), i(b.n), s(b.get("cache")), i(b.get("workers")),
            s(b.get("mp_context")), i(b.get("persistent")), s(run.path.name), b.fullname)


@dataclass
class Table:
    """The rows of one benchmark group, in display order, as column values."""

    group: str
    rows: list[dict[str, Any]]

    @property
    def unit(self) -> str:
        units = {r["unit"] for r in self.rows if r["unit"]}
        return units.pop() if len(units) == 1 else "items/s"

    def to_csv(self) -> str:
        """Every column at full precision; empty cells for missing values."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow([c.name for c in COLUMNS])
        for row in self.rows:
            w.writerow(["" if row[c.name] is None else _csv_cell(row[c.name]) for c in COLUMNS])
        return out.getvalue()

    def shown_columns(self) -> tuple[list[Column], dict[str, Any]]:
        """Markdown columns, and the descriptive values common to every row (for the caption)."""
        shown, common = [], {}
        for c in COLUMNS:
            values = [r[c.name] for r in self.rows]
            if c.name in _MD_HIDDEN or all(v is None for v in values):
                continue
            distinct = {repr(v) for v in values}
            if c.descriptive and len(distinct) == 1:
                if not (c.name == "op" and values[0] == self.group):  # the heading says it
                    common[c.header] = values[0]
            else:
                shown.append(c)
        return shown, common

    def caption(self) -> str:
        _, common = self.shown_columns()
        return ", ".join(f"{k} {v}" for k, v in common.items())

    def to_markdown(self) -> str:
        """A pipe table; rates are medians, headers say the unit."""
        shown, _ = self.shown_columns()
        headers = []
        for c in shown:
            h = c.header
            if c.name == "name":
                h = "bound" if self.group == "bound" else "format" if any(r["n"] is not None for r in self.rows) \
                    else "benchmark"
            elif c.name == "rate_median":
                h = f"{self.unit} (median)"
            elif c.name == "rate_iqr":
                h = f"{self.unit} IQR"
            headers.append(h)
        right = {"n", "rate_median", "rate_iqr", "MB/s", "bytes_per_image", "n_files", "efficiency",
                 "median_s", "iqr_s", "rounds", "workers", "batch_size", "read_bytes_per_patch", "amplification",
                 "peak_rss_mb", "rss_growth_mb", "image_mb_max"}
        lines = ["| " + " | ".join(headers) + " |",
                 "|" + "|".join("---:" if c.name in right else "---" for c in shown) + "|"]
        for row in self.rows:
            cells = ["" if row[c.name] is None else c.fmt(row[c.name]) for c in shown]
            lines.append("| " + " | ".join(_md_escape(x) for x in cells) + " |")
        return "\n".join(lines) + "\n"


def _csv_cell(x: Any) -> str:
    return repr(x) if isinstance(x, float) else str(x)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def build_tables(runs: Sequence[Run]) -> list[Table]:
    """One :class:`Table` per benchmark group over every run, groups in operation order."""
    by_group: dict[str, list[tuple[Bench, Run]]] = {}
    for run in runs:
        for b in run.benches:
            by_group.setdefault(b.group, []).append((b, run))
    multi = len(runs) > 1
    tables = []
    for group in sorted(by_group, key=op_order):
        pairs = sorted(by_group[group], key=lambda p: _sort_key(*p))
        rows = []
        for b, run in pairs:
            row = {c.name: c.value(b, run) for c in COLUMNS}
            if not multi:
                row["run"] = None
            rows.append(row)
        tables.append(Table(group, rows))
    return tables
