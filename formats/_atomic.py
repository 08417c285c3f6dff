"""Atomic creation of a dataset directory: temp sibling, fsync, locked rename, stale-temp cleanup.

A write claims ``.NAME.tmp-PID-RAND`` beside the dataset, builds it there and
renames it to ``NAME`` under a lock, so two writers never mix and
``overwrite=False`` is a real "create or fail".  See "locks" below for who may
delete which temporary directory.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from ._errors import DatasetError
from ._manifest import MANIFEST, read_manifest

try:
    import fcntl
except ImportError:  # Windows: see "locks" below
    fcntl = None  # type: ignore[assignment]

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


# ---------------------------------------------------------------------------- locks
#
# Who owns what, without trusting pids (another thread, container, PID namespace
# or NFS client shows the same pid or none):
#
# * ``.NAME.lock`` beside the dataset: an exclusive ``flock`` held for the short
#   critical sections (stale cleanup + claiming a temp dir at the start; the
#   final check-and-rename at the end).  Removed on release; a waiter that wakes
#   on a removed lock file retries on the new one (the inode is checked).
# * ``.NAME.tmp-PID-RAND`` / ``.NAME.old-PID-RAND``: each has a lock file
#   ``<sibling>.lock`` that its writer creates and locks *before* the sibling
#   exists and unlinks only *after* it is gone, holding it the whole time.  The
#   pid is in the name for people only.  A sibling is cleaned only if its lock
#   can be taken, i.e. its writer is provably gone.
#
# flock locks belong to open files, so two threads of one process exclude each
# other; on NFS Linux emulates flock with per-process POSIX locks, so this
# process also keeps the locks it holds in a table that its own cleanup reads.
# Without fcntl (Windows) only threads of one process are excluded, and no
# sibling is ever removed automatically: it cannot be proven abandoned.

_HELD: set[str] = set()                     # sibling lock files this process holds
_LOCAL: dict[str, threading.Lock] = {}      # one per dataset lock file, across threads
_GUARD = threading.Lock()
_SIBLING = re.compile(r"(\d+)-([0-9a-f]{8,32})")  # PID-RAND after ".NAME.tmp-" / ".NAME.old-"


def _after_fork_in_child() -> None:
    global _GUARD
    _GUARD = threading.Lock()
    _LOCAL.clear()  # a thread of the parent may have held one: the child has no such thread
    _HELD.clear()   # inherited descriptors still hold the parent's flocks, so nothing is lost


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _lock_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _flock_current(lockfile: Path) -> int:
    """An exclusive flock on ``lockfile``, (re)created until the locked inode is the one named."""
    while True:
        fd = os.open(lockfile, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                named = os.stat(lockfile)
            except FileNotFoundError:
                named = None
        except BaseException:
            os.close(fd)
            raise
        if named is not None and (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)  # its holder removed it while we waited: lock the new one


@contextlib.contextmanager
def dataset_lock(path: Path) -> Iterator[None]:
    """Hold ``.NAME.lock`` beside ``path``: exclusive against every thread and process."""
    lockfile = _lock_file(path)
    with _GUARD:
        local = _LOCAL.setdefault(os.path.abspath(lockfile), threading.Lock())
    with local:
        if fcntl is None:
            yield
            return
        fd = _flock_current(lockfile)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lockfile)  # before the unlock, so no one locks a removed file and stays
            os.close(fd)


class Claim:
    """A temporary sibling of ``path`` this writer owns: ``.NAME.KIND-PID-RAND``.

    Its lock file is created and locked before the sibling exists (callers hold
    :func:`dataset_lock`, so no cleanup sees one without the other) and removed
    by :meth:`release` only once the sibling is gone.
    """

    def __init__(self, path: Path, kind: str):
        while True:
            self.path = path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:16]}")
            self.lock = self.path.with_name(self.path.name + ".lock")
            try:
                self._fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:
                continue
        if fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._close(unlink=True)
                raise
        _HELD.add(os.path.abspath(self.lock))

    def _close(self, unlink: bool) -> None:
        _HELD.discard(os.path.abspath(self.lock))
        if self._fd >= 0:
            os.close(self._fd)  # first: Windows cannot remove an open file
            self._fd = -1
        if unlink:  # a cleanup that locks it meanwhile finds no sibling and removes it too
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock)

    def release(self) -> None:
        """Give the sibling up: its lock file goes only if the sibling has gone (else it is stale)."""
        self._close(unlink=not os.path.lexists(self.path))


def _try_lock(lockfile: str) -> int | None:
    """A descriptor holding ``lockfile``'s lock if nobody else holds it; None if held or absent."""
    if fcntl is None or os.path.abspath(lockfile) in _HELD:
        return None
    try:
        fd = os.open(lockfile, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: a live writer holds it
        os.close(fd)
        return None
    return fd


# ---------------------------------------------------------------------------- what may be replaced


def check_target(path: Path, *, overwrite: bool) -> bool:
    """Whether a dataset is at ``path`` to be replaced; FileExistsError if it must not be.

    ``overwrite`` replaces only a directory holding a valid ``storebench.json``
    (of any format), never a file, a symlink (to a dataset or not: replacing the
    link would retarget it, replacing its target writes outside ``path``), or a
    directory without a manifest.
    """
    if not os.path.lexists(path):
        return False
    if not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True to replace it)")
    def refuse(problem: str) -> FileExistsError:
        return FileExistsError(f"{path}: {problem}; overwrite replaces only a storebench dataset, "
                               "so it was left untouched")
    if os.path.islink(path):
        raise refuse(f"a symbolic link (to {os.readlink(path)!r}), not a dataset directory")
    try:
        read_manifest(path)
    except FileNotFoundError as err:
        if os.path.lexists(path):
            raise refuse(f"not a storebench dataset ({err})") from err
        return False  # removed meanwhile
    except DatasetError as err:
        raise refuse(err.problem) from err
    except OSError as err:
        raise refuse(f"cannot read its {MANIFEST} ({err.strerror or err})") from err
    return True


