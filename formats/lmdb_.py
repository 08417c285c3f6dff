"""lmdb: one LMDB key-value file, one record per sample, read through a memory map.

``data.mdb`` maps each position (8-byte big-endian, so cursor order is write
order) to the sample as a :mod:`storebench.formats._record` blob (no pickle); a last
record holds the key list (JSON) for ``get(key)``.  Readers open it read-only and
lock-free; ``r[i]`` is one B-tree lookup in a long-lived read transaction.

``encoding="pickle"`` (id ``lmdb[pickle]``) is the notebook's layout, as in Real
Python's "Three ways of storing and accessing lots of images in Python": keys
``f"{i:08}".encode("ascii")`` and values ``pickle.dumps`` (protocol 5) of a plain
dict ``{"image", "label", "boxes", "box_labels", "meta", "key"}`` (NumPy arrays,
an int, a str and a dict), so ``pickle.loads(txn.get(b"00000012"))`` reads one.
It is there to measure that idiom; **unpickling executes code**: never open an
untrusted ``lmdb[pickle]`` dataset (one you did not write yourself).  Its keys
keep write order up to 10**8 samples, more are refused.

Pick it for fast random reads of many small samples from one file (the
Caffe / PyTorch-ImageNet layout).  Caveats: no compression, records round up
to 4 KiB pages; the map size doubles while writing; readahead is off (good for
random access, slower cold scans); mapped pages are released from the process
every 128 MiB read so RSS stays bounded (they stay in the page cache); LMDB opens a file once
per process, so its readers share one environment, reopened after fork;
threads may share a reader (``r[i]`` takes a lock, a scan has a transaction
of its own).
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import threading
from functools import partial
from itertools import islice
from pathlib import Path

import lmdb
import numpy as np

from ._api import DatasetError, Format, Reader
from ._bound import Bound, BoundInput, BoundRun, named
from ._fs import dataset_files
from ._mmap import RssBudget, find_mapping
from ._record import RecordError, decode, encode
from ._sample import make_sample

FILE = "data.mdb"
KEYS = b"\xffkeys"  # sorts after every position key
BATCH_BYTES, BATCH_SAMPLES = 64 << 20, 1000  # per write transaction
_pos = struct.Struct(">Q").pack
ENCODINGS = ("record", "pickle")
PICKLE_PROTOCOL = 5  # as the pickle and shelve formats; Python's default is 4 up to 3.13
MAX_PICKLED = 10 ** 8  # f"{i:08}" keys sort in write order below this
FIELDS = ("image", "label", "boxes", "box_labels", "meta", "key")


def _ascii_key(i: int) -> bytes:
    """The key of position ``i`` in ``encoding="pickle"``: Real Python's ``f"{i:08}"``."""
    return f"{i:08}".encode("ascii")


def _pickled(s) -> bytes:
    """``pickle.dumps`` of sample ``s`` as a plain dict (no storebench class is named)."""
    return pickle.dumps({"image": np.asarray(s.image), "label": int(s.label), "boxes": np.asarray(s.boxes),
                         "box_labels": np.asarray(s.box_labels), "meta": dict(s.meta), "key": str(s.key)},
                        protocol=PICKLE_PROTOCOL)  # plain types: a memory map's image pickles as an ndarray


def _unpickled(value: bytes):
    """The Sample of a pickled dict; TypeError, ValueError or whatever unpickling raises if damaged."""
    d = pickle.loads(value)
    if type(d) is not dict or set(d) != set(FIELDS):
        raise ValueError(f"not a dict of {', '.join(FIELDS)}")
    img = d["image"]
    if type(img) is not np.ndarray or type(d["key"]) is not str or type(d["label"]) is not int:
        raise ValueError("image, key or label of the wrong type")
    return make_sample(d["key"], img, d["label"], d["boxes"], d["box_labels"], d["meta"])


