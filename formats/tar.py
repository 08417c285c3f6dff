"""tar: WebDataset-compatible tar shards, streamed in order or read at random.

``shard-000000.tar``, ... hold ``shard_size`` samples each (fewer once past
``shard_bytes``, if set).  Sample ``i`` is ``s{i:09d}.png`` (a uint8 2-D
image, Pillow) or ``.npy`` (everything else: uint16, int16 and float32
images, and ``(D, H, W, C)`` volumes of any dtype, written by ``np.save``)
plus ``s{i:09d}.json`` (key, label, boxes, box_labels, meta, shape):
WebDataset groups members by the name up to the first dot, so the real key
lives in the json.  ``index.npz`` holds each image's shard, offset
and size, so ``r[i]`` is one ``os.pread`` and iteration reads each shard in
4 MiB blocks cut at those offsets (tar headers are never parsed on read:
WebDataset and ``tar`` read the same shards by name).

Pick it for sequential streaming at scale (WebDataset, object stores).
Caveats: 512-byte tar blocks nearly double small datasets (32x32 images);
random access needs our index (WebDataset only streams); other tools read a
one-channel PNG as ``(H, W)``; each process opens shards lazily, <= 64 at once,
from the dataset directory it opened (so a dataset written over meanwhile is
never read), and threads share them under a lock held for each ``pread``.

Native loader (:meth:`Tar.native_loader`): the WebDataset README's pipeline over
the shards, ``webdataset.WebDataset(shards, shardshuffle=..., seed=seed)`` +
``.shuffle(SHUFFLE_BUFFER, seed=seed)`` + decode + ``.batched`` inside a
``webdataset.WebLoader``; with workers, webdataset's ``split_by_worker`` hands
each worker whole shards, so a dataset of fewer shards than workers leaves
workers idle (``empty_check`` off: such a worker yields nothing).
"""
from __future__ import annotations

import io
import itertools
import json
import os
import tarfile
import tokenize
from pathlib import Path

import numpy as np

from . import png
from ._api import DatasetError, Format, Reader, Sample
from ._bound import Bound, BoundInput, BoundRun
from ._fs import _O_RDONLY
from ._index import Index, IndexWriter
from ._native import NativeLoader, collate

READ_BLOCK = 4 << 20  # bytes per read of a scan
SHUFFLE_BUFFER = 1000  #: samples in the native loader's shuffle buffer (the WebDataset README's figure)


def _member(tf: tarfile.TarFile, name: str, data: bytes) -> int:
    """Append one member; return the offset of its data in the shard."""
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o444
    tf.addfile(info, io.BytesIO(data))
    return tf.offset - -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _ext(dtype: np.dtype, ndim: int) -> str:
    """The member type of an image: PNG for uint8 2-D images, ``.npy`` for everything else."""
    return "png" if dtype == np.uint8 and ndim < 4 else "npy"


def _encode(img: np.ndarray) -> tuple[str, bytes]:
    if _ext(img.dtype, img.ndim) == "png":
        return "png", png.encode(img)
    out = io.BytesIO()
    np.save(out, img, allow_pickle=False)
    return "npy", out.getvalue()


def _decode(buf, ext: str) -> np.ndarray:
    if ext == "png":
        return png.decode(buf)  # raises ValueError for every broken PNG
    try:
        with io.BytesIO(buf) as f:
            return np.load(f, allow_pickle=False)
    except (SyntaxError, tokenize.TokenError, TypeError, KeyError, MemoryError, RecursionError) as err:
        # np.load parses a damaged header with tokenize and ast.literal_eval
        raise ValueError(f"not a readable .npy: {type(err).__name__}: {err}") from err


