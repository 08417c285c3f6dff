"""A columnar index of everything in a Sample but its pixels.

Formats that keep images in their own files or blobs (png, npy, hdf5, pickle,
...) store keys, labels, boxes, box labels, metadata, image shapes and dtypes
here, plus any integer columns of their own (byte offsets, lengths,
checksums).  The index is a handful of flat NumPy arrays, so it can live in an
``.npz`` next to the data or inside a container (HDF5 group, zarr group).  No
pickled objects: ``np.load(..., allow_pickle=False)``.

Building a Sample from the index costs about a microsecond: offsets are kept
as Python lists, keys are decoded once at load, and empty boxes and metadata
share constants.
"""
from __future__ import annotations

import json
import math
import posixpath
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, cast

import numpy as np

from ._api import _NO_BOXES, _NO_LABELS, DatasetError, Sample, _sample
from ._sample import DTYPE_NAMES, NO_BOXES_3D

#: Index dtype codes: the position in this tuple (0 uint8, 1 uint16, 2 int16, 3 float32).
DTYPES = tuple(np.dtype(d) for d in DTYPE_NAMES)
_DTYPE_CODE = {d: i for i, d in enumerate(DTYPES)}
_BASE_COLUMNS = ("keys", "key_off", "label", "shape", "dtype", "box_off", "boxes",
                 "box_labels", "meta", "meta_off")


class IndexWriter:
    """Collects the index while a format streams samples to disk.

    Parameters
    ----------
    columns : sequence of str
        Names of extra int64 columns the format fills through :meth:`add`.
    """

    def __init__(self, columns: Sequence[str] = ()):
        self.columns = tuple(columns)
        self._keys: list[str] = []
        self._label: list[int] = []
        self._shape: list[tuple[int, ...]] = []
        self._volumes = False
        self._dtype: list[int] = []
        self._boxes: list[np.ndarray] = []
        self._box_labels: list[np.ndarray] = []
        self._nbox: list[int] = []
        self._meta: list[bytes] = []
        self._extra: dict[str, list[int]] = {c: [] for c in self.columns}

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, s: Sample, **extra: int) -> None:
        """Record sample ``s`` with its extra column values."""
        img = s.image
        self._keys.append(s.key)
        self._label.append(s.label)
        if img.ndim == 4:  # (D, H, W, C); a dataset holds volumes or images (Format.write checks)
            self._volumes = True
            self._shape.append(img.shape)
        else:
            self._shape.append((img.shape[0], img.shape[1], img.shape[2] if img.ndim == 3 else 0))
        self._dtype.append(_DTYPE_CODE[img.dtype])
        self._nbox.append(len(s.boxes))
        if len(s.boxes):
            self._boxes.append(s.boxes)
            self._box_labels.append(s.box_labels)
        self._meta.append(encode_meta(s.meta))
        if extra.keys() != self._extra.keys():
            raise TypeError(f"index columns are {self.columns}, got {tuple(extra)}")
        for k, v in extra.items():
            self._extra[k].append(int(v))

    def arrays(self) -> dict[str, np.ndarray]:
        """The index as flat arrays (no object dtypes)."""
        key_blob = "".join(self._keys).encode("utf-8", "surrogatepass")
        key_off = np.zeros(len(self._keys) + 1, np.int64)
        np.cumsum([len(k) for k in self._keys], out=key_off[1:])
        meta_off = np.zeros(len(self._meta) + 1, np.int64)
        np.cumsum([len(m) for m in self._meta], out=meta_off[1:])
        box_off = np.zeros(len(self._nbox) + 1, np.int64)
        np.cumsum(self._nbox, out=box_off[1:])
        out = {
            "keys": np.frombuffer(key_blob, np.uint8),
            "key_off": key_off,  # offsets in characters of the decoded string
            "label": np.asarray(self._label, np.int64),
            # (n, 3) H, W, C (0 for 2-D) for images; (n, 4) D, H, W, C for volumes
            "shape": np.asarray(self._shape, np.int64).reshape(-1, 4 if self._volumes else 3),
            "dtype": np.asarray(self._dtype, np.uint8),
            "box_off": box_off,
            "boxes": (np.concatenate(self._boxes) if self._boxes
                      else (NO_BOXES_3D if self._volumes else _NO_BOXES).copy()),
            "box_labels": (np.concatenate(self._box_labels) if self._box_labels
                           else _NO_LABELS.copy()),
            "meta": np.frombuffer(b"".join(self._meta), np.uint8),
            "meta_off": meta_off,
        }
        for k, v in self._extra.items():
            out[f"x_{k}"] = np.asarray(v, np.int64)
        return out

    def save(self, file: str | PathLike) -> None:
        """Write the index as an uncompressed ``.npz``."""
        with open(file, "wb") as f:
            np.savez(f, **cast("dict[str, Any]", self.arrays()))


def encode_meta(meta: Mapping) -> bytes:
    return json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode() if meta else b""


def decode_meta(raw: bytes) -> dict:
    return json.loads(raw) if raw else {}


