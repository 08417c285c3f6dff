"""Storage formats for image datasets, behind one contract.

>>> import formats
>>> fmt = formats.get("hdf5", compression="gzip", level=2)
>>> fmt.id
'hdf5[gzip-2]'

See :mod:`formats._api` for the contract and :mod:`formats._registry` for how
formats are found.
"""
from __future__ import annotations

import os
from pathlib import Path

from ._api import ALL_MODES, MANIFEST, DatasetError, Format, Reader, Sample, WriteReport, read_manifest
from ._registry import ENTRY_POINT_GROUP, available, get, register, unavailable

__all__ = [
    "ALL_MODES",
    "ENTRY_POINT_GROUP",
    "MANIFEST",
    "DatasetError",
    "Format",
    "Reader",
    "Sample",
    "WriteReport",
    "available",
    "get",
    "open_dataset",
    "register",
    "unavailable",
]


def open_dataset(path: str | os.PathLike, *, verify: bool = False) -> Reader:
    """Open any storebench dataset, with the format and options in its manifest."""
    path = Path(path)
    manifest = read_manifest(path)
    try:
        fmt = get(manifest["format"], **manifest.get("options", {}))
    except (KeyError, TypeError) as err:
        raise DatasetError(path, f"cannot open format {manifest['format']!r}: {err}") from err
    return fmt.open(path, verify=verify)
