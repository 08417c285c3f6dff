"""Bound rows, the benchmark's side: the in-memory pool and opening a format's declared bound.

Which bound a format is measured against, and what the bound does, is the
format's declaration (:attr:`Format.bound`, see
:mod:`storebench.formats._bound`): ``floor`` and ``gather`` are reference
rows, ``decode-only[<id>]`` decodes an image format's own bytes in memory,
and ``bare-<library>`` rows are the bare use of a format's library on a
store built from the pool.  Nothing here names a format.

Bounds work on a pool of the dataset's first samples held in memory (at most
``POOL_BYTES`` of pixels, reused cyclically), so ``--sizes 100000`` needs
bounded memory; for the in-memory bounds the rate hardly depends on the pool
size once it is larger than the CPU caches.

:func:`open_bound` builds a bound's timed loop; the bound rows time it on
their own, and every warm format row times its bound again, interleaved with
its own rounds, so that its efficiency compares two rates taken under the
same machine load (a shared 2-core machine drifts by 2x within a minute).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from storebench import fixtures
from storebench.formats._bound import FLOOR, GATHER, Bound, BoundRun, NoBound, Pool

from ._data import Dataset, pool_size
from ._ops import touch
from ._pagecache import prewarm

__all__ = ["FLOOR", "GATHER", "POOL_BYTES", "Bound", "BoundRun", "NoBound", "Pool", "make_pool",
           "open_bound"]

POOL_BYTES = 32 << 20


def make_pool(source: Dataset, budget: int = POOL_BYTES) -> Pool:
    """The first samples of ``source`` that fit in ``budget`` pixel bytes, in memory."""
    m = pool_size(source, budget)
    with source.open() as r:
        samples = r.read_batch(np.arange(m))
    return Pool.of(samples, f"{source.preset}-s{source.seed}-p{fixtures.PRESET_VERSION}-m{m}")


def open_bound(bound: Bound, op: str, *, pool: Pool, perm: np.ndarray, batch: int, root: Path,
               dataset: Path | None = None) -> BoundRun:
    """The loop of ``bound`` for ``op`` over ``len(perm)`` positions; raises :class:`NoBound`.

    ``perm`` is the random order of the random and batch rows, ``root`` the
    cache directory the bound's store is built in, ``dataset`` the format's
    own dataset for a bound that reads it (``bound.reads_dataset``).  An op
    the bound is not measured for uses its scan (``info["op"]`` says which).
    The bound's files are read into the page cache: bounds always read warm.
    """
    b = bound.open(pool=pool, op=op, perm=perm, batch=batch, root=root, touch=touch, dataset=dataset)
    prewarm(b.files)
    return b
