"""Bounds: the least work that yields a format's Samples, declared by the format.

Every format names, through :attr:`Format.bound <storebench.formats.Format.bound>`,
a :class:`Bound`: the bare use of its own library that produces the same
Samples (``txn.get`` for lmdb, ``ds[a:b]`` for h5py, one ``SELECT`` for
sqlite, ...), so a benchmark row's efficiency against it separates
storebench's overhead from the library's cost.  A bound does not read the
format's dataset: it builds its own store, once, from a :class:`Pool` of the
dataset's first samples held in memory, and cycles through the pool, so a
bound of 100k samples needs bounded memory and disk.

The base :class:`~storebench.formats.Format` picks a default by the declared
``image_codec``: ``decode-only`` (decoding the format's own PNG or JPEG bytes, read
from its dataset into memory first) for ``"png"`` and ``"jpeg"``, and
:data:`FLOOR` (Samples from in-memory arrays, the cost of the contract) for
anything else, so a third-party format gets a sensible bound with no edit
anywhere.  :data:`GATHER` (one NumPy fancy index per batch, no Samples) is
the memory-bound reference row.

A bound function takes one :class:`BoundInput` and returns a
:class:`BoundRun` whose ``run()`` visits ``input.order`` and returns the
count; it hands each image to ``input.touch``, the consumer the benchmark's
own loops use, so that cost cancels in the efficiency.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import uuid
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ._fs import dataset_files
from ._sample import Sample, make_sample

OPS = ("scan", "random", "batch")
ENCODED_BYTES = 32 << 20  #: bytes of encoded images decode-only holds in memory at most
_EXT = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


class NoBound(Exception):
    """The bound cannot be measured for this data (the reason says why)."""


@dataclass
class Pool:
    """The first ``m`` samples of a dataset, in memory, that bounds build Samples from.

    ``tag`` names the stores built from the pool (equal tags mean equal
    samples); ``args`` holds ``(key, image, label, boxes, box_labels, meta)``
    per sample; ``stacked`` every image in one array when they share shape and
    dtype, else None.
    """

    tag: str
    args: list[tuple]
    stacked: np.ndarray | None

    @classmethod
    def of(cls, samples: Iterable[Sample], tag: str) -> Pool:
        """A pool of ``samples`` (their images copied, so the pool owns them)."""
        args = [(s.key, np.array(s.image), s.label, s.boxes, s.box_labels, dict(s.meta)) for s in samples]
        same = len({(a[1].shape, a[1].dtype) for a in args}) == 1
        return cls(tag, args, np.stack([a[1] for a in args]) if same else None)

    @property
    def m(self) -> int:
        return len(self.args)

    @property
    def image_bytes(self) -> float:
        """Mean pixel bytes per image."""
        return sum(a[1].nbytes for a in self.args) / self.m

    def sample(self, i: int, image: np.ndarray) -> Sample:
        """Pool sample ``i`` with ``image`` as its pixels."""
        key, _img, label, boxes, box_labels, meta = self.args[i]
        return make_sample(key, image, label, boxes, box_labels, meta)

    def pixels(self, i: int, buf) -> np.ndarray:
        """Raw bytes ``buf`` as pool image ``i`` (a view, no copy)."""
        img = self.args[i][1]
        return np.frombuffer(buf, img.dtype).reshape(img.shape)

    def flat(self) -> np.ndarray:
        """Every image's bytes back to back, as uint8 (see :meth:`spans`)."""
        return np.concatenate([np.ascontiguousarray(a[1]).reshape(-1).view(np.uint8) for a in self.args])

    def spans(self) -> list[tuple[int, int]]:
        """Each image's (start, end) byte in :meth:`flat`."""
        ends = np.cumsum([a[1].nbytes for a in self.args]).tolist()
        return list(zip([0] + ends[:-1], ends))


@dataclass
class BoundRun:
    """A bound's timed loop: ``run()`` visits the positions and returns their count."""

    run: Callable[[], int]
    close: Callable[[], None] = lambda: None
    files: list[Path] = field(default_factory=list)  # what to read into the page cache first
    info: dict = field(default_factory=dict)
    name: str = ""


