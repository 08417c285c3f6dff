"""The summary table: one row per format, preset, n and cache, from the rows of one run."""
from __future__ import annotations

import json

import pytest

from storebench import results, summary
from storebench.report import write_report


def _row(name, op, median, **extra):
    info = {"op": op, "n": 1000, "preset": "cifar", "cache": "warm", **extra}
    group = "bound" if "bound" in extra and "id" not in extra else op
    return {"fullname": name, "name": name, "group": group, "extra_info": info,
            "stats": {"median": median, "min": median, "q1": median, "q3": median}}


@pytest.fixture
def run(tmp_path):
    benches = [
        _row("scan-lance", "scan", 0.5, id="lance", bytes_on_disk=3_000_000),
        _row("random-lance", "random", 2.0, id="lance", efficiency=0.8, bytes_on_disk=3_000_000),
        _row("batch-lance", "batch", 1.0, id="lance"),
        _row("loader-w0", "loader", 4.0, id="lance", workers=0, persistent=False, mp_context=None),
        _row("loader-w2-spawn", "loader", 1.0, id="lance", workers=2, persistent=True, mp_context="spawn",
             time_to_first_batch_s=1.5),
        _row("loader-w2-fork", "loader", 0.1, id="lance", workers=2, persistent=True, mp_context="fork"),
        _row("loader-w2-nonpersistent", "loader", 9.0, id="lance", workers=2, persistent=False, mp_context="spawn"),
        _row("native-w2", "native-loader", 0.5, id="lance", workers=2, native_loader="lance.torch",
             time_to_first_batch_s=0.75),
        _row("random-npy", "random", 0.1, id="npy"),
        _row("random-npy-cold", "random", 1.0, id="npy", cache="cold"),
        _row("pread-random", "random", 0.25, bound="pread"),
        _row("floor-random", "random", 0.01, bound="floor"),
    ]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"benchmarks": benches}))
    return results.load(path)


def test_one_row_per_format_preset_n_and_cache_with_rates_from_medians(run):
    rows = {(r["format"], r["cache"]): r for r in summary.summary_rows([run])}
    assert sorted(rows) == [("lance", "warm"), ("npy", "cold"), ("npy", "warm")]
    lance = rows["lance", "warm"]
    assert (lance["scan"], lance["random"], lance["batch"]) == (2000, 500, 1000)
    assert lance["loader_w0"] == 250
    # The first start method the run shows for 2 persistent workers; the non-persistent row is not this column.
    assert lance["loader_w2"] == 1000 and lance["ttfb_loader_w2_s"] == 1.5
    assert lance["native_w2"] == 2000 and lance["ttfb_native_w2_s"] == 0.75
    assert lance["native_loader"] == "lance.torch" and lance["native_w0"] is None
    assert lance["mb_on_disk"] == 3.0 and lance["random_vs_bound"] == 0.8
    # pread's random row of the same preset and n: 4000 images/s
    assert lance["random_vs_pread"] == pytest.approx(500 / 4000)
    assert rows["npy", "warm"]["random_vs_pread"] == pytest.approx(10_000 / 4000)
    assert rows["npy", "cold"]["random"] == 1000 and rows["npy", "cold"]["scan"] is None


def test_markdown_leaves_out_empty_columns_and_the_report_writes_it(run, tmp_path):
    md = summary.to_markdown(summary.summary_rows([run]))
    header = md.splitlines()[0]
    assert "random vs pread" in header and "native w0" not in header
    assert "| lance | cifar | 1000 | warm | 2,000 | 500 | 1,000 |" in md
    written = write_report([run], tmp_path / "out")
    assert (tmp_path / "out" / "summary.csv") in written
    csv_lines = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert csv_lines[0].split(",")[:4] == ["format", "preset", "n", "cache"] and len(csv_lines) == 4
    assert "## Summary" in (tmp_path / "out" / "report.md").read_text()
