"""Storage formats for image datasets, behind one contract.

>>> from storebench import formats
>>> fmt = formats.get("hdf5", compression="gzip", level=2)
>>> fmt.id
'hdf5[gzip,level=2]'

See :mod:`storebench.formats._api` for the Format/Reader contract,
:mod:`storebench.formats._sample` for :class:`Sample`, and
:mod:`storebench.formats._registry` for how formats are found.  The names in
``__all__`` are the public API that bench/, storebench/ and plug-ins use.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._api import Format, Reader, WriteReport
from ._bound import FLOOR, GATHER, PREAD, Bound, BoundInput, BoundRun, NoBound, Pool
from ._errors import ChecksumError, DatasetError, LocalOnlyError, RegionError
from ._fs import dataset_files, disk_usage
from ._manifest import MANIFEST, read_manifest, read_remote_manifest
from ._region import check_region
from ._registry import (
    ENTRY_POINT_GROUP,
    available,
    from_id,
    get,
    missing_dependency,
    names,
    register,
    unavailable,
)
from ._remote import Remote, is_remote
from ._sample import (
    ALL_MODES,
    DTYPE_NAMES,
    IMAGE_MODES,
    NO_BOXES,
    NO_BOXES_3D,
    NO_LABELS,
    VOLUME,
    VOLUME_MODES,
    Sample,
    describe_modes,
    make_sample,
    modes_of,
)

__all__ = [
    "ALL_MODES",
    "DTYPE_NAMES",
    "FLOOR",
    "GATHER",
    "IMAGE_MODES",
    "PREAD",
    "Bound",
    "BoundInput",
    "BoundRun",
    "NoBound",
    "Pool",
    "ENTRY_POINT_GROUP",
    "MANIFEST",
    "NO_BOXES",
    "NO_BOXES_3D",
    "NO_LABELS",
    "VOLUME",
    "VOLUME_MODES",
    "ChecksumError",
    "DatasetError",
    "Format",
    "LocalOnlyError",
    "Remote",
    "RegionError",
    "Reader",
    "Sample",
    "WriteReport",
    "available",
    "canonical_id",
    "check_region",
    "dataset_files",
    "describe_modes",
    "disk_usage",
    "from_id",
    "get",
    "is_remote",
    "make_sample",
    "missing_dependency",
    "modes_of",
    "names",
    "open_dataset",
    "register",
    "unavailable",
]


def open_dataset(path: str | os.PathLike | Remote, *, verify: bool = False,
                 storage_options: dict[str, Any] | None = None) -> Reader:
    """Open any storebench dataset, with the format and options in its manifest.

    ``path`` is a local directory or an ``s3://bucket/prefix`` URL of a dataset
    uploaded as it is, with ``storage_options`` to reach it (``endpoint_url``,
    ``key``, ``secret``, ``region``, ``retries``: see
    :mod:`storebench.formats._remote`); a format that reads local files only
    raises :class:`LocalOnlyError` naming why.
    """
    if isinstance(path, Remote) or is_remote(path):
        remote = path if isinstance(path, Remote) else Remote(str(path), storage_options)
        manifest = read_remote_manifest(remote)
        try:
            fmt = get(manifest["format"], **manifest.get("options", {}))
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(remote, f"cannot open format {manifest['format']!r}: {err}") from err
        return fmt.open(remote, verify=verify)
    path = Path(path)
    manifest = read_manifest(path)
    try:
        fmt = get(manifest["format"], **manifest.get("options", {}))
    except (KeyError, TypeError, ValueError) as err:  # unknown format, or options out of range
        raise DatasetError(path, f"cannot open format {manifest['format']!r}: {err}") from err
    return fmt.open(path, verify=verify)


def canonical_id(fmt_id: str, name: str | None = None, options: Mapping[str, Any] | None = None) -> str:
    """Today's id of a format id recorded by any storebench version.

    Result JSON records each row's format name and full options beside its
    id; from those the id is rebuilt with today's rule, so rows written by
    storebench 0.1 (``hdf5[gzip-4]``) compare with today's
    (``hdf5[gzip,level=4]``).  Without them, or for a format that is not
    installed, ``fmt_id`` is returned as it is.
    """
    if name is None or not isinstance(options, Mapping):
        return fmt_id
    try:
        return get(name, **options).id
    except (KeyError, ImportError, TypeError, ValueError):
        return fmt_id
