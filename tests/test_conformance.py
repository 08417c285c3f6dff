"""The one contract, checked for every registered format and every bench variant.

:class:`TestFormats` is :class:`~storebench.formats.testing.FormatTests`, the
suite a plug-in's test file subclasses, parametrized over the registry: a new
format module is covered by adding it to the registry, nothing else.  The
tests FormatTests names ``once_per_format`` (worker processes, damaged files,
kill -9, disk full, concurrent readers, the state machine, golden files) run
for each format's default options; all the others for every ``bench_variants``
entry.  Only the ``lossless`` flag and the declared ``modes`` change what is
checked.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from storebench import formats
from storebench.formats._registry import BUILTIN
from storebench.formats.testing import (
    FormatTests,
    check_roundtrip,
    edge_samples,
    format_params,
    golden_samples,
    mode_sample,
)

#: ``STOREBENCH_FORMAT_VARIANTS=defaults`` runs the suite on each format's default options only:
#: `.ci/run` sets it for Python 3.10 and 3.13 (tox), after every bench variant ran on 3.11.
FORMATS = format_params()
DEFAULTS = format_params(variants=False)
GOLDEN = Path(__file__).parent / "golden"  # written by tests/make_golden.py


class TestFormats(FormatTests):
    """FormatTests for every registered format; unavailable ones skip with their install hint."""

    def pytest_generate_tests(self, metafunc):
        if "fmt" in metafunc.fixturenames:
            once = metafunc.definition.originalname in self.once_per_format
            metafunc.parametrize("fmt", DEFAULTS if once else FORMATS)

    # FormatTests' object-store tests run in tests/test_conformance_remote.py (beside this file in make test)
    test_object_store_reads_match_local = None
    test_object_store_faults_are_retried_or_typed = None

    def golden_dataset(self, fmt):
        if fmt.name not in BUILTIN:
            return None  # a plug-in's test file names its own golden dataset
        return GOLDEN / fmt.name, golden_samples(fmt.modes)


@pytest.mark.parametrize("mode", sorted(formats.ALL_MODES))
def test_every_mode_has_a_lossless_home(mode, tmp_path):
    """Each image kind a Sample allows is declared by a lossless format that reads it back byte-exact."""
    homes = [cls for cls in formats.available().values() if cls.lossless and mode in cls.modes]
    assert homes, f"no lossless format stores {mode}"
    npy = formats.get("npy")  # npy (numpy only) stores every mode and is always available
    assert npy.lossless and mode in npy.modes
    sample = mode_sample(*mode)
    npy.write([sample], tmp_path / "ds")
    with npy.open(tmp_path / "ds") as r:
        got = r[0]
    assert got.image.dtype == sample.image.dtype and got.image.shape == sample.image.shape
    assert got.image.tobytes() == sample.image.tobytes()
    check_roundtrip(npy, [sample], tmp_path / "again")


def test_sample_pickles_small():
    s = edge_samples()[3]
    clone = pickle.loads(pickle.dumps(s))
    assert clone == s and clone is not s
    assert len(pickle.dumps(s)) < s.image.nbytes + 600
