"""pytest plugin (entry point ``pytest11``): the markers :class:`FormatTests` uses.

A plug-in package's test file that subclasses ``FormatTests`` inherits tests
marked ``slow``; registering the marker here means ``--strict-markers`` needs
no configuration in that package.  ``pytest -m "not slow"`` skips them.
"""
from __future__ import annotations


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: long race and fuzz trials of storebench's FormatTests")
