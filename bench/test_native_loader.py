"""One shuffled epoch through each format's own training loader, beside test_loader's DataLoader rows.

Ids read ``test_native_loader[tar-w2-cifar-n1000-warm]``.  A round iterates
one epoch of :meth:`Format.native_loader` (WebDataset, Lance's torch
dataset, Grain, ...: the library reads its own files, shuffles and starts its
own workers), made untimed before the round, so a round includes starting
and stopping the workers, as test_loader's rows without persistent workers.
The worker counts are ``--workers``'; the start method and persistence are
the library's, recorded as ``mp_context`` and ``persistent``.  The rows are
compared with the format's bound as test_loader's are (its batch loop), and
record ``native_loader`` (the library's loader) and ``time_to_first_batch_s``
(:func:`bench._loader.time_to_first_batch`: from creating the loader to the
first batch in hand, once per row after the timed rounds).  Formats without
a native loader are skipped at collection.  Each test asserts the epoch saw
every sample exactly once.
"""
from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the native loader benchmarks need PyTorch")

from bench import _session
from bench._case import Case
from bench._loader import epoch, quiet_workers, time_to_first_batch
from bench._params import LoaderSpec

pytestmark = pytest.mark.torch


def pytest_generate_tests(metafunc):
    if "native_fmt_id" not in metafunc.fixturenames:
        return
    s = _session.get(metafunc.config)
    params = []
    for p in s.format_params:
        fmt = s.formats.get(p.values[0])
        if fmt is not None and fmt.native_loader_name is None:
            p = pytest.param(*p.values, id=p.id, marks=pytest.mark.skip(
                reason=f"{fmt.id} has no native loader (its native_loader_name is None)"))
        params.append(p)
    metafunc.parametrize("native_fmt_id", params)
    workers = s.opts.workers
    metafunc.parametrize("native_workers", workers, ids=[f"w{w}" for w in workers])


def test_native_loader(runner, session, native_fmt_id, native_workers, preset, n, cache):
    opts = session.opts
    fmt = session.format(native_fmt_id)
    case = Case(fmt, preset, n, cache, session.dataset_or_skip(fmt, preset, n))

    def new_loader():
        return fmt.native_loader(case.dataset.path, batch_size=opts.batch_size, workers=native_workers,
                                 seed=opts.seed)

    try:
        made = new_loader()
    except ImportError as err:
        pytest.skip(f"{fmt.id}: {fmt.native_loader_name} is unavailable: {err}")

    def timed(loader):
        with quiet_workers():
            return epoch(loader)

    keys = case.reads(runner, timed, "native-loader", open_round=lambda: (new_loader(),),
                      close_round=lambda args: None, bounds=runner.bounds_for(fmt, "loader", preset, n))
    with case.dataset.open() as r:
        assert sorted(keys) == sorted(r.keys()), "the epoch did not see every sample exactly once"
    first = time_to_first_batch(new_loader)
    spec = LoaderSpec(native_workers, getattr(made, "mp_context", None), getattr(made, "persistent", False))
    case.record(runner, "native-loader", loader=spec, batch_size=opts.batch_size,
                extra={"native_loader": fmt.native_loader_name, "time_to_first_batch_s": first})
