"""What FormatTests runs in child processes, in a module that imports little.

Spawn and forkserver children import the module of the function they run;
this one needs only numpy and the formats, not pytest or hypothesis.
"""
from __future__ import annotations

import os
import resource
import signal

from .._api import Reader


def read_all(reader: Reader) -> list:
    """Every sample by position, then the first and last as a batch."""
    return [reader[i] for i in range(len(reader))] + reader.read_batch([0, len(reader) - 1])


def read_everything(reader: Reader) -> list:
    """Every sample by position, then a scan."""
    return [reader[i] for i in range(len(reader))] + list(reader)


def write_then_exit(fmt, path, n: int) -> None:
    """Write ``n`` cifar samples over ``path`` and leave at once (a writer to kill midway)."""
    from storebench.fixtures import make_dataset

    fmt.write(make_dataset("cifar", n, seed=7), path, overwrite=True)
    os._exit(0)


def write_with_fsize_limit(fmt, path, conn) -> None:
    """Write 300 cifar samples with no file allowed past 8 KiB; send what the writer raised."""
    from storebench.fixtures import make_dataset

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    # Per-file limit: 8 KiB is below every format's largest file for 300 cifar images.
    resource.setrlimit(resource.RLIMIT_FSIZE, (8 * 1024, resource.RLIM_INFINITY))
    try:
        fmt.write(make_dataset("cifar", 300, seed=2), path)
        conn.send(("no error", ""))
    except BaseException as err:  # report whatever the writer raised
        conn.send((type(err).__name__, str(err)))
    conn.close()
