"""Distributed read benchmark: every rank reads its shard of a dataset through a workload.

A plain script for ``torchrun`` (CPU and the gloo backend are enough)::

    torchrun --nproc_per_node=2 bench/ddp_read.py DATASET --workload classify-aug --epochs 3

``DATASET`` is any storebench dataset directory.  A DistributedSampler gives
each rank its shard of a seeded permutation, the same on every rank and new
every epoch; ranks read it through a DataLoader with the workload applied.
After each epoch the ranks ``all_reduce`` their image counts (sum) and epoch
times (max): aggregate images/s is images read by all ranks over the
slowest rank's time.  Rank 0 prints one JSON line (and writes ``--json``).

On a cluster, put the dataset on a file system every node mounts at the same
path and start the same command on each node, e.g. two nodes of eight::

    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d \\
        --rdzv-endpoint=node0.example:29500 --rdzv-id=storebench \\
        bench/ddp_read.py /shared/datasets/xray-lmdb --workload detect-aug --workers 4

From an object store, every rank reads the same bucket: ``DATASET`` is an
``s3://bucket/prefix`` URL of a dataset uploaded as it is (formats whose
``remote_reads`` is set), with ``--storage-options`` the JSON of
``storage_options`` (``{"endpoint_url": ..., "key": ..., "secret": ...,
"region": ...}``; without it, AWS's usual credentials)::

    torchrun --nproc_per_node=8 bench/ddp_read.py s3://datasets/xray-parquet --workers 4

``--sampler exact`` (default) shards without padding, so the ranks together
read every sample exactly once per epoch (ranks may differ by one sample:
fine for reading, but DDP training needs equal steps: ``--sampler torch``
is the stock DistributedSampler, which repeats samples to even them out).
``--evict`` drops the dataset's pages from each node's page cache before
every epoch (``posix_fadvise``; unverified, and a network file system may
keep its own server-side cache).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

try:
    from storebench import formats
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
    from storebench import formats
from storebench.formats import dataset_files
from storebench.formats._fs import evict as drop_from_page_cache
from storebench.workloads import (
    FETCHES,
    WORKLOADS,
    WorkloadDataset,
    collate,
    get_workload,
)


class ExactDistributedSampler(DistributedSampler):
    """DistributedSampler without padding: rank ``r`` of ``K`` takes ``perm[r::K]``.

    The permutation is the stock sampler's (seed + epoch), so together the
    ranks read each index exactly once per epoch.
    """

    def __init__(self, dataset, **kwargs):
        super().__init__(dataset, drop_last=False, **kwargs)
        self.total_size = len(self.dataset)
        self.num_samples = len(range(self.rank, self.total_size, self.num_replicas))

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        return iter(order[self.rank::self.num_replicas])


SAMPLERS = {"exact": ExactDistributedSampler, "torch": DistributedSampler}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", help="a storebench dataset directory (the same path on every node), or an "
                   "s3://bucket/prefix URL")
    p.add_argument("--storage-options", default=None, metavar="JSON",
                   help="storage_options for an s3:// dataset, as JSON (endpoint_url, key, secret, region)")
    p.add_argument("--workload", default="classify-aug",
                   help=f"workload name or a+b chain: {', '.join(WORKLOADS)} (default classify-aug)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs (default 2)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per rank (default 0)")
    p.add_argument("--mp-context", default=None, help="worker start method (default: the platform's)")
    p.add_argument("--fetch", choices=FETCHES, default="batch", help="how samples leave the store")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="exact")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="gloo", help="torch.distributed backend (default gloo)")
    p.add_argument("--device", default="cpu",
                   help="'cuda': pinned batches go to this rank's GPU (non_blocking, synchronised)")
    p.add_argument("--evict", action="store_true",
                   help="drop the dataset from each node's page cache before every epoch")
    p.add_argument("--record-keys", action="store_true",
                   help="gather every rank's keys per epoch into the JSON")
    p.add_argument("--json", default=None, help="rank 0 writes the result here too")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the other ranks")
    return p.parse_args(argv)


def evict(path) -> None:
    drop_from_page_cache(dataset_files(path))


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    dist.init_process_group(args.backend, timeout=datetime.timedelta(seconds=args.timeout))
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = args.device == "cuda"
    remote = formats.is_remote(args.dataset)
    if args.storage_options and not remote:
        raise SystemExit("--storage-options is for an s3:// dataset")
    if args.evict and remote:
        raise SystemExit("--evict is for a local dataset (an object store has no page cache here)")
    reader = formats.open_dataset(args.dataset, storage_options=json.loads(args.storage_options or "null"))
    workload = None if args.workload == "none" else get_workload(args.workload, seed=args.seed)
    data = WorkloadDataset(reader, workload, fetch=args.fetch)
    sampler = SAMPLERS[args.sampler](data, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    loader: DataLoader[Any] = DataLoader(
        data,  # type: ignore[arg-type]  # a duck-typed map-style dataset, not a torch Dataset subclass
        batch_size=args.batch_size, sampler=sampler, collate_fn=collate,
        num_workers=args.workers, persistent_workers=args.workers > 0, pin_memory=cuda,
        multiprocessing_context=args.mp_context if args.workers else None)
    device = torch.device("cuda", local_rank) if cuda else None
    epochs = []
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        if args.evict and local_rank == 0:
            evict(reader.path)
        dist.barrier()
        keys, count = [], 0
        t0 = time.perf_counter()
        for batch in loader:
            if device is not None:
                images = batch["image"]
                images = images if isinstance(images, list) else [images]
                for im in images:
                    im.to(device, non_blocking=True)
            count += len(batch["key"])
            if args.record_keys:
                keys += batch["key"]
        if device is not None:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        total, slowest = torch.tensor([float(count)]), torch.tensor([seconds])
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        row: dict[str, Any] = {
            "epoch": epoch, "images": int(total.item()), "seconds": round(slowest.item(), 6),
            "images/s": round(total.item() / slowest.item(), 1) if slowest.item() > 0 else None}
        if args.record_keys:
            per_rank = [None] * world
            dist.all_gather_object(per_rank, keys)
            row["keys"] = per_rank
        epochs.append(row)
    hosts = [None] * world
    dist.all_gather_object(hosts, socket.gethostname())
    result = None
    if rank == 0:
        result = {
            "world_size": world, "nodes": len(set(hosts)), "backend": args.backend,
            "dataset": str(reader.path), "store": "s3" if remote else "local",
            "format": reader.format.id, "n": len(reader),
            "workload": args.workload, "fetch": args.fetch, "sampler": args.sampler,
            "batch_size": args.batch_size, "workers": args.workers, "device": args.device,
            "evict": args.evict, "torch": torch.__version__, "epochs": epochs,
            "images/s": max((e["images/s"] or 0) for e in epochs) if epochs else None,
        }
        text = json.dumps(result)
        print(text, flush=True)
        if args.json:
            Path(args.json).write_text(text)
    reader.close()
    dist.destroy_process_group()
    return result


if __name__ == "__main__":
    main()
