"""The benchmark suite's own machinery: options, eviction, dataset cache, bounds, hooks."""
from __future__ import annotations

import importlib.util
import json
import mmap
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bench import _options
from bench._bounds import make_pool
from bench._data import DataCache, Dataset, Unsupported, dataset_key, write_source
from bench._pagecache import (
    CacheState,
    ColdRoundError,
    EvictionError,
    check_evicted,
    file_residency,
    residency,
    unsupported,
)
from bench._params import bound_params, loader_specs
from bench._results import Results, filesystem
from storebench import fixtures, formats
from storebench.formats import Sample
from storebench.formats.npy import Npy

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- options


class FakeConfig:
    """Just enough of a pytest config for ``from_config``."""

    def __init__(self, rootpath, **given):
        self.rootpath = rootpath
        self.values = {"sizes": None, "workers": "0,2", "formats": None, "preset": "cifar",
                       "cache": "warm", "rounds": "3", "data_dir": None, "batch_size": None,
                       "mp_context": None, "persistent": "off,on", "seed": "0", "folds": 5, "epochs": 3,
                       "patch": "224,64", "fetch_workload": "none", "store": "local", "rtt_ms": "20",
                       "bandwidth_mbps": "1000", "concurrency": "8", "benchmark_disable": True,
                       "benchmark_enable": False, **given}

    def getoption(self, name):
        return self.values[name]


def test_sizes_parse_with_suffixes_and_drop_repeats():
    assert _options.parse_sizes("10, 1k,100K,10") == (10, 1000, 100000)
    assert _options.parse_sizes("2M") == (2000000,)


@pytest.mark.parametrize("text", ["", "0", "ten", "1.5k", "-3", ","])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ValueError, match="--sizes"):
        _options.parse_sizes(text)


def test_choices_name_the_bad_entry_and_the_choices():
    assert _options.parse_cache("both") == ("warm", "cold")
    assert _options.parse_cache("cold") == ("cold",)
    assert _options.parse_persistent("on,off") == (True, False)
    with pytest.raises(ValueError, match=r"'lukewarm'.*warm, cold"):
        _options.parse_cache("lukewarm")
    with pytest.raises(ValueError, match="--workers"):
        _options.parse_workers("1,x")


def test_smoke_defaults_when_benchmarks_are_disabled(tmp_path):
    opts = _options.from_config(FakeConfig(tmp_path))
    assert opts.smoke and opts.sizes == (_options.SMOKE_SIZE,)
    assert opts.batch_size == _options.SMOKE_BATCH
    assert opts.data_dir == tmp_path / ".storebench-data"
    assert opts.mp_contexts == (_options.default_mp_context(),)


def test_sweep_defaults_and_explicit_options(tmp_path):
    opts = _options.from_config(FakeConfig(tmp_path, benchmark_enable=True))
    assert not opts.smoke
    assert (opts.sizes, opts.workers, opts.presets, opts.cache, opts.rounds, opts.batch_size) == \
        ((100, 1000), (0, 2), ("cifar",), ("warm",), 3, 64)
    assert opts.formats is None and opts.persistent == (False, True)
    assert opts.patch == ((224, 224), (64, 64, 64)) and opts.patch_for(3) == (64, 64, 64)
    opts = _options.from_config(FakeConfig(
        tmp_path, sizes="10,100k", workers="0,1,2,4", formats="npy,hdf5[gzip,level=4]", preset="imagenet,xray",
        cache="both", rounds="5", data_dir=str(tmp_path / "d"), batch_size="32", mp_context="spawn,fork",
        persistent="on", seed="7", folds=2, epochs=4, patch="96x128,32"))
    assert opts.sizes == (10, 100000) and opts.workers == (0, 1, 2, 4)
    assert opts.formats == ("npy", "hdf5[gzip,level=4]") and opts.presets == ("imagenet", "xray")
    assert opts.cache == ("warm", "cold") and opts.rounds == 5 and opts.batch_size == 32
    assert opts.data_dir == tmp_path / "d" and opts.mp_contexts == ("spawn", "fork")
    assert opts.persistent == (True,) and opts.seed == 7 and (opts.folds, opts.epochs) == (2, 4)
    assert opts.patch == ((96, 128), (32, 32, 32)) and opts.patch_for(2) == (96, 128)
    assert json.loads(json.dumps(opts.to_json()))["patch"] == "96x128,32x32x32"
    assert (opts.stores, opts.rtt_ms, opts.bandwidth_mbps, opts.concurrency) == (("local",), 20.0, 1000.0, 8)
    opts = _options.from_config(FakeConfig(tmp_path, store="local,s3", rtt_ms="1.5", bandwidth_mbps="100",
                                           concurrency="32"))
    assert (opts.stores, opts.rtt_ms, opts.bandwidth_mbps, opts.concurrency) == (("local", "s3"), 1.5, 100.0, 32)
    for bad in ({"store": "gcs"}, {"rtt_ms": "0"}, {"bandwidth_mbps": "fast"}, {"concurrency": "0"}):
        with pytest.raises(ValueError):
            _options.from_config(FakeConfig(tmp_path, **bad))


