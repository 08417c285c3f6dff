"""zip: every image as one member of a single ``data.zip`` archive.

Members are named by position (``00000000.png`` or ``00000000.bin``) and hold
either a PNG (``encoding="png"``, Pillow) or a raw record
(``encoding="raw"``: :mod:`storebench.formats._record`, any dtype and channel count).
Members are stored uncompressed by default (``compression="stored"``), or
deflated (``"deflate"``, worth it only for raw pixels: PNG is already
compressed).  Keys, labels, boxes, metadata and exact shapes live in
``index.npz`` next to the archive: the dataset is a directory with a manifest
anyway, and this keeps ``data.zip`` a plain archive that any unzip tool lists
as images only.

Pick it when a dataset must be one file (copying 100k small files to a
cluster node is slow) yet stay readable by standard tools, with random access
through the zip central directory.  Caveats: PNG holds 2-D uint8 images with
0-4 channels and uint16 ones without channels or with one, so
``encoding="png"`` refuses uint16 RGB, int16, float32 and volumes with a
``ValueError`` (use ``"raw"``, which stores every Sample); opening parses the
whole central directory in Python (0.5-2 s per 100k members); each process opens
its own handle lazily: a ZipFile shared across forked workers interleaves
seeks on one file offset and returns garbage.
"""
from __future__ import annotations

import struct
import sys
import zipfile
import zlib
from functools import partial
from pathlib import Path

import PIL

from . import _record, png
from ._api import ALL_MODES, DatasetError, Format, Reader, describe_modes
from ._bound import Bound, BoundInput, BoundRun, NoBound, named
from ._index import Index, IndexWriter

_COMPRESSION = {"stored": zipfile.ZIP_STORED, "deflate": zipfile.ZIP_DEFLATED}
_EXT = {"png": ".png", "raw": ".bin"}


def safe_member(name: str) -> bool:
    """Whether an archive member name stays inside the dataset root."""
    parts = name.replace("\\", "/").split("/")
    return bool(name) and not name.startswith(("/", "\\")) and ":" not in parts[0] \
        and ".." not in parts


class Zip(Format):
    name = "zip"
    remote_reads = "ranges"  # zipfile over pyarrow's S3 file: headers and members by ranged GETs
    modes: frozenset = png.MODES  # of the default encoding; an instance with encoding="raw" takes all
    libraries = ("pillow",)
    bench_variants = ({}, {"encoding": "raw"}, {"compression": "deflate", "encoding": "raw"})

    def __init__(self, compression: str = "stored", encoding: str = "png"):
        if compression not in _COMPRESSION:
            raise ValueError(f"compression: must be one of {sorted(_COMPRESSION)}, got {compression!r}")
        if encoding not in _EXT:
            raise ValueError(f"encoding: must be one of {sorted(_EXT)}, got {encoding!r}")
        self.compression = compression
        self.encoding = encoding
        if encoding == "raw":
            self.modes = ALL_MODES

    @property
    def image_codec(self):
        return self.encoding

    @property
    def max_image_pixels(self) -> int | None:  # type: ignore[override]  # a property where the base has a plain attribute
        """Pillow's limit for PNG members (:func:`storebench.formats.png.max_pixels`); none for raw."""
        return png.max_pixels() if self.encoding == "png" else None

    @property
    def bound(self) -> Bound:
        """bare-zipfile with this format's compression and encoding."""
        return Bound(named("bare-zipfile", self), partial(bare_zipfile, compression=self.compression,
                                                          encoding=self.encoding))

    def info(self):
        return {"zipfile": f"python {sys.version.split()[0]}", "pillow": PIL.__version__}

    def _write(self, samples, root: Path):
        index = IndexWriter()
        ext, ctype = _EXT[self.encoding], _COMPRESSION[self.compression]
        with zipfile.ZipFile(root / "data.zip", "w", ctype, allowZip64=True) as zf:
            for i, s in enumerate(samples):
                data = _record.encode(s) if self.encoding == "raw" else png.encode(s.image)
                # A fixed timestamp keeps archives of the same samples byte-identical.
                zf.writestr(zipfile.ZipInfo(f"{i:08d}{ext}", (1980, 1, 1, 0, 0, 0)), data, ctype)
                index.add(s)
        index.save(root / "index.npz")