class LMDB(Format):
    name = "lmdb"
    local_only = 'LMDB memory-maps one local file (mdb_env_open takes a path; no object-store backend)'
    libraries = ("lmdb",)
    bench_variants = ({}, {"encoding": "pickle"})

    def __init__(self, encoding: str = "record"):
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding: must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
        self.encoding = encoding

    @property
    def executes_code(self) -> bool:  # type: ignore[override]  # a property where the base has a class attribute
        """True for ``encoding="pickle"``: reading unpickles (trusted datasets only)."""
        return self.encoding == "pickle"

    @property
    def bound(self) -> Bound:
        """bare-lmdb: ``txn.get`` of raw pixels; ``bare-lmdb[pickle]``: ``txn.get`` + ``pickle.loads``."""
        return Bound(named("bare-lmdb", self), partial(bare_lmdb, pickled=self.encoding == "pickle"))

    @classmethod
    def library_versions(cls):
        return {**super().library_versions(), "liblmdb": ".".join(map(str, lmdb.version()))}

    def info(self):
        return {"lmdb": lmdb.__version__, "liblmdb": ".".join(map(str, lmdb.version()))}

    def _write(self, samples, root: Path):
        env = lmdb.open(str(root / FILE), subdir=False, map_size=64 << 20,  # grows when full
                        lock=False, sync=False, metasync=False)  # a private dir; the base class fsyncs
        keys, batch, nbytes = [], [], 0
        key_of, value_of = (_ascii_key, _pickled) if self.encoding == "pickle" else (_pos, encode)
        try:
            for i, s in enumerate(samples):
                if i == MAX_PICKLED and self.encoding == "pickle":
                    raise ValueError(f"key {s.key!r}: lmdb[pickle] holds at most {MAX_PICKLED} samples "
                                     "(its 8-digit keys would no longer sort in write order)")
                keys.append(s.key)
                batch.append((key_of(i), value_of(s)))
                nbytes += len(batch[-1][1])
                if nbytes >= BATCH_BYTES or len(batch) >= BATCH_SAMPLES:
                    _commit(env, batch)
                    batch, nbytes = [], 0
            _commit(env, batch + [(KEYS, json.dumps(keys).encode())])
        finally:
            env.close()


def _commit(env, items):
    """Append ``items`` (in key order) in one transaction, doubling the map until they fit."""
    while True:
        try:
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(items, append=True)
            return
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)


# One Environment per data file and process: [env, readers using it].
_envs: dict[tuple[int, int], list] = {}
_lock = threading.Lock()


def _drop_inherited():
    global _lock
    _lock = threading.Lock()  # another thread of the parent may have held it
    for env, _users in _envs.values():
        env.close()  # read-only and lock-free: the parent's copy is untouched
    _envs.clear()


os.register_at_fork(after_in_child=_drop_inherited)


class LMDBReader(Reader):
    def _open_handles(self):
        path = self.path / FILE
        try:
            st = os.stat(path)
            file_id = (st.st_dev, st.st_ino)
            with _lock:
                entry = _envs.get(file_id) or [lmdb.open(
                    str(path), subdir=False, readonly=True, lock=False, readahead=False,
                    map_size=st.st_size), 0]
                txn = entry[0].begin(buffers=False)  # values as bytes, which the samples own
                _envs[file_id] = entry
                entry[1] += 1
        except (OSError, lmdb.Error) as err:
            raise DatasetError(self.path, f"{FILE} is not a readable LMDB file: {err}") from err
        handles, stat, used = (file_id, entry[0], txn), txn.stat(), entry[0].info()["last_pgno"] + 1
        if used * stat["psize"] > st.st_size or stat["entries"] != self._n + 1:
            self._close_handles(handles)  # a short file would SIGBUS on read
            raise DatasetError(self.path, f"{FILE} has {st.st_size} bytes and {stat['entries'] - 1} records,"
                               f" needs {used * stat['psize']} bytes and {self._n} records (truncated?)")
        self._txn = txn
        self._budget = RssBudget(*find_mapping(path))
        pickled = self.format.encoding == "pickle"
        self._key, self._decode = (_ascii_key, _unpickled) if pickled else (_pos, decode)
        return handles

    def _close_handles(self, handles):
        file_id, env, txn = handles
        with _lock:
            if (entry := _envs.get(file_id)) is None or entry[0] is not env:
                return  # closed in a forked child
            txn.abort()
            entry[1] -= 1
            if not entry[1]:
                del _envs[file_id]
                env.close()

    def _sample(self, i, value):
        try:
            return self._decode(value)
        except RecordError as err:
            raise DatasetError(self.path, f"sample {i} is damaged: {err}") from err
        except Exception as err:  # damaged bytes can make pickle raise nearly anything
            if self._decode is decode:
                raise
            raise DatasetError(self.path, f"{FILE}: sample {i} does not unpickle: {err!r}") from err

    def _read(self, i):
        try:
            with self._lock:  # an LMDB transaction serves one thread at a time
                value = self._txn.get(self._key(i), b"")
        except lmdb.Error as err:
            raise DatasetError(self.path, f"sample {i} is damaged: {err}") from err
        self._budget.charge_random(len(value))
        return self._sample(i, value)

    def _read_many(self, indices):
        todo = np.unique(indices).tolist()  # key order: neighbouring pages
        got = dict(zip(todo, map(self._read, todo)))
        return [got[i] for i in indices.tolist()]  # a repeat shares its read-only Sample

    def _iter(self):
        i = 0
        try:
            charge = self._budget.charge
            # A read transaction of its own: scans in other threads do not share its cursor.
            # (Not a with block: the transaction ends when dropped, also after close() of the env.)
            txn = self._handles[1].begin(buffers=False)
            for value in islice(txn.cursor().iternext(keys=False), self._n):
                charge(len(value))
                yield self._sample(i, value)
                i += 1
        except lmdb.Error as err:
            raise DatasetError(self.path, f"sample {i} is damaged: {err}") from err

    def _keys(self):
        try:
            with self._lock:
                raw = self._txn.get(KEYS, b"")
            keys = json.loads(raw)
            if not isinstance(keys, list) or len(keys) != self._n:
                raise ValueError(f"not a list of {self._n} keys")
        except (ValueError, lmdb.Error) as err:
            raise DatasetError(self.path, f"{FILE}: the key list is damaged: {err}") from err
        return keys


