"""npy: every image's raw pixels in one flat ``.npy`` file, read through a memory map.

The FFCV / "ragged memmap" layout: ``pixels.npy`` is a 1-D uint8 array holding
all images back to back (each start aligned to 64 bytes), and ``index.npz``
holds offsets, shapes, dtypes, labels, boxes and metadata.  Reading opens
``np.load(mmap_mode='r')`` once per process; ``r[i]`` is a slice and a view,
so nothing is copied and the page cache does the rest.

Pick it when the dataset fits on a local disk uncompressed and you want the
fastest warm reads.  Caveats: no compression (a 100k ImageNet is hundreds of
GB), the returned images are read-only views into the map, and cold reads on
a network file system pay for every page fault.  Pages read are released
from the process every 128 MiB (they stay in the page cache), so a reader's
RSS stays bounded however large the file.
"""
from __future__ import annotations

import struct
import tokenize
from pathlib import Path

import numpy as np

from ._api import DatasetError, Format, Reader
from ._bound import Bound, BoundInput, BoundRun
from ._index import Index, IndexWriter
from ._mmap import RssBudget

HEADER = 128  # bytes reserved for the .npy header, written once the length is known
ALIGN = 64


def _npy_header(length: int) -> bytes:
    """A version 1.0 ``.npy`` header for a 1-D uint8 array, exactly HEADER bytes."""
    text = repr({"descr": "|u1", "fortran_order": False, "shape": (length,)})
    body = text.ljust(HEADER - 10 - 1) + "\n"
    return np.lib.format.magic(1, 0) + struct.pack("<H", len(body)) + body.encode("latin1")


class Npy(Format):
    name = "npy"
    libraries = ("numpy",)

    @property
    def bound(self) -> Bound:
        return Bound("bare-numpy", bare_numpy)

    def _write(self, samples, root: Path):
        index = IndexWriter(columns=("offset",))
        with open(root / "pixels.npy", "wb") as f:
            f.write(bytes(HEADER))  # placeholder: the length is known only at the end
            pos = 0
            for s in samples:
                img = np.ascontiguousarray(s.image)
                pad = -pos % ALIGN
                f.write(bytes(pad))
                pos += pad
                index.add(s, offset=pos)
                f.write(memoryview(img).cast("B"))  # type: ignore[arg-type]  # ndarray is a buffer; numpy stubs lack it
                pos += img.nbytes
            f.seek(0)
            f.write(_npy_header(pos))
        index.save(root / "index.npz")


class NpyReader(Reader):
    def _open_handles(self):
        index = Index.load(self.path / "index.npz", self.path, ("offset",), self._n)
        try:
            mm = np.load(self.path / "pixels.npy", mmap_mode="r")
        except FileNotFoundError as err:
            raise DatasetError(self.path, "pixels.npy is missing") from err
        except PermissionError:
            raise  # names the file: not damage
        except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as err:
            # np.load parses a damaged header with tokenize and ast.literal_eval
            raise DatasetError(self.path, f"pixels.npy is damaged: {type(err).__name__}: {err}") from err
        if mm.dtype != np.uint8 or mm.ndim != 1:
            raise DatasetError(self.path, f"pixels.npy holds {mm.dtype} {mm.shape}, not flat uint8")
        nbytes = np.asarray([index.nbytes(i) for i in range(index.n)], np.int64)
        start = index.columns["offset"]
        end = start + nbytes
        if index.n and (start.min() < 0 or end.max() > len(mm)):
            raise DatasetError(self.path, "index does not match pixels.npy (truncated?)")
        self._index = index
        self._span = list(zip(start.tolist(), end.tolist()))
        self._budget = RssBudget(getattr(mm, "_mmap", None))  # bound RSS over long scans
        # A plain ndarray view: slicing a np.memmap runs Python code per slice.
        return mm.view(np.ndarray)

    def _close_handles(self, handles):
        pass  # the map is released with its last view; images may still point into it

    def _read(self, i):
        a, b = self._span[i]
        self._budget.charge_random(b - a)
        return self._sample(i, a, b)

    def _sample(self, i, a, b):
        index = self._index
        buf = self._handles[a:b]
        dtype = index.image_dtype[i]
        if dtype.itemsize != 1:
            buf = buf.view(dtype)
        return index.sample(i, buf.reshape(index.image_shape[i]))

    def _iter(self):
        charge, sample = self._budget.charge, self._sample
        for i, (a, b) in enumerate(self._span):
            charge(b - a)
            yield sample(i, a, b)


Npy.reader = NpyReader


def bare_numpy(c: BoundInput) -> BoundRun:
    """``np.load(mmap_mode="r")`` of the pool's pixels as one flat array; a slice and a view + Sample per image."""
    pool = c.pool
    spans, spec = pool.spans(), [(a[1].dtype, a[1].shape) for a in pool.args]

    def make(tmp: Path):
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to the name
            np.save(f, pool.flat())

    path = c.store("bare.npy", make)
    flat = np.load(path, mmap_mode="r").view(np.ndarray)

    def image(i):
        (a, b), (dt, sh) = spans[i], spec[i]
        buf = flat[a:b]
        return (buf if dt.itemsize == 1 else buf.view(dt)).reshape(sh)
    return BoundRun(c.each(image), files=[path])
