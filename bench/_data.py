"""Benchmark datasets, generated once and cached on disk.

Layout under the data dir::

    sources/cifar-s0-p1-n1000/              the generated samples, as an npy dataset
    sources/cifar-s0-p1-n1000.json          its sidecar: key, checksum, modes, raw bytes
    cifar-s0-p1/n1000/hdf5_gzip_level_4_-v1-3f2a.../   one format's copy of that source
    cifar-s0-p1/n1000/hdf5_gzip_level_4_-v1-3f2a....json

A cached dataset is keyed by everything that decides its bytes: format name,
options and on-disk version, preset, ``fixtures.PRESET_VERSION``, n and seed.
The directory name carries the readable id and a hash of the key; the sidecar
holds the key, and a dataset is reused only when its sidecar matches.  Formats
write atomically, and the sidecar is written (atomically) last, after the
dataset has been read back and checksummed, so an interrupted build is
simply rebuilt.  Lossless formats must read back the source's checksum.
Once per session a reused dataset is also checked cheaply (length, keys,
first and last sample) and rebuilt if it no longer reads as it did: formats
under development change their layout without bumping their version.
Your own data (``--preset folder:PATH`` or ``cifar10:PATH``) is read in
sorted order, the first n images, and keyed also by its files' names, sizes
and mtimes, so editing the folder rebuilds its datasets.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path

import numpy as np

from storebench import fixtures, formats
from storebench.fixtures.folder import is_user_preset, user_fingerprint, user_samples
from storebench.formats import Format, Sample, WriteReport, dataset_files, describe_modes
from storebench.formats._atomic import pid_alive, write_json_atomic
from storebench.progress import quiet

#: Sources up to this many raw pixel bytes are held in memory while a write is timed;
#: larger ones stream from their memory map (a 100k list of Samples is not allowed).
WRITE_SOURCE_BUDGET = 64 << 20
SIDECAR_VERSION = 2


class Unsupported(Exception):
    """The format cannot store this preset's images; the benchmark is skipped."""


def jsonable(options: dict) -> dict:
    return {k: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
            for k, v in options.items()}


def _scratch_name(pid: int) -> str:
    return f"{slug(socket.gethostname()) or 'host'}-{pid}"



def slug(text: str) -> str:
    """A file-name-safe version of a format id: ``hdf5[gzip,level=4]`` -> ``hdf5_gzip_level_4_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


@functools.cache
def _user_data(preset: str) -> str:
    return user_fingerprint(preset)  # once per session: it stats every file of the folder


def dataset_key(fmt: Format, preset: str, n: int, seed: int) -> dict:
    """Everything that decides a cached dataset's bytes; for your own data, its files' stats too."""
    key = {"format": fmt.name, "id": fmt.id, "options": jsonable(fmt.options),
           "format_version": fmt.version, "preset": preset,
           "preset_version": fixtures.PRESET_VERSION, "n": n, "seed": seed}
    if is_user_preset(preset):
        key["user_data"] = _user_data(preset)
    return key


def preset_dir(preset: str) -> str:
    """A directory name for a preset: ``folder:/data/xrays`` -> ``folder-xrays-1a2b3c4d``."""
    if not is_user_preset(preset):
        return preset
    kind, _, path = preset.partition(":")
    return f"{kind}-{slug(Path(path).name)}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _read_json(path: Path) -> dict | None:
    try:
        with open(path) as f:
            obj = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # a damaged sidecar: rebuild
    return obj if isinstance(obj, dict) else None


@dataclass
class Dataset:
    """One cached dataset and what the benchmarks record about it."""

    fmt: Format
    path: Path
    preset: str
    n: int
    seed: int
    checksum: str
    bytes_on_disk: int
    n_files: int
    raw_bytes: int
    modes: list
    edges: list = field(default_factory=list)  # checksums of the first and last samples
    source: Dataset | None = None
    _files: list[Path] | None = field(default=None, repr=False)

    @property
    def files(self) -> list[Path]:
        """Every file of the dataset (for eviction), listed once."""
        if self._files is None:
            self._files = dataset_files(self.path)
        return self._files

    def open(self) -> formats.Reader:
        return self.fmt.open(self.path)

    def samples(self) -> Iterable[Sample]:
        """Stream the samples (used for sources): a memory map, no copies."""
        with self.open() as r:
            yield from r

    def record(self) -> dict:
        """What the JSON hook reports about this dataset."""
        return {**dataset_key(self.fmt, self.preset, self.n, self.seed),
                "role": "dataset" if self.source else "source", "checksum": self.checksum,
                "bytes_on_disk": self.bytes_on_disk,
                "n_files": self.n_files, "raw_bytes": self.raw_bytes,
                "source_checksum": self.source.checksum if self.source else self.checksum}


class _Tally:
    """Counts raw bytes and image modes of samples streaming past."""

    def __init__(self):
        self.raw = 0
        self.modes: set[tuple[str, int]] = set()

    def __call__(self, samples: Iterable[Sample]) -> Iterator[Sample]:
        for s in samples:
            self.raw += s.image.nbytes
            self.modes.add(s.mode)
            yield s


def _drop_if_damaged(path: Path) -> None:
    """Remove a cache entry that is not a readable dataset (overwrite replaces only datasets).

    The cache owns everything under its root, so a damaged entry (a manifest cut
    short by a killed run, say) is deleted here and then written anew.
    """
    if not (path.exists() or path.is_symlink()):
        return
    try:
        formats.read_manifest(path)
    except (formats.DatasetError, OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _edges(r) -> list[str]:
    """Checksums of a reader's first and last samples."""
    return [fixtures.sample_checksum(r[0]), fixtures.sample_checksum(r[-1])] if len(r) else []


