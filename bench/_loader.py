"""What a training script puts between a reader and ``torch.utils.data.DataLoader``.

A module of its own (importing torch) so that spawn and forkserver workers
can import the Dataset wrapper and the collate function by name.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


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


def collate(samples) -> dict:
    """Tensors of a batch: images stacked when they share a shape, else a list.

    Reader images may be read-only views (memory maps, shared blocks), so they
    are copied (``np.stack``/``np.array``) before ``torch.from_numpy``.
    """
    imgs = [s.image for s in samples]
    first = imgs[0]
    if all(i.shape == first.shape and i.dtype == first.dtype for i in imgs):
        images = torch.from_numpy(np.stack(imgs))
    else:
        images = [torch.from_numpy(np.array(i)) for i in imgs]
    out = {"image": images, "label": torch.tensor([s.label for s in samples]),
           "key": [s.key for s in samples]}
    if any(len(s.boxes) for s in samples):
        out["boxes"] = [torch.from_numpy(np.array(s.boxes)) for s in samples]
        out["box_labels"] = [torch.from_numpy(np.array(s.box_labels)) for s in samples]
    return out


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
