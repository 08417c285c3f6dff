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
from typing import Any, cast

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
        """A table of rates and efficiencies for the terminal.

        Rates are images/s, but opens/s for open rows and patches/s for patch
        rows (and the patch bound), said after the note; a cold patch row adds
        its read amplification.
        """
        timed = [r for r in self.rows if r.rate]
        if not timed:
            return []
        ops = ("write", "open", "scan", "random", "batch", "patch", "loader",
               "s3-scan", "s3-random", "s3-batch", "s3-patch", "bound")
        order = {op: i for i, op in enumerate(ops)}
        timed.sort(key=lambda r: (order.get(r.op if r.fmt_id else "bound", 9), r.op, r.preset, r.n,
                                  r.cache or "", -cast(float, r.rate)))
        w = max(len(r.name) for r in timed)
        lines = [f"{'group':7} {'row':{w}} {'images/s':>12} {'MB/s':>9}  efficiency"]
        for r in timed:
            group = r.op if r.fmt_id else "bound"
            mbs = r.extra_info.get("MB/s")
            eff = r.extra_info.get("efficiency")
            notes = [f"{eff:6.1%} of {r.extra_info['bound']}"] if eff is not None else []
            if "vs_gather" in r.extra_info:
                notes.append(f"{r.extra_info['vs_gather']:.1%} of gather")
            if r.extra_info.get("store") == "s3" and r.extra_info.get("get_requests_per_sample") is not None:
                x = r.extra_info
                notes.append(f"{x['get_requests_per_sample']:.3g} GET and {x['bytes_per_sample']:,.0f} B per sample, "
                             f"epoch {x['projected_epoch_s']:.3g} s at {x['latency_model']['rtt_ms']:g} ms RTT")
            if r.extra_info.get("amplification") is not None:
                notes.append(f"reads {r.extra_info['amplification']:.3g}x the patch")
            unit = {"open": "opens/s", "patch": "patches/s"}.get(r.op, "") if r.fmt_id or r.op == "patch" else ""
            note = ", ".join(notes)
            lines.append(f"{group:7} {r.name:{w}} {r.rate:12,.0f} {mbs if mbs is not None else '':>9}  "
                         f"{note}{' ' if note and unit else ''}{f'({unit})' if unit else ''}")
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


def _status_kb(field: bytes) -> int | None:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(field + b":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


_peak_before_resets = 0  # the process's peak RSS before the latest reset_peak_rss
_trim: Any = None  # glibc's malloc_trim, False where there is none


def _malloc_trim() -> None:
    """Give the heap's free pages back to the kernel (glibc ``malloc_trim``; nothing elsewhere)."""
    global _trim
    if _trim is None:
        try:
            import ctypes

            _trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _trim = False
    if _trim:
        _trim(0)


def reset_peak_rss() -> int | None:
    """Reset this process's peak RSS to its current RSS; return that RSS, or None where unsupported.

    Linux 4.0+: writing ``5`` to ``/proc/self/clear_refs`` resets ``VmHWM``
    (and ``ru_maxrss``), so :func:`peak_rss` afterwards is the peak since
    this call; :func:`peak_rss_bytes` still reports the whole process's.
    The heap's free pages are returned to the kernel first (glibc's
    ``malloc_trim``), so that what a round allocates shows in its peak even
    where the allocator reuses memory freed before it.
    """
    global _peak_before_resets
    _peak_before_resets = max(_peak_before_resets, peak_rss() or 0, _ru_maxrss())
    _malloc_trim()  # else memory freed before a round is reused in it without adding to RSS
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _status_kb(b"VmRSS")


def peak_rss() -> int | None:
    """This process's peak RSS (``VmHWM``) in bytes since it started or the last :func:`reset_peak_rss`."""
    return _status_kb(b"VmHWM")


def _ru_maxrss() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (across :func:`reset_peak_rss` calls)."""
    return max(_ru_maxrss(), _peak_before_resets)
