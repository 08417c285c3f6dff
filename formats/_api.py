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
import functools
import inspect
import json
import operator
import os
import shutil
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ._atomic import (
    _is_disk_full,
    _space_exhausted,
    _swap_into_place,
    _sync_tree,
    start_write,
)
from ._errors import ChecksumError, DatasetError
from ._fork import _live_readers
from ._fs import dataset_files, disk_usage, read_file
from ._manifest import (
    CHECKSUM_KIND,
    CHECKSUMS,
    MANIFEST,
    _file_table,
    _jsonable,
    check_files,
    content_crc,
    read_manifest,
)
from ._sample import (
    _NO_BOXES,
    _NO_LABELS,
    ALL_MODES,
    NO_BOXES,
    NO_LABELS,
    Sample,
    _sample,
    describe_modes,
    make_sample,
)

__all__ = [
    "ALL_MODES",
    "CHECKSUMS",
    "CHECKSUM_KIND",
    "MANIFEST",
    "NO_BOXES",
    "NO_LABELS",
    "ChecksumError",
    "DatasetError",
    "Format",
    "Reader",
    "Sample",
    "WriteReport",
    "check_files",
    "content_crc",
    "dataset_files",
    "describe_modes",
    "disk_usage",
    "make_sample",
    "read_file",
    "read_manifest",
    # internal names the format modules share
    "_NO_BOXES",
    "_NO_LABELS",
    "_sample",
]

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


def option_id(name: str, defaults: dict[str, Any], options: dict[str, Any]) -> str:
    """The id of format ``name`` with ``options`` (see :attr:`Format.id`)."""
    parts = []
    for pos, (k, d) in enumerate(defaults.items()):
        v = options.get(k, d)
        if v != d:
            parts.append(str(v) if pos == 0 else f"{k}={v}")
    return f"{name}[{','.join(parts)}]" if parts else name


def _option_type_error(name: str, value: Any, default: Any) -> str | None:
    """Why ``value`` cannot stand for an option whose default is ``default`` (None if it can).

    ``True`` is an int to Python, never to an option: ``row_group_size=true``
    on a command line must not mean 1.
    """
    if default is None or value is None and default is None:
        return None
    kind = type(default)
    if kind is bool:
        ok = isinstance(value, (bool, np.bool_))
    elif kind is int:
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    elif kind is float:
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    elif kind is str:
        ok = isinstance(value, str)
    else:
        return None
    if ok:
        return None
    return f"{name}: must be {kind.__name__} like its default {default!r}, got {type(value).__name__} {value!r}"


