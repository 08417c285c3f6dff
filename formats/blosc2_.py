"""blosc2: one compressed, chunked ``.b2nd`` array per sample, the layout nnU-Net v2 trains from.

``images/00000003.b2nd`` is a python-blosc2 NDArray of the image exactly
(``(H, W)``, ``(H, W, C)`` or ``(D, H, W, C)``), so ``blosc2.open(path)[:]``
gives it back; ``index.npz`` holds keys, labels, boxes, metadata, shapes and
dtypes.  Chunk and block shapes derive from ``patch`` (the training patch
side, default 224 for images and 64 for volumes) as nnU-Net's
``comp_blosc2_params`` derives them: blocks start at half the patch, a power
of two, and shrink until one fits 80% of a 32 KiB L1 cache, and chunks grow
by blocks until one fills 80% of a 1.375 MiB share of L3 (768x768 for a
2048x2048 uint16 image, blocks 64x64).  Channels stay whole in every block.
A region read decompresses only the blocks it overlaps.  Compression:
``codec`` (zstd by default, nnU-Net's, or lz4, lz4hc, blosclz, zlib) at
``clevel`` (8, nnU-Net's) with blosc2's byte shuffle.  ``nthreads=1``:
decompression is single-threaded, as in nnU-Net, where parallelism comes
from the DataLoader's worker processes.

Reading maps each file (relative to the dataset's directory held open) with
``MADV_RANDOM`` and hands the map to ``blosc2.ndarray_from_cframe``, the
in-memory twin of ``blosc2.open(path, mmap_mode="r")`` (nnU-Net's call), so a
fault reads its own page only.  Measured cold on 2048x2048 uint16 images
(7.2 MB compressed with zstd, a disk with ``read_ahead_kb`` 8192): a 64x64
region reads 49 kB (4 blocks), a 224x224 one 178 kB (1.8x the patch), where
``blosc2.open(mmap_mode="r")`` reads 7.2 MB at open and 6.8 MB for each cold
64x64 region after that (the kernel reads 8 MiB around every fault of a
plain map).  A whole read asks for the file with ``MADV_WILLNEED`` first.

Pick it for random patches of large images and volumes under a tight disk or
page-cache budget.  Caveats: every read decompresses, on one thread: a warm
224x224 uint16 patch costs 0.6 ms with zstd, 0.16 ms with lz4, and a cold
scan runs at 130 MB/s with zstd, 330 MB/s with lz4; the 128 most recently
used files stay mapped; reads of one array take its lock (a decompression
context is not shared between threads).
"""
from __future__ import annotations

import functools
import math
import os
import threading
from pathlib import Path

import blosc2
import numpy as np

from ._api import DatasetError, Format, Reader
from ._bound import Bound, BoundInput, BoundRun, named
from ._fs import OpenDir
from ._index import Index, IndexWriter
from ._mmap import FileMap, MapCache, RssBudget

IMAGES = "images"
CODECS = {"zstd": blosc2.Codec.ZSTD, "lz4": blosc2.Codec.LZ4, "lz4hc": blosc2.Codec.LZ4HC,
          "blosclz": blosc2.Codec.BLOSCLZ, "zlib": blosc2.Codec.ZLIB}
#: nnU-Net's cache sizes (an Intel Xeon 4110 core's L1 and share of L3) and safety factor.
L1, L3, SAFETY = 32768, 1441792, 0.8
PATCH_2D, PATCH_3D = 224, 64
CACHE = 128  # per-sample arrays kept open (each a map, which holds a descriptor)
# What blosc2 raises on a damaged frame or chunk.
_BROKEN = (RuntimeError, ValueError, TypeError, KeyError, IndexError, OverflowError, MemoryError, OSError)


def _name(i: int) -> str:
    return f"{IMAGES}/{i:08d}.b2nd"


