"""tfrecord: TensorFlow's record file of ``tf.train.Example`` protos, without TensorFlow.

``data.tfrecord`` holds one Example per sample with the features ``key``
(bytes), ``label`` (int), ``image`` (raw pixels, C order), ``shape`` (the
image's shape: 2 or 3 ints, or 4 for a ``(D, H, W, C)`` volume), ``dtype``
(bytes: ``uint8``, ``uint16``, ``int16`` or ``float32``), ``boxes`` (floats,
4 per box, 6 for a volume), ``box_labels`` (ints) and ``meta`` (JSON bytes),
written by the ``tfrecord`` package and
parsed with its ``example_pb2``.  ``data.tfindex`` is that package's index
("offset length" per record, written during the write), so its readers and
PyTorch dataset use the files as they are; ``keys.json`` serves ``get``.

Pick it when the data also feeds ``tf.data`` or TPU pipelines, or to compare
with the TensorFlow ecosystem.  Caveats: every read parses a protobuf and
copies the pixels out of it; no compression; ``r[i]`` needs ``data.tfindex``.
``import tfrecord`` imports PyTorch (seconds, ~200 MB): this module skips
that part of the package unless torch is already loaded.
"""
from __future__ import annotations

import importlib
import json
import os
import struct
import sys
from contextlib import closing
from importlib.metadata import version
from pathlib import Path

import numpy as np

if "torch" not in sys.modules and "tfrecord" not in sys.modules:
    sys.modules["tfrecord.torch"] = None  # type: ignore[assignment]  # tfrecord/__init__'s optional torch import fails fast
    try:
        importlib.import_module("tfrecord")
    finally:
        del sys.modules["tfrecord.torch"]  # a later ``import tfrecord.torch`` still works
from google.protobuf.message import DecodeError
from tfrecord import example_pb2
from tfrecord.reader import tfrecord_loader
from tfrecord.writer import TFRecordWriter

from ._api import _NO_BOXES, _NO_LABELS, DatasetError, Format, Reader, _sample
from ._bound import Bound, BoundInput, BoundRun
from ._index import DTYPES, decode_meta, encode_meta
from ._sample import NO_BOXES_3D

BLOCK = 8 << 20  # bytes per read while scanning
_DTYPE = {d.name.encode(): d for d in DTYPES}


class TFRecord(Format):
    name = "tfrecord"
    local_only = 'not wired: the tfrecord package opens local paths by name (its reader takes no file object)'
    libraries = ("tfrecord", "protobuf")

    @property
    def bound(self) -> Bound:
        return Bound("bare-tfrecord", bare_tfrecord, ops=("scan",))

    def info(self):
        from google.protobuf import __version__ as pb
        from google.protobuf.internal import api_implementation
        return {"tfrecord": version("tfrecord"), "protobuf": f"{pb} ({api_implementation.Type()})"}

    def _write(self, samples, root: Path):
        keys = []
        with closing(TFRecordWriter(str(root / "data.tfrecord"))) as w, \
                open(root / "data.tfindex", "w") as index:
            for s in samples:
                start = w.file.tell()
                w.write({"key": (s.key.encode("utf-8", "surrogatepass"), "byte"),
                         "label": (s.label, "int"),
                         "image": (np.ascontiguousarray(s.image).tobytes(), "byte"),
                         "shape": (list(s.image.shape), "int"),
                         "dtype": (s.image.dtype.name.encode(), "byte"),
                         "boxes": (s.boxes.reshape(-1).tolist(), "float"),
                         "box_labels": (s.box_labels.tolist(), "int"),
                         "meta": (encode_meta(s.meta), "byte")})
                index.write(f"{start} {w.file.tell() - start}\n")  # tfrecord's own index format
                keys.append(s.key)
        (root / "keys.json").write_text(json.dumps(keys))