def _checking_option_types(init):
    """Wrap a format's ``__init__`` so an option of the wrong type is a ValueError naming it."""
    sig = inspect.signature(init)

    @functools.wraps(init)
    def checked(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        for name, value in list(bound.arguments.items())[1:]:
            param = sig.parameters[name]
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.default is param.empty:
                continue
            why = _option_type_error(name, value, param.default)
            if why:
                raise ValueError(f"{type(self).__name__}: {why}")
        init(self, *args, **kwargs)

    checked._checks_option_types = True
    return checked


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
        Whether ``r[i]`` avoids reading and decoding other samples (false
        where a read decodes a whole row group or compressed chunk); may be a
        property where an option decides it.
    executes_code : bool
        Whether reading unpickles Python objects, so that a malicious dataset
        can run code: such datasets must only be opened when trusted.
    bench_variants : tuple of dict
        Option sets the benchmark suite sweeps, as constructor kwargs.
    image_codec : str
        How the stored images are encoded: ``"raw"`` (the pixels themselves,
        perhaps inside a container's compression such as gzip or zstd),
        ``"png"``, ``"jpeg"`` or ``"dicom"`` (DICOM files); a plug-in may name
        another.  A property where an option decides it (zip's ``encoding``).
        Not ``codec``: zarr's option of that name picks its compressor.
    libraries : tuple of str
        Distributions whose versions matter for this format's figures; the
        benchmark's machine info records them (see :meth:`library_versions`).
    max_image_pixels : int or None
        Pixels (height x width) per image above which the format could not
        read the image back (png, zip's PNG members and tar's: Pillow's
        decompression-bomb limit, ``PIL.Image.MAX_IMAGE_PIXELS``, read when
        asked); such an image is refused on write with a ``ValueError``
        naming its key and the limit.  None: no limit.
    max_image_side : int or None
        The same for an image's height or width (dicom: 65535, as Rows and
        Columns are 16-bit).
    bound : storebench.formats._bound.Bound
        The bound row this format is measured against: the bare use of its
        own library producing the same Samples.  The default comes from
        ``image_codec``: ``decode-only[<id>]`` for ``"png"`` and ``"jpeg"``,
        ``floor`` otherwise (see :mod:`storebench.formats._bound`).  A format
        overrides it with a property: ``return Bound("bare-lmdb", bare_lmdb)``.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    lossless: ClassVar[bool] = True
    modes: frozenset = ALL_MODES  # an instance may narrow or widen it (zip's encoding)
    random_access: ClassVar[bool] = True
    executes_code: ClassVar[bool] = False
    bench_variants: ClassVar[tuple[dict, ...]] = ({},)
    image_codec: ClassVar[str] = "raw"
    max_image_pixels: int | None = None  # a property where a library setting decides it (png)
    max_image_side: int | None = None
    libraries: ClassVar[tuple[str, ...]] = ()
    reader: ClassVar[type[Reader]]

    @property
    def bound(self):
        """The :class:`~storebench.formats._bound.Bound` of this format (default: by ``image_codec``)."""
        from ._bound import default_bound
        return default_bound(self)

    @classmethod
    def library_versions(cls) -> dict[str, str]:
        """Installed versions of ``libraries`` (missing ones left out); native libraries may add theirs."""
        from importlib import metadata

        out = {}
        for dist in cls.libraries:
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        return out

    # ---- options and identity

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_checks_option_types", False):
            cls.__init__ = _checking_option_types(init)

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
        """Stable readable id, unique per option set: ``hdf5``, ``hdf5[lzf]``, ``hdf5[gzip,level=4]``.

        The non-default options in constructor order; the first constructor
        option (a format's main choice: compression, quality, ...) shows its
        value alone, every other one ``name=value``, so two option sets never
        share an id.  Ids of storebench 0.1 (``hdf5[gzip-4]``) are mapped to
        these by :func:`storebench.formats.canonical_id`.
        """
        return option_id(self.name, self._option_defaults(), self.options)

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

        Creation is atomic against other writers, threads and processes alike:
        the final check of what is at ``path`` and the rename happen under an
        exclusive lock on ``.NAME.lock`` beside it.  Of two writers to one new
        path with ``overwrite=False`` exactly one succeeds; with
        ``overwrite=True`` the result is one writer's whole dataset.  Each
        writer's temporary directory is guarded by a lock it holds for its whole
        life, and a later write removes it only once that lock is free.

        ``overwrite=True`` replaces only a storebench dataset (a directory with a
        valid ``storebench.json``, of any format) or nothing.  A file, a
        directory without a manifest, or a symbolic link (even to a dataset:
        replacing the link would retarget it, replacing its target would write
        outside ``path``) is refused and left untouched.

        Raises
        ------
        FileExistsError
            ``path`` exists and ``overwrite`` is false, or ``overwrite`` is true
            and ``path`` is not a storebench dataset; the message names ``path``.
        ValueError
            A duplicate key (named), a Sample mode the format cannot store, or
            an item that is not a Sample.
        """
        path = Path(path)
        if path.name in ("", ".", ".."):
            raise ValueError(f"{str(path)!r}: names no new directory (its last part is {path.name!r})")
        path.parent.mkdir(parents=True, exist_ok=True)
        claim = start_write(path, overwrite=overwrite)
        tmp = claim.path
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
                "generation": os.urandom(8).hex(),  # tells readers this dataset from one written over it
                "files": _file_table(tmp),
                **extra,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            _sync_tree(tmp)
            nbytes, nfiles = disk_usage(tmp)  # before the rename: another writer may replace path at once
            _swap_into_place(tmp, path, overwrite=overwrite)
        except BaseException as err:
            exhausted = isinstance(err, Exception) and _space_exhausted(tmp, path)
            shutil.rmtree(tmp, ignore_errors=True)
            if exhausted or _is_disk_full(err):
                raise OSError(errno.ENOSPC, f"{path}: {os.strerror(errno.ENOSPC)} for the dataset "
                              f"({type(err).__name__}: {err}); nothing was written") from err
            raise
        finally:
            claim.release()
        return WriteReport(str(path), counter.n, nbytes, nfiles)

    def _checked(self, samples: Iterable[Sample], counter: _Counter, crc_file) -> Iterator[Sample]:
        seen: set[str] = set()
        modes = self.modes
        lossless = self.lossless
        max_pixels, max_side = self.max_image_pixels, self.max_image_side
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
            if max_pixels is not None or max_side is not None:
                _check_image_size(self, s, max_pixels, max_side)
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

        ``path`` is made absolute once (a later ``os.chdir`` changes nothing)
        and the dataset's directory is held open: the reader keeps reading the
        dataset it opened when the path is later moved, retargeted or written
        over, or raises a DatasetError; never another dataset's samples.  In a
        process that unpickles the reader (a worker), the files open there
        again, and a dataset that is no longer the one opened is a DatasetError.

        Raises
        ------
        FileNotFoundError
            Nothing at ``path``.
        DatasetError
            ``path`` is not a complete dataset of this format.
        """
        path = Path(os.path.abspath(path))
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



def _check_image_size(fmt: Format, s: Sample, max_pixels: int | None, max_side: int | None) -> None:
    h, w = s.image.shape[:2]
    if max_pixels is not None and h * w > max_pixels:
        raise ValueError(f"image of key {s.key!r}: {h}x{w} is {h * w} pixels, over the {max_pixels} "
                         f"pixels per image that {fmt.name} can read back (its max_image_pixels)")
    if max_side is not None and max(h, w) > max_side:
        raise ValueError(f"image of key {s.key!r}: {h}x{w} has a side over {max_side} pixels, "
                         f"the most {fmt.name} can store (its max_image_side)")


_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_REPLACED = "the dataset this reader opened was moved, deleted or written over; open it again"


class _Counter:
    __slots__ = ("n",)

    def __init__(self):
        self.n = 0



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

    The dataset is pinned: before ``_open_handles`` runs, ``self._dir_fd``
    holds the dataset's directory open (its manifest checked to be the one
    this reader was opened with), and files a format opens per read, or
    lazily, open relative to it (``os.open(name, flags, dir_fd=self._dir_fd)``),
    so a path moved, retargeted or written over never hands this reader
    another dataset's files.  Files ``_open_handles`` opens by path are
    checked after it: the path must still be the pinned directory.

    A reader is safe to share between threads: the base class opens handles
    once under a lock, and ``self._lock`` serves a format whose library
    handle needs one (it is replaced in a forked child).
    """

    def __init__(self, fmt: Format, path: Path, manifest: dict, verify: bool = False):
        self.format = fmt
        self.path = Path(path)
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
                    self._pin()
                    h = self._open_handles()
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
        if self._dir_fd is None:
            self.handles  # pins the directory (and opens the format's handles) in this process
        return read_file(name, dir_fd=self._dir_fd)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> Sample:
        if type(i) is not int:
            i = _as_index(i)
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
            if self._dir_fd is None:
                self.handles  # pins the dataset
            try:  # from the pinned dataset, not whatever is at the path now
                raw = read_file(CHECKSUMS, dir_fd=self._dir_fd)
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
        return (_reopen, (self.format, str(self.path), self.manifest, self.verify_reads))

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


def _reopen(fmt: Format, path: str, manifest: dict, verify: bool) -> Reader:
    # No disk access here: the files open on first read in this process.
    return fmt.reader(fmt, Path(path), manifest, verify)


