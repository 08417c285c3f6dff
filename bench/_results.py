"""The session's rows for the terminal summary, machine info and version info.

Every benchmark row registers itself with :class:`Results` after its rounds;
the root conftest prints :meth:`Results.summary_lines` at the end.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import cast

#: Distributions the benchmark itself uses, whose versions go into machine_info when installed;
#: each format adds the ones it declares (``Format.libraries``).
LIBRARIES = ("numpy", "torch", "albumentations", "scikit-image", "psutil", "tqdm", "pytest-benchmark")


@dataclass
class Row:
    """One benchmark's identity and measured rate."""

    name: str  # the test's param id, e.g. "npy-cifar-n1000-warm"
    op: str
    preset: str
    n: int
    cache: str | None
    extra_info: dict  # the benchmark's own dict, serialised at session end
    fmt_id: str | None = None  # format rows
    bound: str | None = None  # bound rows: their name; format rows: the bound they use
    rate: float | None = None  # images/s of the fastest round, None when not timed


class Results:
    """The rows of a session."""

    def __init__(self):
        self.rows: list[Row] = []

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def summary_lines(self) -> list[str]:
        """A table of rates and efficiencies for the terminal."""
        timed = [r for r in self.rows if r.rate]
        if not timed:
            return []
        order = {op: i for i, op in enumerate(("write", "open", "scan", "random", "batch", "loader", "bound"))}
        timed.sort(key=lambda r: (order.get(r.op if r.fmt_id else "bound", 9), r.op, r.preset, r.n,
                                  r.cache or "", -cast(float, r.rate)))
        w = max(len(r.name) for r in timed)
        lines = [f"{'group':7} {'row':{w}} {'images/s':>12} {'MB/s':>9}  efficiency"]
        for r in timed:
            group = r.op if r.fmt_id else "bound"
            mbs = r.extra_info.get("MB/s")
            eff = r.extra_info.get("efficiency")
            note = f"{eff:6.1%} of {r.extra_info['bound']}" if eff is not None else ""
            if "vs_gather" in r.extra_info:
                note += f", {r.extra_info['vs_gather']:.1%} of gather"
            unit = "opens/s" if r.op == "open" and r.fmt_id else ""
            lines.append(f"{group:7} {r.name:{w}} {r.rate:12,.0f} {mbs if mbs is not None else '':>9}  "
                         f"{note}{unit}")
        return lines


# --------------------------------------------------------------------------- machine info


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def dbm_backend() -> str:
    """The module ``dbm`` uses for new databases (what shelve writes)."""
    import dbm
    import importlib

    for name in getattr(dbm, "_names", ()):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        return name
    return "unknown"


def filesystem(path: Path) -> dict:
    """File system type and mount point holding ``path`` (shared with ``storebench bundle``)."""
    from storebench.machine import file_system

    fs = file_system(path)
    return {"type": fs["type"] or "unknown", "mountpoint": fs["mountpoint"]}


def machine_info(data_dir: Path) -> dict:
    """Stable facts about this machine and its libraries (nothing that changes run to run)."""
    import psutil

    from storebench import formats
    libs = {d: v for d in LIBRARIES if (v := _version(d)) is not None}
    fmts = {}
    for name, cls in formats.available().items():
        libs.update(cls.library_versions())
        fmts[name] = {"version": cls.version, **cls().info()}
    libs = dict(sorted(libs.items()))
    return {
        "python": platform.python_version(),
        "libraries": libs,
        "dbm_backend": dbm_backend(),
        "data_dir_fs": filesystem(data_dir)["type"],
        "ram_bytes": psutil.virtual_memory().total,
        "cpu_count": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "formats": fmts,
        "unavailable_formats": sorted(formats.unavailable()),
    }


def storebench_version(root: Path) -> dict:
    """The storebench package version and the git commit of ``root`` (if it is a checkout)."""
    out: dict[str, str | bool | None] = {"version": _version("storebench"), "commit": None, "dirty": None}
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode == 0:
            out["commit"] = head.stdout.strip()
            st = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
            out["dirty"] = bool(st.stdout.strip()) if st.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