def test_patch_option_takes_sides_and_shapes():
    p = _options.parse_patch
    assert p("224,64") == ((224, 224), (64, 64, 64))
    assert p("64") == ((64, 64), (64, 64, 64)), "one side serves images (64x64) and volumes (64^3)"
    assert p("32x128x128") == ((224, 224), (32, 128, 128))
    assert p("512x256, 16x64x64") == ((512, 256), (16, 64, 64))
    for patch in (((224, 224), (64, 64, 64)), ((96, 128), (8, 16, 16))):
        assert p(_options.format_patch(patch)) == patch
    assert p("64,8x8") == ((8, 8), (64, 64, 64)), "a shape sets its kind, a side the other"
    for bad in ("0", "1,2,3", "2x2x2x2", "8x8,9x9", "x", "8,16,4x4"):
        with pytest.raises(ValueError, match="--patch"):
            p(bad)
    assert _options.parse_cache("cold,warm") == ("cold", "warm")


def test_recorded_options_rebuild_the_command_line(tmp_path):
    """Every option the JSON records, --folds and --epochs included, comes back in the rerun command."""
    from storebench.bundle import rerun_command

    opts = _options.from_config(FakeConfig(
        tmp_path, sizes="10,100", formats="npy,hdf5[gzip,level=4]", cache="both", seed="7", folds=2, epochs=4,
        fetch_workload="detect-aug", benchmark_enable=True))
    args = rerun_command(json.loads(json.dumps(opts.to_json())))
    text = " ".join(args)
    assert "--folds 2" in text and "--epochs 4" in text and "--seed 7" in text
    assert "--fetch-workload detect-aug" in text
    assert args[args.index("--formats") + 1] == "npy,hdf5[gzip,level=4]"
    assert _options._items(args[args.index("--formats") + 1], "--formats") == ["npy", "hdf5[gzip,level=4]"]


@pytest.mark.parametrize("option, value, match", [
    ("preset", "mnist", "--preset"), ("rounds", "0", "--rounds"), ("mp_context", "thread", "--mp-context"),
    ("batch_size", "0", "--batch-size"), ("persistent", "maybe", "--persistent"), ("patch", "0x3", "--patch"),
    ("cache", "cold,tepid", "--cache"), ("fetch_workload", "jitter", "--fetch-workload")])
def test_bad_options_are_refused(tmp_path, option, value, match):
    with pytest.raises(ValueError, match=match):
        _options.from_config(FakeConfig(tmp_path, **{option: value}))


def test_loader_specs_sweep_start_methods_and_persistence_for_workers_only():
    opts = _options.BenchOptions(workers=(0, 2), mp_contexts=("fork", "spawn"), persistent=(False, True))
    assert [s.id for s in loader_specs(opts)] == [
        "w0", "w2-fork", "w2-fork-persist", "w2-spawn", "w2-spawn-persist"]


