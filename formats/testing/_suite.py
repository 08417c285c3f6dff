"""FormatTests: storebench's conformance suite as a class that a format's test file subclasses.

In the style of zarr's ``zarr.testing.store.StoreTests``: the subclass names
the format, and inherits every check storebench runs on its own formats::

    class TestMyFormat(FormatTests):
        format_cls = MyFormat
        format_options = {"level": 3}             # optional
        golden = Path(__file__).parent / "golden"  # optional: a dataset an older release wrote

Only the format's declared ``lossless`` flag and ``modes`` change what is
checked.  The tests take the instance under test from the ``fmt`` fixture, so
a subclass can also parametrize ``fmt`` itself (storebench's own tests do, over
the registry); :attr:`FormatTests.once_per_format` names the tests that start
processes or damage every file, which need not run for every option set.

Property tests build their hypothesis settings when they run, so they follow
the profile loaded by then (``deadline=None``: every example does I/O).
"""
from __future__ import annotations

import os
import pickle
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storebench.fixtures.strategies import sample_lists

from .. import ALL_MODES, DatasetError, Format, Sample, _registry, open_dataset
from .._manifest import CHECKSUMS
from . import (
    assert_all_same,
    assert_same,
    check_reader,
    check_roundtrip,
    edge_samples,
    golden_samples,
    mode_sample,
    volume_edge_samples,
)
from ._badinput import BadInputTests
from ._common import cifar, leftovers, supported
from ._native import NativeLoaderTests
from ._processes import ProcessTests
from ._readers import ReaderPinningTests
from ._regions import RegionTests
from ._remote import RemoteTests
from ._writers import WriterTests

_IO_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]


