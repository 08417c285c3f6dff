"""The Reader half of the contract: pinned, thread-safe read access to one dataset.

:class:`Reader` is what :meth:`Format.open <storebench.formats.Format.open>`
returns; formats subclass it (``_open_handles``, ``_read``, optionally
``_read_many`` and ``_iter``).  It lives beside :mod:`._api` (the Format
half) and is exported from there and from :mod:`storebench.formats`.
"""
from __future__ import annotations

import contextlib
import json
import operator
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ._api import Format

from ._errors import ChecksumError, DatasetError
from ._fork import _live_readers
from ._fs import _O_DIR, read_file
from ._manifest import (
    CHECKSUMS,
    MANIFEST,
    _jsonable,
    check_files,
    content_crc,
)
from ._region import check_region, region_shape
from ._remote import Remote, check_remote_files
from ._sample import (
    Sample,
)

_REPLACED = "the dataset this reader opened was moved, deleted or written over; open it again"


class Reader(ABC):
    """Read access to one dataset.

    ``len(r)``, ``r[i]`` (negative allowed), ``r.get(key)``, ``r.keys()``,
    ``r.read_batch(indices)``, ``r.read_region(i, region)``,
    ``r.read_regions(indices, regions)``, ``iter(r)`` in write order,
    ``r.close()`` and ``with`` all work the same for every format.

    A reader pickles as its format (with options), path and ``verify`` flag,
    and reopens its files lazily in the process that uses it, so the same
    object works in DataLoader workers under fork, spawn and forkserver.

    Subclasses implement :meth:`_open_handles` and :meth:`_read`, and may
    override :meth:`_read_many` and :meth:`_iter` for speed.  A format whose
    ``partial_reads`` is true also implements :meth:`_read_region` (reading
    only what the region needs) and :meth:`_image_shape`.  ``self._handles``
    holds whatever ``_open_handles`` returned; ``self._index`` is for the
    subclass's index (loaded in ``_open_handles``).

    The dataset is pinned: before ``_open_handles`` runs, ``self._dir_fd``
    holds the dataset's directory open (its manifest checked to be the one
    this reader was opened with), and files a format opens per read, or
    lazily, open relative to it (``os.open(name, flags, dir_fd=self._dir_fd)``),
    so a path moved, retargeted or written over never hands this reader
    another dataset's files.  Files ``_open_handles`` opens by path are
    checked after it: the path must still be the pinned directory.

    A dataset in an object store (``self.remote``, a
    :class:`~storebench.formats._remote.Remote`; ``self.path`` is then that
    Remote, whose str is the URL) has no directory to hold: each process's
    first open checks that the manifest is still the one the reader was
    opened with, and formats read their objects through ``self.remote``
    (``read_bytes`` works for both).  Objects replaced while a reader reads
    them are not detected beyond that (S3 has no open handle to keep).

    A reader is safe to share between threads: the base class opens handles
    once under a lock, and ``self._lock`` serves a format whose library
    handle needs one (it is replaced in a forked child).
    """

    def __init__(self, fmt: Format, path: Path | Remote, manifest: dict, verify: bool = False):
        self.format = fmt
        #: the dataset in an object store (its Remote), or None for a local one
        self.remote: Remote | None = path if isinstance(path, Remote) else None
        self.path: Any = path if isinstance(path, Remote) else Path(path)
        self.manifest = manifest
        self.verify_reads = verify
        self._n = manifest["count"]
        self._handles: Any = None  # what _open_handles returned, None until then (and after fork)
        self._index: Any = None  # the subclass's index, set by _open_handles
        self._key_pos: dict[str, int] | None = None
        self._closed = False
        self._crcs: np.ndarray | None = None
        self._dir_fd: int | None = None  # the dataset's directory, held from the first open (kept across fork)
        self._open_lock = threading.Lock()  # one thread opens the handles
        self._lock = threading.Lock()  # for formats whose library handle is not thread-safe
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

    def _image_shape(self, i: int) -> tuple[int, ...] | None:
        """The shape of image ``i`` without reading it, or None where only a read tells.

        The default takes it from ``self._index.image_shape`` where the index has one.
        """
        shapes = getattr(self._index, "image_shape", None)
        return None if shapes is None else tuple(shapes[i])

    def _read_region(self, i: int, region: tuple[slice, ...]) -> np.ndarray:
        """``image[region]`` of sample ``i``; ``region`` is checked (int bounds, step 1).

        The default reads the whole sample and slices it; formats with
        ``partial_reads`` read only the bytes the region overlaps.
        """
        return self._read(i).image[region]

    def _read_regions(self, indices: list[int], regions: list[tuple[slice, ...]]) -> list[np.ndarray]:
        read = self._read_region
        return [read(i, r) for i, r in zip(indices, regions)]

    def _keys(self) -> list[str]:
        """All keys in write order: the index's key list where ``self._index`` has one, else
        read from every sample."""
        keys = getattr(self._index, "keys", None)
        if isinstance(keys, list):
            return list(keys)
        return [s.key for s in self._iter()]

    # ---- public API

    @property
    def handles(self) -> Any:
        h = self._handles
        if h is None:
            with self._open_lock:  # two threads' first reads open the files once
                h = self._handles
                if h is None:
                    if self._closed:
                        raise ValueError(f"{self.path}: reader is closed")
                    if self.remote is None:
                        self._pin()
                    else:  # an object store has no directory to hold: the manifest must still be this one
                        self._check_remote_manifest()
                    h = self._open_handles()
                    if self.remote is None:
                        self._check_pinned(h)
                    self._handles = h  # last: other threads read only once everything is set
        return h

    def _pin(self) -> None:
        """Hold the dataset's directory open, checking it is the dataset this reader was opened on."""
        if self._dir_fd is not None:  # held since this reader's first open (in a forked child: inherited)
            return
        try:
            fd = os.open(self.path, _O_DIR)
        except OSError as err:
            raise DatasetError(self.path, f"{_REPLACED} ({err.strerror})") from err
        try:
            same = json.loads(read_file(MANIFEST, dir_fd=fd)) == self.manifest
        except (OSError, ValueError):
            same = False
        if not same:
            os.close(fd)
            raise DatasetError(self.path, f"{_REPLACED} (its {MANIFEST} differs)")
        self._dir_fd = fd

    def _check_remote_manifest(self) -> None:
        assert self.remote is not None
        try:
            raw = self.remote.read_bytes(MANIFEST)
            same = json.loads(raw) == self.manifest
        except FileNotFoundError:
            same = False
        except ValueError:
            same = False
        if not same:
            raise DatasetError(self.path, f"{_REPLACED} (its {MANIFEST} differs or is gone)")

    def _check_pinned(self, handles: Any) -> None:
        # Files _open_handles opened by path are the pinned dataset's only if the path still
        # names the pinned directory now (a dataset moved away never comes back).
        fd = self._dir_fd
        try:
            same = fd is not None and os.path.samestat(os.stat(self.path), os.fstat(fd))
        except OSError:
            same = False
        if not same:
            self._close_handles(handles)
            raise DatasetError(self.path, f"{_REPLACED} (while its files were being opened)")

    def _unpin(self) -> None:
        fd, self._dir_fd = self._dir_fd, None
        if fd is not None:
            os.close(fd)

    def read_bytes(self, name: str) -> bytes:
        """The whole content of file ``name`` of the pinned dataset (``images/0.png``).

        Opened relative to the directory this reader pinned, so a moved or
        overwritten path never hands it another dataset's file; for formats
        (and plug-ins) that open a file per read.  OSErrors pass through
        (``FileNotFoundError``, ``PermissionError``): the caller says what is
        damaged and what is merely unreadable.
        """
        if self.remote is not None:  # one GET of the whole object
            return self.remote.read_bytes(name)
        if self._dir_fd is None:
            self.handles  # pins the directory (and opens the format's handles) in this process
        return read_file(name, dir_fd=self._dir_fd)

    def __len__(self) -> int:
        return self._n

    def _position(self, i) -> int:
        """``i`` as a position ``0 <= i < len(self)`` (negative counts from the end), with the
        handles open in this process; TypeError for a non-integer, IndexError out of range."""
        if type(i) is not int:
            i = _as_index(i)
        n = self._n
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.path}: index {i} out of range for {n} samples")
        if self._handles is None:
            self.handles
        return i

    def __getitem__(self, i: int) -> Sample:
        i = self._position(i)
        if self.verify_reads:
            return self._checked_read(i)
        return self._read(i)

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> list[Sample]:
        """Samples at ``indices``, in the order asked (I/O may be reordered).

        ``indices`` are integers (Python ints or an integer array), negative
        counting from the end; floats, bools and bool masks are a TypeError.
        """
        asked = _index_array(indices, self.path)
        n = self._n
        idx = asked
        if len(idx):
            idx = np.where(idx < 0, idx + n, idx)
            bad = (idx < 0) | (idx >= n)
            if bad.any():
                raise IndexError(f"{self.path}: index {asked[bad.argmax()]} out of range for {n} samples")
        if self._handles is None:
            self.handles
        if not self.verify_reads:
            return self._read_many(idx)
        with self._damage_as_dataset_error(f"samples {idx[:4].tolist()}{'...' if len(idx) > 4 else ''}"):
            out = self._read_many(idx)
        for i, smp in zip(idx.tolist(), out):
            self._check(i, smp)
        return out

    def read_region(self, i: int, region: tuple[slice, ...]) -> np.ndarray:
        """``self[i].image[region]``: the pixels of one region of sample ``i``.

        ``region`` is a tuple of slices, one per spatial axis: ``(rows, cols)``
        for an image, ``(depth, rows, cols)`` for a volume; the channels are
        always whole.  The result has the dtype, shape and bytes NumPy's
        slicing gives, as a new C-contiguous, writable array that holds no
        reference to the rest of the image.  Formats whose ``partial_reads``
        is true read only the chunks, tiles or pages the region overlaps;
        the others read the whole sample.  With ``verify=True`` every read is
        of the whole sample, checked against its checksum, then sliced.

        Raises
        ------
        IndexError
            ``i`` out of range.
        RegionError
            (an IndexError) a wrong number of slices, a step other than 1, or
            bounds outside the image; it names the sample and the region.
        """
        i = self._position(i)
        if self.verify_reads or not self.format.partial_reads:
            return self._whole_region(i, region)
        shp = self._image_shape(i)
        if shp is None:
            return self._whole_region(i, region)
        checked = check_region(shp, region, f"{self.path}: sample {i}")
        return self._region_out(i, self._read_region(i, checked), region_shape(shp, checked))

    def read_regions(self, indices: Sequence[int] | np.ndarray,
                     regions: Sequence[tuple[slice, ...]]) -> list[np.ndarray]:
        """``[read_region(i, r) for i, r in zip(indices, regions)]``, with I/O batched where a
        format can; every region is checked before anything is read."""
        asked = _index_array(indices, self.path)
        regions = list(regions)
        if len(regions) != len(asked):
            raise ValueError(f"{self.path}: {len(asked)} indices but {len(regions)} regions")
        n = self._n
        idx = np.where(asked < 0, asked + n, asked) if len(asked) else asked
        bad = (idx < 0) | (idx >= n)
        if bad.any():
            raise IndexError(f"{self.path}: index {asked[bad.argmax()]} out of range for {n} samples")
        if self._handles is None:
            self.handles
        ii = idx.tolist()
        if self.verify_reads or not self.format.partial_reads:
            return [self._whole_region(i, r) for i, r in zip(ii, regions)]
        shape = self._image_shape
        checked, shapes = [], []
        for i, r in zip(ii, regions):
            shp = shape(i)
            if shp is None:  # only a read tells: read it whole
                return [self._whole_region(i, r) for i, r in zip(ii, regions)]
            checked.append(check_region(shp, r, f"{self.path}: sample {i}"))
            shapes.append(region_shape(shp, checked[-1]))
        out = self._read_regions(ii, checked)
        region_out = self._region_out
        return [region_out(i, arr, want) for i, arr, want in zip(ii, out, shapes)]

    def _region_out(self, i: int, arr: np.ndarray, want: tuple[int, ...]) -> np.ndarray:
        if arr.shape != want:
            raise DatasetError(self.path, f"sample {i}: region read {arr.shape}, expected {want}")
        if arr.base is not None or not (arr.flags.c_contiguous and arr.flags.writeable):
            return np.array(arr, order="C")
        return arr

    def _whole_region(self, i: int, region) -> np.ndarray:
        smp = self._checked_read(i) if self.verify_reads else self._read(i)
        r = check_region(smp.image.shape, region, f"{self.path}: sample {i}")
        return np.array(smp.image[r], order="C")

    def __iter__(self) -> Iterator[Sample]:
        if self._handles is None:
            self.handles
        return self._open_iter(self._checked_iter() if self.verify_reads else self._iter())

    def _open_iter(self, it: Iterator[Sample]) -> Iterator[Sample]:
        # Each step checks the reader is still open first: an iterator made before
        # close() and resumed after it would otherwise read through released handles.
        if self._closed:
            raise ValueError(f"{self.path}: reader is closed")
        for smp in it:
            yield smp
            if self._closed:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
                raise ValueError(f"{self.path}: reader is closed")

    def _checked_iter(self) -> Iterator[Sample]:
        it, i = self._iter(), 0
        while True:
            with self._damage_as_dataset_error(f"sample {i} (in a scan)"):
                smp = next(it, None)
            if smp is None:
                return
            yield self._check(i, smp)
            i += 1

    # ---- checksums

    def _stored_crcs(self) -> np.ndarray:
        crcs = self._crcs
        if crcs is None:
            try:  # from the pinned dataset, not whatever is at the path now
                raw = self.read_bytes(CHECKSUMS)
                crcs = np.frombuffer(raw, "<u4", len(raw) // 4)
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

    @contextlib.contextmanager
    def _damage_as_dataset_error(self, what: str) -> Iterator[None]:
        """Under ``verify``, a library's error on damaged bytes becomes a DatasetError naming ``what``."""
        try:
            yield
        except DatasetError:
            raise
        except (ValueError, OSError, KeyError, IndexError, TypeError, EOFError) as err:
            raise DatasetError(self.path, f"{what} cannot be read: {type(err).__name__}: {err}") from err

    def _checked_read(self, i: int) -> Sample:
        with self._damage_as_dataset_error(f"sample {i}"):
            smp = self._read(i)
        return self._check(i, smp)

    def verify(self) -> list[str]:
        """Read every sample and return the keys (or ``#position``) that are damaged.

        A sample is damaged when it cannot be read, does not match the
        checksum stored at write time, or is not under the key ``keys()``
        gives for its position.  Also checks every file's size.
        """
        if self._closed:
            raise ValueError(f"{self.path}: reader is closed")
        if self.remote is not None:
            check_remote_files(self.remote, self.manifest)
        else:
            check_files(self.path, self.manifest, deep=True)
        if self._handles is None:
            self.handles
        with self._damage_as_dataset_error("the keys"):
            keys = self._keys()
        if len(keys) != self._n:
            raise DatasetError(self.path, f"{len(keys)} keys for {self._n} samples")
        bad = []
        for i in range(self._n):
            try:
                smp = self._checked_read(i)
            except DatasetError:
                bad.append(keys[i])
                continue
            if smp.key != keys[i]:  # a key list kept apart from the samples (tfrecord's keys.json)
                bad.append(keys[i])
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
        self._unpin()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def __reduce__(self):
        path = self.remote if self.remote is not None else str(self.path)
        return (_reopen, (self.format, path, self.manifest, self.verify_reads))

    def __repr__(self):
        return f"<{type(self).__name__} {self.format.id} {str(self.path)!r} n={self._n}>"


def _as_index(i: Any) -> int:
    """``i`` as a sample position: ints and NumPy integers; bools, floats, keys are a TypeError."""
    if isinstance(i, (bool, np.bool_)):
        raise TypeError(f"indices must be integers, got bool {i!r}")
    try:
        return operator.index(i)
    except TypeError:
        raise TypeError(f"indices must be integers, got {type(i).__name__} {i!r:.40}; "
                        f"use get(key) for keys") from None


_INT64_MAX = np.iinfo(np.int64).max


def _index_array(indices: Any, path: Path) -> np.ndarray:
    """``indices`` as a flat int64 array, checked on the dtype, not per element (the
    benchmark path): a list of bools is a bool array, refused; NumPy makes ``[1, True]`` int."""
    if isinstance(indices, np.ndarray):
        arr = indices
    else:
        if isinstance(indices, (str, bytes)) or not isinstance(indices, Iterable):
            raise TypeError(f"indices must be a sequence of integers, got {type(indices).__name__}")
        try:
            arr = np.asarray(indices if isinstance(indices, Sequence) else list(indices))
        except OverflowError:  # Python ints past int64: checked one by one below
            arr = np.asarray(indices, object)
        except ValueError as err:
            raise TypeError(f"indices must be a flat sequence of integers: {err}") from None
    kind = arr.dtype.kind
    if kind == "i" or kind == "u" and arr.dtype.itemsize < 8:
        return arr.astype(np.int64, copy=False).reshape(-1)
    if kind == "u" or kind == "O":  # uint64 past int64, Python ints past int64: out of range, not wrapped
        flat = [_as_index(x) for x in arr.reshape(-1).tolist()]
        for x in flat:
            if not -_INT64_MAX <= x <= _INT64_MAX:
                raise IndexError(f"{path}: index {x} out of range")
        return np.asarray(flat, np.int64)
    if arr.size == 0 and kind == "f":
        return np.zeros(0, np.int64)  # np.asarray([]) is float64
    what = "a bool mask" if kind == "b" else f"an array of {arr.dtype}"
    raise TypeError(f"indices must be integers, got {what}; use np.flatnonzero(mask) for a mask")


def _reopen(fmt: Format, path: str | Remote, manifest: dict, verify: bool) -> Reader:
    # No disk access here: the files open on first read in this process.
    return fmt.reader(fmt, path if isinstance(path, Remote) else Path(path), manifest, verify)
