"""Root conftest: the benchmark suite's options and pytest-benchmark hooks.

The options live here (not in ``bench/conftest.py``) so that pytest knows them
whatever paths it is given.  See ``bench/_options.py`` for what each means.
"""
from __future__ import annotations

import pytest

from bench import _options, _session
from bench._results import machine_info as bench_machine_info
from bench._results import peak_rss_bytes, storebench_version


def pytest_addoption(parser):
    _options.add_options(parser)


def pytest_configure(config):
    try:
        opts = _options.from_config(config)
        session = _session.Session(config, opts)
        session.check_formats()
    except ValueError as err:
        raise pytest.UsageError(str(err)) from err
    config.stash[_session.SESSION] = session


def pytest_sessionfinish(session):
    s = session.config.stash.get(_session.SESSION, None)
    if s is not None:
        s.close()


def pytest_benchmark_update_machine_info(config, machine_info):
    """Library versions, dbm backend, data-dir file system, RAM, CPUs: nothing volatile.

    pytest-benchmark's own ``cpu`` section holds the current clock speed, which
    moves between runs wherever the CPU scales its frequency; dropped, so that
    ``--benchmark-compare`` warns only when the machine or a library changed.
    """
    cpu = machine_info.get("cpu")
    if isinstance(cpu, dict):
        for key in ("hz_actual", "hz_actual_friendly"):
            cpu.pop(key, None)
    machine_info["storebench"] = bench_machine_info(_session.get(config).opts.data_dir)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Dataset checksums, options and the storebench version/commit of this run."""
    s = _session.get(config)
    output_json["storebench"] = {
        **storebench_version(config.rootpath),
        "options": s.opts.to_json(),
        "command": ["pytest", *config.invocation_params.args],
        "datasets": s.dataset_records(),
        "peak_rss_bytes": peak_rss_bytes(),
    }


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    s = config.stash.get(_session.SESSION, None)
    lines = s.results.summary_lines() if s is not None else []
    if lines:
        terminalreporter.section("storebench: images/s of the fastest round, efficiency against the bound")
        for line in lines:
            terminalreporter.write_line(line)
