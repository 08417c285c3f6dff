"""Datasets in an object store: ``s3://bucket/prefix`` and the options that reach it.

A storebench dataset uploaded as it is (its directory's files as objects under
one prefix) opens from there with ``open_dataset("s3://bucket/prefix",
storage_options=...)`` for the formats that declare ``remote_reads``.  Each
reads with its own field's client, built here from one set of options:

- pyarrow's ``S3FileSystem`` (parquet, and the file objects that h5py,
  tifffile, tarfile and zipfile read; zarr through fsspec's wrapper of it),
- Lance's own object store (``lance.dataset(url, storage_options=...)``),
- boto3 (LitData's downloader).

``storage_options`` takes s3fs's names: ``endpoint_url``, ``key``,
``secret``, ``token``, ``region``, and ``retries`` (attempts per request,
default 3, given to each library's own retry setting).  Without ``key`` the
clients look for credentials where AWS's do (environment, profile).
"""
from __future__ import annotations

import io
import os
import posixpath
import threading
from typing import Any
from urllib.parse import urlsplit

_OPTIONS = ("endpoint_url", "key", "secret", "token", "region", "retries")


def is_remote(path: Any) -> bool:
    """True for a :class:`Remote` or a string naming an object-store URL (``s3://...``)."""
    return isinstance(path, Remote) or (isinstance(path, str) and path.startswith("s3://"))


class Remote:
    """A dataset's prefix in an S3-compatible object store.

    ``remote / "data.parquet"`` is a :class:`RemoteObject`; ``str(remote)`` is
    the URL (what error messages name).  Pickles as its URL and options: a
    worker process builds its own clients.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"{url!r}: not an s3://bucket/prefix URL")
        opts = dict(storage_options or {})
        unknown = sorted(set(opts) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"{url}: unknown storage option(s) {unknown}; known: {list(_OPTIONS)}")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.storage_options = opts
        self._fs: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    # ---- identity

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Remote({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Remote) and (self.url, self.storage_options) == (other.url, other.storage_options)

    def __hash__(self) -> int:
        return hash(self.url)

    def __reduce__(self):
        return (Remote, (self.url, self.storage_options))

    def __truediv__(self, name: str) -> RemoteObject:
        return RemoteObject(self, name)

    @property
    def name(self) -> str:
        return posixpath.basename(self.prefix)

    def key(self, name: str = "") -> str:
        """``bucket/prefix/name``: the path pyarrow's file system takes."""
        return "/".join(p for p in (self.bucket, self.prefix, name) if p)

    def child_url(self, name: str) -> str:
        return f"s3://{self.key(name)}"

    # ---- the clients, one per process (built on first use)

    @property
    def retries(self) -> int:
        return int(self.storage_options.get("retries", 3))

    def arrow_fs(self):
        """pyarrow's S3FileSystem for these options (AWS's standard retry strategy, ``retries`` attempts)."""
        fs = self._fs
        if fs is None or self._pid != os.getpid():  # a forked child builds its own client
            with self._lock:
                if self._fs is None or self._pid != os.getpid():
                    self._pid = os.getpid()
                    from pyarrow import fs as pafs
                    o = self.storage_options
                    kw: dict[str, Any] = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=self.retries)}
                    if "endpoint_url" in o:
                        u = urlsplit(o["endpoint_url"])
                        kw.update(endpoint_override=u.netloc, scheme=u.scheme or "https")
                    if "key" in o:
                        kw.update(access_key=o["key"], secret_key=o.get("secret"), session_token=o.get("token"))
                    if "region" in o:
                        kw["region"] = o["region"]
                    self._fs = pafs.S3FileSystem(**kw)
                fs = self._fs
        return fs

    def fsspec_fs(self):
        """fsspec's file system over the same pyarrow client (for libraries that take fsspec)."""
        from fsspec.implementations.arrow import ArrowFSWrapper

        class _ArrowS3(ArrowFSWrapper):
            # fsspec 2026.9's ArrowFSWrapper.fsid reads HDFS's host and port, which S3 has not
            fsid = property(lambda _self: f"arrow_s3_{self.url}")

        return _ArrowS3(self.arrow_fs())

    def lance_options(self) -> dict[str, str]:
        """Lance's ``storage_options`` (its object_store's names) for these options."""
        o = self.storage_options
        out = {"client_max_retries": str(max(self.retries - 1, 0))}
        if "endpoint_url" in o:
            out["aws_endpoint"] = o["endpoint_url"]
            if o["endpoint_url"].startswith("http://"):
                out["allow_http"] = "true"
        for ours, theirs in (("key", "aws_access_key_id"), ("secret", "aws_secret_access_key"),
                             ("token", "aws_session_token"), ("region", "aws_region")):
            if ours in o:
                out[theirs] = str(o[ours])
        return out

    def boto3_options(self) -> dict[str, Any]:
        """``boto3.client("s3", **...)`` keywords (LitData's ``storage_options``)."""
        from botocore.config import Config
        o = self.storage_options
        out: dict[str, Any] = {"config": Config(retries={"max_attempts": self.retries, "mode": "standard"})}
        for ours, theirs in (("endpoint_url", "endpoint_url"), ("key", "aws_access_key_id"),
                             ("secret", "aws_secret_access_key"), ("token", "aws_session_token"),
                             ("region", "region_name")):
            if ours in o:
                out[theirs] = o[ours]
        return out

    # ---- objects

    def read_bytes(self, name: str) -> bytes:
        """The whole object ``name`` (one GET): FileNotFoundError if there is none.

        Tried ``retries`` times: pyarrow 26 does not retry a GET whose error body is longer
        than the object (an S3 503 ``SlowDown`` on a file of less than ~130 bytes fails with
        "Failed to flush response stream"), so storebench's own reads of small objects
        (manifest, index, checksums) would fail where larger reads are retried.
        """
        for attempt in range(self.retries):
            try:
                with self.arrow_fs().open_input_stream(self.key(name)) as f:
                    return f.read()
            except FileNotFoundError:
                raise
            except OSError:
                if attempt + 1 >= self.retries:
                    raise
        raise AssertionError("unreachable")

    def open_input_file(self, name: str):
        """A seekable pyarrow file over object ``name``: every read is a ranged GET."""
        return self.arrow_fs().open_input_file(self.key(name))

    def sizes(self) -> dict[str, int]:
        """Every object under the prefix, by name relative to it, with its size (one listing)."""
        from pyarrow import fs as pafs
        base = self.key() + "/"
        out = {}
        for info in self.arrow_fs().get_file_info(pafs.FileSelector(self.key(), recursive=True, allow_not_found=True)):
            if info.type == pafs.FileType.File:
                out[info.path[len(base):]] = info.size
        return out


