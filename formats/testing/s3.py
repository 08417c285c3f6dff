"""A real S3 endpoint on 127.0.0.1 for tests and benchmarks: moto's S3 server in a child process.

:class:`S3Server` starts ``python -m storebench.formats.testing.s3`` (moto's
S3 backend behind werkzeug, the server moto's ``ThreadedMotoServer`` runs, on
a free port of 127.0.0.1), creates a bucket and uploads datasets to it.  The
child counts every request it serves (method, whether a GET asked for a byte
range, the body bytes it sent) and can fail requests on purpose; the client
reads the counters (:meth:`S3Server.stats`) and sets the faults
(:meth:`S3Server.faults`) through paths under ``/__storebench__/`` that the
counters leave out.  Counting in the server sees every client the same way:
pyarrow's C++ S3 client, Lance's Rust object_store, boto3.

The child exits when its parent does (it watches its stdin, a pipe from the
parent) or on :meth:`S3Server.stop`; nothing listens on an address other
than 127.0.0.1.

Faults, for the first GET of each object after :meth:`S3Server.faults` (or of
the first ``limit`` objects; a HEAD, a listing and a PUT are never failed):

``"503"``
    HTTP 503 ``SlowDown``, what S3 answers when throttling.
``"reset"``
    the connection is closed before any response.
``"short"``
    the response announces the object's length and sends half of it.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
import xml.sax.saxutils
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

_CONTROL = "/__storebench__/"
FAULTS = ("503", "reset", "short")

#: What a client passes to reach the server: the s3fs-style keys storebench.formats understands.
CREDENTIALS = {"key": "storebench", "secret": "storebench", "region": "us-east-1"}


class S3Server:
    """moto's S3 server in a child process on a free port of 127.0.0.1.

    >>> with S3Server() as s3:                                   # doctest: +SKIP
    ...     url = s3.upload(local_dataset, "cifar-n100/parquet")
    ...     r = formats.open_dataset(url, storage_options=s3.storage_options)
    """

    def __init__(self, bucket: str = "storebench"):
        self.bucket = bucket
        self._proc: subprocess.Popen | None = None
        self.port = 0

    # ---- lifetime

    def start(self) -> S3Server:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.pop(k, None)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "storebench.formats.testing.s3"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self._proc.kill()
            self._proc.wait()
            raise RuntimeError(f"the S3 server did not start (it printed {line!r}); is moto installed? "
                               "pip install 'storebench[test]'")
        self.port = int(line.split()[1])
        self._request("PUT", f"/{self.bucket}")
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with _suppress():
                assert proc.stdin is not None
                proc.stdin.close()  # the child exits when its stdin closes
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- what clients need

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        """The options every remote-capable format takes (``open_dataset(url, storage_options=...)``)."""
        return {"endpoint_url": self.endpoint_url, **CREDENTIALS}

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix.strip('/')}"

    def upload(self, local: os.PathLike | str, prefix: str) -> str:
        """Copy the directory ``local`` under ``prefix`` (once: an existing prefix is kept) and
        return its ``s3://`` URL.  The manifest goes last, so a half-done upload never looks complete."""
        from .. import MANIFEST
        local = Path(local)
        url = self.url(prefix)
        if self.exists(f"{prefix.strip('/')}/{MANIFEST}"):
            return url
        files = sorted(p for p in local.rglob("*") if p.is_file())
        files.sort(key=lambda p: p.name == MANIFEST)
        for f in files:
            self.put(f"{prefix.strip('/')}/{f.relative_to(local).as_posix()}", f)
        return url

    def put(self, key: str, src: os.PathLike | str | bytes) -> None:
        """Upload one object (from a file, streamed, or from bytes)."""
        if isinstance(src, bytes):
            self._request("PUT", f"/{self.bucket}/{key}", src)
            return
        size = os.path.getsize(src)
        with open(src, "rb") as f:
            self._request("PUT", f"/{self.bucket}/{key}", f, size)

    def exists(self, key: str) -> bool:
        """Whether object ``key`` is there (a listing: moto answers an unsigned HEAD with 403)."""
        body = self._request("GET", f"/{self.bucket}?list-type=2&prefix={urllib.parse.quote(key)}")
        return f"<Key>{xml.sax.saxutils.escape(key)}</Key>".encode() in body

    # ---- counters and faults

    def stats(self) -> dict[str, int]:
        """Requests and bytes served since the last :meth:`reset`: ``get`` (GETs of objects),
        ``range_get`` (of them, with a Range header), ``head``, ``list``, ``put``, ``bytes``
        (body bytes sent for GETs), ``failed`` (faults injected)."""
        return json.loads(self._request("GET", _CONTROL + "stats"))

    def reset(self) -> None:
        self._request("POST", _CONTROL + "reset")

    def faults(self, mode: str | None, limit: int | None = None) -> None:
        """Fail the first GET of every object from now on (``"503"``, ``"reset"``, ``"short"``), of the
        first ``limit`` objects asked for only when given, or stop failing (None)."""
        if mode is not None and mode not in FAULTS:
            raise ValueError(f"fault {mode!r}: one of {FAULTS}")
        self._request("POST", _CONTROL + "faults", json.dumps({"mode": mode, "limit": limit}).encode())

    def _request(self, method: str, path: str, body: Any = None, size: int | None = None) -> bytes:
        if self._proc is None:
            raise RuntimeError("the S3 server is not running")
        req = urllib.request.Request(self.endpoint_url + path, data=body, method=method)
        if size is not None:
            req.add_header("Content-Length", str(size))
        if body is not None:  # not urllib's form type: the server would parse the body as a form
            req.add_header("Content-Type", "application/octet-stream")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=120) as resp:
            return resp.read()


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


