"""The report's figures, drawn with matplotlib's Agg renderer, byte for byte reproducible.

* ``ranked_<op>`` (one per operation: scan, random, batch, loader, patch,
  write), the figure a reader looks at first: a horizontal bar per format
  of its images/s (patches/s) at the largest n, fastest on top, each bar
  labelled with its rate and its efficiency against its own bound; formats
  on their default options in the top panel, variants (any other options)
  below, on the same axis; cold and warm rounds as two bars per format.
  Loader rows: the largest ``num_workers`` run, persistent workers and the
  fork start where those were run (:func:`loader_pick`);
* ``throughput``: images/s against dataset size, log-log, one line per
  format, a panel per operation (write, scan, random, batch), drawn only
  for operations swept over three sizes or more;
* ``read_write``: time to write and time to read (sequential scan) ``n``
  images, side by side, log-log (the layout of the Real Python
  "storing and reading images" figures), also only for three sizes or more;
* ``loader_workers``: DataLoader images/s against ``num_workers``, a panel
  per dataset size; dashed lines are persistent workers;
* ``disk_size``: bytes on disk per image, per format, with the raw pixel
  size marked.

:func:`claims_figure` draws ``claims``: a row per claim of
:mod:`storebench.claims`, our ratio and its 95% interval on a log axis,
the notebook's figure, coloured by verdict.

Rates are medians (``n / median round time``), as in the tables.  A figure
whose operations are absent from the results is not drawn.  Presets and
cache states, when a run has several, get a row of panels each.

Reproducibility: every figure is drawn from Matplotlib's default style plus
:data:`RC` (fixed font, sizes and dpi, ``svg.hashsalt``), no pyplot state is
touched, and the files carry no date, so drawing the same results twice
gives identical PNG and SVG bytes (with the same Matplotlib version).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import cast

from .claims import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, ClaimResult, Outcome
from .results import Bench, Run

#: Style on top of Matplotlib's defaults; nothing here depends on the machine.
RC = {
    "font.family": "DejaVu Sans",  # ships with Matplotlib
    "font.size": 8,
    "axes.titlesize": 9,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "svg.fonttype": "path",  # text as paths: the SVG looks the same without the font
    "svg.hashsalt": "storebench",  # fixed ids in the SVG
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 7,
    "legend.frameon": False,
}
#: The operations with a ranked figure (``ranked_<op>``), in the order the report shows them.
RANKED_OPS = ("scan", "random", "batch", "loader", "patch", "write")
FIGURES = tuple(f"ranked_{op}" for op in RANKED_OPS) + ("throughput", "read_write", "loader_workers", "disk_size")
IMAGE_FORMATS = ("png", "svg")
THROUGHPUT_OPS = ("write", "scan", "random", "batch")
#: The dataset sizes a sweep needs for a line against n (two points say nothing a bar does not).
MIN_SWEEP = 3
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
_CONTEXT_MARKERS = {"fork": "o", "spawn": "s", "forkserver": "^"}
_CACHE_STYLES = {"warm": "-", "cold": "--"}


# --------------------------------------------------------------------------- data


class Styles:
    """A fixed colour and marker per format id, the same in every figure."""

    def __init__(self, labels: Sequence[str]):
        from matplotlib import colormaps

        cmap = colormaps["tab20"]
        hues = [cmap(i) for i in range(0, 20, 2)] + [cmap(i) for i in range(1, 20, 2)]  # dark, then light
        self._style = {lab: (hues[i % 20], _MARKERS[i % len(_MARKERS)])
                       for i, lab in enumerate(sorted(set(labels)))}

    def color(self, label: str):
        return self._style[label][0]

    def marker(self, label: str) -> str:
        return self._style[label][1]


def format_rows(runs: Sequence[Run], group: str) -> list[Bench]:
    """The timed format rows (not bounds) of ``group``; a later run replaces an equal earlier row."""
    rows: dict[tuple, Bench] = {}
    for run in runs:
        for b in run.benches:
            if b.group == group and b.is_storebench and not b.is_bound and b.rate is not None:
                key = (b.label, b.get("preset"), b.get("cache"), b.n, b.get("workers"),
                       b.get("mp_context"), b.get("persistent"))
                rows[key] = b
    return list(rows.values())


def _facets(rows: Sequence[Bench]) -> list[tuple]:
    """The distinct (preset, cache) pairs of ``rows``, sorted."""
    return sorted({(b.get("preset") or "", b.get("cache") or "") for b in rows})


def _size_label(n: int) -> str:
    for div, suffix in ((1_000_000, "M"), (1000, "k")):
        if n >= div and n % div == 0:
            return f"{n // div}{suffix}"
    return str(n)


# --------------------------------------------------------------------------- drawing helpers


def _figure(nrows: int, ncols: int, width: float, height: float):
    """A constrained-layout Figure on an Agg canvas, and its axes grid (always 2-D)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _log_sizes(ax, sizes: Sequence[int]) -> None:
    """Log x axis with one tick per dataset size."""
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(set(sizes)), [_size_label(n) for n in sorted(set(sizes))])
    ax.xaxis.set_minor_locator(NullLocator())
    if len(set(sizes)) == 1:  # one size: a decade around it, not an empty axis
        n = sizes[0]
        ax.set_xlim(n / 3, n * 3)


