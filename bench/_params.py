"""The parameter lists of the sweep: loader settings and bound rows."""
from __future__ import annotations

from typing import NamedTuple

import pytest

from ._bounds import FLOOR, GATHER, PREAD


class LoaderSpec(NamedTuple):
    """One DataLoader setting of the sweep; its id reads ``w2-fork-persist``."""

    workers: int
    mp_context: str | None
    persistent: bool

    @property
    def id(self) -> str:
        if not self.workers:
            return "w0"
        return f"w{self.workers}-{self.mp_context}" + ("-persist" if self.persistent else "")


def loader_specs(opts) -> list[LoaderSpec]:
    """No workers once; each worker count under each start method, persistent off and on."""
    specs = []
    for w in opts.workers:
        if w == 0:
            specs.append(LoaderSpec(0, None, False))
            continue
        for ctx in opts.mp_contexts:
            for p in opts.persistent:
                specs.append(LoaderSpec(w, ctx, p))
    return specs


def bound_params(formats: dict) -> list:
    """``pytest.param(bound, op)`` for the bounds ``formats`` (id -> Format) declare, each op it
    is measured for; floor, gather and pread (the physical reference) always.

    A library bound is listed only when its format is, so its library imports.
    """
    bounds = {FLOOR.name: FLOOR, GATHER.name: GATHER, PREAD.name: PREAD}
    for fmt in formats.values():
        bounds.setdefault(fmt.bound.name, fmt.bound)
    return [pytest.param(b, op, id=f"{b.name}-{op}") for b in bounds.values() for op in b.ops]