class Index:
    """Read side of :class:`IndexWriter`.

    Parameters
    ----------
    arrays : mapping of str to ndarray
        As produced by :meth:`IndexWriter.arrays`.
    path : path-like
        The dataset, named in errors.
    columns : sequence of str
        Extra columns the format needs; a missing one is a DatasetError.
    count : int, optional
        The sample count the manifest gives; an index of another length is a
        DatasetError.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], path, columns: Sequence[str] = (),
                 count: int | None = None):
        self.path = path
        try:
            a = {k: np.asarray(arrays[k]) for k in _BASE_COLUMNS}
            extra = {c: np.asarray(arrays[f"x_{c}"]) for c in columns}
        except KeyError as err:
            raise DatasetError(path, f"index is missing column {err.args[0]!r}") from None
        for k, v in (*a.items(), *((f"x_{c}", v) for c, v in extra.items())):
            if v.dtype.kind not in ("f" if k == "boxes" else "iu") or v.ndim == 0:
                raise DatasetError(path, f"index column {k!r} is damaged ({v.dtype} {v.shape})")
        n = len(a["label"])
        if count is not None and n != count:
            raise DatasetError(path, f"index holds {n} samples, the manifest {count}")
        key_off = a["key_off"]
        try:
            key_text = a["keys"].tobytes().decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as err:
            raise DatasetError(path, f"index keys are damaged: {err}") from err
        self._check_offsets("key_off", key_off, n, len(key_text))
        self._check_offsets("box_off", a["box_off"], n, len(a["boxes"]))
        self._check_offsets("meta_off", a["meta_off"], n, len(a["meta"]))
        shp = a["shape"]
        volumes = shp.ndim == 2 and shp.shape[1:] == (4,)
        if shp.shape not in ((n, 3), (n, 4)) or a["dtype"].shape != (n,):
            raise DatasetError(path, "index shape/dtype columns do not match the sample count")
        sides = shp[:, :-1]
        if (a["dtype"] >= len(DTYPES)).any() or (a["dtype"] < 0).any() or (sides < 1).any() or \
                (shp[:, -1] < (1 if volumes else 0)).any() or (shp[:, -1] > 4).any():
            raise DatasetError(path, "index holds an impossible image shape or dtype")
        if a["boxes"].ndim != 2 or a["boxes"].shape[1:] != ((6,) if volumes else (4,)) or \
                a["box_labels"].shape != (len(a["boxes"]),):
            raise DatasetError(path, "index boxes are damaged")
        for c, v in extra.items():
            if v.shape != (n,):
                raise DatasetError(path, f"index column {c!r} has {v.shape} for {n} samples")
        self.n = n
        ko = key_off.tolist()
        self.keys: list[str] = [key_text[ko[i]:ko[i + 1]] for i in range(n)]
        self.label: list[int] = a["label"].tolist()
        self.shape = a["shape"]
        self.dtype = a["dtype"]
        self._box_off: list[int] = a["box_off"].tolist()
        self._boxes = a["boxes"].astype(np.float32, copy=False)
        self._box_labels = a["box_labels"].astype(np.int64, copy=False)
        self._boxes.setflags(write=False)
        self._box_labels.setflags(write=False)
        self._meta = a["meta"].tobytes()
        self._meta_off: list[int] = a["meta_off"].tolist()
        self.columns = extra
        # Per-sample (shape, dtype) tuples for building image views cheaply.
        shapes: list[tuple[int, ...]] = (
            [tuple(v) for v in shp.tolist()] if volumes
            else [(h, w) if c == 0 else (h, w, c) for h, w, c in shp.tolist()])
        self.volumes = volumes
        self._empty_boxes = NO_BOXES_3D if volumes else _NO_BOXES
        self.image_shape: list[tuple[int, ...]] = shapes
        self.image_dtype: list[np.dtype] = [DTYPES[d] for d in a["dtype"].tolist()]

    def _check_offsets(self, name, off, n, total):
        if off.shape != (n + 1,) or (n >= 0 and len(off) and (off[0] != 0 or off[-1] != total)) \
                or (np.diff(off) < 0).any():
            raise DatasetError(self.path, f"index column {name!r} is damaged")

    @classmethod
    def load(cls, file: str | PathLike, path=None, columns: Sequence[str] = (),
             count: int | None = None) -> Index:
        """Load an index saved by :meth:`IndexWriter.save`; DatasetError if unusable or not ``count`` long."""
        path = path if path is not None else file
        try:
            # Open the file ourselves: np.load leaves it open when the zip is damaged.
            # a RemoteObject (an index in an object store) opens as one GET into memory
            f = open(file, "rb") if isinstance(file, (str, PathLike)) else file.open("rb")
            with f, np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError as err:
            raise DatasetError(path, f"index file {posixpath.basename(str(file))} is missing") from err
        except PermissionError:
            raise  # names the file; not damage
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, NotImplementedError,
                OverflowError, MemoryError, struct.error, zlib.error, SyntaxError, tokenize.TokenError,
                RecursionError) as err:
            # zipfile raises NotImplementedError for a damaged version or method field; numpy
            # parses a member's header (read before its CRC is checked) with tokenize and
            # ast.literal_eval, and MemoryError is a damaged shape: all of them mean "damaged".
            raise DatasetError(path, f"index file {Path(file).name} is damaged: "
                               f"{type(err).__name__}: {err}") from err
        return cls(arrays, path, columns, count)

    def nbytes(self, i: int) -> int:
        """Bytes of image ``i``'s pixels."""
        return math.prod(self.image_shape[i]) * self.image_dtype[i].itemsize

    def sample(self, i: int, image: np.ndarray) -> Sample:
        """Sample ``i`` with the given pixels; no validation."""
        b0, b1 = self._box_off[i], self._box_off[i + 1]
        if b0 == b1:
            boxes, box_labels = self._empty_boxes, _NO_LABELS
        else:
            boxes, box_labels = self._boxes[b0:b1], self._box_labels[b0:b1]
        m0, m1 = self._meta_off[i], self._meta_off[i + 1]
        try:
            meta = json.loads(self._meta[m0:m1]) if m0 != m1 else {}
        except ValueError as err:  # only where the container has no checksum of its own
            raise DatasetError(self.path, f"index metadata of sample {i} is damaged: {err}") from err
        return _sample(self.keys[i], image, self.label[i], boxes, box_labels, meta)
