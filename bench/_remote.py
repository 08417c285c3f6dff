"""Remote rows (``--store s3``): requests and bytes per sample, counted by the server, and the
latency model.

The S3 endpoint is moto's S3 server on 127.0.0.1 (the ``s3_server`` fixture
of storebench's pytest plugin); each cached dataset is uploaded once under
its cache directory's name (the dataset's cache key), so a dataset is the
same objects in every row and every session of that server.

**The latency model** (a model, not a measurement: loopback has no network).
A remote row's projected epoch time for a stated round-trip time ``RTT``,
bandwidth ``BW`` and ``C`` requests in flight at once is::

    requests x RTT / C  +  bytes / BW  +  CPU

``requests`` and ``bytes`` are what the server counted in one round (every
GET, HEAD and listing; body bytes sent), ``CPU`` the client process's CPU
time in that round (the format's decoding and its client library; the server
is another process).  It assumes requests overlap perfectly ``C`` at a time
and the bandwidth is shared, and it ignores TCP slow start, request
throttling, time to first byte beyond one RTT, and whether a library can keep
``C`` requests in flight at all (a sequential reader keeps one: its own
projection is the ``C = 1`` figure, ``projected_epoch_s_serial``).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field


@dataclass
class S3Meter:
    """The server's counters and this process's CPU time per round (``start``/``stop`` outside the timer)."""

    server: object
    rounds: list[dict] = field(default_factory=list)
    _cpu: float | None = None

    def start(self) -> None:
        self.server.reset()  # type: ignore[attr-defined]
        self._cpu = time.process_time()

    def stop(self) -> None:
        if self._cpu is None:
            return
        cpu = time.process_time() - self._cpu
        self._cpu = None
        self.rounds.append({**self.server.stats(), "cpu_s": cpu})  # type: ignore[attr-defined]


def projected_epoch_s(requests: float, nbytes: float, cpu_s: float, *, rtt_ms: float,
                      bandwidth_mbps: float, concurrency: int) -> float:
    """The latency model: ``requests x RTT / concurrency + bytes / bandwidth + CPU`` in seconds."""
    return requests * rtt_ms / 1e3 / concurrency + nbytes * 8 / (bandwidth_mbps * 1e6) + cpu_s


def remote_info(rounds: list[dict], *, n: int, raw_bytes: int, opts, remote_reads: str | None) -> dict:
    """extra_info of a remote row from its rounds' counters (medians over rounds)."""
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]} if rounds else {}
    if not med or not n:
        return {"store": "s3", "remote_reads": remote_reads}
    requests = med["get"] + med["head"] + med["list"]
    model = {"rtt_ms": opts.rtt_ms, "bandwidth_mbps": opts.bandwidth_mbps, "concurrency": opts.concurrency}
    return {
        "store": "s3", "remote_reads": remote_reads,
        "get_requests_per_sample": round(med["get"] / n, 4),
        "requests_per_sample": round(requests / n, 4),  # GETs, HEADs and listings
        "range_get_fraction": round(med["range_get"] / med["get"], 4) if med["get"] else None,
        "bytes_per_sample": round(med["bytes"] / n, 1),
        "read_amplification": round(med["bytes"] / raw_bytes, 4) if raw_bytes else None,
        "cpu_s": round(med["cpu_s"], 4),
        "latency_model": model,
        "projected_epoch_s": round(projected_epoch_s(requests, med["bytes"], med["cpu_s"], rtt_ms=opts.rtt_ms,
                                                     bandwidth_mbps=opts.bandwidth_mbps,
                                                     concurrency=opts.concurrency), 3),
        "projected_epoch_s_serial": round(projected_epoch_s(requests, med["bytes"], med["cpu_s"],
                                                            rtt_ms=opts.rtt_ms, bandwidth_mbps=opts.bandwidth_mbps,
                                                            concurrency=1), 3),
    }
