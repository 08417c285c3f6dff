"""arrayrecord: array_record's own readers (and Grain's data source) read our files; r[i] is one
ranged read; grouped files are declared without random access; a forked worker reads through a
reader the parent used with the library's thread pool."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from array_record.python.array_record_data_source import ArrayRecordDataSource
from array_record.python.array_record_module import ArrayRecordReader

from storebench import fixtures, formats
from storebench.formats import Sample
from storebench.formats._record import decode
from storebench.formats.arrayrecord import FILE, _ranges
from storebench.formats.testing import assert_all_same, assert_same
from storebench.formats.testing._common import in_forked_child, same_sample


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    rng = np.random.default_rng(0)
    return list(fixtures.make_dataset("cifar", 70)) + [
        Sample("odd/shape", rng.integers(0, 256, (20, 17, 3), np.uint8), 4, [[1, 2, 10, 12]], [3], {"note": "x"}),
        Sample("gray16", rng.integers(0, 4096, (12, 9), np.uint16), 1)]


@pytest.mark.parametrize("group_size", [1, 64])
def test_the_library_and_grains_data_source_read_our_records(tmp_path, samples, group_size):
    formats.get("arrayrecord", group_size=group_size).write(samples, tmp_path / "ds")
    path = str(tmp_path / "ds" / FILE)
    r = ArrayRecordReader(path)
    assert r.num_records() == len(samples)
    assert r.writer_options_string().startswith(f"group_size:{group_size},")
    assert_all_same(samples, [decode(b) for b in r.read_all()])
    assert_same(samples[-2], decode(r.read([len(samples) - 2])[0]))
    r.close()
    with ArrayRecordDataSource(path) as ds:  # what Grain's MapDataset.source reads
        assert len(ds) == len(samples)
        assert_same(samples[-1], decode(ds[len(samples) - 1]))
        assert_all_same([samples[i] for i in (5, 0, 5)], [decode(b) for b in ds.__getitems__([5, 0, 5])])


class _Spy:
    """An ArrayRecordReader whose read calls are recorded."""

    def __init__(self, reader):
        self.reader, self.calls = reader, []

    def read(self, *args):
        self.calls.append(args)
        return self.reader.read(*args)

    def close(self):
        self.reader.close()


def test_r_i_is_one_ranged_read_and_a_batch_one_read(tmp_path, samples):
    fmt = formats.get("arrayrecord")
    fmt.write(samples, tmp_path / "ds")
    n = len(samples)
    with fmt.open(tmp_path / "ds") as r:
        assert fmt.random_access and fmt.bound.name == "bare-arrayrecord"
        spy = r.handles[0] = _Spy(r.handles[0])
        assert_same(samples[7], r[7])
        assert_same(samples[-1], r[-1])
        assert spy.calls == [(7, 8), (n - 1, n)]  # read([i]) would walk every chunk of the file
        assert_all_same([samples[i] for i in (9, 2, 9)], r.read_batch([9, 2, 9]))
        assert spy.calls[2:] == [([9, 2, 9],)]


def test_grouped_files_have_no_random_access_keep_the_last_group_and_scan_whole_groups(tmp_path, samples):
    fmt = formats.get("arrayrecord", group_size=64)
    assert fmt.id == "arrayrecord[64]" and not fmt.random_access and fmt.bound.name == "bare-arrayrecord[64]"
    assert fmt in [formats.get("arrayrecord", **v) for v in fmt.bench_variants]
    fmt = formats.get("arrayrecord", group_size=8)
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        spy = r.handles[0] = _Spy(r.handles[0])
        assert_all_same([samples[i] for i in (10, 13, 30, 71)], [r[10], r[13], r[30], r[-1]])
        assert spy.calls == [(8, 16), (24, 32), (64, 72)]  # a read decodes its chunk: 13 came with 10
    assert _ranges([10] * 10, 4, block=25) == [(0, 4), (4, 8), (8, 10)]  # a chunk is decoded whole
    assert _ranges([10] * 10, 1, block=25) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert _ranges([100], 1, block=25) == [(0, 1)] and _ranges([], 1) == []


@pytest.mark.parametrize("opts", [{"group_size": 0}, {"compression": "lz4"}, {"compression": "zstd:23"},
                                  {"compression": "brotli:-1"}])
def test_bad_options(opts):
    with pytest.raises(ValueError, match=next(iter(opts))):
        formats.get("arrayrecord", **opts)


def _batch_and_scan(r, expected, conn):
    got = r.read_batch(np.arange(len(r))[::-1]) + list(r)  # calls that use the library's thread pool
    want = expected[::-1] + expected
    conn.send(("correct data", "") if all(same_sample(a, b, True) for a, b in zip(want, got, strict=True))
              else ("wrong data", ""))


def test_forked_child_reads_through_a_reader_the_parent_used_with_its_thread_pool(tmp_path, samples):
    fmt = formats.get("arrayrecord", group_size=8)
    fmt.write(samples, tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        assert_all_same(samples, r.read_batch(np.arange(len(r))))  # pool threads started in the parent
        assert_all_same(samples, list(r))
        # The child has none of the pool's threads: every chunk is decoded on its calling thread.
        assert in_forked_child(_batch_and_scan, (r, samples), timeout=60) == ("correct data", "")
        assert_all_same(samples, list(r))


_WRITE_THEN_FORK = """
import os, sys
from storebench import fixtures, formats
fmt = formats.get("arrayrecord")
fmt.write(fixtures.make_dataset("cifar", 5), sys.argv[1])
pid = os.fork()
if pid == 0:
    with fmt.open(sys.argv[1]) as r:
        os._exit(0 if len(list(r)) == 5 else 1)
os._exit(os.waitpid(pid, 0)[1])
"""


def test_a_process_that_only_wrote_can_fork_readers(tmp_path):
    """Without the footer read back at write time, the child's first zstd decompression
    segfaults in riegeli's BackgroundCleaner (the parent only compressed)."""
    r = subprocess.run([sys.executable, "-c", _WRITE_THEN_FORK, str(tmp_path / "ds")], timeout=120)
    assert r.returncode == 0, r.returncode
