"""storebench's benchmark suite: pytest-benchmark over every registered format.

The test modules (``test_io``, ``test_loader``, ``test_bounds``) hold no
per-format code: ``conftest.py`` parametrizes them over the registry.  The
helpers live in private modules: ``_options`` (command line), ``_data``
(datasets cached on disk), ``_pagecache`` (cold-cache eviction and its
check), ``_bounds`` (the bound rows), ``_results`` (rates, efficiency,
machine info) and ``_loader`` (the torch Dataset wrapper).
"""
