"""Unpickling the Samples of the pickle and shelve formats, old files included.

A pickled Sample names the function that rebuilds it by module path.  Format
version 1 files (storebench before the ``storebench.formats`` namespace) name
``formats._api._sample``; version 2 files name
``storebench.formats._sample.make_sample``.  Old files are read through an
unpickler that maps the old name to the new one, never by importing a
top-level ``formats`` module (which may be an unrelated package).
"""
from __future__ import annotations

import io
import pickle

#: (module, name) of older storebench releases -> where it lives now.
RENAMED = {("formats._api", "_sample"): ("storebench.formats._sample", "make_sample")}


class _RenamingUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        module, name = RENAMED.get((module, name), (module, name))
        return super().find_class(module, name)


def loads(buf, *, format_version: int):
    """``pickle.loads(buf)``, mapping the names of format version 1 files."""
    if format_version >= 2:
        return pickle.loads(buf)
    return _RenamingUnpickler(io.BytesIO(buf)).load()