def _compact(x: float) -> str:
    """``2k``, ``150k``, ``1.5M``, ``0.002``: short tick labels."""
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:g}{suffix}"
    return f"{x:g}"


def _log_y_labels(ax) -> None:
    """Compact labels on a log y axis; under 2 decades, 2 and 5 in between are labelled too."""
    ax.autoscale_view()
    _log_labels(ax.yaxis, *ax.get_ylim())


def _log_labels(axis, lo: float, hi: float) -> None:
    """Compact labels on the log ``axis`` spanning ``lo`` to ``hi``."""
    from matplotlib.ticker import FuncFormatter

    few = lo > 0 and hi / lo < 100

    def minor(x, pos=None):
        if not few or x <= 0:
            return ""
        mantissa = round(x / 10 ** math.floor(math.log10(x)), 6)
        return _compact(x) if mantissa in (2, 5) else ""

    axis.set_major_formatter(FuncFormatter(lambda x, pos=None: _compact(x)))
    axis.set_minor_formatter(FuncFormatter(minor))


def _format_legend(fig, styles: Styles, labels: Sequence[str], extra: Sequence = ()) -> None:
    """One legend below the panels: a line per format, then ``extra`` style handles."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=styles.color(lab), marker=styles.marker(lab), label=lab)
               for lab in sorted(set(labels))]
    _legend(fig, handles + list(extra))


def _legend(fig, handles: Sequence) -> None:
    """A legend below the panels, as many columns as the figure's width allows."""
    if handles:
        per_row = max(1, int(fig.get_figwidth() / 1.6))
        fig.legend(handles=handles, loc="outside lower center", ncols=min(per_row, len(handles)))


def _style_handles(entries: Sequence[tuple[str, dict]]):
    from matplotlib.lines import Line2D

    return [Line2D([], [], label=text, **{"color": "0.3", **kw}) for text, kw in entries]


def _cache_handles(rows: Sequence[Bench]):
    caches = sorted({b.get("cache") for b in rows if b.get("cache") in _CACHE_STYLES})
    if len(caches) < 2:
        return []
    return _style_handles([(f"{c} cache", {"linestyle": _CACHE_STYLES[c]}) for c in caches])


def _lines(ax, rows: Sequence[Bench], styles: Styles, y: Callable[[Bench], float | None]) -> None:
    """One line per (format, cache) through ``y`` against n."""
    lines: dict[tuple, list[Bench]] = {}
    for b in rows:
        lines.setdefault((b.label, b.get("cache") or ""), []).append(b)
    for (label, cache), pts in sorted(lines.items()):
        pts.sort(key=lambda b: cast(int, b.n))
        ax.plot([b.n for b in pts], [y(b) for b in pts], color=styles.color(label),
                marker=styles.marker(label), markersize=4, linewidth=1.2,
                linestyle=_CACHE_STYLES.get(cache, "-"))


def _facet_title(op: str, preset: str, cache: str, facets: Sequence[tuple]) -> str:
    parts = [op]
    if len({p for p, _ in facets}) > 1:
        parts.append(preset)
    if cache and len({c for _, c in facets}) > 1:
        parts.append(f"{cache} cache")
    return ", ".join(p for p in parts if p)


# --------------------------------------------------------------------------- ranked bars


