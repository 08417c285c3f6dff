"""Bound rows, the benchmark's side: the in-memory pool and opening a format's declared bound.

Which bound a format is measured against, and what the bound does, is the
format's declaration (:attr:`Format.bound`, see
:mod:`storebench.formats._bound`): ``floor`` and ``gather`` are reference
rows, ``decode-only[<id>]`` decodes an image format's own bytes in memory,
and ``bare-<library>`` rows are the bare use of a format's library on a
store built from the pool.  Nothing here names a format.

The patch rows' bound, ``patch-gather`` (:func:`patch_gather`), is the same
regions copied out of the pool's images held in memory, ``np.array(img[region])``
per patch: what a patch costs once nothing has to be read or decoded.

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
from storebench.formats._bound import FLOOR, GATHER, PREAD, Bound, BoundRun, NoBound, Pool

from ._data import Dataset, pool_size
from ._ops import patch_regions, touch
from ._pagecache import prewarm

__all__ = ["FLOOR", "GATHER", "PATCH_GATHER", "POOL_BYTES", "PREAD", "Bound", "BoundRun", "NoBound", "Pool",
           "make_pool", "open_bound", "patch_gather"]

POOL_BYTES = 32 << 20
#: The bound of the patch rows: the same regions copied out of the pool's images in memory.
PATCH_GATHER = "patch-gather"


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


def patch_gather(pool: Pool, order, patch_for, seed: int) -> BoundRun:
    """``np.array(image[region])`` for each position ``i`` of ``order``: pool image ``i % m`` and the
    region :func:`~bench._ops.patch_regions` draws for position ``i`` on it.

    For the pool's samples (the dataset's first ``m``) these are the format's own
    patches; past them, distinct regions of the same size on the pool's images,
    so the bound copies as many different patches as the format reads (not the
    same ``m`` patches again from the CPU's caches).
    """
    images, m = [a[1] for a in pool.args], pool.m
    n = int(np.max(order)) + 1 if len(order) else 0
    regions = patch_regions([images[i % m].shape for i in range(n)], patch_for, seed)
    pairs = [(images[i % m], regions[i]) for i in np.asarray(order, np.int64).tolist()]

    def run():
        for img, region in pairs:
            touch(np.array(img[region]))
        return len(pairs)
    return BoundRun(run, name=PATCH_GATHER, info={"bound": PATCH_GATHER, "op": "patch", "pool_size": m})
