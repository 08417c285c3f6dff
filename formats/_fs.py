"""File-system helpers shared by formats, bench/ and storebench/: reads, sizes, file lists."""
from __future__ import annotations

import os
from pathlib import Path


def read_file(path: str, hint: int = 1 << 16, *, dir_fd: int | None = None) -> bytes:
    """The whole content of a small file, in as few system calls as possible.

    ``open(path, "rb").read()`` costs an fstat, two reads and a FileIO
    object; for the 1-3 KB images of one-file-per-image formats those are
    as slow as decoding.  This is ``open`` + one ``read`` of ``hint`` bytes +
    ``close`` (more reads only for files larger than ``hint``); ``dir_fd``
    saves the lookup of every directory of ``path`` but its last.
    """
    fd = os.open(path, _O_RDONLY, dir_fd=dir_fd)
    try:
        buf = os.read(fd, hint)
        if len(buf) < hint:
            return buf
        parts = [buf]
        while buf:
            buf = os.read(fd, max(hint, 1 << 20))
            parts.append(buf)
        return b"".join(parts)
    finally:
        os.close(fd)


_O_RDONLY = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


class OpenDir:
    """A directory held open, for reads relative to it: ``read_file(name, dir_fd=d.fd)``.

    Opening ``NAME`` relative to the descriptor skips the lookup of every
    directory above (``os.open`` is a third of a small file's read), and keeps
    reading the directory that was opened when its path is moved or replaced.
    """

    __slots__ = ("fd",)

    def __init__(self, name: str | os.PathLike, dir_fd: int | None = None):
        self.fd = os.open(name, _O_DIR, dir_fd=dir_fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def disk_usage(path: os.PathLike | str) -> tuple[int, int]:
    """(total file bytes, file count) under ``path`` (a file or a directory)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size, 1
    total = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            total += os.stat(os.path.join(root, name)).st_size
            files += 1
    return total, files


def dataset_files(path: os.PathLike | str) -> list[Path]:
    """Every file of a dataset, for cache eviction and checksums."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(Path(r) / n for r, _d, names in os.walk(path) for n in names)



def evict(files) -> None:
    """Ask the kernel to drop ``files`` from the page cache (``POSIX_FADV_DONTNEED``, no root
    needed; only clean pages no process maps go: a written dataset is synced)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
