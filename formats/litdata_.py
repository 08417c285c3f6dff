"""litdata: LitData's optimized chunks (Lightning AI), read through ``litdata.StreamingDataset``.

The dataset directory is what ``litdata.optimize(fn, inputs, output_dir, chunk_bytes="64MB")``
leaves with one worker: ``chunk-0-<i>.bin`` files of about ``chunk_bytes`` and
LitData's ``index.json``, written by LitData's ``BinaryWriter`` (what optimize's
workers run; optimize itself wants a sequence or a queue fed to spawned workers,
not a one-pass iterator).  One item per sample, a dict of fields LitData
serializes itself, as its README's examples do: ``key`` (str), ``label`` (int),
``image`` (NumPy array, any shape and dtype), ``boxes``, ``box_labels`` (NumPy)
and ``meta`` (compact JSON text), so ``StreamingDataset(path)[i]["image"]`` is the
pixels.  ``keys.json`` holds the keys again, for ``get(key)``.

Pick it to measure what a Lightning training job streams, or for chunked files
that stream from object storage.  ``r[i]`` is ``dataset[i]``, a batch the same in
file order, a scan ``dataset[i]`` in order; a local directory is memory-mapped in
place (no copy into LitData's cache).  ``batch_decode`` is LitData's option of
that name: LitData's default, ``"auto"``, decodes a window of up to 256 items
around each item asked for (reused by its shuffled streaming), so a random
``dataset[i]`` costs a window: 70 reads/s on cifar against 12 000 with
``"item"`` (this module's default; the ``litdata[auto]`` variant measures the
library's).  The native loader is ``StreamingDataLoader`` over
``StreamingDataset(path, shuffle=True, seed=seed)`` with LitData's defaults.
Caveats: LitData keeps no checksums (damaged pixels read back as they are: use
``verify``); a ``StreamingDataset`` is not thread-safe, so threads sharing a reader
take turns (a lock); it needs torch, which storebench installs on Python 3.11 only.
"""
from __future__ import annotations

import json
import re
import shutil
import struct
import tempfile
from functools import partial
from importlib.metadata import version
from pathlib import Path

import numpy as np

from ._api import DatasetError, Format, Reader
from ._bound import Bound, BoundInput, BoundRun, named
from ._index import encode_meta
from ._native import NativeLoader, collate
from ._sample import make_sample

INDEX, KEYS = "index.json", "keys.json"
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:[kmgt]b?|b)\s*", re.IGNORECASE)  # litdata's suffixes
BATCH_DECODES = ("item", "auto", "all")  #: or a window of N items
FIELDS = ("key", "label", "image", "boxes", "box_labels", "meta")
#: what LitData raises on damaged chunks or index (it checks nothing: a damaged length is struct's error)
_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError, AssertionError,
           EOFError, OverflowError, struct.error)


def _item(s) -> dict:
    """The LitData item of sample ``s``."""
    return {"key": s.key, "label": int(s.label), "image": np.ascontiguousarray(s.image), "boxes": s.boxes,
            "box_labels": s.box_labels, "meta": encode_meta(s.meta).decode()}


def _native_item(item: dict) -> tuple[str, int, np.ndarray]:
    """A LitData item as the native loader's (key, label, image)."""
    return item["key"], item["label"], item["image"]


def _write_chunks(items, root: Path, chunk_bytes: str) -> int:
    """Every item of ``items`` into LitData chunks in ``root`` with the writer optimize runs; the count."""
    from litdata.streaming.writer import BinaryWriter

    w, n = BinaryWriter(str(root), chunk_bytes=chunk_bytes), 0
    for n, item in enumerate(items, 1):
        w.add_item(n - 1, item)
    if n:
        w.done()
        w.merge()  # index.json from the writer's 0.index.json
    return n


class LitData(Format):
    name = "litdata"
    remote_reads = "ranges"  # StreamingDataset(input_dir=Dir(cache, "s3://...")): an item's bytes by ranged GETs
    libraries = ("litdata",)
    native_loader_name = "litdata.StreamingDataLoader"
    bench_variants = ({}, {"batch_decode": "auto"})  # ours, and LitData's default (a window per random read)

    def __init__(self, batch_decode: str = "item", chunk_bytes: str = "64MB"):
        if batch_decode not in BATCH_DECODES and not (batch_decode.isdigit() and int(batch_decode) > 0):
            raise ValueError(f"batch_decode: must be one of {BATCH_DECODES} or a window of N > 0 items, "
                             f"got {batch_decode!r}")
        # LitData's size strings ("64MB", "1gb", "512k"; litdata.utilities.format converts them at write time),
        # checked here without importing litdata (which imports torch).
        size = _SIZE.fullmatch(chunk_bytes) if isinstance(chunk_bytes, str) else None
        if size is None or float(size[1]) <= 0:
            raise ValueError(f"chunk_bytes: must be a size such as '64MB', got {chunk_bytes!r}")
        self.batch_decode, self.chunk_bytes = batch_decode, chunk_bytes

    @property
    def _litdata_batch_decode(self) -> int | str:
        return 0 if self.batch_decode == "item" else self.batch_decode

    @property
    def bound(self) -> Bound:
        """bare-litdata: ``StreamingDataset(path)[i]`` of raw pixels with this format's options."""
        return Bound(named("bare-litdata", self), partial(bare_litdata, fmt=self))

    def info(self):
        return {"litdata": version("litdata"), "batch_decode": self.batch_decode, "chunk_bytes": self.chunk_bytes}

    def _write(self, samples, root: Path):
        keys: list[str] = []

        def items():
            for s in samples:
                keys.append(s.key)
                yield _item(s)
        _write_chunks(items(), root, self.chunk_bytes)
        (root / KEYS).write_text(json.dumps(keys))

    def native_loader(self, path, *, batch_size: int, workers: int, seed: int) -> NativeLoader:
        """``StreamingDataLoader(StreamingDataset(path, shuffle=True, seed=seed), batch_size=...,
        num_workers=workers)``, LitData's defaults otherwise (its shuffle: chunks, then items in
        windows), each item made (key, label, image) by the dataset's ``transform``."""
        import multiprocessing as mp

        from litdata import StreamingDataLoader, StreamingDataset

        ds = StreamingDataset(str(path), shuffle=True, seed=seed, transform=_native_item)
        loader = StreamingDataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate)
        return NativeLoader(loader, workers=workers,
                            mp_context=mp.get_start_method(allow_none=True) or mp.get_all_start_methods()[0])


