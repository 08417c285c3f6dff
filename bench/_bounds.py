"""Bound rows: the same Samples as a format produces, with the least work possible.

* ``floor``: Samples built from in-memory arrays, the cost of the contract.
* ``gather``: one NumPy fancy index per batch from one in-memory array, the
  memory-bound ceiling (equal-shaped presets only; it builds no Samples).
* ``bare-lmdb``: ``txn.get`` + ``np.frombuffer`` + Sample, on an LMDB
  environment holding the raw pixels under 8-byte keys.
* ``bare-h5py``: ``ds[a:b]`` on a flat contiguous uint8 dataset + Sample: one
  read per image (random), per 4 MiB (scan) or per batch (batch).
* ``decode-only[<format id>]``: decoding that format's own PNG or JPEG bytes,
  already in memory, + Sample.

Bounds work on a pool of the dataset's first samples held in memory (at most
``POOL_BYTES`` of pixels, reused cyclically), so ``--sizes 100000`` needs
bounded memory; for the in-memory bounds the rate hardly depends on the pool
size once it is larger than the CPU caches.  Which bound a format is measured
against is :func:`bound_of`: raw formats against the floor.

:func:`open_bound` builds a bound's timed loop; the bound rows time it on
their own, and every warm format row times its bound again, interleaved with
its own rounds, so that its efficiency compares two rates taken under the
same machine load (a shared 2-core machine drifts by 2x within a minute).
"""
from __future__ import annotations

import os
import shutil
import struct
import tarfile
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from storebench.formats import Format, dataset_files, make_sample

from storebench import fixtures

from ._data import Dataset, Unsupported, np_order, pool_size
from ._ops import touch
from ._pagecache import prewarm

POOL_BYTES = 32 << 20
ENCODED_BYTES = 32 << 20
SCAN_BLOCK = 4 << 20  #: bytes per read of the bare-h5py scan (the hdf5 format's BLOCK)
#: Operations each bound is measured for; a format row without a matching bound op
#: is compared with the bound's scan.
BOUND_OPS = {"floor": ("scan", "random", "batch"), "gather": ("batch",),
             "bare-lmdb": ("scan", "random", "batch"), "bare-h5py": ("scan", "random", "batch"),
             "decode-only": ("scan",)}
#: Formats that store encoded images, by the codec of their default options;
#: a format with an ``encoding`` option stores that codec (or raw pixels).
IMAGE_CODECS = {"png": "png", "jpeg": "jpeg", "zip": "png", "tar": "png"}
#: Formats whose bound is a bare use of their library.
LIBRARY_BOUNDS = {"lmdb": "bare-lmdb", "hdf5": "bare-h5py"}
_EXT = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


def image_codec(fmt: Format) -> str | None:
    """``"png"`` or ``"jpeg"`` if ``fmt`` stores encoded images, else None."""
    codec = IMAGE_CODECS.get(fmt.name)
    enc = getattr(fmt, "encoding", None)
    if codec is not None and enc is not None:
        codec = enc if enc in ("png", "jpeg") else None
    return codec


def bound_of(fmt: Format) -> str:
    """The name of the bound row ``fmt``'s efficiency is measured against."""
    if fmt.name in LIBRARY_BOUNDS:
        return LIBRARY_BOUNDS[fmt.name]
    if image_codec(fmt):
        return f"decode-only[{fmt.id}]"
    return "floor"


def bound_kind(name: str) -> str:
    return name.split("[", 1)[0]


# --------------------------------------------------------------------------- the pool


@dataclass
class Pool:
    """The first ``m`` samples of a source, in memory."""

    preset: str
    seed: int
    m: int
    args: list[tuple]  # (key, image, label, boxes, box_labels, meta) of each sample
    stacked: np.ndarray | None  # every image in one array when they share shape and dtype

    @property
    def image_bytes(self) -> float:
        """Mean pixel bytes per image."""
        return sum(a[1].nbytes for a in self.args) / self.m


