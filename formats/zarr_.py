"""zarr: a zarr v3 group of raw pixels, as one flat chunked array or one N-D array per sample.

``data.zarr`` is a zarr format 3 group in one of two layouts, each with the
group ``index`` (shapes, dtypes, keys, labels, boxes, metadata and the flat
layout's offsets as plain arrays), so any zarr 3 reader (zarr-python,
tensorstore) opens it:

* ``chunks=None`` (the default): ``pixels`` is a 1-D uint8 array of every
  image's bytes back to back, cut into ``chunk_kib`` chunks (the npy / hdf5
  layout).  Ragged sizes need no buckets, writes stream in whole chunks and
  scans read chunks in order; ``r[i]`` decodes every chunk its bytes touch.
* ``chunks=N``: ``images/<position>`` is each sample's own array with its
  dtype and shape, (H, W), (H, W, C) or (D, H, W, C), chunked N along every
  spatial axis (clipped to the image; channels whole): ``N=64`` is 64x64
  tiles of an image, 64^3 blocks of a volume.  ``read_region`` decodes only
  the chunks the region overlaps (``partial_reads``), as patch training needs.

``engine`` picks what reads the pixels of the same files: zarr-python, or
tensorstore's zarr3 driver (C++, chunks read concurrently; several times less
overhead per read at patch size).  The index is read with zarr-python either
way.

Pick it for chunked, compressed arrays on local disks or object stores, for
interop with the scientific Python stack, and (``chunks``) for patches of
large images and volumes.  Caveats: zarr-python 3 sends every read through its
asyncio I/O thread (a millisecond or more per ``r[i]``) and its per-sample
arrays cost as much to open (a reader keeps the last ``HANDLES`` open);
tensorstore aborts a process forked after it started its threads, so with
``engine="tensorstore"`` a fork of a process that has read is refused with a
RuntimeError: use spawn or forkserver workers.  The flat layout stores its
last chunk full size, and a chunk file deleted before the reader opens reads
as zeros (zarr leaves out all-zero chunks; only ``verify`` notices); per-sample
arrays store every chunk, so a missing one is a DatasetError.  The reader reads
relative to the directory it opened (tensorstore through
``/proc/self/fd/<fd>``), so a file deleted or written over after that is a
DatasetError, never another dataset's pixels.
"""
from __future__ import annotations

import asyncio
import errno
import os
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import zarr
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.core.array_spec import ArrayConfigParams
from zarr.core.buffer import default_buffer_prototype

from ._api import DatasetError, Format, Reader
from ._bound import Bound, BoundInput, BoundRun, named
from ._fs import OpenDir, dataset_files, read_file
from ._index import DTYPES, Index, IndexWriter

CODECS = ("none", "zstd", "blosc")
ENGINES = ("zarr", "tensorstore")
BLOCK = 4 << 20  # bytes per append while writing and per read while scanning (flat layout)
HANDLES = 1024  # per-sample arrays a reader keeps open, least recently used dropped first
#: Per-sample arrays store every chunk, all-zero ones too: a missing chunk is damage, never zeros.
ALL_CHUNKS: ArrayConfigParams = {"order": "C", "write_empty_chunks": True}
_TS_PID: int | None = None  # the process in which this module first opened a tensorstore array


def chunk_shape(shape: tuple[int, ...], side: int) -> tuple[int, ...]:
    """``side`` along each spatial axis of ``shape``, clipped to it; the channel axis whole."""
    spatial = 3 if len(shape) == 4 else 2
    return tuple(min(side, n) for n in shape[:spatial]) + tuple(shape[spatial:])


