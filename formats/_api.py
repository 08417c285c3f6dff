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

import errno
import inspect
import json
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

from ._atomic import (
    _is_disk_full,
    _space_exhausted,
    _swap_into_place,
    _sync_tree,
    start_write,
)
from ._errors import ChecksumError, DatasetError, LocalOnlyError
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
    read_remote_manifest,
)
from ._options import _checking_option_types, option_id
from ._reader import Reader
from ._remote import Remote, check_remote_files, is_remote
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
    modes : frozenset of (dtype, channels) and (dtype, channels, "volume")
        Image kinds the format stores; anything else is refused on write with
        a ``ValueError``.  Channels 0 means a 2-D ``(H, W)`` image; a volume's
        mode is ``(dtype, C, "volume")`` for a ``(D, H, W, C)`` array.  The
        default, :data:`ALL_MODES`, is every dtype (uint8, uint16, int16,
        float32) as image and volume: what a format storing raw arrays keeps.
        A dataset holds 2-D images or volumes, never both.
    partial_reads : bool
        Whether ``read_region`` reads only the chunks, tiles or pages a region
        overlaps (the format implements ``Reader._read_region`` and
        ``_image_shape``); false means it reads the whole sample and slices
        it.  May be a property where an option decides it (hdf5's layout).
    random_access : bool
        Whether ``r[i]`` avoids reading and decoding other samples (false
        where a read decodes a whole row group or compressed chunk); may be a
        property where an option decides it.
    fixed_shape : bool
        Whether every sample of a dataset has the first sample's image shape
        and dtype (the format stores them as one array, as hdf5's
        ``layout="stack"``); another is refused on write with a ``ValueError``
        naming its key.  The conformance suite then writes datasets of one
        shape and dtype only, and the benchmark suite skips presets whose
        images vary.  Default false; may be a property where an option
        decides it.
    fork_safe : bool
        Whether a reader works in a process forked from one that has already
        read through it (DataLoader's default ``fork`` workers); false where
        the library's threads do not survive fork (tensorstore), and then
        such a read raises a RuntimeError saying to use spawn or forkserver.
        The benchmark suite runs such formats' loader rows with spawn only.
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
    native_loader_name : str or None
        The training loader of the format's own library, when it has one
        (``"webdataset.WebDataset"``, ``"litdata.StreamingDataLoader"``, ...):
        the format then implements :meth:`native_loader`, which the
        conformance suite checks (every sample once, pixel-exact, shuffled)
        and the benchmark suite times beside storebench's DataLoader rows.
        None (the default): no such loader.
    remote_reads : str or None
        How the format reads a dataset in an object store (``s3://``), when
        it can: ``"ranges"`` (byte ranges of a few large objects: only what a
        read needs), ``"objects"`` (one whole object per sample), ``"shards"``
        (whole shards, fetched to local disk and read there).  None (the
        default): it needs local files, and ``local_only`` says why (an
        ``open`` of an ``s3://`` URL raises :class:`LocalOnlyError` with it).
    local_only : str
        Why the format cannot read from an object store (when
        ``remote_reads`` is None).
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
    partial_reads: ClassVar[bool] = False
    fixed_shape: ClassVar[bool] = False
    fork_safe: ClassVar[bool] = True
    executes_code: ClassVar[bool] = False
    bench_variants: ClassVar[tuple[dict, ...]] = ({},)
    image_codec: ClassVar[str] = "raw"
    max_image_pixels: int | None = None  # a property where a library setting decides it (png)
    max_image_side: int | None = None
    libraries: ClassVar[tuple[str, ...]] = ()
    native_loader_name: ClassVar[str | None] = None
    remote_reads: str | None = None  # a property where an option decides it (zarr's engine)
    local_only: str = "the format does not declare reads from an object store"
    reader: ClassVar[type[Reader]]

    @property
    def bound(self):
        """The :class:`~storebench.formats._bound.Bound` of this format (default: by ``image_codec``)."""
        from ._bound import default_bound
        return default_bound(self)

    def native_loader(self, path: os.PathLike | str, *, batch_size: int, workers: int,
                      seed: int) -> Iterable[dict]:
        """One shuffled epoch of the dataset at ``path`` through the library's own loader.

        What a user of the format's library writes instead of storebench's
        Reader: the library reads its own files (never through
        :meth:`open`), shuffles with its own mechanism, seeded by ``seed``,
        and runs ``workers`` worker processes of its own kind (0: in this
        process).  Iterating the result yields batches of ``batch_size``
        (the last may be smaller) as :func:`storebench.workloads.collate`
        makes them: ``"key"`` a list of str, ``"label"`` an int64 tensor,
        ``"image"`` a uint8 (or the stored dtype) tensor stacked to
        ``(B, ...)`` when the batch's images share a shape, else a list of
        tensors.  Needs PyTorch.  Every call makes a new loader (workers
        start when it is iterated).

        Raises
        ------
        NotImplementedError
            The format has no native loader (``native_loader_name`` is None).
        """
        raise NotImplementedError(f"{self.name} has no native loader (its native_loader_name is None)")

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
            A duplicate key (named), a Sample mode the format cannot store, a
            volume among 2-D images or the other way round, or an item that
            is not a Sample.
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
        volumes = None
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
            if volumes is None:
                volumes = s.image.ndim == 4
            elif volumes != (s.image.ndim == 4):
                raise ValueError(
                    f"image of key {s.key!r}: a {'2-D image' if volumes else 'volume'} of shape "
                    f"{s.image.shape} among {'volumes' if volumes else '2-D images'}; a dataset holds one "
                    "kind or the other")
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

    def open(self, path: os.PathLike | str | Remote, *, verify: bool = False,
             storage_options: dict[str, Any] | None = None) -> Reader:
        """Open the dataset at ``path`` for reading.

        ``path`` may be an ``s3://bucket/prefix`` URL (or a
        :class:`~storebench.formats._remote.Remote`) of a dataset uploaded as
        it is, with ``storage_options`` to reach it (``endpoint_url``,
        ``key``, ``secret``, ``region``, ``retries``), for formats whose
        ``remote_reads`` is set; the others raise :class:`LocalOnlyError`.

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
        LocalOnlyError
            (a DatasetError) ``path`` is in an object store and the format
            reads local files only.
        """
        if isinstance(path, Remote) or is_remote(path):
            return self._open_remote(cast("str | Remote", path), verify, storage_options)
        if storage_options:
            raise ValueError(f"{path}: storage_options are for s3:// URLs, not a local path")
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

    def _open_remote(self, path: str | Remote, verify: bool, storage_options: dict[str, Any] | None) -> Reader:
        remote = path if isinstance(path, Remote) else Remote(path, storage_options)
        if isinstance(path, Remote) and storage_options:
            raise ValueError(f"{path}: pass storage_options to Remote or to open, not both")
        if self.remote_reads is None:
            raise LocalOnlyError(remote, f"{self.id} reads local files only: {self.local_only}")
        manifest = read_remote_manifest(remote)
        if manifest["format"] != self.name:
            raise DatasetError(remote, f"is a {manifest['format']!r} dataset, not {self.name!r}")
        if manifest["format_version"] > self.version:
            raise DatasetError(remote, f"format version {manifest['format_version']} is newer than "
                               f"this reader ({self.name} v{self.version}); upgrade storebench")
        check_remote_files(remote, manifest)
        reader = self.reader(self, remote, manifest, verify)
        try:
            reader.handles
        except BaseException:
            reader.close()
            raise
        return reader


def _check_image_size(fmt: Format, s: Sample, max_pixels: int | None, max_side: int | None) -> None:
    # Per 2-D image or per slice of a volume: the limits are those of one frame.
    h, w = s.image.shape[1:3] if s.image.ndim == 4 else s.image.shape[:2]
    if max_pixels is not None and h * w > max_pixels:
        raise ValueError(f"image of key {s.key!r}: {h}x{w} is {h * w} pixels, over the {max_pixels} "
                         f"pixels per image that {fmt.name} can read back (its max_image_pixels)")
    if max_side is not None and max(h, w) > max_side:
        raise ValueError(f"image of key {s.key!r}: {h}x{w} has a side over {max_side} pixels, "
                         f"the most {fmt.name} can store (its max_image_side)")


class _Counter:
    __slots__ = ("n",)

    def __init__(self):
        self.n = 0
