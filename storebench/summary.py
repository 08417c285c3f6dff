"""The one-line-per-dataset summary: what a reader choosing a format compares.

One row per format id x preset x n x cache state, across the operations of
training: ``scan``, ``random`` and ``batch`` images/s, a DataLoader epoch
(storebench's loader rows at 0 workers and at 2 persistent workers, the start
method being the run's first), the format's own loader (``native-loader`` rows
at 0 and 2 workers), the time to the first batch of the 2-worker loaders,
bytes on disk, and two efficiencies of the shuffled single reads: against the
format's own-library bound (``efficiency`` of the random row, paired rounds)
and against the physical reference ``pread`` (the random row's images/s over
the ``pread`` bound row's of the same run, preset and n).  Rates are medians
(``n / median round time``), as in the per-operation tables.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from .results import Bench, Run
from .tables import fmt_percent, fmt_rate

#: (column, header) in order; the rates are images/s.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("format", "format"), ("preset", "preset"), ("n", "n"), ("cache", "cache"),
    ("scan", "scan"), ("random", "random"), ("batch", "batch"),
    ("loader_w0", "loader w0"), ("loader_w2", "loader w2 persistent"),
    ("native_loader", "native loader"), ("native_w0", "native w0"), ("native_w2", "native w2"),
    ("ttfb_loader_w2_s", "first batch, loader w2 (s)"), ("ttfb_native_w2_s", "first batch, native w2 (s)"),
    ("mb_on_disk", "MB on disk"), ("random_vs_bound", "random vs own bound"),
    ("random_vs_pread", "random vs pread"),
)


def _slot(b: Bench) -> str | None:
    """Which summary column a format row fills, or None."""
    op = b.op
    if op in ("scan", "random", "batch"):
        return op
    workers = b.get("workers")
    if op == "loader":
        if workers == 0:
            return "loader_w0"
        if workers == 2 and b.get("persistent"):
            return "loader_w2"
    if op == "native-loader" and workers in (0, 2):
        return f"native_w{workers}"
    return None


def summary_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """The summary's rows (plain values, None where a run has no such row), sorted."""
    rows: dict[tuple, dict[str, Any]] = {}
    pread: dict[tuple, float] = {}
    contexts: dict[tuple, str | None] = {}
    for run in runs:
        for b in run.benches:
            if not b.is_storebench or b.rate is None:
                continue
            if b.is_bound:
                if b.label == "pread" and b.op == "random":
                    pread[(b.get("preset"), b.n)] = b.rate
                continue
            slot = _slot(b)
            if slot is None:
                continue
            key = (b.label, b.get("preset"), b.n, b.get("cache"))
            if slot.startswith("loader"):  # one start method: the first the run shows for this key
                ctx = contexts.setdefault((key, slot), b.get("mp_context"))
                if b.get("mp_context") != ctx:
                    continue
            row = rows.setdefault(key, {c: None for c, _ in COLUMNS} | {
                "format": key[0], "preset": key[1], "n": key[2], "cache": key[3]})
            row[slot] = b.rate
            size = b.get("bytes_on_disk")
            if isinstance(size, (int, float)):
                row["mb_on_disk"] = size / 1e6
            if slot == "random" and isinstance(b.get("efficiency"), (int, float)):
                row["random_vs_bound"] = b.get("efficiency")
            ttfb = b.get("time_to_first_batch_s")
            if slot == "loader_w2" and isinstance(ttfb, (int, float)):
                row["ttfb_loader_w2_s"] = ttfb
            if slot == "native_w2" and isinstance(ttfb, (int, float)):
                row["ttfb_native_w2_s"] = ttfb
            if slot.startswith("native") and isinstance(b.get("native_loader"), str):
                row["native_loader"] = b.get("native_loader")
    for (_fmt, preset, n, _cache), row in rows.items():
        ref = pread.get((preset, n))
        if row["random"] is not None and ref:
            row["random_vs_pread"] = row["random"] / ref
    return [rows[k] for k in sorted(rows, key=lambda k: (str(k[1]), k[2] or 0, str(k[3]), str(k[0])))]