class ZipReader(Reader):
    def _open_handles(self):
        index = Index.load(self.path / "index.npz", self.path, count=self._n)
        try:
            # In an object store: zipfile over pyarrow's S3 file, each header and member a ranged GET.
            zf = zipfile.ZipFile(self.path / "data.zip" if self.remote is None
                                 else self.remote.open_input_file("data.zip"))
        except FileNotFoundError as err:
            raise DatasetError(self.path, "data.zip is missing") from err
        except PermissionError:
            raise  # names the file: not damage
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, struct.error) as err:
            raise DatasetError(self.path, f"data.zip is damaged: {type(err).__name__}: {err}") from err
        try:
            for name in zf.NameToInfo:
                if not safe_member(name):
                    raise DatasetError(self.path, f"data.zip member {name!r} escapes the dataset")
            ext = _EXT[self.format.encoding]
            # Position -> ZipInfo once, so reads skip the name lookup.
            self._members = [zf.NameToInfo[f"{i:08d}{ext}"] for i in range(self._n)]
        except KeyError as err:
            zf.close()
            raise DatasetError(self.path, f"data.zip has no member {err.args[0]}") from None
        except DatasetError:
            zf.close()
            raise
        self._index = index
        self._png = self.format.encoding == "png"
        return zf

    def _read(self, i):
        info = self._members[i]
        try:
            buf = self._handles.read(info)
            if not self._png:
                s = _record.decode(buf)
            else:
                img = png.decode(buf)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, struct.error,
                zlib.error) as err:  # png.decode makes every Pillow error a ValueError
            raise DatasetError(self.path, f"data.zip member {info.filename} is damaged: "
                               f"{type(err).__name__}: {err}") from err
        if not self._png:
            if s.key != self._index.keys[i]:
                raise DatasetError(self.path, f"{info.filename} holds key {s.key!r}, "
                                   f"the index {self._index.keys[i]!r}")
            return s
        shape = self._index.image_shape[i]
        if img.shape[:2] != shape[:2] or img.dtype != self._index.image_dtype[i]:
            raise DatasetError(self.path, f"{info.filename} decodes to {img.dtype} {img.shape}, "
                               f"expected {shape}")
        return self._index.sample(i, img.reshape(shape))


Zip.reader = ZipReader


def bare_zipfile(c: BoundInput, compression: str, encoding: str) -> BoundRun:
    """``ZipFile.read`` of a member + decode (PNG) or ``np.frombuffer`` (raw) + Sample,
    on an archive of the pool's images."""
    pool, ext, ctype = c.pool, _EXT[encoding], _COMPRESSION[compression]
    if encoding == "png" and (refused := {pool.sample(i, a[1]).mode for i, a in enumerate(pool.args)} - png.MODES):
        raise NoBound(f"PNG members cannot hold {describe_modes(refused)}")

    def make(tmp: Path):
        with zipfile.ZipFile(tmp, "w", ctype, allowZip64=True) as zf:
            for i, a in enumerate(pool.args):
                zf.writestr(f"{i:08d}{ext}", png.encode(a[1]) if encoding == "png" else a[1].tobytes())

    path = c.store(f"bare-{compression}-{encoding}.zip", make)
    zf = zipfile.ZipFile(path)
    infos = [zf.getinfo(f"{i:08d}{ext}") for i in range(pool.m)]
    spec = [(a[1].dtype, a[1].shape) for a in pool.args]

    def image(i):
        buf = zf.read(infos[i])
        if encoding != "png":
            return pool.pixels(i, buf)
        dt, sh = spec[i]
        img = png.decode(buf)
        return (img if img.dtype == dt else img.astype(dt)).reshape(sh)
    return BoundRun(c.each(image), zf.close, [path])