class FormatTests(ProcessTests, WriterTests, BadInputTests, ReaderPinningTests, RegionTests, NativeLoaderTests,
                  RemoteTests):
    """The conformance suite for one format; subclass it and set :attr:`format_cls`.

    Attributes
    ----------
    format_cls : type of Format
        The format under test.
    format_options : dict
        Constructor options of the instance under test (default: none).
    golden : path, optional
        A dataset written by this format and options with an earlier release
        (:func:`~storebench.formats.testing.write_golden`), committed with the
        tests; today's reader must read it back.  None skips the golden test.
    golden_expected : sequence of Sample, optional
        What ``golden`` holds; default the
        :func:`~storebench.formats.testing.golden_samples` the format stores.
    once_per_format : frozenset of str
        Tests that start processes or damage every file of a dataset.
    """

    format_cls: ClassVar[type[Format] | None] = None
    format_options: ClassVar[dict[str, Any]] = {}
    golden: ClassVar[str | os.PathLike | None] = None
    golden_expected: ClassVar[Sequence[Sample] | None] = None
    once_per_format: ClassVar[frozenset[str]] = frozenset({
        "test_reader_in_worker_processes", "test_kill_9_mid_write_never_leaves_a_partial_dataset",
        "test_disk_full_is_a_clear_error_and_leaves_nothing", "test_four_readers_while_another_process_writes",
        "test_damaged_files_give_typed_errors_or_correct_data", "test_stateful_reader",
        "test_golden_dataset_reads_back",
        "test_fuzzed_damage_gives_typed_errors_or_correct_data", "test_fuzzed_damage_many_seeds",
        "test_damaged_shared_index_is_a_dataset_error",
        "test_two_writers_of_one_path", "test_live_writers_temp_dir_survives_another_writer",
        "test_dead_writers_temp_dir_is_cleaned",
        "test_open_reader_when_another_process_writes_over_the_dataset", "test_open_reader_when_the_path_moves",
        "test_open_reader_when_the_dataset_is_deleted", "test_native_loader_with_workers",
        "test_object_store_reads_match_local", "test_object_store_faults_are_retried_or_typed",
    })

    @pytest.fixture
    def fmt(self) -> Format:
        """The instance under test: ``format_cls(**format_options)``."""
        if self.format_cls is None:
            pytest.fail(f"{type(self).__name__}: set format_cls to the Format subclass under test")
        return self.format_cls(**self.format_options)

    @pytest.fixture(scope="class")
    @classmethod
    def dataset_of(cls, tmp_path_factory):
        """``dataset_of(fmt)``: one small dataset of the edge cases per format id, shared."""
        made: dict[str, Path] = {}

        def make(fmt: Format) -> Path:
            if fmt.id not in made:
                path = tmp_path_factory.mktemp("formattests") / "ds"
                fmt.write(supported(fmt, edge_samples()), path)
                made[fmt.id] = path
            return made[fmt.id]
        return make

    # ----------------------------------------------------------------------- round trips

    def test_roundtrip(self, fmt):
        """Hypothesis lists of samples of every declared mode, read back through every path."""
        strategy = sample_lists(modes=fmt.modes, max_size=6, fixed_shape=fmt.fixed_shape)

        @settings(deadline=None, suppress_health_check=_IO_HEALTH)
        @given(data=st.data())
        def roundtrip(data):
            samples = data.draw(strategy, label="samples")
            batch = None
            if samples:
                batch = data.draw(st.lists(st.integers(-len(samples), len(samples) - 1), max_size=12),
                                  label="batch")
            with tempfile.TemporaryDirectory() as d:  # not tmp_path: it is not reset between examples
                check_roundtrip(fmt, samples, Path(d) / "ds", batch)
        roundtrip()

    def test_roundtrip_edge_cases(self, fmt, tmp_path):
        """The hand-picked edge cases, no samples at all, and one sample."""
        edge = supported(fmt, edge_samples())
        check_roundtrip(fmt, edge, tmp_path / "edge")
        check_roundtrip(fmt, [], tmp_path / "empty")
        check_roundtrip(fmt, edge[:1], tmp_path / "one")
        volumes = supported(fmt, volume_edge_samples())
        if volumes:
            check_roundtrip(fmt, volumes, tmp_path / "volumes")

    def test_modes(self, fmt, tmp_path):
        """Every declared mode is stored (byte-exact if lossless); every other is refused by key,
        naming what the format stores; images and volumes never share a dataset.  A
        ``fixed_shape`` format stores each mode in a dataset of its own."""
        images = [mode_sample(*m) for m in sorted(fmt.modes) if len(m) == 2]
        volumes = [mode_sample(*m) for m in sorted(fmt.modes) if len(m) == 3]
        # check_reader compares pixels byte for byte when the format is lossless, and
        # dtype and shape always.
        for name, stored in (("images", images), ("volumes", volumes)):
            if not stored:
                continue
            for k, group in enumerate([[s] for s in stored] if fmt.fixed_shape else [stored]):
                check_roundtrip(fmt, group, tmp_path / f"{name}{k}")
        for m in sorted(ALL_MODES - fmt.modes):
            bad = mode_sample(*m, key=f"refused {m}")
            first = (volumes if len(m) == 3 else images) or images or volumes
            with pytest.raises(ValueError, match=re.escape(repr(bad.key))) as info:
                fmt.write([first[0], bad], tmp_path / "refused")
            assert f"{fmt.name} cannot store {m[0]}" in str(info.value)
            assert not (tmp_path / "refused").exists()
            assert leftovers(tmp_path, "refused") == []
        if images and volumes:
            with pytest.raises(ValueError, match="one kind or the other"):
                fmt.write([images[0], volumes[0]], tmp_path / "mixed")
            assert not (tmp_path / "mixed").exists()

    # ----------------------------------------------------------------------- writing

    def test_write_report(self, fmt, tmp_path):
        samples = supported(fmt, edge_samples())
        report = fmt.write(samples, tmp_path / "ds")
        files = [p for p in (tmp_path / "ds").rglob("*") if p.is_file()]
        assert report.count == len(samples)
        assert report.n_files == len(files)
        assert report.bytes_on_disk == sum(p.stat().st_size for p in files)
        with open_dataset(tmp_path / "ds") as r:
            assert r.format == fmt

    def test_fixed_shape_refuses_another_shape_and_leaves_nothing(self, fmt, tmp_path):
        """A ``fixed_shape`` format refuses a sample of another image shape, or dtype, than the
        first by its key, and leaves nothing at the path; samples of one shape write."""
        if not fmt.fixed_shape:
            pytest.skip(f"{fmt.id} stores samples of any shape in one dataset (fixed_shape is false)")
        mode = min(fmt.modes, key=lambda m: (len(m), m))  # a 2-D image mode where there is one
        first = mode_sample(*mode, key="first")
        twin = Sample("same shape", first.image[::-1].copy(), label=1)
        bad = [Sample("other shape", first.image[:-1].copy())]
        bad += [mode_sample(*m, key="other dtype") for m in sorted(fmt.modes)
                if len(m) == len(mode) and m[1:] == mode[1:] and m[0] != mode[0]][:1]
        for other in bad:
            with pytest.raises(ValueError, match=re.escape(repr(other.key))) as info:
                fmt.write([first, twin, other], tmp_path / "ds")
            assert repr(first.key) not in str(info.value)
            assert not (tmp_path / "ds").exists()
            assert leftovers(tmp_path, "ds") == []
        check_roundtrip(fmt, [first, twin], tmp_path / "ds")

    def test_duplicate_key_leaves_nothing(self, fmt, tmp_path):
        s = supported(fmt, edge_samples())[0]
        with pytest.raises(ValueError, match=re.escape(repr(s.key))):
            fmt.write([s, s], tmp_path / "ds")
        assert not (tmp_path / "ds").exists()
        assert leftovers(tmp_path, "ds") == []

    def test_not_a_sample_is_refused(self, fmt, tmp_path):
        s = supported(fmt, edge_samples())[0]
        with pytest.raises(TypeError, match=r"samples\[1\]: expected a Sample"):
            fmt.write([s, {"key": "x"}], tmp_path / "ds")
        assert not (tmp_path / "ds").exists()
        assert leftovers(tmp_path, "ds") == []

    def test_failed_write_keeps_previous_dataset(self, fmt, tmp_path):
        """A source that raises midway leaves the old dataset whole; overwrite needs asking."""
        good = supported(fmt, edge_samples())
        fmt.write(good, tmp_path / "ds")

        def broken():
            yield from good[:2]
            raise RuntimeError("source died")
        with pytest.raises(RuntimeError, match="source died"):
            fmt.write(broken(), tmp_path / "ds", overwrite=True)
        with fmt.open(tmp_path / "ds") as r:
            if fmt.lossless:
                check_reader(fmt, r, good)
            else:
                assert_all_same(good, list(r), lossless=False)
        assert leftovers(tmp_path, "ds") == []
        with pytest.raises(FileExistsError, match="overwrite=True"):
            fmt.write(good[:1], tmp_path / "ds")
        report = fmt.write(good[:1], tmp_path / "ds", overwrite=True)
        assert report.count == 1
        with fmt.open(tmp_path / "ds") as r:
            assert len(r) == 1 and r[0].key == good[0].key
        assert leftovers(tmp_path, "ds") == []

    # ----------------------------------------------------------------------- reading and errors

    def test_open_errors_name_the_path(self, fmt, tmp_path):
        with pytest.raises(FileNotFoundError, match="missing"):
            fmt.open(tmp_path / "missing")
        empty = tmp_path / "empty"
        empty.mkdir()
        with pytest.raises(DatasetError, match=re.escape(str(empty))):
            fmt.open(empty)
        a_file = tmp_path / "file.bin"
        a_file.write_bytes(b"\x89PNG not really")
        with pytest.raises(DatasetError, match="file.bin"):
            fmt.open(a_file)
        other = next(f for f in [_registry.get("npy"), _registry.get("pickle")] if f.name != fmt.name)
        other.write([], tmp_path / "other")
        with pytest.raises(DatasetError, match=re.escape(f"{other.name!r} dataset, not {fmt.name!r}")):
            fmt.open(tmp_path / "other")

    def test_read_errors(self, fmt, dataset_of):
        path = dataset_of(fmt)
        r = fmt.open(path)
        n = len(r)
        for bad in (n, -n - 1, 10**9):
            with pytest.raises(IndexError, match="out of range"):
                r[bad]
        with pytest.raises(IndexError):
            r.read_batch([0, n])
        with pytest.raises(KeyError, match="no such key"):
            r.get("no such key")
        with pytest.raises(TypeError):
            r["1x1"]
        r.close()
        with pytest.raises(ValueError, match="closed"):
            r[0]
        with fmt.open(path) as r2:
            assert len(r2.read_batch([])) == 0
        with pytest.raises(ValueError, match="closed"):
            r2[0]

    def test_verify_reports_bad_keys(self, fmt, tmp_path):
        samples = cifar(fmt, 6)
        if len(samples) < 6:
            pytest.skip(f"{fmt.id} cannot store the cifar preset")
        fmt.write(samples, tmp_path / "ds")
        with fmt.open(tmp_path / "ds") as r:
            assert r.verify() == []
        crc = tmp_path / "ds" / CHECKSUMS
        raw = bytearray(crc.read_bytes())
        raw[4 * 2] ^= 0xFF  # sample 2's stored checksum no longer matches its data
        crc.write_bytes(bytes(raw))
        with fmt.open(tmp_path / "ds") as r:
            assert r.verify() == [samples[2].key]
            assert_same(samples[1], r[1], lossless=fmt.lossless)
        with fmt.open(tmp_path / "ds", verify=True) as r:
            with pytest.raises(DatasetError,
                               match=re.escape(f"(key {samples[2].key!r}) does not match its checksum")):
                r[2]
            with pytest.raises(DatasetError, match="checksum"):
                list(r)
            assert r[3].key == samples[3].key

    def test_format_identity(self, fmt):
        """Registered under its name, pickles, an id naming exactly its non-default options,
        declared flags of the right types, and a module docstring that says what, when and caveats."""
        cls = type(fmt)
        assert _registry.available()[fmt.name] is cls
        assert _registry.get(fmt.name, **fmt.options) == fmt
        assert pickle.loads(pickle.dumps(fmt)) == fmt
        assert (fmt.id == fmt.name) == (fmt == cls()), "defaults add nothing to the id, other options do"
        assert isinstance(fmt.lossless, bool) and fmt.modes <= ALL_MODES and fmt.modes
        assert isinstance(fmt.random_access, bool) and isinstance(fmt.executes_code, bool)
        assert isinstance(fmt.image_codec, str) and fmt.image_codec
        assert isinstance(fmt.libraries, tuple) and all(isinstance(d, str) for d in fmt.libraries)
        assert isinstance(fmt.bound.name, str) and fmt.bound.name
        module = __import__(cls.__module__, fromlist=["_"])
        assert module.__doc__ and len(module.__doc__.split()) >= 25, "module docstring: what, when, caveats"
        if fmt.executes_code:
            assert "untrusted" in module.__doc__, "formats that unpickle must warn about untrusted data"

    # ----------------------------------------------------------------------- golden files

    def golden_dataset(self, fmt: Format) -> tuple[Path, list[Sample]] | None:
        """(path, expected samples) of the golden dataset for ``fmt``, or None for none.

        The default reads :attr:`golden` and :attr:`golden_expected`; a
        subclass that parametrizes ``fmt`` overrides this.
        """
        if self.golden is None:
            return None
        expected = self.golden_expected
        return Path(self.golden), list(supported(fmt, golden_samples(fmt.modes)) if expected is None else expected)

    def test_golden_dataset_reads_back(self, fmt):
        """Today's reader reads a dataset an earlier release wrote, byte for byte, checksums intact."""
        given = self.golden_dataset(fmt)
        if given is None:
            pytest.skip(f"{fmt.id}: no golden dataset given (set golden to one written by write_golden)")
        path, expected = given
        assert path.is_dir(), (f"no golden dataset for {fmt.id} at {path}: write it once with "
                               f"storebench.formats.testing.write_golden and commit it")
        with fmt.open(path) as r:
            got = list(r)
            assert_all_same(expected, got, lossless=fmt.lossless)
            assert_all_same(got, [r[i] for i in range(len(r))])
            assert r.verify() == []
        if not fmt.lossless:
            for a, b in zip(expected, got):
                err = abs(a.image.astype(int) - b.image.astype(int)).mean()
                assert err < 8, f"{a.key}: mean abs error {err:.1f} after lossy round trip"
        with open_dataset(path) as r:
            assert r.format.name == fmt.name
