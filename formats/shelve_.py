"""shelve: the standard library's persistent dict, key -> pickled Sample.

``shelve.open(root / "shelf", "n", protocol=5)`` with ``shelf[sample.key] =
sample``, as many Kaggle notebooks (e.g. VinBigData) cache their data.  The
shelf has no order, so ``index.npz`` keeps the keys (and labels, boxes,
metadata) in write order for ``r[i]``; ``r.get(key)`` goes straight to the
shelf.  The reader opens the shelf read-only once per process.

Which file format lies underneath is whatever ``dbm`` finds first: gdbm,
ndbm, then the pure-Python ``dbm.dumb`` (Python 3.13 puts ``dbm.sqlite3``
first).  The CPython used here (3.11, built without ``_gdbm`` and ``_dbm``)
falls back to ``dbm.dumb``: ``shelf.dat`` with every value padded to 512
bytes, a text index ``shelf.dir`` loaded whole at open, and a file open per
read (the reader skips it: one ``pread`` on ``shelf.dat``, held open, so a
dataset written over meanwhile is never read) and two per write.  Threads
may share a reader (gdbm and ndbm reads take a lock).  The backend is recorded in the manifest
(``dbm_backend``) and in ``reader.info()``; a shelf written with gdbm cannot
be opened where gdbm is missing.

Pick it only to measure what the notebook idiom costs.  Caveats: **unpickling
executes code**: never open an untrusted shelve dataset (one you did not
write yourself); keys
must be valid UTF-8 (no lone surrogates); with ``dbm.dumb`` writes cost about
twice the pickle format's and each process's first read parses the whole
``shelf.dir`` (about half a second per 50k keys).
"""
from __future__ import annotations

import dbm
import os
import pickle
import shelve
import sqlite3
from pathlib import Path
from urllib.parse import quote

from ._api import DatasetError, Format, Reader, Sample
from ._bound import Bound, BoundInput, BoundRun
from ._fs import _O_RDONLY, dataset_files
from ._index import Index, IndexWriter
from ._pickling import loads

SHELF = "shelf"


class _Shelf:
    """The open shelf, and how to read a record without going through it where that
    is safer: ``dbm.dumb`` reopens ``shelf.dat`` by name on every read (it would read
    a dataset written over meanwhile), so its records are read with one ``pread`` on
    the pinned file; ``dbm.sqlite3`` connections refuse other threads, so records are
    read through a read-only connection of our own that allows them."""

    def __init__(self, shelf: shelve.Shelf, dir_fd: int | None, file: Path):
        self.shelf, self.dat, self.where, self.con = shelf, None, None, None
        db = shelf.dict  # type: ignore[attr-defined]  # where a Shelf keeps its dbm
        if type(db).__module__ == "dbm.dumb":
            self.where = db._index  # key -> (offset, size), loaded at open
            self.dat = os.open(f"{SHELF}.dat", _O_RDONLY, dir_fd=dir_fd)
        elif type(db).__module__ == "dbm.sqlite3":  # Python 3.13's default backend
            self.con = sqlite3.connect(f"file:{quote(str(file))}?mode=ro&immutable=1", uri=True,
                                       check_same_thread=False)
            # The shelf's own connection belongs to the thread that opened it, and closing it
            # from another thread fails: close it here, in that thread; reads use ours.
            shelf.close()

    def close(self) -> None:
        if self.dat is not None:
            os.close(self.dat)
            self.dat = None
        if self.con is not None:
            self.con.close()
        self.shelf.close()


class Shelve(Format):
    name = "shelve"
    local_only = 'shelve opens a local dbm file by path (dbm has no file-object or object-store interface)'
    version = 2  # records name storebench.formats._sample.make_sample (v1: formats._api._sample)
    executes_code = True  # unpickles on read: trusted datasets only

    @property
    def bound(self) -> Bound:
        return Bound("bare-dbm", bare_dbm)

    def _write(self, samples, root):
        index = IndexWriter()
        with shelve.open(str(root / SHELF), "n", protocol=5) as shelf:
            for s in samples:
                try:
                    shelf[s.key] = s
                except UnicodeEncodeError as err:
                    raise ValueError(f"key {s.key!r}: shelve keys must be valid UTF-8") from err
                index.add(s)
        index.save(root / "index.npz")
        return {"dbm_backend": dbm.whichdb(str(root / SHELF))}


