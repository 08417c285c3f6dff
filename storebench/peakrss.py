"""Peak memory of writing and reading back a preset dataset, in a fresh process.

``python -m storebench.peakrss FORMAT_ID... --preset cifar --n 100000`` writes
each format's dataset from the streaming generator, reads it back with a full
scan and with ``read_batch`` over a shuffled order, checks the dataset checksum,
and prints the peak resident set size (``ru_maxrss``) of a child process that
did only that.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path


def _measure(fmt_name: str, options: dict, preset: str, n: int, workdir: str, conn) -> None:
    import numpy as np

    from storebench import fixtures, formats
    fmt = formats.get(fmt_name, **options)
    path = Path(workdir) / "ds"
    t0 = time.perf_counter()
    report = fmt.write(fixtures.make_dataset(preset, n), path)
    t1 = time.perf_counter()
    after_write = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with fmt.open(path) as r:
        scanned = fixtures.dataset_checksum(iter(r))
        t2 = time.perf_counter()
        order = np.random.default_rng(0).permutation(n)
        for start in range(0, n, 256):
            r.read_batch(order[start:start + 256])
    t3 = time.perf_counter()
    expected = fixtures.dataset_checksum(fixtures.make_dataset(preset, n))
    conn.send({
        "format": fmt.id, "preset": preset, "n": n,
        "write_s": round(t1 - t0, 2), "scan_s": round(t2 - t1, 2), "shuffled_batches_s": round(t3 - t2, 2),
        "bytes_on_disk": report.bytes_on_disk, "n_files": report.n_files,
        "checksum_ok": scanned == expected,
        "peak_rss_mb_after_write": round(after_write / 1024, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    })


def measure(fmt_name: str, options: dict | None = None, *, preset: str = "cifar", n: int = 100_000,
            data_dir: str | None = None) -> dict:
    """Run one measurement in a fresh spawned process and return its figures."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    with tempfile.TemporaryDirectory(dir=data_dir) as d:
        proc = ctx.Process(target=_measure, args=(fmt_name, options or {}, preset, n, d, child))
        proc.start()
        child.close()
        result = parent.recv()
        proc.join()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m storebench.peakrss", description=__doc__.split("\n")[0])
    p.add_argument("formats", nargs="+", help="format names, optionally name:json-options")
    p.add_argument("--preset", default="cifar")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--data-dir", default=".", help="where the temporary datasets go")
    args = p.parse_args(argv)
    for spec in args.formats:
        name, _, opts = spec.partition(":")
        print(json.dumps(measure(name, json.loads(opts) if opts else {}, preset=args.preset,
                                 n=args.n, data_dir=args.data_dir)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
