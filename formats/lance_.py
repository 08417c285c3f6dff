"""lance: a Lance dataset (pylance), a row per sample, raw pixels in a binary column.

The dataset directory is itself the Lance dataset (``data/``, ``_versions/``,
``_transactions/`` beside storebench's files), so ``lance.dataset(path)`` opens
it as it is.  The columns are parquet's (:mod:`storebench.formats.parquet`):
``key``, ``label``, ``image`` (large_binary: pixels in C order, so any shape and
dtype; no fixed-shape tensor column), ``depth``, ``height``, ``width``,
``channels``, ``dtype``, ``boxes``, ``box_labels`` and ``meta`` (JSON).
``compression`` is Lance's compression of the pixel column: ``"none"`` (as
parquet's default) or ``"lz4"`` (pylance's default) or ``"zstd"``.  The write
streams record batches of ``BATCH_BYTES`` at most into one
``lance.write_dataset(..., mode="create")`` in the writer's fresh temporary
directory: one version on disk, its size honest.  ``index.npz`` holds the other
columns again, for the reader, and the manifest a CRC-32 of every Lance file.

Pick it for shuffled reads from one file that also scans, filters and versions
like a table.  The reader loads the index at open; ``r[i]`` is ``take([i])`` of
the pixel column (Lance reads that value alone), a batch one sorted ``take``, a
scan ``to_batches`` in write order, about ``SCAN_BYTES`` per batch and
``IO_BUFFER`` read ahead (about 200 MiB of memory, whatever the dataset's size).
Caveats: each ``take`` costs hundreds of microseconds in Lance's async runtime;
the reader opens the dataset through ``/proc/self/fd``, so a moved or
overwritten path never hands it other files; pylance keeps no checksums and may
abort (a panic, a huge allocation) rather than raise on a damaged data file, so
``verify`` checks every Lance file's CRC before pylance reads it (the manifests
on every open); pylance is not fork-safe (it warns on every fork; a process
forked after pylance ran crashes in it now and then, SIGSEGV or heap corruption,
writes more often than reads), so this module refuses pylance in such a process
with a RuntimeError: use spawn or forkserver workers.

Native loader (:meth:`Lance.native_loader`): pylance's map-style
``lance.torch.data.SafeLanceDataset`` (one ``take`` of the DataLoader's
shuffled indices per batch) in a DataLoader made as ``get_safe_loader`` makes
it (spawn workers).  Not ``LanceDataset``: its only shuffle
(``ShardedBatchSampler(randomize=True)``) shuffles the order of contiguous
``batch_size`` row ranges, never the samples within them, and its default
``to_tensor_fn`` refuses binary columns.
"""
from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Iterator
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ._api import DatasetError, Format, Reader
from ._bound import Bound, BoundInput, BoundRun, named
from ._fs import _O_DIR
from ._index import Index, IndexWriter
from ._manifest import MANIFEST
from ._native import NativeLoader, collate
from .parquet import REQUIRED, SCHEMA, VOLUME_SCHEMA, _binary, _table, pixels

COMPRESSIONS = ("none", "lz4", "zstd")  #: of the pixel column; pylance's own default is lz4
BATCH_BYTES = 16 << 20  #: pixel bytes per written batch at most
BATCH_ROWS = 1024  #: rows per written or scanned batch at most
SCAN_BYTES = 4 << 20  #: pixel bytes per scanned batch: Lance decodes large values slowly in big batches
#: bytes a scan buffers from disk: pylance's default (GiBs) would hold most of a dataset in memory
IO_BUFFER = 32 << 20
WHAT = "the Lance dataset"
# What pylance raises for damaged or missing files; a Rust panic is pyo3's PanicException (a BaseException).
_ERRORS = (OSError, ValueError, RuntimeError, TypeError, KeyError, IndexError, pa.ArrowException)


_LANCE_PID: int | None = None  # the process in which this module first used pylance


def _lance_here():
    """pylance, refused in a process forked after this module used pylance in its parent: its
    runtimes' threads do not survive fork, and reads and writes there crash (SIGSEGV, heap corruption)."""
    global _LANCE_PID
    pid = os.getpid()
    if _LANCE_PID is None:
        _LANCE_PID = pid
    elif _LANCE_PID != pid:
        raise RuntimeError(f"lance cannot read or write in process {pid}: it was forked from a process that used "
                           "pylance, which is not fork-safe (its threads do not survive fork; reads and writes "
                           "crash there); use the spawn or forkserver start method (DataLoader "
                           "multiprocessing_context='spawn')")
    import lance  # here, not at the top: once imported, pylance warns at every fork of the process

    return lance


