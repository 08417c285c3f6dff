"""NativeLoaderTests: a format's own training loader (:meth:`Format.native_loader`), checked like its reader.

For a format whose ``native_loader_name`` is set: one epoch over the suite's
edge cases (and volumes, where the format stores them) sees every key once,
with the reader's labels and, for a lossless format, its pixels byte for
byte, in batches as the contract makes them; the order is not the stored one,
and the same seed gives the same order (every native loader so far promises
that: WebDataset's seeded shuffles, torch's seeded sampler, Grain's seeded
``shuffle``).  Other formats skip with the reason; so do formats whose loader's
library (or torch) is missing.  The test with two worker processes is in
FormatTests' ``once_per_format`` (spawned workers import torch and the
library: lance's take about 8 s here, Grain's 2 s, webdataset's forked 0.2 s).
"""
from __future__ import annotations

import numpy as np
import pytest

from .._api import Format
from .._sample import Sample
from . import edge_samples, volume_edge_samples
from ._common import supported

BATCH = 5  #: samples per batch: the edge cases make a few batches, the last one short


def _epoch(fmt: Format, path, *, workers: int, seed: int) -> list[dict]:
    pytest.importorskip("torch", reason="native loaders need PyTorch")
    try:
        loader = fmt.native_loader(path, batch_size=BATCH, workers=workers, seed=seed)
        return list(loader)
    except ImportError as err:
        pytest.skip(f"{fmt.id}: native loader {fmt.native_loader_name} unavailable: {err}")


def _check_epoch(fmt: Format, batches: list[dict], stored: list[Sample]) -> list[str]:
    """Every sample of ``stored`` exactly once, as the contract batches it; returns the keys in order."""
    import torch

    want = {s.key: s for s in stored}
    keys: list[str] = []
    for b in batches:
        assert set(b) >= {"key", "label", "image"}, f"batch keys {sorted(b)}"
        n = len(b["key"])
        assert 0 < n <= BATCH and all(type(k) is str for k in b["key"])
        assert isinstance(b["label"], torch.Tensor) and b["label"].dtype == torch.int64 and b["label"].shape == (n,)
        images = b["image"]
        if isinstance(images, torch.Tensor):
            assert images.shape[0] == n
            images = list(images)
        else:
            assert isinstance(images, list) and len(images) == n and all(isinstance(t, torch.Tensor) for t in images)
        for key, label, img in zip(b["key"], b["label"].tolist(), images):
            s = want.get(key)
            assert s is not None, f"key {key!r} is not in the dataset"
            where = f"{fmt.native_loader_name}, sample {key!r}"
            assert label == s.label, f"{where}: label {label} != {s.label}"
            got = img.numpy()
            assert (got.shape, got.dtype) == (s.image.shape, s.image.dtype), \
                f"{where}: image {got.dtype} {got.shape}, the reader's {s.image.dtype} {s.image.shape}"
            if fmt.lossless:
                assert got.tobytes() == np.ascontiguousarray(s.image).tobytes(), f"{where}: pixels differ"
        keys += b["key"]
    assert sorted(keys) == sorted(want), "the epoch did not see every sample exactly once"
    return keys


class NativeLoaderTests:
    """Mixed into FormatTests: the ``native_loader`` contract, for formats that have one."""

    @staticmethod
    def _require_native(fmt: Format) -> None:
        if fmt.native_loader_name is None:
            pytest.skip(f"{fmt.id} has no native loader (its native_loader_name is None)")

    @pytest.mark.torch
    def test_native_loader_epoch(self, fmt, tmp_path):
        """One shuffled epoch in this process: every sample once, pixel-exact, labels equal, shuffled,
        the same order again for the same seed; volumes too where the format stores them."""
        self._require_native(fmt)
        for name, samples in (("images", edge_samples()), ("volumes", volume_edge_samples())):
            samples = supported(fmt, samples)
            if not samples:
                continue
            path = tmp_path / name
            fmt.write(samples, path)
            with fmt.open(path) as r:
                stored = [r[i] for i in range(len(r))]
            keys = _check_epoch(fmt, _epoch(fmt, path, workers=0, seed=3), stored)
            if len(stored) >= 8:  # 8! orders: a seeded shuffle that keeps this one is a bug, not luck
                assert keys != [s.key for s in stored], f"{fmt.native_loader_name} did not shuffle"
            again = [k for b in _epoch(fmt, path, workers=0, seed=3) for k in b["key"]]
            assert again == keys, f"{fmt.native_loader_name}: the same seed gave another order"

    @pytest.mark.torch
    def test_native_loader_with_workers(self, fmt, tmp_path):
        """Two of the library's own worker processes: still every sample once, pixel-exact."""
        self._require_native(fmt)
        samples = supported(fmt, edge_samples())
        fmt.write(samples, tmp_path / "ds")
        with fmt.open(tmp_path / "ds") as r:
            stored = [r[i] for i in range(len(r))]
        _check_epoch(fmt, _epoch(fmt, tmp_path / "ds", workers=2, seed=3), stored)
