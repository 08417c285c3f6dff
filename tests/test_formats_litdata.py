"""litdata: LitData's own StreamingDataset reads what we wrote pixel-exact, our chunks are those
``litdata.optimize`` writes (so our reader reads optimize's output), a local dataset is read in place
(nothing copied into a cache), and ``r[i]`` decodes one item, not LitData's default window."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("litdata", reason="litdata needs torch, which storebench installs on Python 3.11 only")

from litdata import StreamingDataset, optimize

from storebench import fixtures, formats
from storebench.formats import Sample
from storebench.formats.litdata_ import _item
from storebench.formats.testing import assert_all_same, assert_same


def _samples() -> list[Sample]:
    rng = np.random.default_rng(0)
    return list(fixtures.make_dataset("cifar", 20)) + [
        Sample("odd/shape ü", rng.integers(0, 256, (20, 17, 3), np.uint8), 4, [[1, 2, 10, 12]], [3], {"n": 1}),
        Sample("gray16", rng.integers(0, 4096, (12, 9), np.uint16), 1),
        Sample("ct", np.arange(-6, 6, dtype=np.int16).reshape(3, 4))]


def _lightning_files() -> set[str]:
    """Files LitData could cache into: its default cache and the temp dir's litdata-looking entries."""
    out = set()
    for root in (Path.home() / ".lightning", Path("/cache/chunks")):
        if root.exists():
            out |= {str(p) for p in root.rglob("*")}
    return out


def test_streaming_dataset_reads_our_dataset_pixel_exact_in_place(tmp_path):
    samples = _samples()
    before = _lightning_files()
    report = formats.get("litdata").write(samples, tmp_path / "ds")
    names = sorted(os.listdir(tmp_path / "ds"))
    ds = StreamingDataset(str(tmp_path / "ds"))  # LitData's defaults, as its README opens a dataset
    assert len(ds) == len(samples)
    for i in (0, 20, 21, 22, 7):
        item, s = ds[i], samples[i]
        assert (item["key"], item["label"]) == (s.key, s.label)
        assert item["image"].dtype == s.image.dtype and item["image"].shape == s.image.shape
        assert item["image"].tobytes() == s.image.tobytes()
        assert item["boxes"].tolist() == s.boxes.tolist() and item["box_labels"].tolist() == s.box_labels.tolist()
    assert [it["key"] for it in ds] == [s.key for s in samples]  # its own iteration, unshuffled
    with formats.get("litdata").open(tmp_path / "ds") as r:
        assert_all_same(samples, list(r))
    pixels = sum(s.image.nbytes for s in samples)
    assert pixels < report.bytes_on_disk < pixels + 16 * 1024  # one uncompressed copy and small indexes
    # Read in place: nothing appeared in the dataset or in LitData's cache directories.
    assert sorted(os.listdir(tmp_path / "ds")) == names
    assert _lightning_files() == before


def test_our_chunks_are_what_optimize_writes(tmp_path, monkeypatch):
    samples = _samples()
    # optimize's own scratch directories (default: /tmp/chunks and /tmp/data), kept in tmp_path
    monkeypatch.setenv("DATA_OPTIMIZER_CACHE_FOLDER", str(tmp_path / "scratch-chunks"))
    monkeypatch.setenv("DATA_OPTIMIZER_DATA_CACHE_FOLDER", str(tmp_path / "scratch-data"))
    formats.get("litdata").write(samples, tmp_path / "ours")
    # LitData's documented writer, one worker so the order is kept.
    optimize(fn=_item, inputs=samples, output_dir=str(tmp_path / "opt"), chunk_bytes="64MB", num_workers=1,
             reorder_files=False, verbose=False)
    opt = sorted(p.name for p in (tmp_path / "opt").iterdir())
    assert opt == ["chunk-0-0.bin", "index.json"]
    for name in opt:
        assert name in os.listdir(tmp_path / "ours")
    assert (tmp_path / "opt/chunk-0-0.bin").read_bytes() == (tmp_path / "ours/chunk-0-0.bin").read_bytes()
    ours, theirs = (json.loads((tmp_path / d / "index.json").read_text()) for d in ("ours", "opt"))
    assert ours["chunks"] == theirs["chunks"] and ours["config"] == theirs["config"]
    # Byte-equal chunks and equal index entries: our reader reads optimize's output as it reads ours.
    with formats.get("litdata").open(tmp_path / "ours", verify=True) as r:
        assert r.verify() == []


class _Spy:
    """A StreamingDataset whose item loader's decodes are counted."""

    def __init__(self, ds):
        self.ds, self.reads = ds, []

    def __getitem__(self, i):
        self.reads.append(i)
        return self.ds[i]

    def __len__(self):
        return len(self.ds)


def test_r_i_is_one_item_and_the_option_reaches_litdata(tmp_path):
    samples = list(fixtures.make_dataset("cifar", 40))
    fmt = formats.get("litdata")
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        assert r.handles.batch_decode == 0  # LitData's per-item decode, not its window of up to 256
        spy = r._handles = _Spy(r.handles)
        assert_same(samples[33], r[33])
        assert_all_same([samples[i] for i in (9, 2, 9)], r.read_batch([9, 2, 9]))
        assert spy.reads == [33, 2, 9]  # a batch in file order, a repeat read once
    auto = formats.get("litdata", batch_decode="auto")
    assert auto.id == "litdata[auto]" and auto.bound.name == "bare-litdata[auto]"
    with auto.open(tmp_path / "ds") as r:
        assert r.handles.batch_decode == "auto"
        assert_same(samples[5], r[5])


@pytest.mark.parametrize("opts", [{"batch_decode": "fast"}, {"batch_decode": "0"}, {"chunk_bytes": "big"}])
def test_bad_options(opts):
    with pytest.raises(ValueError, match=next(iter(opts))):
        formats.get("litdata", **opts)
