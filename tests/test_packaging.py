"""The built wheel installs one top-level name, ``storebench``: never a generic ``formats``
or ``fixtures`` (the package index's testtools ``fixtures`` among them)."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What a clone has that the build must not see (and .gitignore's build outputs).
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".venv-*", ".tox", ".benchmarks", ".hypothesis",
                                     ".storebench-data", ".pytest_cache", ".ruff_cache", ".mypy_cache",
                                     "__pycache__", "*.egg-info", "build", "dist", "results", "examples")


def test_wheel_holds_only_the_storebench_namespace(tmp_path):
    assert importlib.util.find_spec("setuptools"), "building the wheel needs setuptools (storebench[test])"
    src = tmp_path / "src"  # setuptools writes build/ and *.egg-info beside the sources: build a copy
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)
    r = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                        "print(build_meta.build_wheel(sys.argv[1]))", str(tmp_path / "dist")],
                       cwd=src, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wheel = tmp_path / "dist" / r.stdout.split()[-1]
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        top_level = [z.read(n).decode().split() for n in names if n.endswith(".dist-info/top_level.txt")]
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"storebench"}, sorted(tops)
    assert top_level in ([], [["storebench"]]), top_level  # what importers and uninstallers read
    for module in ("storebench/__init__.py", "storebench/cli.py",
                   "storebench/formats/__init__.py", "storebench/formats/_api.py", "storebench/formats/npy.py",
                   "storebench/formats/testing/__init__.py", "storebench/formats/testing/_suite.py",
                   "storebench/fixtures/__init__.py", "storebench/fixtures/strategies.py"):
        assert module in names, f"{module} is not in {wheel.name}"
    assert not any(n.startswith(("storebench/tests/", "storebench/bench/")) for n in names)
