"""What the formats' native loaders share: their batches and the settings a benchmark row records.

A native loader (:meth:`storebench.formats.Format.native_loader`) decodes each
sample to ``(key, label, image)`` with the image a NumPy array of the shape
storebench's reader gives, and batches them here as
:func:`storebench.workloads.collate` does: keys a list, labels an int64
tensor, images stacked where the batch's shapes and dtypes agree, else a
list.  :func:`collate` is a DataLoader ``collate_fn`` (in a worker it stacks
straight into shared memory, as ``default_collate`` does); :func:`stack` and
:func:`to_torch` split the same into NumPy in the library's workers and
tensors in the main process (Grain's way).  Imports torch only when called.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

Item = tuple[str, int, np.ndarray]  #: a decoded sample: key, label, image


def _same(images: Sequence[np.ndarray]) -> bool:
    first = images[0]
    return all(a.shape == first.shape and a.dtype == first.dtype for a in images)


def _tensors(torch, arrays) -> list:
    # Decoded images may be read-only views of the library's buffers: torch only reads them here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        return [torch.from_numpy(a) for a in arrays]


def collate(items: Sequence[Item]) -> dict:
    """A DataLoader ``collate_fn`` of decoded samples: the batch storebench's loader rows make."""
    import torch
    from torch.utils.data import default_collate

    keys, labels, images = zip(*items)
    tensors = _tensors(torch, images)
    image = default_collate(tensors) if _same(images) else [t.clone() for t in tensors]
    return {"key": list(keys), "label": torch.tensor(labels, dtype=torch.int64), "image": image}


def stack(items: Sequence[Item]) -> dict:
    """The NumPy form of :func:`collate` (what crosses from a library's worker processes)."""
    keys, labels, images = zip(*items)
    image = np.stack(images) if _same(images) else [np.array(a) for a in images]
    return {"key": list(keys), "label": np.array(labels, np.int64), "image": image}


def to_torch(batch: dict) -> dict:
    """A :func:`stack` batch as tensors, without copying."""
    import torch

    image = batch["image"]
    image = _tensors(torch, [image])[0] if isinstance(image, np.ndarray) else _tensors(torch, image)
    return {"key": list(batch["key"]), "label": torch.from_numpy(np.asarray(batch["label"], np.int64)),
            "image": image}


class NativeLoader:
    """One epoch of a library's loader (iterate it), with the settings a benchmark row records.

    Attributes
    ----------
    workers : int
        Worker processes of the library's own kind (0: in the calling process).
    mp_context : str or None
        Their start method, as the library chooses it (None without workers).
    persistent : bool
        Whether they outlive an epoch.
    """

    def __init__(self, epoch: Iterable[dict], *, workers: int, mp_context: str | None, persistent: bool = False):
        self._epoch = epoch
        self.workers = workers
        self.mp_context = mp_context if workers else None
        self.persistent = persistent and bool(workers)

    def __iter__(self) -> Iterator[dict]:
        return iter(self._epoch)