def make_pool(source: Dataset, budget: int = POOL_BYTES) -> Pool:
    m = pool_size(source, budget)
    args = []
    with source.open() as r:
        for s in r.read_batch(np.arange(m)):
            args.append((s.key, np.array(s.image), s.label, s.boxes, s.box_labels, dict(s.meta)))
    shapes = {(a[1].shape, a[1].dtype) for a in args}
    stacked = np.stack([a[1] for a in args]) if len(shapes) == 1 else None
    return Pool(source.preset, source.seed, m, args, stacked)


def orders(op: str, n: int, m: int, perm: np.ndarray) -> np.ndarray:
    """The pool positions a bound visits for ``op``: scan order or ``perm``, modulo ``m``."""
    base = np.arange(n) if op == "scan" else perm
    return base % m


# --------------------------------------------------------------------------- in memory


def floor(pool: Pool, op: str, order: np.ndarray, batch: int) -> Callable[[], int]:
    args = pool.args
    if op == "batch":
        chunks = [order[j:j + batch].tolist() for j in range(0, len(order), batch)]

        def run():
            k = 0
            for c in chunks:
                for s in [make_sample(*args[i]) for i in c]:
                    touch(s.image)
                    k += 1
            return k
        return run
    idx = order.tolist()

    def run():
        for i in idx:
            touch(make_sample(*args[i]).image)
        return len(idx)
    return run


def gather(pool: Pool, order: np.ndarray, batch: int) -> Callable[[], int]:
    arr = pool.stacked
    if arr is None:
        raise ValueError(f"gather needs equal-shaped images; the {pool.preset} preset's differ")
    chunks = [order[j:j + batch] for j in range(0, len(order), batch)]

    def run():
        k = 0
        for c in chunks:
            k += len(arr[c])
        return k
    return run


# --------------------------------------------------------------------------- bare libraries


def _build(path: Path, make: Callable[[Path], None]) -> Path:
    """Build ``path`` once with ``make(tmp)`` and rename it into place."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        make(tmp)
        os.rename(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    return path


def _store_dir(root: Path, pool: Pool) -> Path:
    return root / "bounds" / f"{pool.preset}-s{pool.seed}-p{fixtures.PRESET_VERSION}-m{pool.m}"


def bare_lmdb(root: Path, pool: Pool) -> Callable[[str, np.ndarray, int], Callable[[], int]]:
    """Open (building once) an LMDB environment of the pool's raw pixels."""
    import lmdb

    def make(tmp: Path):
        nbytes = sum(a[1].nbytes + 64 for a in pool.args)
        with lmdb.open(str(tmp), map_size=2 * nbytes + (64 << 20), subdir=True) as env:
            with env.begin(write=True) as txn:
                for i, a in enumerate(pool.args):
                    txn.put(struct.pack(">Q", i), np.ascontiguousarray(a[1]).tobytes())
            env.sync(True)

    path = _build(_store_dir(root, pool) / "bare.lmdb", make)
    env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True)
    keys = [struct.pack(">Q", i) for i in range(pool.m)]
    spec = [(a[1].dtype, a[1].shape) for a in pool.args]
    meta = [(a[0], a[2], a[3], a[4], a[5]) for a in pool.args]
    frombuffer = np.frombuffer

    def target(op: str, order: np.ndarray, batch: int) -> Callable[[], int]:
        if op == "scan":
            n, m = len(order), pool.m

            def run():
                k = 0
                with env.begin() as txn:
                    while k < n:
                        for i, (_key, v) in enumerate(txn.cursor()):
                            dt, sh = spec[i]
                            key, label, boxes, bl, mt = meta[i]
                            touch(make_sample(key, frombuffer(v, dt).reshape(sh), label, boxes, bl, mt).image)
                            k += 1
                            if k == n or i == m - 1:
                                break
                return k
            return run
        idx = order.tolist()

        def run():
            with env.begin() as txn:
                get = txn.get
                for i in idx:
                    dt, sh = spec[i]
                    key, label, boxes, bl, mt = meta[i]
                    touch(make_sample(key, frombuffer(get(keys[i]), dt).reshape(sh), label, boxes, bl, mt).image)
            return len(idx)
        return run
    target.close, target.files = env.close, dataset_files(path)
    return target


