"""pickle: every Sample pickled (protocol 5) back to back in one file, plus an index.

``samples.pkl`` is the concatenation of ``pickle.dumps(sample, protocol=5)``
(Sample's ``__reduce__`` keeps each record to its arrays and a few names), and
``index.npz`` holds each record's byte offset and length next to the keys,
labels, boxes and metadata.  ``r[i]`` is one ``os.pread`` on a descriptor
opened once per process and one ``pickle.loads``; iteration reads the file in
large sequential chunks.

Pick it for a quick, dependency-free cache of preprocessed samples that only
your own code writes and reads.  Caveats: **unpickling executes code** named
in the file, so untrusted pickle datasets must never be opened
(never open one you did not write yourself, or one
that came over a network, a shared drive or a download); records name
``storebench.formats._sample.make_sample`` (version 1 files name
``formats._api._sample``: :mod:`storebench.formats._pickling` maps it) and
NumPy internals (NumPy 2 writes ``numpy._core``, which NumPy 1 cannot load);
no compression.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from ._api import DatasetError, Format, Reader, Sample
from ._bound import Bound, BoundInput, BoundRun
from ._index import Index, IndexWriter
from ._pickling import loads

DATA = "samples.pkl"
CHUNK = 8 << 20  # bytes per sequential read in iteration


class Pickle(Format):
    name = "pickle"
    local_only = 'pickle files are loaded whole from a local path (nothing to read by range)'
    version = 2  # records name storebench.formats._sample.make_sample (v1: formats._api._sample)
    executes_code = True  # unpickles on read: trusted datasets only

    @property
    def bound(self) -> Bound:
        return Bound("bare-pickle", bare_pickle)

    def _write(self, samples, root):
        index = IndexWriter(columns=("offset", "length"))
        pos = 0
        with open(root / DATA, "wb") as f:
            for s in samples:
                rec = pickle.dumps(s, protocol=5)
                f.write(rec)
                index.add(s, offset=pos, length=len(rec))
                pos += len(rec)
        index.save(root / "index.npz")


class PickleReader(Reader):
    def _open_handles(self):
        index = Index.load(self.path / "index.npz", self.path, ("offset", "length"), self._n)
        off, length = index.columns["offset"], index.columns["length"]
        # Records were written back to back; anything else is a damaged index.
        if index.n and (off[0] != 0 or (length < 1).any() or (off[1:] != (off + length)[:-1]).any()):
            raise DatasetError(self.path, "index offsets are damaged")
        try:
            fd = os.open(self.path / DATA, os.O_RDONLY)
        except FileNotFoundError as err:
            raise DatasetError(self.path, f"{DATA} is missing") from err
        if os.fstat(fd).st_size < (int(off[-1] + length[-1]) if index.n else 0):
            os.close(fd)
            raise DatasetError(self.path, f"{DATA} is shorter than its index says (truncated?)")
        self._index = index
        self._off, self._len = off.tolist(), length.tolist()
        return fd

    def _close_handles(self, fd):
        os.close(fd)

    def _load(self, i, buf):
        try:
            s = loads(buf, format_version=self.manifest["format_version"])
        except Exception as err:  # damaged bytes can make pickle raise nearly anything
            raise DatasetError(self.path, f"{DATA}: record {i} does not unpickle: {err!r}") from err
        if type(s) is not Sample or s.key != self._index.keys[i]:
            raise DatasetError(self.path, f"{DATA}: record {i} is not the Sample the index names")
        return s

    def _read(self, i):
        n = self._len[i]
        buf = os.pread(self._handles, n, self._off[i])
        if len(buf) != n:
            raise DatasetError(self.path, f"{DATA}: record {i} is cut short")
        return self._load(i, buf)

    def _iter(self):
        off, length, n = self._off, self._len, self._n
        i = 0
        while i < n:
            # One read for as many whole records as fit in CHUNK (at least one).
            start, j = off[i], i + 1
            while j < n and off[j] + length[j] - start <= CHUNK:
                j += 1
            size = off[j - 1] + length[j - 1] - start
            buf = os.pread(self._handles, size, start)
            if len(buf) != size:
                raise DatasetError(self.path, f"{DATA}: records {i}..{j - 1} are cut short")
            view = memoryview(buf)
            for k in range(i, j):
                yield self._load(k, view[off[k] - start:off[k] - start + length[k]])
            i = j


Pickle.reader = PickleReader


def bare_pickle(c: BoundInput) -> BoundRun:
    """``pickle.loads`` of each pool Sample's record, read by ``os.pread`` at its offset."""
    def make(tmp: Path):
        tmp.mkdir()
        recs = [pickle.dumps(c.pool.sample(i, a[1]), protocol=5) for i, a in enumerate(c.pool.args)]
        (tmp / DATA).write_bytes(b"".join(recs))
        np.save(tmp / "lengths.npy", np.array([len(r) for r in recs], np.int64))

    path = c.store("bare.pickle", make)
    size = np.load(path / "lengths.npy").tolist()
    off = np.cumsum([0] + size[:-1]).tolist()
    fd = os.open(path / DATA, os.O_RDONLY)
    idx, touch, pread, unpickle = c.idx, c.touch, os.pread, pickle.loads

    def run():
        for i in idx:
            touch(unpickle(pread(fd, size[i], off[i])).image)
        return len(idx)
    return BoundRun(run, lambda: os.close(fd), [path / DATA])
