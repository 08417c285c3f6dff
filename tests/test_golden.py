"""Today's readers still read the datasets committed under tests/golden/, byte for byte."""
from __future__ import annotations

import pytest
from golden_samples import golden_for
from make_golden import GOLDEN
from storebench.formats._registry import BUILTIN
from storebench.formats.testing import assert_all_same, format_params

from storebench import formats


@pytest.mark.parametrize("fmt", format_params(variants=False))
def test_golden_dataset_reads_back(fmt):
    path = GOLDEN / fmt.name
    if fmt.name not in BUILTIN:
        pytest.skip(f"{fmt.name} is not a built-in format: no committed golden dataset")
    assert path.is_dir(), f"no golden dataset for {fmt.name}: run `make golden FORMATS={fmt.name}`"
    expected = golden_for(fmt)
    with fmt.open(path) as r:
        got = list(r)
        assert_all_same(expected, got, lossless=fmt.lossless)
        assert_all_same(got, [r[i] for i in range(len(r))])
    if not fmt.lossless:
        for a, b in zip(expected, got):
            err = abs(a.image.astype(int) - b.image.astype(int)).mean()
            assert err < 8, f"{a.key}: mean abs error {err:.1f} after lossy round trip"
    with formats.open_dataset(path) as r:
        assert r.format.name == fmt.name
