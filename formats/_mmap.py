"""Read-only file mappings for readers: what the kernel reads around a page fault, and RSS.

**What a fault reads.**  A fault on a mapped page that is not in the page
cache makes Linux read around it: up to the device's ``read_ahead_kb``
(8 MiB on the virtio disk these figures come from), so touching one row of a
cold image reads 8 MB.  :class:`FileMap` maps a file and applies an advice:
``"random"`` (``MADV_RANDOM``: a fault reads its own page only) or
``"normal"`` (the kernel's read-around).  Under ``"random"`` a reader that
knows what it will touch says so with :meth:`FileMap.prefetch`
(``MADV_WILLNEED`` on those byte ranges, in requests of the read-ahead size,
skipped when their middle page is already cached): the pages arrive in a few
large reads instead of one synchronous 4 KiB read per fault.
:func:`region_ranges` gives the byte ranges a region of a C-order array
touches.

**RSS.**  Pages a process touches through ``mmap`` stay in its resident set
until the map is unmapped, so a full scan of a 400 MB LMDB or ``.npy`` file
makes the reader look 400 MB big although the pages are the kernel's page
cache.  :class:`RssBudget` counts the bytes a reader maps in and, every
``limit`` bytes, tells the kernel with ``madvise(MADV_DONTNEED)`` that the
process no longer needs them: the pages stay cached and the next access maps
them back (a minor fault), but the reader's memory stays bounded.  Safe only
for read-only shared mappings, which is all this is used for.
:class:`MapCache` keeps a bounded number of per-sample maps open.
"""
from __future__ import annotations

import ctypes
import functools
import math
import mmap
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

PAGE = mmap.PAGESIZE
LIMIT = 128 << 20
#: A page fault on a cached file maps up to 64 KiB around it (Linux's fault-around),
#: so a random read costs at least this much resident memory.
FAULT_AROUND = 64 << 10
#: The advice a reader may put on its maps (see the module docstring).
ADVICE = ("random", "normal")
_MADV = {"random": getattr(mmap, "MADV_RANDOM", None), "normal": getattr(mmap, "MADV_NORMAL", None)}
_MADV_WILLNEED = getattr(mmap, "MADV_WILLNEED", None)
_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", 4)
_O_RDONLY = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


def _libc(name: str, argtypes: list | None):
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    if argtypes is not None:
        fn.argtypes = argtypes
    return fn


_madvise = _libc("madvise", [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int])
_mincore = _libc("mincore", None)  # no argtypes: the call costs 2.6 us instead of 7


@functools.cache
def readahead_bytes(dev: int) -> int:
    """The read-ahead window of the device ``dev`` (``st_dev``), at least 128 KiB.

    ``MADV_WILLNEED`` reads at most this much per call (the kernel caps a
    forced read-ahead at the device's window), so longer ranges are asked
    for in pieces of this size.  Read from ``/sys/class/bdi``; 128 KiB (the
    Linux default) where that cannot be read.
    """
    try:
        with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb") as f:
            kb = int(f.read())
    except (OSError, ValueError):
        kb = 0
    return max(kb, 128) << 10


