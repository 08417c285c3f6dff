"""Per-process reader handles: after ``fork`` the child drops what it inherited."""
from __future__ import annotations

import os
import weakref

# Readers alive in this process; after fork the child drops their handles
# (without closing them: the parent still uses the same descriptors).
_live_readers: weakref.WeakSet = weakref.WeakSet()
_inherited: list = []


def _after_fork_in_child():
    for r in list(_live_readers):
        if r._handles is not None:
            _inherited.append(r._handles)
            r._handles = None
            r._index = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

