"""hdf5: one HDF5 file with every image's raw pixels and the index, via h5py.

``data.h5`` holds a chunked 1-D uint8 dataset ``pixels`` (images back to back,
uint16 ones viewed back) and a group ``index`` (keys, labels, boxes, metadata,
shapes, offsets).  ``r[i]`` is one slice, a batch one read of a union of
ranges, and iteration reads blocks of a few MiB.

Pick it for one self-describing file that HDF5 tools open, optionally gzip or
lzf compressed.  Caveats: h5py handles cannot cross fork, so the reader opens
lazily in each worker; HDF5 serialises calls (threads do not read in parallel);
a compressed random read inflates a whole chunk: use a small ``chunk_kib``.
"""
from __future__ import annotations

import os
from bisect import bisect_right
from pathlib import Path

import h5py
import numpy as np

from ._api import DatasetError, Format, Reader
from ._bound import Bound, BoundInput, BoundRun
from ._index import Index, IndexWriter
from ._sample import make_sample

FILE = "data.h5"
ALIGN = 8  # image starts, so uint16 views into a block are aligned
BLOCK = 4 << 20  # bytes per read when iterating
UNION = 64  # samples per batch read: HDF5's selection cost grows faster than linearly


class HDF5(Format):
    name = "hdf5"
    bench_variants = ({}, {"compression": "gzip", "level": 4}, {"compression": "lzf"})
    libraries = ("h5py",)

    @property
    def bound(self) -> Bound:
        return Bound("bare-h5py", bare_h5py)

    def __init__(self, compression: str = "none", level: int | None = None, chunk_kib: int = 1024):
        if compression not in ("none", "gzip", "lzf"):
            raise ValueError(f"compression: must be 'none', 'gzip' or 'lzf', got {compression!r}")
        if level is not None and (compression != "gzip" or type(level) is not int or not 0 <= level <= 9):
            raise ValueError(f"level: must be None, or an int in 0..9 with gzip, got {level!r}")
        if type(chunk_kib) is not int or chunk_kib < 1:
            raise ValueError(f"chunk_kib: must be a positive int, got {chunk_kib!r}")
        self.compression, self.level, self.chunk_kib = compression, level, chunk_kib

    @property
    def random_access(self):
        """Uncompressed, ``r[i]`` reads its own bytes; compressed, it inflates whole chunks."""
        return self.compression == "none"

    @classmethod
    def library_versions(cls):
        return {**super().library_versions(), "libhdf5": h5py.version.hdf5_version}

    def info(self):
        return {"h5py": h5py.__version__, "libhdf5": h5py.version.hdf5_version}

    def _write(self, samples, root: Path):
        chunk = self.chunk_kib << 10
        # h5py reads an int compression as a gzip level.
        comp = {"none": None, "lzf": "lzf", "gzip": 4 if self.level is None else self.level}[self.compression]
        index = IndexWriter(columns=("offset",))
        with h5py.File(root / FILE, "w") as f:
            buf, done, ds = bytearray(), 0, None

            def put(nbytes):  # append buf[:nbytes]: whole chunks, so each is written once
                nonlocal done, ds
                if ds is None:  # made late, so a dataset smaller than a chunk gets a smaller chunk
                    ds = f.create_dataset("pixels", shape=(0,), maxshape=(None,), dtype=np.uint8,
                                          chunks=(max(1, min(chunk, nbytes)),), compression=comp)
                ds.resize((done + nbytes,))
                ds[done:] = np.frombuffer(buf, np.uint8, nbytes)
                del buf[:nbytes]
                done += nbytes

            for s in samples:
                buf += bytes(-len(buf) % ALIGN)  # chunks are whole multiples of ALIGN too
                index.add(s, offset=done + len(buf))
                buf += memoryview(np.ascontiguousarray(s.image)).cast("B")  # type: ignore[arg-type]  # ndarray is a buffer
                if len(buf) >= max(chunk, BLOCK):
                    put(len(buf) // chunk * chunk)
            put(len(buf))
            for k, v in index.arrays().items():
                f.create_dataset(f"index/{k}", data=v)


class HDF5Reader(Reader):
    def _open_handles(self):
        # Uncompressed: no chunk cache, so HDF5 reads only the bytes asked for (r[i] 5x faster).
        cache = 0 if self.format.compression == "none" else max(32 << 20, 2 * self.format.chunk_kib << 10)
        try:
            f = h5py.File(self.path / FILE, "r", rdcc_nbytes=cache, rdcc_nslots=10007)
        except OSError as err:  # FileNotFoundError included
            raise DatasetError(self.path, f"{FILE} is not a readable HDF5 file: {err}") from err
        try:
            ds, g = f["pixels"], f["index"]
            index = Index({k: g[k][()] for k in g}, self.path, ("offset",), self._n)
            start = index.columns["offset"]
            end = start + np.asarray([index.nbytes(i) for i in range(index.n)], np.int64)
            if ds.dtype != np.uint8 or ds.ndim != 1 or \
                    (index.n and (start.min() < 0 or end.max() > len(ds))):
                raise DatasetError(self.path, f"index does not match pixels {ds.dtype} {ds.shape}")
        except (DatasetError, KeyError, OSError, RuntimeError, TypeError) as err:
            f.close()
            if isinstance(err, DatasetError):
                raise
            raise DatasetError(self.path, f"{FILE} is damaged: {err}") from err
        self._index, self._ds, self._ends = index, ds, end.tolist()
        self._span = list(zip(start.tolist(), self._ends))
        return f

    def _image(self, i: int, buf: np.ndarray) -> np.ndarray:
        dtype = self._index.image_dtype[i]
        return (buf if dtype.itemsize == 1 else buf.view(dtype)).reshape(self._index.image_shape[i])

    def _read(self, i):
        a, b = self._span[i]
        try:
            return self._index.sample(i, self._image(i, self._ds[a:b]))
        except OSError as err:
            raise DatasetError(self.path, f"pixels {a}:{b} unreadable: {err}") from err

    def _fetch(self, todo: list[int]) -> list:
        """Samples at the sorted positions ``todo``, read in one HDF5 call."""
        span, ds, base = self._span, self._ds, self._span[todo[0]][0]
        try:
            if todo[-1] - todo[0] == len(todo) - 1:  # neighbours: one slice, h5py's fast path
                out, where = ds[base:span[todo[-1]][1]], [span[i][0] - base for i in todo]
            else:  # a union of ranges: one call instead of one per sample
                space, where, o = ds.id.get_space(), [], 0
                space.select_none()
                for i in todo:
                    a, b = span[i]
                    space.select_hyperslab((a,), (b - a,), op=h5py.h5s.SELECT_OR)
                    where.append(o)
                    o += b - a
                out = np.empty(o, np.uint8)
                ds.id.read(h5py.h5s.create_simple((o,)), space, out)
        except OSError as err:
            raise DatasetError(self.path, f"pixels unreadable: {err}") from err
        out.flags.writeable = False  # shared by several samples
        return [self._index.sample(i, self._image(i, out[w:w + span[i][1] - span[i][0]]))
                for i, w in zip(todo, where)]

    def _read_many(self, indices):
        todo, got = np.unique(indices).tolist(), {}  # sorted: file order
        for k in range(0, len(todo), UNION):
            got.update(zip(todo[k:k + UNION], self._fetch(todo[k:k + UNION])))
        return [got[i] for i in indices.tolist()]

    def _iter(self):
        span, i = self._span, 0
        while i < self._n:  # blocks of whole samples, up to BLOCK bytes
            j = max(i + 1, bisect_right(self._ends, span[i][0] + BLOCK, i))
            yield from self._fetch(list(range(i, j)))
            i = j


HDF5.reader = HDF5Reader


# --------------------------------------------------------------------------- bound


def bare_h5py(c: BoundInput) -> BoundRun:
    """``ds[a:b]`` + Sample on an HDF5 file with the pool's pixels in one flat contiguous dataset.

    Each op uses the cheapest plain h5py read for its access pattern:
    ``random`` is one ``ds[a:b]`` per image, ``scan`` one ``ds[a:b]`` per
    ``BLOCK`` bytes cut into images, ``batch`` one read of the union of a
    batch's byte ranges (a hyperslab selection, in file order).  The file is
    opened with HDF5's 64 KiB sieve buffer off, so a small read fetches only
    its bytes (2x faster for ``ds[a:b]`` of one 3 KB image).
    """
    pool, touch, order = c.pool, c.touch, c.order
    spans = pool.spans()

    def make(tmp: Path):
        with h5py.File(tmp, "w") as f:
            f.create_dataset("pixels", data=pool.flat())  # contiguous: no chunk lookups

    path = c.store("bare.h5", make)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_sieve_buf_size(0)
    f = h5py.File(h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY, fapl=fapl))
    ds = f["pixels"]
    spec = [(a[1].dtype, a[1].shape) for a in pool.args]
    meta = [(a[0], a[2], a[3], a[4], a[5]) for a in pool.args]

    def sample(i: int, buf: np.ndarray) -> None:
        dt, sh = spec[i]
        key, label, boxes, bl, mt = meta[i]
        touch(make_sample(key, (buf if dt.itemsize == 1 else buf.view(dt)).reshape(sh), label, boxes, bl, mt).image)

    idx = order.tolist()
    if c.op == "scan":
        blocks, i = [], 0  # (first, last + 1, start byte, end byte) of runs of pool positions
        m = pool.m
        while i < m:
            j = i + 1
            while j < m and spans[j][1] - spans[i][0] <= BLOCK:
                j += 1
            blocks.append((i, j, spans[i][0], spans[j - 1][1]))
            i = j
        n = len(idx)

        def run():
            k = 0
            while k < n:
                for i, j, a, b in blocks:
                    out = ds[a:b]
                    for p in range(i, min(j, i + n - k)):
                        sample(p, out[spans[p][0] - a:spans[p][1] - a])
                    k += min(j - i, n - k)
                    if k == n:
                        break
            return k
    elif c.op == "batch":
        chunks = c.chunks()

        def run():
            k = 0
            for ch in chunks:
                todo = np.unique(ch).tolist()
                space, where, o = ds.id.get_space(), {}, 0
                space.select_none()
                for i in todo:
                    a, b = spans[i]
                    space.select_hyperslab((a,), (b - a,), op=h5py.h5s.SELECT_OR)
                    where[i] = o
                    o += b - a
                out = np.empty(o, np.uint8)
                ds.id.read(h5py.h5s.create_simple((o,)), space, out)
                for i in ch.tolist():
                    w = where[i]
                    sample(i, out[w:w + spans[i][1] - spans[i][0]])
                    k += 1
            return k
    else:
        def run():
            for i in idx:
                a, b = spans[i]
                sample(i, ds[a:b])
            return len(idx)
    return BoundRun(run, f.close, [path])
