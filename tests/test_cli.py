"""The storebench console script."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from storebench.formats import Sample

from storebench import formats
from storebench.cli import main

SAMPLES = [Sample(f"k{i}", np.full((4, 4, 3), i, np.uint8), i) for i in range(5)]


def test_verify_ok_damaged_and_missing(tmp_path, capsys):
    formats.get("npy").write(SAMPLES, tmp_path / "good")
    assert main(["verify", str(tmp_path / "good")]) == 0
    assert "OK, 5 samples (npy)" in capsys.readouterr().out

    formats.get("npy").write(SAMPLES, tmp_path / "bad")
    pixels = tmp_path / "bad" / "pixels.npy"
    raw = bytearray(pixels.read_bytes())
    raw[128 + 64 * 3] ^= 0x01  # first pixel of sample 3 (64-byte aligned records)
    pixels.write_bytes(bytes(raw))
    assert main(["verify", str(tmp_path / "bad")]) == 1
    out = capsys.readouterr().out
    assert "1 of 5 samples damaged" in out and "k3" in out

    assert main(["verify", str(tmp_path / "nothing")]) == 2
    assert "ERROR" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["pickle", "shelve"])
def test_verify_warns_about_pickles(name, tmp_path, capsys):
    formats.get(name).write(SAMPLES, tmp_path / "ds")
    assert main(["verify", str(tmp_path / "ds")]) == 0
    assert "arbitrary code" in capsys.readouterr().err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "storebench.cli", "verify", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "stored checksums" in out or "Exit status" in out
