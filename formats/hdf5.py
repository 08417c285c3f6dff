"""hdf5: one HDF5 file with every image's pixels and the index, via h5py.

Two layouts of ``data.h5``; both keep keys, labels, boxes, metadata and
shapes in a group ``index``.

* ``layout="flat"`` (the default, for whole reads): a chunked 1-D uint8
  dataset ``pixels`` (images back to back, viewed back as their dtype and
  shape) and offsets in the index.  ``r[i]`` is one slice, a batch one read
  of a union of ranges, iteration reads blocks of a few MiB.  Uncompressed,
  a region is read as its rows' byte ranges (one strided hyperslab per
  plane); the kernel's read-ahead still reads around them.
* ``layout="chunked"``: each image is its own N-D dataset
  ``images/00000012`` (by position) of its dtype and shape, ``(H, W)``,
  ``(H, W, C)`` or ``(D, H, W, C)``, cut into chunks of ``chunks`` per
  spatial axis (clipped to the image, channels whole) compressed one by
  one, so a region read inflates only the chunks it overlaps, and
  ``h5py.File(path)["images/00000000"][...]`` is the image.  Its reader
  asks the kernel for no read-ahead (``POSIX_FADV_RANDOM``): HDF5 reads
  whole chunks, and read-ahead around each would triple a patch's reads.

Pick it for one self-describing file that HDF5 tools open, optionally gzip or
lzf compressed; chunked for patch training on large images and volumes.
Caveats: h5py handles cannot cross fork, so the reader opens lazily in each
worker; HDF5 serialises calls (threads do not read in parallel); a compressed
flat read inflates whole chunks (use a small ``chunk_kib``); chunked files
need HDF5 1.10 or newer, every read opens a dataset (a small image reads
several times slower than from the flat layout), and edge chunks are stored
whole: uncompressed, 96 slices in 64-slice chunks take 128 slices' bytes.
"""
from __future__ import annotations

import contextlib
import math
import os
from bisect import bisect_right
from functools import partial
from pathlib import Path

import h5py
import numpy as np

from ._api import DatasetError, Format, Reader
from ._bound import Bound, BoundInput, BoundRun, named
from ._index import Index, IndexWriter
from ._sample import make_sample

FILE = "data.h5"
ALIGN = 8  # image starts, so uint16 views into a block are aligned
BLOCK = 4 << 20  # bytes per read when iterating
UNION = 64  # samples per batch read: HDF5's selection cost grows faster than linearly
LAYOUTS = ("flat", "chunked")
CHUNK_SIDE = {2: 256, 3: 64}  # chunk side by spatial rank when ``chunks`` is None
CHUNK_CACHE = 64 << 20  # chunked, per image dataset while a region is read
LIBVER = ("v110", "v110")  # chunked: compact chunk indexes (a v1 B-tree per image doubles a small one)
_DAMAGE = (KeyError, OSError, RuntimeError, TypeError, ValueError)  # what h5py raises on a damaged file


def _name(i: int) -> bytes:
    return b"%08d" % i


def _dapl(cache: int):
    """Dataset access properties with a chunk cache of ``cache`` bytes, read chunks evicted first."""
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    dapl.set_chunk_cache(521, cache, 1.0)  # slots: a region overlaps few chunks
    return dapl


