"""Per-session state of the benchmark suite, kept on the pytest config.

The root conftest parses the options into :class:`Session` at configure time;
the bench fixtures use its data cache, format list and results, and the root
conftest's hooks read them back at the end.
"""
from __future__ import annotations

import contextlib
from functools import cached_property

import pytest

from storebench.progress import progress

from ._bounds import Pool, make_pool
from ._data import DataCache
from ._options import BenchOptions
from ._results import Results

SESSION = pytest.StashKey["Session"]()


class Session:
    """Options, datasets, formats and results of one pytest run."""

    def __init__(self, config, opts: BenchOptions):
        self.config = config
        self.opts = opts
        self.results = Results()
        self._pools: dict[tuple, Pool] = {}

    @cached_property
    def data(self) -> DataCache:
        return DataCache(self.opts.data_dir, self.opts.seed, progress=self.progress)

    @cached_property
    def _selection(self) -> tuple[list, dict]:
        from storebench.formats.testing import format_params

        wanted, params, fmts = self.opts.formats, [], {}
        for p in format_params():
            fmt = p.values[0]
            name = fmt.name if fmt is not None else p.id
            if wanted is not None and name not in wanted and p.id not in wanted:
                continue
            params.append(pytest.param(p.id, id=p.id, marks=p.marks))
            if fmt is not None:
                fmts[p.id] = fmt
        return params, fmts

    @property
    def format_params(self) -> list:
        """``pytest.param(format id)`` per selected format variant; unavailable ones skip with the reason."""
        return self._selection[0]

    @property
    def formats(self) -> dict:
        """Format id -> Format instance, for the selected available formats."""
        return self._selection[1]

    def check_formats(self) -> None:
        """Raise ValueError for a --formats entry that names no format."""
        if self.opts.formats is None:
            return
        from storebench import formats

        known = set(formats.names()) | set(self.formats)
        bad = [f for f in self.opts.formats if f not in known]
        if bad:
            raise ValueError(f"--formats: unknown {', '.join(map(repr, bad))}; known: "
                             f"{', '.join(sorted(known))}")

    def format(self, fmt_id: str):
        return self.formats[fmt_id]

    def dataset_or_skip(self, fmt, preset: str, n: int):
        """``fmt``'s cached copy of ``(preset, n)``; the test is skipped if ``fmt`` cannot store it."""
        from ._data import Unsupported

        try:
            return self.data.dataset(fmt, preset, n)
        except Unsupported as err:
            pytest.skip(str(err))

    def dataset_records(self) -> list[dict]:
        """The datasets this session used (none if it used no data)."""
        return self.data.records() if "data" in self.__dict__ else []

    def close(self) -> None:
        if "data" in self.__dict__:
            self.data.clean_scratch()

    def pool(self, preset: str, n: int) -> Pool:
        """The in-memory pool of ``(preset, n)`` for bounds; the two latest are kept."""
        key = (preset, n)
        if key not in self._pools:
            if len(self._pools) >= 2:
                del self._pools[next(iter(self._pools))]
            self._pools[key] = make_pool(self.data.source(preset, n))
        return self._pools[key]

    # ---- progress bars

    @contextlib.contextmanager
    def terminal(self):
        """Let output through pytest's capture (for progress bars)."""
        capman = self.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
            yield

    def progress(self, items, total: int, desc: str):
        """Wrap ``items`` in a tqdm bar when stderr is a terminal (datasets of 1000 images or more)."""
        return progress(items, total, desc, min_total=1000, every=256, around=self.terminal)


def get(config) -> Session:
    return config.stash[SESSION]
