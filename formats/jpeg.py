"""jpeg: one baseline JPEG file per image, the way most photo datasets ship.

``images/00000000.jpg``, ``images/00000001.jpg``, ... are named by position;
keys, labels, boxes, metadata and exact shapes live in ``index.npz``.  Images
are encoded with simplejpeg (libjpeg-turbo) when installed, else Pillow, at
``quality`` with 4:4:4 chroma (4:2:0 smears colour edges at 32x32).  Decoding
uses simplejpeg, else OpenCV, else Pillow; ``info()`` names both choices.

Pick it when disk size or transfer matters more than exact pixels: at quality
90, 32x32 crops shrink 3x against raw and 400 px photos 12x, PSNR >= 33 dB.
Caveats: lossy (``lossless = False``: pixels differ from what was written,
shapes, dtypes and everything else do not); baseline JPEG is 8-bit, so only
2-D uint8 images with 1 or 3 channels or none are stored, and uint16,
int16, float32, 2- and 4-channel images and volumes are refused on write
with a ``ValueError``; one file per image means 100k inodes, slow directory
listings and slow copies.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ._api import DatasetError, Format, Reader, read_file
from ._fs import OpenDir
from ._index import Index, IndexWriter


def _simplejpeg():
    import simplejpeg

    def decode(buf, gray):
        return simplejpeg.decode_jpeg(buf, "GRAY" if gray else "RGB")

    def encode(img, quality):
        gray = img.ndim == 2 or img.shape[2] == 1
        img = np.ascontiguousarray(img.reshape(img.shape[:2] + (1,)) if gray else img)
        return simplejpeg.encode_jpeg(img, quality, "GRAY" if gray else "RGB",
                                      "Gray" if gray else "444")
    return f"simplejpeg {simplejpeg.__version__}", decode, encode


def _opencv():
    import cv2

    def decode(buf, gray):
        img = cv2.imdecode(np.frombuffer(buf, np.uint8),
                           cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError("OpenCV cannot decode it")
        return img if gray else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)  # OpenCV decodes to BGR
    return f"opencv {cv2.__version__}", decode, None


def _pillow():
    import PIL
    from PIL import Image

    def decode(buf, gray):
        with Image.open(io.BytesIO(buf)) as im:
            return np.asarray(im.convert("L" if gray else "RGB"))

    def encode(img, quality):
        out = io.BytesIO()
        Image.fromarray(img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img).save(
            out, "JPEG", quality=quality, subsampling=0)
        return out.getvalue()
    return f"pillow {PIL.__version__}", decode, encode


LOADERS = (_simplejpeg, _opencv, _pillow)  # fastest first


def _pick():
    """Import only as far as needed: with simplejpeg installed, OpenCV is never loaded."""
    dec = None
    for load in LOADERS:
        try:
            name, decode, encode = load()
        except ImportError:
            continue
        dec = dec or (name, decode)
        if encode is not None:
            return dec + (name, encode)
    raise ImportError("jpeg needs simplejpeg or Pillow")


DECODER, DECODE, ENCODER, ENCODE = _pick()


class JPEG(Format):
    name = "jpeg"
    remote_reads = "objects"  # a GET of one file's object per sample
    lossless = False
    modes = frozenset({("uint8", 0), ("uint8", 1), ("uint8", 3)})
    image_codec = "jpeg"  # bound: decode-only, this format's own bytes decoded from memory
    max_image_side = 65500  # libjpeg(-turbo)'s JPEG_MAX_DIMENSION
    libraries = ("simplejpeg", "opencv-python-headless", "opencv-python", "pillow")
    bench_variants = ({}, {"quality": 75}, {"quality": 95})

    def __init__(self, quality: int = 90):
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"quality: must be an int in 1..100, got {quality!r}")
        self.quality = quality

    def info(self):
        return {"jpeg_decoder": DECODER, "jpeg_encoder": ENCODER}

    def _write(self, samples, root: Path):
        index = IndexWriter()
        (root / "images").mkdir()
        for i, s in enumerate(samples):
            try:
                data = ENCODE(s.image, self.quality)
            except (ValueError, OSError) as err:  # e.g. a side over 65500 pixels
                raise ValueError(f"image of key {s.key!r}: cannot encode as JPEG: {err}") from err
            with open(root / "images" / f"{i:08d}.jpg", "wb") as f:
                f.write(data)
            index.add(s)
        index.save(root / "index.npz")
        return {"jpeg_encoder": ENCODER}


class JPEGReader(Reader):
    def _open_handles(self):
        index = Index.load(self.path / "index.npz", self.path, count=self._n)
        if self.remote is not None:  # a GET of one image's object per read
            self._index = index
            return self.remote
        try:  # images/ of the pinned dataset: opening NAME.jpg relative to it skips
            handles = OpenDir("images", self._dir_fd)  # the directories above, a third of a read
        except OSError as err:
            raise DatasetError(self.path, "images/ folder is missing") from err
        self._index = index
        return handles

    def _read(self, i):
        index = self._index
        shape = index.image_shape[i]
        name = f"{i:08d}.jpg"
        try:
            h = self._handles
            buf = read_file(name, dir_fd=h.fd) if h is not self.remote else h.read_bytes(f"images/{name}")
            img = DECODE(buf, len(shape) == 2 or shape[2] == 1)
        except FileNotFoundError as err:
            raise DatasetError(self.path, f"images/{name} is missing") from err
        except PermissionError as err:  # not damage; opened relative to images/, so name it in full
            raise PermissionError(err.errno, err.strerror, str(self.path / "images" / name)) from err
        except (ValueError, OSError) as err:
            raise DatasetError(self.path, f"images/{name} is damaged: {err}") from err
        if img.shape[:2] != shape[:2]:
            raise DatasetError(self.path, f"images/{name} decodes to {img.shape}, expected {shape}")
        return index.sample(i, img.reshape(shape))


JPEG.reader = JPEGReader
