"""The one sample type: :class:`Sample`, its validation and the unchecked :func:`make_sample`."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ALL_MODES", "DTYPE_NAMES", "IMAGE_MODES", "NO_BOXES", "NO_BOXES_3D", "NO_LABELS", "VOLUME",
           "VOLUME_MODES", "Sample", "describe_modes", "make_sample", "modes_of"]

#: The pixel types a Sample may have: 8- and 16-bit unsigned (photographs, PNG radiographs),
#: int16 (CT in Hounsfield units, negative for air) and float32 (normalised MRI).
DTYPE_NAMES = ("uint8", "uint16", "int16", "float32")
#: The third element of a volume's mode.
VOLUME = "volume"
#: Every (dtype, channels) pair of a 2-D image; channels 0 means an ``(H, W)`` array.
IMAGE_MODES = frozenset((dt, c) for dt in DTYPE_NAMES for c in (0, 1, 2, 3, 4))
#: Every (dtype, channels, "volume") triple of a ``(D, H, W, C)`` volume.
VOLUME_MODES = frozenset((dt, c, VOLUME) for dt in DTYPE_NAMES for c in (1, 2, 3, 4))
#: Every mode a Sample may have.
ALL_MODES = IMAGE_MODES | VOLUME_MODES
_DTYPES = tuple(np.dtype(d) for d in DTYPE_NAMES)
#: Shared read-only empty boxes and box labels, for samples without boxes.
NO_BOXES = np.zeros((0, 4), np.float32)
NO_BOXES.setflags(write=False)
#: Empty boxes of a volume: ``(0, 6)``.
NO_BOXES_3D = np.zeros((0, 6), np.float32)
NO_BOXES_3D.setflags(write=False)
NO_LABELS = np.zeros((0,), np.int64)
NO_LABELS.setflags(write=False)
_NO_BOXES, _NO_LABELS = NO_BOXES, NO_LABELS


def modes_of(dtypes=DTYPE_NAMES, channels=(0, 1, 2, 3, 4), *, images: bool = True,
             volumes: bool = False) -> frozenset:
    """The modes of ``dtypes`` x ``channels``, for 2-D images and/or volumes.

    >>> sorted(modes_of(("uint8",), (0, 3)))
    [('uint8', 0), ('uint8', 3)]
    """
    out: set[tuple] = set()
    for dt in dtypes:
        for c in channels:
            if images:
                out.add((dt, c))
            if volumes and c:
                out.add((dt, c, VOLUME))
    return frozenset(out)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def _check_int64(value: int, where: str) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{where}: {value if value.bit_length() < 200 else f'a {value.bit_length()}-bit int'} "
                         "is outside int64, which every format stores")
    return value


def _check_meta(meta: Any) -> dict:
    if not isinstance(meta, Mapping):
        raise ValueError(f"meta: must be a mapping, got {type(meta).__name__}")
    out = {}
    for k, v in meta.items():
        if not isinstance(k, str) or not _is_unicode(k):
            raise ValueError(f"meta: keys must be str (valid unicode), got {k!r}")
        if isinstance(v, str) and not _is_unicode(v):
            raise ValueError(f"meta[{k!r}]: {v!r} is not valid unicode (lone surrogate)")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"meta[{k!r}]: non-finite float {v!r} is not JSON")
        if v is not None and not isinstance(v, (str, int, float, bool)):
            raise ValueError(
                f"meta[{k!r}]: must be str, int, float, bool or None, "
                f"got {type(v).__name__}"
            )
        if isinstance(v, int) and not isinstance(v, bool):
            _check_int64(v, f"meta[{k!r}]")
        out[k] = v
    return out


@dataclass(frozen=True, eq=False, slots=True)
class Sample:
    """One training example: an image, its class, its boxes and metadata.

    Parameters
    ----------
    key : str
        Unique within a dataset; any unicode (``/`` and spaces included).
    image : numpy.ndarray
        A 2-D image ``(H, W)`` or ``(H, W, C)``, or a volume ``(D, H, W, C)``
        (always 4-D, channel last), with ``C`` in 1..4; ``uint8``, ``uint16``,
        ``int16`` or ``float32`` (any bits: NaN payloads and ``-0.0`` round-trip
        in lossless formats).  Readers may return read-only views into a
        memory map or a buffer: copy before writing into it.
    label : int
        Image-level class, ``-1`` for none.
    boxes : array_like
        ``(N, 4)`` pascal_voc corners ``x_min, y_min, x_max, y_max`` in
        pixels, stored as float32; for a volume ``(N, 6)``:
        ``x_min, y_min, z_min, x_max, y_max, z_max`` (z along D).  Finite,
        ``min <= max`` and inside the image.
    box_labels : array_like
        ``(N,)`` integer class per box, stored as int64.
    meta : Mapping
        Small JSON-able mapping of ``str`` to ``str | int | float | bool | None``.

    Construction validates every field and raises ``ValueError`` naming it.
    Readers use the unchecked :func:`make_sample` instead, because samples were
    validated when they were written.  Equality compares keys, labels, meta
    and arrays (dtype, shape and values).
    """

    key: str
    image: np.ndarray
    label: int = -1
    boxes: np.ndarray = None  # type: ignore[assignment]
    box_labels: np.ndarray = None  # type: ignore[assignment]
    meta: Mapping[str, Any] = None  # type: ignore[assignment]

    def __post_init__(self):
        set_ = object.__setattr__
        if not isinstance(self.key, str):
            raise ValueError(f"key: must be str, got {type(self.key).__name__}")
        if not _is_unicode(self.key):
            raise ValueError(f"key: {self.key!r} is not valid unicode (lone surrogate)")
        img = self.image
        if not isinstance(img, np.ndarray):
            raise ValueError(f"image: must be a numpy array, got {type(img).__name__}")
        if img.dtype not in _DTYPES:
            raise ValueError(f"image: dtype must be one of {', '.join(DTYPE_NAMES)}, got {img.dtype}")
        if img.ndim not in (2, 3, 4) or (img.ndim >= 3 and not 1 <= img.shape[-1] <= 4):
            raise ValueError(f"image: shape must be (H, W), (H, W, 1..4) or a volume (D, H, W, 1..4), "
                             f"got {img.shape}")
        if min(img.shape[:-1] if img.ndim >= 3 else img.shape) < 1:
            raise ValueError(f"image: every side must be >= 1, got {img.shape}")
        label = self.label
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
            raise ValueError(f"label: must be int, got {type(label).__name__}")
        set_(self, "label", _check_int64(int(label), "label"))
        try:
            boxes = np.asarray(_NO_BOXES if self.boxes is None else self.boxes)
        except Exception as err:  # ragged lists and the like
            raise ValueError(f"boxes: not an array: {err}") from err
        volume = img.ndim == 4
        width = 6 if volume else 4
        if boxes.size == 0 and boxes.ndim <= 2:
            boxes = NO_BOXES_3D if volume else _NO_BOXES
        if boxes.ndim != 2 or boxes.shape[1] != width:
            raise ValueError(f"boxes: shape must be (N, {width}) for {'a volume' if volume else 'an image'}, "
                             f"got {boxes.shape}")
        if not (np.issubdtype(boxes.dtype, np.floating) or np.issubdtype(boxes.dtype, np.integer)):
            raise ValueError(f"boxes: must be real numbers, got dtype {boxes.dtype}")
        boxes = np.ascontiguousarray(boxes, dtype=np.float32)
        if len(boxes) and volume:
            d, h, w = img.shape[:3]
            if not np.isfinite(boxes).all():
                raise ValueError("boxes: coordinates must be finite")
            if (boxes[:, :3] > boxes[:, 3:]).any():
                raise ValueError("boxes: need x_min <= x_max, y_min <= y_max and z_min <= z_max")
            if (boxes < 0).any() or (boxes[:, [0, 3]] > w).any() or (boxes[:, [1, 4]] > h).any() \
                    or (boxes[:, [2, 5]] > d).any():
                raise ValueError(f"boxes: outside the {w}x{h}x{d} volume (x, y, z)")
        elif len(boxes):
            h, w = img.shape[:2]
            if not np.isfinite(boxes).all():
                raise ValueError("boxes: coordinates must be finite")
            if (boxes[:, 0] > boxes[:, 2]).any() or (boxes[:, 1] > boxes[:, 3]).any():
                raise ValueError("boxes: need x_min <= x_max and y_min <= y_max")
            if (boxes < 0).any() or (boxes[:, [0, 2]] > w).any() or (boxes[:, [1, 3]] > h).any():
                raise ValueError(f"boxes: outside the {w}x{h} image")
        set_(self, "boxes", boxes)
        bl = np.asarray(_NO_LABELS if self.box_labels is None else self.box_labels)
        if bl.size == 0 and bl.ndim <= 1:
            bl = _NO_LABELS
        if bl.ndim != 1 or not (np.issubdtype(bl.dtype, np.integer) or bl.size == 0):
            raise ValueError(f"box_labels: must be a 1-D integer array, got {bl.dtype} {bl.shape}")
        if len(bl) != len(boxes):
            raise ValueError(f"box_labels: {len(bl)} labels for {len(boxes)} boxes")
        if bl.size and bl.dtype.kind == "u" and bl.dtype.itemsize == 8 and int(bl.max()) > INT64_MAX:
            raise ValueError(f"box_labels: {int(bl.max())} is outside int64, which every format stores")
        set_(self, "box_labels", np.ascontiguousarray(bl, dtype=np.int64))
        set_(self, "meta", _check_meta({} if self.meta is None else self.meta))

    def __eq__(self, other):
        if not isinstance(other, Sample):
            return NotImplemented
        return (
            self.key == other.key
            and self.label == other.label
            and dict(self.meta) == dict(other.meta)
            and _array_equal(self.image, other.image)
            and _array_equal(self.boxes, other.boxes)
            and _array_equal(self.box_labels, other.box_labels)
        )

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self):
        return (make_sample, (self.key, self.image, self.label, self.boxes, self.box_labels, self.meta))

    @property
    def mode(self) -> tuple:
        """``(dtype name, channels)`` for an image (channels 0 for ``(H, W)``), and
        ``(dtype name, channels, "volume")`` for a volume."""
        img = self.image
        if img.ndim == 4:
            return (img.dtype.name, img.shape[3], VOLUME)
        return (img.dtype.name, img.shape[2] if img.ndim == 3 else 0)

    @property
    def is_volume(self) -> bool:
        """Whether the image is a ``(D, H, W, C)`` volume."""
        return self.image.ndim == 4


def _array_equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":  # bit-exact: NaN payloads and -0.0 count, as a lossless format keeps them
        u = np.dtype(f"u{a.dtype.itemsize}")
        return bool(np.array_equal(np.ascontiguousarray(a).view(u), np.ascontiguousarray(b).view(u)))
    return bool(np.array_equal(a, b))


_new = object.__new__
_set = object.__setattr__


def make_sample(key, image, label=-1, boxes=NO_BOXES, box_labels=NO_LABELS, meta=None) -> Sample:
    """Build a Sample without validation: for readers, whose data was checked on write.

    Pickled Samples name this function, so its module path is part of the
    pickle and shelve formats' files (see ``storebench.formats._pickling``).
    """
    s = _new(Sample)
    _set(s, "key", key)
    _set(s, "image", image)
    _set(s, "label", label)
    _set(s, "boxes", boxes)
    _set(s, "box_labels", box_labels)
    _set(s, "meta", {} if meta is None else meta)
    return s


_sample = make_sample  # the short name the format modules use


def describe_modes(modes) -> str:
    """``uint8 (H, W), (H, W, 3); int16 (D, H, W, 1)`` for a set of modes."""
    parts = []
    for dt in DTYPE_NAMES:
        mine = [m for m in modes if m[0] == dt]
        shapes = ["(H, W)" if m[1] == 0 else f"(H, W, {m[1]})" for m in sorted(mine) if len(m) == 2]
        shapes += [f"(D, H, W, {m[1]})" for m in sorted(mine) if len(m) == 3]
        if shapes:
            parts.append(f"{dt} {', '.join(shapes)}")
    return "; ".join(parts) or "nothing"

