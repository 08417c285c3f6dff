"""The timed loops of the read benchmarks, shared by format rows and bound rows.

Every loop hands each sample's image to :func:`touch`, the cheapest consumer
that really reads it: readers may return lazy views into a memory map, and a
loop that never looks at the pixels would time nothing (and read nothing in a
cold round).  Bounds use the same consumer, so it cancels in the efficiency.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._pagecache import PAGE

OPS = ("scan", "random", "batch")


def touch(img: np.ndarray) -> int:
    """Read one byte of every page of ``img`` (one element for a small image)."""
    if img.nbytes <= PAGE:
        return img.item(0)
    flat = img.reshape(-1).view(np.uint8)  # a copy, itself a full read, if not contiguous
    return int(flat[::PAGE].max())


def scan(reader) -> int:
    """A sequential pass; returns the number of samples seen."""
    k = 0
    for s in reader:
        touch(s.image)
        k += 1
    return k


def random_reads(reader, order: Sequence[int]):
    """``reader[i]`` for each ``i`` of ``order``; returns (count, last key).

    Only the key leaves: a returned sample would keep its memory map alive
    into the next round, where a cold cache must be able to drop it.
    """
    s = None
    for i in order:
        s = reader[i]
        touch(s.image)
    return len(order), s.key if s is not None else None


def batch_reads(reader, order: np.ndarray, size: int):
    """``reader.read_batch`` over ``order`` in slices of ``size``; returns (count, last key)."""
    k, s = 0, None
    for j in range(0, len(order), size):
        for s in reader.read_batch(order[j:j + size]):
            touch(s.image)
            k += 1
    return k, s.key if s is not None else None
