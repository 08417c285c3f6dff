"""A third-party format with only its module, its entry point and a FormatTests subclass
is found, tested, benchmarked and measured against its declared bound, with no edit to
storebench: examples/storebench-plugin-example, installed into a scratch directory.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "storebench-plugin-example"
NAME = "pngdir"


def _run(args: list[str], env: dict, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(args)}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def test_the_readme_shows_the_example_as_it_is():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### A format in your own package"):text.index("## Benchmarks")]
    toml, python = re.findall(r"```toml\n(.*?)```", section, re.S), re.findall(r"```python\n(.*?)```", section, re.S)
    assert python == [(EXAMPLE / "test_plugin.py").read_text()]
    assert len(toml) == 1 and toml[0] in (EXAMPLE / "pyproject.toml").read_text()
    module = (EXAMPLE / "storebench_plugin_example.py").read_text()
    assert 40 <= len(module.splitlines()) <= 80 and 'image_codec = "png"' in module


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """(env, source copy): the example installed with pip into a directory on PYTHONPATH."""
    assert importlib.util.find_spec("setuptools"), "building the example needs setuptools (storebench[test])"
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "src"  # pip builds in the tree it is given: build a copy, not examples/
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
          "--no-index", "--target", str(tmp / "site"), str(src)], env)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp / "site"), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env, src


def test_the_entry_point_registers_the_format_with_its_declared_bound(plugin):
    env, _ = plugin
    r = _run([sys.executable, "-c", f"""if True:
        import json
        from storebench import formats
        from storebench.formats._registry import BUILTIN
        cls = formats.available()[{NAME!r}]
        fmt = formats.get({NAME!r})
        print(json.dumps({{"module": cls.__module__, "builtin": {NAME!r} in BUILTIN,
                          "failed": sorted(n for n in formats.unavailable() if n not in BUILTIN),
                          "codec": fmt.image_codec, "bound": fmt.bound.name}}))
        """], env)
    got = json.loads(r.stdout)  # (a built-in may be unavailable on this Python: zarr on 3.10)
    assert got == {"module": "storebench_plugin_example", "builtin": False, "failed": [],
                   "codec": "png", "bound": f"decode-only[{NAME}]"}


def test_its_ten_line_formattests_subclass_passes(plugin):
    env, src = plugin
    test_file = (src / "test_plugin.py").read_text()
    assert len(test_file.splitlines()) <= 12 and "class TestPNGDir(FormatTests):" in test_file
    # The example's own pytest settings (strict, warnings as errors), not storebench's conftest.
    r = _run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "-m", "not slow",
              "test_plugin.py"], env, cwd=src)
    summary = r.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"=* ?(\d+) passed(, [1-5] skipped)?(, 1 deselected)? in [\d.]+s.*", summary)
    assert m, summary  # nothing failed or warned
    assert int(m[1]) >= 20, summary
    # The tests that do not apply: pngdir keeps its index as JSON lines, not index.npz, reads
    # whole images for a region, stores samples of any shape (the fixed-shape refusal test) and has
    # no native loader of its library.
    skipped = [line for line in r.stdout.splitlines() if line.startswith("SKIPPED")]
    reasons = ("keeps no index.npz", "partial_reads is false", "fixed_shape is false", "has no native loader")
    assert all(any(reason in line for reason in reasons) for line in skipped), skipped


def test_the_benchmarks_run_its_rows_against_decode_only(plugin, tmp_path):
    env, _ = plugin
    out = tmp_path / "bench.json"
    _run([sys.executable, "-m", "pytest", "bench/test_io.py", "bench/test_bounds.py", "-p", "no:cacheprovider",
          "-q", "--benchmark-enable", "--sizes", "10", "--rounds", "1", "--formats", NAME,
          "--data-dir", str(tmp_path / "data"), "--benchmark-json", str(out)], env)
    rows = {b["name"]: b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]}
    bound = f"decode-only[{NAME}]"
    for op in ("write", "open", "scan", "random", "batch"):
        assert any(name.startswith(f"test_{op}[{NAME}-cifar-n10") for name in rows), (op, sorted(rows))
    assert rows[f"test_bound[{bound}-scan-cifar-n10]"]["bound"] == bound
    for op in ("scan", "random", "batch"):
        info = rows[f"test_{op}[{NAME}-cifar-n10-warm]"]
        assert info["bound"] == bound and info["efficiency"] > 0, info