def _cell(col: str, x: Any) -> str:
    if x is None:
        return ""
    if col in ("random_vs_bound", "random_vs_pread"):
        return fmt_percent(x)
    if col.startswith("ttfb"):
        return f"{x:.2f}"
    if col == "mb_on_disk":
        return f"{x:,.1f}"
    if isinstance(x, float):
        return fmt_rate(x)
    return str(x)


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A pipe table of ``rows``; columns empty on every row are left out."""
    shown = [(c, h) for c, h in COLUMNS if any(r[c] is not None for r in rows)]
    left = {"format", "preset", "cache", "native_loader"}
    lines = ["| " + " | ".join(h for _, h in shown) + " |",
             "|" + "|".join("---" if c in left else "---:" for c, _ in shown) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(c, r[c]).replace("|", "\\|") for c, _ in shown) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Every column at full precision."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c for c, _ in COLUMNS])
    for r in rows:
        w.writerow(["" if r[c] is None else repr(r[c]) if isinstance(r[c], float) else r[c] for c, _ in COLUMNS])
    return buf.getvalue()


# ---- the object-store table (``pytest bench --store s3`` rows)

#: (column, header) of the object-store table, one row per format, preset, n and read.
REMOTE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("format", "format"), ("preset", "preset"), ("n", "n"), ("read", "read"), ("reads", "reads"),
    ("get_requests_per_sample", "GET/sample"), ("bytes_per_sample", "bytes/sample"),
    ("range_get_fraction", "ranged"), ("read_amplification", "amplification"),
    ("time_to_first_sample_s", "first sample (s)"), ("rate", "loopback /s"), ("cpu_s", "CPU (s)"),
    ("projected_epoch_s", "projected epoch (s)"), ("projected_epoch_s_serial", "projected, 1 in flight (s)"),
)

REMOTE_NOTE = ("One row per format, preset, n and read from a local S3 endpoint (`pytest bench --store s3`): GET "
               "requests and body bytes per sample as the server counted them in a round (medians over rounds), "
               "the share of GETs that asked for a byte range, read amplification (bytes sent over the samples' "
               "or patches' pixel bytes), the time to the first sample of a new reader, images (patches) per "
               "second over loopback, the client's CPU time per round, and the latency model's epoch: requests "
               "x RTT / concurrency + bytes / bandwidth + CPU, at the RTT, bandwidth and concurrency in the row "
               "(and at one request in flight).")


def remote_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """The object-store table's rows: every format row whose op starts with ``s3-``."""
    out = []
    for run in runs:
        for b in run.benches:
            if not b.is_storebench or b.is_bound or not str(b.op).startswith("s3-"):
                continue
            row: dict[str, Any] = {c: b.get(c) for c, _ in REMOTE_COLUMNS}
            row.update(format=b.label, preset=b.get("preset"), n=b.n, read=str(b.op)[3:], reads=b.get("remote_reads"),
                       rate=b.rate)
            model = b.get("latency_model") or {}
            row["model"] = model
            out.append(row)
    order = {"scan": 0, "random": 1, "batch": 2, "patch": 3}
    return sorted(out, key=lambda r: (str(r["preset"]), r["n"] or 0, str(r["format"]), order.get(r["read"], 9)))


def _remote_cell(col: str, x: Any) -> str:
    if x is None:
        return ""
    if col == "range_get_fraction":
        return fmt_percent(x)
    if col in ("bytes_per_sample", "rate"):
        return f"{x:,.0f}"
    if col in ("get_requests_per_sample", "read_amplification"):
        return f"{x:.3g}"
    if isinstance(x, float):
        return f"{x:.3g}" if x < 100 else f"{x:,.0f}"
    return str(x)


def remote_markdown(rows: Sequence[dict[str, Any]]) -> str:
    models = {(m.get("rtt_ms"), m.get("bandwidth_mbps"), m.get("concurrency")) for r in rows if (m := r["model"])}
    head = ""
    if len(models) == 1:
        rtt, bw, c = next(iter(models))
        head = f"Latency model: {rtt:g} ms RTT, {bw:g} Mbit/s, {c} requests in flight.\n\n"
    left = {"format", "preset", "read", "reads"}
    lines = ["| " + " | ".join(h for _, h in REMOTE_COLUMNS) + " |",
             "|" + "|".join("---" if c in left else "---:" for c, _ in REMOTE_COLUMNS) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_remote_cell(c, r[c]).replace("|", "\\|") for c, _ in REMOTE_COLUMNS) + " |")
    return head + "\n".join(lines) + "\n"
