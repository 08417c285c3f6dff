"""arrayrecord: Google's ArrayRecord file (Riegeli chunks + a footer of chunk offsets), as Grain reads it.

``data.array_record`` holds one record per sample, each a
:mod:`storebench.formats._record` blob (key, label, boxes, meta, pixels; no
pickle), written by ``array_record``'s ``ArrayRecordWriter`` with
``group_size:1`` and the library's default ``zstd:3``: every record is a chunk
of its own, compressed alone, so ``r[i]`` is one ranged ``read(i, i + 1)``
that reads and decompresses one record (``read([i])``, what Grain's
``ArrayRecordDataSource`` calls, walks every chunk of the file per call: 10 us
at 1000 records, 480 us at 100 000).  A batch is one ``read(indices)``, a scan
ranged reads of about 8 MiB.  ``index.json`` holds the keys (for ``get``) and
each record's length.  ``ArrayRecordReader(path)`` and Grain's
``ArrayRecordDataSource`` read the file as it is.

Pick it to measure what a JAX / Grain pipeline reads, or for one compressed
record file with random access.  Caveats: ``group_size`` > 1 packs that many
records into one chunk compressed as a whole, the library's unit of
decoding, so ``r[i]`` reads and decompresses the whole group
(``random_access`` is then false; the last group read stays decoded, so
neighbouring reads are cheap; scans and batches decode each chunk once).
Batches and scans run on the library's process-wide pool of 64 threads; in
a forked worker, whose pool threads are gone, they run on the calling thread
alone (a fork while another thread is inside the library can leave the child
stuck on a lock that thread held).  A file is at least 128 KiB (footer and a
64 KiB-aligned postscript).

Native loader (:meth:`ArrayRecord.native_loader`): Grain over the file,
``grain.MapDataset.source(grain.sources.ArrayRecordDataSource(path))``
``.shuffle(seed=seed).map(decode).batch(batch_size)``, then
``.to_iter_dataset()`` (Grain's default read threads) and with workers
``.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))`` (spawned
processes, each batches ``[k::workers]``).  Grain (``grain``, Python >= 3.11)
is optional: without it the format works and only this loader raises
ImportError.
"""
from __future__ import annotations

import json
import re
from contextlib import suppress
from functools import partial
from importlib.metadata import version
from pathlib import Path

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from ._api import DatasetError, Format, Reader
from ._bound import Bound, BoundInput, BoundRun, named
from ._native import NativeLoader, stack, to_torch
from ._record import HEADER_SIZE, RecordError, decode, encode

FILE, INDEX = "data.array_record", "index.json"
BLOCK = 8 << 20  #: record bytes per ranged read while scanning
#: Grain's reader settings for random reads (``array_record_data_source._create_reader``).
RANDOM, RANDOM_BUFFER = "readahead_buffer_size:0", 32768
_COMPRESSION = re.compile(r"uncompressed|snappy|zstd(:-?\d+)?|brotli(:\d+)?")
_LEVELS = {"zstd": range(-131072, 23), "brotli": range(12)}


def _ranges(sizes: list[int], group: int, block: int = BLOCK) -> list[tuple[int, int]]:
    """``[a, b)`` runs of records of about ``block`` bytes, cut at multiples of ``group`` (a chunk
    is decoded whole: a cut inside one would decode it twice)."""
    out, a, total = [], 0, 0
    for i, size in enumerate(sizes):
        total += size
        if total >= block and (i + 1) % group == 0:
            out.append((a, i + 1))
            a, total = i + 1, 0
    if a < len(sizes):
        out.append((a, len(sizes)))
    return out