class FileMap:
    """A whole file mapped read-only, with the advice ``advise`` (``"random"`` or ``"normal"``).

    ``mm`` is the :class:`mmap.mmap`; :meth:`array` makes read-only NumPy
    views of it.  The map lives as long as the last view of it.
    """

    __slots__ = ("mm", "size", "random", "_dev", "_addr", "_vec")

    def __init__(self, fd: int, advise: str = "random", dev: int | None = None):
        self.mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)  # ValueError for an empty file
        self.size = len(self.mm)
        self.random = advise == "random"
        self._dev = os.fstat(fd).st_dev if dev is None else dev  # ``dev``: the caller's fstat
        how = _MADV.get(advise)
        if how is not None and hasattr(self.mm, "madvise"):
            self.mm.madvise(how)
        self._addr = 0  # found on the first cached(): small files never need it
        self._vec = (ctypes.c_ubyte * 1)()  # shared by threads: a race only misjudges one prefetch

    @classmethod
    def open(cls, name: str, dir_fd: int | None, advise: str = "random") -> FileMap:
        """Map file ``name`` (relative to ``dir_fd``).  OSError as ``os.open`` raises it;
        ValueError for an empty file."""
        fd = os.open(name, _O_RDONLY, dir_fd=dir_fd)
        try:
            return cls(fd, advise)
        finally:
            os.close(fd)

    def array(self, dtype: np.dtype, shape: tuple[int, ...], offset: int) -> np.ndarray:
        """A read-only view of ``shape`` ``dtype`` at byte ``offset`` (the caller checked the size)."""
        return np.ndarray(shape, dtype, buffer=self.mm, offset=offset)

    def cached(self, pos: int) -> bool:
        """Whether the page holding byte ``pos`` is in the page cache (False where unknown).

        ``mincore``; since Linux 5.0 it sees the page cache only for files
        this process owns or could write, else only pages it has mapped.
        """
        if _mincore is None or not 0 <= pos < self.size:
            return False
        if not self._addr:
            self._addr = np.frombuffer(self.mm, np.uint8, 1).__array_interface__["data"][0]
        if _mincore(ctypes.c_void_p(self._addr + pos - pos % PAGE), 1, self._vec) != 0:
            return False
        return bool(self._vec[0] & 1)

    def prefetch(self, ranges: Iterable[tuple[int, int]], *, check: bool = True) -> None:
        """Under ``"random"``: ask the kernel to read the byte ``ranges`` now, in large requests
        (``MADV_WILLNEED``), unless (with ``check``) the page in the middle of them is cached
        already: a warm read then costs one ``mincore`` (2 us), not a walk of the page cache
        (30 us for 224 pages).  Advisory: nothing happens where the platform has no such call."""
        if not self.random or _MADV_WILLNEED is None or not hasattr(self.mm, "madvise"):
            return
        ranges = list(ranges)
        if not ranges:
            return
        mid = ranges[len(ranges) // 2]
        if check and self.cached((mid[0] + mid[1]) // 2):
            return
        piece, size, advise = readahead_bytes(self._dev), self.size, self.mm.madvise
        for lo, hi in ranges:
            lo -= lo % PAGE
            hi = min(hi, size)
            while lo < hi:
                n = min(piece, hi - lo)
                try:
                    advise(_MADV_WILLNEED, lo, n)
                except (OSError, ValueError):
                    return
                lo += n

    def release(self) -> None:
        """Drop this process's page mappings (``MADV_DONTNEED``); the page cache keeps them."""
        mm = self.mm
        if hasattr(mm, "madvise") and not mm.closed:
            mm.madvise(_MADV_DONTNEED)


def region_middle(start: int, shape: tuple[int, ...], itemsize: int, region: tuple[slice, ...]) -> int:
    """The byte of the element in the middle of ``region`` (see :func:`region_ranges`): the page
    a reader checks with :meth:`FileMap.cached` before working out and asking for the rest."""
    pos, stride = start, itemsize * math.prod(shape[len(region):])
    for k in range(len(region) - 1, -1, -1):
        pos += (region[k].start + region[k].stop) // 2 * stride
        stride *= shape[k]
    return pos


def region_ranges(start: int, shape: tuple[int, ...], itemsize: int,
                  region: tuple[slice, ...]) -> list[tuple[int, int]]:
    """Byte ranges a region of a C-order array at byte ``start`` touches.

    ``region`` holds checked slices (int bounds, step 1) of the leading
    ``len(region)`` axes of ``shape`` (rows and columns, or depth, rows and
    columns); later axes (channels) are whole.  Rows whose touched bytes are
    less than a page apart are one range (no page between them goes unread
    anyway), so a 224-row patch of a 2048-wide uint16 image is one range and
    a 64^3 patch of a 512x512 CT volume one range per slice.
    """
    nsp = len(region)
    strides = [itemsize] * len(shape)
    for k in range(len(shape) - 2, -1, -1):
        strides[k] = strides[k + 1] * shape[k + 1]
    cols, rows = region[-1], region[-2]
    seg = (cols.stop - cols.start) * strides[nsp - 1]  # bytes of one row of the region
    row = strides[nsp - 2]
    planes = range(region[0].start, region[0].stop) if nsp == 3 else range(1)
    plane = strides[0] if nsp == 3 else 0
    out: list[tuple[int, int]] = []
    for d in planes:
        base = start + d * plane + cols.start * strides[nsp - 1]
        if row - seg < PAGE:
            spans = [(base + rows.start * row, base + (rows.stop - 1) * row + seg)]
        else:
            spans = [(base + r * row, base + r * row + seg) for r in range(rows.start, rows.stop)]
        for lo, hi in spans:
            if out and lo - out[-1][1] < PAGE:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
    return out


class MapCache:
    """Up to ``size`` opened per-sample files, by position; the least recently used are dropped.

    ``opener(i)`` opens sample ``i`` and returns what the reader keeps of it
    (views, a :class:`FileMap`, a library's array).  Dropped entries are not
    closed: a map is unmapped with its last view, so images already handed
    out stay valid.  Thread-safe; two threads missing the same entry may
    both open it, and one copy is kept.
    """

    def __init__(self, opener: Callable[[int], Any], size: int = 128):
        self._open, self._size = opener, size
        self._items: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, i: int) -> Any:
        with self._lock:
            got = self._items.get(i)
            if got is not None:
                self._items.move_to_end(i)
                return got
        got = self._open(i)  # outside the lock: a cold open may wait on the disk
        with self._lock:
            self._items[i] = got
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return got

    def values(self) -> list[Any]:
        with self._lock:
            return list(self._items.values())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _release(target: Any) -> None:
    if isinstance(target, FileMap):
        target.release()
    elif isinstance(target, mmap.mmap):
        if hasattr(target, "madvise") and not target.closed:
            target.madvise(_MADV_DONTNEED)


class RssBudget:
    """Release a mapping's pages from this process after every ``limit`` bytes read.

    Parameters
    ----------
    target : FileMap, mmap.mmap, int or callable
        The mapping, its start address (e.g. LMDB's ``map_addr``), or a
        function returning the mappings (FileMap or mmap) to release.
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
        if isinstance(t, (FileMap, mmap.mmap)):
            _release(t)
        elif callable(t):
            for m in t():
                _release(m)
        elif t and self.length and _madvise is not None:
            _madvise(t, self.length, _MADV_DONTNEED)


def find_mapping(path) -> tuple[int, int]:
    """(start address, length) of this process's mapping of ``path``, or (0, 0).

    For libraries that map a file themselves without telling where (liblmdb):
    read from ``/proc/self/maps`` on Linux; elsewhere the budget does nothing.
    """
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
