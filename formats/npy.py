"""npy: raw pixels in ``.npy`` files read through memory maps, one flat file or one per sample.

``layout="flat"`` (the default) is the FFCV / "ragged memmap" layout:
``pixels.npy`` is a 1-D uint8 array of all images back to back (each start
aligned to 64 bytes).  ``layout="files"`` is the layout of the "Data Loading
Beyond the Memory Limit" notes (and nnU-Net v1's unpacked cases): one
``images/00000003.npy`` per sample, as ``np.save`` writes it, so
``np.load(path, mmap_mode="r")`` gives the image.  Either way ``index.npz``
holds keys, labels, boxes, metadata, shapes and dtypes (and the flat file's
offsets); ``r[i]`` is a read-only view into the map, and ``read_region``
copies out only the rows the region covers.  The files layout keeps the 128
most recently used files mapped (one descriptor each), not the whole dataset.

``advise`` decides what a cold page fault reads.  ``"normal"``: the kernel
reads around it, up to the disk's ``read_ahead_kb``, so a cold region costs
about as much as the whole image; ``partial_reads`` is then false.
``"random"`` (the default, so that patch reads are cheap): ``MADV_RANDOM`` on
every map, so a fault reads its own page only, and the reader asks for what
it is about to touch with ``MADV_WILLNEED``, unless a ``mincore`` says it is
cached: the rows of a region, the whole image for ``r[i]`` of one over 64
KiB, and 8 to 16 MiB ahead of a scan.  Measured cold on 2048x2048 uint16
images (a virtio disk with ``read_ahead_kb`` 8192): a 64x64 region reads 262
kB in 1.2 ms under "random", 5.0 MB in 6.3 ms under "normal"; a 224x224 one
918 kB (one 4 KiB page per 448-byte row, 9x the patch) in 1.5 ms against 4.5
MB in 6.6 ms (page by page, without the prefetch, it took 9.6 ms).  What it
costs: cold scans run at 840-1160 MB/s against "normal"'s 1150-1350 (page by
page they would crawl at 78 MB/s), and a warm read a ``mincore`` (2 us).

Pick it when the dataset fits on a local disk uncompressed and you want the
fastest warm reads and patch reads.  Caveats: no compression (a 100k
ImageNet is hundreds of GB); images are read-only views into the map; cold
reads on a network file system pay for every fault.  Pages read are released
from the process every 128 MiB (they stay in the page cache), so a reader's
RSS stays bounded however large the file.
"""
from __future__ import annotations

import functools
import io
import math
import os
import struct
import tokenize
from pathlib import Path

import numpy as np

from ._api import DatasetError, Format, Reader
from ._bound import Bound, BoundInput, BoundRun
from ._fs import OpenDir
from ._index import DTYPES, Index, IndexWriter
from ._mmap import ADVICE, FAULT_AROUND, PAGE, FileMap, MapCache, RssBudget, region_middle, region_ranges

PIXELS = "pixels.npy"
IMAGES = "images"
LAYOUTS = ("flat", "files")
HEADER = 128  # bytes reserved for the flat file's .npy header, written once the length is known
ALIGN = 64
BLOCK = 8 << 20  # a scan under advise="random" asks for the next BLOCK bytes ahead of it
CACHE = 128  # files layout: per-sample maps kept open
_O_RDONLY = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
# What numpy raises on a damaged header: it parses the text with tokenize and ast.literal_eval.
_BAD_HEADER = (ValueError, EOFError, SyntaxError, tokenize.TokenError, TypeError, KeyError, OverflowError,
               MemoryError, RecursionError, struct.error)


def _npy_header(length: int) -> bytes:
    """A version 1.0 ``.npy`` header for a 1-D uint8 array, exactly HEADER bytes."""
    text = repr({"descr": "|u1", "fortran_order": False, "shape": (length,)})
    body = text.ljust(HEADER - 10 - 1) + "\n"
    return np.lib.format.magic(1, 0) + struct.pack("<H", len(body)) + body.encode("latin1")