class Zarr(Format):
    name = "zarr"
    bench_variants = ({}, {"codec": "zstd"}, {"chunks": 64}, {"engine": "tensorstore"},
                      {"chunks": 64, "engine": "tensorstore"})
    libraries = ("zarr", "numcodecs", "tensorstore")

    def __init__(self, codec: str = "none", level: int = 3, chunk_kib: int = 1024, chunks: int | None = None,
                 engine: str = "zarr"):
        if codec not in CODECS:
            raise ValueError(f"codec: must be one of {CODECS}, got {codec!r}")
        if not 1 <= chunk_kib <= 1 << 20:
            raise ValueError(f"chunk_kib: must be in 1..{1 << 20}, got {chunk_kib!r}")
        if chunks is not None and (type(chunks) is not int or chunks < 1):
            raise ValueError(f"chunks: must be None (one flat array) or a chunk side >= 1, got {chunks!r}")
        if chunks is not None and chunk_kib != 1024:
            raise ValueError(f"chunk_kib: sizes the flat layout's chunks; with chunks={chunks} each sample's "
                             f"chunks are {chunks} along every spatial axis, got chunk_kib={chunk_kib!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine: must be one of {ENGINES}, got {engine!r}")
        self.codec, self.level, self.chunk_kib, self.chunks, self.engine = codec, level, chunk_kib, chunks, engine

    @property
    def partial_reads(self) -> bool:  # type: ignore[override]  # an option decides it
        """Per-sample arrays: a region decodes only the chunks it overlaps."""
        return self.chunks is not None

    @property
    def fork_safe(self) -> bool:  # type: ignore[override]  # an option decides it
        """tensorstore's threads do not survive fork: its readers need spawn or forkserver workers."""
        return self.engine != "tensorstore"

    @property
    def random_access(self) -> bool:  # type: ignore[override]  # an option decides it
        """Per-sample arrays: ``r[i]`` decodes that sample's chunks only; flat: whole 1 MiB chunks."""
        return self.chunks is not None

    @property
    def remote_reads(self) -> str | None:  # type: ignore[override]  # an option decides it
        """zarr-python: FsspecStore over pyarrow's S3 file system, a chunk (or a byte range of one) per GET."""
        return "ranges" if self.engine == "zarr" else None

    @property
    def local_only(self) -> str:  # type: ignore[override]  # an option decides it
        return ("the tensorstore engine reads through tensorstore's file kvstore here (its s3 kvstore is "
                "not wired to storebench's storage options); use engine='zarr' for s3://")

    @property
    def bound(self) -> Bound:
        """bare-zarr with this format's layout, codec, chunks and engine."""
        return Bound(named("bare-zarr", self), partial(bare_zarr, fmt=self))

    def info(self):
        out: dict[str, Any] = {"zarr": zarr.__version__, "zarr_format": 3, "engine": self.engine}
        if self.engine == "tensorstore":
            out["tensorstore"] = type(self).library_versions().get("tensorstore")
        return out

    def _compressors(self, itemsize: int = 1):
        if self.codec == "zstd":
            return ZstdCodec(level=self.level)
        if self.codec == "blosc":  # lz4 inside blosc: fast, multithreaded, modest ratio
            return BloscCodec(typesize=itemsize, cname="lz4", clevel=self.level, shuffle="bitshuffle")
        return None

    def _write(self, samples, root: Path):
        group = zarr.open_group(zarr.storage.LocalStore(root / "data.zarr"), mode="w",
                                zarr_format=3)
        index = self._write_flat(samples, group) if self.chunks is None else self._write_arrays(samples, group)
        arrays = index.arrays()
        group.create_group("index", attributes={"columns": list(arrays)})
        for name, arr in arrays.items():
            group.create_array(f"index/{name}", data=arr, compressors=None,
                               chunks=tuple(max(1, n) for n in arr.shape))

    def _write_arrays(self, samples, group) -> IndexWriter:
        images, index, side = group.create_group("images"), IndexWriter(), self.chunks
        assert side is not None
        for i, s in enumerate(samples):  # one sample in memory at a time
            index.add(s)
            img = s.image
            arr = images.create_array(str(i), shape=img.shape, dtype=img.dtype, chunks=chunk_shape(img.shape, side),
                                      compressors=self._compressors(img.dtype.itemsize), fill_value=0,
                                      config=ALL_CHUNKS)
            arr[...] = img
        return index

    def _write_flat(self, samples, group) -> IndexWriter:
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
        return index


