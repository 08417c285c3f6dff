"""A description of this machine for a results bundle: CPU, memory, kernel, file systems, cache.

Every probe is best effort: a fact that cannot be read on this platform is
``None``, never an error, so a bundle can be made anywhere.
"""
from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterable
from pathlib import Path


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes (Linux only; {} elsewhere)."""
    out = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``)."""
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def cpu() -> dict:
    import psutil

    freq = psutil.cpu_freq() if hasattr(psutil, "cpu_freq") else None
    return {"model": cpu_model(), "logical": os.cpu_count(), "physical": psutil.cpu_count(logical=False),
            "max_mhz": round(freq.max) if freq and freq.max else None,
            "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")}


def memory() -> dict:
    import psutil

    vm = psutil.virtual_memory()
    return {"total_bytes": vm.total, "available_bytes": vm.available,
            "swap_total_bytes": psutil.swap_memory().total}


def _rotational(device: str) -> bool | None:
    """Whether the block device behind ``device`` (``/dev/sda1``) spins; None when unknown."""
    name = Path(device).name
    node = Path("/sys/class/block") / name
    if not name or not node.exists():
        return None
    node = node.resolve()
    flag = _read(str(node / "queue" / "rotational")) or _read(str(node.parent / "queue" / "rotational"))
    return None if flag is None else flag == "1"


def file_system(path: str | Path) -> dict:
    """Type, mount point, device, mount options and rotational flag of the file system holding ``path``."""
    import psutil

    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    real = os.path.realpath(p)
    best = None
    for part in psutil.disk_partitions(all=True):
        mp = part.mountpoint
        if (real == mp or real.startswith(mp.rstrip("/") + "/")) and (best is None or len(mp) > len(best.mountpoint)):
            best = part
    if best is None:
        return {"type": None, "mountpoint": None, "device": None, "options": None, "rotational": None}
    return {"type": best.fstype, "mountpoint": best.mountpoint, "device": best.device,
            "options": best.opts, "rotational": _rotational(best.device)}


def cache_state() -> dict:
    """The page cache right now: its size, dirty bytes and the kernel's write-back settings."""
    info = _meminfo()
    return {"page_cache_bytes": info.get("Cached"), "dirty_bytes": info.get("Dirty"),
            "vm.dirty_ratio": _read("/proc/sys/vm/dirty_ratio"),
            "vm.swappiness": _read("/proc/sys/vm/swappiness")}


def os_release() -> str | None:
    for line in (_read("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def describe(paths: Iterable[str | Path] = ()) -> dict:
    """Everything above, with the file system of each of ``paths``."""
    u = platform.uname()
    return {
        "hostname": u.node,
        "cpu": cpu(),
        "memory": memory(),
        "kernel": {"system": u.system, "release": u.release, "version": u.version, "machine": u.machine},
        "os": os_release() or platform.platform(),
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "file_systems": {str(p): file_system(p) for p in dict.fromkeys(str(p) for p in paths)},
        "cache": cache_state(),
    }
