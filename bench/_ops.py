"""The timed loops of the read benchmarks, shared by format rows and bound rows.

Every loop hands each sample's image to :func:`touch`, the cheapest consumer
that really reads it: readers may return lazy views into a memory map, and a
loop that never looks at the pixels would time nothing (and read nothing in a
cold round).  Bounds use the same consumer, so it cancels in the efficiency.

The patch rows add :class:`PatchPlan` (one seeded region per sample),
:func:`patch_reads` (their loop), :class:`RoundMeter` (bytes read from storage
and peak RSS per round, measured outside the timer) and :func:`patch_io_info`
(what those come to per patch: bytes read, read amplification, memory).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from storebench.workloads import random_region

from ._pagecache import PAGE, read_bytes
from ._results import peak_rss, reset_peak_rss

OPS = ("scan", "random", "batch")
#: The patch positions' own stream of the seed (so they are not the samples' own draws).
PATCH_STREAM = 0x70617463


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


# --------------------------------------------------------------------------- patches


#: (shape, dtype) of each source's images, by source path: read once per session.
_IMAGES: dict[str, list[tuple[tuple[int, ...], np.dtype]]] = {}


def source_images(source) -> list[tuple[tuple[int, ...], np.dtype]]:
    """``(shape, dtype)`` of every image of a source dataset (an npy memory map: no pixels read)."""
    key = str(source.path)
    if key not in _IMAGES:
        if len(_IMAGES) >= 4:
            _IMAGES.pop(next(iter(_IMAGES)))
        with source.open() as r:
            _IMAGES[key] = [(s.image.shape, s.image.dtype) for s in r]
    return _IMAGES[key]


def spatial(shape: Sequence[int]) -> tuple[int, ...]:
    """``(H, W)`` of an image shape, ``(D, H, W)`` of a volume's ``(D, H, W, C)``."""
    return tuple(shape[:3]) if len(shape) == 4 else tuple(shape[:2])


def patch_regions(shapes: Sequence[Sequence[int]], patch_for: Callable[[int], Sequence[int]],
                  seed: int) -> list[tuple[slice, ...]]:
    """One region per sample: ``patch_for(2 or 3)`` clipped to the image, at a position drawn
    from ``(seed, i)`` alone, so region ``i`` is the same for every ``n > i`` and every run."""
    out = []
    for i, shape in enumerate(shapes):
        sp = spatial(shape)
        out.append(random_region(sp, patch_for(len(sp)), np.random.default_rng([seed, i, PATCH_STREAM])))
    return out


@dataclass(frozen=True)
class PatchPlan:
    """What a patch row reads: a region of every sample, in a seeded order.

    ``nbytes[i]`` is the pixel bytes of sample ``i``'s patch, ``image_bytes[i]``
    of its whole image; ``patch_shape`` the asked patch (before clipping).
    """

    regions: list[tuple[slice, ...]]
    order: list[int]
    nbytes: list[int]
    image_bytes: list[int]
    patch_shape: tuple[int, ...]

    @classmethod
    def of(cls, images: Sequence[tuple[tuple[int, ...], np.dtype]], patch_for: Callable[[int], Sequence[int]],
           seed: int, order: Sequence[int]) -> PatchPlan:
        """The plan for images of ``(shape, dtype)``, visited in ``order``."""
        shapes = [s for s, _ in images]
        regions = patch_regions(shapes, patch_for, seed)
        nbytes, whole = [], []
        for (shape, dtype), r in zip(images, regions):
            item = np.dtype(dtype).itemsize
            channels = math.prod(shape[len(r):])
            nbytes.append(math.prod(sl.stop - sl.start for sl in r) * channels * item)
            whole.append(math.prod(shape) * item)
        ranks = {len(spatial(s)) for s in shapes} or {2}
        return cls(regions, [int(i) for i in order], nbytes, whole, tuple(patch_for(max(ranks))))

    @property
    def patch_bytes(self) -> int:
        """Pixel bytes of one round's patches."""
        return sum(self.nbytes[i] for i in self.order)

    def info(self) -> dict:
        """The static extra_info of a patch row (or its bound)."""
        n = max(len(self.order), 1)
        sides = [tuple(sl.stop - sl.start for sl in r) for r in self.regions]
        return {"patch_shape": list(self.patch_shape),
                "patch_clipped": any(s != self.patch_shape for s in sides),
                "patch_bytes": round(self.patch_bytes / n, 1),
                "image_mb_mean": round(sum(self.image_bytes) / max(len(self.image_bytes), 1) / 1e6, 3),
                "image_mb_max": round(max(self.image_bytes, default=0) / 1e6, 3)}


