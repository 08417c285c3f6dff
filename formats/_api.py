"""The contract every storage format implements.

A *dataset* is a directory holding the format's own files plus a small
``storebench.json`` manifest that names the format, its on-disk version, the
options it was written with and the sample count.  The manifest is written last,
inside a temporary sibling directory that is renamed into place only when the
write is complete, so a directory that opens as a dataset is always whole.

Three public types:

* :class:`Sample`: one image with its labels, boxes and metadata.
* :class:`Format`: a storage format; options are constructor arguments.
* :class:`Reader`: what :meth:`Format.open` returns.

Formats implement two hooks, ``_write(samples, tmpdir)`` and a ``Reader``
subclass with ``_open_handles``, ``_read`` and optionally ``_read_many`` and
``_iter``.  Everything else (validation, atomic rename, duplicate keys,
pickling, per-process reopening, bounds checks) lives here, once.
"""
from __future__ import annotations

import contextlib
import errno
import inspect
import json
import math
import os
import shutil
import uuid
import weakref
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "ALL_MODES",
    "ChecksumError",
    "DatasetError",
    "Format",
    "Reader",
    "Sample",
    "WriteReport",
    "MANIFEST",
]

MANIFEST = "storebench.json"
#: Every (dtype, channels) pair a Sample may have; channels 0 means a 2-D image.
ALL_MODES = frozenset((dt, c) for dt in ("uint8", "uint16") for c in (0, 1, 2, 3, 4))
_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
_NO_BOXES = np.zeros((0, 4), np.float32)
_NO_BOXES.setflags(write=False)
_NO_LABELS = np.zeros((0,), np.int64)
_NO_LABELS.setflags(write=False)


class DatasetError(ValueError):
    """The path is not a valid dataset of this format.

    Raised for a wrong format, a missing index, a truncated or damaged file or
    an unknown format version.  The message names the path and the problem.
    """

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        return (type(self), (self.path, self.problem))


class ChecksumError(DatasetError):
    """A sample read back does not match the checksum stored when it was written."""


CHECKSUMS = "checksums.u32"
CHECKSUM_KIND = "crc32-content-v1"


def content_crc(s: Sample, *, pixels: bool = True) -> int:
    """CRC-32 of everything a reader returns for ``s``: key, label, boxes, meta, image.

    Lossy formats leave the pixels out (``pixels=False``) and guard their
    encoded bytes with a checksum of their own.
    """
    img = s.image
    head = (f"{s.key}\x00{s.label}\x00{img.dtype.str}{img.shape}\x00"
            f"{json.dumps(s.meta, sort_keys=True, separators=(',', ':'))}").encode("utf-8", "surrogatepass")
    crc = zlib.crc32(head)
    crc = zlib.crc32(np.ascontiguousarray(s.boxes, "<f4"), crc)
    crc = zlib.crc32(np.ascontiguousarray(s.box_labels, "<i8"), crc)
    if pixels:
        crc = zlib.crc32(np.ascontiguousarray(img, img.dtype.newbyteorder("<")), crc)
    return crc


