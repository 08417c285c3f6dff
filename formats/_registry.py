"""The format registry: built-in modules by path, third-party ones by entry point.

Modules are imported on first use of their name, one module per request
(``get("npy")`` imports the npy module only; :func:`available` imports them
all), so a format whose library is missing costs nothing until it is asked
for; then it is listed by :func:`unavailable` with an install hint instead of
breaking ``from storebench import formats``.  Each built-in entry names the
modules it needs, so :func:`missing_dependency` answers without importing it.  Third-party formats
come through the ``storebench.formats`` entry-point group (value
``package.module:Class``); one that fails to load is a warning, not a crash.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

from ._api import Format

ENTRY_POINT_GROUP = "storebench.formats"

@dataclass(frozen=True)
class Entry:
    """Where a format lives and what it needs, known without importing it."""

    module: str  #: the format's module, imported on first use of this name only
    cls: str  #: the Format subclass in that module
    requires: tuple[str, ...] = ()  #: top-level modules it imports (checked with find_spec)
    hint: str = ""  #: how to install what is missing
    #: Why no storebench module exists for this format here (its library cannot be installed or
    #: imported beside the project's lock); the format is then listed unavailable with this reason.
    unavailable: str = ""


#: name -> Entry.  Keep in the README's format table order.
BUILTIN: dict[str, Entry] = {
    "png": Entry("storebench.formats.png", "PNG", ("PIL",), "pip install pillow"),
    "npy": Entry("storebench.formats.npy", "Npy", ("numpy",), "pip install numpy"),
    "hdf5": Entry("storebench.formats.hdf5", "HDF5", ("h5py",), "pip install h5py"),
    "lmdb": Entry("storebench.formats.lmdb_", "LMDB", ("lmdb",), "pip install lmdb"),
    "pickle": Entry("storebench.formats.pickle_", "Pickle", (), "(standard library)"),
    "shelve": Entry("storebench.formats.shelve_", "Shelve", ("dbm",), "(standard library)"),
    "jpeg": Entry("storebench.formats.jpeg", "JPEG", ("PIL",), "pip install pillow (simplejpeg for speed)"),
    "zip": Entry("storebench.formats.zip_", "Zip", ("PIL",), "pip install pillow"),
    "tar": Entry("storebench.formats.tar", "Tar", ("PIL",), "pip install pillow"),
    "sqlite": Entry("storebench.formats.sqlite", "SQLite", ("sqlite3",), "(standard library)"),
    "dicom": Entry("storebench.formats.dicom", "DICOM", ("pydicom",), "pip install 'storebench[dicom]'"),
    "zarr": Entry("storebench.formats.zarr_", "Zarr", ("zarr",), "pip install zarr"),
    "parquet": Entry("storebench.formats.parquet", "Parquet", ("pyarrow",), "pip install pyarrow"),
    "lance": Entry("storebench.formats.lance_", "Lance", ("lance", "pyarrow"), "pip install pylance"),
    "litdata": Entry("storebench.formats.litdata_", "LitData", ("litdata", "torch"),
                     "pip install litdata (needs torch: storebench installs it on Python 3.11 only, from the "
                     "local CPU wheel)"),
    "tfrecord": Entry("storebench.formats.tfrecord_", "TFRecord", ("tfrecord",), "pip install tfrecord"),
    "arrayrecord": Entry("storebench.formats.arrayrecord", "ArrayRecord", ("array_record",),
                         "pip install array-record"),
    "mds": Entry("storebench.formats.mds", "MDS", ("streaming",), "pip install mosaicml-streaming", unavailable=(
        "MosaicML Streaming (mosaicml-streaming 0.13.0) cannot work beside this project's lock: `import streaming` "
        "imports torchvision (streaming.vision) and transformers (streaming.base.dataloader), and the only "
        "torchvision wheel for torch 2.13.0 is a CUDA build that fails to import beside the CPU torch "
        "('operator torchvision::nms does not exist'); it also requires numpy<2.2 (the lock has 2.4.6 on "
        "Python 3.11, 2.5.5 on 3.12+). storebench ships no module for it")),
    "blosc2": Entry("storebench.formats.blosc2_", "Blosc2", ("blosc2",), "pip install blosc2"),
    "tiff": Entry("storebench.formats.tiff", "TIFF", ("tifffile", "imagecodecs"),
                  "pip install tifffile imagecodecs"),
}

_targets: dict[str, Entry] = dict(BUILTIN)
_classes: dict[str, type[Format]] = {}
_failed: dict[str, str] = {}
_loaded = False


def register(name: str, target: str | type[Format], *, hint: str = "",
             requires: tuple[str, ...] = ()) -> None:
    """Add a format under ``name``: a class, or ``"module:Class"`` imported lazily.

    Raises ``ValueError`` if the name is taken.
    """
    if name in _targets or name in _classes:
        raise ValueError(f"format name {name!r} is already registered")
    if isinstance(target, str):
        module, _, cls = target.partition(":")
        _targets[name] = Entry(module, cls, tuple(requires), hint)
    else:
        _check_class(name, target)
        _classes[name] = target
    _failed.pop(name, None)


def _check_class(name: str, cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Format)):
        raise TypeError(f"format {name!r}: {cls!r} is not a formats.Format subclass")
    if getattr(cls, "name", None) != name:
        raise ValueError(f"format {name!r}: class {cls.__name__} has name {getattr(cls, 'name', None)!r}")


def _load_entry_points() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _targets or ep.name in _classes:
            warnings.warn(f"storebench format entry point {ep.name!r} ({ep.value}) "
                          "clashes with a registered name; ignored", RuntimeWarning, stacklevel=3)
            continue
        module, _, cls = ep.value.partition(":")
        _targets[ep.name] = Entry(module, cls, (), f"check the package providing {ep.value}")


def _discover() -> None:
    """Read the entry-point group once (metadata only: no plug-in is imported)."""
    global _loaded
    if not _loaded:
        _load_entry_points()
        _loaded = True


def _load(name: str) -> None:
    """Import format ``name``'s module (and no other), recording its class or why it failed."""
    if name in _classes or name in _failed:
        return
    entry = _targets[name]
    if entry.unavailable:
        _failed[name] = entry.unavailable
        return
    if name in BUILTIN and (missing := missing_dependency(name)) is not None:
        # Said before importing: a module may import its library lazily (litdata: torch).
        _failed[name] = f"No module named {missing!r} (install: {entry.hint})"
        return
    try:
        obj = getattr(importlib.import_module(entry.module), entry.cls)
        _check_class(name, obj)
    except ImportError as err:
        if isinstance(err, ModuleNotFoundError) and err.name == entry.module \
                and entry.module.startswith("storebench.formats."):
            # A built-in slot whose module is not part of this checkout.
            _failed[name] = f"module {entry.module} is not installed"
            return
        _failed[name] = f"{err} (install: {entry.hint})"
        if name not in BUILTIN:
            warnings.warn(f"storebench format {name!r} failed to load: {err}",
                          RuntimeWarning, stacklevel=4)
    except (AttributeError, TypeError, ValueError) as err:
        _failed[name] = f"{type(err).__name__}: {err}"
        warnings.warn(f"storebench format {name!r} failed to load: {err}",
                      RuntimeWarning, stacklevel=4)
    else:
        _classes[name] = obj


