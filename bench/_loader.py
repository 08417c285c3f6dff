"""What a training script puts between a reader and ``torch.utils.data.DataLoader``.

A module of its own (importing torch).  The Dataset is storebench's
:class:`~storebench.workloads.WorkloadDataset` with no workload: one
``read_batch`` per batch (``__getitems__``), the reader reopened in each worker.

Time to first batch (:func:`time_to_first_batch`, extra_info
``time_to_first_batch_s``): seconds from creating a loader (our DataLoader
with its reader opened, or a format's native loader; no worker started yet)
to the first batch in hand, workers started and the first batch read and
collated.  Measured once per row, after its timed rounds (so the page cache
is as the rounds left it: warm for warm rows), never inside a round.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterable, Iterator

import pytest
import torch

from storebench.workloads import WorkloadDataset, collate


def make_loader(reader, *, batch_size: int, workers: int, mp_context: str | None,
                persistent: bool, seed: int) -> torch.utils.data.DataLoader:
    """A shuffled DataLoader over ``reader`` with a seeded order (more workers than cores allowed:
    persistent workers are checked against the cores when the loader is made)."""
    with quiet_workers():
        return torch.utils.data.DataLoader(
            WorkloadDataset(reader, fetch="batch"),  # type: ignore[arg-type]  # a duck-typed map-style dataset
            batch_size=batch_size, shuffle=True, collate_fn=collate,
            num_workers=workers, multiprocessing_context=mp_context if workers else None,
            persistent_workers=persistent, generator=torch.Generator().manual_seed(seed))


def skip_unless_fork_safe(fmt, workers: int, mp_context: str | None) -> None:
    """Skip a loader row whose forked workers cannot read ``fmt`` (its ``fork_safe`` is false:
    tensorstore's threads do not survive fork); spawn and forkserver rows run."""
    if workers and mp_context in (None, "fork") and not fmt.fork_safe:
        pytest.skip(f"{fmt.id} is not fork-safe (Format.fork_safe): its reads fail in forked workers; "
                    "rows with --mp-context spawn or forkserver measure it")


def epoch(loader) -> list[str]:
    """One full pass; returns the keys seen, in order."""
    keys = []
    for batch in loader:
        keys += batch["key"]
    return keys


@contextlib.contextmanager
def quiet_workers() -> Iterator[None]:
    """Silence DataLoader's warning about more workers than cores: a legitimate point of the sweep."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "This DataLoader will create", UserWarning)
        yield


def time_to_first_batch(make: Callable[[], Iterable], close: Callable[[Iterable], None] | None = None) -> float:
    """Seconds from ``make()`` (a new loader, its workers not started) to its first batch in hand.

    The loader's iterator is then closed (its workers stopped) and ``close(loader)`` called.
    """
    start = time.perf_counter()
    loader = make()
    with quiet_workers():
        it = iter(loader)
        next(it, None)
    seconds = time.perf_counter() - start
    stop = getattr(it, "close", None)  # a generator's, Grain's iterator's; a DataLoader's stops on deletion
    if stop is not None:
        stop()
    del it
    if close is not None:
        close(loader)
    return round(seconds, 4)
