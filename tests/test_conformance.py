"""The one contract, checked for every registered format and every bench variant.

A new format module is covered here by adding it to the registry: nothing else.
Only the ``lossless`` flag and the declared ``modes`` change what is checked.
"""
from __future__ import annotations

import multiprocessing as mp
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from storebench.fixtures.strategies import sample_lists
from storebench.formats import DatasetError, Sample
from storebench.formats.testing import (
    assert_all_same,
    check_reader,
    check_roundtrip,
    format_params,
)

from storebench import formats

FORMATS = format_params()
DEFAULTS = format_params(variants=False)


def _edge_cases() -> list[Sample]:
    ramp = np.arange(4 * 5 * 4, dtype=np.uint8).reshape(4, 5, 4)
    many = np.tile(np.array([[0, 0, 2, 3]], np.float32), (40, 1))
    return [
        Sample("1x1", np.array([[7]], np.uint8)),
        Sample("uint16 grey", (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4), label=3),
        Sample("uint16 (H,W,1)", np.full((2, 3, 1), 65535, np.uint16)),
        Sample("rgba/ünï cødé 🙂", ramp, label=0, meta={"rad_id": "R9", "score": 0.5, "ok": True, "n": None}),
        Sample("rgb", ramp[..., :3].copy(), boxes=[[0, 0, 5, 4], [1.5, 0.25, 2, 3]], box_labels=[2, 13]),
        Sample("grey + alpha", ramp[..., :2].copy(), label=9),
        Sample("many boxes", np.zeros((3, 3), np.uint8), boxes=many, box_labels=np.arange(40)),
        Sample("", np.ones((1, 9, 1), np.uint8), label=-1),
    ]


EDGE = _edge_cases()


def _supported(fmt, samples):
    return [s for s in samples if s.mode in fmt.modes]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", FORMATS)
@given(data=st.data())
@example(data=EDGE)
@example(data=[])
@example(data=EDGE[:1])
def test_roundtrip(fmt, data):
    """Hypothesis samples of every mode the format declares; edge cases as explicit examples."""
    if isinstance(data, list):
        samples, data = _supported(fmt, data), None
    else:
        samples = data.draw(sample_lists(modes=fmt.modes, max_size=6), label="samples")
    batch = None
    if data is not None and samples:
        batch = data.draw(st.lists(st.integers(-len(samples), len(samples) - 1), max_size=12), label="batch")
    with tempfile.TemporaryDirectory() as d:
        check_roundtrip(fmt, samples, Path(d) / "ds", batch)


def _read_all(reader):
    return [reader[i] for i in range(len(reader))] + reader.read_batch([0, len(reader) - 1])


@pytest.fixture(scope="module")
def small_datasets(tmp_path_factory):
    """One small dataset per default format, shared by the process tests."""
    made = {}

    def make(fmt):
        if fmt.id not in made:
            path = tmp_path_factory.mktemp("proc") / fmt.id
            fmt.write(_supported(fmt, EDGE), path)
            made[fmt.id] = path
        return made[fmt.id]
    return make


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("fmt", DEFAULTS)
def test_reader_in_worker_processes(fmt, method, small_datasets):
    """A reader used in the parent, then pickled to 2 workers, reads the same samples there."""
    path = small_datasets(fmt)
    with fmt.open(path) as r:
        expected = _read_all(r)  # handles are open in the parent before the workers start
        ctx = mp.get_context(method)
        with ctx.Pool(2) as pool:
            results = pool.map(_read_all, [r, r, r])
        for got in results:
            assert_all_same(expected, got, lossless=True)
        assert_all_same(expected, _read_all(r))  # the parent's handles still work


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("fmt", DEFAULTS)
def test_open_errors_name_the_path(fmt, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        fmt.open(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=str(empty)):
        fmt.open(empty)
    a_file = tmp_path / "file.bin"
    a_file.write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match="file.bin"):
        fmt.open(a_file)
    other = next(f for f in [formats.get("npy"), formats.get("pickle")] if f.name != fmt.name)
    other.write([], tmp_path / "other")
    with pytest.raises(DatasetError, match=f"{other.name!r} dataset, not {fmt.name!r}"):
        fmt.open(tmp_path / "other")