def bare_h5py(root: Path, pool: Pool) -> Callable[[str, np.ndarray, int], Callable[[], int]]:
    """Open (building once) an HDF5 file with the pool's pixels in one flat contiguous dataset.

    Each op uses the cheapest plain h5py read for its access pattern:
    ``random`` is one ``ds[a:b]`` per image, ``scan`` one ``ds[a:b]`` per
    ``SCAN_BLOCK`` bytes cut into images, ``batch`` one read of the union of
    a batch's byte ranges (a hyperslab selection, in file order).  The file
    is opened with HDF5's 64 KiB sieve buffer off, so a small read fetches
    only its bytes (2x faster for ``ds[a:b]`` of one 3 KB image).
    """
    import h5py

    spans, pos = [], 0
    for a in pool.args:
        spans.append((pos, pos + a[1].nbytes))
        pos += a[1].nbytes

    def make(tmp: Path):
        flat = np.concatenate([np.ascontiguousarray(a[1]).reshape(-1).view(np.uint8) for a in pool.args])
        with h5py.File(tmp, "w") as f:
            f.create_dataset("pixels", data=flat)  # contiguous: no chunk lookups

    path = _build(_store_dir(root, pool) / "bare.h5", make)
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

    def target(op: str, order: np.ndarray, batch: int) -> Callable[[], int]:
        idx = order.tolist()
        if op == "scan":
            blocks, i = [], 0  # (first, last + 1, start byte, end byte) of runs of pool positions
            m = pool.m
            while i < m:
                j = i + 1
                while j < m and spans[j][1] - spans[i][0] <= SCAN_BLOCK:
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
            return run
        if op == "batch":
            chunks = [order[j:j + batch] for j in range(0, len(order), batch)]

            def run():
                k = 0
                for c in chunks:
                    todo = np.unique(c).tolist()
                    space, where, o = ds.id.get_space(), {}, 0
                    space.select_none()
                    for i in todo:
                        a, b = spans[i]
                        space.select_hyperslab((a,), (b - a,), op=h5py.h5s.SELECT_OR)
                        where[i] = o
                        o += b - a
                    out = np.empty(o, np.uint8)
                    ds.id.read(h5py.h5s.create_simple((o,)), space, out)
                    for i in c.tolist():
                        w = where[i]
                        sample(i, out[w:w + spans[i][1] - spans[i][0]])
                        k += 1
                return k
            return run

        def run():
            for i in idx:
                a, b = spans[i]
                sample(i, ds[a:b])
            return len(idx)
        return run
    target.close, target.files = f.close, [path]
    return target


# --------------------------------------------------------------------------- decode-only


def encoded_images(path: Path, limit: int, budget: int = ENCODED_BYTES) -> tuple[str | None, list[bytes]]:
    """The first ``limit`` PNG or JPEG images stored in a dataset, in position order.

    Looks at loose files and at the members of ``.zip`` and ``.tar`` files,
    in sorted file order (formats name images by position).  Stops after
    ``budget`` bytes.  Returns (codec, blobs), or (None, []) if there are none.
    """
    codec, blobs, total = None, [], 0

    def take(name: str, read: Callable[[], bytes]) -> bool:
        nonlocal codec, total
        c = _EXT.get(os.path.splitext(name)[1].lower())
        if c is None or (codec is not None and c != codec):
            return True
        codec = c
        b = read()
        blobs.append(b)
        total += len(b)
        return len(blobs) < limit and total < budget

    for f in dataset_files(path):
        if f.suffix == ".zip":
            with zipfile.ZipFile(f) as z:
                for info in z.infolist():
                    if not take(info.filename, lambda info=info: z.read(info)):
                        return codec, blobs
        elif f.suffix == ".tar":
            with tarfile.open(f) as t:
                for member in t:
                    if member.isfile() and not take(member.name, lambda m=member: t.extractfile(m).read()):
                        return codec, blobs
        elif not take(f.name, f.read_bytes):
            return codec, blobs
    return codec, blobs