class ArrayRecord(Format):
    name = "arrayrecord"
    local_only = ("array_record's C++ reader opens paths with its own local file backend "
                  "(it takes neither an s3:// URL nor a Python file object)")
    libraries = ("array-record",)
    bench_variants = ({}, {"group_size": 64})
    native_loader_name = "grain.MapDataset"

    def __init__(self, group_size: int = 1, compression: str = "zstd:3"):
        if not (isinstance(group_size, int) and 1 <= group_size < 2 ** 31):
            raise ValueError(f"group_size: must be an int from 1 to 2**31 - 1, got {group_size!r}")
        kind, _, level = compression.partition(":")
        if not _COMPRESSION.fullmatch(compression) or level and int(level) not in _LEVELS[kind]:
            raise ValueError(f"compression: must be uncompressed, snappy, zstd:LEVEL (-131072..22) or "
                             f"brotli:LEVEL (0..11), got {compression!r}")
        self.group_size, self.compression = group_size, compression

    @property
    def random_access(self):
        """Only with ``group_size=1``: otherwise ``r[i]`` decompresses its whole group of records."""
        return self.group_size == 1

    @property
    def writer_options(self) -> str:
        """The ``ArrayRecordWriter`` options string."""
        return f"group_size:{self.group_size},{self.compression}"

    @property
    def bound(self) -> Bound:
        """bare-arrayrecord: ``ArrayRecordReader.read`` of raw pixels written with these options."""
        return Bound(named("bare-arrayrecord", self), partial(bare_arrayrecord, options=self.writer_options))

    def info(self):
        return {"array-record": version("array-record"), "writer_options": self.writer_options}

    def _write(self, samples, root: Path):
        keys, sizes = [], []
        w = ArrayRecordWriter(str(root / FILE), self.writer_options)
        done = False
        try:
            for s in samples:
                rec = encode(s)
                w.write(rec)
                keys.append(s.key)
                sizes.append(len(rec))
            done = True
        finally:
            if done:
                w.close()  # a full disk shows here: the base class reports it
            else:
                with suppress(RuntimeError):  # the error in flight says more
                    w.close()
        _read_back(root / FILE, len(keys))
        (root / INDEX).write_text(json.dumps({"keys": keys, "nbytes": sizes}))

    def native_loader(self, path, *, batch_size: int, workers: int, seed: int) -> NativeLoader:
        """Grain's MapDataset over ``ArrayRecordDataSource``: a global shuffle seeded by ``seed``,
        records decoded and batched (NumPy) in Grain's threads or ``workers`` spawned processes,
        made tensors in this process."""
        try:
            import grain
        except ImportError as err:
            raise ImportError(f"arrayrecord's native loader needs Grain (pip install grain; Python >= 3.11): "
                              f"{err}") from err
        ds = (grain.MapDataset.source(grain.sources.ArrayRecordDataSource(str(Path(path) / FILE)))
              .shuffle(seed=seed).map(_grain_item).batch(batch_size, batch_fn=stack).to_iter_dataset())
        if workers:
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
        return NativeLoader(ds.map(to_torch), workers=workers, mp_context="spawn")


def _grain_item(rec: bytes) -> tuple[str, int, np.ndarray]:
    s = decode(rec)  # a damaged record raises RecordError (a ValueError) naming what is wrong
    return s.key, s.label, s.image


def _read_back(path: Path, n: int) -> None:
    """Open the file just written and check its record count.

    Also a fork guard: riegeli (inside array_record) registers each pool of
    (de)compression contexts with a background-cleaner thread on first use.  A
    process that has compressed with zstd but never decompressed leaves that
    thread waiting on a lock, and a forked child's first decompression then
    crashes on it (SIGSEGV in ``BackgroundCleaner::Register``); reading the footer
    back here registers the decompression pool before any fork.
    """
    r = ArrayRecordReader(str(path))
    try:
        got = r.num_records()
    finally:
        r.close()
    if got != n:
        raise RuntimeError(f"{path}: array_record wrote {got} records of {n}")


