"""The format registry: built-in modules by path, third-party ones by entry point.

Modules are imported on first use, so a format whose library is missing costs
nothing until it is asked for; then it is listed by :func:`unavailable` with
an install hint instead of breaking ``import formats``.  Third-party formats
come through the ``storebench.formats`` entry-point group (value
``package.module:Class``); one that fails to load is a warning, not a crash.
"""
from __future__ import annotations

import importlib
import warnings
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

from ._api import Format

ENTRY_POINT_GROUP = "storebench.formats"

#: name -> (module, class, install hint).  Keep in README's format table order.
BUILTIN: dict[str, tuple[str, str, str]] = {
    "png": ("storebench.formats.png", "PNG", "pip install pillow"),
    "npy": ("storebench.formats.npy", "Npy", "pip install numpy"),
    "hdf5": ("storebench.formats.hdf5", "HDF5", "pip install h5py"),
    "lmdb": ("storebench.formats.lmdb_", "LMDB", "pip install lmdb"),
    "pickle": ("storebench.formats.pickle_", "Pickle", "(standard library)"),
    "shelve": ("storebench.formats.shelve_", "Shelve", "(standard library)"),
    "jpeg": ("storebench.formats.jpeg", "JPEG", "pip install pillow (simplejpeg for speed)"),
    "zip": ("storebench.formats.zip_", "Zip", "pip install pillow"),
    "tar": ("storebench.formats.tar", "Tar", "pip install pillow"),
    "sqlite": ("storebench.formats.sqlite", "SQLite", "(standard library)"),
    "dicom": ("storebench.formats.dicom", "DICOM", "pip install 'storebench[dicom]'"),
    "zarr": ("storebench.formats.zarr_", "Zarr", "pip install zarr"),
    "parquet": ("storebench.formats.parquet", "Parquet", "pip install pyarrow"),
    "tfrecord": ("storebench.formats.tfrecord_", "TFRecord", "pip install tfrecord"),
}

_targets: dict[str, tuple[str, str, str]] = dict(BUILTIN)
_classes: dict[str, type[Format]] = {}
_failed: dict[str, str] = {}
_loaded = False


def register(name: str, target: str | type[Format], *, hint: str = "") -> None:
    """Add a format under ``name``: a class, or ``"module:Class"`` imported lazily.

    Raises ``ValueError`` if the name is taken.
    """
    if name in _targets or name in _classes:
        raise ValueError(f"format name {name!r} is already registered")
    if isinstance(target, str):
        module, _, cls = target.partition(":")
        _targets[name] = (module, cls, hint)
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
        _targets[ep.name] = (module, cls, f"check the package providing {ep.value}")


def _load_all() -> None:
    global _loaded
    if not _loaded:
        _load_entry_points()
        _loaded = True
    for name, (module, cls, hint) in list(_targets.items()):
        if name in _classes or name in _failed:
            continue
        try:
            obj = getattr(importlib.import_module(module), cls)
            _check_class(name, obj)
        except ImportError as err:
            if isinstance(err, ModuleNotFoundError) and err.name == module and module.startswith("storebench.formats."):
                # A built-in slot whose module is not part of this checkout.
                _failed[name] = f"module {module} is not installed"
                continue
            _failed[name] = f"{err} (install: {hint})"
            if name not in BUILTIN:
                warnings.warn(f"storebench format {name!r} failed to load: {err}",
                              RuntimeWarning, stacklevel=3)
        except (AttributeError, TypeError, ValueError) as err:
            _failed[name] = f"{type(err).__name__}: {err}"
            warnings.warn(f"storebench format {name!r} failed to load: {err}",
                          RuntimeWarning, stacklevel=3)
        else:
            _classes[name] = obj


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
    _load_all()
    if name in _classes:
        return _classes[name](**options)
    if name in _failed:
        raise ImportError(f"format {name!r} is unavailable: {_failed[name]}")
    raise KeyError(f"unknown format {name!r}; known: {', '.join(sorted(_targets))}")
