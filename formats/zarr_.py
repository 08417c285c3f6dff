"""zarr: all pixels in one flat, chunked, optionally compressed zarr v3 array.

``data.zarr`` is a zarr format 3 group: ``pixels`` is a 1-D uint8 array of
every image's bytes back to back, cut into ``chunk_kib`` chunks (the npy /
hdf5 layout), and the group ``index`` holds offsets, shapes, keys, labels,
boxes and metadata as plain arrays, so any zarr 3 reader can open it.  One
flat array rather than an array per image shape: ragged sizes need no
buckets, writes stream in whole chunks and scans read chunks in order.

Pick it for chunked, compressed arrays on local disks or object stores and
for interop with the scientific Python stack.  Caveats: zarr-python 3 sends
every read through its asyncio I/O thread (hundreds of microseconds per
``r[i]``) and decodes whole chunks; the last chunk is stored full size; a
chunk file deleted behind zarr's back before the reader opens reads as zeros
(its fill value), which only ``verify`` notices (the reader opens chunks
relative to the directory it opened, so one deleted or written over after
that is a DatasetError).
"""
from __future__ import annotations

import asyncio
import os
from functools import partial
from pathlib import Path

import numpy as np
import zarr
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype

from ._api import DatasetError, Format, Reader
from ._bound import Bound, BoundInput, BoundRun, named
from ._fs import OpenDir, dataset_files, read_file
from ._index import DTYPES, Index, IndexWriter

CODECS = ("none", "zstd", "blosc")
BLOCK = 4 << 20  # bytes per append while writing and per read while scanning


class Zarr(Format):
    name = "zarr"
    bench_variants = ({}, {"codec": "zstd"})
    random_access = False  # r[i] reads and decodes every chunk its bytes touch (1 MiB by default)
    libraries = ("zarr", "numcodecs")

    def __init__(self, codec: str = "none", level: int = 3, chunk_kib: int = 1024):
        if codec not in CODECS:
            raise ValueError(f"codec: must be one of {CODECS}, got {codec!r}")
        if not 1 <= chunk_kib <= 1 << 20:
            raise ValueError(f"chunk_kib: must be in 1..{1 << 20}, got {chunk_kib!r}")
        self.codec, self.level, self.chunk_kib = codec, level, chunk_kib

    @property
    def bound(self) -> Bound:
        """bare-zarr with this format's codec and chunks."""
        return Bound(named("bare-zarr", self), partial(bare_zarr, fmt=self))

    def info(self):
        return {"zarr": zarr.__version__, "zarr_format": 3}

    def _compressors(self):
        if self.codec == "zstd":
            return ZstdCodec(level=self.level)
        if self.codec == "blosc":  # lz4 inside blosc: fast, multithreaded, modest ratio
            return BloscCodec(typesize=1, cname="lz4", clevel=self.level, shuffle="bitshuffle")
        return None

    def _write(self, samples, root: Path):
        group = zarr.open_group(zarr.storage.LocalStore(root / "data.zarr"), mode="w",
                                zarr_format=3)
        chunk = self.chunk_kib * 1024
        pixels = None

        def append(data):  # created on the first append: a tiny dataset gets one small chunk
            nonlocal pixels
            if pixels is None:
                pixels = group.create_array("pixels", shape=(0,), dtype="uint8", fill_value=0,
                                            chunks=(max(1, min(chunk, data.size)),),
                                            compressors=self._compressors())
            pixels.append(data)

        index = IndexWriter(columns=("offset",))
        block = np.empty(max(chunk, BLOCK - BLOCK % chunk), np.uint8)  # whole chunks only
        fill = pos = 0
        for s in samples:
            index.add(s, offset=pos)
            data = np.ascontiguousarray(s.image).reshape(-1).view(np.uint8)
            pos += data.size
            while data.size:
                k = min(data.size, block.size - fill)
                block[fill:fill + k] = data[:k]
                fill, data = fill + k, data[k:]
                if fill == block.size:  # appends stay chunk-aligned: no read-modify-write
                    append(block)
                    fill = 0
        if fill or pixels is None:
            append(block[:fill])
        arrays = index.arrays()
        group.create_group("index", attributes={"columns": list(arrays)})
        for name, arr in arrays.items():
            group.create_array(f"index/{name}", data=arr, compressors=None,
                               chunks=tuple(max(1, n) for n in arr.shape))


