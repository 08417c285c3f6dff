"""One read benchmark's subject, carried through the test as one object.

A read row needs the format, the preset, ``n``, the page-cache state and the
cached dataset; :class:`Case` holds them, so a test function asks for ``case``
and passes it on instead of threading five arguments through every call.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from storebench.formats import Format, Reader

from ._data import Dataset
from ._run import Runner, format_info


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
              close_round: Callable[[tuple], None] | None = None) -> Any:
        """Time ``target`` over this case's files under its cache state, with ``op``'s bounds interleaved."""
        bounds = runner.bounds_for(self.fmt, op, self.preset, self.n) if op else []
        return runner.reads(target, files=self.dataset.files, cache=self.cache,
                            open_round=open_round or self.open_reader,
                            close_round=close_round or _close_reader, bounds=bounds)

    def info(self, **extra: Any) -> dict:
        """The static extra_info of this case's row (``loader``, ``batch_size`` as extras)."""
        return format_info(self.fmt, self.preset, self.n, cache=self.cache, ds=self.dataset, **extra)

    def record(self, runner: Runner, op: str, *, items: int | None = None, rate_key: str = "images/s",
               **extra: Any) -> None:
        """Register this case's row for ``op`` (``items`` per round, default ``n``)."""
        runner.record(op=op, preset=self.preset, n=self.n, cache=self.cache,
                      items=self.n if items is None else items,
                      raw_bytes=self.dataset.raw_bytes if rate_key == "images/s" else None,
                      info=self.info(**extra), fmt_id=self.fmt.id, rate_key=rate_key)


def _close_reader(args: tuple) -> None:
    args[0].close()
