"""Hypothesis profiles for the test suite: ``HYPOTHESIS_PROFILE=dev|ci|nightly``."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# I/O-bound property tests: no deadline; @given tests make their own temp dirs.
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=20, **_common)
settings.register_profile("ci", max_examples=8, derandomize=True, print_blob=True, **_common)
settings.register_profile("nightly", max_examples=300, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
