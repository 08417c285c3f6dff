"""The dataset manifest (``storebench.json``), its file table and the per-sample checksums."""
from __future__ import annotations

import json
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import DatasetError
from ._fs import disk_usage
from ._sample import Sample

MANIFEST = "storebench.json"

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
    crc = zlib.crc32(np.ascontiguousarray(s.boxes, "<f4"), crc)  # type: ignore[arg-type]  # ndarray is a buffer; numpy stubs lack it
    crc = zlib.crc32(np.ascontiguousarray(s.box_labels, "<i8"), crc)  # type: ignore[arg-type]  # ndarray is a buffer
    if pixels:
        crc = zlib.crc32(np.ascontiguousarray(img, img.dtype.newbyteorder("<")), crc)  # type: ignore[arg-type]  # buffer
    return crc


def read_manifest(path: Path) -> dict:
    """Read and check ``path/storebench.json``; raise DatasetError if unusable."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise DatasetError(path, "not a storebench dataset (not a directory)")
    try:
        raw = (path / MANIFEST).read_bytes()
    except FileNotFoundError as err:
        raise DatasetError(path, f"not a storebench dataset (no {MANIFEST})") from err
    return parse_manifest(raw, path)


def read_remote_manifest(remote) -> dict:
    """Read and check ``storebench.json`` of a dataset in an object store (one GET)."""
    try:
        raw = remote.read_bytes(MANIFEST)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{remote}: no {MANIFEST} there (not a storebench dataset, or nothing "
                                "at that prefix)") from err
    return parse_manifest(raw, remote)


def parse_manifest(raw: bytes, path) -> dict:
    """The manifest in ``raw`` checked; DatasetError naming ``path`` if unusable."""
    try:
        manifest = json.loads(raw)
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



def _jsonable(options: Mapping[str, Any]) -> dict:
    out = {}
    for k, v in options.items():
        out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
    return out

