"""Object-store plumbing: s3:// locations and their options, the local S3 endpoint's counters and
faults, and the latency model of the remote benchmark rows (FormatTests covers every format)."""
from __future__ import annotations

import pickle

import pytest

from bench._remote import projected_epoch_s, remote_info
from storebench import fixtures, formats
from storebench.formats import LocalOnlyError, Remote


def test_remote_urls_and_options_are_checked():
    r = Remote("s3://bucket/a/b/", {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s"})
    assert (r.bucket, r.prefix, r.url, str(r / "x.bin")) == ("bucket", "a/b", "s3://bucket/a/b", "s3://bucket/a/b/x.bin")
    assert pickle.loads(pickle.dumps(r)) == r
    assert r.lance_options()["aws_endpoint"] == "http://127.0.0.1:9" and r.lance_options()["allow_http"] == "true"
    with pytest.raises(ValueError, match="not an s3://bucket/prefix URL"):
        Remote("gs://bucket/x")
    with pytest.raises(ValueError, match=r"unknown storage option\(s\) \['endpoint'\]"):
        Remote("s3://bucket/x", {"endpoint": "http://127.0.0.1:9"})
    assert formats.is_remote("s3://b/x") and not formats.is_remote("/data/s3:/x")


def test_storage_options_on_a_local_path_are_refused(tmp_path):
    path = tmp_path / "ds"
    formats.get("npy").write(fixtures.make_dataset("cifar", 2), path)
    with pytest.raises(ValueError, match="storage_options are for s3:// URLs"):
        formats.get("npy").open(path, storage_options={"key": "k"})


def test_local_only_formats_name_why(s3_server):
    # refused before any request: nothing is uploaded there
    with pytest.raises(LocalOnlyError, match="lmdb reads local files only: LMDB memory-maps") as err:
        formats.get("lmdb").open("s3://storebench/anything", storage_options=s3_server.storage_options)
    assert isinstance(err.value, formats.DatasetError) and err.value.path == "s3://storebench/anything"


def test_open_dataset_from_s3_counts_ranged_gets(tmp_path, s3_server):
    path = tmp_path / "ds"
    data = list(fixtures.make_dataset("cifar", 6))
    formats.get("tar").write(data, path)
    url = s3_server.upload(path, "tests/tar")
    assert s3_server.upload(path, "tests/tar") == url  # once: the second upload finds the manifest
    with formats.open_dataset(url, storage_options=s3_server.storage_options) as r:
        s3_server.reset()
        assert r[4] == data[4]
        st = s3_server.stats()
    assert st["get"] == st["range_get"] == 1 and 0 < st["bytes"] < 20_000  # one member, by range
    with pytest.raises(FileNotFoundError, match="no storebench.json there"):
        formats.open_dataset(s3_server.url("tests/nothing"), storage_options=s3_server.storage_options)


def test_faults_fail_the_first_get_of_each_object_up_to_the_limit(s3_server):
    s3_server.put("tests/faults/a", b"a" * 1000)
    s3_server.put("tests/faults/b", b"b" * 1000)
    r = Remote(s3_server.url("tests/faults"), s3_server.storage_options)
    s3_server.faults("503", limit=1)
    try:
        s3_server.reset()
        assert r.read_bytes("a") == b"a" * 1000 and r.read_bytes("b") == b"b" * 1000
        assert s3_server.stats()["failed"] == 1  # a, once (retried); b never
    finally:
        s3_server.faults(None)
    with pytest.raises(ValueError, match="one of"):
        s3_server.faults("timeout")


def test_latency_model():
    # 1000 requests at 20 ms over 8 in flight + 125 MB at 1 Gbit/s + 0.5 s CPU
    assert projected_epoch_s(1000, 125e6, 0.5, rtt_ms=20, bandwidth_mbps=1000, concurrency=8) == \
        pytest.approx(2.5 + 1.0 + 0.5)

    class Opts:
        rtt_ms, bandwidth_mbps, concurrency = 20.0, 1000.0, 8
    rounds = [{"get": 100, "range_get": 100, "head": 1, "list": 1, "put": 0, "bytes": 1_000_000, "failed": 0,
               "cpu_s": 0.2}] * 3
    info = remote_info(rounds, n=100, raw_bytes=500_000, opts=Opts, remote_reads="ranges")
    assert info["get_requests_per_sample"] == 1.0 and info["requests_per_sample"] == 1.02
    assert info["bytes_per_sample"] == 10_000.0 and info["read_amplification"] == 2.0
    assert info["range_get_fraction"] == 1.0
    assert info["projected_epoch_s"] == round(102 * 0.02 / 8 + 8e6 / 1e9 + 0.2, 3)
    assert info["projected_epoch_s_serial"] == round(102 * 0.02 + 8e6 / 1e9 + 0.2, 3)
