"""hdf5: one HDF5 file with every image's pixels and the index, via h5py.

Three layouts of ``data.h5``; each keeps keys, labels, boxes, metadata and
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
* ``layout="stack"`` (the notebooks' layout: the APTOS HDF5 notebook, Real
  Python's "three ways"): one fixed-shape dataset ``images`` of shape
  ``(N, H, W, C)`` (``(N, H, W)`` for 2-D grey, ``(N, D, H, W, C)`` for
  volumes) in the samples' dtype, so ``h5py.File(path)["images"][i]`` is
  image ``i``, plus ``names`` (the keys, fixed-length UTF-8).  ``chunks`` is
  ``"image"`` (the default: one chunk ``(1, H, W, C)`` per image, the APTOS
  setting with ``compression="gzip", level=2``), ``"auto"`` (h5py's own
  guess, ``chunks=True``, from the final N) or ``"none"`` (contiguous, Real
  Python's; no compression then).  ``r[i]`` is ``images[i]`` (h5py's own
  indexing), a batch one such read per image (25x faster than a read of
  their union or a fancy index), iteration reads blocks of whole images.

Pick it for one self-describing file that HDF5 tools open, optionally gzip or
lzf compressed; chunked for patch training on large images and volumes; stack
to measure what the notebooks did, or for a fixed-size preprocessed set that
other code opens as one array.
Caveats: h5py handles cannot cross fork, so the reader opens lazily in each
worker; HDF5 serialises calls (threads do not read in parallel); a compressed
flat read inflates whole chunks (use a small ``chunk_kib``); chunked files
need HDF5 1.10 or newer, every read opens a dataset (a small image reads
several times slower than from the flat layout), and edge chunks are stored
whole: uncompressed, 96 slices in 64-slice chunks take 128 slices' bytes.
The stack takes fixed-shape presets only (``fixed_shape``: an image of
another shape or dtype than the first is refused by key); ``chunks="auto"``
is what h5py guesses for the whole array and spans many images (229 of a
3662 x 256 x 256 x 3 stack per chunk), so ``r[i]`` reads (and inflates) its
neighbours' pixels too; h5py cannot grow a contiguous dataset nor know N before the
end, so ``"auto"`` and ``"none"`` stage the pixels in a temporary raw file
and copy them in (one more pass over the pixels when writing).  The stack
is read with the 1 MiB chunk cache the notebooks' ``h5py.File(path, "r")``
had (HDF5 2.0's default is 8 MiB).
"""
from __future__ import annotations

import contextlib
import itertools
import math
import os
from bisect import bisect_right
from functools import partial
from pathlib import Path

import h5py
import numpy as np

from ._api import DatasetError, Format, Reader
from ._bound import Bound, BoundInput, BoundRun, NoBound, named
from ._index import Index, IndexWriter
from ._sample import make_sample

