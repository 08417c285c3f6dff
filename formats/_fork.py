"""Per-process reader handles: after ``fork`` the child drops what it inherited.

The child keeps the reader's directory descriptor (``_dir_fd``): it still names
the dataset the parent opened, so the child's files reopen from that dataset
even if the path has been moved or written over since.  Locks are replaced, as
another thread of the parent may have held one at the moment of the fork.
"""
from __future__ import annotations

import os
import threading
import weakref

# Readers alive in this process; after fork the child drops their handles
# (without closing them: the parent still uses the same descriptors).
_live_readers: weakref.WeakSet = weakref.WeakSet()
_inherited: list = []


def _after_fork_in_child():
    for r in list(_live_readers):
        r._open_lock = threading.Lock()
        r._lock = threading.Lock()
        if r._handles is not None:
            _inherited.append(r._handles)
            r._handles = None
            r._index = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
