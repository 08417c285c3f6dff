"""Page-cache control for cold-cache rounds, without root.

:func:`evict` drops a dataset's files from the page cache with
``posix_fadvise(POSIX_FADV_DONTNEED)``; :func:`residency` counts how many of
their pages are still cached with ``mincore`` on a fresh read-only mapping
(mapping a file and asking ``mincore`` reads nothing).  :class:`CacheState`
puts the two together around benchmark rounds: a cold round starts, reader
already open, with the files evicted (checked) and must leave more of them
cached than it found (checked), otherwise it read nothing from disk and its
time is not a cold result; the pages it brought in are kept per round
(``CacheState.gained``).  :func:`read_bytes` is this process's count of bytes
read from storage (``/proc/self/io``), for what a round really read.

Caveats: the kernel will not drop dirty pages or pages another process has
mapped (a persistent DataLoader worker's memory map), and directory entries
and inodes stay cached, so a cold ``open()`` of a file still skips the path
lookup on disk.  On tmpfs nothing can be evicted at all.
"""
from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from storebench.formats._fs import evict  # one eviction for the conformance suite and the bench

PAGE = mmap.PAGESIZE
#: Files count as evicted when at most this fraction of their pages, plus
#: ALLOWED_PAGES (an open reader's mapped header pages), stays cached.
MAX_RESIDENT = 0.02
ALLOWED_PAGES = 16
_CHUNK = 8 << 20

_libc = None


def _lib():
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        _libc = libc
    return _libc


class EvictionError(RuntimeError):
    """The files could not be evicted from the page cache."""


class ColdRoundError(RuntimeError):
    """A cold round read nothing from disk, so its time measured the page cache."""


def read_bytes() -> int | None:
    """Bytes this process has caused to be read from storage so far, or None where unknown.

    ``read_bytes`` of ``/proc/self/io`` (Linux): page-cache misses of
    ``read()`` and of memory-map faults, readahead included, summed over every
    thread of the process (libraries that decompress in threads count too),
    not over child processes.  Pages already cached cost nothing here.
    """
    try:
        with open("/proc/self/io", "rb") as f:
            for line in f:
                if line.startswith(b"read_bytes:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def unsupported() -> str | None:
    """Why cold rounds cannot run here, or None when they can."""
    if not hasattr(os, "posix_fadvise"):
        return "os.posix_fadvise is not available on this platform"
    try:
        _lib().mincore
    except (OSError, AttributeError) as err:
        return f"mincore is not available: {err}"
    return None


def file_residency(path: os.PathLike | str) -> tuple[int, int]:
    """(cached pages, total pages) of one file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, 0
        libc = _lib()
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            err = ctypes.get_errno()
            raise OSError(err, f"mmap {path}: {os.strerror(err)}")
        try:
            pages = (size + PAGE - 1) // PAGE
            vec = ctypes.create_string_buffer(pages)
            if libc.mincore(addr, size, vec) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"mincore {path}: {os.strerror(err)}")
            # Bit 0 of each byte says whether that page is cached.
            return int(np.count_nonzero(np.frombuffer(vec.raw, np.uint8) & 1)), pages
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def residency(files: Sequence[os.PathLike | str]) -> tuple[int, int]:
    """(cached pages, total pages) summed over ``files``."""
    cached = total = 0
    for f in files:
        c, t = file_residency(f)
        cached += c
        total += t
    return cached, total


def prewarm(files: Sequence[os.PathLike | str]) -> None:
    """Read ``files`` once so that their pages are cached."""
    buf = bytearray(_CHUNK)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf) == _CHUNK:
                pass


def check_evicted(files: Sequence[Path], max_resident: float = MAX_RESIDENT) -> int:
    """Evict ``files`` and verify it; return the pages still cached.

    Pages of an open reader's memory map that it has touched stay (up to
    ``ALLOWED_PAGES`` and ``max_resident`` of them are accepted).

    Raises
    ------
    EvictionError
        More than ``max_resident`` of the pages stayed cached (dirty pages,
        pages mapped by a live process, or a file system such as tmpfs that
        keeps everything in memory).
    """
    evict(files)
    cached, total = residency(files)
    if cached > int(total * max_resident) + ALLOWED_PAGES:
        raise EvictionError(
            f"posix_fadvise(DONTNEED) left {cached} of {total} pages of {len(files)} dataset files "
            f"cached (first: {files[0] if files else '-'}); the kernel keeps dirty pages, pages "
            "mapped by a live process, and everything on tmpfs")
    return cached


class CacheState:
    """Puts a dataset's files in the asked cache state for each round.

    Call :meth:`start` once; for each round :meth:`before_open`, then open
    what the round reads, then :meth:`ready`, the round, and :meth:`done`.
    ``warm`` reads the files once at :meth:`start`.  ``cold`` evicts the
    files before the reader opens (what a memory map touches while opening
    cannot be evicted later) and again once it is open (verified), so its
    index is in memory and no page of its files is cached; :meth:`done`
    checks that the round read pages back from disk (``ColdRoundError``).
    ``fresh`` opens a new reader for every round and leaves the page cache
    alone (the remote rows: a reader's own caches must not serve a later round).
    """

    def __init__(self, mode: str, files: Sequence[Path]):
        if mode not in ("warm", "cold", "fresh"):
            raise ValueError(f"cache mode must be 'warm', 'cold' or 'fresh', got {mode!r}")
        self.mode, self.files = mode, list(files)
        self._baseline: int | None = None
        self.rounds = 0
        self.gained: list[int] = []  # cold: pages each round brought into the page cache

    @property
    def cold(self) -> bool:
        return self.mode == "cold"

    @property
    def reopen(self) -> bool:
        """Whether every round reads through a reader opened for it."""
        return self.mode != "warm"

    def start(self) -> None:
        if self.mode == "warm":
            prewarm(self.files)

    def before_open(self) -> None:
        if self.cold:
            evict(self.files)

    def ready(self) -> None:
        if self.cold:
            self._baseline = check_evicted(self.files)

    def done(self) -> None:
        self.rounds += 1
        if self._baseline is None:
            return
        now, total = residency(self.files)
        base, self._baseline = self._baseline, None
        self.gained.append(now - base)
        if now <= base:
            raise ColdRoundError(
                f"a cold round read nothing from disk: {now} of {total} pages cached after it, "
                f"{base} before; its time would measure a cache (the page cache, or the reader's "
                f"own if opening it read the whole of a tiny dataset)")