def _is_lance_error(err: BaseException) -> bool:
    return isinstance(err, _ERRORS) or type(err).__name__ == "PanicException"


def _scan_rows(image_bytes: float) -> int:
    """Rows per scanned batch for images of ``image_bytes`` on average (pylance's byte limit,
    ``batch_size_bytes``, splits batches after decoding them: no faster)."""
    return int(min(BATCH_ROWS, max(1, SCAN_BYTES // max(image_bytes, 1))))


def _file_crcs(dir_fd: int, data: bool = True) -> dict[str, int]:
    """CRC-32 of every file Lance keeps (the dataset's subdirectories), by path; ``data=False``
    leaves out ``data/`` (the bulk), keeping the manifest and transaction files."""
    out = {}
    for top, _dirs, names, fd in os.fwalk(".", dir_fd=dir_fd):
        if top == "." or not data and (top + "/").startswith("./data/"):
            continue  # storebench's own files are at the top
        for name in names:
            f, crc = os.open(name, os.O_RDONLY, dir_fd=fd), 0
            try:
                while chunk := os.read(f, 8 << 20):
                    crc = zlib.crc32(chunk, crc)
            finally:
                os.close(f)
            out[os.path.relpath(os.path.join(top, name))] = crc
    return out


def _remote_crcs(remote, data: bool = True) -> dict[str, int]:
    """:func:`_file_crcs` of a Lance dataset in an object store (a GET per object checked)."""
    return {name: zlib.crc32(remote.read_bytes(name)) for name in sorted(remote.sizes())
            if "/" in name and (data or not name.startswith("data/"))}


def _with_compression(schema: pa.Schema, compression: str) -> pa.Schema:
    """``schema`` with Lance's compression of the pixel column set (field metadata, as pylance documents)."""
    k = schema.get_field_index("image")
    return schema.set(k, schema.field(k).with_metadata({"lance-encoding:compression": compression}))


def _batches(samples: Iterator, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Record batches of at most BATCH_ROWS samples and about BATCH_BYTES of pixels."""
    rows, size = [], 0
    for s in samples:
        rows.append(s)
        size += s.image.nbytes
        if len(rows) >= BATCH_ROWS or size >= BATCH_BYTES:
            yield from _table(rows, schema).to_batches()
            rows, size = [], 0
    if rows:
        yield from _table(rows, schema).to_batches()


class Lance(Format):
    name = "lance"
    fork_safe = False
    libraries = ("pylance", "pyarrow")
    bench_variants = ({}, {"compression": "lz4"})  # raw pixels like parquet's default, and pylance's default
    native_loader_name = "lance.torch.data.SafeLanceDataset"
    remote_reads = "ranges"  # Lance's object store: a take is ranged GETs of the rows' pages

    def __init__(self, compression: str = "none"):
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression: must be one of {COMPRESSIONS}, got {compression!r}")
        self.compression = compression

    @property
    def bound(self) -> Bound:
        """bare-lance with this format's compression."""
        return Bound(named("bare-lance", self), partial(bare_lance, compression=self.compression))

    def info(self):
        return {"pylance": version("pylance")}

    def _write(self, samples, root: Path):
        first = list(itertools.islice(samples, 1))
        # A dataset holds images or volumes (Format.write checks): the first sample decides the boxes' width.
        schema = _with_compression(VOLUME_SCHEMA if first and first[0].image.ndim == 4 else SCHEMA,
                                   self.compression)
        failed: list[BaseException] = []
        index = IndexWriter()

        def indexed(it):
            for s in it:
                index.add(s)
                yield s

        def batches():
            try:
                yield from _batches(indexed(itertools.chain(first, samples)), schema)
            except BaseException as err:  # Lance wraps it: re-raised as it was below
                failed.append(err)
                raise

        reader = pa.RecordBatchReader.from_batches(schema, batches())
        try:
            ds = _lance_here().write_dataset(reader, str(root), schema, mode="create", max_rows_per_group=BATCH_ROWS)
        except BaseException:
            if failed:
                raise failed[0] from None  # the bad sample's ValueError, not Lance's wrapper
            raise
        index.save(root / "index.npz")
        fd = os.open(root, _O_DIR)
        try:  # pylance keeps no checksums: a damaged file can abort it (a panic, a huge allocation)
            crcs = _file_crcs(fd)
        finally:
            os.close(fd)
        return {"lance_data_storage_version": ds.data_storage_version, "lance_files": crcs}

    def native_loader(self, path, *, batch_size: int, workers: int, seed: int) -> NativeLoader:
        """``SafeLanceDataset(path)`` in a shuffled DataLoader (seeded generator): each batch one
        ``take`` of every column in the shuffled order, decoded in the worker; ``workers`` spawn
        workers as ``lance.torch.data.get_safe_loader`` starts them, but not persistent (its
        default): a new loader's workers start when it is iterated, as the contract says."""
        import torch
        from lance.torch.data import SafeLanceDataset, get_safe_loader

        ds = SafeLanceDataset(str(path))
        kw: dict[str, Any] = dict(batch_size=batch_size, shuffle=True, collate_fn=_lance_batch,
                                  generator=torch.Generator().manual_seed(seed))
        if workers:
            loader = get_safe_loader(ds, num_workers=workers, persistent_workers=False, **kw)
        else:  # get_safe_loader always passes a spawn context, which DataLoader refuses without workers
            loader = torch.utils.data.DataLoader(ds, num_workers=0, **kw)
        return NativeLoader(loader, workers=workers, mp_context="spawn")


class LanceReader(Reader):
    def _open_handles(self):
        # Lance's manifests are checked before pylance reads them, and with verify its data files too.
        self._check_lance_files(data=self.verify_reads)
        index = self._index = Index.load(self.path / "index.npz", self.path, count=self._n)
        if self.remote is not None:  # Lance's own object store, given storebench's storage options
            ds = self._lance("is missing or damaged", lambda: _lance_here().dataset(
                self.remote.url, storage_options=self.remote.lance_options()))
        else:
            # The pinned directory: a path moved or written over never hands this reader other files.
            uri = f"/proc/self/fd/{self._dir_fd}" if os.path.isdir("/proc/self/fd") else str(self.path)
            ds = self._lance("is missing or damaged", _lance_here().dataset, uri)
        schema, rows, versions = self._lance("is missing or damaged",
                                             lambda: (ds.schema, ds.count_rows(), len(ds.versions())))
        if not set(REQUIRED) <= set(schema.names) or rows != self._n or versions != 1:
            raise DatasetError(self.path, f"{WHAT} lacks this dataset's columns or rows "
                               f"({rows} rows in {versions} versions)")
        some = range(min(index.n, 1000))
        self._scan_rows = _scan_rows(sum(map(index.nbytes, some)) / max(len(some), 1))
        return ds

    def _check_lance_files(self, data: bool) -> None:
        """Every Lance file has the CRC-32 it had when written (``data``: ``data/`` too)."""
        want = self.manifest.get("lance_files")
        if not isinstance(want, dict):
            raise DatasetError(self.path, f"{MANIFEST} lacks the Lance files' checksums")
        if not data:
            want = {k: v for k, v in want.items() if not k.startswith("data/")}
        fd = self._dir_fd  # pinned by the base class before _open_handles runs, until close
        if fd is None and self.remote is None:
            raise ValueError(f"{self.path}: reader is closed")
        try:
            got = _file_crcs(fd, data) if fd is not None else _remote_crcs(self.remote, data)
        except PermissionError:
            raise  # names the file; not damage
        except OSError as err:
            raise DatasetError(self.path, f"{WHAT} does not read: {err}") from err
        bad = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        if bad:
            raise DatasetError(self.path, f"{WHAT}: {', '.join(bad[:3])} missing, damaged or unknown")

    def verify(self) -> list[str]:
        """The base class's checks, after every Lance file's checksum: pylance may abort, not
        raise, on a damaged data file."""
        if self._handles is None:
            self.handles
        self._check_lance_files(data=True)
        return super().verify()

    def _close_handles(self, handles):
        pass  # a LanceDataset has no close; its files are opened per read

    def _lance(self, what: str, fn, *args):
        """``fn(*args)``, pylance's errors on damaged files a DatasetError saying ``what`` failed."""
        try:
            return fn(*args)
        except DatasetError:
            raise
        except BaseException as err:
            if not _is_lance_error(err):
                raise
            raise DatasetError(self.path, f"{WHAT} {what}: {type(err).__name__}: {err}") from err

    def _pixels(self, rows) -> tuple[list[int], np.ndarray]:
        """The pixel column of the rows ``rows`` (ascending), one ``take``."""
        return self._lance("does not read", lambda: _binary(self._handles.take(rows, columns=["image"]).column(0)))

    def _read(self, i):
        off, data = self._pixels([i])
        return self._index.sample(i, pixels(self._index, i, off, data, 0, self.path, WHAT))

    def _read_many(self, idx):
        if not len(idx):
            return []
        rows = np.unique(idx)  # one take, in file order
        off, data = self._pixels(rows.tolist())
        index, path = self._index, self.path
        return [index.sample(i, pixels(index, i, off, data, j, path, WHAT))
                for i, j in zip(idx.tolist(), np.searchsorted(rows, idx).tolist())]

    def _iter(self):
        batches = self._lance("does not scan", lambda: iter(self._handles.to_batches(
            columns=["image"], batch_size=self._scan_rows, batch_readahead=2, io_buffer_size=IO_BUFFER,
            scan_in_order=True)))
        index, i = self._index, 0
        while True:
            b = self._lance("does not scan", next, batches, None)
            if b is None:
                return
            off, data = _binary(b.column(0))
            for j in range(len(off) - 1):
                yield index.sample(i, pixels(index, i, off, data, j, self.path, WHAT))
                i += 1


Lance.reader = LanceReader


def _lance_batch(rows: list[dict]) -> dict:
    """SafeLanceDataset's rows (``to_pylist`` of a take) decoded and batched."""
    items = []
    for r in rows:
        d, h, w, c = r.get("depth") or 0, r["height"], r["width"], r["channels"]
        shape = (d, h, w, c) if d else (h, w, c) if c else (h, w)
        items.append((r["key"], r["label"], np.frombuffer(r["image"], r["dtype"]).reshape(shape)))
    return collate(items)


def bare_lance(c: BoundInput, compression: str) -> BoundRun:
    """pylance on a Lance dataset of the pool's pixels (one large_binary column, ``compression``): ``to_batches``
    for a scan, ``take([i])`` for ``r[i]``, one sorted ``take`` per batch; each image a view + Sample."""
    pool, touch, sample = c.pool, c.touch, c.pool.sample
    spec = [(a[1].dtype, a[1].shape) for a in pool.args]

    def make(tmp: Path):
        imgs = pa.array([a[1].tobytes() for a in pool.args], pa.large_binary())
        schema = _with_compression(pa.schema([("image", pa.large_binary())]), compression)
        _lance_here().write_dataset(pa.table([imgs], schema=schema), str(tmp), mode="create")

    path = c.store(f"bare-{compression}.lance", make)
    ds = _lance_here().dataset(str(path))
    image = partial(ds.take, columns=["image"])

    def put(i, off, data, j):
        dt, sh = spec[i]
        touch(sample(i, data[off[j]:off[j + 1]].view(dt).reshape(sh)).image)

    if c.op == "scan":
        n = len(c.order)

        def run():
            k = 0
            while k < n:
                for b in ds.to_batches(columns=["image"], batch_size=_scan_rows(pool.image_bytes),
                                       batch_readahead=2, io_buffer_size=IO_BUFFER, scan_in_order=True):
                    off, data = _binary(b.column(0))
                    for j in range(min(len(off) - 1, n - k)):
                        put(k % pool.m, off, data, j)
                        k += 1
                    if k == n:
                        break
            return k
    elif c.op == "random":
        idx = c.idx

        def run():
            for i in idx:
                off, data = _binary(image([i]).column(0))
                put(i, off, data, 0)
            return len(idx)
    else:
        chunks = c.chunks()

        def run():
            k = 0
            for ch in chunks:
                rows = np.unique(ch)
                off, data = _binary(image(rows.tolist()).column(0))
                for i, j in zip(ch.tolist(), np.searchsorted(rows, ch).tolist()):
                    put(i, off, data, j)
                    k += 1
            return k
    return BoundRun(run, files=sorted(f for f in path.rglob("*") if f.is_file()))
