"""The report's figures, drawn with matplotlib's Agg renderer, byte for byte reproducible.

* ``throughput``: images/s against dataset size, log-log, one line per
  format, a panel per operation (write, scan, random, batch);
* ``read_write``: time to write and time to read (sequential scan) ``n``
  images, side by side, log-log (the layout of the Real Python
  "storing and reading images" figures);
* ``loader_workers``: DataLoader images/s against ``num_workers``, a panel
  per dataset size; dashed lines are persistent workers;
* ``disk_size``: bytes on disk per image, per format, with the raw pixel
  size marked.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

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
FIGURES = ("throughput", "read_write", "loader_workers", "disk_size")
IMAGE_FORMATS = ("png", "svg")
THROUGHPUT_OPS = ("write", "scan", "random", "batch")
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
    from matplotlib.ticker import FuncFormatter

    ax.autoscale_view()
    lo, hi = ax.get_ylim()
    few = lo > 0 and hi / lo < 100

    def minor(x, pos=None):
        if not few or x <= 0:
            return ""
        mantissa = round(x / 10 ** math.floor(math.log10(x)), 6)
        return _compact(x) if mantissa in (2, 5) else ""

    ax.yaxis.set_major_formatter(FuncFormatter(lambda x, pos=None: _compact(x)))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


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


# --------------------------------------------------------------------------- figures


def throughput(runs: Sequence[Run], styles: Styles):
    """images/s against n, log-log, a panel per operation; None without such rows."""
    groups = {op: format_rows(runs, op) for op in THROUGHPUT_OPS}
    groups = {op: rows for op, rows in groups.items() if rows}
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
    """Seconds to write and to scan n images, side by side, log-log; None without either."""
    panels = [(op, title, rows) for op, title in (("write", "Time to write n images"),
                                                  ("scan", "Time to read n images (scan)"))
              if (rows := format_rows(runs, op))]
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


DRAW = {"throughput": throughput, "read_write": read_write, "loader_workers": loader_workers,
        "disk_size": disk_size}


def _metadata(kind: str) -> dict:
    import matplotlib

    from . import __version__

    creator = f"storebench {__version__} (Matplotlib {matplotlib.__version__})"
    if kind == "svg":
        return {"Date": None, "Creator": creator}
    return {"Software": creator}


def write_figures(runs: Sequence[Run], out: Path, kinds: Sequence[str] = IMAGE_FORMATS) -> list[Path]:
    """Draw every figure the results allow into ``out`` as ``<name>.<kind>``; return the paths.

    Each file is drawn from a fresh figure: constrained layout refines the
    positions left by the previous save, so saving one figure twice (at two
    resolutions) would make the second file depend on the first.
    """
    if not kinds:
        return []
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("the figures need matplotlib: pip install 'storebench[plot]', "
                          "or pass --figures none") from err

    labels = [b.label for run in runs for b in run.benches if b.is_storebench and not b.is_bound]
    written = []
    with matplotlib.rc_context():
        matplotlib.rcdefaults()  # a user's matplotlibrc or style must not change the bytes
        matplotlib.rcParams.update(RC)  # type: ignore[arg-type]  # stubs want Literal rc keys
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