class Tar(Format):
    name = "tar"
    image_codec = "png"  # of uint8 2-D images; the others are .npy
    libraries = ("pillow", "webdataset")  # webdataset: the reader these shards are compatible with
    bench_variants = ({}, {"shard_size": 100})
    native_loader_name = "webdataset.WebDataset"
    remote_reads = "ranges"  # a member per ranged GET; a scan reads blocks of a shard

    @property
    def bound(self) -> Bound:
        return Bound("bare-tarfile", bare_tarfile)

    @property
    def max_image_pixels(self) -> int | None:  # type: ignore[override]  # a property where the base has a plain attribute
        """Pillow's limit (:func:`storebench.formats.png.max_pixels`), for every image: those
        stored as .npy are held to it too, so that one limit describes the format."""
        return png.max_pixels()

    def __init__(self, shard_size: int = 1000, shard_bytes: int | None = None):
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size: must be a positive int, got {shard_size!r}")
        if shard_bytes is not None and (not isinstance(shard_bytes, int) or shard_bytes < 1):
            raise ValueError(f"shard_bytes: must be None or a positive int, got {shard_bytes!r}")
        self.shard_size = shard_size
        self.shard_bytes = shard_bytes

    def _write(self, samples, root: Path):
        index = IndexWriter(columns=("shard", "offset", "size"))
        it, shard = iter(samples), 0
        for first in it:  # one pass per shard
            with tarfile.open(root / f"shard-{shard:06d}.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
                for s in itertools.chain([first], itertools.islice(it, self.shard_size - 1)):
                    base, (ext, data) = f"s{len(index):09d}", _encode(s.image)
                    offset = _member(tf, f"{base}.{ext}", data)
                    meta = {"key": s.key, "label": s.label, "boxes": s.boxes.tolist(),
                            "box_labels": s.box_labels.tolist(), "meta": dict(s.meta),
                            "shape": list(s.image.shape)}
                    _member(tf, f"{base}.json", json.dumps(meta).encode())
                    index.add(s, shard=shard, offset=offset, size=len(data))
                    if self.shard_bytes is not None and tf.offset >= self.shard_bytes:
                        break
            shard += 1
        index.save(root / "index.npz")
        return {"shards": shard}

    def native_loader(self, path, *, batch_size: int, workers: int, seed: int) -> NativeLoader:
        """The WebDataset README's loader over the shards: shard shuffle, a sample shuffle buffer of
        ``SHUFFLE_BUFFER``, PNG (Pillow) and .npy decoding, batches in the ``workers`` workers of a
        ``WebLoader`` (torch's default start method), both shuffles seeded by ``seed``."""
        try:
            import webdataset as wds
        except ImportError as err:
            raise ImportError(f"tar's native loader needs webdataset (pip install webdataset): {err}") from err
        import multiprocessing as mp

        shards = sorted(str(p) for p in Path(path).glob("shard-*.tar"))
        pipeline = (wds.WebDataset(shards, shardshuffle=max(len(shards), 1), seed=seed, empty_check=False)
                    .shuffle(SHUFFLE_BUFFER, seed=seed)
                    .decode(wds.handle_extension("png", png.decode))  # .npy and .json: webdataset's own
                    .map(_wds_item)
                    .batched(batch_size, collation_fn=collate))
        # webdataset 1.0.2 leaves each shard's file to the garbage collector (webdataset#311, #383): a
        # ResourceWarning per shard, and descriptors held until collected; close each once it is read.
        pipeline.pipeline = [_ClosingOpen(st) if isinstance(st, wds.cache.StreamingOpen) else st
                             for st in pipeline.pipeline]
        loader = wds.WebLoader(pipeline, batch_size=None, num_workers=workers)
        return NativeLoader(loader, workers=workers,
                            mp_context=mp.get_start_method(allow_none=True) or mp.get_all_start_methods()[0])


class _ClosingOpen:
    """webdataset's shard opener, each shard closed when the next is asked for (or the epoch ends)."""

    def __init__(self, opener):
        self.opener = opener

    def __call__(self, urls):
        for shard in self.opener(urls):
            with shard["stream"]:
                yield shard


def _wds_item(sample: dict) -> tuple[str, int, np.ndarray]:
    """A decoded webdataset sample as (key, label, image): the key is the json's (the member names
    are positions), the image in its stored shape (a one-channel PNG decodes as (H, W))."""
    meta = sample["json"]
    img = sample["png"] if "png" in sample else sample["npy"]
    return meta["key"], meta["label"], img.reshape(meta["shape"])


class TarReader(Reader):
    def _open_handles(self):
        index = Index.load(self.path / "index.npz", self.path, ("shard", "offset", "size"), self._n)
        n_shards = self.manifest.get("shards")
        if not isinstance(n_shards, int):
            raise DatasetError(self.path, "the manifest does not give the shard count")
        c = index.columns  # the base class has checked every shard's size against the manifest
        if index.n and (c["shard"].min() < 0 or c["shard"].max() >= n_shards or c["offset"].min() < 0):
            raise DatasetError(self.path, "index points outside the shards")
        self._index = index
        self._loc = list(zip(c["shard"].tolist(), c["offset"].tolist(), c["size"].tolist()))
        return {}  # shard number -> file descriptor, opened on first use (under self._lock)

    def _close_handles(self, fds):
        while fds:
            f = fds.popitem()[1]
            if isinstance(f, int):
                os.close(f)
            else:
                f.close()

    def _pixels(self, i: int, buf: bytes, ext: str) -> np.ndarray:
        img = _decode(buf, ext)
        shape = self._index.image_shape[i]
        # A one-channel PNG decodes as (H, W): the index has the exact shape.
        if img.shape[:2] != shape[:2] or img.dtype != self._index.image_dtype[i] or \
                (ext == "npy" and img.shape != shape):
            raise ValueError(f"it decodes to {img.dtype} {img.shape}, expected {shape}")
        return img.reshape(shape)

    def _pread(self, k: int, size: int, offset: int) -> bytes:
        """``size`` bytes at ``offset`` of shard ``k``, opened relative to the pinned dataset.

        Under the lock: a thread could otherwise close (evict) the descriptor between
        another's lookup and its read, and a shard opened next would get its number.
        """
        with self._lock:
            fds = self._handles
            fd = fds.get(k)
            if fd is None:
                if len(fds) >= 64:  # far below the usual limit of 1024 descriptors
                    old = fds.pop(next(iter(fds)))
                    if isinstance(old, int):  # an S3 file is left to the collector: a thread may be reading it
                        os.close(old)
                if self.remote is not None:  # pyarrow's S3 file (a HEAD): each read one ranged GET
                    fd = fds[k] = self.remote.open_input_file(f"shard-{k:06d}.tar")
                else:
                    fd = fds[k] = os.open(f"shard-{k:06d}.tar", _O_RDONLY, dir_fd=self._dir_fd)
            if self.remote is None:
                return os.pread(fd, size, offset)
        return fd.read_at(size, offset)  # outside the lock: threads' GETs overlap

    def _decode(self, i: int, k: int, buf) -> Sample:
        try:
            ext = _ext(self._index.image_dtype[i], len(self._index.image_shape[i]))
            return self._index.sample(i, self._pixels(i, buf, ext))
        except (OSError, ValueError, EOFError) as err:
            raise DatasetError(self.path, f"shard-{k:06d}.tar member s{i:09d} is damaged: {err}") from err

    def _read(self, i):
        k, offset, size = self._loc[i]
        try:
            buf = self._pread(k, size, offset)
        except PermissionError:
            raise  # names the file: not damage
        except OSError as err:
            raise DatasetError(self.path, f"shard-{k:06d}.tar member s{i:09d} is unreadable: {err}") from err
        if len(buf) != size:
            raise DatasetError(self.path, f"shard-{k:06d}.tar member s{i:09d} is cut short")
        return self._decode(i, k, buf)

    def _iter(self):
        # In file order through the offset index, READ_BLOCK bytes per read: the
        # headers need no parsing (tarfile's streaming reader made scans 2x
        # slower than random reads); the checksums guard the content.
        loc, n, i = self._loc, self._n, 0
        while i < n:
            k, start, _ = loc[i]
            j, end = i, start
            while j < n and loc[j][0] == k and (j == i or loc[j][1] + loc[j][2] - start <= READ_BLOCK):
                end = loc[j][1] + loc[j][2]
                j += 1
            try:
                block = self._pread(k, end - start, start)
            except PermissionError:
                raise  # names the file: not damage
            except OSError as err:
                raise DatasetError(self.path, f"shard-{k:06d}.tar is unreadable: {err}") from err
            if len(block) != end - start:
                raise DatasetError(self.path, f"shard-{k:06d}.tar is cut short")
            view = memoryview(block)
            for p in range(i, j):
                o = loc[p][1] - start
                if o < 0:
                    raise DatasetError(self.path, f"index offsets of shard-{k:06d}.tar are out of order")
                yield self._decode(p, k, view[o:o + loc[p][2]])
            i = j


Tar.reader = TarReader


def bare_tarfile(c: BoundInput) -> BoundRun:
    """``TarFile.extractfile(member).read()`` + decode + Sample, on one tar of the pool's images."""
    pool = c.pool

    def make(tmp: Path):
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tf:
            for i, a in enumerate(pool.args):
                ext, data = _encode(a[1])
                _member(tf, f"s{i:09d}.{ext}", data)

    path = c.store("bare.tar", make)
    tf = tarfile.open(path)
    members = tf.getmembers()  # parsed once, outside the timed loop
    spec = [(a[1].dtype, a[1].shape, _ext(a[1].dtype, a[1].ndim)) for a in pool.args]

    def image(i):
        dt, sh, ext = spec[i]
        img = _decode(tf.extractfile(members[i]).read(), ext)
        return (img if img.dtype == dt else img.astype(dt)).reshape(sh)
    return BoundRun(c.each(image), tf.close, [path])
