"""Claims: verdicts computed from result JSON, not measured where rows are missing, and scenarios that
collect the rows each claim needs."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storebench import claims as cl
from storebench.cli import main
from storebench.results import load

ROOT = Path(__file__).resolve().parents[1]


def _row(name: str, op: str, fmt: str, times, *, n: int = 100, workers=None, cache="warm", preset="cifar",
         **extra) -> dict:
    times = [float(t) for t in times]
    s = sorted(times)
    info = {"op": op, "id": cl._canonical(fmt), "format": fmt.split("[")[0], "n": n, "preset": preset, "cache": cache,
            "workers": workers, **extra}
    return {"fullname": f"bench/x.py::{name}", "name": name, "group": op, "extra_info": info,
            "stats": {"median": s[len(s) // 2], "min": s[0], "rounds": len(s), "data": times}}


def _write(tmp_path: Path, rows: list[dict], name: str = "r.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps({"benchmarks": rows, "machine_info": {"node": "test"}}), encoding="utf-8")
    return p


def _claim(cid: str) -> cl.Claim:
    return cl.get_claims([cid])[0]


def _result(path: Path, cid: str) -> cl.ClaimResult:
    return cl.evaluate([load(path)], [_claim(cid)], n_boot=2000)[0]


FAST, SLOW = [1.0, 1.05, 0.95, 1.02, 0.98], [3.0, 3.1, 2.9, 3.05, 2.95]


def _fetch(fetch: str, times, workers: int, fmt: str = "shelve") -> dict:
    return _row(f"test_fetch[{fmt}-{fetch}-w{workers}]", "fetch", fmt, times, workers=workers, fetch=fetch,
                preset="xray[side=600-750,bits=8]", n=512)


def test_a_ratio_on_the_claimed_side_holds_and_inverted_does_not(tmp_path):
    holds = _result(_write(tmp_path, [_fetch("batch", FAST, 0), _fetch("reopen", SLOW, 0)]), "000a")
    assert holds.verdict == cl.HOLDS
    (o,) = holds.outcomes
    assert o.ratio == pytest.approx(3.0, rel=0.05) and o.lo > 1 and o.hi >= o.ratio >= o.lo
    assert o.setting["workers"] == 0 and len(o.rows) == 2
    flipped = _result(_write(tmp_path, [_fetch("batch", SLOW, 0), _fetch("reopen", FAST, 0)]), "000a")
    assert flipped.verdict == cl.FAILS and flipped.outcomes[0].hi < 1


def test_an_interval_straddling_one_is_inconclusive(tmp_path):
    noisy = [1.0, 3.0, 0.5, 2.0, 1.5]
    r = _result(_write(tmp_path, [_fetch("batch", noisy, 0), _fetch("reopen", [1.4, 1.6, 1.5, 0.6, 2.8], 0)]),
                "000a")
    assert r.verdict == cl.INCONCLUSIVE and r.outcomes[0].lo < 1 < r.outcomes[0].hi


def test_settings_that_disagree_give_depends_on_the_swept_parameter(tmp_path):
    rows = [_fetch("batch", FAST, 0), _fetch("reopen", SLOW, 0), _fetch("batch", SLOW, 2), _fetch("reopen", FAST, 2)]
    r = _result(_write(tmp_path, rows), "000a")
    assert r.verdict == "depends on workers" and r.depends_on == ("workers",)
    assert {o.setting["workers"]: o.verdict for o in r.outcomes} == {0: cl.HOLDS, 2: cl.FAILS}


def test_missing_rows_are_not_measured_with_the_reason(tmp_path):
    r = _result(_write(tmp_path, [_fetch("batch", FAST, 0)]), "000a")
    assert r.verdict == cl.NOT_MEASURED and not r.outcomes
    assert "fetch=reopen" in r.why and "storebench run --claims 000a" in r.why
    other = _result(_write(tmp_path, [_fetch("batch", FAST, 0), _fetch("reopen", SLOW, 2)]), "000a")
    assert other.verdict == cl.NOT_MEASURED and "no setting" in other.why


def test_rows_without_raw_rounds_are_not_measured(tmp_path):
    rows = [_fetch("batch", FAST, 0), _fetch("reopen", SLOW, 0)]
    del rows[1]["stats"]["data"]
    r = _result(_write(tmp_path, rows), "000a")
    assert r.verdict == cl.NOT_MEASURED and "without raw round times" in r.why
    rows = [_fetch("batch", FAST[:1], 0), _fetch("reopen", SLOW, 0)]
    assert "an interval needs" in _result(_write(tmp_path, rows), "000a").why


def test_similar_claims_hold_inside_the_band_only(tmp_path):
    near = [1.1, 1.12, 1.08, 1.11, 1.09]
    rows = [_fetch("batch", FAST, 2), _fetch("item", near, 2, fmt="png")]
    assert _result(_write(tmp_path, rows), "000b-2").verdict == cl.HOLDS
    rows = [_fetch("batch", FAST, 2), _fetch("item", SLOW, 2, fmt="png")]
    assert _result(_write(tmp_path, rows), "000b-2").verdict == cl.FAILS


def test_fastest_compares_with_the_best_other_row(tmp_path):
    rows = [_fetch("batch", FAST, 2), _fetch("batch", SLOW, 0), _fetch("item", SLOW, 2, fmt="png"),
            _fetch("reopen", [0.5, 0.52, 0.48], 4)]
    r = _result(_write(tmp_path, rows), "000b-3")
    assert r.verdict == cl.FAILS and "reopen-w4" in r.outcomes[0].why
    rows[-1] = _fetch("reopen", SLOW, 4)
    assert _result(_write(tmp_path, rows), "000b-3").verdict == cl.HOLDS


def _write_row(fmt: str, n: int, times, **extra) -> dict:
    return _row(f"test_write[{fmt}-cifar-n{n}]", "write", fmt, times, n=n, cache=None, **extra)


def test_counted_quantities_compare_exactly(tmp_path):
    rows = [_write_row("png", 512, FAST, n_files=512, preset="fundus[side=256]"),
            _write_row("hdf5[gzip,level=2,layout=stack,chunks=image]", 512, FAST, n_files=1,
                       preset="fundus[side=256]")]
    r = _result(_write(tmp_path, rows), "001d")
    assert r.verdict == cl.HOLDS and r.outcomes[0].ratio == 512 and "512 vs 1" in r.outcomes[0].why


def test_growing_gap_is_judged_from_the_smallest_and_largest_n(tmp_path):
    lm = "lmdb[pickle]"
    rows = [_write_row(lm, 10, FAST), _write_row("png", 10, [2 * t for t in FAST]),
            _write_row(lm, 1000, FAST), _write_row("png", 1000, [8 * t for t in FAST])]
    r = _result(_write(tmp_path, rows), "003b-grows")
    assert r.verdict == cl.HOLDS and r.outcomes[0].ratio == pytest.approx(4.0)
    assert r.outcomes[0].setting["n"] == "10 -> 1000"
    rows[3] = _write_row("png", 1000, [1.5 * t for t in FAST])
    assert _result(_write(tmp_path, rows), "003b-grows").verdict == cl.FAILS


def test_at_most_claims_use_the_recorded_quantity(tmp_path):
    npy = "npy[advise=normal,layout=files]"
    row = _row(f"test_patch[{npy}-ct-n8-cold]", "patch", npy, FAST, n=8, cache="cold", preset="ct",
               amplification=37.5)
    r = _result(_write(tmp_path, [row]), "004")
    assert r.verdict == cl.FAILS and r.outcomes[0].ratio == 37.5
    row["extra_info"]["amplification"] = 1.3
    assert _result(_write(tmp_path, [row]), "004").verdict == cl.HOLDS


def test_correctness_claims_come_from_the_recorded_experiment(tmp_path):
    def row(shared: int, mine: int):
        return _row("test_zip_shared_handle[w2]", "correctness", "zip[encoding=raw]", FAST, workers=2,
                    claim="002b", reads=400, shared_errors=shared, shared_wrong=0, per_worker_errors=mine,
                    per_worker_wrong=0, error_types=["BadZipFile"] if shared else [])
    r = _result(_write(tmp_path, [row(37, 0)]), "002b")
    assert r.verdict == cl.HOLDS and "37 of 400" in r.outcomes[0].why
    assert _result(_write(tmp_path, [row(0, 0)]), "002b").verdict == cl.FAILS


def test_claims_command_writes_markdown_and_csv(tmp_path, capsys):
    path = _write(tmp_path, [_fetch("batch", FAST, 0), _fetch("reopen", SLOW, 0)])
    out = tmp_path / "out"
    assert main(["claims", str(path), "--out", str(out), "--figures", "none"]) == 0
    md = (out / "claims.md").read_text(encoding="utf-8")
    assert "| 000a |" in md and "**holds**" in md and "not measured" in md  # the others have no rows
    lines = list(csv.DictReader(io.StringIO((out / "claims.csv").read_text(encoding="utf-8"))))
    assert {line["claim"] for line in lines} == {c.id for c in cl.CLAIMS}
    (a,) = [line for line in lines if line["claim"] == "000a"]
    assert a["verdict"] == "holds" and float(a["ratio"]) == pytest.approx(3.0, rel=0.05)
    assert "000a" in capsys.readouterr().out
    assert main(["claims", str(path), "--only", "nosuch", "--out", str(out)]) == 2


def test_claim_ids_and_scenarios_are_consistent():
    assert len({c.id for c in cl.CLAIMS}) == len(cl.CLAIMS)
    assert [c.id for c in cl.get_claims(["003a"])] == ["003a", "003a-hdf5", "003a-disk"]
    with pytest.raises(KeyError, match="unknown claim"):
        cl.get_claims(["999"])
    sc = cl.SCENARIOS["realpython"]
    assert sc.pytest_args("notebook")[sc.pytest_args("notebook").index("--sizes") + 1].endswith("100000")
    with pytest.raises(ValueError, match="scale"):
        sc.pytest_args("huge")


def _collect(args: list[str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "STOREBENCH_FORMAT_VARIANTS"}
    r = subprocess.run([sys.executable, "-m", "pytest", *args, "--collect-only", "-q", "-p", "no:cacheprovider"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return [line for line in r.stdout.splitlines() if "::" in line]


# Each collection is a pytest subprocess (10-20 s here): CI collects one scenario per benchmark file
# (io and fetch, loader and correctness, patch, write and scan); the others run with -m slow.
_CI_SCENARIOS = ("aptos-hdf5", "surf-zip", "notes-mmap", "realpython")


@pytest.mark.parametrize("name", [n if n in _CI_SCENARIOS else pytest.param(n, marks=pytest.mark.slow)
                                  for n in cl.SCENARIOS])
def test_each_scenario_collects_the_rows_its_claims_need(name):
    """The scenario's ids exist (formats, presets, -k): each claim side has a test of its operation and format."""
    args = cl.SCENARIOS[name].pytest_args()
    if any(a.startswith(("bench/test_workloads.py", "bench/test_loader.py")) for a in args):
        pytest.importorskip("torch", reason="this scenario's rows are DataLoader epochs")
        pytest.importorskip("cv2", reason="this scenario's workloads need opencv-python-headless")
    ids = _collect(args)
    for claim in (c for c in cl.CLAIMS if c.scenario == name):
        for side in (claim.a, claim.b):
            if side is None:
                continue
            fmt = cl._canonical(side.fmt) if side.fmt else ""
            test = {"correctness": "test_zip_shared_handle"}.get(side.op, f"test_{side.op.replace('-', '_')}")
            assert any(f"::{test}[" in i and (not fmt or f"[{fmt}-" in i) for i in ids), (claim.id, side, ids[:20])
