"""A compact, self-describing binary record for one Sample (no pickle).

Used by key-value formats (lmdb, sqlite, ...) that store each sample as one
blob.  Layout, little-endian::

    header  magic "SBR1", dtype code u8, channels u8, 2 pad, H u32, W u32,
            label i64, n_boxes u32, key bytes u32, meta bytes u32
    key     utf-8
    meta    compact JSON (empty for {})
    boxes   float32 (n_boxes, 4)
    labels  int64 (n_boxes,)
    pixels  C order

dtype codes are those of :data:`storebench.formats._index.DTYPES` (0 uint8,
1 uint16, 2 int16, 3 float32).  A volume's record has magic ``"SBR2"``, a
``D u32`` after ``W``, channels >= 1 and boxes ``(n_boxes, 6)``; 2-D records
are unchanged, so records written before volumes existed read the same.

Decoding is zero-copy: arrays are read-only views into the buffer.
"""
from __future__ import annotations

import json
import struct

import numpy as np

from ._api import _NO_BOXES, _NO_LABELS, Sample, _sample
from ._index import _DTYPE_CODE, DTYPES, encode_meta
from ._sample import NO_BOXES_3D

MAGIC = b"SBR1"
MAGIC_VOLUME = b"SBR2"
_HEAD = struct.Struct("<4sBB2xIIqIII")
_HEAD3 = struct.Struct("<4sBB2xIIIqIII")
HEADER_SIZE = _HEAD.size


class RecordError(ValueError):
    """A record's bytes do not decode; callers re-raise as DatasetError with the path."""


def encode(s: Sample) -> bytes:
    """The record bytes of ``s``."""
    img = s.image
    key = s.key.encode("utf-8", "surrogatepass")
    meta = encode_meta(s.meta)
    if img.ndim == 4:
        d, h, w, c = img.shape
        head = _HEAD3.pack(MAGIC_VOLUME, _DTYPE_CODE[img.dtype], c, h, w, d,
                           s.label, len(s.boxes), len(key), len(meta))
    else:
        head = _HEAD.pack(MAGIC, _DTYPE_CODE[img.dtype],
                          img.shape[2] if img.ndim == 3 else 0, img.shape[0], img.shape[1],
                          s.label, len(s.boxes), len(key), len(meta))
    return b"".join((head, key, meta, s.boxes.tobytes(), s.box_labels.tobytes(),
                     np.ascontiguousarray(img).tobytes()))


def decode(buf: bytes) -> Sample:
    """The Sample in ``buf``; raises RecordError if the bytes are not a whole record."""
    if len(buf) < HEADER_SIZE:
        raise RecordError(f"record of {len(buf)} bytes is shorter than its header")
    if buf[:4] == MAGIC_VOLUME:
        if len(buf) < _HEAD3.size:
            raise RecordError(f"record of {len(buf)} bytes is shorter than its header")
        magic, code, c, h, w, d, label, nbox, nkey, nmeta = _HEAD3.unpack_from(buf)
        if code >= len(DTYPES) or not 1 <= c <= 4:
            raise RecordError("record header is damaged")
        shape: tuple[int, ...] = (d, h, w, c)
        npix, width, o = d * h * w * c, 6, _HEAD3.size
    else:
        magic, code, c, h, w, label, nbox, nkey, nmeta = _HEAD.unpack_from(buf)
        if magic != MAGIC or code >= len(DTYPES) or c > 4:
            raise RecordError("record header is damaged")
        shape = (h, w, c) if c else (h, w)
        npix, width, o = h * w * (c or 1), 4, HEADER_SIZE
    dtype = DTYPES[code]
    end = o + nkey + nmeta + nbox * (width * 4 + 8) + npix * dtype.itemsize
    if end != len(buf):
        raise RecordError(f"record holds {len(buf)} bytes, its header says {end}")
    try:
        key = bytes(buf[o:o + nkey]).decode("utf-8", "surrogatepass")
        o += nkey
        meta = json.loads(bytes(buf[o:o + nmeta])) if nmeta else {}
    except ValueError as err:
        raise RecordError(f"record key or meta is damaged: {err}") from err
    o += nmeta
    if nbox:
        boxes = np.frombuffer(buf, np.float32, nbox * width, o).reshape(nbox, width)
        o += nbox * width * 4
        box_labels = np.frombuffer(buf, np.int64, nbox, o)
        o += nbox * 8
    else:
        boxes, box_labels = (NO_BOXES_3D if width == 6 else _NO_BOXES), _NO_LABELS
    image = np.frombuffer(buf, dtype, npix, o).reshape(shape)
    return _sample(key, image, label, boxes, box_labels, meta)