# --------------------------------------------------------------------------- Sample


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
        ``(H, W)`` or ``(H, W, C)`` with ``C`` in 1..4, ``uint8`` or ``uint16``.
        Readers may return read-only views into a memory map or a buffer:
        copy before writing into it.
    label : int
        Image-level class, ``-1`` for none.
    boxes : array_like
        ``(N, 4)`` pascal_voc corners ``x_min, y_min, x_max, y_max`` in
        pixels, stored as float32.  Finite, ``min <= max`` and inside the image.
    box_labels : array_like
        ``(N,)`` integer class per box, stored as int64.
    meta : Mapping
        Small JSON-able mapping of ``str`` to ``str | int | float | bool | None``.

    Construction validates every field and raises ``ValueError`` naming it.
    Readers use the unchecked :func:`_sample` instead, because samples were
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
            raise ValueError(f"image: dtype must be uint8 or uint16, got {img.dtype}")
        if img.ndim not in (2, 3) or (img.ndim == 3 and not 1 <= img.shape[2] <= 4):
            raise ValueError(f"image: shape must be (H, W) or (H, W, 1..4), got {img.shape}")
        if img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"image: height and width must be >= 1, got {img.shape}")
        label = self.label
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
            raise ValueError(f"label: must be int, got {type(label).__name__}")
        set_(self, "label", int(label))
        try:
            boxes = np.asarray(_NO_BOXES if self.boxes is None else self.boxes)
        except Exception as err:  # ragged lists and the like
            raise ValueError(f"boxes: not an array: {err}") from err
        if boxes.size == 0 and boxes.ndim <= 2:
            boxes = _NO_BOXES
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes: shape must be (N, 4), got {boxes.shape}")
        if not (np.issubdtype(boxes.dtype, np.floating) or np.issubdtype(boxes.dtype, np.integer)):
            raise ValueError(f"boxes: must be real numbers, got dtype {boxes.dtype}")
        boxes = np.ascontiguousarray(boxes, dtype=np.float32)
        if len(boxes):
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
        return (_sample, (self.key, self.image, self.label, self.boxes, self.box_labels, self.meta))

    @property
    def mode(self) -> tuple[str, int]:
        """``(dtype name, channels)``, channels 0 for a 2-D image."""
        img = self.image
        return (img.dtype.name, img.shape[2] if img.ndim == 3 else 0)


def _array_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))


_new = object.__new__
_set = object.__setattr__


def _sample(key, image, label=-1, boxes=_NO_BOXES, box_labels=_NO_LABELS, meta=None) -> Sample:
    """Build a Sample without validation: for readers, whose data was checked on write."""
    s = _new(Sample)
    _set(s, "key", key)
    _set(s, "image", image)
    _set(s, "label", label)
    _set(s, "boxes", boxes)
    _set(s, "box_labels", box_labels)
    _set(s, "meta", {} if meta is None else meta)
    return s


# --------------------------------------------------------------------------- Format


@dataclass(frozen=True)
class WriteReport:
    """What :meth:`Format.write` returns."""

    path: str
    count: int
    bytes_on_disk: int
    n_files: int

    def to_dict(self) -> dict:
        return {"path": self.path, "count": self.count,
                "bytes_on_disk": self.bytes_on_disk, "n_files": self.n_files}


