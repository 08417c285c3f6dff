"""Small helpers the FormatTests modules share."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from storebench.fixtures import make_dataset

from .._api import Format
from .._sample import Sample


def supported(fmt: Format, samples: Sequence[Sample]) -> list[Sample]:
    """The samples whose mode ``fmt`` stores."""
    return [s for s in samples if s.mode in fmt.modes]


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def cifar(fmt: Format, n: int, seed: int = 0) -> list[Sample]:
    return supported(fmt, make_dataset("cifar", n, seed=seed))
