"""The contract's own machinery: ids, the lazy registry, verify on every read path,
stale-temp cleanup, and reading files written before the storebench namespace."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from storebench import fixtures, formats
from storebench.formats import ChecksumError, DatasetError, _atomic, _registry
from storebench.formats.testing import format_params

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_ids_are_unique_per_option_set():
    hdf5 = formats.get("hdf5")
    a = formats.get("hdf5", compression="gzip", level=4)
    b = formats.get("hdf5", compression="gzip", chunk_kib=4)
    assert a.id == "hdf5[gzip,level=4]" and b.id == "hdf5[gzip,chunk_kib=4]"
    assert hdf5.id == "hdf5" and formats.get("hdf5", compression="lzf").id == "hdf5[lzf]"
    ids = [cls(**opts).id for cls in formats.available().values() for opts in cls.bench_variants]
    assert len(ids) == len(set(ids))


def test_get_imports_that_format_only():
    out = _run("""
        import sys
        from storebench import formats
        formats.get("npy")
        loaded = sorted(m for m in sys.modules if m.startswith("storebench.formats.")
                        and not m.split(".")[-1].startswith("_"))
        print(loaded, "h5py" in sys.modules, "lmdb" in sys.modules, "PIL" in sys.modules)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['storebench.formats.npy']", "False", "False", "False"]


def test_missing_dependency_is_known_without_importing(monkeypatch):
    monkeypatch.setattr(_registry, "_targets", dict(_registry._targets))
    monkeypatch.setattr(_registry, "_failed", dict(_registry._failed))
    formats.register("ghost2", "storebench_no_such_module_abc:Ghost", requires=("storebench_no_such_dep",),
                     hint="pip install ghost")
    assert formats.missing_dependency("ghost2") == "storebench_no_such_dep"
    assert "ghost2" in formats.names() and "ghost2" not in _registry._failed  # nothing imported
    assert formats.missing_dependency("npy") is None
    with pytest.raises(KeyError, match="unknown format 'nosuch'"):
        formats.missing_dependency("nosuch")


