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

        wanted, params, fmts = self._canonical(self.opts.formats), [], {}
        for p in format_params():
            fmt = p.values[0]
            name = fmt.name if fmt is not None else p.id
            if wanted is not None and name not in wanted and p.id not in wanted:
                continue
            params.append(pytest.param(p.id, id=p.id, marks=p.marks))
            if fmt is not None:
                fmts[p.id] = fmt
        for fmt in self._named_ids(wanted or (), fmts):
            params.append(pytest.param(fmt.id, id=fmt.id))
            fmts[fmt.id] = fmt
        return params, fmts

    @staticmethod
    def _canonical(wanted):
        """``--formats`` with ids spelled as their format spells them (option order, defaults)."""
        if wanted is None:
            return None
        from storebench import formats

        out: list[str] = []
        for text in wanted:
            if "[" in text:
                try:
                    text = formats.from_id(text).id
                except (KeyError, ImportError, ValueError):
                    pass  # check_formats names it
            out.append(text)
        return tuple(out)

    @staticmethod
    def _named_ids(wanted, have: dict) -> list:
        """``--formats`` entries that are format ids with options outside ``bench_variants``
        (``hdf5[gzip,level=2,layout=stack]``), as instances; names and unknown ids are left to
        :meth:`check_formats`."""
        from storebench import formats

        out: list = []
        for text in wanted:
            if "[" not in text or text in have:
                continue
            try:
                fmt = formats.from_id(text)
            except (KeyError, ImportError, ValueError):
                continue  # check_formats names it
            if fmt.id not in have and all(f.id != fmt.id for f in out):
                out.append(fmt)
        return out

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
        bad, why = [], []
        for text in self.opts.formats:
            if text in known:
                continue
            try:
                if formats.from_id(text).id in known:
                    continue
            except ImportError:
                continue  # a known format whose library is missing: its param skips with the reason
            except (KeyError, ValueError) as err:
                if "[" in text:
                    why.append(str(err).strip('"'))
                    continue
            bad.append(text)
        if why:
            raise ValueError(f"--formats: {'; '.join(why)}")
        if bad:
            raise ValueError(f"--formats: unknown {', '.join(map(repr, bad))}; known: "
                             f"{', '.join(sorted(known))} (or any of their ids with options, "
                             "e.g. hdf5[gzip,level=2,layout=stack])")

    def format(self, fmt_id: str):
        """The selected format of this id, or (a row measuring a format of its own, such as the
        correctness rows') the instance the id names."""
        if fmt_id not in self.formats:
            from storebench import formats

            self.formats[fmt_id] = formats.from_id(fmt_id)
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
