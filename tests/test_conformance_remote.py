"""FormatTests' object-store tests over the registry, once per format: every registered format reads an
uploaded dataset back from the local S3 endpoint (faults included), or refuses naming why.

They are FormatTests' own (``storebench.formats.testing._remote.RemoteTests``); tests/test_conformance.py
leaves them to this file so that ``make test`` runs them beside the rest of the conformance suite.
"""
from __future__ import annotations

import pytest

from storebench.formats.testing import FormatTests, format_params
from storebench.formats.testing._remote import RemoteTests


@pytest.mark.parametrize("fmt", format_params(variants=False))
class TestObjectStore(RemoteTests):
    dataset_of = FormatTests.dataset_of
