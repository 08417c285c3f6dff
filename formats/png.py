"""png: a folder of PNG files plus one index, the "just save the images" baseline.

Every image is ``images/{position:08d}.png`` (named by position, not key: keys
may hold ``/`` or any unicode), encoded and decoded with Pillow; keys, labels,
boxes, metadata and exact shapes live in ``index.npz``.  ``r[i]`` opens the
file by path each time, as a dataset of loose files does, so the cost of an
``open()`` per image (and on a network file system, a metadata round trip) is
part of what this format measures.

Pick it when the images must stay viewable with any tool, or as the baseline
the other formats are compared with.  Caveats: lossless but slow to decode
(zlib), one inode per image (100k files strain backups, ``ls`` and network
file systems), and Pillow cannot write 16-bit colour, so ``uint16`` images
with 2, 3 or 4 channels are refused on write; 16-bit grayscale is kept
(mode ``I;16``).  PNG has no signed or floating-point samples and no depth:
``int16`` and ``float32`` images and volumes are refused too (store CT
slices and volumes with dicom or a raw format).  Pillow reads images over
``PIL.Image.MAX_IMAGE_PIXELS`` (89 M pixels by default) only with a
decompression-bomb warning, and fails beyond twice that, so larger images
are refused on write with a ``ValueError`` (:func:`max_pixels`; raise the
setting before writing and reading to store them).  ``compress_level`` (0-9, zlib) trades write time
and size and barely changes read time.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import PIL
from PIL import Image

from ._api import DatasetError, Format, Reader, read_file
from ._fs import OpenDir
from ._index import Index, IndexWriter

IMAGES = "images"
#: What PNG holds: 2-D uint8 with 0-4 channels and uint16 gray; (H, W, 1) is stored as 2-D.
MODES = frozenset({("uint8", c) for c in range(5)} | {("uint16", 0), ("uint16", 1)})


def encode(img: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG bytes of ``img`` (one of :data:`MODES`), with Pillow.

    uint16 2-D arrays become mode ``I;16``; uint8 ones L, LA, RGB or RGBA.
    One encoder for every format that stores PNG (png, zip, tar).
    """
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()


def max_pixels() -> int | None:
    """Pixels per image Pillow reads back without a decompression-bomb warning or error:
    ``PIL.Image.MAX_IMAGE_PIXELS`` as it is set now (None: no limit)."""
    return Image.MAX_IMAGE_PIXELS


# Pillow's ways to say "not a PNG I can decode" (struct.error and zlib.error are plain
# Exceptions, DecompressionBombError too; the warning is raised where warnings are errors).
_BROKEN = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError,
           struct.error, zlib.error, Image.DecompressionBombError, Image.DecompressionBombWarning)


def decode(buf) -> np.ndarray:
    """The pixels of PNG bytes, as Pillow stores them (I;16 reads as '<u2').

    One decoder for every format that stores PNG (png, zip, tar) and for the
    decode-only bound, so the bound decodes exactly as the formats do.

    Raises
    ------
    ValueError
        The bytes are not a PNG Pillow can decode, whatever Pillow raised
        (the message names it), including an image over :func:`max_pixels`.
    """
    try:
        with Image.open(io.BytesIO(buf), formats=("PNG",)) as im:
            im.load()
            return np.asarray(im)
    except _BROKEN as err:
        raise ValueError(f"not a readable PNG: {type(err).__name__}: {err}") from err


def _name(i: int) -> str:
    return f"{IMAGES}/{i:08d}.png"


class PNG(Format):
    name = "png"
    modes = MODES  # (H, W, 1) is stored as 2-D and reshaped back from the index
    image_codec = "png"  # bound: decode-only, this format's own bytes decoded from memory
    libraries = ("pillow",)
    bench_variants = ({}, {"compress_level": 1})
    remote_reads = "objects"  # a GET of one image's object per sample

    @property
    def max_image_pixels(self) -> int | None:  # type: ignore[override]  # a property where the base has a plain attribute
        return max_pixels()

    def __init__(self, compress_level: int = 6):
        if not isinstance(compress_level, int) or not 0 <= compress_level <= 9:
            raise ValueError(f"compress_level: must be an int in 0..9, got {compress_level!r}")
        self.compress_level = compress_level

    def info(self):
        return {"pillow": PIL.__version__}

    def _write(self, samples, root):
        (root / IMAGES).mkdir()
        index = IndexWriter()
        for i, s in enumerate(samples):
            (root / _name(i)).write_bytes(encode(s.image, self.compress_level))
            index.add(s)
        index.save(root / "index.npz")


class PNGReader(Reader):
    def _open_handles(self):
        index = Index.load(self.path / "index.npz", self.path, count=self._n)
        if self.remote is not None:
            self._index = index
            return self.remote
        try:  # images/ of the pinned dataset: each read opens its file relative to it
            images = OpenDir(IMAGES, self._dir_fd)
        except OSError as err:
            raise DatasetError(self.path, f"{IMAGES}/ folder is missing") from err
        self._index = index
        return images

    def _read(self, i):
        index = self._index
        name = _name(i)
        try:
            # One read of the whole file: Pillow reading a file object makes a
            # dozen small buffered reads, as slow as decoding a 32x32 image.
            h = self._handles
            img = decode(read_file(f"{i:08d}.png", dir_fd=h.fd) if h is not self.remote else h.read_bytes(name))
        except FileNotFoundError as err:
            raise DatasetError(self.path, f"{name} is missing") from err
        except PermissionError as err:  # not damage; opened relative to images/, so name it in full
            raise PermissionError(err.errno, err.strerror, str(self.path / name)) from err
        except (OSError, ValueError) as err:  # decode turns all of Pillow's errors into ValueError
            raise DatasetError(self.path, f"{name} is damaged: {err}") from err
        dtype, shape = index.image_dtype[i], index.image_shape[i]
        if img.dtype != dtype:
            # Mode I;16 reads as '<u2', which is uint16 on little-endian machines only.
            if img.dtype.kind != "u" or img.dtype.itemsize != dtype.itemsize:
                raise DatasetError(self.path, f"{name} holds {img.dtype}, index says {dtype}")
            img = img.astype(dtype)
        if img.shape != shape and img.shape + (1,) != shape:
            raise DatasetError(self.path, f"{name} is {img.shape}, index says {shape}")
        return index.sample(i, img.reshape(shape))


PNG.reader = PNGReader