class RemoteObject:
    """One object of a :class:`Remote` dataset (``remote / name``)."""

    def __init__(self, remote: Remote, name: str):
        self.remote = remote
        self.name = name

    def __str__(self) -> str:
        return self.remote.child_url(self.name)

    def __truediv__(self, name: str) -> RemoteObject:
        return RemoteObject(self.remote, f"{self.name}/{name}")

    def read_bytes(self) -> bytes:
        return self.remote.read_bytes(self.name)

    def open(self, mode: str = "rb") -> io.BytesIO:
        """The whole object in memory (one GET), for small files read with seeks (an index)."""
        if mode != "rb":
            raise ValueError(f"{self}: objects open read-only ('rb')")
        return io.BytesIO(self.read_bytes())


def check_remote_files(remote: Remote, manifest: dict) -> None:
    """The object-store twin of ``check_files``: every file the manifest lists is there with its
    size (one listing); DatasetError naming the first that is not."""
    from ._errors import DatasetError
    sizes = remote.sizes()
    for name, expect in manifest.get("files", {}).items():
        if name.endswith("/"):
            inside = [s for k, s in sizes.items() if k.startswith(name)]
            if isinstance(expect, dict) and (len(inside), sum(inside)) != (expect.get("files"), expect.get("bytes")):
                raise DatasetError(remote, f"{name} holds {len(inside)} objects / {sum(inside)} bytes, "
                                   f"expected {expect.get('files')} / {expect.get('bytes')}")
            continue
        if name not in sizes:
            raise DatasetError(remote, f"object {name} is missing")
        if sizes[name] != expect:
            raise DatasetError(remote, f"object {name} has {sizes[name]} bytes, expected {expect} "
                               "(truncated or damaged)")