class _PinnedStore(zarr.storage.LocalStore):
    """A read-only LocalStore that reads keys relative to a held directory descriptor.

    LocalStore opens ``root / key`` by path on every read, so a dataset written
    over meanwhile would hand the reader the new chunks, and one deleted would
    read as zeros (a missing chunk is the fill value).  Here a key opens
    relative to ``dir`` (``data.zarr`` of the pinned dataset), and a key that
    was there at open (``present``), or any key under ``images/`` (every chunk
    of a per-sample array is written), and is gone now is a DatasetError,
    never zeros.
    """

    def __init__(self, root: Path, dir: OpenDir, dataset: Path, present: set[str]):
        super().__init__(root, read_only=True)
        self._dir, self._dataset, self._present = dir, dataset, present

    def _read(self, key: str, prototype, byte_range):
        try:
            buf = read_file(key, dir_fd=self._dir.fd)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            if key in self._present or key.startswith("images/"):
                raise DatasetError(self._dataset, f"data.zarr/{key} is missing: the dataset was deleted "
                                   "or written over since it was opened, or is damaged") from None
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


class _NoDir:
    fd = -1

    def close(self) -> None:
        pass


def _remote_store(remote, present: set[str]):
    """zarr's FsspecStore over fsspec's wrapper of pyarrow's S3 file system, read-only, where a key
    that was listed at open (or any under ``images/``) and is gone is a DatasetError, never zeros."""
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

    class _Store(zarr.storage.FsspecStore):
        async def get(self, key, prototype=None, byte_range=None):
            out = await super().get(key, prototype or default_buffer_prototype(), byte_range)
            if out is None and (key in present or key.startswith("images/")):
                raise DatasetError(remote, f"data.zarr/{key} is missing or unreadable in the object store")
            return out

    fs = AsyncFileSystemWrapper(remote.fsspec_fs(), asynchronous=True)
    return _Store(fs, read_only=True, path=remote.key("data.zarr"))


def _files_under(top: str, dir_fd: int) -> set[str]:
    """Keys (paths relative to ``dir_fd``) of the files under ``top``; none if it is not there."""
    return {os.path.join(d, f) for d, _dirs, files, _fd in os.fwalk(top, dir_fd=dir_fd) for f in files}


