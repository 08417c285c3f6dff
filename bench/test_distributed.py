"""Distributed reads: ``torchrun --nproc_per_node=K bench/ddp_read.py`` with K = 1 and 2 (gloo, CPU).

Ids read ``test_ddp[npy-cifar-n1000-classify-aug-k2]``.  Each row is one
launch on localhost (127.0.0.1, a free port) whose ranks read ``--rounds``
epochs of their DistributedSampler shards through the workload; the
benchmark's time is the whole launch (Python and torch start-up included:
what a user waits for), while ``images/s`` in extra_info and the summary is
the script's aggregate over all ranks (all_reduce: images summed over the
slowest rank's epoch time), from the fastest epoch.  The test asserts that,
every epoch, the ranks together read each sample exactly once.  Formats:
``--formats`` if given, else npy; sizes: ``--sizes`` if given, else the
smallest default (each launch starts Python and torch K + 1 times).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the distributed benchmark needs PyTorch")
pytest.importorskip("cv2", reason="the workloads need opencv-python-headless")

from bench._data import Unsupported
from bench._options import workload_sizes
from bench._results import Row
from bench._run import format_info

pytestmark = pytest.mark.torch
SCRIPT = Path(__file__).resolve().with_name("ddp_read.py")
WORKLOAD = "classify-aug"
RANKS = (1, 2)
#: Above this size ranks do not send back the keys they read.
RECORD_LIMIT = 10_000



def pytest_generate_tests(metafunc):
    from bench import _session

    if "ddp_fmt_id" not in metafunc.fixturenames:
        return
    s = _session.get(metafunc.config)
    params = s.format_params if s.opts.formats is not None else [p for p in s.format_params if p.id == "npy"]
    metafunc.parametrize("ddp_fmt_id", params)
    metafunc.parametrize("preset_", s.opts.presets)  # not "preset": bench/conftest.py would order it first
    sizes = workload_sizes(metafunc.config, s.opts)
    metafunc.parametrize("size", sizes, ids=[f"n{n}" for n in sizes])
    metafunc.parametrize("ranks", RANKS, ids=[f"{WORKLOAD}-k{k}" for k in RANKS])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(ranks: int, args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(SCRIPT), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_ddp(benchmark, runner, session, tmp_path, ddp_fmt_id, preset_, size, ranks):
    fmt, n, opts = session.format(ddp_fmt_id), size, session.opts
    try:
        ds = session.data.dataset(fmt, preset_, n)
    except Unsupported as err:
        pytest.skip(str(err))
    out = tmp_path / "ddp.json"
    args = [str(ds.path), "--workload", WORKLOAD, "--epochs", str(opts.rounds), "--batch-size",
            str(opts.batch_size), "--seed", str(opts.seed), "--json", str(out)]
    record = n <= RECORD_LIMIT
    if record:
        args.append("--record-keys")
    done = benchmark.pedantic(lambda: _torchrun(ranks, args), rounds=1, iterations=1)
    assert done.returncode == 0, done.stderr[-4000:]
    res = json.loads(out.read_text())
    assert res["world_size"] == ranks and res["n"] == n and len(res["epochs"]) == opts.rounds
    with ds.open() as r:
        keys = sorted(r.keys())
    for e in res["epochs"]:
        assert e["images"] == n
        if record:
            assert sorted(k for shard in e.pop("keys") for k in shard) == keys, (
                f"epoch {e['epoch']}: the ranks did not read every sample exactly once")
    info = format_info(fmt, preset_, n, cache="warm", ds=ds, batch_size=opts.batch_size)
    info.update({k: v for k, v in res.items() if k not in ("dataset", "format", "n")},
                ranks=ranks, launch_s=round(benchmark.stats.stats.min, 3) if benchmark.stats else None)
    benchmark.extra_info.update(info, op="ddp")
    rate = None if opts.smoke else res["images/s"] or None  # smoke runs print no table
    session.results.add(Row(runner.name, "ddp", preset_, n, "warm", benchmark.extra_info, fmt_id=fmt.id,
                            rate=rate))