#: Bar colours by cache state; rows without one (write) get the neutral colour.
_CACHE_COLORS = {"warm": "#d9822b", "cold": "#3b75af", "": "#5f7f99"}
_CACHE_ORDER = ("warm", "cold", "")
_CONTEXT_ORDER = ("fork", "forkserver", "spawn")  # the loader row shown: fork where it was run
_OP_TITLES = {"scan": "sequential scan", "random": "shuffled single reads", "batch": "read_batch",
              "loader": "DataLoader epoch", "patch": "patch reads (read_region)", "write": "writing n images"}


def is_default(label: str) -> bool:
    """Whether the format id ``label`` is a format on its default options (no options in brackets)."""
    return "[" not in label


def _loader_rank(b: Bench) -> tuple:
    workers, ctx = b.get("workers"), b.get("mp_context")
    pref = _CONTEXT_ORDER.index(ctx) if ctx in _CONTEXT_ORDER else len(_CONTEXT_ORDER)
    return (workers if isinstance(workers, int) else -1, bool(b.get("persistent")), -pref, str(ctx))


def loader_pick(rows: Sequence[Bench]) -> list[Bench]:
    """The loader row the ranked figure shows per (format, preset, n, cache): the largest
    ``num_workers``, then persistent workers, then the fork start method, where those were run."""
    best: dict[tuple, Bench] = {}
    for b in rows:
        key = (b.label, b.get("preset") or "", b.n, b.get("cache") or "")
        if key not in best or _loader_rank(b) > _loader_rank(best[key]):
            best[key] = b
    return list(best.values())


def ranked_rows(runs: Sequence[Run], op: str) -> dict[str, list[Bench]]:
    """Per preset, the rows of ``op``'s ranked figure: each format at its largest n, a row per cache state."""
    rows = format_rows(runs, op)
    if op == "loader":
        rows = loader_pick([b for b in rows if isinstance(b.get("workers"), int)])
    largest: dict[tuple, int] = {}
    for b in rows:
        key = (b.get("preset") or "", b.label)
        largest[key] = max(largest.get(key, 0), cast(int, b.n))
    out: dict[str, list[Bench]] = {}
    for b in rows:
        preset = b.get("preset") or ""
        if b.n == largest[(preset, b.label)]:
            out.setdefault(preset, []).append(b)
    return out


def _rate_text(x: float) -> str:
    """Three significant figures, compact: ``820k``, ``51.1k``, ``278``, ``1.5M``."""
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def _loader_setting(rows: Sequence[Bench]) -> str:
    """The loader setting the figure shows, in words (one line for the title)."""
    settings = {(b.get("workers"), b.get("mp_context"), bool(b.get("persistent"))) for b in rows}
    if len(settings) > 1:
        return "each format's largest num_workers (persistent workers, fork start where run)"
    workers, ctx, persistent = settings.pop()
    if not workers:
        return f"num_workers = {workers}"
    return (f"num_workers = {workers}" + (f", {ctx} start" if ctx else "")
            + (", persistent workers" if persistent else ", workers restart each epoch"))


def _bar_label(label: str, by_cache: dict[str, Bench], top_n: int) -> str:
    """The format id, and its n where a format lacks the panel's largest n (all its bars share one)."""
    n = cast(int, next(iter(by_cache.values())).n)
    return label if n == top_n else f"{label} (n = {_size_label(n)})"