# ---------------------------------------------------------------------------- the write's two ends


def start_write(path: Path, *, overwrite: bool) -> Claim:
    """Clean what dead writers left beside ``path`` and claim a new temp directory there."""
    check_target(path, overwrite=overwrite)  # fail before taking the lock; checked again at the end
    with dataset_lock(path):
        _clean_stale_locked(path)
        check_target(path, overwrite=overwrite)  # an old dataset may have been put back
        tmp = Claim(path, "tmp")
        try:
            tmp.path.mkdir()
        except BaseException:
            tmp.release()
            raise
    return tmp


@functools.lru_cache(maxsize=1)
def _noreplace_call() -> Callable[[bytes, bytes], int] | None:
    """renameat2(RENAME_NOREPLACE) on Linux, renamex_np(RENAME_EXCL) on macOS, else None."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
    except (OSError, ImportError):
        return None
    if hasattr(libc, "renameat2"):
        fn = libc.renameat2
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        return lambda src, dst: fn(-100, src, -100, dst, 1)  # AT_FDCWD, RENAME_NOREPLACE
    if hasattr(libc, "renamex_np"):
        fx = libc.renamex_np
        fx.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        return lambda src, dst: fx(src, dst, 0x4)  # RENAME_EXCL
    return None


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; FileExistsError naming ``dst`` if anything is there.

    Atomic in the kernel where it can be (so even a process that takes no lock
    cannot be overwritten); elsewhere a check and a rename, which the caller's
    :func:`dataset_lock` makes atomic against storebench writers.
    """
    exists = FileExistsError(f"{dst}: already exists (pass overwrite=True to replace it)")
    call = _noreplace_call()
    if call is not None:
        import ctypes
        if call(os.fsencode(src), os.fsencode(dst)) == 0:
            return
        code = ctypes.get_errno()
        if code in (errno.EEXIST, errno.ENOTEMPTY):
            raise exists
        if code not in (errno.EINVAL, errno.ENOSYS, getattr(errno, "ENOTSUP", errno.EINVAL),
                        getattr(errno, "EOPNOTSUPP", errno.EINVAL)):
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
    if os.path.lexists(dst):
        raise exists
    try:
        os.rename(src, dst)
    except OSError as err:
        if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise exists from err
        raise