def _name(i: int) -> str:
    return f"{IMAGES}/{i:08d}.npy"


class Npy(Format):
    name = "npy"
    local_only = "np.load(mmap_mode='r') memory-maps local files (mmap needs a local file descriptor)"
    libraries = ("numpy",)
    bench_variants = ({}, {"layout": "files"}, {"advise": "normal"})

    def __init__(self, layout: str = "flat", advise: str = "random"):
        if layout not in LAYOUTS:
            raise ValueError(f"layout: must be one of {LAYOUTS}, got {layout!r}")
        if advise not in ADVICE:
            raise ValueError(f"advise: must be one of {ADVICE}, got {advise!r}")
        self.layout, self.advise = layout, advise

    @property
    def partial_reads(self) -> bool:  # type: ignore[override]  # an option decides it
        """Under ``advise="random"`` a region reads its rows' pages only; under "normal" the kernel
        reads around every fault (``read_ahead_kb``), as much as the whole image."""
        return self.advise == "random"

    @property
    def bound(self) -> Bound:
        if self.layout == "files":
            return Bound("bare-numpy[files]", bare_numpy_files)
        return Bound("bare-numpy", bare_numpy)

    def _write(self, samples, root: Path):
        if self.layout == "files":
            (root / IMAGES).mkdir()
            index = IndexWriter()
            for i, s in enumerate(samples):
                with open(root / _name(i), "wb") as f:  # a file object: np.save adds no suffix
                    np.save(f, np.ascontiguousarray(s.image), allow_pickle=False)  # C order: what the reader maps
                index.add(s)
            index.save(root / "index.npz")
            return
        index = IndexWriter(columns=("offset",))
        with open(root / PIXELS, "wb") as f:
            f.write(bytes(HEADER))  # placeholder: the length is known only at the end
            pos = 0
            for s in samples:
                img = np.ascontiguousarray(s.image)
                pad = -pos % ALIGN
                f.write(bytes(pad))
                pos += pad
                index.add(s, offset=pos)
                f.write(memoryview(img).cast("B"))  # type: ignore[arg-type]  # ndarray is a buffer; numpy stubs lack it
                pos += img.nbytes
            f.seek(0)
            f.write(_npy_header(pos))
        index.save(root / "index.npz")


def _map_npy(name: str, dir_fd: int | None, advise: str, dataset: Path,
             shown: str) -> tuple[FileMap, int, tuple[int, ...], np.dtype]:
    """Map the ``.npy`` file ``name`` (relative to ``dir_fd``): (map, data offset, shape, dtype).

    The header is parsed with numpy's own readers; a file whose size is not
    the header's plus the array's is damaged (mapping past its end would be
    a SIGBUS).  ``shown`` names the file in errors.
    """
    try:
        fd = os.open(name, _O_RDONLY, dir_fd=dir_fd)
    except FileNotFoundError as err:
        raise DatasetError(dataset, f"{shown} is missing") from err
    except PermissionError as err:  # not damage; name the file in full
        raise PermissionError(err.errno, err.strerror, str(dataset / shown)) from err
    try:
        head = os.pread(fd, 4096, 0)
        try:
            shape, fortran, dtype, offset = _header(fd, head)
        except _BAD_HEADER as err:
            raise DatasetError(dataset, f"{shown} is damaged: {type(err).__name__}: {err}") from err
        if fortran or dtype not in DTYPES:
            raise DatasetError(dataset, f"{shown} holds {'Fortran-order ' if fortran else ''}{dtype}, "
                               "not C-order pixels")
        st = os.fstat(fd)
        if st.st_size != offset + math.prod(shape) * dtype.itemsize:
            raise DatasetError(dataset, f"{shown} is {st.st_size} bytes, its header says {dtype} {shape} "
                               "(truncated or damaged)")
        return FileMap(fd, advise, st.st_dev), offset, shape, dtype
    finally:
        os.close(fd)