def test_unknown_format_is_a_usage_error():
    r = subprocess.run([sys.executable, "-m", "pytest", "bench/test_io.py", "--collect-only", "-q",
                        "-p", "no:cacheprovider", "--formats", "npy,nosuchformat"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "nosuchformat" in r.stderr and "known:" in r.stderr


def _readme_bench_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [line.split("#")[0].split() for line in text.splitlines() if line.startswith("pytest bench")]


def _collected(args: list[str]) -> set[str]:
    """Test ids that ``pytest bench ARGS`` collects, through pytest's real option parser, as a
    user's shell runs it (without CI's STOREBENCH_FORMAT_VARIANTS)."""
    env = {k: v for k, v in os.environ.items() if k != "STOREBENCH_FORMAT_VARIANTS"}
    r = subprocess.run([sys.executable, "-m", "pytest", *args, "--collect-only", "-q", "-p", "no:cacheprovider"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return {line.split("/")[-1] for line in r.stdout.splitlines() if "::" in line}


def test_readme_bench_commands_collect_the_sweep_they_promise():
    plain, compare, example = _readme_bench_commands()[:3]  # the "what users type" block
    assert plain == ["pytest", "bench"] and compare == ["pytest", "bench", "--benchmark-compare"]
    default = _collected(plain[1:])  # cifar, n = 100 and 1000, workers 0 and 2, warm
    assert {"test_io.py::test_scan[npy-cifar-n100-warm]", "test_io.py::test_batch[lmdb-cifar-n1000-warm]",
            "test_io.py::test_write[png-cifar-n1000]", "test_bounds.py::test_bound[floor-batch-cifar-n1000]"} <= default
    assert not any("imagenet" in t or "-cold" in t or "-n10-" in t for t in default)
    if importlib.util.find_spec("torch") is not None:
        assert {"test_loader.py::test_loader[npy-cifar-n100-warm-w0]",
                "test_loader.py::test_loader[hdf5-cifar-n1000-warm-w2-fork-persist]"} <= default
        assert not any("-w1" in t or "spawn" in t for t in default)
    scanned = {t[len("test_io.py::test_scan["):-len("-cifar-n100-warm]")] for t in default
               if t.startswith("test_io.py::test_scan[") and t.endswith("-n100-warm]")}
    # A format unavailable here (zarr on Python 3.10) is one skipped param named after it, with
    # its install hint; every available variant is scanned, whichever Python this is.
    unavailable = set(formats.unavailable())
    assert scanned - unavailable == {cls(**o).id for cls in formats.available().values() for o in cls.bench_variants}
    assert scanned & unavailable == unavailable
    sweep = _collected(example[1:])  # sizes 10..100k, workers 0,1,2,4, npy and lmdb, imagenet, cold
    io = {t for t in sweep if t.startswith("test_io.py::")}
    assert "test_io.py::test_scan[npy-imagenet-n100000-cold]" in io
    assert "test_io.py::test_random[lmdb-imagenet-n10-cold]" in io
    assert not any("-warm" in t or "cifar" in t or "hdf5" in t for t in io)
    if importlib.util.find_spec("torch") is not None:
        assert {"test_loader.py::test_loader[lmdb-imagenet-n10-cold-w4-fork]",
                "test_loader.py::test_loader[npy-imagenet-n100000-cold-w1-fork]"} <= sweep


# --------------------------------------------------------------------------- page cache


def _synced_file(path: Path, nbytes: int = 1 << 20) -> Path:
    with open(path, "wb") as f:
        f.write(os.urandom(nbytes))
        f.flush()
        os.fsync(f.fileno())  # dirty pages cannot be evicted
    return path


needs_eviction = pytest.mark.skipif(unsupported() is not None, reason=f"{unsupported()}")


def _evictable(path: Path) -> bool:
    try:
        check_evicted([path])
    except EvictionError:
        return False
    return True


@needs_eviction
def test_eviction_is_verified_with_mincore(tmp_path):
    f = _synced_file(tmp_path / "data.bin")
    if not _evictable(f):
        pytest.skip(f"{filesystem(tmp_path)['type']} at {tmp_path} keeps pages cached")
    f.read_bytes()
    cached, total = file_residency(f)
    assert total == 256 and cached == total
    assert check_evicted([f]) == 0
    assert residency([f]) == (0, total)


@needs_eviction
def test_pages_mapped_by_a_live_process_cannot_be_evicted(tmp_path):
    f = _synced_file(tmp_path / "data.bin")
    if not _evictable(f):
        pytest.skip("the temp dir's file system keeps pages cached")
    with open(f, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        bytes(m)  # fault every page in: mapped pages stay
        with pytest.raises(EvictionError, match="left 256 of 256 pages"):
            check_evicted([f])


@needs_eviction
@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm")
def test_tmpfs_cannot_be_evicted():
    if filesystem(Path("/dev/shm"))["type"] != "tmpfs":
        pytest.skip("/dev/shm is not tmpfs here")
    f = Path("/dev/shm") / f"storebench-evict-{os.getpid()}"
    try:
        _synced_file(f)
        with pytest.raises(EvictionError):
            check_evicted([f])
    finally:
        f.unlink()


@needs_eviction
def test_a_cold_round_that_reads_nothing_is_an_error(tmp_path):
    f = _synced_file(tmp_path / "data.bin")
    if not _evictable(f):
        pytest.skip("the temp dir's file system keeps pages cached")
    state = CacheState("cold", [f])
    state.start()
    state.ready()
    assert file_residency(f)[0] == 0
    f.read_bytes()  # this round reads
    state.done()
    state.ready()
    with pytest.raises(ColdRoundError, match="read nothing from disk"):
        state.done()  # this one did not


def test_warm_state_reads_the_files_once(tmp_path):
    f = _synced_file(tmp_path / "data.bin")
    if unsupported() is None and _evictable(f):
        assert file_residency(f)[0] == 0  # so the warm state has to read the file in itself
    state = CacheState("warm", [f])
    state.start()
    for _ in range(2):
        state.ready()
        state.done()
    assert state.rounds == 2
    assert file_residency(f)[0] == file_residency(f)[1]
    with pytest.raises(ValueError, match="'warm', 'cold' or 'fresh'"):
        CacheState("tepid", [f])
    assert not state.reopen and CacheState("cold", [f]).reopen
    fresh = CacheState("fresh", [])  # the remote rows: a new reader per round, the page cache left alone
    fresh.start()
    fresh.before_open()
    fresh.ready()
    fresh.done()
    assert fresh.reopen and not fresh.cold and fresh.rounds == 1 and fresh.gained == []


# --------------------------------------------------------------------------- dataset cache


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def test_datasets_are_built_once_and_reused(cache_root):
    dc = DataCache(cache_root)
    src = dc.source("cifar", 6)
    ds = dc.dataset(formats.get("npy"), "cifar", 6)
    assert dc.builds == 2
    assert ds.checksum == src.checksum == fixtures.dataset_checksum(fixtures.make_dataset("cifar", 6))
    assert ds.raw_bytes == 6 * 32 * 32 * 3 and ds.modes == [["uint8", 3]]
    again = DataCache(cache_root)
    ds2 = again.dataset(formats.get("npy"), "cifar", 6)
    assert again.builds == 0 and ds2.path == ds.path and ds2.checksum == ds.checksum
    rec = again.records()
    assert {(r["role"], r["path"].split("/")[0]) for r in rec} == {
        ("source", "sources"), ("dataset", f"cifar-s0-p{fixtures.PRESET_VERSION}")}
    assert all(r["checksum"] == src.checksum for r in rec)
    json.dumps(rec)


def test_cache_key_covers_everything_that_decides_the_bytes(cache_root, monkeypatch):
    dc = DataCache(cache_root)
    npy, hdf5 = formats.get("npy"), formats.get("hdf5")
    base = dc.path_for(npy, "cifar", 6)
    others = [dc.path_for(npy, "cifar", 7), dc.path_for(npy, "imagenet", 6),
              DataCache(cache_root, seed=1).path_for(npy, "cifar", 6), dc.path_for(hdf5, "cifar", 6),
              dc.path_for(formats.get("hdf5", compression="gzip", level=4), "cifar", 6)]
    assert len({base, *others}) == 6
    assert "hdf5_gzip_level_4_" in others[-1].name

    class Npy2(Npy):
        version = 2
    assert dc.path_for(Npy2(), "cifar", 6) != base
    key = dataset_key(npy, "cifar", 6, 0)
    monkeypatch.setattr(fixtures, "PRESET_VERSION", fixtures.PRESET_VERSION + 1)
    assert dataset_key(npy, "cifar", 6, 0) != key
    assert dc.path_for(npy, "cifar", 6) != base


def test_a_damaged_sidecar_means_rebuild(cache_root):
    dc = DataCache(cache_root)
    ds = dc.dataset(formats.get("npy"), "cifar", 6)
    side = ds.path.with_name(ds.path.name + ".json")
    side.write_text("{not json")
    again = DataCache(cache_root)
    assert again.dataset(formats.get("npy"), "cifar", 6).checksum == ds.checksum
    assert again.builds == 1 and json.loads(side.read_text())["checksum"] == ds.checksum


def test_a_damaged_cached_dataset_is_rebuilt(cache_root):
    """A cache entry whose manifest a killed run cut short is the cache's own: removed and rewritten."""
    dc = DataCache(cache_root)
    ds = dc.dataset(formats.get("npy"), "cifar", 6)
    (ds.path / formats.MANIFEST).write_text("{cut sho")
    again = DataCache(cache_root)
    assert again.dataset(formats.get("npy"), "cifar", 6).checksum == ds.checksum
    assert again.builds == 1 and formats.read_manifest(ds.path)["count"] == 6


def test_scratch_of_killed_runs_on_this_host_is_removed_and_others_kept(tmp_path):
    from bench._data import _scratch_name
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = tmp_path / "scratch"
    left = root / _scratch_name(dead.pid)          # a killed run of this host
    alive = root / _scratch_name(os.getppid())     # a run still going
    other = root / f"not-{_scratch_name(dead.pid)}"  # another host on a shared file system
    for d in (left, alive, other):
        (d / "npy").mkdir(parents=True)
        (d / "npy" / "data.npy").write_bytes(b"x" * 100)

    dc = DataCache(tmp_path)
    out = dc.scratch("hdf5[lzf]")
    assert out == root / _scratch_name(os.getpid()) / "hdf5_lzf_" and out.parent.is_dir()
    assert not left.exists()
    assert (alive / "npy" / "data.npy").exists() and (other / "npy" / "data.npy").exists()
    dc.clean_scratch()
    assert not out.parent.exists() and alive.exists()


def test_a_dataset_that_no_longer_reads_the_same_is_rebuilt(cache_root):
    ds = DataCache(cache_root).dataset(formats.get("npy"), "cifar", 6)
    with open(ds.path / "pixels.npy", "r+b") as f:  # a layout change without a version bump
        f.seek(128)
        first = f.read(1)
        f.seek(128)
        f.write(bytes([first[0] ^ 0xFF]))
    again = DataCache(cache_root)
    assert again.dataset(formats.get("npy"), "cifar", 6).checksum == ds.checksum
    assert again.builds == 1
    with formats.get("npy").open(ds.path) as r:
        assert r[0].image.tobytes()[:1] == first


def test_a_lossless_format_that_reads_back_wrong_is_not_cached(cache_root):
    class Broken(Npy):
        name = "broken"

        def _write(self, samples, root):
            flipped = (Sample(s.key, s.image ^ 1, s.label) for s in samples)
            return super()._write(flipped, root)

    dc = DataCache(cache_root)
    with pytest.raises(AssertionError, match="lossless but"):
        dc.dataset(Broken(), "cifar", 6)
    assert not dc.path_for(Broken(), "cifar", 6).exists()


def test_a_format_that_cannot_store_the_preset_is_unsupported(tmp_path):
    src = Dataset(formats.get("npy"), tmp_path, "xray", 1, 0, "x", 0, 0, 0, [["uint16", 0]])
    dc = DataCache(tmp_path)
    dc.check_modes(formats.get("npy"), src)
    with pytest.raises(Unsupported, match=r"png\[1\] cannot store the xray.*uint16 \(H, W, 3\)"):
        dc.check_modes(formats.get("png", compress_level=1), Dataset(
            formats.get("npy"), tmp_path, "xray", 1, 0, "x", 0, 0, 0, [["uint16", 3]]))


def test_write_sources_are_fresh_iterables(cache_root):
    make = write_source(DataCache(cache_root).source("cifar", 6))
    assert [s.key for s in make()] == [s.key for s in make()] == [f"cifar/{i:07d}" for i in range(6)]


# --------------------------------------------------------------------------- bounds


def test_each_format_has_its_bound():
    assert formats.get("npy").bound.name == "bare-numpy"
    assert formats.get("png", compress_level=1).bound.name == "decode-only[png[1]]"
    assert formats.get("zip", encoding="raw").image_codec == "raw"
    assert formats.get("zip", encoding="raw").bound.name == "bare-zipfile[encoding=raw]"
    ids = [p.id for p in bound_params({"npy": formats.get("npy"), "png": formats.get("png")})]
    assert ids == ["floor-scan", "floor-random", "floor-batch", "gather-batch", "pread-scan", "pread-random",
                   "pread-batch", "bare-numpy-scan",
                   "bare-numpy-random", "bare-numpy-batch", "decode-only[png]-scan"]
    avail = formats.available()
    if "lmdb" in avail and "hdf5" in avail:
        assert (formats.get("lmdb").bound.name, formats.get("hdf5").bound.name) == ("bare-lmdb", "bare-h5py")


@pytest.mark.parametrize("fmt", [{"name": "png"}, {"name": "zip"}, {"name": "tar"}, {"name": "jpeg"},
                                 {"name": "npy"}], ids=lambda d: d["name"])
def test_encoded_images_are_found_in_files_and_archives(cache_root, fmt):
    if fmt["name"] not in formats.available():
        pytest.skip(f"{fmt['name']} is unavailable")
    from storebench.formats._bound import encoded_images

    f = formats.get(fmt["name"])
    ds = DataCache(cache_root).dataset(f, "cifar", 6)
    codec, blobs = encoded_images(ds.path, 4)
    assert codec == (f.image_codec if f.image_codec != "raw" else None)
    assert len(blobs) == (4 if codec else 0)
    if codec == "png":
        assert all(b.startswith(b"\x89PNG") for b in blobs)


def test_pool_is_bounded_and_in_memory(cache_root):
    src = DataCache(cache_root).source("cifar", 6)
    pool = make_pool(src, budget=3 * 32 * 32 * 3)
    assert pool.m == 3 and pool.stacked.shape == (3, 32, 32, 3)
    assert all(a[1].flags.writeable and a[1].base is None for a in pool.args)


@pytest.mark.parametrize("kind", ["floor", "bare-lmdb", "bare-h5py"])
@pytest.mark.parametrize("op", ["scan", "random", "batch"])
def test_bound_loops_build_the_pool_samples_in_order(cache_root, kind, op):
    from storebench.formats._bound import FLOOR

    src = DataCache(cache_root).source("imagenet", 5)  # shapes differ: spans must be exact
    pool = make_pool(src, budget=3 * 400 * 400 * 3)
    assert 1 < pool.m < 5
    n, batch = 11, 4  # more positions than the pool holds: bounds cycle through it
    perm = np.random.default_rng(1).permutation(n)
    order = (np.arange(n) if op == "scan" else perm) % pool.m
    seen = []
    bound = FLOOR if kind == "floor" else formats.get("lmdb" if kind == "bare-lmdb" else "hdf5").bound
    b = bound.open(pool=pool, op=op, perm=perm, batch=batch, root=cache_root,
                   touch=lambda img: seen.append(np.array(img)) or 0)
    try:
        assert b.run() == n
    finally:
        b.close()
    assert len(seen) == n
    for img, i in zip(seen, order.tolist()):
        np.testing.assert_array_equal(img, pool.args[i][1])


# --------------------------------------------------------------------------- results and hooks


class _Fake(SimpleNamespace):
    pass


def _runner(min_time):
    from bench._run import Runner

    bench = _Fake(extra_info={}, stats=_Fake(stats=_Fake(min=min_time)), group=None)
    session = _Fake(opts=_Fake(rounds=3), results=Results(), format=formats.get)
    request = _Fake(node=_Fake(callspec=_Fake(id="npy-cifar-n100-warm"), originalname="test_batch"))
    return Runner(bench, session, request), bench


def test_efficiency_compares_rounds_interleaved_with_the_bound():
    runner, bench = _runner(0.01)
    assert bench.group == "batch"
    runner.paired = {"bare-numpy": [0.005, 0.004], "gather": [0.002, 0.001]}
    row = runner.record(op="batch", preset="cifar", n=100, cache="warm", info={"id": "npy"},
                        items=100, raw_bytes=100 * 3072, fmt_id="npy")
    info = bench.extra_info
    assert info["images/s"] == 10000 and info["MB/s"] == 30.72
    assert (info["bound"], info["bound_images/s"], info["efficiency"]) == ("bare-numpy", 25000, 0.4)
    assert info["vs_gather"] == 0.1 and info["op"] == "batch" and info["rounds"] == 3
    assert row.rate == 10000 and row.bound == "bare-numpy"
    assert any("40.0% of bare-numpy, 10.0% of gather" in line for line in runner.session.results.summary_lines())
    json.dumps(info)


def test_untimed_rows_get_no_rates():
    runner, bench = _runner(0.01)
    bench.stats = None  # --benchmark-disable
    runner.record(op="scan", preset="cifar", n=100, cache="warm", info={}, items=100,
                  raw_bytes=1, fmt_id="npy")
    assert "images/s" not in bench.extra_info and runner.session.results.summary_lines() == []


def _root_conftest():
    spec = importlib.util.spec_from_file_location("storebench_root_conftest", ROOT / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_machine_info_hook_is_stable_and_json(request):
    hooks = _root_conftest()
    a, b = {}, {"cpu": {"brand_raw": "AMD EPYC", "hz_actual": [2596122000, 0], "hz_actual_friendly": "2.6 GHz"}}
    hooks.pytest_benchmark_update_machine_info(request.config, a)
    hooks.pytest_benchmark_update_machine_info(request.config, b)
    assert b.pop("cpu") == {"brand_raw": "AMD EPYC"}, "the current clock speed changes between runs"
    assert a == b, "volatile values in machine_info make --benchmark-compare warn on every run"
    info = json.loads(json.dumps(a))["storebench"]
    assert {"numpy", "pillow"} <= set(info["libraries"])
    if "hdf5" in formats.available():
        assert info["libraries"]["libhdf5"].count(".") == 2
    if "lmdb" in formats.available():
        assert info["libraries"]["liblmdb"].count(".") == 2
    assert info["dbm_backend"].startswith("dbm.")
    assert info["data_dir_fs"] and info["ram_bytes"] > 0 and info["cpu_count"] >= 1
    assert set(info["formats"]) == set(formats.available())


def test_json_hook_adds_version_options_and_datasets(request):
    out = {}
    _root_conftest().pytest_benchmark_update_json(request.config, [], out)
    sb = json.loads(json.dumps(out))["storebench"]
    assert sb["version"] == "0.1.0" and "options" in sb and isinstance(sb["datasets"], list)
    if (ROOT / ".git").exists():
        assert len(sb["commit"]) == 40


def test_benchmark_run_end_to_end(tmp_path):
    """A tiny real run: rates, efficiency, checksums and machine info reach the JSON;
    cold rows (where the data dir's pages can be evicted) and loader rows get theirs too."""
    out = tmp_path / "out.json"
    cold = unsupported() is None and _evictable(_synced_file(tmp_path / "probe.bin"))
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/test_io.py", "bench/test_bounds.py", "bench/test_loader.py",
         "-p", "no:cacheprovider", "--benchmark-enable", "--formats", "npy", "--sizes", "20", "--rounds", "2",
         "--workers", "0", "--cache", "both" if cold else "warm",
         "--data-dir", str(tmp_path / "data"), f"--benchmark-json={out}", "-k", "scan or batch or bound or loader"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "passed" in r.stdout.strip().splitlines()[-1]
    assert "efficiency against the bound" in r.stdout
    doc = json.loads(out.read_text())
    rows = {b["name"]: b for b in doc["benchmarks"]}
    scan = rows["test_scan[npy-cifar-n20-warm]"]
    assert scan["group"] == "scan"
    info = scan["extra_info"]
    assert info["id"] == "npy" and info["n"] == 20 and info["cache"] == "warm"
    assert info["images/s"] > 0 and info["bound"] == "bare-numpy" and 0 < info["efficiency"]
    assert "vs_gather" in rows["test_batch[npy-cifar-n20-warm]"]["extra_info"]
    assert rows["test_bound[floor-scan-cifar-n20]"]["group"] == "bound"
    if cold:
        info = rows["test_scan[npy-cifar-n20-cold]"]["extra_info"]
        assert info["cache"] == "cold" and info["bound"] == "bare-numpy" and 0 < info["efficiency"]
    if importlib.util.find_spec("torch") is not None:
        info = rows["test_loader[npy-cifar-n20-warm-w0]"]["extra_info"]
        assert (info["op"], info["bound"], info["bound_op"], info["workers"]) == ("loader", "bare-numpy", "batch", 0)
        assert 0 < info["efficiency"] and "vs_gather" in info
    assert "storebench" in doc["machine_info"]
    checks = {d["id"]: d["checksum"] for d in doc["storebench"]["datasets"] if d["role"] == "dataset"}
    assert checks["npy"] == fixtures.dataset_checksum(fixtures.make_dataset("cifar", 20))
    assert np.isfinite(doc["storebench"]["peak_rss_bytes"])


def test_benchmark_compare_runs_against_a_saved_run_without_machine_info_warnings(tmp_path):
    """``pytest bench --benchmark-compare``: no saved run is a warning, not a crash, and a
    second run on the same machine compares without "machine_info is different"."""
    def run(*extra):
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "bench/test_io.py", "-p", "no:cacheprovider", "--formats", "npy",
             "--sizes", "10", "--rounds", "1", "-k", "scan", "--data-dir", str(tmp_path / "data"),
             f"--benchmark-storage={tmp_path / 'saved'}", *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r.stdout + r.stderr

    assert "Can't compare. No benchmark files" in run("--benchmark-compare")
    run("--benchmark-autosave")
    out = run("--benchmark-compare")
    assert "Comparing against benchmarks from" in out
    assert "machine_info is different" not in out and "PytestBenchmarkWarning" not in out


def _bench_stderr(tmp_path: Path, *, tty: bool) -> str:
    """stderr of building a 1000-image dataset, on a pseudo-terminal or a pipe."""
    import threading
    args = [sys.executable, "-m", "pytest", "bench/test_io.py", "-p", "no:cacheprovider", "--benchmark-disable",
            "--formats", "npy", "--sizes", "1000", "-k", "test_scan", "--data-dir", str(tmp_path / f"data-{tty}")]
    if not tty:
        r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r.stderr
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # tqdm draws nothing at 0 columns
    chunks = []

    def drain():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        r = subprocess.run(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=slave, text=True, timeout=300)
    finally:
        os.close(slave)
        reader.join(10)
        os.close(master)
    assert r.returncode == 0, r.stdout[-3000:]
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_dataset_generation_shows_a_tqdm_bar_on_a_terminal_only(tmp_path):
    assert "/1000 [" in _bench_stderr(tmp_path, tty=True)
    assert "/1000 [" not in _bench_stderr(tmp_path, tty=False)


def test_formats_without_random_access_skip_shuffled_reads_at_large_n():
    from bench._case import SEQUENTIAL_LIMIT
    from bench._case import require_random_access as _random_access

    chunked = formats.get("zarr") if "zarr" in formats.available() else formats.get("parquet")
    assert not chunked.random_access and formats.get("npy").random_access
    _random_access(chunked, SEQUENTIAL_LIMIT)  # at the limit: measured
    _random_access(formats.get("npy"), 10 * SEQUENTIAL_LIMIT)
    with pytest.raises(pytest.skip.Exception, match="decodes a whole chunk or row group"):
        _random_access(chunked, SEQUENTIAL_LIMIT + 1)


# --------------------------------------------------------------------------- patches


def test_read_amplification_from_known_byte_counts():
    from bench._ops import RoundIO, amplification, patch_io_info

    assert amplification(8_000_000, 100_352) == pytest.approx(79.719, abs=1e-3)
    assert amplification(10, 0) is None
    mb = 1_000_000
    rounds = [RoundIO(read_bytes=9 * mb, rss_start=300 * mb, rss_peak=310 * mb),
              RoundIO(read_bytes=11 * mb, rss_start=300 * mb, rss_peak=340 * mb)]
    # 10 patches of 100 kB a round; rounds read 9 and 11 MB: 1 MB a patch, 10x the patch.
    info = patch_io_info(rounds, cold=True, patches=10, patch_bytes=10 * 100_000, gained_pages=[200, 300])
    assert info["read_bytes_per_patch"] == 1_000_000 and info["amplification"] == 10.0
    assert info["cached_bytes_per_patch"] == 250 * 4096 / 10 and info["cache_amplification"] == 1.024
    assert info["peak_rss_mb"] == 340.0 and info["rss_growth_mb"] == 40.0
    warm = patch_io_info(rounds, cold=False, patches=10, patch_bytes=10 * 100_000)
    assert warm["read_bytes_per_patch"] is warm["amplification"] is warm["cache_amplification"] is None
    unknown = [RoundIO(None, None, None)]
    assert patch_io_info(unknown, cold=True, patches=10, patch_bytes=1)["amplification"] is None
    assert patch_io_info(unknown, cold=True, patches=10, patch_bytes=1)["peak_rss_mb"] is None


def test_patch_regions_are_seeded_inside_the_images_and_independent_of_n():
    from bench._ops import PatchPlan

    images = [((300, 200), np.dtype(np.uint16)), ((100, 150, 3), np.dtype(np.uint8)),
              ((20, 40, 50, 2), np.dtype(np.float32))]
    patch = _options.BenchOptions(patch=((128, 128), (16, 64, 64))).patch_for
    plan = PatchPlan.of(images, patch, 3, [2, 0, 1])
    assert [tuple(sl.stop - sl.start for sl in r) for r in plan.regions] == [(128, 128), (100, 128), (16, 40, 50)]
    for (shape, _), r in zip(images, plan.regions):
        assert all(0 <= sl.start < sl.stop <= n for sl, n in zip(r, shape))
    assert plan.nbytes == [128 * 128 * 2, 100 * 128 * 3, 16 * 40 * 50 * 2 * 4]
    assert plan.patch_bytes == sum(plan.nbytes) and plan.info()["patch_clipped"]
    assert PatchPlan.of(images[:2], patch, 3, [0, 1]).regions == plan.regions[:2]
    assert PatchPlan.of(images, patch, 4, [0, 1, 2]).regions != plan.regions


def test_patch_gather_copies_distinct_regions_of_the_pool_images(cache_root, monkeypatch):
    from bench import _bounds
    from bench._ops import PatchPlan

    pool = make_pool(DataCache(cache_root).source("imagenet", 3), budget=1)  # one image, reused

    def patch(rank):
        return (64,) * rank

    plan = PatchPlan.of([(a[1].shape, a[1].dtype) for a in pool.args] * 3, patch, 0, [2, 0, 1])
    b = _bounds.patch_gather(pool, plan.order, patch, 0)
    assert b.name == "patch-gather" and b.info["pool_size"] == pool.m == 1
    seen: list[np.ndarray] = []
    monkeypatch.setattr(_bounds, "touch", lambda img: seen.append(img.copy()))
    assert b.run() == 3 and len(seen) == 3
    image = pool.args[0][1]
    for i, img in zip(plan.order, seen):  # position i: pool image 0 and the region drawn for i on it
        assert img.shape[:2] == (64, 64)
        np.testing.assert_array_equal(img, image[plan.regions[i]])
    assert len({tuple((sl.start, sl.stop) for sl in r) for r in plan.regions}) == 3, "distinct patches"


def test_patch_rows_end_to_end(tmp_path):
    """Patch rows reach the JSON with patches/s, efficiency against patch-gather, and (cold,
    where the data dir's pages can be evicted) the bytes read per patch and the amplification."""
    out = tmp_path / "out.json"
    cold = unsupported() is None and _evictable(_synced_file(tmp_path / "probe.bin"))
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/test_patch.py", "-p", "no:cacheprovider", "--benchmark-enable",
         "--formats", "npy,png", "--sizes", "20", "--rounds", "2", "--patch", "16",
         "--cache", "cold,warm" if cold else "warm", "--data-dir", str(tmp_path / "data"),
         f"--benchmark-json={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "of patch-gather" in r.stdout and "(patches/s)" in r.stdout
    rows = {b["name"]: b for b in json.loads(out.read_text())["benchmarks"]}
    bound = rows["test_patch_bound[cifar-n20]"]
    assert bound["group"] == "bound" and bound["extra_info"]["bound"] == "patch-gather"
    warm = rows["test_patch[npy-cifar-n20-warm]"]["extra_info"]
    assert warm["op"] == "patch" and warm["patch_shape"] == [16, 16] and warm["patch_bytes"] == 16 * 16 * 3
    assert warm["patches/s"] > 0 and warm["bound"] == "patch-gather" and warm["efficiency"] > 0
    assert warm["MB/s"] == pytest.approx(warm["patches/s"] * 768 / 1e6, rel=0.02)
    assert warm["amplification"] is None and warm["read_bytes_per_patch"] is None
    assert warm["partial_reads"] is formats.get("npy").partial_reads and warm["peak_rss_mb"] > 0
    if cold:
        info = rows["test_patch[png-cifar-n20-cold]"]["extra_info"]
        assert info["cache"] == "cold" and info["cached_bytes_per_patch"] > 0
        assert info["cache_amplification"] == pytest.approx(info["cached_bytes_per_patch"] / 768, rel=1e-3)
        if info["read_bytes_per_patch"]:  # /proc/self/io counts this file system's reads
            assert info["amplification"] == pytest.approx(info["read_bytes_per_patch"] / 768, rel=1e-3)
    from storebench.report import write_report
    from storebench.results import load

    write_report([load(out)], tmp_path / "report", kinds=())
    table = (tmp_path / "report" / "tables" / "patch.md").read_text()
    assert "patches/s (median)" in table and "patch 16x16" in table
    assert ("amplification" in table) == cold


def test_formats_takes_any_format_id_with_options():
    """An id outside bench_variants is built from its options (any order); a bad option is named."""
    r = subprocess.run([sys.executable, "-m", "pytest", "bench/test_io.py", "--collect-only", "-q",
                        "-p", "no:cacheprovider", "-k", "test_scan",
                        "--formats", "hdf5[level=2,compression=gzip],npy[advise=normal]"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    ids = {line.split("[", 1)[1].rsplit("-cifar", 1)[0] for line in r.stdout.splitlines() if "test_scan[" in line}
    assert ids == {"hdf5[gzip,level=2]", "npy[advise=normal]"}, r.stdout
    r = subprocess.run([sys.executable, "-m", "pytest", "bench/test_io.py", "--collect-only", "-q",
                        "-p", "no:cacheprovider", "--formats", "hdf5[gzip,colour=red]"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 4 and "no option 'colour'" in r.stderr, r.stdout + r.stderr