@dataclass(frozen=True)
class BoundInput:
    """What a bound function is given: explicit, nothing from a benchmark session."""

    pool: Pool
    op: str  # one of the bound's ops
    order: np.ndarray  # pool positions to visit, in order
    batch: int  # samples per batch, for op "batch"
    root: Path  # a cache directory for the stores bounds build
    touch: Callable[[np.ndarray], Any]  # the consumer of each image
    dataset: Path | None = None  # the format's own dataset, for a bound with ``dataset_of``

    @property
    def idx(self) -> list[int]:
        return self.order.tolist()

    def chunks(self) -> list[np.ndarray]:
        """``order`` cut into batches."""
        return [self.order[j:j + self.batch] for j in range(0, len(self.order), self.batch)]

    def store(self, name: str, make: Callable[[Path], None]) -> Path:
        """``root/bounds/<pool tag>/name``, built once by ``make(tmp)`` and renamed into place."""
        path = self.root / "bounds" / self.pool.tag / name
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        try:
            make(tmp)
            try:
                os.rename(tmp, path)
            except OSError:
                if not path.exists():
                    raise  # else another process built it first: keep theirs
        finally:
            if tmp.exists():
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        return path

    def each(self, image: Callable[[int], np.ndarray]) -> Callable[[], int]:
        """A loop building pool sample ``i`` from ``image(i)`` for each ``i`` of ``order``."""
        idx, touch, sample = self.idx, self.touch, self.pool.sample

        def run():
            for i in idx:
                touch(sample(i, image(i)).image)
            return len(idx)
        return run


@dataclass(frozen=True)
class Bound:
    """A bound row: ``name``, the ops it is measured for, and its function.

    An op not in ``ops`` is measured with the bound's scan (decode-only's
    order does not matter in memory); benchmark rows record it as
    ``bound_op``.  A bound with ``dataset_of`` (a Format) takes its bytes
    from that format's own dataset (``BoundInput.dataset``); others build
    their store from the pool.
    """

    name: str
    fn: Callable[[BoundInput], BoundRun]
    ops: tuple[str, ...] = OPS
    dataset_of: Any = None

    @property
    def kind(self) -> str:
        """The name without its options: ``decode-only[png[1]]`` -> ``decode-only``."""
        return self.name.split("[", 1)[0]

    def op_for(self, op: str) -> str:
        return op if op in self.ops else "scan"

    def open(self, *, pool: Pool, op: str, perm: np.ndarray, batch: int, root: Path,
             touch: Callable[[np.ndarray], Any], dataset: Path | None = None) -> BoundRun:
        """The loop over ``len(perm)`` positions for ``op``: scan order, or ``perm``, modulo the pool.

        Raises :class:`NoBound` where the bound cannot be measured.
        """
        op = self.op_for(op)
        base = np.arange(len(perm)) if op == "scan" else np.asarray(perm)
        if self.dataset_of is not None and dataset is None:
            raise NoBound(f"{self.name} reads the format's dataset; none given")
        c = BoundInput(pool, op, base % pool.m, batch, Path(root), touch, dataset)
        b = self.fn(c)
        return replace(b, name=self.name, info={"bound": self.name, "op": op, "pool_size": pool.m, **b.info})


def named(kind: str, fmt) -> str:
    """``kind`` plus ``fmt``'s non-default options: ``bare-sqlite``, ``bare-sqlite[65536]``."""
    return kind + fmt.id[len(fmt.name):]


# --------------------------------------------------------------------------- in memory


def floor(c: BoundInput) -> BoundRun:
    """Samples built from the pool's arrays: the cost of the Sample contract alone."""
    args, touch = c.pool.args, c.touch
    chunks, idx = [ch.tolist() for ch in c.chunks()], c.idx

    def batches():
        k = 0
        for ch in chunks:
            for s in [make_sample(*args[i]) for i in ch]:
                touch(s.image)
                k += 1
        return k

    def each():
        for i in idx:
            touch(make_sample(*args[i]).image)
        return len(idx)
    return BoundRun(batches if c.op == "batch" else each)


def gather(c: BoundInput) -> BoundRun:
    """One fancy index per batch of one in-memory array; no Samples."""
    arr = c.pool.stacked
    if arr is None:
        raise NoBound("gather needs equal-shaped images; this preset's differ")
    chunks = c.chunks()

    def run():
        k = 0
        for ch in chunks:
            k += len(arr[ch])
        return k
    return BoundRun(run)