# ---- the child: moto's app behind a counting, fault-injecting WSGI layer

class _Counting:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(("get", "range_get", "head", "list", "put", "bytes", "failed"), 0)
        self.mode: str | None = None
        self.limit: int | None = None
        self.failed_once: set[str] = set()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith(_CONTROL):
            return self._control(path[len(_CONTROL):], environ, start_response)
        method = environ["REQUEST_METHOD"]
        is_object = path.strip("/").count("/") >= 1
        is_get = method == "GET" and is_object
        with self.lock:
            c = self.counts
            if is_get:
                c["get"] += 1
                if environ.get("HTTP_RANGE"):
                    c["range_get"] += 1
            elif method == "HEAD":
                c["head"] += 1
            elif method == "GET":
                c["list"] += 1
            elif method == "PUT":
                c["put"] += 1
            fault = self.mode if is_get and path not in self.failed_once and \
                (self.limit is None or len(self.failed_once) < self.limit) else None
            if fault is not None:
                self.failed_once.add(path)
                c["failed"] += 1
        if fault == "503":
            body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                    b"<Message>Please reduce your request rate.</Message></Error>")
            start_response("503 Slow Down", [("Content-Type", "application/xml"),
                                             ("Content-Length", str(len(body)))])
            return [body]
        if fault == "reset":
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                with _suppress():
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    sock.shutdown(socket.SHUT_RDWR)
            start_response("500 Internal Server Error", [("Content-Length", "0")])
            return [b""]
        fast = self._ranged(path, environ, start_response) if is_get else None
        out = fast if fast is not None else self.app(environ, start_response)
        if not is_get:
            return out
        return self._counted(out, short=fault == "short", environ=environ)

    def _ranged(self, path: str, environ, start_response):
        """A ``Range: bytes=a-b`` GET of a stored object answered from moto's own stored copy, reading
        only the range: moto's handler reads the whole object for every ranged GET (0.2 s on a
        300 MB object), which would make the loopback measure moto instead of the formats.
        Anything else (no range, several ranges, a suffix range, a missing key) is moto's."""
        rng = environ.get("HTTP_RANGE", "")
        if not rng.startswith("bytes=") or "," in rng or rng.startswith("bytes=-"):
            return None
        a, _, b = rng[6:].partition("-")
        bucket, _, key = path.lstrip("/").partition("/")
        try:
            from urllib.parse import unquote

            from moto.core import DEFAULT_ACCOUNT_ID
            from moto.s3.models import s3_backends
            obj = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_object(bucket, unquote(key))
            start = int(a)
            end = int(b) if b else None
        except Exception:
            return None
        if obj is None or obj.size == 0 or start >= obj.size:
            return None
        end = obj.size - 1 if end is None or end >= obj.size else end
        with obj.lock:
            obj._value_buffer.seek(start)
            data = obj._value_buffer.read(end - start + 1)
        start_response("206 Partial Content", [
            ("Content-Type", getattr(obj, "content_type", None) or "binary/octet-stream"),
            ("Content-Length", str(len(data))), ("Content-Range", f"bytes {start}-{end}/{obj.size}"),
            ("Accept-Ranges", "bytes"), ("ETag", obj.etag), ("Last-Modified", obj.last_modified_RFC1123)])
        return [data]

    def _counted(self, chunks: Iterable[bytes], *, short: bool, environ) -> Iterator[bytes]:
        data = b"".join(chunks)  # moto's responses are in memory already
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        if short:
            data = data[: len(data) // 2]
        with self.lock:
            self.counts["bytes"] += len(data)
        yield data
        if short:  # the length was announced whole: close the connection under it
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                with _suppress():
                    sock.shutdown(socket.SHUT_RDWR)

    def _control(self, what: str, environ, start_response):
        body = b"{}"
        with self.lock:
            if what == "stats":
                body = json.dumps(self.counts).encode()
            elif what == "reset":
                for k in self.counts:
                    self.counts[k] = 0
            elif what == "faults":
                size = int(environ.get("CONTENT_LENGTH") or 0)
                conf = json.loads(environ["wsgi.input"].read(size) or b"{}")
                self.mode, self.limit = conf.get("mode"), conf.get("limit")
                self.failed_once = set()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


def _serve() -> None:
    os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "true")
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class _Quiet(MotoRequestHandler):
        def log(self, *args, **kwargs):  # no access log on stderr
            pass

    app = _Counting(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
    print(f"PORT {server.server_port}", flush=True)

    def watch_parent() -> None:
        sys.stdin.buffer.read()  # EOF: the parent closed the pipe or died
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    _serve()
