"""Keep a read-only file mapping from growing a reader's RSS to the file's size.

Pages a process touches through ``mmap`` stay in its resident set until the
map is unmapped, so a full scan of a 400 MB LMDB or ``.npy`` file makes the
reader look 400 MB big although the pages are the kernel's page cache.
:class:`RssBudget` counts the bytes a reader maps in and, every ``limit``
bytes, tells the kernel with ``madvise(MADV_DONTNEED)`` that the process no
longer needs them: the pages stay cached and the next access maps them back
(a minor fault), but the reader's memory stays bounded.  Safe only for
read-only shared mappings, which is all this is used for.
"""
from __future__ import annotations

import ctypes
import mmap

LIMIT = 128 << 20
#: A page fault on a cached file maps up to 64 KiB around it (Linux's fault-around),
#: so a random read costs at least this much resident memory.
FAULT_AROUND = 64 << 10
_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", 4)


def _libc_madvise():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return fn


_madvise = _libc_madvise()


class RssBudget:
    """Release a mapping's pages from this process after every ``limit`` bytes read.

    Parameters
    ----------
    target : mmap.mmap or int
        The mapping, or its start address (e.g. LMDB's ``map_addr``).
    length : int
        Bytes mapped (needed with an address).
    """

    __slots__ = ("target", "length", "limit", "used")

    def __init__(self, target, length: int = 0, limit: int = LIMIT):
        self.target, self.length, self.limit, self.used = target, length, limit, 0

    def charge(self, nbytes: int) -> None:
        """Count a sequential read of ``nbytes``."""
        self.used += nbytes
        if self.used >= self.limit:
            self.release()

    def charge_random(self, nbytes: int) -> None:
        """Count a random read of ``nbytes``: at least the fault-around window."""
        self.used += nbytes if nbytes > FAULT_AROUND else FAULT_AROUND
        if self.used >= self.limit:
            self.release()

    def release(self) -> None:
        self.used = 0
        t = self.target
        if isinstance(t, mmap.mmap):
            if hasattr(t, "madvise") and not t.closed:
                t.madvise(_MADV_DONTNEED)
        elif t and self.length and _madvise is not None:
            _madvise(t, self.length, _MADV_DONTNEED)


def find_mapping(path) -> tuple[int, int]:
    """(start address, length) of this process's mapping of ``path``, or (0, 0).

    For libraries that map a file themselves without telling where (liblmdb):
    read from ``/proc/self/maps`` on Linux; elsewhere the budget does nothing.
    """
    import os

    target = os.path.realpath(path)
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) == 6 and fields[5].rstrip("\n") == target:
                    lo, hi = (int(x, 16) for x in fields[0].split("-"))
                    return lo, hi - lo
    except OSError:
        pass
    return 0, 0
