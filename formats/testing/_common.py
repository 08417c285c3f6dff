"""Small helpers the FormatTests modules share."""
from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from storebench.fixtures import make_dataset

from .._api import Format
from .._sample import Sample


def supported(fmt: Format, samples: Sequence[Sample]) -> list[Sample]:
    """The samples whose mode ``fmt`` stores, in order; for a ``fixed_shape`` format only the
    largest group of them sharing one image shape and dtype (the first of equal groups)."""
    out = [s for s in samples if s.mode in fmt.modes]
    if not fmt.fixed_shape or not out:
        return out
    groups: dict[tuple, list[Sample]] = {}
    for s in out:
        groups.setdefault((s.image.shape, s.image.dtype), []).append(s)
    return max(groups.values(), key=len)  # max keeps the first of equal lengths


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def cifar(fmt: Format, n: int, seed: int = 0) -> list[Sample]:
    return supported(fmt, make_dataset("cifar", n, seed=seed))


def same_sample(a: Sample, b: Sample, lossless: bool) -> bool:
    """``a == b``; for a lossy format, every field but the pixels (their dtype and shape included)."""
    if lossless:
        return a == b
    return (a.key, a.label, a.meta, a.image.shape, a.image.dtype) == \
        (b.key, b.label, b.meta, b.image.shape, b.image.dtype) and \
        np.array_equal(a.boxes, b.boxes) and np.array_equal(a.box_labels, b.box_labels)


def child_context(fmt: Format):
    """How the suite starts a child process that uses ``fmt``: ``fork`` (the child inherits open
    readers as they are), or ``forkserver`` where the format is not ``fork_safe`` (its library's
    threads do not survive fork, and its reads there raise the RuntimeError the contract asks for)."""
    return mp.get_context("fork" if fmt.fork_safe else "forkserver")


def in_forked_child(target: Callable, args: tuple, timeout: float) -> tuple[str, str]:
    """Run ``target(*args, conn)`` in a child (:func:`child_context` of the format ``args[0]``, a
    forked child when ``args[0]`` is no Format); what it sends on ``conn``, or the outcome
    ``("hang", ...)`` / ``("signal", ...)`` when it answers nothing in ``timeout`` s or dies."""
    ctx = child_context(args[0]) if isinstance(args[0], Format) else mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, child))
    proc.start()
    child.close()
    outcome = None
    if parent.poll(timeout):
        try:
            outcome = parent.recv()
        except EOFError:
            pass
    else:
        outcome = ("hang", f"no answer in {timeout} s")
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    parent.close()
    return outcome or ("signal", f"child died with exit code {proc.exitcode}")
