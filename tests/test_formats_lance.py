"""Checks specific to lance beyond the shared conformance suite.

pylance itself reads what we wrote (one version on disk, our pixels exact), ``r[i]`` is one
``take`` of one row and a batch one sorted ``take``, and a process forked from one that used
pylance is refused with a RuntimeError naming spawn (pylance is not fork-safe: it crashes there).
"""
from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from storebench import fixtures, formats
from storebench.formats import DatasetError, Sample
from storebench.formats.testing import assert_all_same, assert_same

if "lance" not in formats.available():
    pytest.skip(f"lance: {formats.unavailable().get('lance')}", allow_module_level=True)

import lance  # after the skip: pylance is optional


def _mixed() -> list[Sample]:
    return (list(fixtures.make_dataset("cifar", 5))
            + [Sample("uint16/2-D ü", (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4), label=2,
                      meta={"view": "PA", "n": None}),
               Sample("grey (H,W,1)", np.arange(30, dtype=np.uint8).reshape(5, 6, 1),
                      boxes=[[0, 0, 1.5, 2], [1, 1, 6, 5]], box_labels=[7, 3]),
               Sample("ct", np.arange(-6, 6, dtype=np.int16).reshape(3, 4))]
            + list(fixtures.make_dataset("imagenet", 2)))


def test_lance_pylance_reads_our_dataset_pixel_exact_in_one_version(tmp_path):
    samples = _mixed()
    report = formats.get("lance").write(samples, tmp_path / "ds")
    ds = lance.dataset(tmp_path / "ds")  # the dataset directory is the Lance dataset
    assert [v["version"] for v in ds.versions()] == [1] and ds.count_rows() == len(samples)
    assert len(list((tmp_path / "ds/_versions").glob("*.manifest"))) == 1  # nothing old left on disk
    for i in (0, 6, len(samples) - 1, 3):
        row = ds.take([i]).to_pylist()[0]
        s = samples[i]
        assert (row["key"], row["label"], row["dtype"]) == (s.key, s.label, s.image.dtype.name)
        assert row["image"] == s.image.tobytes()
        assert row["boxes"] == s.boxes.tolist() and row["box_labels"] == s.box_labels.tolist()
    pixels = sum(s.image.nbytes for s in samples)
    assert pixels < report.bytes_on_disk < pixels + 64 * 1024  # uncompressed, one copy
    lz4 = formats.get("lance", compression="lz4")  # pylance's default: the synthetic photos compress
    assert lz4.write(samples, tmp_path / "lz4").bytes_on_disk < 0.8 * pixels
    with lz4.open(tmp_path / "lz4") as r:
        assert_all_same(samples, list(r))


class _Spy:
    """A LanceDataset whose ``take`` calls are recorded."""

    def __init__(self, ds):
        self.ds, self.takes = ds, []

    def take(self, indices, columns=None):
        self.takes.append(list(indices))
        return self.ds.take(indices, columns)

    def __getattr__(self, name):
        return getattr(self.ds, name)


def test_lance_reads_one_row_per_item_and_one_sorted_take_per_batch(tmp_path):
    fmt = formats.get("lance")
    samples = list(fixtures.make_dataset("cifar", 50))
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        spy = r._handles = _Spy(r.handles)
        assert_same(samples[23], r[23])
        assert_same(samples[-1], r[-1])
        assert spy.takes == [[23], [49]]
        idx = [41, 3, 45, 7, 3]
        assert_all_same([samples[i] for i in idx], r.read_batch(idx))
        assert spy.takes[2:] == [[3, 7, 41, 45]]
        assert_all_same(samples, list(r))
        assert len(spy.takes) == 3  # a scan is to_batches, no take


def _read_first(reader):
    return reader[0]


@pytest.mark.filterwarnings("ignore:lance is not fork-safe:UserWarning")  # pylance warns on every fork
def test_lance_refuses_a_forked_child_and_reads_in_a_spawned_one(tmp_path):
    fmt = formats.get("lance")
    samples = list(fixtures.make_dataset("cifar", 4))
    fmt.write(samples, tmp_path / "ds")
    assert not fmt.fork_safe
    with fmt.open(tmp_path / "ds") as r:
        assert_same(samples[0], r[0])  # pylance's threads run in this process now
        with mp.get_context("fork").Pool(1) as pool:
            with pytest.raises(RuntimeError, match="spawn"):
                pool.apply(_read_first, (r,))
            with pytest.raises(RuntimeError, match="spawn"):  # writes crash there too: refused
                pool.apply(fmt.write, (samples, tmp_path / "forked"))
        with mp.get_context("spawn").Pool(1) as pool:
            assert_same(samples[0], pool.apply(_read_first, (r,)))
    assert not (tmp_path / "forked").exists()


def test_lance_verify_checks_every_lance_file_before_pylance_reads_it(tmp_path):
    fmt = formats.get("lance")
    samples = list(fixtures.make_dataset("cifar", 6))
    fmt.write(samples, tmp_path / "ds")
    (data,) = (tmp_path / "ds/data").iterdir()
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # a pixel byte: pylance would read it back as it is
    data.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="data/.* damaged"):
        fmt.open(tmp_path / "ds", verify=True)
    with fmt.open(tmp_path / "ds") as r:  # a plain open reads only the manifests and the index
        with pytest.raises(DatasetError, match="data/.* damaged"):
            r.verify()
