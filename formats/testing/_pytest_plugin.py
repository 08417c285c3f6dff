"""pytest plugin (entry point ``pytest11``): the markers :class:`FormatTests` uses.

A plug-in package's test file that subclasses ``FormatTests`` inherits tests
marked ``slow`` (and ``torch``: the native-loader tests); registering the markers here means ``--strict-markers`` needs
no configuration in that package.  ``pytest -m "not slow"`` skips them.
"""
from __future__ import annotations


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: long race and fuzz trials of storebench's FormatTests")
    config.addinivalue_line("markers", "torch: needs PyTorch (FormatTests' native-loader tests)")
