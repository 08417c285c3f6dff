"""sqlite: every sample as one BLOB row in a single SQLite database file.

``data.sqlite`` holds one table, ``samples(pos INTEGER PRIMARY KEY, key TEXT,
label INTEGER, record BLOB)`` with a unique index on ``key``.  ``record`` is the
whole Sample in the :mod:`storebench.formats._record` layout (the same bytes lmdb stores,
so the two compare storage engines, not serialisers); ``key`` and ``label`` are
repeated as columns so that ``get(key)`` is one indexed lookup and the table can
be queried with plain SQL.  ``pos`` is the rowid: ``r[i]`` is one B-tree search.

Pick it when you want one portable file that any language can open, with keys
and labels queryable, for small images (the SQLite project measured 10 kB
blobs reading ~35% faster than one file each: one open() instead of one per
blob).  Caveats: no compression; rows are packed whole into pages, so 3 kB
CIFAR rows fill only 75% of the default 4 KiB pages, while
``page_size=65536`` packs them and reads a 400 kB image from 7 pages instead
of 100 (2.5x faster), at twice the cost of one small random read.  The build
runs without a journal, as a failed build's temporary directory is thrown
away.  Readers open the file ``immutable=1``: a finished dataset never
changes, so SQLite may skip file locks and change checks (which also suits
network file systems whose locking is broken).
"""
from __future__ import annotations

import os
import sqlite3
from functools import partial
from itertools import islice
from pathlib import Path
from urllib.parse import quote

from ._api import DatasetError, Format, Reader
from ._bound import Bound, BoundInput, BoundRun, named
from ._record import RecordError, decode, encode

BATCH = 1000  # rows per executemany: bounds the Python-side buffer
# How a damaged file shows: SQLite's errors, and text columns (the schema too) that are not UTF-8.
_BROKEN = (sqlite3.Error, UnicodeDecodeError)


class SQLite(Format):
    name = "sqlite"
    local_only = ("SQLite opens a local database file through its own VFS (POSIX locks; Python's sqlite3 "
                  "has no object-store VFS)")
    bench_variants = ({}, {"page_size": 65536})

    def __init__(self, page_size: int = 4096):
        if page_size not in {2 ** k for k in range(9, 17)}:
            raise ValueError(f"page_size: must be a power of two in 512..65536, got {page_size!r}")
        self.page_size = page_size

    @property
    def bound(self) -> Bound:
        """bare-sqlite with this format's page size."""
        return Bound(named("bare-sqlite", self), partial(bare_sqlite, page_size=self.page_size))

    def info(self):
        return {"sqlite": sqlite3.sqlite_version}

    def _write(self, samples, root: Path):
        con = sqlite3.connect(root / "data.sqlite", isolation_level=None)
        try:
            # No journal and no syncs: a failed build is deleted, and the base class fsyncs.
            con.execute(f"PRAGMA page_size = {self.page_size}")
            con.execute("PRAGMA journal_mode = OFF")
            con.execute("PRAGMA synchronous = OFF")
            con.execute("CREATE TABLE samples (pos INTEGER PRIMARY KEY, key TEXT NOT NULL, "
                        "label INTEGER NOT NULL, record BLOB NOT NULL)")
            con.execute("BEGIN")
            rows = ((i, s.key, s.label, encode(s)) for i, s in enumerate(samples))
            while batch := list(islice(rows, BATCH)):
                con.executemany("INSERT INTO samples VALUES (?, ?, ?, ?)", batch)
            # One sorted index build at the end beats updating it row by row.
            con.execute("CREATE UNIQUE INDEX samples_key ON samples (key)")
            con.execute("COMMIT")
        finally:
            con.close()
        return {"sqlite": sqlite3.sqlite_version}


