"""Atomic creation of a dataset directory: temp sibling, fsync, rename, stale-temp cleanup."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from pathlib import Path

_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_FULL_TEXT = ("no space left", "file too large", "disk is full", "quota exceeded")


def _is_disk_full(err: BaseException | None) -> bool:
    """Whether a library's write error means the disk (or a size limit) is full.

    h5py, lmdb and sqlite3 each report ENOSPC/EFBIG in their own exception types.
    """
    while err is not None:
        if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
            return True
        if any(t in str(err).lower() for t in _FULL_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False


def _space_exhausted(tmp: Path, path: Path) -> bool:
    """Whether the file system or the file-size limit has run out under ``tmp``.

    Some libraries turn ENOSPC/EFBIG into a generic error (liblmdb reports EIO),
    so the writer also looks at the disk itself before it reports the failure.
    """
    try:
        st = os.statvfs(path.parent)
        if st.f_bavail * st.f_frsize < 4 << 20:
            return True
        import resource
        soft, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY:
            biggest = max((os.stat(os.path.join(r, n)).st_size
                           for r, _d, names in os.walk(tmp) for n in names), default=0)
            return biggest >= soft - min(soft // 4, 1 << 20)
    except (OSError, ImportError, ValueError):
        return False
    return False



def _fsync_path(p: str, directory: bool = False) -> None:
    fd = os.open(p, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs(path: Path) -> bool:
    """Flush the whole file system holding ``path`` in one call (Linux)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            return libc.syncfs(fd) == 0
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        return False


def _sync_tree(root: Path) -> None:
    """Make every file under ``root`` durable before it is renamed into place.

    Few files: fsync each.  Many files (a folder of PNGs): one syncfs, because
    100k fsyncs cost minutes and measure the disk's flush latency, not the format.
    """
    files = [os.path.join(r, n) for r, _d, names in os.walk(root) for n in names]
    if len(files) > 64 and _syncfs(root):
        return
    for f in files:
        _fsync_path(f)
    for r, _d, _n in os.walk(root):
        _fsync_path(r, directory=True)


def _swap_into_place(tmp: Path, path: Path) -> None:
    """Rename the finished ``tmp`` to ``path``, replacing an old dataset there."""
    old = None
    if path.exists() or path.is_symlink():
        old = path.with_name(f".{path.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if old is not None:
            os.rename(old, path)
        raise
    _fsync_path(str(path.parent), directory=True)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (True where that cannot be told).

    Shared by the writers here and bench/'s scratch cleanup.  Off POSIX,
    ``os.kill(pid, 0)`` would terminate the process, so it is never called.
    """
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_siblings(path: Path) -> None:
    """Remove temporary directories left by writers of ``path`` that died."""
    prefix_tmp, prefix_old = f".{path.name}.tmp-", f".{path.name}.old-"
    try:
        siblings = list(os.scandir(path.parent))
    except FileNotFoundError:
        return
    for entry in sorted(siblings, key=lambda e: e.name):
        for prefix in (prefix_tmp, prefix_old):
            if entry.name.startswith(prefix):
                pid_text = entry.name[len(prefix):].split("-", 1)[0]
                if pid_text.isdigit() and pid_alive(int(pid_text)) and int(pid_text) != os.getpid():
                    continue  # another live writer's work in progress
                if prefix == prefix_old and not path.exists():
                    # A writer died between its two renames: put the old dataset back,
                    # and if that fails keep it: it may be the only copy.
                    with contextlib.suppress(OSError):
                        os.rename(entry.path, path)
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)



def write_json_atomic(path: Path, obj: dict) -> None:
    """Replace ``path`` with ``obj`` as JSON: written to a temp sibling, fsynced, renamed.

    A reader sees the old file or the new one, never half of either.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