def chunks_and_blocks(shape: tuple[int, ...], itemsize: int, patch: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(chunks, blocks) for an image of ``shape`` and ``itemsize``, trained on ``patch``-sided patches.

    nnU-Net v2's rule (``comp_blosc2_params``) for channel-last arrays: the
    spatial axes are the first two, or three for a ``(D, H, W, C)`` volume;
    the channel axis is whole.  A block side starts at the power of two at or
    below half the patch (at most the image side), and the largest side is
    cut to the next power of two down until the block fits ``SAFETY * L1``
    (sides already the image's are cut last); the chunk then grows one
    block at a time along its least grown axis until it reaches
    ``SAFETY * L3`` or the whole image.
    """
    nsp = 3 if len(shape) == 4 else 2
    sides, per = list(shape[:nsp]), itemsize * math.prod(shape[nsp:])
    block = [min(s, 2 ** max(0, math.floor(math.log2(patch / 2)))) for s in sides]
    while math.prod(block) * per > SAFETY * L1 and max(block) > 1:
        # The largest side (ties: the last axis), one short of the image's side first, as nnU-Net.
        axes = [a for a in range(nsp) if 1 < block[a] < sides[a]] or [a for a in range(nsp) if block[a] > 1]
        k = max(axes, key=lambda a: (block[a], a))
        block[k] = 2 ** math.floor(math.log2(block[k] - 1))  # the next power of two down
    chunk = list(block)
    while math.prod(chunk) * per < SAFETY * L3 and chunk != sides:
        k = min((a for a in range(nsp) if chunk[a] < sides[a]), key=lambda a: (chunk[a] / block[a], a))
        chunk[k] = min(chunk[k] + block[k], sides[k])
    rest = list(shape[nsp:])
    return tuple(chunk + rest), tuple(block + rest)


class Blosc2(Format):
    name = "blosc2"
    local_only = 'blosc2.open reads local files (its remote arrays are served by a Caterva2 server, not S3)'
    partial_reads = True
    libraries = ("blosc2",)
    bench_variants = ({}, {"codec": "lz4"})

    def __init__(self, codec: str = "zstd", clevel: int = 8, patch: int | None = None, nthreads: int = 1):
        if codec not in CODECS:
            raise ValueError(f"codec: must be one of {tuple(CODECS)}, got {codec!r}")
        if type(clevel) is not int or not 0 <= clevel <= 9:
            raise ValueError(f"clevel: must be an int in 0..9, got {clevel!r}")
        if patch is not None and (type(patch) is not int or patch < 1):
            raise ValueError(f"patch: must be None (224 for images, 64 for volumes) or a positive int, got {patch!r}")
        if type(nthreads) is not int or nthreads < 1:
            raise ValueError(f"nthreads: must be a positive int, got {nthreads!r}")
        self.codec, self.clevel, self.patch, self.nthreads = codec, clevel, patch, nthreads

    @property
    def bound(self) -> Bound:
        """bare-blosc2 with this format's codec, level and patch."""
        return Bound(named("bare-blosc2", self), functools.partial(bare_blosc2, fmt=self))

    def info(self):
        return {"blosc2": blosc2.__version__}

    def _cparams(self) -> dict:
        return {"codec": CODECS[self.codec], "clevel": self.clevel, "nthreads": self.nthreads}

    def save(self, img: np.ndarray, path: Path) -> None:
        """Write ``img`` as a ``.b2nd`` file at ``path``, with this format's chunks, blocks and codec."""
        patch = self.patch or (PATCH_3D if img.ndim == 4 else PATCH_2D)
        chunks, blocks = chunks_and_blocks(img.shape, img.itemsize, patch)
        blosc2.asarray(np.ascontiguousarray(img), urlpath=str(path), mode="w", contiguous=True,
                       chunks=chunks, blocks=blocks, cparams=self._cparams())

    def _write(self, samples, root: Path):
        (root / IMAGES).mkdir()
        index = IndexWriter()
        for i, s in enumerate(samples):
            self.save(s.image, root / _name(i))
            index.add(s)
        index.save(root / "index.npz")


class _Array:
    """One open ``.b2nd``: the NDArray over its map, and the lock its reads take."""

    __slots__ = ("arr", "fmap", "lock")

    def __init__(self, arr, fmap: FileMap):
        self.arr, self.fmap, self.lock = arr, fmap, threading.Lock()


def _open_array(dataset: Path, index: Index, dir_fd: int, nthreads: int, i: int) -> _Array:
    """Map ``images/{i:08d}.b2nd`` (relative to ``images/`` held open), checked against the index."""
    try:
        fmap = FileMap.open(f"{i:08d}.b2nd", dir_fd, "random")
    except FileNotFoundError as err:
        raise DatasetError(dataset, f"{_name(i)} is missing") from err
    except PermissionError as err:  # not damage; name the file in full
        raise PermissionError(err.errno, err.strerror, str(dataset / _name(i))) from err
    except ValueError as err:  # mmap of an empty file
        raise DatasetError(dataset, f"{_name(i)} is empty") from err
    try:
        arr = blosc2.ndarray_from_cframe(fmap.mm)  # no copy: decoding reads the map
        arr.schunk.dparams = blosc2.DParams(nthreads=nthreads)
        shape, dtype = tuple(arr.shape), np.dtype(arr.dtype)
    except _BROKEN as err:
        raise DatasetError(dataset, f"{_name(i)} is not a readable blosc2 array: {type(err).__name__}: {err}") from err
    if shape != index.image_shape[i] or dtype != index.image_dtype[i]:
        raise DatasetError(dataset, f"{_name(i)} holds {dtype} {shape}, the index says "
                           f"{index.image_dtype[i]} {index.image_shape[i]}")
    return _Array(arr, fmap)


class _Handles:
    def __init__(self, images: OpenDir, arrays: MapCache):
        self.images, self.arrays = images, arrays

    def close(self) -> None:
        self.arrays.clear()
        self.images.close()


class Blosc2Reader(Reader):
    def _open_handles(self):
        index = Index.load(self.path / "index.npz", self.path, count=self._n)
        try:  # images/ of the pinned dataset: each file opens relative to it
            images = OpenDir(IMAGES, self._dir_fd)
        except OSError as err:
            raise DatasetError(self.path, f"{IMAGES}/ folder is missing") from err
        self._index = index
        arrays = MapCache(functools.partial(_open_array, self.path, index, images.fd, self.format.nthreads), CACHE)
        self._budget = RssBudget(lambda: [a.fmap for a in arrays.values()])
        return _Handles(images, arrays)

    def _decode(self, i: int, where) -> np.ndarray:
        a = self._handles.arrays.get(i)
        if where is Ellipsis:
            a.fmap.prefetch([(0, a.fmap.size)])  # the whole file, in large reads
        try:
            with a.lock:
                out = a.arr[where]
        except _BROKEN as err:
            raise DatasetError(self.path, f"{_name(i)} does not decode: {type(err).__name__}: {err}") from err
        self._budget.charge_random(a.fmap.size if where is Ellipsis else out.nbytes)
        return out

    def _read(self, i):
        return self._index.sample(i, self._decode(i, Ellipsis))

    def _read_region(self, i, region):
        return self._decode(i, region)


Blosc2.reader = Blosc2Reader


def bare_blosc2(c: BoundInput, fmt: Blosc2) -> BoundRun:
    """``blosc2.open(path, mmap_mode="r")[...]`` + Sample, nnU-Net's read, on one ``.b2nd`` per pool
    image written with ``fmt``'s options; the :data:`CACHE` most recently used arrays stay open."""
    pool = c.pool

    def make(tmp: Path):
        tmp.mkdir()
        for k, a in enumerate(pool.args):
            fmt.save(a[1], tmp / f"{k:08d}.b2nd")

    path = c.store(f"bare-blosc2-{fmt.codec}-{fmt.clevel}-{fmt.patch}", make)
    dparams = {"nthreads": fmt.nthreads}

    @functools.lru_cache(maxsize=CACHE)
    def array(k):
        return blosc2.open(os.fspath(path / f"{k:08d}.b2nd"), mmap_mode="r", dparams=dparams)
    return BoundRun(c.each(lambda k: array(k)[...]), close=array.cache_clear, files=sorted(path.iterdir()))