class _PinnedStore(zarr.storage.LocalStore):
    """A read-only LocalStore that reads keys relative to a held directory descriptor.

    LocalStore opens ``root / key`` by path on every read, so a dataset written
    over meanwhile would hand the reader the new chunks, and one deleted would
    read as zeros (a missing chunk is the fill value).  Here a key opens
    relative to ``dir`` (``data.zarr`` of the pinned dataset), and a key that
    was there at open and is gone now is a DatasetError, never zeros.
    """

    def __init__(self, root: Path, dir: OpenDir, dataset: Path):
        super().__init__(root, read_only=True)
        self._dir, self._dataset = dir, dataset
        self._present = {os.path.join(top, f)[2:] for top, _d, files, _fd in os.fwalk(".", dir_fd=dir.fd)
                         for f in files}

    def _read(self, key: str, prototype, byte_range):
        try:
            buf = read_file(key, dir_fd=self._dir.fd)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            if key in self._present:
                raise DatasetError(self._dataset, f"data.zarr/{key} is gone: the dataset was deleted "
                                   "or written over since it was opened") from None
            return None  # never written: zarr leaves out chunks that are all fill value
        if isinstance(byte_range, RangeByteRequest):
            buf = buf[byte_range.start:byte_range.end]
        elif isinstance(byte_range, OffsetByteRequest):
            buf = buf[byte_range.offset:]
        elif isinstance(byte_range, SuffixByteRequest):
            buf = buf[max(0, len(buf) - byte_range.suffix):]
        return (prototype or default_buffer_prototype()).buffer.from_bytes(buf)

    async def get(self, key, prototype=None, byte_range=None):
        return await asyncio.to_thread(self._read, key, prototype, byte_range)

    def get_sync(self, key, *, prototype=None, byte_range=None):
        return self._read(key, prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]