def _png_decoder():
    from storebench.formats.png import decode
    return "pillow", lambda buf, gray: decode(buf)


def _jpeg_decoder():
    """The jpeg format's own decoder: the fastest installed (simplejpeg, OpenCV, Pillow)."""
    from storebench.formats import jpeg
    return jpeg.DECODER.split()[0], jpeg.DECODE


DECODERS = {"png": _png_decoder, "jpeg": _jpeg_decoder}


def decode_only(pool: Pool, codec: str, blobs: list[bytes], order: np.ndarray) -> tuple[str, Callable[[], int]]:
    """Decode ``blobs`` (sample ``i``'s bytes at ``i``) in ``order`` (taken modulo their count)."""
    name, decode = DECODERS[codec]()
    args = pool.args
    idx = (order % len(blobs)).tolist()
    spec = [(a[1].dtype, a[1].shape, a[1].ndim == 2 or a[1].shape[2] == 1) for a in args[:len(blobs)]]

    def run():
        for i in idx:
            dt, sh, gray = spec[i]
            img = decode(blobs[i], gray)
            if img.dtype != dt:
                img = img.astype(dt)
            key, _img, label, boxes, bl, mt = args[i]
            touch(make_sample(key, img.reshape(sh), label, boxes, bl, mt).image)
        return len(idx)
    return name, run


# --------------------------------------------------------------------------- opening a bound


class NoBound(Exception):
    """The bound cannot be measured for this preset (the reason says why)."""


@dataclass
class BoundRun:
    """A bound's timed loop over ``n`` positions; ``run()`` returns the count."""

    name: str
    run: Callable[[], int]
    info: dict = field(default_factory=dict)
    close: Callable[[], None] = lambda: None


def open_bound(session, name: str, op: str, preset: str, n: int) -> BoundRun:
    """The loop of bound ``name`` for ``op`` on ``(preset, n)``; raises :class:`NoBound`.

    An op the bound is not measured for (decode-only has only ``scan``) uses
    its scan: for in-memory decoding the order does not matter.
    """
    opts, kind = session.opts, bound_kind(name)
    op = op if op in BOUND_OPS[kind] else "scan"
    pool = session.pool(preset, n)
    order = orders(op, n, pool.m, np_order(n, opts.seed))
    info = {"bound": name, "op": op, "pool_size": pool.m}
    if kind == "floor":
        return BoundRun(name, floor(pool, op, order, opts.batch_size), info)
    if kind == "gather":
        if pool.stacked is None:
            raise NoBound(f"gather needs equal-shaped images; the {preset} preset's differ")
        return BoundRun(name, gather(pool, order, opts.batch_size), info)
    if kind in ("bare-lmdb", "bare-h5py"):
        store = (bare_lmdb if kind == "bare-lmdb" else bare_h5py)(session.data.root, pool)
        prewarm(store.files)
        return BoundRun(name, store(op, order, opts.batch_size), info, store.close)
    fmt = session.format(name[len(kind) + 1:-1])  # decode-only[<format id>]
    try:
        ds = session.data.dataset(fmt, preset, n)
    except Unsupported as err:
        raise NoBound(str(err)) from err
    codec, blobs = encoded_images(ds.path, pool.m)
    if not blobs:
        raise NoBound(f"{fmt.id} stores no PNG or JPEG images of the {preset} preset")
    decoder, run = decode_only(pool, codec, blobs, order)
    return BoundRun(name, run, {**info, "codec": codec, "decoder": decoder})