def patch_reads(reader, order: Sequence[int], regions: Sequence[tuple[slice, ...]]) -> int:
    """``reader.read_region(i, regions[i])`` for each ``i`` of ``order``; returns the count."""
    read = reader.read_region
    for i in order:
        touch(read(i, regions[i]))
    return len(order)


@dataclass
class RoundIO:
    """One round's bytes read from storage (``/proc/self/io``) and RSS: at its start and its peak."""

    read_bytes: int | None
    rss_start: int | None
    rss_peak: int | None


@dataclass
class RoundMeter:
    """Measures each round between :meth:`start` and :meth:`stop` (both outside the timer)."""

    rounds: list[RoundIO] = field(default_factory=list)
    _start: tuple[int | None, int | None] | None = None

    def start(self) -> None:
        rss = reset_peak_rss()  # the peak of this round, not of the whole session
        self._start = (read_bytes(), rss)

    def stop(self) -> None:
        if self._start is None:
            return
        b0, rss0 = self._start
        b1, peak = read_bytes(), peak_rss()
        self._start = None
        self.rounds.append(RoundIO(b1 - b0 if b0 is not None and b1 is not None else None,
                                   rss0, peak if rss0 is not None else None))


def amplification(bytes_read: float, patch_bytes: float) -> float | None:
    """Read amplification: bytes read from storage per byte of patch pixels (None without pixels)."""
    return bytes_read / patch_bytes if patch_bytes > 0 else None


def patch_io_info(rounds: Sequence[RoundIO], *, cold: bool, patches: int, patch_bytes: int,
                  gained_pages: Sequence[int] = (), page: int = PAGE) -> dict:
    """Per-patch storage reads and memory of a patch row from its rounds.

    Cold rows: ``read_bytes_per_patch`` (mean over rounds of ``/proc/self/io``'s
    ``read_bytes`` delta, divided by the patches of a round), ``amplification``
    (that over the mean patch's pixel bytes), and the same from the pages each
    round brought into the page cache (``cached_bytes_per_patch``,
    ``cache_amplification``: a lower bound where the kernel drops pages during
    a round).  Warm rows: those are None.  ``peak_rss_mb`` is the largest
    peak RSS of a round, ``rss_growth_mb`` the most a round's peak rose over
    its start: what reading the patches held in memory.
    """
    out: dict = {"read_bytes_per_patch": None, "amplification": None,
                 "cached_bytes_per_patch": None, "cache_amplification": None}
    per_patch = patch_bytes / patches if patches else 0
    reads = [r.read_bytes for r in rounds]
    if cold and reads and patches and all(b is not None for b in reads):
        per = sum(b for b in reads if b is not None) / (len(reads) * patches)
        amp = amplification(per, per_patch)
        out.update(read_bytes_per_patch=round(per, 1), amplification=None if amp is None else round(amp, 3))
    if cold and gained_pages and patches:
        per = sum(gained_pages) * page / (len(gained_pages) * patches)
        amp = amplification(per, per_patch)
        out.update(cached_bytes_per_patch=round(per, 1), cache_amplification=None if amp is None else round(amp, 3))
    peaks = [(r.rss_start, r.rss_peak) for r in rounds if r.rss_start is not None and r.rss_peak is not None]
    out["peak_rss_mb"] = round(max(p for _, p in peaks) / 1e6, 1) if peaks else None
    out["rss_growth_mb"] = round(max(max(p - s, 0) for s, p in peaks) / 1e6, 1) if peaks else None
    return out
