"""Bound rows (group ``bound``): what each format's reads cost with the least work.

Ids read ``test_bound[bare-lmdb-random-cifar-n1000]`` and
``test_bound[decode-only[jpeg[75]]-scan-cifar-n100]``.  Only the bounds the
selected formats declare run (floor and gather always); see
``storebench.formats._bound`` for the contract and each format module for its
bound.  Format rows time their bound again, interleaved with their own
rounds, for their efficiency.
"""
from __future__ import annotations

import pytest

from bench._bounds import NoBound


def test_bound(runner, session, bound, op, preset, n):
    try:
        b = runner.open_bound(bound, op, preset, n)
    except NoBound as err:
        pytest.skip(str(err))
    try:
        assert runner.pedantic(b.run) == n
    finally:
        b.close()
    info = {**b.info, "preset": preset, "n": n, "cache": "warm",
            "batch_size": session.opts.batch_size if op == "batch" else None}
    runner.record(op=op, preset=preset, n=n, cache="warm", info=info, items=n,
                  raw_bytes=round(session.pool(preset, n).image_bytes * n), bound=bound.name)
