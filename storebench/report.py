"""``storebench report``: tables and figures from result JSON files.

Layout of the output directory::

    report.md                 the ranked figures first, then every table, the other figures,
                              where the numbers come from
    tables/<group>.md         one table per operation (write, open, scan, ...)
    tables/<group>.csv        the same rows, every column, full precision
    figures/<name>.png|svg    see :mod:`storebench.plots`

Everything written is a function of the input files only (no dates, no
paths of this machine), so rerunning the report gives identical bytes.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from . import summary
from .plots import IMAGE_FORMATS, write_figures
from .results import ForeignResultsWarning, Run, foreign_message
from .tables import Table, build_tables

NOTE = ("Rates are medians over the timed rounds (n images / median round time); the IQR column is "
        "the interquartile range of that rate. MB/s counts raw pixel bytes. bytes/image and files "
        "describe the dataset on disk. efficiency is the suite's ratio of a format's images/s to "
        "its bound's (named in the bound column), both from their fastest rounds, timed "
        "interleaved in the same run. Patch rows count patches/s and MB/s of patch pixels, against "
        "patch-gather (the same patches copied out of images in memory); read/patch is what a cold "
        "round read from storage per patch (/proc/self/io), amplification that over the patch's "
        "pixel bytes, and peak RSS the largest of a round.")


RANKED_PREFIX = "ranked_"
SUMMARY_NOTE = ("One row per format, preset, size and cache state (`summary.csv` has every digit): median images/s of "
                "scans, shuffled single reads, batches, storebench's DataLoader (0 workers; 2 persistent workers) and "
                "the format's own loader (0 and 2 workers), seconds to the first batch of the 2-worker loaders, "
                "and the shuffled single reads against the format's own-library bound and against `pread` "
                "(one `os.pread` per record from one flat file) of the same run.")
RANKED_NOTE = ("One figure per operation: a bar per format of its median images/s (patches/s for patch reads) "
               "at the largest n it was run at (marked beside the id where that is smaller than the panel's), "
               "fastest on top, on a log axis. Formats on their default options are in the top panel, variants "
               "(any other options) below, on the same axis. Each bar is labelled with its rate and its "
               "efficiency against its own bound (the bound column of the tables). Where cold and warm rounds "
               "were both run, each format has a bar per cache state. DataLoader bars are the largest "
               "num_workers run, with persistent workers and the fork start method where those were run "
               "(the figure's title names the setting).")


def describe_run(run: Run) -> str:
    """One markdown line: the file, storebench version and commit, date, machine."""
    sb = run.storebench or {}
    parts = [f"`{run.path.name}`"]
    if sb.get("version"):
        commit = sb.get("commit") or run.commit_info.get("id")
        dirty = " (uncommitted changes)" if sb.get("dirty") else ""
        parts.append(f"storebench {sb['version']}" + (f" at {commit[:10]}{dirty}" if commit else ""))
    if run.datetime:
        parts.append(str(run.datetime)[:19].replace("T", " "))
    mi = run.machine_info
    cpu = (mi.get("cpu") or {}).get("brand_raw") if isinstance(mi.get("cpu"), dict) else None
    sbm = cast(dict, mi.get("storebench")) if isinstance(mi.get("storebench"), dict) else {}
    machine = [x for x in (cpu, sbm.get("cpu_count") and f"{sbm['cpu_count']} CPUs",
                           sbm.get("ram_bytes") and f"{sbm['ram_bytes'] / 2**30:.0f} GiB RAM",
                           sbm.get("data_dir_fs") and f"data dir on {sbm['data_dir_fs']}",
                           mi.get("system") and mi.get("release") and f"{mi['system']} {mi['release']}",
                           mi.get("python_version") and f"Python {mi['python_version']}") if x]
    if machine:
        parts.append(", ".join(machine))
    return " · ".join(parts)


def render_markdown(runs: Sequence[Run], tables: Sequence[Table], figures: Sequence[Path],
                    out: Path) -> str:
    """The text of ``report.md``: the ranked figures first, then the runs, the tables and the other figures."""
    shown = [f for f in figures if f.suffix == ".svg"] or list(figures)  # one file type per figure
    ranked = [f for f in shown if f.stem.startswith(RANKED_PREFIX)]
    others = [f for f in shown if not f.stem.startswith(RANKED_PREFIX)]
    lines = ["# storebench report", ""]
    if ranked:
        lines += ["## Fastest first", "", RANKED_NOTE, ""]
        lines += [f"![{f.stem}]({f.relative_to(out).as_posix()})" for f in ranked]
        lines.append("")
    lines += ["Results:", ""]
    lines += [f"- {describe_run(run)}" for run in runs]
    lines += ["", NOTE, ""]
    if (rows := summary.summary_rows(runs)):
        lines += ["## Summary", "", SUMMARY_NOTE, "", summary.to_markdown(rows)]
    if (remote := summary.remote_rows(runs)):
        lines += ["## Object store", "", summary.REMOTE_NOTE, "", summary.remote_markdown(remote)]
    for t in tables:
        lines += [f"## {t.group}", ""]
        if (cap := t.caption()):
            lines += [cap, ""]
        lines += [t.to_markdown()]
    if others:
        lines += ["## Figures", ""]
        lines += [f"![{f.stem}]({f.relative_to(out).as_posix()})" for f in others]
        lines.append("")
    return "\n".join(lines)


def write_tables(tables: Sequence[Table], out: Path) -> list[Path]:
    """``<group>.md`` and ``<group>.csv`` for each table into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for t in tables:
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in t.group)
        md = f"# {t.group}\n\n" + (f"{t.caption()}\n\n" if t.caption() else "") + t.to_markdown()
        for path, text in ((out / f"{name}.md", md), (out / f"{name}.csv", t.to_csv())):
            path.write_text(text, encoding="utf-8", newline="\n")
            written.append(path)
    return written


def write_report(runs: Sequence[Run], out: str | Path,
                 kinds: Sequence[str] = IMAGE_FORMATS) -> list[Path]:
    """Write tables, figures and ``report.md`` for ``runs`` into ``out``.

    Benchmarks without storebench's fields (plain pytest-benchmark files)
    appear in the tables with their times only, and a
    :class:`~storebench.results.ForeignResultsWarning` says so.

    Returns
    -------
    list of Path
        Every file written, ``report.md`` last.
    """
    out = Path(out)
    if (msg := foreign_message(runs)):
        warnings.warn(msg, ForeignResultsWarning, stacklevel=2)
    tables = build_tables(runs)
    written = write_tables(tables, out / "tables")
    if (rows := summary.summary_rows(runs)):
        for path, text in ((out / "summary.md", f"# summary\n\n{SUMMARY_NOTE}\n\n" + summary.to_markdown(rows)),
                           (out / "summary.csv", summary.to_csv(rows))):
            path.write_text(text, encoding="utf-8", newline="\n")
            written.append(path)
    if (remote := summary.remote_rows(runs)):
        path = out / "remote.md"
        path.write_text(f"# object store\n\n{summary.REMOTE_NOTE}\n\n" + summary.remote_markdown(remote),
                        encoding="utf-8", newline="\n")
        written.append(path)
    figures = write_figures(runs, out / "figures", kinds)
    report = out / "report.md"
    report.write_text(render_markdown(runs, tables, figures, out), encoding="utf-8", newline="\n")
    return written + figures + [report]