class Format(ABC):
    """A storage format.

    Subclasses set the class attributes, take their options as keyword
    constructor arguments stored under the same attribute names, and implement
    :meth:`_write` and a :class:`Reader` subclass named by ``reader``.

    Class attributes
    ----------------
    name : str
        Registry key.
    version : int
        On-disk layout version, stored in the manifest; bump it on any change
        that an older reader could not read.
    lossless : bool
        Whether images read back equal to the bytes written.
    modes : frozenset of (dtype, channels)
        Image kinds the format stores; anything else is refused on write with
        a ``ValueError``.  Channels 0 means a 2-D ``(H, W)`` image.
    random_access : bool
        Whether ``r[i]`` avoids reading other samples.
    executes_code : bool
        Whether reading unpickles Python objects, so that a malicious dataset
        can run code: such datasets must only be opened when trusted.
    bench_variants : tuple of dict
        Option sets the benchmark suite sweeps, as constructor kwargs.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    lossless: ClassVar[bool] = True
    modes: ClassVar[frozenset] = ALL_MODES
    random_access: ClassVar[bool] = True
    executes_code: ClassVar[bool] = False
    bench_variants: ClassVar[tuple[dict, ...]] = ({},)
    reader: ClassVar[type[Reader]]

    # ---- options and identity

    @classmethod
    def _option_defaults(cls) -> dict[str, Any]:
        sig = inspect.signature(cls.__init__)
        return {
            p.name: p.default
            for p in list(sig.parameters.values())[1:]
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }

    @property
    def options(self) -> dict[str, Any]:
        """All constructor options with their current values."""
        return {k: getattr(self, k) for k in self._option_defaults()}

    @property
    def id(self) -> str:
        """Stable readable id: the name plus non-default option values, e.g. ``hdf5[gzip-2]``."""
        changed = [
            str(getattr(self, k)) for k, d in self._option_defaults().items()
            if getattr(self, k) != d
        ]
        return f"{self.name}[{'-'.join(changed)}]" if changed else self.name

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.options == other.options

    def __hash__(self):
        return hash((type(self), self.id))

    def info(self) -> dict[str, Any]:
        """Library versions and choices this format made; JSON-able."""
        return {}

    # ---- writing

    def write(self, samples: Iterable[Sample], path: os.PathLike | str, *,
              overwrite: bool = False) -> WriteReport:
        """Write ``samples`` to a new dataset at ``path`` in one streaming pass.

        The dataset is built in a temporary sibling directory, synced, and
        renamed to ``path`` only when complete: after an exception or a crash
        ``path`` either does not exist or still holds the previous dataset.

        Raises
        ------
        FileExistsError
            ``path`` exists and ``overwrite`` is false.
        ValueError
            A duplicate key (named), a Sample mode the format cannot store, or
            an item that is not a Sample.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: already exists (pass overwrite=True to replace it)")
        path.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale_siblings(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        counter = _Counter()
        try:
            with open(tmp / CHECKSUMS, "wb") as crc_file:
                extra = self._write(self._checked(samples, counter, crc_file), tmp) or {}
            manifest = {
                "storebench": "dataset",
                "format": self.name,
                "format_version": self.version,
                "options": _jsonable(self.options),
                "count": counter.n,
                "checksum": CHECKSUM_KIND,
                "files": _file_table(tmp),
                **extra,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            _sync_tree(tmp)
            _swap_into_place(tmp, path)
        except BaseException as err:
            exhausted = isinstance(err, Exception) and _space_exhausted(tmp, path)
            shutil.rmtree(tmp, ignore_errors=True)
            if exhausted or _is_disk_full(err):
                raise OSError(errno.ENOSPC, f"{path}: {os.strerror(errno.ENOSPC)} for the dataset "
                              f"({type(err).__name__}: {err}); nothing was written") from err
            raise
        nbytes, nfiles = disk_usage(path)
        return WriteReport(str(path), counter.n, nbytes, nfiles)

    def _checked(self, samples: Iterable[Sample], counter: _Counter, crc_file) -> Iterator[Sample]:
        seen: set[str] = set()
        modes = self.modes
        lossless = self.lossless
        for s in samples:
            if not isinstance(s, Sample):
                raise TypeError(f"samples[{counter.n}]: expected a Sample, got {type(s).__name__}")
            if s.key in seen:
                raise ValueError(f"key {s.key!r}: duplicate key in samples[{counter.n}]")
            if s.mode not in modes:
                raise ValueError(
                    f"image of key {s.key!r}: {self.name} cannot store {s.image.dtype} "
                    f"images with shape {s.image.shape}; it stores {describe_modes(modes)}"
                )
            seen.add(s.key)
            counter.n += 1
            # Written before the format sees the sample: 4 bytes each, streamed.
            crc_file.write(content_crc(s, pixels=lossless).to_bytes(4, "little"))
            yield s

    @abstractmethod
    def _write(self, samples: Iterator[Sample], root: Path) -> dict | None:
        """Write every sample into the empty directory ``root``.

        Returns extra JSON-able manifest entries (e.g. the backend used).
        """

    # ---- reading

    def open(self, path: os.PathLike | str, *, verify: bool = False) -> Reader:
        """Open the dataset at ``path`` for reading.

        Only the manifest is read here; the format's own files are opened
        lazily on first use, once per process.

        Raises
        ------
        FileNotFoundError
            Nothing at ``path``.
        DatasetError
            ``path`` is not a complete dataset of this format.
        """
        path = Path(path)
        manifest = read_manifest(path)
        if manifest["format"] != self.name:
            raise DatasetError(path, f"is a {manifest['format']!r} dataset, not {self.name!r}")
        if manifest["format_version"] > self.version:
            raise DatasetError(
                path, f"format version {manifest['format_version']} is newer than "
                f"this reader ({self.name} v{self.version}); upgrade storebench")
        check_files(path, manifest)
        reader = self.reader(self, path, manifest, verify)
        try:
            reader.handles  # open and check the format's own files now, in this process
        except BaseException:
            reader.close()
            raise
        return reader


_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_FULL_TEXT = ("no space left", "file too large", "disk is full", "quota exceeded")


def _is_disk_full(err: BaseException) -> bool:
    """Whether a library's write error means the disk (or a size limit) is full.

    h5py, lmdb and sqlite3 each report ENOSPC/EFBIG in their own exception types.
    """
    while err is not None:
        if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
            return True
        if any(t in str(err).lower() for t in _FULL_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False


def _space_exhausted(tmp: Path, path: Path) -> bool:
    """Whether the file system or the file-size limit has run out under ``tmp``.

    Some libraries turn ENOSPC/EFBIG into a generic error (liblmdb reports EIO),
    so the writer also looks at the disk itself before it reports the failure.
    """
    try:
        st = os.statvfs(path.parent)
        if st.f_bavail * st.f_frsize < 4 << 20:
            return True
        import resource
        soft, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY:
            biggest = max((os.stat(os.path.join(r, n)).st_size
                           for r, _d, names in os.walk(tmp) for n in names), default=0)
            return biggest >= soft - min(soft // 4, 1 << 20)
    except (OSError, ImportError, ValueError):
        return False
    return False


def describe_modes(modes) -> str:
    """``uint8 (H, W), (H, W, 3); uint16 (H, W)`` for a set of (dtype, channels)."""
    parts = []
    for dt in ("uint8", "uint16"):
        shapes = ["(H, W)" if c == 0 else f"(H, W, {c})" for d, c in sorted(modes) if d == dt]
        if shapes:
            parts.append(f"{dt} {', '.join(shapes)}")
    return "; ".join(parts) or "nothing"


class _Counter:
    __slots__ = ("n",)

    def __init__(self):
        self.n = 0


def read_manifest(path: Path) -> dict:
    """Read and check ``path/storebench.json``; raise DatasetError if unusable."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise DatasetError(path, "not a storebench dataset (not a directory)")
    mpath = path / MANIFEST
    try:
        manifest = json.loads(mpath.read_bytes())
    except FileNotFoundError as err:
        raise DatasetError(path, f"not a storebench dataset (no {MANIFEST})") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise DatasetError(path, f"damaged {MANIFEST}: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("storebench") != "dataset":
        raise DatasetError(path, f"{MANIFEST} is not a storebench manifest")
    for field, typ in (("format", str), ("format_version", int), ("count", int)):
        if not isinstance(manifest.get(field), typ):
            raise DatasetError(path, f"{MANIFEST}: missing or bad {field!r}")
    if manifest["count"] < 0:
        raise DatasetError(path, f"{MANIFEST}: negative count")
    if not isinstance(manifest.get("files", {}), dict):
        raise DatasetError(path, f"{MANIFEST}: bad 'files'")
    return manifest


def _file_table(root: Path) -> dict:
    """Sizes of the dataset's top-level files, and file count and bytes per subdirectory."""
    table: dict = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name == MANIFEST:
            continue
        if entry.is_dir(follow_symlinks=False):
            nbytes, nfiles = disk_usage(entry.path)
            table[entry.name + "/"] = {"files": nfiles, "bytes": nbytes}
        else:
            table[entry.name] = entry.stat().st_size
    return table


def check_files(path: Path, manifest: dict, *, deep: bool = False) -> None:
    """Check the files the manifest lists are all there with their sizes.

    Runs before any format library sees a file, so a truncated or missing
    file is a DatasetError instead of a crash inside a C library.  ``deep``
    also counts and sizes the files in subdirectories (slow for 100k files).
    """
    for name, expect in manifest.get("files", {}).items():
        f = path / name
        if name.endswith("/"):
            if not f.is_dir():
                raise DatasetError(path, f"directory {name} is missing")
            if deep and isinstance(expect, dict):
                nbytes, nfiles = disk_usage(f)
                if (nfiles, nbytes) != (expect.get("files"), expect.get("bytes")):
                    raise DatasetError(path, f"{name} holds {nfiles} files / {nbytes} bytes, "
                                       f"expected {expect.get('files')} / {expect.get('bytes')}")
            continue
        try:
            size = f.stat().st_size
        except FileNotFoundError:
            raise DatasetError(path, f"file {name} is missing") from None
        if size != expect:
            raise DatasetError(path, f"file {name} has {size} bytes, expected {expect} (truncated or damaged)")


# --------------------------------------------------------------------------- Reader

# Readers alive in this process; after fork the child drops their handles
# (without closing them: the parent still uses the same descriptors).
_live_readers: weakref.WeakSet = weakref.WeakSet()
_inherited: list = []


def _after_fork_in_child():
    for r in list(_live_readers):
        if r._handles is not None:
            _inherited.append(r._handles)
            r._handles = None
            r._index = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Reader(ABC):
    """Read access to one dataset.

    ``len(r)``, ``r[i]`` (negative allowed), ``r.get(key)``, ``r.keys()``,
    ``r.read_batch(indices)``, ``iter(r)`` in write order, ``r.close()`` and
    ``with`` all work the same for every format.

    A reader pickles as its format (with options), path and ``verify`` flag,
    and reopens its files lazily in the process that uses it, so the same
    object works in DataLoader workers under fork, spawn and forkserver.

    Subclasses implement :meth:`_open_handles` and :meth:`_read`, and may
    override :meth:`_read_many` and :meth:`_iter` for speed.  ``self._handles``
    holds whatever ``_open_handles`` returned; ``self._index`` is for the
    subclass's index (loaded in ``_open_handles``).
    """

    def __init__(self, fmt: Format, path: Path, manifest: dict, verify: bool = False):
        self.format = fmt
        self.path = Path(path)
        self.manifest = manifest
        self.verify_reads = verify
        self._n = manifest["count"]
        self._handles = None
        self._index = None
        self._key_pos: dict[str, int] | None = None
        self._closed = False
        self._crcs: np.ndarray | None = None
        _live_readers.add(self)

    # ---- subclass hooks

    @abstractmethod
    def _open_handles(self) -> Any:
        """Open files and load the index; return the handle object(s).

        May set ``self._index``.  Raise DatasetError for damaged files.
        """

    def _close_handles(self, handles: Any) -> None:
        close = getattr(handles, "close", None)
        if close is not None:
            close()

    @abstractmethod
    def _read(self, i: int) -> Sample:
        """Return sample ``i``, ``0 <= i < len(self)``."""

    def _read_many(self, indices: np.ndarray) -> list[Sample]:
        read = self._read
        return [read(i) for i in indices.tolist()]

    def _iter(self) -> Iterator[Sample]:
        read = self._read
        for i in range(self._n):
            yield read(i)

    def _keys(self) -> list[str]:
        """All keys in write order; the default reads every sample."""
        return [s.key for s in self._iter()]

    # ---- public API

    @property
    def handles(self) -> Any:
        h = self._handles
        if h is None:
            if self._closed:
                raise ValueError(f"{self.path}: reader is closed")
            h = self._handles = self._open_handles()
        return h

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> Sample:
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"indices must be integers, got {type(i).__name__}; use get(key) for keys")
        n = self._n
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.path}: index {i} out of range for {n} samples")
        if self._handles is None:
            self.handles
        if self.verify_reads:
            return self._checked_read(int(i))
        return self._read(int(i))

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> list[Sample]:
        """Samples at ``indices``, in the order asked (I/O may be reordered)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = self._n
        if len(idx):
            idx = np.where(idx < 0, idx + n, idx)
            bad = (idx < 0) | (idx >= n)
            if bad.any():
                raise IndexError(f"{self.path}: index {int(np.asarray(indices).reshape(-1)[bad.argmax()])} "
                                 f"out of range for {n} samples")
        if self._handles is None:
            self.handles
        out = self._read_many(idx)
        if self.verify_reads:
            for i, smp in zip(idx.tolist(), out):
                self._check(i, smp)
        return out

    def __iter__(self) -> Iterator[Sample]:
        if self._handles is None:
            self.handles
        if self.verify_reads:
            return (self._check(i, smp) for i, smp in enumerate(self._iter()))
        return self._iter()

    # ---- checksums

    def _stored_crcs(self) -> np.ndarray:
        crcs = self._crcs
        if crcs is None:
            f = self.path / CHECKSUMS
            try:
                crcs = np.fromfile(f, dtype="<u4")
            except FileNotFoundError:
                raise DatasetError(self.path, f"{CHECKSUMS} is missing") from None
            if len(crcs) != self._n:
                raise DatasetError(self.path, f"{CHECKSUMS} holds {len(crcs)} checksums for {self._n} samples")
            self._crcs = crcs
        return crcs

    def _check(self, i: int, smp: Sample) -> Sample:
        if content_crc(smp, pixels=self.format.lossless) != int(self._stored_crcs()[i]):
            raise ChecksumError(self.path, f"sample {i} (key {smp.key!r}) does not match its checksum")
        return smp

    def _checked_read(self, i: int) -> Sample:
        try:
            smp = self._read(i)
        except DatasetError:
            raise
        except (ValueError, OSError, KeyError, IndexError, TypeError, EOFError) as err:
            raise DatasetError(self.path, f"sample {i} cannot be read: {type(err).__name__}: {err}") from err
        return self._check(i, smp)

    def verify(self) -> list[str]:
        """Read every sample and return the keys (or ``#position``) that are damaged.

        A sample is damaged when it cannot be read or does not match the
        checksum stored at write time.  Also checks every file's size.
        """
        check_files(self.path, self.manifest, deep=True)
        if self._handles is None:
            self.handles
        try:
            keys = self._keys()
        except (ValueError, OSError) as err:
            raise DatasetError(self.path, f"keys cannot be read: {err}") from err
        bad = []
        for i in range(self._n):
            try:
                self._checked_read(i)
            except DatasetError:
                bad.append(keys[i] if i < len(keys) else f"#{i}")
        return bad

    def keys(self) -> list[str]:
        """All keys, in write order."""
        if self._handles is None:
            self.handles
        return self._keys()

    def get(self, key: str) -> Sample:
        """The sample with ``key``; ``KeyError`` if there is none."""
        pos = self._key_pos
        if pos is None:
            pos = self._key_pos = {k: i for i, k in enumerate(self.keys())}
        try:
            i = pos[key]
        except (KeyError, TypeError):
            raise KeyError(key) from None
        return self[i]

    def __contains__(self, key) -> bool:
        try:
            self.get(key)
        except KeyError:
            return False
        return True

    def info(self) -> dict[str, Any]:
        """Format id, options, path and library choices; JSON-able."""
        return {"format": self.format.name, "id": self.format.id,
                "options": _jsonable(self.manifest.get("options", {})),
                "path": str(self.path), "count": self._n, **self.format.info()}

    def close(self) -> None:
        """Release file handles; later reads raise ``ValueError``."""
        h, self._handles, self._index = self._handles, None, None
        self._closed = True
        if h is not None:
            self._close_handles(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def __reduce__(self):
        return (_reopen, (self.format, str(self.path), self.manifest, self.verify_reads))

    def __repr__(self):
        return f"<{type(self).__name__} {self.format.id} {str(self.path)!r} n={self._n}>"


def _reopen(fmt: Format, path: str, manifest: dict, verify: bool) -> Reader:
    # No disk access here: the files open on first read in this process.
    return fmt.reader(fmt, Path(path), manifest, verify)


# --------------------------------------------------------------------------- helpers


def read_file(path: str, hint: int = 1 << 16, *, dir_fd: int | None = None) -> bytes:
    """The whole content of a small file, in as few system calls as possible.

    ``open(path, "rb").read()`` costs an fstat, two reads and a FileIO
    object; for the 1-3 KB images of one-file-per-image formats those are
    as slow as decoding.  This is ``open`` + one ``read`` of ``hint`` bytes +
    ``close`` (more reads only for files larger than ``hint``); ``dir_fd``
    saves the lookup of every directory of ``path`` but its last.
    """
    fd = os.open(path, _O_RDONLY, dir_fd=dir_fd)
    try:
        buf = os.read(fd, hint)
        if len(buf) < hint:
            return buf
        parts = [buf]
        while buf:
            buf = os.read(fd, max(hint, 1 << 20))
            parts.append(buf)
        return b"".join(parts)
    finally:
        os.close(fd)


_O_RDONLY = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def disk_usage(path: os.PathLike | str) -> tuple[int, int]:
    """(total file bytes, file count) under ``path`` (a file or a directory)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size, 1
    total = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            total += os.stat(os.path.join(root, name)).st_size
            files += 1
    return total, files


def dataset_files(path: os.PathLike | str) -> list[Path]:
    """Every file of a dataset, for cache eviction and checksums."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(Path(r) / n for r, _d, names in os.walk(path) for n in names)


def _jsonable(options: Mapping[str, Any]) -> dict:
    out = {}
    for k, v in options.items():
        out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
    return out


def _fsync_path(p: str, directory: bool = False) -> None:
    fd = os.open(p, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs(path: Path) -> bool:
    """Flush the whole file system holding ``path`` in one call (Linux)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            return libc.syncfs(fd) == 0
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        return False


def _sync_tree(root: Path) -> None:
    """Make every file under ``root`` durable before it is renamed into place.

    Few files: fsync each.  Many files (a folder of PNGs): one syncfs, because
    100k fsyncs cost minutes and measure the disk's flush latency, not the format.
    """
    files = [os.path.join(r, n) for r, _d, names in os.walk(root) for n in names]
    if len(files) > 64 and _syncfs(root):
        return
    for f in files:
        _fsync_path(f)
    for r, _d, _n in os.walk(root):
        _fsync_path(r, directory=True)


def _swap_into_place(tmp: Path, path: Path) -> None:
    """Rename the finished ``tmp`` to ``path``, replacing an old dataset there."""
    old = None
    if path.exists() or path.is_symlink():
        old = path.with_name(f".{path.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if old is not None:
            os.rename(old, path)
        raise
    _fsync_path(str(path.parent), directory=True)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_siblings(path: Path) -> None:
    """Remove temporary directories left by writers of ``path`` that died."""
    prefix_tmp, prefix_old = f".{path.name}.tmp-", f".{path.name}.old-"
    try:
        siblings = list(os.scandir(path.parent))
    except FileNotFoundError:
        return
    for entry in sorted(siblings, key=lambda e: e.name):
        for prefix in (prefix_tmp, prefix_old):
            if entry.name.startswith(prefix):
                pid_text = entry.name[len(prefix):].split("-", 1)[0]
                if pid_text.isdigit() and _pid_alive(int(pid_text)) and int(pid_text) != os.getpid():
                    continue  # another live writer's work in progress
                if prefix == prefix_old and not path.exists():
                    # A writer died between its two renames: put the old dataset back.
                    with contextlib.suppress(OSError):
                        os.rename(entry.path, path)
                        continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