def ranked(runs: Sequence[Run], styles: Styles, op: str):
    """Horizontal bars of ``op``'s rate per format at the largest n, fastest on top; None without rows.

    Per preset a panel of formats on their default options, then a panel of
    variants; every panel on the same log axis.  Each bar is labelled with its
    rate and, where the row has one, its efficiency against its own bound.
    With cold and warm rows, each format has a bar per cache state.
    """
    per_preset = ranked_rows(runs, op)
    if not per_preset:
        return None
    everything = [b for rows in per_preset.values() for b in rows]
    caches = [c for c in _CACHE_ORDER if any((b.get("cache") or "") == c for b in everything)]
    several_presets = len(per_preset) > 1
    panels = []  # (title, largest n, [(label, {cache: row})])
    for preset in sorted(per_preset):
        rows = per_preset[preset]
        top_n = max(cast(int, b.n) for b in rows)
        for default in (True, False):
            bars: dict[str, dict[str, Bench]] = {}
            for b in rows:
                if is_default(b.label) == default:
                    bars.setdefault(b.label, {})[b.get("cache") or ""] = b
            if not bars:
                continue
            order = sorted(bars, key=lambda lab: (-max(cast(float, x.rate) for x in bars[lab].values()), lab))
            what = "default options" if default else "variants (other options)"
            title = (f"{preset}, " if several_presets and preset else "") + f"{what}, n = {_size_label(top_n)}"
            panels.append((title, top_n, [(lab, bars[lab]) for lab in order]))
    slot = 0.34 if len(caches) > 1 else 0.2  # inches per format
    heights = [slot * len(items) + 0.45 for _, _, items in panels]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, sum(heights) + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": heights})
    rates = [cast(float, b.rate) for b in everything]
    left = 10 ** math.floor(math.log10(min(rates) / 1.5))
    span = math.log10(max(rates) / left)
    right = left * 10 ** (span / 0.8)  # the right fifth holds the labels of the fastest bars
    width = 0.8 / len(caches)
    unit = "patches/s" if op == "patch" else "images/s"
    for ax, (title, top_n, items) in zip(axes[:, 0], panels):
        for i, (_label, by_cache) in enumerate(items):
            for j, cache in enumerate(caches):
                row = by_cache.get(cache)
                if row is None:
                    continue
                y = i + (j - (len(caches) - 1) / 2) * width
                rate = cast(float, row.rate)
                ax.barh(y, rate - left, left=left, height=width * 0.9, color=_CACHE_COLORS[cache])
                eff = row.get("efficiency")
                text = _rate_text(rate) + (f" · {eff:.0%}" if isinstance(eff, (int, float)) else "")
                ax.annotate(text, (rate, y), xytext=(2, 0), textcoords="offset points", va="center",
                            fontsize=6)
        ax.set_xscale("log")
        ax.set_xlim(left, right)
        _log_labels(ax.xaxis, left, right)
        ax.set_ylim(len(items) - 0.5, -0.5)  # fastest on top
        ax.set_yticks(range(len(items)), [_bar_label(lab, bc, top_n) for lab, bc in items])
        ax.tick_params(axis="y", length=0)
        ax.grid(axis="y", visible=False)
        ax.set_title(title, loc="left")
    with_eff = any(isinstance(b.get("efficiency"), (int, float)) for b in everything)
    axes[-1][0].set_xlabel(f"{unit}, median (log scale)\nbar label: rate"
                           + (" · efficiency against the format's own bound" if with_eff else ""))
    head = f"{op} ({_OP_TITLES[op]}): {unit} at the largest n, fastest first"
    setting = [_loader_setting(everything)] if op == "loader" else []
    if len(caches) == 1 and caches[0]:
        setting.append(f"{caches[0]} cache")
    fig.suptitle(head + ("\n" + ", ".join(setting) if setting else ""))
    if len(caches) > 1:
        from matplotlib.patches import Patch

        _legend(fig, [Patch(color=_CACHE_COLORS[c], label=f"{c} cache" if c else "no cache state")
                      for c in caches])
    return fig


# --------------------------------------------------------------------------- figures


def _swept(rows: Sequence[Bench]) -> bool:
    """Whether ``rows`` span :data:`MIN_SWEEP` dataset sizes or more: enough for a line against n."""
    return len({b.n for b in rows}) >= MIN_SWEEP


def throughput(runs: Sequence[Run], styles: Styles):
    """images/s against n, log-log, a panel per operation swept over three sizes or more; else None."""
    groups = {op: format_rows(runs, op) for op in THROUGHPUT_OPS}
    groups = {op: rows for op, rows in groups.items() if _swept(rows)}
    if not groups:
        return None
    everything = [b for rows in groups.values() for b in rows]
    presets = sorted({b.get("preset") or "" for b in everything})
    fig, axes = _figure(len(presets), len(groups), 2.9, 2.6)
    for i, preset in enumerate(presets):
        for j, (op, rows) in enumerate(groups.items()):
            ax = axes[i][j]
            mine = [b for b in rows if (b.get("preset") or "") == preset]
            _lines(ax, mine, styles, lambda b: b.rate)
            _log_sizes(ax, [cast(int, b.n) for b in rows])
            _log_y_labels(ax)
            ax.set_title(op if len(presets) == 1 else f"{op}, {preset}")
            ax.set_xlabel("dataset size n")
            if j == 0:
                ax.set_ylabel("images/s (median)")
    fig.suptitle("Throughput against dataset size")
    _format_legend(fig, styles, [b.label for b in everything], _cache_handles(everything))
    return fig


