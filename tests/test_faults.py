"""The fault-injection tooling itself (storebench.formats.testing.faults).

The fault cases for every format (damaged files, kill -9, disk full, readers
beside a writer, the state machine) are FormatTests' and run in
tests/test_conformance.py; this file checks that the damage is what its labels
say and that the README's matrix counts outcomes right.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from storebench import formats
from storebench.formats import MANIFEST
from storebench.formats.testing import edge_samples
from storebench.formats.testing.faults import FAULTS, OK_OUTCOMES, damaged_copies, markdown

ROOT = Path(__file__).resolve().parents[1]


def test_damaged_copies_hit_every_payload_file_and_the_manifest(tmp_path):
    fmt = formats.get("png")
    src = tmp_path / "src"
    fmt.write(edge_samples()[:3], src)
    before = {p.relative_to(src): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    cases = dict(damaged_copies(fmt, src, tmp_path))
    # png: checksums.u32, index.npz and the first of images/ (not the manifest), each with every fault
    payload = ["checksums.u32", "images/00000000.png", "index.npz"]
    assert sorted(cases) == sorted([f"{f} {k}" for f in payload for k in FAULTS]
                                   + [f"{MANIFEST} {k}" for k in ("flip middle", "delete", "truncate 1/2")])
    for label, path in cases.items():
        name, fault = label.split(" ", 1)
        after = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
        changed = {f for f in before.keys() | after.keys() if before.get(f) != after.get(f)}
        if fault == "rename":
            assert changed == {Path(name), Path(name + ".moved")}, label
        else:
            assert changed == {Path(name)}, label
        if fault == "delete":
            assert Path(name) not in after
        elif fault.startswith("truncate"):
            assert len(after[Path(name)]) < len(before[Path(name)])
        elif fault != "rename":
            assert len(after[Path(name)]) == len(before[Path(name)])
    assert {p.name for p in src.iterdir()} == {"checksums.u32", "images", "index.npz", MANIFEST}


def test_matrix_markdown_counts_outcomes_and_flags_bugs():
    cases = {f"a.bin {k}": ("typed error", "") for k in FAULTS}
    cases["b.bin flip middle"] = ("correct data", "")
    cases["c.bin delete"] = ("hang", "no answer in 20 s")
    cases[f"{MANIFEST} delete"] = ("typed error", "")
    table = markdown({"demo": cases}).splitlines()
    assert table[0] == "| format | " + " | ".join(list(FAULTS) + ["manifest"]) + " |"
    cells = table[2].strip("|").split(" | ")
    assert cells[0].strip() == "demo"
    by_kind = dict(zip(list(FAULTS) + ["manifest"], (c.strip() for c in cells[1:])))
    assert by_kind["flip middle"] == "1 err / 1 ok"
    assert by_kind["delete"] == "1 err / 0 ok / **1 BUG**"
    assert by_kind["truncate 0"] == "1 err / 0 ok"
    assert by_kind["manifest"] == "1 err / 0 ok"
    assert "hang" not in OK_OUTCOMES


def test_faults_script_prints_the_matrix():
    r = subprocess.run([sys.executable, "tests/faults.py", "npy"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0].startswith("| format | truncate 0 |") and lines[2].startswith("| npy | ")
    assert "BUG" not in r.stdout and r.stderr == ""