class HDF5(Format):
    name = "hdf5"
    bench_variants = ({}, {"compression": "gzip", "level": 4}, {"compression": "lzf"}, {"layout": "chunked"},
                      {"compression": "gzip", "level": 1, "layout": "chunked"})
    libraries = ("h5py",)

    def __init__(self, compression: str = "none", level: int | None = None, chunk_kib: int = 1024,
                 layout: str = "flat", chunks: int | None = None):
        """``chunk_kib`` sizes the flat layout's chunks; ``chunks`` (the chunk side along each
        spatial axis; None: 256 for 2-D images, 64 for volumes) the chunked layout's."""
        if compression not in ("none", "gzip", "lzf"):
            raise ValueError(f"compression: must be 'none', 'gzip' or 'lzf', got {compression!r}")
        if level is not None and (compression != "gzip" or type(level) is not int or not 0 <= level <= 9):
            raise ValueError(f"level: must be None, or an int in 0..9 with gzip, got {level!r}")
        if type(chunk_kib) is not int or chunk_kib < 1:
            raise ValueError(f"chunk_kib: must be a positive int, got {chunk_kib!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout: must be 'flat' or 'chunked', got {layout!r}")
        if chunks is not None and (type(chunks) is not int or chunks < 1):
            raise ValueError(f"chunks: must be None or a positive int, got {chunks!r}")
        if layout == "flat" and chunks is not None:
            raise ValueError("chunks: shapes the chunked layout's chunks; the flat one takes chunk_kib")
        if layout == "chunked" and chunk_kib != 1024:
            raise ValueError("chunk_kib: sizes the flat layout's chunks; the chunked one takes chunks")
        self.compression, self.level, self.chunk_kib = compression, level, chunk_kib
        self.layout, self.chunks = layout, chunks

    @property
    def bound(self) -> Bound:
        """bare-h5py (a flat contiguous dataset) for flat; for chunked, a dataset per image like this one's."""
        if self.layout == "flat":
            return Bound("bare-h5py", bare_h5py)
        return Bound(named("bare-h5py", self), partial(bare_h5py_chunked, fmt=self))

    @property
    def random_access(self):
        """Flat uncompressed, ``r[i]`` reads its own bytes, compressed it inflates whole shared
        chunks; chunked, an image's chunks are its own."""
        return self.layout == "chunked" or self.compression == "none"

    @property
    def partial_reads(self):
        """Chunked: a region reads the chunks it overlaps; flat uncompressed: its rows' bytes."""
        return self.layout == "chunked" or self.compression == "none"

    @classmethod
    def library_versions(cls):
        return {**super().library_versions(), "libhdf5": h5py.version.hdf5_version}

    def info(self):
        return {"h5py": h5py.__version__, "libhdf5": h5py.version.hdf5_version}

    def _filter(self):
        # h5py reads an int compression as a gzip level.
        return {"none": None, "lzf": "lzf", "gzip": 4 if self.level is None else self.level}[self.compression]

    def chunk_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The chunked layout's chunk shape for an image of ``shape``: ``chunks`` per spatial
        axis clipped to the image, the channels whole."""
        spatial = 3 if len(shape) == 4 else 2
        side = self.chunks or CHUNK_SIDE[spatial]
        return tuple(min(side, n) for n in shape[:spatial]) + tuple(shape[spatial:])

    def _write(self, samples, root: Path):
        if self.layout == "chunked":
            return self._write_chunked(samples, root)
        chunk = self.chunk_kib << 10
        comp = self._filter()
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

    def _write_chunked(self, samples, root: Path):
        comp, index = self._filter(), IndexWriter()
        made: dict[tuple, tuple] = {}  # (shape, dtype) -> (type, space, creation properties) h5py chose
        with h5py.File(root / FILE, "w", libver=LIBVER) as f:
            f.attrs["layout"] = "chunked"
            images = f.create_group("images")
            for i, s in enumerate(samples):  # one image in memory at a time
                index.add(s)
                img, name = np.ascontiguousarray(s.image), _name(i)
                like = made.get((img.shape, img.dtype))
                if like is None:  # h5py makes the first of each kind, the others copy it (3x faster)
                    ds = images.create_dataset(name.decode(), data=img, chunks=self.chunk_shape(img.shape),
                                               compression=comp)
                    if len(made) < 64:
                        made[img.shape, img.dtype] = (ds.id.get_type(), ds.id.get_space(), ds.id.get_create_plist())
                else:
                    tid, space, dcpl = like
                    h5py.h5d.create(images.id, name, tid, space, dcpl=dcpl).write(h5py.h5s.ALL, h5py.h5s.ALL, img)
            for k, v in index.arrays().items():
                f.create_dataset(f"index/{k}", data=v)


class HDF5Reader(Reader):
    def _open_handles(self):
        fmt = self.format
        # Uncompressed, no chunk cache: HDF5 reads only the bytes asked for (r[i] 5x faster).
        # The chunked layout sets its caches per image dataset.
        cache = 0 if fmt.compression == "none" or fmt.layout == "chunked" else max(32 << 20, 2 * fmt.chunk_kib << 10)
        try:
            f = h5py.File(self.path / FILE, "r", rdcc_nbytes=cache, rdcc_nslots=10007)
        except OSError as err:  # FileNotFoundError included
            raise DatasetError(self.path, f"{FILE} is not a readable HDF5 file: {err}") from err
        if fmt.layout == "chunked" and hasattr(os, "posix_fadvise"):
            # HDF5 asks for whole chunks; the kernel's read-ahead would add megabytes around each.
            with contextlib.suppress(OSError, ValueError, TypeError):
                os.posix_fadvise(f.id.get_vfd_handle(), 0, 0, os.POSIX_FADV_RANDOM)
        try:
            layout = f.attrs.get("layout", "flat")
            if layout != fmt.layout:
                raise DatasetError(self.path, f"{FILE} has the {layout!r} layout, not {fmt.layout!r}: open it "
                                   f"with open_dataset() or HDF5(layout={layout!r})")
            g = f["index"]
            arrays = {k: g[k][()] for k in g}
            if fmt.layout == "chunked":
                self._open_chunked(f, arrays)
            else:
                self._open_flat(f, arrays)
        except (DatasetError, *_DAMAGE) as err:
            f.close()
            if isinstance(err, DatasetError):
                raise
            raise DatasetError(self.path, f"{FILE} is damaged: {err}") from err
        return f

    def _open_flat(self, f, arrays):
        ds = f["pixels"]
        index = Index(arrays, self.path, ("offset",), self._n)
        start = index.columns["offset"]
        end = start + np.asarray([index.nbytes(i) for i in range(index.n)], np.int64)
        if ds.dtype != np.uint8 or ds.ndim != 1 or \
                (index.n and (start.min() < 0 or end.max() > len(ds))):
            raise DatasetError(self.path, f"index does not match pixels {ds.dtype} {ds.shape}")
        self._index, self._ds, self._ends = index, ds, end.tolist()
        self._span = list(zip(start.tolist(), self._ends))

    def _open_chunked(self, f, arrays):
        index = Index(arrays, self.path, (), self._n)
        images = h5py.h5g.open(f.id, b"images")  # low level: h5py's Group[name] costs 3x the open itself
        if images.get_num_objs() != index.n:
            raise DatasetError(self.path, f"{FILE} holds {images.get_num_objs()} images, the index {index.n}")
        # A whole read needs no chunk cache (HDF5 reads whole chunks straight into the image);
        # a region's chunks are cached while it is read, so each is read in one call.
        self._index, self._images, self._dapl = index, images, {True: _dapl(0), False: _dapl(CHUNK_CACHE)}

    # ---- chunked: an N-D dataset per image

    def _read_chunked(self, i: int, region: tuple[slice, ...] | None = None) -> np.ndarray:
        """Image ``i``, or its ``region``, from its dataset (checked against the index)."""
        shape, dtype = self._index.image_shape[i], self._index.image_dtype[i]
        try:
            d = h5py.h5d.open(self._images, _name(i), self._dapl[region is None])
            space = d.get_space()
            if space.shape != shape or d.dtype != dtype:
                raise DatasetError(self.path, f"{FILE}: images/{_name(i).decode()} is {d.dtype} {space.shape}, "
                                   f"the index says {dtype} {shape}")
            if region is None:
                out = np.empty(shape, dtype)
                d.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
                return out
            # HDF5 reads only the chunks the hyperslab overlaps.
            size = tuple(s.stop - s.start for s in region) + shape[len(region):]
            space.select_hyperslab(tuple(s.start for s in region) + (0,) * (len(shape) - len(region)), size)
            out = np.empty(size, dtype)
            d.read(h5py.h5s.create_simple(size), space, out)
            return out
        except DatasetError:
            raise
        except _DAMAGE as err:
            raise DatasetError(self.path, f"{FILE}: images/{_name(i).decode()} unreadable: {err}") from err

    # ---- flat: every image's bytes in one 1-D dataset

    def _image(self, i: int, buf: np.ndarray) -> np.ndarray:
        dtype = self._index.image_dtype[i]
        return (buf if dtype.itemsize == 1 else buf.view(dtype)).reshape(self._index.image_shape[i])

    def _read(self, i):
        if self.format.layout == "chunked":
            return self._index.sample(i, self._read_chunked(i))
        a, b = self._span[i]
        try:
            return self._index.sample(i, self._image(i, self._ds[a:b]))
        except OSError as err:
            raise DatasetError(self.path, f"pixels {a}:{b} unreadable: {err}") from err

    def _read_region(self, i, region):
        if self.format.layout == "chunked":
            return self._read_chunked(i, region)
        # Flat, uncompressed: one strided hyperslab of the region's rows per plane.
        shape, dtype = self._index.image_shape[i], self._index.image_dtype[i]
        k = len(region)
        px = dtype.itemsize * math.prod(shape[k:])  # bytes per pixel, channels included
        row = shape[k - 1] * px
        plane = shape[k - 2] * row
        rows, cols = region[-2:]
        out = np.empty(tuple(s.stop - s.start for s in region) + shape[k:], dtype)
        space = self._ds.id.get_space()
        space.select_none()
        first = self._span[i][0] + rows.start * row + cols.start * px
        for z in (range(region[0].start, region[0].stop) if k == 3 else (0,)):
            space.select_hyperslab((first + z * plane,), (rows.stop - rows.start,), (row,),
                                   ((cols.stop - cols.start) * px,), op=h5py.h5s.SELECT_OR)
        try:
            self._ds.id.read(h5py.h5s.create_simple((out.nbytes,)), space, out.reshape(-1).view(np.uint8))
        except OSError as err:
            raise DatasetError(self.path, f"pixels of sample {i} unreadable: {err}") from err
        return out

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
        if self.format.layout == "chunked":
            return super()._read_many(indices)
        todo, got = np.unique(indices).tolist(), {}  # sorted: file order
        for k in range(0, len(todo), UNION):
            got.update(zip(todo[k:k + UNION], self._fetch(todo[k:k + UNION])))
        return [got[i] for i in indices.tolist()]

    def _iter(self):
        if self.format.layout == "chunked":
            yield from super()._iter()
            return
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


def bare_h5py_chunked(c: BoundInput, fmt: HDF5) -> BoundRun:
    """``h5d.open(images, name).read`` + Sample on an HDF5 file of the pool's images as one dataset
    each, with ``fmt``'s chunks and compression: the chunked layout's read without storebench.

    Each image's dataset is opened by name per read, as the format does (h5py's
    low-level calls: ``Group[name]`` costs 3x the open itself); every op visits
    its positions one image at a time.
    """
    pool = c.pool
    spec = [(a[1].dtype, a[1].shape) for a in pool.args]

    def make(tmp: Path):
        with h5py.File(tmp, "w", libver=LIBVER) as f:
            for i, a in enumerate(pool.args):
                f.create_dataset(_name(i).decode(), data=a[1], chunks=fmt.chunk_shape(a[1].shape),
                                 compression=fmt._filter())

    path = c.store(f"bare-{fmt.compression}-{fmt.level}-{fmt.chunks}.h5", make)
    f = h5py.File(path, "r", rdcc_nbytes=0)
    root, names = f.id, [_name(i) for i in range(pool.m)]

    def image(i: int) -> np.ndarray:
        dt, sh = spec[i]
        out = np.empty(sh, dt)
        h5py.h5d.open(root, names[i]).read(h5py.h5s.ALL, h5py.h5s.ALL, out)
        return out
    return BoundRun(c.each(image), f.close, [path])