def test_no_top_level_formats_module_is_imported(tmp_path):
    """A foreign top-level ``formats`` package (the name is common) is never touched,
    also when reading pickle files written before the namespace (format version 1)."""
    fake = tmp_path / "formats"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('the unrelated formats package was imported')\n")
    (tmp_path / "fixtures.py").write_text("raise RuntimeError('the unrelated fixtures module was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = _run(f"""
        from storebench import formats, fixtures
        golden = {str(ROOT / "tests" / "golden")!r}
        for name in ("pickle", "shelve"):
            with formats.open_dataset(golden + "/" + name, verify=True) as r:
                assert r.manifest["format_version"] == 1
                assert len(list(r)) == len(r) > 0
        print("ok")
    """, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_new_pickle_files_name_the_namespace(tmp_path):
    fmt = formats.get("pickle")
    fmt.write(fixtures.make_dataset("cifar", 2), tmp_path / "ds")
    raw = (tmp_path / "ds" / "samples.pkl").read_bytes()
    assert b"storebench.formats._sample" in raw and b"formats._api" not in raw
    with fmt.open(tmp_path / "ds") as r:
        assert r.manifest["format_version"] == 2 and len(list(r)) == 2


def _with_a_bad_checksum(fmt, path, *, n: int, bad: int) -> list:
    """Write n cifar samples with ``fmt`` at ``path``, flip a bit of sample ``bad``'s stored checksum; the samples."""
    samples = list(fixtures.make_dataset("cifar", n))
    fmt.write(samples, path)
    crcs = np.fromfile(path / "checksums.u32", "<u4")
    crcs[bad] ^= 1
    crcs.tofile(path / "checksums.u32")
    return samples


@pytest.mark.parametrize("fmt", format_params(variants=False))
def test_verify_checks_every_read_path(fmt, tmp_path):
    """A checksum mismatch is a ChecksumError from r[i], get, read_batch, iteration and a pickled reader."""
    path = tmp_path / "ds"
    samples = _with_a_bad_checksum(fmt, path, n=4, bad=2)
    import pickle
    with fmt.open(path, verify=True) as r:
        assert r[1].key == samples[1].key
        for read in (lambda: r[2], lambda: r.get(samples[2].key), lambda: r.read_batch([0, 2]),
                     lambda: list(r), lambda: list(pickle.loads(pickle.dumps(r)))):
            with pytest.raises(ChecksumError, match="sample 2"):
                read()
        assert r.verify() == [samples[2].key]
    with fmt.open(path) as r:  # without verify nothing is checked
        assert len(list(r)) == 4


def test_verify_turns_library_errors_into_dataset_errors(tmp_path):
    """Under verify, a library error on damaged bytes is a DatasetError on the batch and scan paths too."""
    from storebench.formats.npy import Npy, NpyReader

    class Fragile(NpyReader):
        def _read_many(self, indices):
            raise ValueError("inflate: invalid block type")  # what zlib says of damaged bytes

        def _iter(self):
            yield self._read(0)
            raise OSError(5, "Input/output error")

    class FragileNpy(Npy):
        reader = Fragile

    fmt = FragileNpy()
    fmt.write(fixtures.make_dataset("cifar", 3), tmp_path / "ds")
    with fmt.open(tmp_path / "ds", verify=True) as r:
        with pytest.raises(DatasetError, match=r"samples \[0, 1\] cannot be read: ValueError: inflate"):
            r.read_batch([0, 1])
        with pytest.raises(DatasetError, match="sample 1 .*cannot be read: OSError"):
            list(r)
    with fmt.open(tmp_path / "ds") as r:  # without verify the library's own error passes through
        with pytest.raises(ValueError, match="inflate"):
            r.read_batch([0, 1])


def test_stale_cleanup_never_deletes_an_old_dataset_it_could_not_restore(tmp_path, monkeypatch):
    """A writer died between its two renames: .ds.old-PID-* is the only copy of the dataset."""
    fmt = formats.get("npy")
    fmt.write(fixtures.make_dataset("cifar", 3), tmp_path / "ds")
    old = tmp_path / ".ds.old-999999999-abcd1234"  # a pid that cannot be alive
    os.rename(tmp_path / "ds", old)
    real_rename = os.rename

    def failing_rename(src, dst, *a, **k):
        if Path(src) == old:
            raise PermissionError(13, "Permission denied", str(src))
        return real_rename(src, dst, *a, **k)

    monkeypatch.setattr(_atomic.os, "rename", failing_rename)
    _atomic._clean_stale_siblings(tmp_path / "ds")
    assert old.is_dir() and (old / formats.MANIFEST).is_file()  # kept, not deleted
    monkeypatch.setattr(_atomic.os, "rename", real_rename)
    _atomic._clean_stale_siblings(tmp_path / "ds")  # now it can be put back
    assert not old.exists()
    with fmt.open(tmp_path / "ds") as r:
        assert len(r) == 3


def test_pid_alive_never_signals_off_posix(monkeypatch):
    calls = []
    monkeypatch.setattr(_atomic.os, "name", "nt")
    monkeypatch.setattr(_atomic.os, "kill", lambda *a: calls.append(a))
    assert _atomic.pid_alive(12345) is True and calls == []


def _die_between_renames(path):
    def rename_then_die(src, dst):
        os._exit(0)  # the old dataset is renamed aside, the new one not yet in place
    _atomic._rename_noreplace = rename_then_die
    formats.get("npy").write(fixtures.make_dataset("cifar", 4, seed=1), path, overwrite=True)


def test_writer_dead_between_its_renames_gets_the_old_dataset_put_back(tmp_path):
    """The next writer finds no dataset, an unlocked .ds.old-* and a finished .ds.tmp-*: the old comes back."""
    import multiprocessing as mp

    path = tmp_path / "ds"
    formats.get("npy").write(fixtures.make_dataset("cifar", 3), path)
    proc = mp.get_context("fork").Process(target=_die_between_renames, args=(path,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0 and not path.exists()
    assert any(".old-" in n for n in os.listdir(tmp_path)) and any(".tmp-" in n for n in os.listdir(tmp_path))
    with pytest.raises(FileExistsError, match="already exists"):  # the old dataset is back
        formats.get("npy").write(fixtures.make_dataset("cifar", 2), path)
    assert os.listdir(tmp_path) == ["ds"]
    with formats.open_dataset(path) as r:
        assert len(r) == 3 and r.verify() == []


def test_without_fcntl_writers_still_work_and_clean_nothing(tmp_path, monkeypatch):
    """Off POSIX (no fcntl) only threads of one process exclude each other, and no temp dir is provably dead."""
    monkeypatch.setattr(_atomic, "fcntl", None)
    stale = tmp_path / ".ds.tmp-1-0123456789abcdef"
    stale.mkdir()
    (tmp_path / (stale.name + ".lock")).touch()
    fmt = formats.get("npy")
    fmt.write(fixtures.make_dataset("cifar", 2), tmp_path / "ds")
    with pytest.raises(FileExistsError, match="already exists"):
        fmt.write(fixtures.make_dataset("cifar", 2), tmp_path / "ds")
    fmt.write(fixtures.make_dataset("cifar", 3), tmp_path / "ds", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == [stale.name, stale.name + ".lock", "ds"]
    with fmt.open(tmp_path / "ds") as r:
        assert len(r) == 3


@pytest.mark.parametrize("field, kw", [
    ("label", {"label": 2**63}),
    ("label", {"label": -(2**63) - 1}),
    ("label", {"label": np.uint64(2**63)}),
    ("box_labels", {"boxes": [[0, 0, 1, 1]], "box_labels": np.array([2**63], np.uint64)}),
    ("box_labels", {"boxes": [[0, 0, 1, 1]], "box_labels": [2**63]}),
    ("box_labels", {"boxes": [[0, 0, 1, 1]], "box_labels": [2**70]}),
    ("meta['big']", {"meta": {"big": 10**5000}}),
    ("meta['big']", {"meta": {"big": -(2**64)}}),
])
def test_sample_fields_outside_int64_are_refused_by_name(field, kw):
    with pytest.raises(ValueError, match=rf"^{re.escape(field)}: "):
        formats.Sample("k", np.zeros((2, 2), np.uint8), **kw)


def test_int64_edges_are_stored_exactly(tmp_path):
    edge = formats.Sample("k", np.zeros((2, 2), np.uint8), label=-(2**63), boxes=[[0, 0, 1, 1]],
                          box_labels=np.array([2**63 - 1], np.uint64), meta={"m": 2**63 - 1})
    assert edge.box_labels.dtype == np.int64 and int(edge.box_labels[0]) == 2**63 - 1
    for name in ("npy", "lmdb", "sqlite", "parquet"):
        if name not in formats.available():
            continue
        fmt = formats.get(name)
        fmt.write([edge], tmp_path / name)
        with fmt.open(tmp_path / name) as r:
            assert r[0] == edge


def test_options_of_the_wrong_type_are_refused_by_name():
    with pytest.raises(ValueError, match="row_group_size: must be int .* got bool True"):
        formats.get("parquet", row_group_size=True)
    with pytest.raises(ValueError, match="compression: must be str"):
        formats.get("hdf5", compression=1)


@pytest.mark.parametrize("name", ["..", "."])
def test_write_refuses_a_path_that_names_no_new_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="names no new directory"):
        formats.get("npy").write(fixtures.make_dataset("cifar", 1), name, overwrite=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", format_params())
def test_every_builtin_format_declares_remote_reads_or_why_not(fmt):
    """Each built-in format (and variant) declares remote_reads, or its own local_only reason (not the
    base class's placeholder that a plug-in inherits)."""
    if fmt.remote_reads is not None:
        assert fmt.remote_reads in ("ranges", "objects", "shards")
    else:
        assert fmt.local_only and fmt.local_only != formats.Format.local_only, fmt.id


@pytest.mark.parametrize("fmt", [p for p in format_params()
                                 if isinstance(p.values[0], formats.Format) and p.values[0].remote_reads])
def test_a_remote_checksum_mismatch_is_found(fmt, tmp_path, s3_server):
    """verify=True checks samples read from s3:// against checksums.u32 as locally, for every variant
    of the formats with remote_reads (FormatTests' object-store round trips run once per format; the
    others' refusal is FormatTests')."""
    path = tmp_path / "ds"
    samples = _with_a_bad_checksum(fmt, path, n=3, bad=1)
    url = s3_server.upload(path, f"contract/{tmp_path.name}")
    with formats.open_dataset(url, verify=True, storage_options=s3_server.storage_options) as r:
        assert r[0].key == samples[0].key
        with pytest.raises(ChecksumError, match="sample 1"):
            r[1]
        assert r.verify() == [samples[1].key]
