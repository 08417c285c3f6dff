"""bench/ddp_read.py: shards cover every sample exactly once per epoch, and real ranks agree."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the distributed read benchmark needs PyTorch")
pytest.importorskip("cv2", reason="the workloads need opencv-python-headless")

from torch.utils.data import DistributedSampler  # noqa: E402

from bench.ddp_read import ExactDistributedSampler  # noqa: E402
from storebench import fixtures, formats  # noqa: E402

pytestmark = pytest.mark.torch
SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "ddp_read.py"


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 7, 12, 13])
def test_exact_shards_read_every_index_once(n, world):
    data = list(range(n))
    for epoch in (0, 1):
        shards = []
        for rank in range(world):
            s = ExactDistributedSampler(data, num_replicas=world, rank=rank, seed=4)
            s.set_epoch(epoch)
            shards.append(list(s))
            assert len(s) == len(shards[-1])
        assert sorted(i for sh in shards for i in sh) == data
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        # The same permutation as the stock sampler, minus its padding.
        stock = DistributedSampler(data, num_replicas=world, rank=0, seed=4)
        stock.set_epoch(epoch)
        if n % world == 0:
            assert shards[0] == list(stock)


def test_the_stock_sampler_pads_with_repeats():
    data = list(range(7))
    got = [i for r in range(3) for i in DistributedSampler(data, num_replicas=3, rank=r)]
    assert len(got) == 9 and set(got) == set(data)  # two samples read twice: why exact is the default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_ranks(world: int, args: list[str], timeout: float = 240) -> dict:
    """Start ``world`` ranks of the script on localhost as torchrun would (env://); rank 0's JSON."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(SCRIPT), *args, "--timeout", "120"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return json.loads(outs[0][0].strip().splitlines()[-1])


def test_ranks_together_read_every_sample_once_per_epoch(tmp_path):
    path = tmp_path / "ds"
    formats.get("npy").write(fixtures.make_dataset("cifar", 11), path)
    out = tmp_path / "result.json"
    res = launch_ranks(2, [str(path), "--workload", "classify-aug", "--batch-size", "3", "--epochs", "2",
                           "--record-keys", "--json", str(out)])
    assert json.loads(out.read_text()) == res
    with formats.open_dataset(path) as r:
        keys = sorted(r.keys())
    assert res["world_size"] == 2 and res["n"] == 11 and res["format"] == "npy"
    orders = []
    for e in res["epochs"]:
        per_rank = e["keys"]
        assert len(per_rank) == 2 and {len(k) for k in per_rank} == {5, 6}
        assert sorted(per_rank[0] + per_rank[1]) == keys, "a sample was missed or read twice"
        assert e["images"] == 11 and e["images/s"] > 0
        orders.append(per_rank[0])
    assert orders[0] != orders[1], "set_epoch reshuffles"
    assert res["images/s"] == max(e["images/s"] for e in res["epochs"])


def test_ranks_read_one_bucket(tmp_path, s3_server):
    """K = 1 and 2 ranks read an s3:// dataset from the local S3 endpoint: every sample once per
    epoch, all of it through the server."""
    path = tmp_path / "ds"
    formats.get("parquet", row_group_size=4).write(fixtures.make_dataset("cifar", 9), path)
    url = s3_server.upload(path, "ddp/parquet")
    with formats.open_dataset(path) as r:
        keys = sorted(r.keys())
    for world in (1, 2):
        s3_server.reset()
        res = launch_ranks(world, [url, "--storage-options", json.dumps(s3_server.storage_options),
                                   "--workload", "none", "--batch-size", "2", "--epochs", "1", "--record-keys"])
        assert res["world_size"] == world and res["store"] == "s3" and res["dataset"] == url
        per_rank = res["epochs"][0]["keys"]
        assert sorted(k for ks in per_rank for k in ks) == keys, "a sample was missed or read twice"
        assert s3_server.stats()["get"] >= world, "every rank read from the server"