LMDB.reader = LMDBReader


# --------------------------------------------------------------------------- bound


def bare_lmdb(c: BoundInput, pickled: bool = False) -> BoundRun:
    """``txn.get`` + ``np.frombuffer`` + Sample on an LMDB environment of the pool's raw
    pixels under 8-byte keys; a scan walks a cursor.  ``pickled``: ``txn.get`` +
    ``pickle.loads`` + Sample on one of the pool's samples pickled as ``encoding="pickle"``
    stores them (dicts under ``f"{i:08}"`` keys)."""
    pool = c.pool
    if pickled:
        return _bare_pickled(c)

    def make(tmp: Path):
        nbytes = sum(a[1].nbytes + 64 for a in pool.args)
        with lmdb.open(str(tmp), map_size=2 * nbytes + (64 << 20), subdir=True) as env:
            with env.begin(write=True) as txn:
                for i, a in enumerate(pool.args):
                    txn.put(_pos(i), np.ascontiguousarray(a[1]).tobytes())
            env.sync(True)

    path = c.store("bare.lmdb", make)
    spec = [(a[1].dtype, a[1].shape) for a in pool.args]
    meta = [(a[0], a[2], a[3], a[4], a[5]) for a in pool.args]
    frombuffer = np.frombuffer

    def sample(i: int, value: bytes):
        dt, sh = spec[i]
        key, label, boxes, bl, mt = meta[i]
        return make_sample(key, frombuffer(value, dt).reshape(sh), label, boxes, bl, mt)
    return _bound_loops(c, path, [_pos(i) for i in range(pool.m)], sample)


def _bound_loops(c: BoundInput, path: Path, keys: list[bytes], sample) -> BoundRun:
    """The bounds' loops over the LMDB environment at ``path``: a scan walks a cursor, random and
    batch reads ``txn.get`` the keys of ``c.idx``; ``sample(i, value)`` is sample ``i``."""
    env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True)
    touch = c.touch
    if c.op == "scan":
        n, m = len(c.order), c.pool.m

        def run():
            k = 0
            with env.begin() as txn:
                while k < n:
                    for i, (_key, v) in enumerate(txn.cursor()):
                        touch(sample(i, v).image)
                        k += 1
                        if k == n or i == m - 1:
                            break
            return k
    else:
        idx = c.idx

        def run():
            with env.begin() as txn:
                get = txn.get
                for i in idx:
                    touch(sample(i, get(keys[i])).image)
            return len(idx)
    return BoundRun(run, env.close, dataset_files(path))


def _bare_pickled(c: BoundInput) -> BoundRun:
    pool, loads = c.pool, pickle.loads

    def make(tmp: Path):
        nbytes = sum(a[1].nbytes + 4096 for a in pool.args)  # a pickled dict's fields fit in a page
        with lmdb.open(str(tmp), map_size=2 * nbytes + (64 << 20), subdir=True) as env:
            with env.begin(write=True) as txn:
                for i, a in enumerate(pool.args):
                    txn.put(_ascii_key(i), _pickled(pool.sample(i, a[1])))
            env.sync(True)

    path = c.store("bare-pickle.lmdb", make)

    def sample(_i: int, value: bytes):
        d = loads(value)
        return make_sample(d["key"], d["image"], d["label"], d["boxes"], d["box_labels"], d["meta"])
    return _bound_loops(c, path, [_ascii_key(i) for i in range(pool.m)], sample)