class ZarrReader(Reader):
    def _open_handles(self):
        try:
            zdir = OpenDir("data.zarr", self._dir_fd)
        except OSError as err:
            raise DatasetError(self.path, f"data.zarr is missing: {err}") from err
        try:
            store = _PinnedStore(self.path / "data.zarr", zdir, self.path)
            group = zarr.open_group(store, mode="r")
            pixels = group["pixels"]
            names = group["index"].attrs["columns"]
            arrays = {name: group[f"index/{name}"][...] for name in names}
        except (OSError, KeyError, ValueError, TypeError) as err:
            zdir.close()
            if isinstance(err, DatasetError):
                raise
            if isinstance(err, PermissionError):  # not damage; zarr drops the file name
                raise PermissionError(err.errno, err.strerror, err.filename or str(self.path / "data.zarr")) from err
            raise DatasetError(self.path, f"data.zarr is missing or damaged: {err!r}") from err
        self._zdir = zdir
        try:
            index = Index(arrays, self.path, ("offset",), self._n)
            start, (h, w, c) = index.columns["offset"], index.shape.T
            end = start + h * w * np.maximum(c, 1) * np.array([d.itemsize for d in DTYPES])[index.dtype]
            if pixels.dtype != np.uint8 or pixels.ndim != 1 or \
                    (index.n and (start.min() < 0 or end.max() > pixels.shape[0])):
                raise DatasetError(self.path, "index does not match data.zarr/pixels (truncated?)")
        except BaseException:
            zdir.close()
            raise
        self._index = index
        self._span = list(zip(start.tolist(), end.tolist()))
        return pixels

    def _close_handles(self, handles):
        self._zdir.close()

    def _get(self, a: int, b: int) -> np.ndarray:
        try:
            return self._handles[a:b]
        except DatasetError:
            raise
        except (OSError, ValueError, RuntimeError) as err:
            raise DatasetError(self.path, f"pixels[{a}:{b}] do not decode: {err!r}") from err

    def _sample(self, i: int, buf: np.ndarray):
        index = self._index
        return index.sample(i, buf.view(index.image_dtype[i]).reshape(index.image_shape[i]))

    def _read(self, i):
        return self._sample(i, self._get(*self._span[i]))

    def _read_many(self, idx):
        # A run of samples less than a chunk apart (each chunk decoded once) and at most BLOCK
        # long is one zarr read; images are copied out so that the run's buffer is freed.
        span, chunk, idx = self._span, self._handles.chunks[0], idx.tolist()
        runs: list[list[int]] = []
        for j in sorted(range(len(idx)), key=idx.__getitem__):
            a, b = span[idx[j]]
            run = runs[-1] if runs else None
            if run and a - span[idx[run[-1]]][1] <= chunk and b - span[idx[run[0]]][0] <= BLOCK:
                run.append(j)
            else:
                runs.append([j])
        out = [None] * len(idx)
        for run in runs:
            lo = span[idx[run[0]]][0]
            buf = self._get(lo, max(span[idx[r]][1] for r in run))
            for r in run:
                a, b = span[idx[r]]
                out[r] = self._sample(idx[r], buf[a - lo:b - lo].copy())
        return out

    def _iter(self):
        chunk, lo, hi = self._handles.chunks[0], 0, 0
        for i, (a, b) in enumerate(self._span):
            if b > hi:  # read on from a to a chunk boundary at least BLOCK further
                lo, hi = a, max(b, -(-(a + BLOCK) // chunk) * chunk)
                buf = self._get(lo, min(hi, self._handles.shape[0]))
            yield self._sample(i, buf[a - lo:b - lo])


Zarr.reader = ZarrReader


def bare_zarr(c: BoundInput, fmt: Zarr) -> BoundRun:
    """``arr[a:b]`` + a view + Sample on one flat zarr array of the pool's pixels, with ``fmt``'s
    codec and chunks: one slice per image, or per ``BLOCK`` bytes cut into images for a scan."""
    pool, touch = c.pool, c.touch
    spans, spec = pool.spans(), [(a[1].dtype, a[1].shape) for a in pool.args]

    def make(tmp: Path):
        flat = pool.flat()
        arr = zarr.create_array(zarr.storage.LocalStore(tmp), shape=flat.shape, dtype="uint8",
                                chunks=(min(fmt.chunk_kib << 10, flat.size),), compressors=fmt._compressors(),
                                fill_value=0, zarr_format=3)
        arr[:] = flat

    path = c.store(f"bare-{fmt.codec}-{fmt.level}-{fmt.chunk_kib}.zarr", make)
    arr = zarr.open_array(zarr.storage.LocalStore(path, read_only=True), mode="r")

    def image(i, buf):
        dt, sh = spec[i]
        return buf.view(dt).reshape(sh)
    if c.op != "scan":
        return BoundRun(c.each(lambda i: image(i, arr[spans[i][0]:spans[i][1]])), files=dataset_files(path))
    blocks, i = [], 0  # (first, last + 1) of runs of pool positions up to BLOCK bytes
    while i < pool.m:
        j = i + 1
        while j < pool.m and spans[j][1] - spans[i][0] <= BLOCK:
            j += 1
        blocks.append((i, j))
        i = j
    n, sample = len(c.order), pool.sample

    def run():
        k = 0
        while k < n:
            for i, j in blocks:
                lo = spans[i][0]
                out = arr[lo:spans[j - 1][1]]
                for p in range(i, min(j, i + n - k)):
                    touch(sample(p, image(p, out[spans[p][0] - lo:spans[p][1] - lo])).image)
                k += min(j - i, n - k)
                if k == n:
                    break
        return k
    return BoundRun(run, files=dataset_files(path))