FILE = "data.h5"
ALIGN = 8  # image starts, so uint16 views into a block are aligned
BLOCK = 4 << 20  # bytes per read when iterating
UNION = 64  # samples per batch read: HDF5's selection cost grows faster than linearly
LAYOUTS = ("flat", "chunked", "stack")
STACK_CHUNKS = ("image", "auto", "none")  # the stack's chunks: one per image, h5py's guess, contiguous
STACK_SCAN = 64 << 20  # stack scans read whole rows of h5py's chunks (once each) up to this many bytes
#: The stack's chunk cache: HDF5 1.x's default (1 MiB, 521 slots), the notebooks' (2.0 has 8 MiB).
STACK_CACHE = {"rdcc_nbytes": 1 << 20, "rdcc_nslots": 521, "rdcc_w0": 0.75}
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
                      {"compression": "gzip", "level": 1, "layout": "chunked"}, {"layout": "stack"})
    libraries = ("h5py",)
    remote_reads = "ranges"  # h5py reads a Python file object: pyarrow's S3 file, each HDF5 read a ranged GET

    def __init__(self, compression: str = "none", level: int | None = None, chunk_kib: int = 1024,
                 layout: str = "flat", chunks: int | str | None = None):
        """``chunk_kib`` sizes the flat layout's chunks; ``chunks`` the chunked layout's (the chunk
        side along each spatial axis; None: 256 for 2-D images, 64 for volumes) and the stack's
        (``"image"``, the default, ``"auto"`` or ``"none"``; None is ``"image"``)."""
        if compression not in ("none", "gzip", "lzf"):
            raise ValueError(f"compression: must be 'none', 'gzip' or 'lzf', got {compression!r}")
        if level is not None and (compression != "gzip" or type(level) is not int or not 0 <= level <= 9):
            raise ValueError(f"level: must be None, or an int in 0..9 with gzip, got {level!r}")
        if type(chunk_kib) is not int or chunk_kib < 1:
            raise ValueError(f"chunk_kib: must be a positive int, got {chunk_kib!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout: must be 'flat', 'chunked' or 'stack', got {layout!r}")
        if layout == "flat" and chunks is not None:
            raise ValueError("chunks: shapes the chunked layout's chunks and the stack's; the flat one takes "
                             "chunk_kib")
        if layout == "stack":
            chunks = "image" if chunks is None else chunks  # one spelling, one id
            if not isinstance(chunks, str) or chunks not in STACK_CHUNKS:
                raise ValueError(f"chunks: the stack layout takes 'image', 'auto' or 'none', got {chunks!r}")
            if chunks == "none" and compression != "none":
                raise ValueError(f"compression: HDF5 compresses chunks only; the stack with chunks='none' is "
                                 f"contiguous and takes no compression, got {compression!r}")
        elif chunks is not None and (type(chunks) is not int or chunks < 1):
            raise ValueError(f"chunks: the chunked layout takes None or a positive int, got {chunks!r}")
        if layout != "flat" and chunk_kib != 1024:
            raise ValueError(f"chunk_kib: sizes the flat layout's chunks; the {layout} one takes chunks")
        self.compression, self.level, self.chunk_kib = compression, level, chunk_kib
        self.layout, self.chunks = layout, chunks

    @property
    def bound(self) -> Bound:
        """bare-h5py (a flat contiguous dataset) for flat; for chunked, a dataset per image like this
        one's; for stack, one (N, ...) dataset like this one's."""
        if self.layout == "flat":
            return Bound("bare-h5py", bare_h5py)
        if self.layout == "stack":
            return Bound(named("bare-h5py", self), partial(bare_h5py_stack, fmt=self))
        return Bound(named("bare-h5py", self), partial(bare_h5py_chunked, fmt=self))

    @property
    def fixed_shape(self):
        """The stack is one (N, ...) array: every image has the first one's shape and dtype."""
        return self.layout == "stack"

    @property
    def random_access(self):
        """Flat uncompressed, ``r[i]`` reads its own bytes, compressed it inflates whole shared
        chunks; chunked, an image's chunks are its own; stack, its own bytes or chunk, except with
        ``chunks="auto"``, whose chunks span many images and are read (and inflated) whole."""
        if self.layout == "stack":
            return self.chunks != "auto"
        return self.layout == "chunked" or self.compression == "none"

    @property
    def partial_reads(self):
        """Chunked: a region reads the chunks it overlaps; flat uncompressed: its rows' bytes; stack:
        a hyperslab of ``images[i]``, which reads the region's bytes uncompressed and the chunks it
        overlaps with ``chunks="auto"`` (compressed, one chunk per image inflates the whole image)."""
        if self.layout == "stack":
            return self.compression == "none" or self.chunks == "auto"
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
        side = self.chunks if isinstance(self.chunks, int) else CHUNK_SIDE[spatial]
        return tuple(min(side, n) for n in shape[:spatial]) + tuple(shape[spatial:])

    def stack_chunks(self, shape: tuple[int, ...]) -> tuple[int, ...] | bool | None:
        """What the stack layout passes h5py as ``chunks`` for a stack of ``shape`` (N first):
        one image, True (h5py guesses) or None (contiguous)."""
        if self.chunks == "image":
            return (1, *shape[1:])
        return True if self.chunks == "auto" else None

    def _write(self, samples, root: Path):
        if self.layout == "chunked":
            return self._write_chunked(samples, root)
        if self.layout == "stack":
            return self._write_stack(samples, root)
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

    def _write_stack(self, samples, root: Path):
        index, keys = IndexWriter(), list[str]()
        images = _same_shape(samples, index, keys)
        with h5py.File(root / FILE, "w") as f:  # h5py's defaults, as the notebooks
            f.attrs["layout"] = "stack"
            first = next(images, None)
            if first is not None:  # no samples, no images dataset: its shape is unknown
                if self.chunks == "image":
                    self._grow_stack(f, first, images)
                else:
                    self._copy_stack(f, first, images, root / ".stack.raw")
            names = [k.encode() for k in keys]  # as the APTOS notebook's names: fixed-length strings
            width = max(map(len, names), default=0) or 1
            utf8 = h5py.string_dtype("utf-8", width)  # the array carries the charset: no conversion
            f.create_dataset("names", data=np.array(names, utf8), dtype=utf8)
            for k, v in index.arrays().items():
                f.create_dataset(f"index/{k}", data=v)

    def _grow_stack(self, f, first: np.ndarray, images):
        """One chunk per image: the dataset grows by blocks of whole images (its N is unknown)."""
        shape = first.shape
        ds = f.create_dataset("images", shape=(0, *shape), maxshape=(None, *shape), dtype=first.dtype,
                              chunks=self.stack_chunks((0, *shape)), compression=self._filter())
        per = max(1, BLOCK // first.nbytes)  # images per write
        if per == 1:  # images of BLOCK or more: each written as it comes
            for done, img in enumerate(itertools.chain((first,), images)):
                ds.resize(done + 1, axis=0)
                ds[done] = img
            return
        buf = np.empty((per, *shape), first.dtype)
        done, fill = 0, 0
        for img in itertools.chain((first,), images):
            buf[fill] = img
            fill += 1
            if fill == per:
                ds.resize(done + fill, axis=0)
                ds[done:done + fill] = buf
                done, fill = done + fill, 0
        if fill:
            ds.resize(done + fill, axis=0)
            ds[done:done + fill] = buf[:fill]

    def _copy_stack(self, f, first: np.ndarray, images, raw: Path):
        """h5py's guess or contiguous: both need the final N, so the pixels go to a raw file
        first, then into the dataset in blocks of whole chunks (each chunk written once)."""
        n = 0
        try:
            with open(raw, "wb") as out:
                for img in itertools.chain((first,), images):
                    out.write(memoryview(img).cast("B"))
                    n += 1
            shape = (n, *first.shape)
            ds = f.create_dataset("images", shape=shape, dtype=first.dtype, chunks=self.stack_chunks(shape),
                                  compression=self._filter())
            src = np.memmap(raw, first.dtype, "r", shape=shape)
            for sel in _blocks(shape, ds.chunks, first.dtype.itemsize):
                ds[sel] = src[sel]
            del src
        finally:
            raw.unlink(missing_ok=True)


def _same_shape(samples, index: IndexWriter, keys: list):
    """Each sample's image, C-contiguous, after recording it; one of another shape or dtype
    than the first is a ValueError naming its key (the stack is one fixed-shape array)."""
    like = None
    for n, s in enumerate(samples):
        img = np.ascontiguousarray(s.image)
        if like is None:
            like = (img.shape, img.dtype)
        elif (img.shape, img.dtype) != like:
            raise ValueError(
                f"image of key {s.key!r}: {img.dtype} {img.shape} does not fit the stack's dataset 'images', "
                f"{like[1]} {(n, *like[0])} so far (every image has the first one's shape and dtype): "
                "layout='stack' takes fixed-shape presets only")
        index.add(s)
        keys.append(s.key)
        yield img


def _blocks(shape: tuple[int, ...], chunks: tuple[int, ...] | None, itemsize: int, budget: int = BLOCK):
    """Selections tiling an array of ``shape`` in whole rows of ``chunks`` (None: contiguous) along
    its first two axes, about ``budget`` bytes each (one row of chunks at least)."""
    c = chunks or (1, *shape[1:])
    row = itemsize * math.prod(shape[2:])  # one image's bytes per step of axis 1
    if c[0] * row * shape[1] <= budget:  # whole images, a multiple of the chunks' N
        a0, a1 = c[0] * max(1, budget // (c[0] * row * shape[1])), shape[1]
    else:  # chunks over many large images: their rows of chunks
        a0, a1 = c[0], c[1] * max(1, budget // (c[0] * c[1] * row))
    for i in range(0, shape[0], a0):
        for j in range(0, shape[1], a1):
            yield (slice(i, min(i + a0, shape[0])), slice(j, min(j + a1, shape[1])))


def _scan_images(nbytes: int, chunks: tuple[int, ...] | None) -> int:
    """Images per read of a stack's scan: BLOCK bytes of whole images; where h5py's ``chunks``
    span images, whole rows of chunks (each inflated once), up to STACK_SCAN bytes."""
    per, c0 = max(1, BLOCK // nbytes), (chunks or (1,))[0]
    return c0 * max(1, per // c0) if c0 > 1 and c0 * nbytes <= STACK_SCAN else per


class HDF5Reader(Reader):
    def _open_handles(self):
        fmt = self.format
        # Uncompressed, no chunk cache: HDF5 reads only the bytes asked for (r[i] 5x faster).
        # The chunked layout sets its caches per image dataset; the stack has the notebooks'
        # (STACK_CACHE: without one, HDF5 copies an uncompressed "auto" chunk's pixels one by one).
        cache: dict = {"rdcc_nbytes": 0}
        if fmt.layout == "stack":
            cache = STACK_CACHE
        elif fmt.compression != "none" and fmt.layout == "flat":
            cache = {"rdcc_nbytes": max(32 << 20, 2 * fmt.chunk_kib << 10), "rdcc_nslots": 10007}
        try:
            if self.remote is None:
                f = h5py.File(self.path / FILE, "r", **cache)
            else:  # h5py's file-object driver over pyarrow's S3 file: each HDF5 read a ranged GET
                f = h5py.File(self.remote.open_input_file(FILE), "r", **cache)
        except OSError as err:  # FileNotFoundError included
            raise DatasetError(self.path, f"{FILE} is not a readable HDF5 file: {err}") from err
        if fmt.layout == "chunked" and hasattr(os, "posix_fadvise") and self.remote is None:
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
            elif fmt.layout == "stack":
                self._open_stack(f, arrays)
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

    def _open_stack(self, f, arrays):
        index = Index(arrays, self.path, (), self._n)
        self._index, self._ds, self._per = index, None, 1
        if not index.n:
            return
        shape, dtype = index.image_shape[0], index.image_dtype[0]
        ds = f["images"]
        if not isinstance(ds, h5py.Dataset):
            raise DatasetError(self.path, f"{FILE}: images is not a dataset")
        if ds.shape != (index.n, *shape) or ds.dtype != dtype:
            raise DatasetError(self.path, f"{FILE}: images is {ds.dtype} {ds.shape}, the index says "
                               f"{index.n} images of {dtype} {shape}")
        if len(set(index.image_shape)) > 1 or len(set(index.image_dtype)) > 1:
            raise DatasetError(self.path, "index holds images of several shapes or dtypes for one stack")
        self._ds, self._per = ds, _scan_images(math.prod(shape) * dtype.itemsize, ds.chunks)

    # ---- stack: one (N, ...) dataset

    def _read_stack(self, at) -> np.ndarray:
        """``images[at]``: h5py's own indexing (its fast path for ints and slices) into a new array."""
        try:
            return self._ds[at]
        except _DAMAGE as err:
            raise DatasetError(self.path, f"{FILE}: images[{at}] unreadable: {err}") from err

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
        if self.format.layout == "stack":
            return self._index.sample(i, self._read_stack(i))
        a, b = self._span[i]
        try:
            return self._index.sample(i, self._image(i, self._ds[a:b]))
        except OSError as err:
            raise DatasetError(self.path, f"pixels {a}:{b} unreadable: {err}") from err

    def _read_region(self, i, region):
        if self.format.layout == "chunked":
            return self._read_chunked(i, region)
        if self.format.layout == "stack":  # one hyperslab
            return self._read_stack((i, *region))
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
        if self.format.layout != "flat":  # stack: images[i] each, 25x faster than their union's read
            return super()._read_many(indices)
        todo, got = np.unique(indices).tolist(), {}  # sorted: file order
        for k in range(0, len(todo), UNION):
            got.update(zip(todo[k:k + UNION], self._fetch(todo[k:k + UNION])))
        return [got[i] for i in indices.tolist()]

    def _iter(self):
        if self.format.layout == "chunked":
            yield from super()._iter()
            return
        if self.format.layout == "stack":  # blocks of whole images, each one h5py slice
            sample = self._index.sample
            for a in range(0, self._n, self._per):
                block = self._read_stack(slice(a, a + self._per))
                block.flags.writeable = False  # shared by several samples
                for k in range(len(block)):
                    yield sample(a + k, block[k])
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


def bare_h5py_stack(c: BoundInput, fmt: HDF5) -> BoundRun:
    """``ds[i]`` + Sample on one ``(N, ...)`` h5py dataset of the pool's images with ``fmt``'s chunks,
    compression and chunk cache: the stack layout's read without storebench.

    ``random`` and ``batch`` read ``ds[i]`` per image (h5py's fast path; a batch's sorted fancy
    index ``ds[[i, j, ...]]`` is 25x slower), ``scan`` ``ds[a:b]`` per block of whole images, as
    the reader's blocks.
    """
    pool = c.pool
    if pool.stacked is None:
        raise NoBound("the stack layout needs equal-shaped images; this preset's differ")
    arr = pool.stacked

    def make(tmp: Path):
        with h5py.File(tmp, "w") as f:
            f.create_dataset("images", data=arr, chunks=fmt.stack_chunks(arr.shape), compression=fmt._filter())

    path = c.store(f"bare-stack-{fmt.compression}-{fmt.level}-{fmt.chunks}.h5", make)
    f = h5py.File(path, "r", **STACK_CACHE)  # as the reader
    ds = f["images"]
    if c.op != "scan":
        return BoundRun(c.each(ds.__getitem__), f.close, [path])
    touch, sample, n, m = c.touch, pool.sample, len(c.order), pool.m
    per = _scan_images(arr[0].nbytes, ds.chunks)

    def scan():
        k = 0
        while k < n:
            for a in range(0, m, per):
                block = ds[a:min(a + per, m, a + n - k)]
                for j in range(len(block)):
                    touch(sample(a + j, block[j]).image)
                k += len(block)
                if k == n:
                    break
        return k
    return BoundRun(scan, f.close, [path])
