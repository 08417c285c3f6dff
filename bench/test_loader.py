"""One shuffled DataLoader epoch over every format, collated to tensors.

Ids read ``test_loader[lmdb-cifar-n1000-warm-w2-fork-persist]``.  Batches
come from one ``read_batch`` per batch (the Dataset's ``__getitems__``).
Without persistent workers a round includes starting and stopping the
workers; with them, the workers start in an untimed first epoch.  Each test
asserts the epoch saw every sample exactly once.  ``time_to_first_batch_s``
in extra_info: seconds from creating the loader (the reader opened, no
worker started) to the first batch in hand, once per row after the timed
rounds (:func:`bench._loader.time_to_first_batch`).
"""
from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the DataLoader benchmarks need PyTorch")

from bench._loader import epoch, make_loader, quiet_workers, skip_unless_fork_safe, time_to_first_batch

pytestmark = pytest.mark.torch


def test_loader(runner, session, case, loader):
    if case.cache == "cold" and loader.persistent:
        pytest.skip("persistent workers keep their readers (and memory maps) open, "
                    "so the page cache cannot be emptied between epochs")
    opts = session.opts
    skip_unless_fork_safe(case.fmt, loader.workers, loader.mp_context)

    def timed(dl):
        with quiet_workers():
            return epoch(dl)

    def new_loader():
        return make_loader(case.dataset.open(), batch_size=opts.batch_size, workers=loader.workers,
                           mp_context=loader.mp_context, persistent=loader.persistent, seed=opts.seed)

    def open_round():
        dl = new_loader()
        if loader.persistent:
            timed(dl)  # the workers start in this untimed epoch and serve the timed ones
        return (dl,)

    def close(args):
        args[0].dataset.reader.close()

    keys = case.reads(runner, timed, "loader", open_round=open_round, close_round=close)
    with case.dataset.open() as r:
        assert sorted(keys) == sorted(r.keys()), "the epoch did not see every sample exactly once"
    first = time_to_first_batch(new_loader, close=lambda dl: dl.dataset.reader.close())
    case.record(runner, "loader", loader=loader, batch_size=opts.batch_size,
                extra={"time_to_first_batch_s": first})