class ShelveReader(Reader):
    def _open_handles(self):
        index = Index.load(self.path / "index.npz", self.path, count=self._n)
        for f in sorted(self.path.glob(f"{SHELF}*")):  # dbm.whichdb takes an unreadable file for none
            os.close(os.open(f, os.O_RDONLY))
        try:
            shelf = shelve.open(str(self.path / SHELF), "r")
        except PermissionError:
            raise  # names the file: not damage
        except (*dbm.error, ValueError, SyntaxError) as err:  # dbm.dumb parses its .dir text
            raise DatasetError(self.path, f"cannot open the shelf: {err}") from err
        if (held := len(shelf)) != index.n:
            shelf.close()  # counted first: a closed shelf has no len
            raise DatasetError(self.path, f"shelf holds {held} samples, index {index.n}")
        try:
            handles = _Shelf(shelf, self._dir_fd, self.path / SHELF)
        except (OSError, sqlite3.Error) as err:
            shelf.close()
            raise DatasetError(self.path, f"cannot open the shelf: {err}") from err
        self._index = index
        return handles

    def _raw(self, key: bytes) -> bytes:
        h = self._handles
        if h.where is not None:
            offset, size = h.where[key]  # KeyError for a key never stored
            raw = os.pread(h.dat, size, offset)
            if len(raw) != size:
                raise OSError(f"shelf.dat is cut short at byte {offset + len(raw)}")
            return raw
        if h.con is not None:  # one connection: its statement cache is not safe to share unlocked
            with self._lock:
                row = h.con.execute("SELECT value FROM Dict WHERE key = CAST(? AS BLOB)", (key,)).fetchone()
            if row is None:
                raise KeyError(key)
            return row[0]
        with self._lock:  # gdbm, ndbm: one C handle
            return h.shelf.dict[key]

    def _load(self, key, where):
        # Through the dbm, not the Shelf, so a missing key and a damaged record stay apart.
        try:
            raw = self._raw(key.encode(self._handles.shelf.keyencoding))
        except (OSError, sqlite3.Error) as err:
            raise DatasetError(self.path, f"shelf: cannot read {where}: {err}") from err
        try:
            s = loads(raw, format_version=self.manifest["format_version"])
        except Exception as err:  # damaged bytes can make pickle raise nearly anything
            raise DatasetError(self.path, f"shelf: {where} does not unpickle: {err!r}") from err
        if type(s) is not Sample or s.key != key:
            raise DatasetError(self.path, f"shelf: {where} is not the Sample stored under its key")
        return s

    def _read(self, i):
        key = self._index.keys[i]
        try:
            return self._load(key, f"record {i} (key {key!r})")
        except KeyError as err:
            raise DatasetError(self.path, f"shelf lacks key {key!r} of record {i}") from err

    def get(self, key):
        if self.verify_reads or not isinstance(key, str):
            return super().get(key)  # by position, so the checksum is checked
        if self._handles is None:
            self.handles  # opens the shelf in this process
        try:
            return self._load(key, f"key {key!r}")
        except (KeyError, UnicodeEncodeError):  # a lone surrogate could never have been stored
            raise KeyError(key) from None

    def info(self):
        return {**super().info(), "dbm_backend": self.manifest.get("dbm_backend")}


Shelve.reader = ShelveReader


def bare_dbm(c: BoundInput) -> BoundRun:
    """``pickle.loads(db[key])`` on a ``dbm`` database (the backend shelve uses) of the pool Samples."""
    def make(tmp: Path):
        tmp.mkdir()
        with dbm.open(str(tmp / SHELF), "n") as db:
            for i, a in enumerate(c.pool.args):
                db[str(i).encode()] = pickle.dumps(c.pool.sample(i, a[1]), protocol=5)

    path = c.store("bare.dbm", make)
    db = dbm.open(str(path / SHELF), "r")
    keys = [str(i).encode() for i in range(c.pool.m)]
    idx, touch, unpickle = c.idx, c.touch, pickle.loads

    def run():
        for i in idx:
            touch(unpickle(db[keys[i]]).image)
        return len(idx)
    return BoundRun(run, db.close, dataset_files(path), {"dbm_backend": dbm.whichdb(str(path / SHELF))})