class SQLiteReader(Reader):
    def _open_handles(self):
        file = self.path / "data.sqlite"
        if not file.is_file():
            raise DatasetError(self.path, "data.sqlite is missing")
        # SQLite says only "unable to open database file": open it once ourselves so that
        # a permission error is a PermissionError naming the file, not damage.
        os.close(os.open(file, os.O_RDONLY))
        try:
            # Threads share the connection, one statement at a time under self._lock: its
            # statement cache is not safe to step from two threads (wrong rows on 3.13), and
            # Python < 3.11 reports threadsafety 1 whatever the build.
            con = _connect(file, check_same_thread=False)
        except sqlite3.Error as err:
            raise DatasetError(self.path, f"data.sqlite cannot be opened: {err}") from err
        try:
            # A header check plus a cheap query: connect() alone accepts any file.
            (last,) = con.execute("SELECT max(pos) FROM samples").fetchone()
        except _BROKEN as err:
            con.close()
            raise DatasetError(self.path, f"data.sqlite is damaged: {err}") from err
        if (-1 if last is None else last) != self._n - 1:
            con.close()
            raise DatasetError(self.path, f"data.sqlite holds rows up to {last}, "
                               f"the manifest says {self._n} samples")
        return con

    def _query(self, sql, args=(), fetch="all"):
        try:
            with self._lock:
                cur = self._handles.execute(sql, args)
                return cur.fetchone() if fetch == "one" else cur.fetchall() if fetch == "all" else cur
        except _BROKEN as err:
            raise DatasetError(self.path, f"data.sqlite is damaged: {err}") from err

    def _decode(self, record, what):
        if record is None:
            raise DatasetError(self.path, f"data.sqlite has no row for {what}")
        try:
            return decode(record)
        except RecordError as err:
            raise DatasetError(self.path, f"record of {what} is damaged: {err}") from err

    def _read(self, i):
        row = self._query("SELECT record FROM samples WHERE pos = ?", (i,), fetch="one")
        return self._decode(row and row[0], f"sample {i}")

    def _read_many(self, idx):
        found = {}
        wanted = sorted(set(idx.tolist()))  # ascending rowids: pages are visited in file order
        for k in range(0, len(wanted), 500):  # stay under old SQLite's 999-parameter limit
            part = wanted[k:k + 500]
            sql = f"SELECT pos, record FROM samples WHERE pos IN ({','.join('?' * len(part))})"
            found.update(self._query(sql, part))
        return [self._decode(found.get(i), f"sample {i}") for i in idx.tolist()]

    def _iter(self):
        n = 0
        rows = self._query("SELECT record FROM samples ORDER BY pos", fetch="cursor")
        lock = self._lock
        try:
            while True:
                with lock:  # rows are fetched as the loop goes, 256 at a time
                    chunk = rows.fetchmany(256)
                if not chunk:
                    break
                for (record,) in chunk:
                    n += 1
                    yield self._decode(record, f"sample {n - 1}")
        except _BROKEN as err:
            raise DatasetError(self.path, f"data.sqlite is damaged after sample {n}: {err}") from err
        if n != self._n:
            raise DatasetError(self.path, f"data.sqlite ends after {n} of {self._n} samples")

    def _keys(self):
        try:
            return [k for (k,) in self._query("SELECT key FROM samples ORDER BY pos")]
        except _BROKEN as err:  # raised while fetching, e.g. bad UTF-8
            raise DatasetError(self.path, f"data.sqlite keys are damaged: {err}") from err

    def get(self, key):
        """The sample with ``key``, found through the key index; ``KeyError`` if none."""
        if not isinstance(key, str):
            raise KeyError(key)
        if self._handles is None:
            self.handles  # opens lazily, or raises ValueError once closed
        row = self._query("SELECT pos, record FROM samples WHERE key = ?", (key,), fetch="one")
        if row is None:
            raise KeyError(key)
        smp = self._decode(row[1], f"key {key!r}")
        return self._check(row[0], smp) if self.verify_reads else smp


SQLite.reader = SQLiteReader


def _connect(file: Path, **kwargs) -> sqlite3.Connection:
    """A read-only connection that skips locks and change checks: a finished file never changes."""
    return sqlite3.connect(f"file:{quote(str(file.resolve()))}?mode=ro&immutable=1", uri=True, **kwargs)


def bare_sqlite(c: BoundInput, page_size: int) -> BoundRun:
    """One ``SELECT`` of a pool image's pixel blob by rowid + ``np.frombuffer`` + Sample;
    a scan steps one ``SELECT ... ORDER BY pos``."""
    pool, touch = c.pool, c.touch

    def make(tmp: Path):
        con = sqlite3.connect(tmp)
        try:
            con.execute(f"PRAGMA page_size = {page_size}")
            con.execute("PRAGMA journal_mode = OFF")
            con.execute("CREATE TABLE t (pos INTEGER PRIMARY KEY, image BLOB NOT NULL)")
            con.executemany("INSERT INTO t VALUES (?, ?)", ((i, a[1].tobytes()) for i, a in enumerate(pool.args)))
            con.commit()
        finally:
            con.close()

    path = c.store(f"bare-{page_size}.sqlite", make)
    con = _connect(path)
    if c.op != "scan":
        query = "SELECT image FROM t WHERE pos = ?"
        return BoundRun(c.each(lambda i: pool.pixels(i, con.execute(query, (i,)).fetchone()[0])), con.close, [path])
    n, sample, pixels = len(c.order), pool.sample, pool.pixels

    def run():
        k = 0
        while k < n:
            for i, (blob,) in enumerate(con.execute("SELECT image FROM t ORDER BY pos")):
                touch(sample(i, pixels(i, blob)).image)
                k += 1
                if k == n:
                    break
        return k
    return BoundRun(run, con.close, [path])