def pread(c: BoundInput) -> BoundRun:
    """The physical reference: one ``os.pread`` per sample of its storebench record (uncompressed,
    :mod:`~storebench.formats._record`) from one flat file of the pool's records, at the offset an
    in-memory index gives, decoded to a Sample: what reading a sample's bytes costs with nothing
    but the file system between them (what lmdb, tfrecord and arrayrecord each add to it, their
    rows show)."""
    from ._record import decode, encode

    pool = c.pool

    def make(tmp: Path):
        with open(tmp, "wb") as f:
            for a in pool.args:
                f.write(encode(make_sample(*a)))
            f.flush()
            os.fsync(f.fileno())

    sizes = [len(encode(make_sample(*a))) for a in pool.args]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64).tolist()
    path = c.store("pread.bin", make)
    fd = os.open(path, os.O_RDONLY)
    idx, touch, read = c.idx, c.touch, os.pread

    def run():
        for i in idx:
            touch(decode(read(fd, sizes[i], offsets[i])).image)
        return len(idx)
    return BoundRun(run, close=lambda: os.close(fd), files=[path])


FLOOR = Bound("floor", floor)
GATHER = Bound("gather", gather, ops=("batch",))
PREAD = Bound("pread", pread)


# --------------------------------------------------------------------------- decode-only


def encoded_images(path: Path, limit: int, budget: int = ENCODED_BYTES) -> tuple[str | None, list[bytes]]:
    """The first ``limit`` PNG or JPEG images stored in a dataset, in position order.

    Looks at loose files and at the members of ``.zip`` and ``.tar`` files,
    in sorted file order (formats name images by position), up to ``budget``
    bytes.  Returns (codec, blobs), or (None, []) if there are none.
    """
    codec: str | None = None
    blobs: list[bytes] = []
    total = 0

    def take(name: str, read: Callable[[], bytes]) -> bool:
        nonlocal codec, total
        c = _EXT.get(os.path.splitext(name)[1].lower())
        if c is None or (codec is not None and c != codec):
            return True
        codec = c
        blobs.append(read())
        total += len(blobs[-1])
        return len(blobs) < limit and total < budget

    for f in dataset_files(path):
        if f.suffix == ".zip":
            with zipfile.ZipFile(f) as z:
                for info in z.infolist():
                    if not take(info.filename, partial(z.read, info)):
                        return codec, blobs
        elif f.suffix == ".tar":
            with tarfile.open(f) as t:
                for member in t:
                    if member.isfile() and not take(member.name, partial(_member_bytes, t, member)):
                        return codec, blobs
        elif not take(f.name, f.read_bytes):
            return codec, blobs
    return codec, blobs


def _member_bytes(t: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = t.extractfile(member)
    if f is None:
        raise NoBound(f"tar member {member.name} has no data")
    return f.read()


def _png_decoder():
    from .png import decode
    return "pillow", lambda buf, gray: decode(buf)


def _jpeg_decoder():
    """The jpeg format's own decoder: the fastest installed (simplejpeg, OpenCV, Pillow)."""
    from . import jpeg
    return jpeg.DECODER.split()[0], jpeg.DECODE


#: codec -> the decoder the formats of that codec use, as (name, decode(buf, gray)).
DECODERS: dict[str, Callable[[], tuple[str, Callable]]] = {"png": _png_decoder, "jpeg": _jpeg_decoder}


def decode_only(c: BoundInput) -> BoundRun:
    """Decoding the dataset's own encoded images, held in memory, + Sample."""
    if c.dataset is None:
        raise NoBound("decode-only reads the format's dataset; none given")
    codec, blobs = encoded_images(c.dataset, c.pool.m)
    if codec is None or not blobs:
        raise NoBound(f"{c.dataset.name} holds no PNG or JPEG images")
    name, decode = DECODERS[codec]()
    pool, touch = c.pool, c.touch
    idx = (c.order % len(blobs)).tolist()
    spec = [(a[1].dtype, a[1].shape, a[1].ndim == 2 or a[1].shape[2] == 1) for a in pool.args[:len(blobs)]]

    def run():
        for i in idx:
            dt, sh, gray = spec[i]
            img = decode(blobs[i], gray)
            if img.dtype != dt:
                img = img.astype(dt)
            touch(pool.sample(i, img.reshape(sh)).image)
        return len(idx)
    return BoundRun(run, info={"codec": codec, "decoder": name})


def default_bound(fmt) -> Bound:
    """decode-only for a format whose ``image_codec`` has a decoder here, else the floor."""
    if fmt.image_codec in DECODERS:
        return Bound(f"decode-only[{fmt.id}]", decode_only, ops=("scan",), dataset_of=fmt)
    return FLOOR
