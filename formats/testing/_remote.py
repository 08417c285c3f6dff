"""FormatTests' object-store checks: a dataset uploaded to a local S3 server reads back the same.

Every format either reads ``s3://`` (``remote_reads``) and passes these, or
declares why not (``local_only``) and refuses with a :class:`LocalOnlyError`.
The server (:mod:`storebench.formats.testing.s3`, moto's S3 on 127.0.0.1) is
the ``s3_server`` fixture of storebench's pytest plugin, one per session.
"""
from __future__ import annotations

import pickle

import pytest

from .. import DatasetError, LocalOnlyError, open_dataset
from .s3 import FAULTS

REMOTE_READS = ("ranges", "objects", "shards")
#: objects whose first GET fails in the faults test (each retry costs the client's backoff, ~0.5 s)
FAULTED_OBJECTS = 1


def _prefix(fmt) -> str:
    return "formattests/" + "".join(c if c.isalnum() else "_" for c in fmt.id)


class RemoteTests:
    def test_object_store_reads_match_local(self, fmt, dataset_of, s3_server):
        """Formats with ``remote_reads`` read an uploaded dataset from ``s3://`` exactly as locally
        (every sample in order, batches, keys, a pickled reader, verify); the others refuse."""
        if fmt.remote_reads is None:
            assert isinstance(fmt.local_only, str) and fmt.local_only, "a local-only format says why"
            with pytest.raises(LocalOnlyError, match="reads local files only") as err:
                fmt.open(s3_server.url("never-uploaded"), storage_options=s3_server.storage_options)
            assert fmt.local_only in str(err.value) and "s3://" in str(err.value)
            return
        assert fmt.remote_reads in REMOTE_READS, f"remote_reads {fmt.remote_reads!r}: one of {REMOTE_READS}"
        path = dataset_of(fmt)
        url = s3_server.upload(path, _prefix(fmt))
        with fmt.open(path) as local:
            want = list(local)
        s3_server.reset()
        with open_dataset(url, storage_options=s3_server.storage_options) as r:
            assert r.remote is not None and str(r.path) == url
            assert list(r) == want
            order = list(range(len(want)))[::-1]
            assert r.read_batch(order) == [want[i] for i in order]
            assert [r[i] for i in order[:3]] == [want[i] for i in order[:3]]
            assert r.keys() == [s.key for s in want]
            if want:
                assert r.get(want[-1].key) == want[-1]
                assert pickle.loads(pickle.dumps(r))[0] == want[0]  # what a worker process gets
            assert r.verify() == []
        assert s3_server.stats()["get"] > 0, "the reads went to the server"

    @pytest.mark.parametrize("fault", FAULTS)
    def test_object_store_faults_are_retried_or_typed(self, fmt, dataset_of, s3_server, fault):
        """With the first GET of each object failing (503, reset connection, half a body; the first
        FAULTED_OBJECTS objects asked for), a read
        returns the right samples (the library retried) or raises a DatasetError naming the dataset's
        URL; never wrong pixels."""
        if fmt.remote_reads is None:  # refused before any request, faults or not
            s3_server.reset()
            with pytest.raises(LocalOnlyError):
                fmt.open(s3_server.url(_prefix(fmt)), storage_options=s3_server.storage_options)
            assert s3_server.stats()["get"] == 0
            return
        path = dataset_of(fmt)
        url = s3_server.upload(path, _prefix(fmt))
        with fmt.open(path) as local:
            want = list(local)
        s3_server.faults(fault, limit=FAULTED_OBJECTS)
        ends = [0, len(want) - 1] if want else []  # the first and last samples: every retry costs a backoff
        try:
            with open_dataset(url, storage_options=s3_server.storage_options) as r:
                got = [r[i] for i in ends] + r.read_batch(ends[::-1])
            assert got == [want[i] for i in ends + ends[::-1]]
        except DatasetError as err:
            assert url in str(err), f"the error names the dataset: {err}"
        finally:
            s3_server.faults(None)
        assert s3_server.stats()["failed"] > 0, "a fault was injected"
