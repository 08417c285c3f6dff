"""Parametrization of the benchmarks over the registry and the sweep options.

A test asks for the axes it varies by argument name, and this hook
parametrizes them from the command line: ``fmt_id`` (every available
format and bench variant, by id), ``preset``, ``n``, ``patch_n`` (the sizes
of the patch rows: ``--sizes`` if given, else the smallest default),
``cache``, ``loader`` (workers, start method, persistent workers) and
``bound, op``; a read benchmark takes ``case`` (:class:`bench._case.Case`),
which carries format, preset, n, cache state and dataset.  Nothing here
names a format.
"""
from __future__ import annotations

import pytest

from bench import _session
from bench._case import Case
from bench._options import workload_sizes
from bench._pagecache import unsupported as cold_unsupported
from bench._params import bound_params, loader_specs
from bench._run import Runner


def pytest_ignore_collect(collection_path, config):
    """test_remote.py's rows exist only with ``--store s3`` (they start a local S3 endpoint)."""
    if collection_path.name == "test_remote.py":
        return "s3" not in _session.get(config).opts.stores
    return None


def pytest_generate_tests(metafunc):
    s = _session.get(metafunc.config)
    opts, names = s.opts, metafunc.fixturenames
    if "bound" in names:
        metafunc.parametrize("bound,op", bound_params(s.formats))
    if "fmt_id" in names:
        metafunc.parametrize("fmt_id", s.format_params)
    if "preset" in names:
        metafunc.parametrize("preset", opts.presets)
    if "n" in names:
        metafunc.parametrize("n", opts.sizes, ids=[f"n{n}" for n in opts.sizes])
    if "patch_n" in names:
        sizes = workload_sizes(metafunc.config, opts)
        metafunc.parametrize("patch_n", sizes, ids=[f"n{n}" for n in sizes])
    if "cache" in names:
        metafunc.parametrize("cache", opts.cache, indirect=True)
    if "loader" in names:
        specs = loader_specs(opts)
        metafunc.parametrize("loader", specs, ids=[sp.id for sp in specs])


@pytest.fixture(scope="session")
def session(request) -> _session.Session:
    return _session.get(request.config)


@pytest.fixture
def fmt(session, fmt_id):
    return session.format(fmt_id)


@pytest.fixture
def source(session, preset, n):
    """The generated samples of (preset, n), cached on disk as an npy dataset."""
    return session.data.source(preset, n)


@pytest.fixture
def dataset(session, fmt, preset, n):
    """``fmt``'s cached copy of (preset, n); skipped if ``fmt`` cannot store the preset."""
    return session.dataset_or_skip(fmt, preset, n)


@pytest.fixture
def case(fmt, preset, n, cache, dataset) -> Case:
    """The read benchmark's subject: format, preset, n, cache state and dataset in one object."""
    return Case(fmt, preset, n, cache, dataset)


@pytest.fixture
def cache(request):
    """The page-cache state; cold is skipped where files cannot be evicted here."""
    if request.param == "cold" and (why := cold_unsupported()):
        pytest.skip(f"cold cache: {why}")
    return request.param


@pytest.fixture
def runner(benchmark, session, request) -> Runner:
    return Runner(benchmark, session, request)
