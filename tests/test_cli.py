"""The storebench console script."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from storebench import formats
from storebench.cli import main
from storebench.formats import Sample

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


@pytest.mark.parametrize("fmt_id, warns", [("pickle", True), ("shelve", True), ("lmdb[pickle]", True),
                                            ("lmdb", False)])
def test_verify_warns_about_pickles(fmt_id, warns, tmp_path, capsys):
    formats.from_id(fmt_id).write(SAMPLES, tmp_path / "ds")
    assert main(["verify", str(tmp_path / "ds")]) == 0
    assert ("arbitrary code" in capsys.readouterr().err) is warns


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "storebench.cli", "verify", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "stored checksums" in out or "Exit status" in out


def _cli(*args, cwd=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "storebench.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120, **kw)


@pytest.mark.parametrize("args, says", [
    (["generate", "--preset", "cifar", "--n", "3", "--seed", "-1", "--out", "{tmp}/a"], "--seed"),
    (["generate", "--preset", "cifar", "--n", "3", "--seed", "x", "--out", "{tmp}/a"], "--seed"),
    (["generate", "--preset", "cifar", "--n", "3", "--out", ".."], "--out"),
    (["generate", "--preset", "cifar", "--n", "3", "--out", "{tmp}/."], "already exists"),
    (["generate", "--preset", "nosuch", "--n", "3", "--out", "{tmp}/a"], "--preset"),
    (["generate", "--preset", "ct[side=x]", "--n", "3", "--out", "{tmp}/a"], "--preset"),
    (["generate", "--preset", "ct[nosuch=3]", "--n", "3", "--out", "{tmp}/a"], "--preset"),
    (["generate", "--preset", "ct[side=32,slices=4]", "--n", "1", "--format", "png", "--out", "{tmp}/a"],
     "png cannot store int16"),
    (["generate", "--preset", "cifar", "--n", "-3", "--out", "{tmp}/a"], "--n"),
    (["generate", "--preset", "cifar", "--n", "3", "--format", "nosuch", "--out", "{tmp}/a"], "nosuch"),
    (["generate", "--preset", "cifar", "--n", "3", "--format", "parquet", "--option", "row_group_size=true",
      "--out", "{tmp}/a"], "row_group_size"),
    (["generate", "--preset", "cifar", "--n", "3", "--format", "hdf5", "--option", "level=42",
      "--out", "{tmp}/a"], "level"),
    (["generate", "--preset", "cifar", "--n", "3", "--option", "nonsense", "--out", "{tmp}/a"], "--option"),
    (["generate", "--preset", "cifar", "--n", "3", "--out", "/sys/storebench-test/a"], "not permitted"),
    (["verify", "{tmp}/nothing"], "ERROR"),
    (["verify", "{tmp}/bad-options"], "ERROR"),
    (["verify", "--max-keys", "-1", "{tmp}/nothing"], "--max-keys"),
    (["compare", "{tmp}/x.json", "{tmp}/y.json", "--fail-above", "10"], "10%"),
])
def test_user_errors_are_one_line_and_exit_2(args, says, tmp_path):
    """Bad arguments, paths and manifests: exit 2, no traceback, one line that names the problem.

    /sys refuses new directories even to root (EPERM), so the permission case holds in CI too.
    """
    formats.get("hdf5").write(SAMPLES, tmp_path / "bad-options")
    manifest = tmp_path / "bad-options" / formats.MANIFEST
    manifest.write_text(manifest.read_text().replace('"level": null', '"level": 99'))
    proc = _cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and says in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "a").exists()


def test_verify_prints_keys_escaped(tmp_path):
    """A key holding a newline or an ANSI escape cannot forge an 'OK' line in verify's output."""
    evil = "k\n" + str(tmp_path / "other") + ": OK, 5 samples (npy)\x1b[2K"
    samples = [Sample(evil if i == 2 else f"k{i}", s.image, s.label) for i, s in enumerate(SAMPLES)]
    formats.get("npy").write(samples, tmp_path / "ds")
    crcs = np.fromfile(tmp_path / "ds" / "checksums.u32", "<u4")
    crcs[2] ^= 1
    crcs.tofile(tmp_path / "ds" / "checksums.u32")
    proc = _cli("verify", str(tmp_path / "ds"))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and "1 of 5 samples damaged" in lines[0]
    assert lines[1] == "  " + repr(evil) and "\x1b" not in proc.stdout


def test_ctrl_c_exits_130_and_leaves_nothing(tmp_path):
    """SIGINT during a write: exit status 130, one line, no dataset and no temporary directory."""
    import signal
    import time

    def as_from_a_shell():
        # A shell starts the command with SIGINT neither ignored nor blocked. This test process may
        # have either inherited or set (a library's thread, a test's worker pool), and a child
        # inherits both across exec: CPython leaves an ignored SIGINT ignored.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    proc = subprocess.Popen([sys.executable, "-m", "storebench.cli", "generate", "--preset", "cifar", "--n",
                             "200k", "--format", "png", "--out", str(tmp_path / "ds")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_shell)
    deadline = time.monotonic() + 120
    def writing() -> bool:  # the temp directory exists and the writer is filling it
        return any(p.is_dir() and p.name.startswith(".ds.tmp-") and any(p.rglob("*.png"))
                   for p in tmp_path.iterdir())

    try:
        while not writing():
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        try:
            _out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            pytest.fail("the writer ignored SIGINT for 120 s: " + " ".join(
                line for line in status.splitlines() if line.startswith(("SigBlk", "SigIgn", "SigCgt"))))
    finally:  # a failure here must not leave the writer running into the next tests
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert list(tmp_path.iterdir()) == []


def test_generate_a_volume_preset_with_its_sizes(tmp_path):
    """Preset sizes are options in the preset's name: CT volumes of 32x32 in-plane and 4 slices."""
    assert main(["generate", "--preset", "ct[side=32,slices=4]", "--n", "2", "--format", "npy",
                 "--out", str(tmp_path / "ct")]) == 0
    with formats.open_dataset(tmp_path / "ct") as r:
        assert [s.image.shape for s in r] == [(4, 32, 32, 1)] * 2 and r[0].image.dtype == np.int16


@pytest.mark.parametrize("what", ["project folder", "file", "symlink to a dataset"])
def test_generate_overwrite_replaces_only_a_dataset(what, tmp_path, capsys):
    """--overwrite on something that is not a storebench dataset: exit 2, one line naming it, untouched."""
    out = tmp_path / "out"
    if what == "project folder":
        (out / "src").mkdir(parents=True)
        (out / "src" / "thesis.tex").write_text("years of work")
    elif what == "file":
        out.write_text("keep me")
    else:
        formats.get("npy").write(SAMPLES, tmp_path / "ds")
        out.symlink_to(tmp_path / "ds")
    before = sorted((str(p), p.is_file() and p.read_bytes()) for p in tmp_path.rglob("*"))
    code = main(["generate", "--preset", "cifar", "--n", "3", "--out", str(out), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(out) in err, err
    assert sorted((str(p), p.is_file() and p.read_bytes()) for p in tmp_path.rglob("*")) == before
    formats.get("npy").write(SAMPLES, tmp_path / "ds2")
    assert main(["generate", "--preset", "cifar", "--n", "3", "--out", str(tmp_path / "ds2"), "--overwrite"]) == 0
    with formats.open_dataset(tmp_path / "ds2") as r:
        assert len(r) == 3