_HEADERS: dict[bytes, tuple] = {}  # header bytes -> parsed: files of one shape share one parse


def _header(fd: int, head: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) of the ``.npy`` header that ``head`` starts with
    (numpy's own parser, 100 us: ast.literal_eval; a header seen before costs a dict lookup)."""
    version = np.lib.format.read_magic(io.BytesIO(head))
    if version == (1, 0):
        need = 10 + struct.unpack("<H", head[8:10])[0]
    elif version == (2, 0):
        need = 12 + struct.unpack("<I", head[8:12])[0]
    else:
        raise ValueError(f"unsupported .npy version {version}")
    if need > len(head):
        head = os.pread(fd, need, 0)
    got = _HEADERS.get(head[:need])
    if got is None:
        f = io.BytesIO(head)
        np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        got = (shape, fortran, dtype, f.tell())
        if len(_HEADERS) >= 4096:
            _HEADERS.clear()
        _HEADERS[head[:need]] = got
    return got


class _Files:
    """The files layout's handles: ``images/`` held open and the recently used maps."""

    def __init__(self, images: OpenDir, maps: MapCache):
        self.images, self.maps = images, maps

    def close(self) -> None:
        self.maps.clear()
        self.images.close()


class NpyReader(Reader):
    def _open_handles(self):
        layout = self.manifest.get("options", {}).get("layout", "flat")  # the dataset's, not the opener's
        if layout not in LAYOUTS:
            raise DatasetError(self.path, f"unknown npy layout {layout!r} in the manifest")
        advise = self.format.advise
        self._files = files = layout == "files"
        index = Index.load(self.path / "index.npz", self.path, () if files else ("offset",), self._n)
        self._index, self._random = index, advise == "random"
        if files:
            try:  # images/ of the pinned dataset: each file opens relative to it
                images = OpenDir(IMAGES, self._dir_fd)
            except OSError as err:
                raise DatasetError(self.path, f"{IMAGES}/ folder is missing") from err
            maps = MapCache(functools.partial(_open_file, self.path, index, images.fd, advise), CACHE)
            self._budget = RssBudget(lambda: [m for _img, m, _o in maps.values()])
            return _Files(images, maps)
        fmap, offset, shape, dtype = _map_npy(PIXELS, self._dir_fd, advise, self.path, PIXELS)
        if dtype != np.uint8 or len(shape) != 1:
            raise DatasetError(self.path, f"{PIXELS} holds {dtype} {shape}, not flat uint8")
        nbytes = np.asarray([index.nbytes(i) for i in range(index.n)], np.int64)
        start = index.columns["offset"]
        end = start + nbytes
        if index.n and (start.min() < 0 or end.max() > shape[0]):
            raise DatasetError(self.path, f"index does not match {PIXELS} (truncated?)")
        self._map, self._base = fmap, offset
        self._flat = fmap.array(np.dtype(np.uint8), shape, offset)
        self._span = list(zip(start.tolist(), end.tolist()))
        self._budget = RssBudget(fmap)  # bound RSS over long scans
        return fmap

    def _close_handles(self, handles):
        if isinstance(handles, _Files):
            handles.close()
        # A map is released with its last view: images handed out keep theirs.
        self._flat = self._map = None
        self._budget = RssBudget(None)

    def _view(self, i: int) -> tuple[np.ndarray, FileMap, int]:
        """(image ``i`` as a view, its map, the byte where it starts in the map)."""
        if self._files:
            return self._handles.maps.get(i)
        a, b = self._span[i]
        buf, dtype = self._flat[a:b], self._index.image_dtype[i]
        if dtype.itemsize != 1:
            buf = buf.view(dtype)
        return buf.reshape(self._index.image_shape[i]), self._map, self._base + a

    def _read(self, i):
        img, fmap, start = self._view(i)
        if self._random and img.nbytes > FAULT_AROUND:
            fmap.prefetch([(start, start + img.nbytes)])
        self._budget.charge_random(img.nbytes)
        return self._index.sample(i, img)

    def _read_region(self, i, region):
        return self._read_regions([i], [region])[0]

    def _read_regions(self, indices, regions):
        views = []
        for i, r in zip(indices, regions):  # every prefetch first: the reads overlap
            img, fmap, start = self._view(i)
            if self._random and not fmap.cached(region_middle(start, img.shape, img.itemsize, r)):
                fmap.prefetch(region_ranges(start, img.shape, img.itemsize, r), check=False)
            views.append(img[r])
        out = [np.array(v, order="C") for v in views]
        # Each row of a region maps at least a page.
        self._budget.charge_random(sum(max(o.nbytes, math.prod(o.shape[:len(r) - 1]) * PAGE)
                                       for o, r in zip(out, regions)))
        return out

    def _iter(self):
        charge, sample, view, random = self._budget.charge, self._index.sample, self._view, self._random
        if self._files:
            for i in range(self._n):
                img, fmap, start = view(i)
                if random and img.nbytes > PAGE:
                    fmap.prefetch([(start, start + img.nbytes)])
                charge(img.nbytes)
                yield sample(i, img)
            return
        fmap, base, ahead = self._map, self._base, 0
        for i, (a, b) in enumerate(self._span):
            if random and b + BLOCK > ahead:  # keep a block ahead of the scan on its way in
                lo, ahead = max(a, ahead), b + 2 * BLOCK
                fmap.prefetch([(base + lo, base + ahead)])
            charge(b - a)
            yield sample(i, view(i)[0])


def _open_file(dataset: Path, index: Index, dir_fd: int, advise: str, i: int) -> tuple[np.ndarray, FileMap, int]:
    """Map ``images/{i:08d}.npy`` (relative to ``images/`` held open), checked against the index."""
    fmap, offset, shape, dtype = _map_npy(f"{i:08d}.npy", dir_fd, advise, dataset, _name(i))
    if shape != index.image_shape[i] or dtype != index.image_dtype[i]:
        raise DatasetError(dataset, f"{_name(i)} holds {dtype} {shape}, the index says "
                           f"{index.image_dtype[i]} {index.image_shape[i]}")
    return fmap.array(dtype, shape, offset), fmap, offset


Npy.reader = NpyReader


def bare_numpy(c: BoundInput) -> BoundRun:
    """``np.load(mmap_mode="r")`` of the pool's pixels as one flat array; a slice and a view + Sample per image."""
    pool = c.pool
    spans, spec = pool.spans(), [(a[1].dtype, a[1].shape) for a in pool.args]

    def make(tmp: Path):
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to the name
            np.save(f, pool.flat())

    path = c.store("bare.npy", make)
    flat = np.load(path, mmap_mode="r").view(np.ndarray)

    def image(i):
        (a, b), (dt, sh) = spans[i], spec[i]
        buf = flat[a:b]
        return (buf if dt.itemsize == 1 else buf.view(dt)).reshape(sh)
    return BoundRun(c.each(image), files=[path])


def bare_numpy_files(c: BoundInput) -> BoundRun:
    """``np.load(path, mmap_mode="r")`` of one ``.npy`` file per pool image, the notes' loader, with
    the reader's cache: the :data:`CACHE` most recently used maps stay open.  A view + Sample per image."""
    pool = c.pool

    def make(tmp: Path):
        tmp.mkdir()
        for k, a in enumerate(pool.args):
            np.save(tmp / f"{k:08d}.npy", a[1], allow_pickle=False)

    path = c.store("bare-files", make)

    @functools.lru_cache(maxsize=CACHE)
    def image(i):
        return np.load(path / f"{i:08d}.npy", mmap_mode="r").view(np.ndarray)
    return BoundRun(c.each(image), close=image.cache_clear, files=sorted(path.iterdir()))