class TFRecordReader(Reader):
    def _open_handles(self):
        try:
            table = np.array((self.path / "data.tfindex").read_bytes().split(), np.int64)
            keys = json.loads((self.path / "keys.json").read_bytes())
            f = open(self.path / "data.tfrecord", "rb", buffering=0)
        except PermissionError:
            raise  # names the file: not damage
        except (OSError, ValueError) as err:
            raise DatasetError(self.path, f"a file is missing or damaged: {err}") from err
        off, size = table[0::2], table[1::2]
        if not (isinstance(keys, list) and len(keys) == len(off) == len(size) == self._n
                and (off == np.cumsum(size) - size).all()  # back to back from byte 0
                and size.sum() == os.fstat(f.fileno()).st_size):
            f.close()
            raise DatasetError(self.path, "data.tfindex or keys.json does not match data.tfrecord")
        self._off, self._size, self._keys_list = off.tolist(), size.tolist(), keys
        return f

    def _pread(self, n: int, at: int) -> bytes:
        buf = os.pread(self._handles.fileno(), n, at)
        if len(buf) != n:
            raise DatasetError(self.path, f"data.tfrecord is truncated at byte {at + len(buf)}")
        return buf

    def _parse(self, i: int, rec):
        """Sample ``i`` from its framed record: length, crc, Example bytes, crc."""
        body, crc = rec[12:-4], TFRecordWriter.masked_crc
        if len(rec) < 16 or struct.unpack_from("<Q", rec)[0] != len(body) or self.verify_reads and (
                bytes(rec[8:12]) != crc(bytes(rec[:8])) or bytes(rec[-4:]) != crc(bytes(body))):
            raise DatasetError(self.path, f"record {i} of data.tfrecord is damaged")
        ex = example_pb2.Example()
        try:
            ex.ParseFromString(body)
            f = ex.features.feature
            shape = tuple(f["shape"].int64_list.value)
            if len(shape) not in (2, 3, 4):
                raise ValueError(f"shape {shape} is no image's")
            dtype = _DTYPE[f["dtype"].bytes_list.value[0]]
            image = np.frombuffer(f["image"].bytes_list.value[0], dtype).reshape(shape)
            boxes = f["boxes"].float_list.value
            volume = len(shape) == 4  # a volume's boxes have 6 coordinates (two 3-D corners), an image's 4
            if boxes:
                boxes = np.array(boxes, np.float32).reshape(-1, 6 if volume else 4)
                box_labels = np.array(f["box_labels"].int64_list.value, np.int64)
                if len(box_labels) != len(boxes):
                    raise ValueError(f"{len(box_labels)} box labels for {len(boxes)} boxes")
            else:
                boxes, box_labels = (NO_BOXES_3D if volume else _NO_BOXES), _NO_LABELS
            return _sample(f["key"].bytes_list.value[0].decode("utf-8", "surrogatepass"),
                           image, f["label"].int64_list.value[0], boxes, box_labels,
                           decode_meta(f["meta"].bytes_list.value[0]))
        except (DecodeError, IndexError, KeyError, ValueError) as err:
            raise DatasetError(self.path, f"record {i} of data.tfrecord: {err!r}") from err

    def _read(self, i):
        return self._parse(i, self._pread(self._size[i], self._off[i]))

    def _read_many(self, idx):
        # Records lie back to back: one pread per run of neighbouring indices.
        out, order, idx = [None] * len(idx), np.argsort(idx, kind="stable"), idx.tolist()
        for run in np.split(order, np.flatnonzero(np.diff(np.sort(idx)) > 1) + 1) if idx else ():
            first, last = idx[run[0]], idx[run[-1]]
            base = self._off[first]
            buf = memoryview(self._pread(self._off[last] + self._size[last] - base, base))
            for r in run.tolist():
                a = self._off[idx[r]] - base
                out[r] = self._parse(idx[r], buf[a:a + self._size[idx[r]]])
        return out

    def _iter(self):
        end = self._off[-1] + self._size[-1] if self._n else 0
        lo = hi = 0
        for i, (a, n) in enumerate(zip(self._off, self._size)):
            if a + n > hi:  # next block: whole records from here, BLOCK bytes or more
                lo, buf = a, memoryview(self._pread(min(max(n, BLOCK), end - a), a))
                hi = lo + len(buf)
            yield self._parse(i, buf[a - lo:a - lo + n])

    def _keys(self):
        return list(self._keys_list)


TFRecord.reader = TFRecordReader


def bare_tfrecord(c: BoundInput) -> BoundRun:
    """The ``tfrecord`` package's own iteration (``tfrecord_loader``) over Examples holding the
    pool's pixels as one bytes feature, + a view + Sample; scans only (the package has no ``r[i]``).

    Each pass reads a whole file (breaking out would leave the package's file open): the pool's,
    and for a last, partial pass a file of the pool's first samples.
    """
    pool, touch, sample, pixels = c.pool, c.touch, c.pool.sample, c.pool.pixels

    def store(count: int) -> Path:
        def make(tmp: Path):
            with closing(TFRecordWriter(str(tmp))) as w:
                for a in pool.args[:count]:
                    w.write({"image": (a[1].tobytes(), "byte")})
        return c.store("bare.tfrecord" if count == pool.m else f"bare-{count}.tfrecord", make)

    n = len(c.order)
    passes = [str(store(pool.m))] * (n // pool.m) + ([str(store(n % pool.m))] if n % pool.m else [])

    def run():
        k = 0
        for path in passes:
            for i, ex in enumerate(tfrecord_loader(path, None, {"image": "byte"})):
                touch(sample(i, pixels(i, ex["image"])).image)
                k += 1
        return k
    return BoundRun(run, files=sorted({Path(p) for p in passes}))
