"""tiff: one tiled TIFF file per image or volume, written and read with tifffile.

``images/00000000.tif``, ... are named by position; keys, labels, boxes,
metadata and exact shapes live in ``index.npz``.  A 2-D image is one tiled
page, a volume ``(D, H, W, C)`` a stack of D tiled pages (one per slice), with
tifffile's shaped-series description, so ``tifffile.imread(path)`` returns the
sample's own array: ``(H, W)``, ``(H, W, C)`` or ``(D, H, W, C)``.  Tiles are
``tile`` x ``tile`` pixels (a multiple of 16, as TIFF requires), shrunk to the
image rounded up to 16 when it is smaller.  Files are classic TIFF, BigTIFF
when the padded pixels pass 2 GiB (classic offsets stop at 4 GiB; the margin
covers codec overhead).  ``compression`` picks the tile codec (imagecodecs):
``"none"``, ``"zstd"`` and ``"deflate"`` (``level``; ``predictor=True`` adds
TIFF's horizontal or floating-point differencing), ``"jpeg"`` (lossy, uint8,
``level`` is the quality, 90 by default, 4:4:4), and the lossless image codecs
``"jpeg2000"`` (reversible 5/3, OpenJPEG), ``"htj2k"`` (High-Throughput JPEG
2000 codestreams from OpenJPH under TIFF's JPEG 2000 tag, which OpenJPEG 2.5+
decodes) and ``"jpegxl"`` (lossless; ``level`` is libjxl's effort; uint8 and
uint16 only: libjxl in imagecodecs 2026.10.10 fails to encode some float32 tiles
losslessly, JXL_ENC_ERR_GENERIC).  A codec the installed imagecodecs lacks
(HTJ2K before imagecodecs 2025.8) is refused at construction with the reason
and left out of ``bench_variants``: :func:`unavailable_codecs`.

``read_region`` reads and decodes only the tiles a region overlaps: one
``os.pread`` per run of adjacent tiles, each tile decoded by the page's own
``TiffPage.decode``, with readahead off for region reads (the kernel would
otherwise read megabytes around each tile).  The parsed tile tables of the
last :data:`CACHED_FILES` files are kept, so a region of a 300-slice volume
does not parse 300 IFDs again; no file stays open between reads.

Pick it for large 2-D images and stacks read in patches (digital pathology,
microscopy, radiographs) where the files must stay standard TIFF.  Caveats:
one inode per image; tiles are stored whole, so uncompressed images that are
not multiples of the tile grow by the padding; a volume's tile is per slice,
so a 64^3 patch of 256-pixel tiles reads 16x its bytes (``tile=64``: 5x);
JPEG-LS has no TIFF compression tag and is not offered; each codec stores
what it can (``modes``): JPEG uint8 grey and RGB 2-D only, JPEG 2000 and
HTJ2K integers only, JPEG XL no int16; HTJ2K tiles decode through OpenJPEG
(TIFF readers with an older one cannot read them); decoding is
single-threaded (parallelism comes from DataLoader workers).
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import tifffile

from ._api import DatasetError, Format, Reader
from ._bound import Bound, BoundInput, BoundRun, named
from ._fs import _O_RDONLY, OpenDir, dataset_files
from ._index import Index, IndexWriter
from ._sample import modes_of

IMAGES = "images"
CACHED_FILES = 256  #: files whose parsed tile tables a reader keeps
BIGTIFF_BYTES = 1 << 31  #: padded pixel bytes above which a file is BigTIFF


@dataclass(frozen=True)
class Codec:
    """How one ``compression`` choice is written: tifffile's name and TIFF tag, its level range."""

    tag: int  # the Compression tag the pages carry
    arg: str | None  # tifffile's ``compression`` argument (None: none, or tiles we encode)
    modes: frozenset
    levels: tuple[int, int] | None = None  # valid ``level`` range, None: no level
    level_arg: str = "level"


