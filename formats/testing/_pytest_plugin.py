"""pytest plugin (entry point ``pytest11``): the markers :class:`FormatTests` uses.

A plug-in package's test file that subclasses ``FormatTests`` inherits tests
marked ``slow`` (and ``torch``: the native-loader tests); registering the markers here means ``--strict-markers`` needs
no configuration in that package.  ``pytest -m "not slow"`` skips them.  The ``s3_server``
fixture (a local S3 endpoint, moto's) serves FormatTests' object-store tests and ``pytest bench --store s3``.
"""
from __future__ import annotations

import pytest


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: long race and fuzz trials of storebench's FormatTests")
    config.addinivalue_line("markers", "torch: needs PyTorch (FormatTests' native-loader tests)")


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 endpoint on 127.0.0.1 for the session: moto's S3 server in a child process
    (:class:`storebench.formats.testing.s3.S3Server`), with a bucket; stops when the session ends."""
    from .s3 import S3Server

    with S3Server() as server:
        yield server