def _swap_into_place(tmp: Path, path: Path, *, overwrite: bool = True) -> None:
    """Rename the finished ``tmp`` to ``path``, replacing only a dataset there.

    The check of what is at ``path`` and the renames happen under
    :func:`dataset_lock`, so of two writers with ``overwrite=False`` one gets
    FileExistsError, and with ``overwrite=True`` the last one's dataset is whole.
    """
    with dataset_lock(path):
        if not check_target(path, overwrite=overwrite):
            _rename_noreplace(tmp, path)
            _fsync_path(str(path.parent), directory=True)
            return
        old = Claim(path, "old")
        try:
            os.rename(path, old.path)
            try:
                _rename_noreplace(tmp, path)
            except BaseException:
                os.rename(old.path, path)
                raise
            _fsync_path(str(path.parent), directory=True)
        except BaseException:
            old.release()  # keeps its lock file if the old dataset could not be put back
            raise
    try:  # outside the lock: deleting a big dataset must not hold other writers up
        shutil.rmtree(old.path, ignore_errors=True)
    finally:
        old.release()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (True where that cannot be told).

    bench/'s scratch cleanup uses it; dataset writers do not (see the locks
    above).  Off POSIX, ``os.kill(pid, 0)`` would terminate the process, so it
    is never called.
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
    """Remove what writers of ``path`` that died left beside it (see :func:`_clean_stale_locked`)."""
    with dataset_lock(path):
        _clean_stale_locked(path)


def _clean_stale_locked(path: Path) -> None:
    """Clean up after dead writers of ``path``; the caller holds :func:`dataset_lock`.

    A ``.NAME.old-*`` is a previous dataset: it is put back when nothing is at
    ``path`` (also one without a lock file, as earlier versions left them), and
    never deleted when that fails.  A ``.NAME.tmp-*`` or a replaced ``.old-*`` is
    deleted only if its lock file can be locked: its writer is gone.  Anything
    without a lock file is left alone.
    """
    prefixes = {f".{path.name}.tmp-": "tmp", f".{path.name}.old-": "old"}
    try:
        names = sorted(e.name for e in os.scandir(path.parent))
    except FileNotFoundError:
        return
    siblings: dict[str, list[str]] = {"tmp": [], "old": []}
    orphans = []
    for name in names:
        for prefix, kind in prefixes.items():
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            if _SIBLING.fullmatch(rest):
                siblings[kind].append(name)
            elif rest.endswith(".lock") and _SIBLING.fullmatch(rest[:-5]) and name[:-5] not in names:
                orphans.append(name)  # its writer died after the sibling went
    parent = path.parent
    for kind in ("old", "tmp"):  # olds first: one may have to be put back
        for name in siblings[kind]:
            entry, lockfile = parent / name, str(parent / (name + ".lock"))
            fd = _try_lock(lockfile)
            has_lock = fd is not None or os.path.lexists(lockfile)
            try:
                if kind == "old" and not os.path.lexists(path) and (fd is not None or not has_lock):
                    # A writer died between its two renames: put the old dataset back,
                    # and if that fails keep it: it may be the only copy.
                    with contextlib.suppress(OSError):
                        os.rename(entry, path)
                elif fd is not None:
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry)
                if fd is not None and not os.path.lexists(entry):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lockfile)
            finally:
                if fd is not None:
                    os.close(fd)
    for name in orphans:
        lockfile = str(parent / name)
        fd = _try_lock(lockfile)
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lockfile)
            os.close(fd)


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