_INTS = ("uint8", "uint16", "int16")
CODECS = {
    "none": Codec(1, None, modes_of(volumes=True)),
    "zstd": Codec(50000, "zstd", modes_of(volumes=True), (1, 22)),
    "deflate": Codec(8, "zlib", modes_of(volumes=True), (1, 9)),
    "jpeg": Codec(7, "jpeg", modes_of(("uint8",), (0, 1, 3)), (1, 100)),  # level: the quality, 90 if None
    "jpeg2000": Codec(34712, "jpeg2000", modes_of(_INTS, volumes=True)),
    "htj2k": Codec(34712, None, modes_of(_INTS, volumes=True)),
    "jpegxl": Codec(50002, "jpegxl", modes_of(("uint8", "uint16"), volumes=True), (1, 9), "effort"),
}
#: imagecodecs' name of each codec, whose ``.available`` says whether this build has it.
_IMAGECODECS_NAME = {"zstd": "ZSTD", "deflate": "ZLIB", "jpeg": "JPEG8", "jpeg2000": "JPEG2K",
                     "htj2k": "HTJ2K", "jpegxl": "JPEGXL"}


def unavailable_codecs() -> dict[str, str]:
    """``compression`` choices the installed imagecodecs cannot encode and decode, with the reason."""
    out = {}
    for name, codec in _IMAGECODECS_NAME.items():
        entry = getattr(imagecodecs, codec, None)
        if entry is None or not getattr(entry, "available", False) or \
                (name == "htj2k" and not hasattr(imagecodecs, "htj2k_encode")):
            out[name] = f"imagecodecs {imagecodecs.__version__} has no {codec} codec"
    return out
_advise = getattr(os, "posix_fadvise", None)  # Linux and most Unixes; not macOS
# What tifffile and imagecodecs raise on damaged files (codec errors are RuntimeErrors; a damaged
# tag can hand tifffile a tuple where it expects an int: TypeError).
_BROKEN = (tifffile.TiffFileError, ValueError, RuntimeError, struct.error, KeyError, IndexError, TypeError,
           AttributeError, OverflowError, MemoryError, EOFError, ZeroDivisionError, NotImplementedError,
           RecursionError, OSError)