class LitDataReader(Reader):
    def _open_handles(self):
        try:
            keys = json.loads(self.read_bytes(KEYS))
            if not (isinstance(keys, list) and len(keys) == self._n and all(type(k) is str for k in keys)):
                raise ValueError(f"not a list of {self._n} keys")
        except PermissionError:
            raise
        except (OSError, ValueError) as err:
            raise DatasetError(self.path, f"{KEYS} is missing or damaged: {err}") from err
        self._keys_list = keys
        if not self._n:
            return ()  # LitData writes no chunk for no items
        try:
            return self._dataset()
        except BaseException:
            self._close_handles(None)  # a remote dataset's cache directory
            raise

    def _dataset(self):
        try:
            from litdata import StreamingDataset

            if self.remote is not None:  # LitData's S3 client (boto3); its cache: a directory of this reader's
                from litdata.streaming.resolver import Dir

                self._cache = tempfile.mkdtemp(prefix="storebench-litdata-")
                ds = StreamingDataset(input_dir=Dir(path=self._cache, url=self.remote.url),
                                      storage_options=self.remote.boto3_options(),
                                      batch_decode=self.format._litdata_batch_decode)
            else:
                ds = StreamingDataset(str(self.path), batch_decode=self.format._litdata_batch_decode)
            n = len(ds)
        except PermissionError:
            raise
        except _ERRORS as err:
            raise DatasetError(self.path, f"{INDEX} or a chunk is not LitData's: {type(err).__name__}: {err}") from err
        if self.remote is None:
            self._check_pinned(ds)
        if n != self._n:
            raise DatasetError(self.path, f"{INDEX} holds {n} items, the manifest {self._n}")
        return ds

    def _close_handles(self, handles):
        # LitData's memory maps close with the dataset object; a remote dataset's cache goes with the reader
        cache = getattr(self, "_cache", None)
        if cache is not None:
            self._cache = None
            shutil.rmtree(cache, ignore_errors=True)

    def _read(self, i):
        try:
            with self._lock:  # a StreamingDataset is not thread-safe: one item at a time
                item = self._handles[i]
        except PermissionError:
            raise  # names the chunk: not damage
        except _ERRORS as err:
            raise DatasetError(self.path, f"item {i} does not read: {type(err).__name__}: {err}") from err
        except Exception as err:
            # boto3's errors from an object store (a body cut short: LitData's ranged reads do not
            # retry a failed stream) are not OSErrors
            if self.remote is None or not type(err).__module__.startswith("botocore"):
                raise
            raise DatasetError(self.path, f"item {i} does not read from the object store: "
                               f"{type(err).__name__}: {err}") from err
        return self._sample(i, item)

    def _sample(self, i: int, item):
        try:
            if not isinstance(item, dict) or tuple(item) != FIELDS:
                raise ValueError(f"not a dict of {', '.join(FIELDS)}")
            key, label, img, boxes, box_labels, meta = (item[f] for f in FIELDS)
            if not (type(key) is str and type(label) is int and type(img) is np.ndarray and type(meta) is str
                    and isinstance(boxes, np.ndarray) and boxes.dtype == np.float32 and boxes.ndim == 2
                    and isinstance(box_labels, np.ndarray) and box_labels.shape == boxes.shape[:1]
                    and box_labels.dtype == np.int64):
                raise ValueError("a field of the wrong type or shape")
            return make_sample(key, img, label, boxes, box_labels, json.loads(meta) if meta else {})
        except ValueError as err:  # json's errors too
            raise DatasetError(self.path, f"item {i} is damaged: {err}") from err

    def _read_many(self, idx):
        todo = np.unique(idx).tolist()  # file order
        got = dict(zip(todo, map(self._read, todo)))
        return [got[i] for i in idx.tolist()]

    def _keys(self):
        return list(self._keys_list)


LitData.reader = LitDataReader


def bare_litdata(c: BoundInput, fmt: LitData) -> BoundRun:
    """``StreamingDataset(path, batch_decode=...)[i]["image"]`` + Sample on LitData chunks of the pool's
    pixels (``{"image": array}`` items, ``fmt.chunk_bytes``): in order for a scan, ``c.order`` otherwise."""
    pool, touch, sample = c.pool, c.touch, c.pool.sample

    def make(tmp: Path):
        _write_chunks(({"image": np.ascontiguousarray(a[1])} for a in pool.args), tmp, fmt.chunk_bytes)

    path = c.store(f"bare-{fmt.chunk_bytes}.litdata", make)
    from litdata import StreamingDataset

    ds = StreamingDataset(str(path), batch_decode=fmt._litdata_batch_decode)
    idx = c.idx  # pool positions: in order for a scan

    def run():
        for i in idx:
            touch(sample(i, ds[i]["image"]).image)
        return len(idx)
    return BoundRun(run, files=sorted(path.glob("*")))
