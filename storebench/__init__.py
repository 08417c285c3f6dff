"""storebench: the command-line tool and result handling around `formats` and `fixtures`."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("storebench")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0+unknown"