def _exists(key: str, dir_fd: int) -> bool:
    try:
        os.stat(key, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def _tensorstore():
    """The tensorstore module, refused in a process forked after this module opened tensorstore
    arrays in its parent: tensorstore aborts the process there."""
    global _TS_PID
    try:
        import tensorstore as ts
    except ImportError as err:
        raise ModuleNotFoundError(f"zarr's engine='tensorstore' needs tensorstore: pip install tensorstore "
                                  f"({err})") from err
    pid = os.getpid()
    if _TS_PID is None:
        _TS_PID = pid
    elif _TS_PID != pid:
        raise RuntimeError(f"zarr[engine=tensorstore] cannot read in process {pid}: it was forked from a "
                           "process that used tensorstore, whose threads do not survive fork (tensorstore "
                           "aborts); use the spawn or forkserver start method (DataLoader "
                           "multiprocessing_context='spawn')")
    return ts


def _ts_spec(path: str, strict: bool) -> dict:
    # strict: a missing chunk is an error, not the fill value (per-sample arrays store every chunk).
    spec: dict[str, Any] = {"driver": "zarr3", "kvstore": {"driver": "file", "path": path}}
    if strict:
        spec["fill_missing_data_reads"] = False
    return spec


class ZarrReader(Reader):
    def _open_handles(self):
        flat = self.manifest["options"].get("chunks") is None  # the layout the dataset was written in
        zdir: Any
        if self.remote is not None:  # zarr's FsspecStore over pyarrow's S3 file system: ranged GETs
            zdir = _NoDir()
        else:
            try:
                zdir = OpenDir("data.zarr", self._dir_fd)
            except OSError as err:
                raise DatasetError(self.path, f"data.zarr is missing: {err}") from err
        try:
            if self.remote is not None:
                present = {k[len("data.zarr/"):] for k in self.remote.sizes() if k.startswith("data.zarr/")}
                store = _remote_store(self.remote, present)
            else:
                present = _files_under("index", zdir.fd) | (_files_under("pixels", zdir.fd) if flat else set())
                store = _PinnedStore(self.path / "data.zarr", zdir, self.path, present)
            group = zarr.open_group(store, mode="r", zarr_format=3)
            pixels = group["pixels"] if flat else None
            names = group["index"].attrs["columns"]
            arrays = {name: group[f"index/{name}"][...] for name in names}
        except (OSError, KeyError, ValueError, TypeError) as err:
            zdir.close()
            if isinstance(err, DatasetError):
                raise
            if isinstance(err, PermissionError):  # not damage; zarr drops the file name
                raise PermissionError(err.errno, err.strerror, err.filename or str(self.path / "data.zarr")) from err
            raise DatasetError(self.path, f"data.zarr is missing or damaged: {err!r}") from err
        self._zdir, self._store, self._present, self._flat = zdir, store, present, flat
        self._use_ts = cast("Zarr", self.format).engine == "tensorstore"
        self._ts_root = f"/proc/self/fd/{zdir.fd}"  # the pinned data.zarr, for tensorstore's file kvstore
        self._ts: Any = None  # opened on the first read: no tensorstore threads before a fork
        self._ts_context: Any = None
        self._arrays: OrderedDict[int, Any] = OrderedDict()
        try:
            index = Index(arrays, self.path, ("offset",) if flat else (), self._n)
            if flat:
                self._check_flat(index, pixels)
        except BaseException:
            zdir.close()
            raise
        self._index = index
        return group

    def _check_flat(self, index: Index, pixels) -> None:
        sides = np.maximum(index.shape, 1)  # (H, W, C) or (D, H, W, C); C 0 is a 2-D image
        start = index.columns["offset"]
        end = start + sides.prod(axis=1) * np.array([d.itemsize for d in DTYPES])[index.dtype]
        if pixels.dtype != np.uint8 or pixels.ndim != 1 or \
                (index.n and (start.min() < 0 or end.max() > pixels.shape[0])):
            raise DatasetError(self.path, "index does not match data.zarr/pixels (truncated?)")
        self._pixels, self._chunk, self._size = pixels, pixels.chunks[0], pixels.shape[0]
        self._span = list(zip(start.tolist(), end.tolist()))

    def _close_handles(self, handles):
        self._arrays = OrderedDict()
        self._ts = None
        self._zdir.close()

    # ---- tensorstore

    def _ts_open(self, key: str, strict: bool):
        ts = _tensorstore()
        if self._ts_context is None:
            self._ts_context = ts.Context()
        try:
            return ts.open(_ts_spec(f"{self._ts_root}/{key}/", strict), read=True,
                           context=self._ts_context).result()
        except ValueError as err:
            raise self._ts_error(err, f"data.zarr/{key}") from err

    def _ts_error(self, err: Exception, what: str) -> Exception:
        msg = str(err)
        if msg.startswith("PERMISSION_DENIED"):  # not damage
            return PermissionError(errno.EACCES, msg, str(self.path / "data.zarr"))
        return DatasetError(self.path, f"{what} cannot be read through tensorstore: {msg}")

    def _ts_result(self, future, what: str) -> np.ndarray:
        try:
            return future.result()
        except ValueError as err:
            raise self._ts_error(err, what) from err

    # ---- flat layout

    def _get(self, a: int, b: int) -> np.ndarray:
        """Bytes ``a:b`` of the flat pixel array."""
        if self._use_ts:
            t = self._ts
            if t is None:
                t = self._ts = self._ts_open("pixels", strict=False)
            buf = self._ts_result(t[a:b].read(), f"data.zarr/pixels[{a}:{b}]")
            # Chunks missing are the fill value to tensorstore: one there at open must still be.
            for k in range(a // self._chunk, (b - 1) // self._chunk + 1):
                key = f"pixels/c/{k}"
                if key in self._present and not _exists(key, self._zdir.fd):
                    raise DatasetError(self.path, f"data.zarr/{key} is missing: the dataset was deleted "
                                       "or written over since it was opened, or is damaged")
            return buf
        try:
            return self._pixels[a:b]
        except DatasetError:
            raise
        except (OSError, ValueError, RuntimeError) as err:
            raise DatasetError(self.path, f"pixels[{a}:{b}] do not decode: {err!r}") from err

    def _sample(self, i: int, buf: np.ndarray):
        index = self._index
        return index.sample(i, buf.view(index.image_dtype[i]).reshape(index.image_shape[i]))

    # ---- per-sample arrays

    def _array(self, i: int):
        """Sample ``i``'s open array (zarr or tensorstore), from the cache of the last HANDLES."""
        arrays = self._arrays
        with self._lock:
            h = arrays.get(i)
            if h is not None:
                arrays.move_to_end(i)
                return h
        key = f"images/{i}"
        if self._use_ts:
            h = self._ts_open(key, strict=True)
            dtype, shape = h.dtype.numpy_dtype, tuple(h.shape)
        else:
            try:
                h = zarr.open_array(self._store, path=key, mode="r", zarr_format=3)
            except DatasetError:
                raise
            except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
                raise DatasetError(self.path, f"data.zarr/{key} is missing or damaged: {err!r}") from err
            dtype, shape = h.dtype, h.shape
        if dtype != self._index.image_dtype[i] or shape != self._index.image_shape[i]:
            raise DatasetError(self.path, f"data.zarr/{key} is {dtype} {shape}, the index says "
                               f"{self._index.image_dtype[i]} {self._index.image_shape[i]}")
        with self._lock:
            arrays[i] = h
            if len(arrays) > HANDLES:
                arrays.popitem(last=False)
        return h

    def _pixels_of(self, i: int, region: tuple[slice, ...] | None = None) -> np.ndarray:
        """Image ``i``, or its ``region``, read from its own array."""
        h = self._array(i)
        if self._use_ts:
            return self._ts_result((h if region is None else h[region]).read(), f"data.zarr/images/{i}")
        try:
            return h[...] if region is None else h[region]
        except DatasetError:
            raise
        except (OSError, ValueError, RuntimeError) as err:
            raise DatasetError(self.path, f"data.zarr/images/{i} does not decode: {err!r}") from err

    def _ts_many(self, indices: list[int], regions: list | None = None) -> list[np.ndarray]:
        """Images (or regions) read through tensorstore, every read in flight at once."""
        futures = [(self._array(i) if r is None else self._array(i)[r]).read()
                   for i, r in zip(indices, regions or [None] * len(indices))]
        return [self._ts_result(f, f"data.zarr/images/{i}") for i, f in zip(indices, futures)]

    # ---- Reader hooks

    def _read(self, i):
        if self._flat:
            return self._sample(i, self._get(*self._span[i]))
        return self._index.sample(i, self._pixels_of(i))

    def _read_region(self, i, region):
        if self._flat:
            return self._read(i).image[region]
        return self._pixels_of(i, region)

    def _read_regions(self, indices, regions):
        if not self._flat and self._use_ts:
            return self._ts_many(indices, regions)
        return super()._read_regions(indices, regions)

    def _read_many(self, idx):
        if not self._flat:
            if not self._use_ts:
                return super()._read_many(idx)
            ii = idx.tolist()
            return [self._index.sample(i, img) for i, img in zip(ii, self._ts_many(ii))]
        # A run of samples less than a chunk apart (each chunk decoded once) and at most BLOCK
        # long is one zarr read; images are copied out so that the run's buffer is freed.
        span, chunk, idx = self._span, self._chunk, idx.tolist()
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
        if not self._flat:
            if not self._use_ts:
                yield from super()._iter()
                return
            # One read ahead in flight: tensorstore reads sample i + 1 while i is used.
            ahead = self._array(0).read() if self._n else None
            for i in range(self._n):
                future, ahead = ahead, self._array(i + 1).read() if i + 1 < self._n else None
                yield self._index.sample(i, self._ts_result(future, f"data.zarr/images/{i}"))
            return
        chunk, lo, hi = self._chunk, 0, 0
        for i, (a, b) in enumerate(self._span):
            if b > hi:  # read on from a to a chunk boundary at least BLOCK further
                lo, hi = a, max(b, -(-(a + BLOCK) // chunk) * chunk)
                buf = self._get(lo, min(hi, self._size))
            yield self._sample(i, buf[a - lo:b - lo])


Zarr.reader = ZarrReader


# --------------------------------------------------------------------------- bound


def bare_zarr(c: BoundInput, fmt: Zarr) -> BoundRun:
    """Bare zarr-python (or tensorstore, with ``fmt``'s engine) reads + Sample, with ``fmt``'s
    layout, codec and chunks: per-sample arrays read whole (a tensorstore batch all in flight at
    once); a flat array sliced once per image, or per ``BLOCK`` bytes cut into images for a scan."""
    if fmt.chunks is not None:
        return _bare_arrays(c, fmt)
    pool, touch = c.pool, c.touch
    spans, spec = pool.spans(), [(a[1].dtype, a[1].shape) for a in pool.args]

    def make(tmp: Path):
        flat = pool.flat()
        arr = zarr.create_array(zarr.storage.LocalStore(tmp), shape=flat.shape, dtype="uint8",
                                chunks=(min(fmt.chunk_kib << 10, flat.size),), compressors=fmt._compressors(),
                                fill_value=0, zarr_format=3)
        arr[:] = flat

    path = c.store(f"bare-{fmt.codec}-{fmt.level}-{fmt.chunk_kib}.zarr", make)
    if fmt.engine == "tensorstore":
        t = _tensorstore().open(_ts_spec(str(path), strict=False), read=True).result()

        def get(a: int, b: int) -> np.ndarray:
            return t[a:b].read().result()
    else:
        arr = zarr.open_array(zarr.storage.LocalStore(path, read_only=True), mode="r")

        def get(a: int, b: int) -> np.ndarray:
            return np.asarray(arr[a:b])

    def image(i, buf):
        dt, sh = spec[i]
        return buf.view(dt).reshape(sh)
    if c.op != "scan":
        return BoundRun(c.each(lambda i: image(i, get(*spans[i]))), files=dataset_files(path))
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
                out = get(lo, spans[j - 1][1])
                for p in range(i, min(j, i + n - k)):
                    touch(sample(p, image(p, out[spans[p][0] - lo:spans[p][1] - lo])).image)
                k += min(j - i, n - k)
                if k == n:
                    break
        return k
    return BoundRun(run, files=dataset_files(path))


def _bare_arrays(c: BoundInput, fmt: Zarr) -> BoundRun:
    """One zarr array per pool image, opened before the loop; ``arr[...]`` (or tensorstore's
    ``read()``) per image."""
    pool, side = c.pool, fmt.chunks
    assert side is not None

    def make(tmp: Path):
        group = zarr.open_group(zarr.storage.LocalStore(tmp), mode="w", zarr_format=3)
        for i, a in enumerate(pool.args):
            img = a[1]
            arr = group.create_array(str(i), shape=img.shape, dtype=img.dtype, chunks=chunk_shape(img.shape, side),
                                     compressors=fmt._compressors(img.dtype.itemsize), fill_value=0,
                                     config=ALL_CHUNKS)
            arr[...] = img

    path = c.store(f"bare-{fmt.codec}-{fmt.level}-chunks{side}.zarr", make)
    files = dataset_files(path)
    if fmt.engine != "tensorstore":
        arrs = [zarr.open_array(zarr.storage.LocalStore(path / str(i), read_only=True), mode="r")
                for i in range(pool.m)]
        return BoundRun(c.each(lambda i: np.asarray(arrs[i][...])), files=files)
    ts = _tensorstore()
    handles = [ts.open(_ts_spec(str(path / str(i)), strict=True), read=True).result() for i in range(pool.m)]
    if c.op != "batch":
        return BoundRun(c.each(lambda i: handles[i].read().result()), files=files)
    chunks, touch, sample = [ch.tolist() for ch in c.chunks()], c.touch, pool.sample

    def run():
        k = 0
        for ch in chunks:
            futures = [handles[i].read() for i in ch]  # a batch in flight at once, as the reader does
            for i, f in zip(ch, futures):
                touch(sample(i, f.result()).image)
                k += 1
        return k
    return BoundRun(run, files=files)