class DataCache:
    """Generates, caches and hands out benchmark datasets under ``root``.

    Parameters
    ----------
    root : Path
        The data dir (``--data-dir``).
    seed : int
        Dataset seed.
    progress : callable
        ``progress(iterable, total, desc)`` wraps long loops (a tqdm bar on a
        terminal); it must return an iterable of the same items.
    """

    def __init__(self, root: Path, seed: int = 0,
                 progress: Callable[[Iterable, int, str], Iterable] = quiet):
        self.root = Path(root)
        self.seed = seed
        self.progress = progress
        self.used: dict[str, Dataset] = {}  # path -> dataset, for the JSON hook
        self.builds = 0  # datasets written by this cache (tests check reuse with it)
        self._shapes: dict[str, list[tuple]] = {}  # source path -> up to two of its image shapes

    # ---- sources

    def source(self, preset: str, n: int) -> Dataset:
        """The generated samples of ``(preset, n, seed)``, stored as an npy dataset."""
        fmt = formats.get("npy")
        key = {**dataset_key(fmt, preset, n, self.seed), "role": "source"}
        path = self.root / "sources" / f"{preset_dir(preset)}-s{self.seed}-p{fixtures.PRESET_VERSION}-n{n}"

        def build(tally):
            if is_user_preset(preset):
                try:
                    samples = user_samples(preset, n)  # your data, in sorted order: no seed
                except ValueError as err:  # fewer images than n: the benchmark is skipped
                    raise Unsupported(str(err)) from err
            else:
                samples = fixtures.make_dataset(preset, n, self.seed)
            gen = self.progress(samples, n, f"generating {preset} n={n}")
            return fmt.write(tally(gen), path, overwrite=True)
        return self._cached(fmt, preset, n, key, path, build)

    # ---- format datasets

    def path_for(self, fmt: Format, preset: str, n: int) -> Path:
        key = dataset_key(fmt, preset, n, self.seed)
        return (self.root / f"{preset_dir(preset)}-s{self.seed}-p{fixtures.PRESET_VERSION}" / f"n{n}"
                / f"{slug(fmt.id)}-v{fmt.version}-{key_digest(key)}")

    def check_modes(self, fmt: Format, source: Dataset) -> None:
        """Raise :class:`Unsupported` if ``fmt`` cannot store every image kind of ``source``, or
        if it is ``fixed_shape`` and the source's images differ in shape or dtype."""
        missing = {tuple(m) for m in source.modes if tuple(m) not in fmt.modes}
        if missing:
            raise Unsupported(f"{fmt.id} cannot store the {source.preset} preset's images "
                              f"({describe_modes(missing)})")
        if fmt.fixed_shape:
            shapes = self._shapes.get(str(source.path))
            if shapes is None:
                shapes = []
                with source.open() as r:  # the source's index: no pixels read
                    for i in range(len(r)):
                        shape = r._image_shape(i) or r[i].image.shape
                        if shape not in shapes:
                            shapes.append(shape)
                            if len(shapes) == 2:
                                break
                self._shapes[str(source.path)] = shapes
            if len(shapes) > 1 or len(source.modes) > 1:
                kinds = describe_modes({tuple(m) for m in source.modes}) if len(source.modes) > 1 else \
                    " and ".join(map(str, shapes))
                raise Unsupported(f"{fmt.id} stores one image shape and dtype per dataset (fixed_shape); the "
                                  f"{source.preset} preset's images vary ({kinds}): use a fixed-shape preset")

    def dataset(self, fmt: Format, preset: str, n: int) -> Dataset:
        """``fmt``'s copy of the source ``(preset, n)``, written once and reused."""
        source = self.source(preset, n)
        self.check_modes(fmt, source)
        path = self.path_for(fmt, preset, n)

        def build(tally):
            items = self.progress(source.samples(), n, f"writing {fmt.id} {preset} n={n}")
            return fmt.write(tally(items), path, overwrite=True)
        return self._cached(fmt, preset, n, dataset_key(fmt, preset, n, self.seed), path, build, source)

    def _cached(self, fmt, preset, n, key, path, build, source: Dataset | None = None) -> Dataset:
        """The dataset at ``path``: checked once per session, (re)built if needed."""
        ds = self.used.get(str(path))
        if ds is None:
            ds = self._load(path, key, fmt, preset, n)
            if ds is not None and not self._intact(ds, source):
                ds = None
        if ds is None:
            _drop_if_damaged(path)
            tally = _Tally()
            report: WriteReport = build(tally)  # the writer's own count of files and bytes
            self.builds += 1
            with fmt.open(path) as r:
                checksum = fixtures.dataset_checksum(self.progress(r, n, f"checking {fmt.id} n={n}"))
                edges = _edges(r)
            if source is not None and fmt.lossless and checksum != source.checksum:
                shutil.rmtree(path, ignore_errors=True)
                raise AssertionError(f"{fmt.id} is lossless but {path} reads back with checksum "
                                     f"{checksum}, not the source's {source.checksum}")
            ds = self._save(path, key, fmt, preset, n, checksum, tally, edges, report)
        ds.source = source
        self.used[str(path)] = ds
        return ds

    def _intact(self, ds: Dataset, source: Dataset | None) -> bool:
        """Whether a cached dataset still reads as when it was built.

        Formats change during development without a version bump; a cheap
        check (length, keys, first and last sample) catches most of that.
        """
        try:
            with ds.open() as r:
                if len(r) != ds.n or _edges(r) != ds.edges:
                    return False
                if source is not None:
                    with source.open() as src:
                        if r.keys() != src.keys():
                            return False
        except (OSError, ValueError):
            return False
        return True

    # ---- scratch space for write benchmarks

    def scratch(self, name: str) -> Path:
        """A path (not created) on the data dir's file system for a throw-away write.

        Each process writes under ``scratch/<host>-<pid>/``; the first call also
        removes what killed runs of this host left there (a 100k write is GBs).
        """
        d = self.root / "scratch" / _scratch_name(os.getpid())
        if not d.is_dir():
            self.clean_stale_scratch()
            d.mkdir(parents=True, exist_ok=True)
        return d / slug(name)

    def clean_scratch(self) -> None:
        shutil.rmtree(self.root / "scratch" / _scratch_name(os.getpid()), ignore_errors=True)

    def clean_stale_scratch(self) -> list[Path]:
        """Remove the scratch folders of this host's processes that no longer run.

        Folders of other hosts (a data dir on a shared file system) are left
        alone: their pids mean nothing here.  Returns the folders removed.
        """
        removed = []
        prefix = _scratch_name(0)[:-1]
        for d in sorted((self.root / "scratch").glob(glob_escape(prefix) + "*")):
            pid = d.name[len(prefix):]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
        return removed

    # ---- sidecars

    def _load(self, path: Path, key: dict, fmt: Format, preset: str, n: int) -> Dataset | None:
        side = _read_json(path.with_name(path.name + ".json"))
        if (side is None or side.get("sidecar_version") != SIDECAR_VERSION or side.get("key") != key
                or not (path / formats.MANIFEST).is_file()):
            return None
        return Dataset(fmt, path, preset, n, self.seed, side["checksum"], side["bytes_on_disk"],
                       side["n_files"], side["raw_bytes"], side["modes"], side["edges"])

    def _save(self, path, key, fmt, preset, n, checksum, tally: _Tally, edges, report: WriteReport) -> Dataset:
        nbytes, nfiles = report.bytes_on_disk, report.n_files
        modes = sorted([list(m) for m in tally.modes])
        write_json_atomic(path.with_name(path.name + ".json"), {
            "sidecar_version": SIDECAR_VERSION, "key": key, "checksum": checksum, "edges": edges,
            "bytes_on_disk": nbytes, "n_files": nfiles, "raw_bytes": tally.raw, "modes": modes})
        return Dataset(fmt, path, preset, n, self.seed, checksum, nbytes, nfiles, tally.raw, modes, edges)

    def records(self) -> list[dict]:
        """The datasets this session used, for the JSON hook."""
        out = []
        for p, ds in sorted(self.used.items()):
            rec = ds.record()
            with contextlib.suppress(ValueError):
                rec["path"] = str(Path(p).relative_to(self.root))
            out.append(rec)
        return out


def write_source(source: Dataset) -> Callable[[], Iterable[Sample]]:
    """A factory of fresh source iterables for timed writes, and where they come from.

    Small sources are read into memory once (so the timed write pays nothing
    for its input); larger ones stream from the source's memory map.
    """
    if source.raw_bytes <= WRITE_SOURCE_BUDGET:
        with source.open() as r:
            held = list(r)
        return lambda: iter(held)
    return source.samples


def source_kind(source: Dataset) -> str:
    return "memory" if source.raw_bytes <= WRITE_SOURCE_BUDGET else "npy-mmap"


def pool_size(source: Dataset, budget: int) -> int:
    """How many leading samples of ``source`` fit in ``budget`` raw bytes (at least 1)."""
    if source.raw_bytes <= budget:
        return source.n
    per = source.raw_bytes / max(source.n, 1)
    return max(1, min(source.n, int(budget // per)))


def np_order(n: int, seed: int) -> np.ndarray:
    """The seeded random permutation every random and batch benchmark reads in."""
    return np.random.default_rng(seed).permutation(n)