def _load_all() -> None:
    _discover()
    for name in list(_targets):
        _load(name)


def missing_dependency(name: str) -> str | None:
    """The first module format ``name`` needs that is not installed, without importing the format.

    ``None`` when every declared dependency is found (the format may still
    fail to import for another reason; :func:`get` says why).  Raises
    ``KeyError`` for an unknown name.
    """
    _discover()
    if name in _classes:
        return None
    if name not in _targets:
        raise KeyError(f"unknown format {name!r}; known: {', '.join(sorted(_targets))}")
    if _targets[name].unavailable:
        return _targets[name].requires[0]
    for module in _targets[name].requires:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return module
    return None


def names() -> tuple[str, ...]:
    """Every registered name, built-in and plug-in, available or not (imports nothing)."""
    _discover()
    return tuple(_targets) + tuple(n for n in _classes if n not in _targets)


def available() -> MappingProxyType:
    """Read-only mapping of format name to class, for every format that imports."""
    _load_all()
    order = list(_targets) + [n for n in _classes if n not in _targets]
    return MappingProxyType({n: _classes[n] for n in order if n in _classes})


def unavailable() -> MappingProxyType:
    """Read-only mapping of format name to why it cannot load (with an install hint)."""
    _load_all()
    return MappingProxyType(dict(_failed))


def get(name: str, **options: Any) -> Format:
    """An instance of format ``name`` with ``options``.

    Raises ``KeyError`` for an unknown name and ``ImportError`` (with the
    install hint) for a known format whose library is missing.
    """
    _discover()
    if name in _targets:
        _load(name)
    if name in _classes:
        return _classes[name](**options)
    if name in _failed:
        raise ImportError(f"format {name!r} is unavailable: {_failed[name]}")
    raise KeyError(f"unknown format {name!r}; known: {', '.join(sorted(_targets))}")


_ID = re.compile(r"\s*([A-Za-z_][\w.-]*)\s*(?:\[(.*)\])?\s*")


def _id_value(text: str, default: Any, where: str) -> Any:
    """An option value written in a format id, typed like the option's default."""
    text = text.strip()
    if isinstance(default, bool):
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise ValueError(f"{where}: {text!r} is not true or false")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{where}: {text!r} is not a whole number") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{where}: {text!r} is not a number") from None
    if default is None:  # options defaulting to None take ints, None or text (hdf5's chunks)
        if text == "None":
            return None
        try:
            return int(text)
        except ValueError:
            return text
    return text


def from_id(fmt_id: str) -> Format:
    """The format instance whose :attr:`Format.id` is ``fmt_id``: ``hdf5[gzip,level=2,layout=stack]``.

    The inverse of the id rule: a bare value is the first constructor option,
    ``name=value`` any other, values typed like the option's default.  Option
    order does not matter; the instance's own id is the canonical spelling.
    Raises ``KeyError`` (unknown format), ``ImportError`` (its library is
    missing) or ``ValueError`` naming the id and the option it cannot take.
    """
    m = _ID.fullmatch(fmt_id)
    if not m:
        raise ValueError(f"format id {fmt_id!r}: expected name or name[option,key=value,...]")
    name, body = m.group(1), m.group(2)
    cls = type(get(name))
    defaults = cls._option_defaults()
    options: dict[str, Any] = {}
    for pos, part in enumerate(p for p in (body or "").split(",") if p.strip()):
        key, eq, value = part.partition("=")
        if not eq:
            if pos != 0 or not defaults:
                raise ValueError(f"format id {fmt_id!r}: {part.strip()!r} needs a name (name=value); only the "
                                 f"first option ({next(iter(defaults), 'none')}) may be given bare")
            key, value = next(iter(defaults)), part
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"format id {fmt_id!r}: {name} has no option {key!r}; options: {', '.join(defaults)}")
        if key in options:
            raise ValueError(f"format id {fmt_id!r}: option {key!r} given twice")
        options[key] = _id_value(value, defaults[key], f"format id {fmt_id!r}, option {key}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"format id {fmt_id!r}: {err}") from err
