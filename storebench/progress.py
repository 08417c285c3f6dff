"""One progress bar for long loops: a tqdm bar on stderr when it is a terminal, nothing otherwise.

Used by ``storebench generate`` and by the benchmark suite's dataset cache
(which passes ``around``, pytest's capture switched off, so the bar reaches
the terminal through pytest's output capturing).
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import TypeVar

T = TypeVar("T")


def quiet(items: Iterable[T], total: int, desc: str) -> Iterable[T]:
    """No bar: ``items`` as they are (the default where nobody watches)."""
    return items


def progress(items: Iterable[T], total: int, desc: str, *, min_total: int = 0, every: int = 1,
             around: Callable[[], AbstractContextManager] = contextlib.nullcontext) -> Iterator[T]:
    """Yield ``items``, drawing a bar of ``total`` images labelled ``desc`` on a terminal.

    No bar when stderr is not a terminal or ``total < min_total``.  The bar
    is updated every ``every`` items; each draw runs inside ``around()``.
    tqdm's monitor thread is off: DataLoader workers fork the process.
    """
    with around():
        tty = sys.stderr.isatty()
    if not tty or total < min_total:
        yield from items
        return
    from tqdm import tqdm

    tqdm.monitor_interval = 0
    with around():
        bar = tqdm(total=total, desc=desc, unit="img", leave=False, file=sys.stderr, mininterval=0.5)
    done = 0
    try:
        for i, item in enumerate(items, 1):
            yield item
            if i % every == 0:
                with around():
                    bar.update(i - done)
                done = i
    finally:
        with around():
            bar.close()
