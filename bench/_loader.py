"""What a training script puts between a reader and ``torch.utils.data.DataLoader``.

A module of its own (importing torch) so that spawn and forkserver workers
can import the Dataset wrapper and the collate function by name.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from storebench.workloads import collate  # noqa: F401  (the loader's collate_fn, importable by name)


class ReaderDataset(Dataset):
    """A map-style Dataset over a reader; batches come from one ``read_batch``.

    The reader pickles as (format, path) and reopens lazily in each worker.
    """

    def __init__(self, reader):
        self.reader = reader

    def __len__(self):
        return len(self.reader)

    def __getitem__(self, i):
        return self.reader[i]

    def __getitems__(self, indices):
        # DataLoader's fetcher calls this with a batch's indices instead of n __getitem__.
        return self.reader.read_batch(indices)


def make_loader(reader, *, batch_size: int, workers: int, mp_context: str | None,
                persistent: bool, seed: int) -> torch.utils.data.DataLoader:
    """A shuffled DataLoader over ``reader`` with a seeded order."""
    return torch.utils.data.DataLoader(
        ReaderDataset(reader), batch_size=batch_size, shuffle=True, collate_fn=collate,
        num_workers=workers, multiprocessing_context=mp_context if workers else None,
        persistent_workers=persistent, generator=torch.Generator().manual_seed(seed))


def epoch(loader) -> list[str]:
    """One full pass; returns the keys seen, in order."""
    keys = []
    for batch in loader:
        keys += batch["key"]
    return keys
