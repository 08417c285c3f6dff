"""One read benchmark's subject, carried through the test as one object.

A read row needs the format, the preset, ``n``, the page-cache state and the
cached dataset; :class:`Case` holds them, so a test function asks for ``case``
and passes it on instead of threading five arguments through every call.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from storebench.formats import Format, Reader

from ._bounds import BoundRun
from ._data import Dataset
from ._ops import RoundMeter
from ._run import Runner, format_info

#: Above this size a format without random access (``r[i]`` decodes a whole
#: chunk or row group, many samples) skips the shuffled benchmarks (random,
#: batch, patch): a shuffled pass would decode each chunk about once per sample in it.
SEQUENTIAL_LIMIT = 10_000


def require_random_access(fmt: Format, n: int) -> None:
    """Skip a shuffled benchmark of ``fmt`` at ``n`` where it has no random access."""
    if not fmt.random_access and n > SEQUENTIAL_LIMIT:
        pytest.skip(f"{fmt.id} has no random access: r[i] decodes a whole chunk or row group, "
                    f"so a shuffled pass over n={n} decodes each one once per sample in it")


@dataclass(frozen=True)
class Case:
    """A format's cached copy of ``(preset, n)``, read under ``cache`` (warm or cold)."""

    fmt: Format
    preset: str
    n: int
    cache: str
    dataset: Dataset

    def open_reader(self) -> tuple[Reader]:
        """A reader with its files and index open (untimed), as the one argument of a round."""
        r = self.dataset.open()
        r.handles
        return (r,)

    def reads(self, runner: Runner, target: Callable[..., Any], op: str | None, *,
              open_round: Callable[[], tuple] | None = None,
              close_round: Callable[[tuple], None] | None = None,
              bounds: list[BoundRun] | None = None, meter: RoundMeter | None = None) -> Any:
        """Time ``target`` over this case's files under its cache state, with ``op``'s bounds
        interleaved (or ``bounds``, when given)."""
        if bounds is None:
            bounds = runner.bounds_for(self.fmt, op, self.preset, self.n) if op else []
        return runner.reads(target, files=self.dataset.files, cache=self.cache,
                            open_round=open_round or self.open_reader,
                            close_round=close_round or _close_reader, bounds=bounds, meter=meter)

    def info(self, **extra: Any) -> dict:
        """The static extra_info of this case's row (``loader``, ``batch_size`` as extras)."""
        return format_info(self.fmt, self.preset, self.n, cache=self.cache, ds=self.dataset, **extra)

    def record(self, runner: Runner, op: str, *, items: int | None = None, rate_key: str = "images/s",
               raw_bytes: int | None = None, bound: str | None = None, extra: dict | None = None,
               **kw: Any) -> None:
        """Register this case's row for ``op`` (``items`` per round, default ``n``).

        MB/s counts ``raw_bytes`` per round, by default the dataset's pixels for
        images/s rows; ``bound`` is the bound the efficiency is against (the
        format's by default); ``extra`` goes into extra_info as is, ``kw`` through
        :func:`format_info` (``loader``, ``batch_size``).
        """
        if raw_bytes is None and rate_key == "images/s":
            raw_bytes = self.dataset.raw_bytes
        runner.record(op=op, preset=self.preset, n=self.n, cache=self.cache,
                      items=self.n if items is None else items, raw_bytes=raw_bytes,
                      info={**self.info(**kw), **(extra or {})}, fmt_id=self.fmt.id, rate_key=rate_key,
                      bound=bound)


def _close_reader(args: tuple) -> None:
    args[0].close()