class ArrayRecordFileReader(Reader):
    def _open_handles(self):
        try:
            index = json.loads(self.read_bytes(INDEX))
            keys, sizes = index["keys"], index["nbytes"]
            if not (isinstance(keys, list) and isinstance(sizes, list) and len(keys) == len(sizes) == self._n
                    and all(type(k) is str for k in keys)
                    and all(type(b) is int and b >= HEADER_SIZE for b in sizes)):
                raise ValueError(f"not {self._n} keys and record lengths")
        except PermissionError:
            raise  # names the file: not damage
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DatasetError(self.path, f"{INDEX} is missing or damaged: {err}") from err
        path, readers = str(self.path / FILE), []
        try:
            # One reader as Grain opens it (no readahead: a read is its own chunks), one for scans.
            readers.append(ArrayRecordReader(path, RANDOM, file_reader_buffer_size=RANDOM_BUFFER))
            readers.append(ArrayRecordReader(path))
            got = readers[0].num_records()
        except (RuntimeError, ValueError) as err:
            self._close_handles(readers)
            if "Permission denied" in str(err):
                raise PermissionError(f"{path}: {err}") from err
            raise DatasetError(self.path, f"{FILE} is not a readable ArrayRecord file: {err}") from err
        if got != self._n:
            self._close_handles(readers)
            raise DatasetError(self.path, f"{FILE} holds {got} records, the manifest {self._n}")
        self._keys_list, self._sizes = keys, sizes
        self._scans = _ranges(sizes, self.format.group_size)
        self._group: tuple[int, list[bytes]] | None = None  # (first position, records) of the last chunk read
        return readers

    def _close_handles(self, handles):
        for r in handles:
            with suppress(RuntimeError):
                r.close()

    def _records(self, fetch, what: str) -> list[bytes]:
        try:
            return fetch()
        except (RuntimeError, IndexError, ValueError) as err:
            raise DatasetError(self.path, f"{FILE}: {what} cannot be read: {err}") from err

    def _sample(self, i: int, rec: bytes):
        if len(rec) != self._sizes[i]:
            raise DatasetError(self.path, f"{FILE}: record {i} holds {len(rec)} bytes, {INDEX} says "
                               f"{self._sizes[i]}")
        try:
            return decode(rec)
        except RecordError as err:
            raise DatasetError(self.path, f"{FILE}: record {i} is damaged: {err}") from err

    def _read(self, i):
        g = self.format.group_size
        if g == 1:
            return self._sample(i, self._records(partial(self._handles[0].read, i, i + 1), f"record {i}")[0])
        # A read decodes i's whole chunk anyway: keep its records for the next read in it.
        a = i - i % g
        got = self._group
        if got is None or got[0] != a:
            b = min(a + g, self._n)
            got = self._group = (a, self._records(partial(self._handles[0].read, a, b), f"records {a} to {b - 1}"))
        return self._sample(i, got[1][i - a])

    def _read_many(self, idx):
        ii = idx.tolist()  # one read: the library groups the indices by chunk, in file order
        recs = self._records(partial(self._handles[0].read, ii), f"records {ii[:4]}") if ii else []
        return [self._sample(i, rec) for i, rec in zip(ii, recs)]

    def _iter(self):
        scan = self._handles[1]  # kept: a scan outlives a close() only to be refused by the base class
        for a, b in self._scans:
            for i, rec in enumerate(self._records(partial(scan.read, a, b), f"records {a} to {b - 1}"), a):
                yield self._sample(i, rec)

    def _keys(self):
        return list(self._keys_list)


ArrayRecord.reader = ArrayRecordFileReader


def bare_arrayrecord(c: BoundInput, options: str) -> BoundRun:
    """``ArrayRecordReader.read`` on a file of the pool's raw pixels, one record each, written with
    ``options``, + ``np.frombuffer`` + Sample: ``read(i, i + 1)`` per sample and one
    ``read(indices)`` per batch on a reader opened as Grain's ``ArrayRecordDataSource`` opens it,
    ranged ``read(a, b)`` of about 8 MiB on a default reader for a scan."""
    pool, touch, sample, pixels = c.pool, c.touch, c.pool.sample, c.pool.pixels
    group = int(options.split(",")[0].partition(":")[2])

    def make(tmp: Path):
        w = ArrayRecordWriter(str(tmp), options)
        for a in pool.args:
            w.write(np.ascontiguousarray(a[1]).tobytes())
        w.close()
        _read_back(tmp, pool.m)

    path = c.store("bare-" + re.sub(r"\W", "-", options) + ".array_record", make)
    if c.op == "scan":
        rd = ArrayRecordReader(str(path))
        spans, n = _ranges([a[1].nbytes for a in pool.args], group), len(c.order)

        def run():
            k = 0
            while k < n:
                for a, b in spans:
                    for i, rec in enumerate(rd.read(a, b)[:n - k], a):
                        touch(sample(i, pixels(i, rec)).image)
                    k += min(b - a, n - k)
                    if k == n:
                        break
            return k
    else:
        rd = ArrayRecordReader(str(path), RANDOM, file_reader_buffer_size=RANDOM_BUFFER)
        read = rd.read
        if c.op == "random":
            idx = c.idx

            def run():
                for i in idx:
                    touch(sample(i, pixels(i, read(i, i + 1)[0])).image)
                return len(idx)
        else:
            chunks = [ch.tolist() for ch in c.chunks()]

            def run():
                k = 0
                for ch in chunks:
                    for i, rec in zip(ch, read(ch)):
                        touch(sample(i, pixels(i, rec)).image)
                    k += len(ch)
                return k
    return BoundRun(run, rd.close, [path])