def _tile(shape: tuple[int, ...], tile: int) -> tuple[int, int]:
    """The tile of an image: ``tile``, or the image's sides rounded up to 16 when smaller."""
    h, w = shape[-3:-1] if len(shape) == 4 else shape[:2]
    return min(tile, -(-h // 16) * 16), min(tile, -(-w // 16) * 16)


def write_tiff(fmt: TIFF, file, img: np.ndarray) -> None:
    """Write ``img`` (a Sample's image) to ``file`` as ``fmt``'s tiled TIFF: one page per slice."""
    codec = CODECS[fmt.compression]
    volume = img.ndim == 4
    samples = img.shape[-1] if img.ndim >= 3 else 1
    (h, w), th, tw = (img.shape[1:3] if volume else img.shape[:2]), *_tile(img.shape, fmt.tile)
    # Pages as (D,) H, W (, S): the shape is spelled out in tifffile's shaped-series description,
    # as tifffile's own guess drops every trailing 1 (a (2, 1, 1, 1) volume would be one 2x1 page).
    pages = np.ascontiguousarray(img).reshape(img.shape[:1] * volume + (h, w) + (samples,) * (samples > 1))
    padded = pages.size // (h * w) * -(-h // th) * th * -(-w // tw) * tw * img.itemsize
    kwargs: dict[str, Any] = {
        "photometric": "rgb" if samples in (3, 4) else "minisblack",
        "planarconfig": "contig" if samples > 1 else None,
        "tile": (th, tw), "compression": codec.arg, "bigtiff": padded > BIGTIFF_BYTES, "maxworkers": 1,
        "metadata": None, "description": json.dumps({"shape": list(img.shape)}),
    }
    args: dict[str, Any] = {}
    if fmt.level is not None:
        args[codec.level_arg] = fmt.level
    if fmt.compression == "jpeg":
        args.setdefault("level", 90)
        kwargs["subsampling"] = (1, 1)  # 4:4:4, as the jpeg format
    elif fmt.compression == "jpeg2000":
        args.update(reversible=True, numthreads=1)
    elif fmt.compression == "jpegxl":
        args["lossless"] = True
    if args:
        kwargs["compressionargs"] = args
    if fmt.predictor:
        kwargs["predictor"] = True
    data: Any = pages
    if fmt.compression == "htj2k":  # tiles encoded here, written as they are under the JPEG 2000 tag
        data = _htj2k_tiles(pages if volume else pages[None], th, tw)
        kwargs.update(compression=codec.tag, shape=pages.shape, dtype=pages.dtype)
    tifffile.imwrite(file, data, **kwargs)


def _htj2k_tiles(pages: np.ndarray, th: int, tw: int):
    """Each page's tiles, row by row, as reversible HTJ2K codestreams (edge tiles zero-padded)."""
    for page in pages:
        for y in range(0, page.shape[0], th):
            for x in range(0, page.shape[1], tw):
                part = page[y:y + th, x:x + tw]
                if part.shape[:2] != (th, tw):
                    pad = [(0, th - part.shape[0]), (0, tw - part.shape[1])] + [(0, 0)] * (part.ndim - 2)
                    part = np.pad(part, pad)
                yield imagecodecs.htj2k_encode(np.ascontiguousarray(part), reversible=True)


class TIFF(Format):
    name = "tiff"
    partial_reads = True
    libraries = ("tifffile", "imagecodecs")
    remote_reads = "ranges"  # tifffile parses pyarrow's S3 file; the tiles a read needs, a ranged GET each
    bench_variants = tuple(v for v in ({}, {"compression": "zstd", "predictor": True}, {"compression": "htj2k"},
                                       {"tile": 64}) if v.get("compression") not in unavailable_codecs())

    def __init__(self, compression: str = "none", level: int | None = None, tile: int = 256,
                 predictor: bool = False):
        if compression not in CODECS:
            raise ValueError(f"compression: must be one of {sorted(CODECS)}, got {compression!r}"
                             + ("; TIFF has no compression tag for JPEG-LS" if compression == "jpegls" else ""))
        missing = unavailable_codecs().get(compression)
        if missing:
            raise ValueError(f"compression: {compression!r} is unavailable here: {missing}")
        levels = CODECS[compression].levels
        if level is not None and (levels is None or type(level) is not int or not levels[0] <= level <= levels[1]):
            allowed = "" if levels is None else f", or an int in {levels[0]}..{levels[1]}"
            raise ValueError(f"level: must be None{allowed} with compression {compression!r}, got {level!r}")
        if type(tile) is not int or tile < 16 or tile % 16:
            raise ValueError(f"tile: must be a positive multiple of 16 (TIFF's rule), got {tile!r}")
        if predictor and compression not in ("zstd", "deflate"):
            raise ValueError(f"predictor: only with 'zstd' or 'deflate', not {compression!r}")
        self.compression, self.level, self.tile, self.predictor = compression, level, tile, predictor
        self.modes = CODECS[compression].modes

    @property
    def lossless(self) -> bool:  # type: ignore[override]  # a property where the base has a plain attribute
        return self.compression != "jpeg"

    @property
    def image_codec(self) -> str:  # type: ignore[override]  # a property where the base has a plain attribute
        """``tiff`` (uncompressed tiles) or ``tiff-<compression>``."""
        return "tiff" if self.compression == "none" else f"tiff-{self.compression}"

    @property
    def bound(self) -> Bound:
        """bare-tifffile with this format's codec and tiles."""
        return Bound(named("bare-tifffile", self), partial(bare_tifffile, fmt=self))

    def info(self):
        return {"tifffile": tifffile.__version__, "imagecodecs": imagecodecs.__version__}

    def _write(self, samples, root: Path):
        (root / IMAGES).mkdir()
        index = IndexWriter()
        for i, s in enumerate(samples):
            write_tiff(self, root / IMAGES / f"{i:08d}.tif", s.image)
            index.add(s)
        index.save(root / "index.npz")
        return {"tifffile": tifffile.__version__}


@dataclass(frozen=True)
class _Tiles:
    """A file's parsed tile tables: what a read needs; no file stays open."""

    decode: Any  # the pages' TiffPage.decode (one for all: the pages are alike)
    jpegtables: bytes | None
    offsets: list[list[int]]  # per page, per tile
    counts: list[list[int]]
    tile: tuple[int, int]
    across: int  # tiles per row


class TIFFReader(Reader):
    def _open_handles(self):
        index = Index.load(self.path / "index.npz", self.path, count=self._n)
        self._tables: OrderedDict[int, _Tiles] = OrderedDict()
        self._tables_lock = threading.Lock()
        if self.remote is not None:  # each read opens its object as pyarrow's S3 file (ranged GETs)
            self._index = index
            return self.remote
        try:  # images/ of the pinned dataset: each read opens its file relative to it
            images = OpenDir(IMAGES, self._dir_fd)
        except OSError as err:
            raise DatasetError(self.path, f"{IMAGES}/ folder is missing") from err
        self._index = index
        return images

    def _read(self, i):
        shape = self._index.image_shape[i]
        whole = tuple(slice(0, n) for n in (shape[:3] if len(shape) == 4 else shape[:2]))
        return self._index.sample(i, self._read_region(i, whole))

    def _read_region(self, i, region):
        name = f"{IMAGES}/{i:08d}.tif"
        fd: Any
        try:
            if self.remote is not None:
                fd = self.remote.open_input_file(name)
            else:
                fd = os.open(f"{i:08d}.tif", _O_RDONLY, dir_fd=self._handles.fd)
        except FileNotFoundError as err:
            raise DatasetError(self.path, f"{name} is missing") from err
        except PermissionError as err:  # not damage; opened relative to images/, so name it in full
            raise PermissionError(err.errno, err.strerror, str(self.path / name)) from err
        try:
            return self._pixels(i, fd, region)
        except DatasetError:
            raise
        except _BROKEN as err:
            raise DatasetError(self.path, f"{name} is damaged: {type(err).__name__}: {err}") from err
        finally:
            if isinstance(fd, int):
                os.close(fd)
            else:
                fd.close()

    def _pixels(self, i: int, fd: Any, region: tuple[slice, ...]) -> np.ndarray:
        """``image[region]`` of sample ``i`` from its open file: the overlapping tiles only."""
        index = self._index
        shape, dtype = index.image_shape[i], index.image_dtype[i]
        t = self._tiles(i, fd, shape, dtype)
        volume = len(shape) == 4
        pages, rows, cols = region if volume else (slice(0, 1), *region)
        sides = shape[:3] if volume else (1, *shape[:2])
        if _advise is not None and any(s.stop - s.start < n for s, n in zip((pages, rows, cols), sides)):
            if isinstance(fd, int):
                _advise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # a part: no readahead around its tiles
        size = os.fstat(fd).st_size if isinstance(fd, int) else fd.size()
        (th, tw), across = t.tile, t.across
        out = np.empty((pages.stop - pages.start, rows.stop - rows.start, cols.stop - cols.start,
                        shape[-1] if len(shape) >= 3 else 1), dtype)
        tx0, tx1 = cols.start // tw, (cols.stop - 1) // tw
        for p in range(pages.start, pages.stop):
            offsets, counts, dst = t.offsets[p], t.counts[p], out[p - pages.start]
            for ty in range(rows.start // th, (rows.stop - 1) // th + 1):
                k, last = ty * across + tx0, ty * across + tx1
                while k <= last:
                    j = k  # tiles k..j lie back to back: one pread
                    while j < last and offsets[j + 1] == offsets[j] + counts[j]:
                        j += 1
                    start, stop = offsets[k], offsets[j] + counts[j]
                    if stop > size:
                        raise ValueError(f"tiles {k}..{j} of page {p} end at byte {stop}, past the "
                                         f"{size}-byte file")
                    buf = memoryview(os.pread(fd, stop - start, start) if isinstance(fd, int)
                                     else fd.read_at(stop - start, start))
                    for q in range(k, j + 1):
                        a = offsets[q] - start
                        tile, (_s, _d, y, x, _c), _shape = t.decode(
                            buf[a:a + counts[q]] if counts[q] else None, q, jpegtables=t.jpegtables)
                        r0, r1 = max(rows.start, y), min(rows.stop, y + th)
                        c0, c1 = max(cols.start, x), min(cols.stop, x + tw)
                        part = dst[r0 - rows.start:r1 - rows.start, c0 - cols.start:c1 - cols.start]
                        part[...] = 0 if tile is None else tile[0, r0 - y:r1 - y, c0 - x:c1 - x]
                    k = j + 1
        if volume:
            return out
        return out[0] if len(shape) == 3 else out[0, :, :, 0]

    def _tiles(self, i: int, fd: Any, shape: tuple[int, ...], dtype: np.dtype) -> _Tiles:
        with self._tables_lock:
            t = self._tables.get(i)
            if t is not None:
                self._tables.move_to_end(i)
                return t
        fmt = self.format
        assert isinstance(fmt, TIFF)
        t = _parse(fd, f"{i:08d}.tif", shape, dtype, CODECS[fmt.compression].tag, fmt.predictor)
        with self._tables_lock:
            self._tables[i] = t
            if len(self._tables) > CACHED_FILES:
                self._tables.popitem(last=False)
        return t


TIFF.reader = TIFFReader


def _parse(fd: Any, name: str, shape: tuple[int, ...], dtype: np.dtype, tag: int, predictor: bool) -> _Tiles:
    """The tile tables of the TIFF file open at ``fd``, checked against the index's shape and dtype
    and the format's codec; ValueError (or tifffile's errors) if the file is not that."""
    volume = len(shape) == 4
    h, w = shape[1:3] if volume else shape[:2]
    samples = shape[-1] if len(shape) >= 3 else 1
    want_predictor = 1 if not predictor else 3 if dtype.kind == "f" else 2
    f = open(fd, "rb", closefd=False) if isinstance(fd, int) else contextlib.nullcontext(fd)
    with f as f, tifffile.TiffFile(f, name=name) as tif:
        pages = tif.pages
        n = len(pages)
        if n != (shape[0] if volume else 1):
            raise ValueError(f"holds {n} pages, the index says {shape[0] if volume else 1}")
        pages.useframes = True  # pages after the first as TiffFrames: their tile tables only, 6x faster
        pages.set_keyframe(0)
        first = pages.first
        th, tw = first.tilelength, first.tilewidth
        tiles = (-(-w // tw) if tw else 0) * (-(-h // th) if th else 0)
        got = (first.is_tiled, first.tiledepth, first.imagelength, first.imagewidth, first.samplesperpixel,
               first.dtype, first.compression, first.predictor, first.planarconfig if samples > 1 else 1)
        want = (True, 1, h, w, samples, dtype, tag, want_predictor, 1)
        if got != want or th <= 0 or tw <= 0:
            raise ValueError(f"is not the tiled {h}x{w}x{samples} {dtype} image the index and options say "
                             f"({got} != {want})")
        offsets, counts = [], []
        for k in range(n):
            page = pages[k]  # the same tags as the first: tifffile reads a shaped series this way too
            if len(page.dataoffsets) != tiles or len(page.databytecounts) != tiles:
                raise ValueError(f"page {k} has {len(page.dataoffsets)} tile offsets and "
                                 f"{len(page.databytecounts)} byte counts for {tiles} tiles")
            offsets.append(list(page.dataoffsets))
            counts.append(list(page.databytecounts))
        return _Tiles(first.decode, first.jpegtables, offsets, counts, (th, tw), -(-w // tw))


def bare_tifffile(c: BoundInput, fmt: TIFF) -> BoundRun:
    """``tifffile.imread(file, maxworkers=1)`` + Sample, on a folder of the pool's images written as
    ``fmt``'s tiled TIFF files (same codec, tiles and predictor)."""
    pool = c.pool

    def make(tmp: Path):
        tmp.mkdir()
        for i, a in enumerate(pool.args):
            write_tiff(fmt, tmp / f"{i:08d}.tif", a[1])

    path = c.store(named("bare-tifffile", fmt), make)
    files = [str(path / f"{i:08d}.tif") for i in range(pool.m)]
    imread = tifffile.imread
    return BoundRun(c.each(lambda i: imread(files[i], maxworkers=1)), files=dataset_files(path))