@pytest.mark.parametrize("fmt", DEFAULTS)
def test_read_errors(fmt, small_datasets):
    path = small_datasets(fmt)
    r = fmt.open(path)
    n = len(r)
    for bad in (n, -n - 1, 10**9):
        with pytest.raises(IndexError, match="out of range"):
            r[bad]
    with pytest.raises(IndexError):
        r.read_batch([0, n])
    with pytest.raises(KeyError, match="no such key"):
        r.get("no such key")
    with pytest.raises(TypeError):
        r["1x1"]
    r.close()
    with pytest.raises(ValueError, match="closed"):
        r[0]
    with fmt.open(path) as r2:
        assert len(r2.read_batch([])) == 0
    with pytest.raises(ValueError, match="closed"):
        r2[0]


def _leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


@pytest.mark.parametrize("fmt", DEFAULTS)
def test_duplicate_key_leaves_nothing(fmt, tmp_path):
    s = _supported(fmt, EDGE)[0]
    with pytest.raises(ValueError, match=repr(s.key)):
        fmt.write([s, s], tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    assert _leftovers(tmp_path, "ds") == []


@pytest.mark.parametrize("fmt", DEFAULTS)
def test_failed_write_keeps_previous_dataset(fmt, tmp_path):
    good = _supported(fmt, EDGE)
    fmt.write(good, tmp_path / "ds")

    def broken():
        yield from good[:2]
        raise RuntimeError("source died")
    with pytest.raises(RuntimeError, match="source died"):
        fmt.write(broken(), tmp_path / "ds", overwrite=True)
    with fmt.open(tmp_path / "ds") as r:
        check_reader(fmt, r, good) if fmt.lossless else assert_all_same(good, list(r), lossless=False)
    assert _leftovers(tmp_path, "ds") == []
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fmt.write(good[:1], tmp_path / "ds")
    report = fmt.write(good[:1], tmp_path / "ds", overwrite=True)
    assert report.count == 1
    with fmt.open(tmp_path / "ds") as r:
        assert len(r) == 1 and r[0].key == good[0].key
    assert _leftovers(tmp_path, "ds") == []


@pytest.mark.parametrize("fmt", DEFAULTS)
def test_write_report(fmt, tmp_path):
    samples = _supported(fmt, EDGE)
    report = fmt.write(samples, tmp_path / "ds")
    files = [p for p in (tmp_path / "ds").rglob("*") if p.is_file()]
    assert report.count == len(samples)
    assert report.n_files == len(files)
    assert report.bytes_on_disk == sum(p.stat().st_size for p in files)
    with formats.open_dataset(tmp_path / "ds") as r:
        assert r.format == fmt


def _sample_of_mode(dtype: str, channels: int) -> Sample:
    shape = (3, 5, channels) if channels else (3, 5)
    return Sample(f"{dtype}x{channels}", np.ones(shape, dtype))


@pytest.mark.parametrize("fmt", [p for p in DEFAULTS if p.values[0] is None
                                 or p.values[0].modes != formats.ALL_MODES])
def test_unsupported_mode_is_refused(fmt, tmp_path):
    """A format that cannot store some image kind refuses it by name and writes nothing."""
    dtype, channels = sorted(formats.ALL_MODES - fmt.modes)[0]
    with pytest.raises(ValueError, match=f"{fmt.name} cannot store {dtype}"):
        fmt.write(_supported(fmt, EDGE) + [_sample_of_mode(dtype, channels)], tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    assert _leftovers(tmp_path, "ds") == []


@pytest.mark.parametrize("mode", sorted(formats.ALL_MODES))
def test_every_mode_has_a_lossless_home(mode):
    """Each image kind a Sample allows is stored losslessly by at least npy."""
    assert mode in formats.get("npy").modes


def test_not_a_sample_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"samples\[1\]: expected a Sample"):
        formats.get("npy").write([EDGE[0], {"key": "x"}], tmp_path / "ds")


@pytest.mark.parametrize("fmt", DEFAULTS)
def test_format_identity(fmt):
    assert formats.available()[fmt.name] is type(fmt)
    assert pickle.loads(pickle.dumps(fmt)) == fmt
    assert fmt.id == fmt.name  # defaults add nothing to the id
    assert isinstance(fmt.lossless, bool) and fmt.modes <= formats.ALL_MODES
    module = __import__(type(fmt).__module__, fromlist=["_"])
    assert module.__doc__ and len(module.__doc__.split()) >= 25, "module docstring: what, when, caveats"
    if fmt.executes_code:
        assert "untrusted" in module.__doc__, "formats that unpickle must warn about untrusted data"


def test_sample_pickles_small():
    s = EDGE[3]
    clone = pickle.loads(pickle.dumps(s))
    assert clone == s and clone is not s
    assert len(pickle.dumps(s)) < s.image.nbytes + 600