def read_write(runs: Sequence[Run], styles: Styles):
    """Seconds to write and to scan n images, side by side, log-log; None without either swept over
    three sizes or more."""
    panels = [(op, title, rows) for op, title in (("write", "Time to write n images"),
                                                  ("scan", "Time to read n images (scan)"))
              if _swept(rows := format_rows(runs, op))]
    if not panels:
        return None
    everything = [b for _, _, rows in panels for b in rows]
    presets = sorted({b.get("preset") or "" for b in everything})
    fig, axes = _figure(len(presets), len(panels), 3.4, 2.8)
    for i, preset in enumerate(presets):
        for j, (_op, title, rows) in enumerate(panels):
            ax = axes[i][j]
            _lines(ax, [b for b in rows if (b.get("preset") or "") == preset], styles, lambda b: b.median)
            _log_sizes(ax, [cast(int, b.n) for b in rows])
            _log_y_labels(ax)
            ax.set_title(title if len(presets) == 1 else f"{title}, {preset}")
            ax.set_xlabel("dataset size n")
            ax.set_ylabel("seconds (median)")
    _format_legend(fig, styles, [b.label for b in everything], _cache_handles(everything))
    return fig


def loader_workers(runs: Sequence[Run], styles: Styles):
    """DataLoader images/s against num_workers, a panel per format; None without loader rows.

    In each panel a line per dataset size (colour), start method (marker) and
    persistence (dashed: persistent workers), each starting from the size's
    ``num_workers=0`` point.
    """
    rows = [b for b in format_rows(runs, "loader") if isinstance(b.get("workers"), int)]
    if not rows:
        return None
    facets = _facets(rows)
    panels = sorted({(b.label, b.get("preset") or "", b.get("cache") or "") for b in rows})
    sizes = sorted({cast(int, b.n) for b in rows})
    workers = sorted({b.get("workers") for b in rows})
    ncols = min(5, len(panels))
    fig, axes = _figure(math.ceil(len(panels) / ncols), ncols, 2.3, 2.0)
    for k, (label, preset, cache) in enumerate(panels):
        ax = axes[k // ncols][k % ncols]
        mine = [b for b in rows if (b.label, b.get("preset") or "", b.get("cache") or "") == (label, preset, cache)]
        _worker_lines(ax, mine, sizes)
        ax.set_yscale("log")
        _log_y_labels(ax)
        ax.set_xticks(workers)
        ax.set_title(_facet_title(label, preset, cache, facets))
        if k % ncols == 0:
            ax.set_ylabel("images/s (median)")
        if k >= len(panels) - ncols:
            ax.set_xlabel("num_workers")
    for k in range(len(panels), axes.size):  # the unused end of the last row
        axes[k // ncols][k % ncols].set_visible(False)
    entries = [(f"n = {_size_label(n)}", {"color": _size_color(i, len(sizes))}) for i, n in enumerate(sizes)]
    contexts = sorted({b.get("mp_context") for b in rows if b.get("mp_context")})
    entries += [(f"{c} start", {"marker": _CONTEXT_MARKERS.get(c, "o"), "linestyle": "none"}) for c in contexts]
    if any(b.get("persistent") for b in rows):
        entries += [("workers restart each epoch", {"linestyle": "-"}),
                    ("persistent workers", {"linestyle": "--"})]
    fig.suptitle("DataLoader worker scaling (one shuffled epoch, batched fetch)")
    _legend(fig, _style_handles(entries))
    return fig


def _size_color(i: int, k: int):
    from matplotlib import colormaps

    return colormaps["viridis"](0.85 * i / max(1, k - 1))


def _worker_lines(ax, rows: Sequence[Bench], sizes: Sequence[int]) -> None:
    """A line per (size, start method, persistence), starting from that size's w0 point."""
    zero = {cast(int, b.n): b for b in rows if b.get("workers") == 0}
    lines: dict[tuple, list[Bench]] = {}
    for b in rows:
        if b.get("workers"):
            lines.setdefault((b.n, b.get("mp_context") or "", bool(b.get("persistent"))), []).append(b)
    color = {n: _size_color(i, len(sizes)) for i, n in enumerate(sizes)}
    for n in sorted(zero.keys() - {key[0] for key in lines}):  # sizes with w0 only: a point
        ax.plot([0], [zero[n].rate], color=color[n], marker="o", markersize=4)
    for (n, ctx, persistent), pts in sorted(lines.items()):
        pts = ([zero[n]] if n in zero else []) + sorted(pts, key=lambda b: b.get("workers"))
        ax.plot([b.get("workers") for b in pts], [b.rate for b in pts], color=color[n],
                marker=_CONTEXT_MARKERS.get(ctx, "o"), markersize=4, linewidth=1.2,
                linestyle="--" if persistent else "-")


def disk_size(runs: Sequence[Run], styles: Styles):
    """Bytes on disk per image per format (largest n), raw pixel size marked; None without sizes."""
    best: dict[tuple, tuple[Bench, Run]] = {}
    for run in runs:
        for b in run.benches:
            if b.is_storebench and not b.is_bound and b.bytes_per_image is not None:
                key = (b.get("preset") or "", b.label)
                old = best.get(key)
                # the largest n; at equal n, write rows (the size the write produced) win
                rank = (b.n, b.group == "write")
                if old is None or rank >= (old[0].n, old[0].group == "write"):
                    best[key] = (b, run)
    if not best:
        return None
    presets = sorted({p for p, _ in best})
    height = max(1.6, 0.22 * max(sum(1 for p, _ in best if p == q) for q in presets) + 0.8)
    fig, axes = _figure(len(presets), 1, 6.0, height)
    for i, preset in enumerate(presets):
        ax = axes[i][0]
        items = sorted(((b.bytes_per_image, b.label, b, run) for (p, _), (b, run) in best.items()
                        if p == preset), key=lambda t: (t[0], t[1]))
        ys = range(len(items))
        ax.barh(ys, [t[0] for t in items], color=[styles.color(t[1]) for t in items], height=0.7)
        same_n = len({t[2].n for t in items}) == 1
        ax.set_yticks(list(ys), [t[1] if same_n else f"{t[1]} (n={_size_label(cast(int, t[2].n))})" for t in items])
        for y, (size, *_rest) in zip(ys, items):
            ax.annotate(f"{size:,.0f}", (size, y), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=6)
        raw = items[-1][3].raw_bytes_per_image(preset or None, items[-1][2].n)
        if raw:
            ax.axvline(raw, color="0.3", linestyle="--", linewidth=1)
            ax.annotate("raw pixels", (raw, len(items) - 0.5), xytext=(3, 0), textcoords="offset points",
                        fontsize=6, color="0.3")
        ax.set_xlabel("bytes on disk per image")
        ax.grid(axis="y", visible=False)
        ax.set_title("Bytes on disk per image" + (f", {preset}" if preset else "")
                     + (f", n = {_size_label(cast(int, items[0][2].n))}" if same_n else ""))
    return fig


DRAW: dict[str, Callable] = {
    **{f"ranked_{op}": partial(ranked, op=op) for op in RANKED_OPS},
    "throughput": throughput, "read_write": read_write, "loader_workers": loader_workers, "disk_size": disk_size,
}


# --------------------------------------------------------------------------- claims


_VERDICT_COLORS = {HOLDS: "#2e8b3e", FAILS: "#c0392b", INCONCLUSIVE: "0.55", NOT_MEASURED: "0.55"}
_DEPENDS_COLOR = "#e08a1e"
_CLAIM_LABEL = 60  # characters of "id: statement" on a row
_ROW_TEXT = 62  # characters of a row's text (not measured, correctness)


def verdict_color(verdict: str):
    """Green for holds, red for does not hold, grey for inconclusive and not measured, orange for depends."""
    if verdict.startswith("depends"):
        return _DEPENDS_COLOR
    return _VERDICT_COLORS.get(verdict, "0.3")


def _truncate(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"


def _plotted(r: ClaimResult) -> list[Outcome]:
    """The outcomes of ``r`` that have a marker: measured, with a positive finite ratio."""
    return [o for o in r.measured if o.ratio is not None and math.isfinite(o.ratio) and o.ratio > 0]


def _setting_labels(points: Sequence[Outcome]) -> list[str]:
    """A short label per outcome: the settings that differ between them (else the whole setting)."""
    keys = [k for k in dict.fromkeys(k for o in points for k in o.setting)
            if len({repr(o.setting.get(k)) for o in points}) > 1]
    if not keys:
        return [o.setting_text for o in points]
    return [", ".join(f"{k} {o.setting.get(k)}" for k in keys) for o in points]


def _claim_range(results: Sequence[ClaimResult]) -> tuple[float, float]:
    """The x range: 1, and every ratio, interval end, notebook figure, limit and band of a row with markers."""
    xs = [1.0]
    for r in results:
        c, points = r.claim, _plotted(r)
        if not points:  # a row of text: nothing on the axis
            continue
        for o in points:
            xs += [x for x in (o.ratio, o.lo, o.hi) if x is not None and math.isfinite(x) and x > 0]
        xs += [x for x in (c.notebook_ratio, c.limit) if x is not None and x > 0]
        if c.kind == "similar":
            xs += [1 / c.margin, c.margin]
    lo, hi = math.log10(min(xs) / 1.5), math.log10(max(xs) * 1.5)
    if hi - lo < 1:  # at least a decade
        mid = (hi + lo) / 2
        lo, hi = mid - 0.5, mid + 0.5
    return 10 ** lo, 10 ** (lo + (hi - lo) / 0.8)  # the right fifth holds the setting labels


def _claims(results: Sequence[ClaimResult]):
    """The claims figure: a row per claim, top to bottom in the order of ``results``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    units = [max(1.0, 0.42 * len(_plotted(r))) for r in results]  # row heights, in rows
    total = sum(units)
    fig = Figure(figsize=(8.0, 0.3 * total + 1.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x_lo, x_hi = _claim_range(results)
    ax.set_xscale("log")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(total, 0)
    ax.axvline(1, color="0.2", linewidth=0.8)
    seen: set[str] = set()  # legend entries this figure needs
    top, centres = 0.0, []
    for r, u in zip(results, units):
        c, y, half = r.claim, top + u / 2, u / 2
        centres.append(y)
        if top > 0:
            ax.axhline(top, color="0.88", linewidth=0.5)
        points = _plotted(r)
        if c.kind == "similar" and points:  # band, limit and notebook figure: not on a row of text
            ax.fill_betweenx([y - 0.8 * half, y + 0.8 * half], 1 / c.margin, c.margin, color="0.9", linewidth=0)
            seen.add("band")
        if c.limit is not None and c.kind == "at-most" and points:
            ax.plot([c.limit, c.limit], [y - 0.8 * half, y + 0.8 * half], color="0.2", linestyle=":", linewidth=1.2)
            seen.add("limit")
        if c.notebook_ratio is not None and c.notebook_ratio > 0 and points:
            ax.plot([c.notebook_ratio], [y], marker="D", markersize=6, markerfacecolor="none",
                    markeredgecolor="0.15", linestyle="none")
            seen.add("notebook")
        labels = _setting_labels(points) if len(points) > 1 else [""] * len(points)
        for k, (o, label) in enumerate(zip(points, labels)):
            yk = y + (k - (len(points) - 1) / 2) * 0.4
            ratio = cast(float, o.ratio)
            color = verdict_color(o.verdict)
            interval = o.lo is not None and o.hi is not None and o.lo < o.hi
            xerr = [[ratio - cast(float, o.lo)], [cast(float, o.hi) - ratio]] if interval else None
            ax.errorbar([ratio], [yk], xerr=xerr, fmt="o", color=color, markersize=4, capsize=2, elinewidth=1)
            seen.add(o.verdict)
            if label:
                ax.annotate(label, (cast(float, o.hi) if interval else ratio, yk), xytext=(4, 0),
                            textcoords="offset points", va="center", fontsize=5.5, color="0.3")
        text = ""
        if c.kind == "correct" and r.measured:
            o = r.measured[0]
            text = f"correctness test: {r.verdict}" + (f" ({o.why})" if o.why else "")
        elif r.verdict == NOT_MEASURED:
            text = f"not measured: {r.why}" if r.why else "not measured"
        if text:  # from the left edge: no marker on this row to collide with
            ax.annotate(_truncate(text, _ROW_TEXT), (0.01, y), xycoords=("axes fraction", "data"), va="center",
                        fontsize=6, color=verdict_color(r.verdict), style="italic" if not r.measured else "normal",
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
        ax.annotate(_truncate(r.verdict, 24), (1.01, y), xycoords=("axes fraction", "data"), va="center",
                    fontsize=7, color=verdict_color(r.verdict), annotation_clip=False)
        top += u
    ax.set_yticks(centres, [_truncate(f"{r.claim.id}: {r.claim.statement}", _CLAIM_LABEL) for r in results])
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="y", visible=False)
    _log_labels(ax.xaxis, x_lo, x_hi)
    ax.set_xlabel("our ratio A / B: median, bootstrap 95% interval, log scale\n"
                  "> 1: A faster (or larger); at-most claims: the quantity itself")
    fig.suptitle("The notebooks' claims, measured here (verdict on the right)")
    entries = [(v, f"{v} (a setting)") for v in (HOLDS, FAILS, INCONCLUSIVE) if v in seen]
    handles: list = [Line2D([], [], color=verdict_color(v), marker="o", markersize=4, linestyle="none", label=text)
                     for v, text in entries]
    if any(r.verdict.startswith("depends") for r in results):
        handles.append(Patch(color=_DEPENDS_COLOR, label="depends on a setting"))
    if "notebook" in seen:
        handles.append(Line2D([], [], marker="D", markerfacecolor="none", markeredgecolor="0.15",
                              linestyle="none", label="the notebook's figure"))
    if "limit" in seen:
        handles.append(Line2D([], [], color="0.2", linestyle=":", label="limit of an at-most claim"))
    if "band" in seen:
        handles.append(Patch(color="0.9", label="band of a 'similar' claim"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)))
    return fig


def claims_figure(results: Sequence[ClaimResult], out: Path, kinds: Sequence[str] = IMAGE_FORMATS) -> list[Path]:
    """Draw the claims figure of ``results`` (:func:`storebench.claims.evaluate`) into ``out`` as
    ``claims.<kind>``; return the paths (none without results or kinds).

    A row per claim, in the order given: our ratio per setting with its
    bootstrap 95% interval on a log axis (several settings: a marker each,
    labelled with what differs between them), a line at 1, the notebook's own
    figure as a hollow diamond, an at-most claim's limit dotted, a similar
    claim's band shaded; markers coloured by the setting's verdict and the
    claim's verdict on the right (orange where it depends on a setting).  A
    correctness claim shows its recorded outcome as text, a claim not measured
    says so and why.
    """
    if not kinds or not results:
        return []
    written = []
    with _drawing():
        for kind in kinds:
            fig = _claims(results)
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"claims.{kind}"
            fig.savefig(path, format=kind, metadata=_metadata(kind))
            written.append(path)
    return written


def _metadata(kind: str) -> dict:
    import matplotlib

    from . import __version__

    creator = f"storebench {__version__} (Matplotlib {matplotlib.__version__})"
    if kind == "svg":
        return {"Date": None, "Creator": creator}
    return {"Software": creator}


@contextmanager
def _drawing() -> Iterator[None]:
    """Matplotlib's defaults plus :data:`RC`, whatever the user's matplotlibrc or style says."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("the figures need matplotlib: pip install 'storebench[plot]', "
                          "or pass --figures none") from err

    with matplotlib.rc_context():
        matplotlib.rcdefaults()  # a user's matplotlibrc or style must not change the bytes
        matplotlib.rcParams.update(RC)  # type: ignore[arg-type]  # stubs want Literal rc keys
        yield


def write_figures(runs: Sequence[Run], out: Path, kinds: Sequence[str] = IMAGE_FORMATS) -> list[Path]:
    """Draw every figure the results allow into ``out`` as ``<name>.<kind>``; return the paths,
    in :data:`FIGURES` order (the ranked figures first).

    Each file is drawn from a fresh figure: constrained layout refines the
    positions left by the previous save, so saving one figure twice (at two
    resolutions) would make the second file depend on the first.
    """
    if not kinds:
        return []
    labels = [b.label for run in runs for b in run.benches if b.is_storebench and not b.is_bound]
    written = []
    with _drawing():
        styles = Styles(labels)
        for name in FIGURES:
            for kind in kinds:
                fig = DRAW[name](runs, styles)
                if fig is None:
                    break
                out.mkdir(parents=True, exist_ok=True)
                path = out / f"{name}.{kind}"
                fig.savefig(path, format=kind, metadata=_metadata(kind))
                written.append(path)
    return written
