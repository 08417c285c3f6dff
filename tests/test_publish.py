"""Publishing results: report, compare, bundle, generate, run and CITATION.cff.

``tests/data/results/bench-small.json`` is a real run of the suite, trimmed
(cpu flags and per-benchmark pytest options removed)::

    pytest bench --benchmark-enable --benchmark-save-data --benchmark-json=... \\
        --sizes 20,60 --formats npy,jpeg[75] --rounds 5 --workers 0,2 --persistent off

``plain-pytest-benchmark.json`` comes from a plain pytest-benchmark test file
(no storebench fields).
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from storebench import cli
from storebench.cli import main
from storebench.compare import bootstrap_ratio, compare
from storebench.report import write_report
from storebench.results import ForeignResultsWarning, load, load_all
from storebench.tables import fmt_rate

DATA = Path(__file__).parent / "data" / "results"
SMALL = DATA / "bench-small.json"
PLAIN = DATA / "plain-pytest-benchmark.json"
ROOT = Path(__file__).resolve().parents[1]


def raw(path: Path = SMALL) -> dict:
    return json.loads(path.read_text())


def scale(b: dict, factor: float) -> dict:
    """Benchmark ``b`` with every round time multiplied by ``factor`` (in place)."""
    s = b["stats"]
    for k in ("min", "max", "mean", "median", "q1", "q3", "iqr", "stddev", "ld15iqr", "hd15iqr", "total"):
        s[k] *= factor
    s["ops"] /= factor
    s["data"] = [t * factor for t in s["data"]]
    return b


def scaled(tmp_path: Path, factor: float, *, name: str = "new.json", keep_data: bool = True) -> Path:
    """A copy of SMALL with every round time multiplied by ``factor``."""
    d = raw()
    for b in d["benchmarks"]:
        scale(b, factor)
        if not keep_data:
            del b["stats"]["data"]
    out = tmp_path / name
    out.write_text(json.dumps(d))
    return out


def renamed(b: dict, old: str, new: str, **extra) -> dict:
    """A copy of benchmark ``b`` whose name has ``new`` for ``old`` and whose extra_info has ``extra``."""
    c = copy.deepcopy(b)
    c["name"], c["fullname"] = (c[k].replace(old, new) for k in ("name", "fullname"))
    c["extra_info"].update(extra)
    return c


def swept(tmp_path: Path, *, name: str = "swept.json") -> Path:
    """SMALL with its scan rows swept over three sizes (the n=60 rows again as n=180, 3x the time)
    and cold (the warm ones, 2x the time)."""
    d = raw()
    d["benchmarks"] += [scale(renamed(b, "n60", "n180", n=180), 3.0) for b in d["benchmarks"]
                        if b["extra_info"]["n"] == 60 and b["group"] == "scan"]
    d["benchmarks"] += [scale(renamed(b, "warm", "cold", cache="cold"), 2.0) for b in d["benchmarks"]
                        if b["group"] == "scan"]
    out = tmp_path / name
    out.write_text(json.dumps(d))
    return out


def csv_rows(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["benchmark"]: row for row in csv.DictReader(f)}


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- report


def test_report_tables_equal_the_json_medians(tmp_path):
    write_report(load_all([SMALL]), tmp_path, kinds=())
    benches = raw()["benchmarks"]
    seen = 0
    for group in {b["group"] for b in benches}:
        rows = csv_rows(tmp_path / "tables" / f"{group}.csv")
        md = (tmp_path / "tables" / f"{group}.md").read_text()
        mine = [b for b in benches if b["group"] == group]
        assert set(rows) == {b["fullname"] for b in mine}
        for b in mine:
            row, ex, median = rows[b["fullname"]], b["extra_info"], b["stats"]["median"]
            assert float(row["median_s"]) == median
            items = 1 if ex["op"] == "open" else ex["n"]
            assert float(row["rate_median"]) == pytest.approx(items / median, rel=1e-12)
            assert f"| {fmt_rate(items / median)} |" in md
            if "bytes_on_disk" in ex and ex["bytes_on_disk"] is not None:
                assert float(row["bytes_per_image"]) == pytest.approx(ex["bytes_on_disk"] / ex["n"])
                assert int(row["n_files"]) == ex["n_files"]
            if "efficiency" in ex:
                assert float(row["efficiency"]) == ex["efficiency"]
            seen += 1
    assert seen == len(benches)


def test_report_writes_every_table_and_figure(tmp_path):
    written = write_report(load_all([SMALL]), tmp_path, kinds=("svg",))  # PNG: see the rerun test
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    for op in ("write", "open", "scan", "random", "batch", "loader", "bound"):
        assert {f"tables/{op}.md", f"tables/{op}.csv"} <= names
    ranked = [f"ranked_{op}" for op in ("scan", "random", "batch", "loader", "write")]
    assert {f"figures/{fig}.svg" for fig in [*ranked, "loader_workers", "disk_size"]} <= names
    # Two sizes: no line against n (throughput, read_write); the bars say it all.
    assert not any(n.startswith(("figures/throughput", "figures/read_write")) for n in names)
    report = (tmp_path / "report.md").read_text()
    images = re.findall(r"!\[([^]]+)\]\(figures/([^)]+)\)", report)
    assert [stem for stem, _ in images[:len(ranked)]] == ranked  # the ranked figures come first ...
    assert all(file.endswith(".svg") for _, file in images)
    assert report.index("![ranked_scan]") < report.index("Results:") < report.index("## write")  # ... before all
    assert "![loader_workers](figures/loader_workers.svg)" in report


def test_ranked_bars_fastest_first_with_efficiency_cold_and_warm(tmp_path):
    from storebench import plots

    d = json.loads(swept(tmp_path).read_text())
    # a default-options format, alphabetically first and 10x slower than npy: it must rank below npy
    d["benchmarks"] += [scale(renamed(b, "npy", "aaslow", id="aaslow", format="aaslow"), 10.0)
                        for b in d["benchmarks"] if b["extra_info"].get("id") == "npy"]
    (tmp_path / "more.json").write_text(json.dumps(d))
    runs = load_all([tmp_path / "more.json"])
    rows = {(b.label, b.get("cache")): b for b in runs[0].benches if b.group == "scan" and b.n == 180}
    with plots._drawing():
        top, variants = plots.ranked(runs, plots.Styles([]), "scan").axes
        loader = plots.ranked(runs, plots.Styles([]), "loader")
    assert [t.get_text() for t in top.get_yticklabels()] == ["npy", "aaslow"]
    assert [t.get_text() for t in variants.get_yticklabels()] == ["jpeg[75]"]
    assert top.get_title(loc="left") == "default options, n = 180"
    assert variants.get_title(loc="left") == "variants (other options), n = 180"
    # a bar per cache state, warm above cold, each labelled with its rate and its efficiency
    (warm, cold), _slow = top.patches[:2], top.patches[2:]
    assert warm.get_y() < cold.get_y() and warm.get_width() > cold.get_width()
    npy = rows[("npy", "warm")]
    assert top.texts[0].get_text() == f"{plots._rate_text(npy.rate)} · {npy.get('efficiency'):.0%}"
    assert [p.get_label() for p in top.figure.legends[0].get_patches()] == ["warm cache", "cold cache"]
    # loader: the largest num_workers, named in the title
    w2 = next(b for b in runs[0].benches if b.group == "loader" and b.label == "npy" and b.n == 60
              and b.get("workers") == 2)
    assert "num_workers = 2, fork start" in loader._suptitle.get_text()
    assert loader.axes[0].texts[0].get_text() == plots._rate_text(w2.rate)


def test_figures_open_and_a_rerun_gives_identical_bytes(tmp_path):
    from PIL import Image

    results = swept(tmp_path)  # three sizes, cold and warm: every figure is drawn
    written = write_report(load_all([results]), tmp_path / "here", kinds=("svg", "png"))  # the other order
    stems = {p.stem for p in written if p.parent.name == "figures"}
    assert {"ranked_scan", "ranked_loader", "ranked_write", "throughput", "read_write", "loader_workers",
            "disk_size"} <= stems  # a line plot for scan, the one operation swept over three sizes
    code = ("import sys; from storebench.report import write_report; from storebench.results import load_all; "
            "write_report(load_all([sys.argv[1]]), sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(results), str(tmp_path / "there")], check=True)
    assert tree_bytes(tmp_path / "here") == tree_bytes(tmp_path / "there")
    for p in sorted((tmp_path / "here" / "figures").iterdir()):
        if p.suffix == ".png":
            with Image.open(p) as im:
                assert im.format == "PNG" and im.size[0] > 100
                im.verify()
        else:
            root = ET.parse(p).getroot()
            assert root.tag == "{http://www.w3.org/2000/svg}svg"
            assert b"<dc:date>" not in p.read_bytes()  # no date: the bytes do not depend on when


def claim_results():
    """A claim holding at two settings, one not measured, a correctness claim and an at-most claim."""
    from storebench.claims import CLAIMS, FAILS, HOLDS, NOT_MEASURED, ClaimResult, Outcome

    claims = {c.id: c for c in CLAIMS}
    two, absent, correct, at_most = (claims[i] for i in ("000b-2", "003c", "002b", "004"))
    return [
        ClaimResult(two, tuple(Outcome({"n": 512, "workers": w}, r, r / 1.1, r * 1.1, v)
                               for w, r, v in ((2, 1.05, HOLDS), (4, 1.6, FAILS))),
                    "depends on workers", ("workers",)),
        ClaimResult(absent, (), NOT_MEASURED, why="no rows of op=scan in the results"),
        ClaimResult(correct, (Outcome({}, None, None, None, HOLDS, "shared handle: 3 of 40 reads failed"),), HOLDS),
        ClaimResult(at_most, (Outcome({"cache": "cold"}, 1.3, 1.3, 1.3, HOLDS),), HOLDS),
    ]


def test_claims_figure_is_byte_stable_and_draws_every_kind_of_row(tmp_path):
    from PIL import Image

    from storebench import plots

    results = claim_results()
    here = plots.claims_figure(results, tmp_path / "here", kinds=("svg", "png"))
    there = plots.claims_figure(results, tmp_path / "there")
    assert sorted(p.name for p in here) == sorted(p.name for p in there) == ["claims.png", "claims.svg"]
    assert tree_bytes(tmp_path / "here") == tree_bytes(tmp_path / "there")
    with Image.open(tmp_path / "here" / "claims.png") as im:
        im.verify()
    assert plots.claims_figure([], tmp_path / "none") == [] and not (tmp_path / "none").exists()

    with plots._drawing():
        ax = plots._claims(results).axes[0]
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert [lab.split(":")[0] for lab in labels] == ["000b-2", "003c", "002b", "004"]  # top to bottom, as given
    centre = dict(zip(labels, ax.get_yticks()))
    texts = {t.get_text(): t for t in ax.texts}
    # markers: two on the first row (one per setting, labelled, coloured by its verdict), one on 004's
    points = [(float(line.get_xdata()[0]), float(line.get_ydata()[0]), line.get_color())
              for line in ax.lines if line.get_marker() == "o"]
    assert sorted(x for x, _, _ in points) == [1.05, 1.3, 1.6]
    assert {c for x, _, c in points if x == 1.6} == {plots.verdict_color("does not hold")}
    assert {"workers 2", "workers 4"} <= texts.keys()
    rows_with_marker = {min(centre, key=lambda lab: abs(centre[lab] - y)).split(":")[0] for _, y, _ in points}
    assert rows_with_marker == {"000b-2", "004"}
    # text instead of a marker: not measured (with why), the correctness test's outcome
    assert "not measured: no rows of op=scan in the results" in texts
    assert "correctness test: holds (shared handle: 3 of 40 reads failed)" in texts
    assert texts["depends on workers"].get_color() == plots.verdict_color("depends on workers")
    # 004's limit and notebook figure; 000b-2's notebook figure
    assert any(line.get_linestyle() == ":" and list(line.get_xdata()) == [2.0, 2.0] for line in ax.lines)
    assert sorted(float(line.get_xdata()[0]) for line in ax.lines if line.get_marker() == "D") == [1.0, 1.0]


def test_plain_pytest_benchmark_json_shows_times_with_a_warning(tmp_path):
    with pytest.warns(ForeignResultsWarning, match="lack storebench's extra_info"):
        written = write_report(load_all([PLAIN]), tmp_path)
    assert not any(p.parent.name == "figures" for p in written)
    for b in raw(PLAIN)["benchmarks"]:
        group = b["group"] or "default"
        row = csv_rows(tmp_path / "tables" / f"{group}.csv")[b["fullname"]]
        assert float(row["median_s"]) == b["stats"]["median"]
        assert row["rate_median"] == ""
        assert b["name"] in (tmp_path / "tables" / f"{group}.md").read_text()


def test_report_of_two_runs_has_a_run_column(tmp_path):
    other = scaled(tmp_path, 1.0, name="again.json")
    write_report(load_all([SMALL, other]), tmp_path / "out", kinds=())
    md = (tmp_path / "out" / "tables" / "scan.md").read_text()
    assert "| run |" in md.splitlines()[4] and "again.json" in md and SMALL.name in md


def test_report_cli(tmp_path, capsys):
    assert main(["report", str(SMALL), "--out", str(tmp_path / "r"), "--figures", "svg"]) == 0
    assert "report.md" in capsys.readouterr().out
    assert not list((tmp_path / "r" / "figures").glob("*.png"))
    assert main(["report", str(PLAIN), "--out", str(tmp_path / "p")]) == 0
    assert "warning:" in capsys.readouterr().err


@pytest.mark.parametrize("content, problem", [
    (None, "no such file"),
    ("{not json", "is not JSON"),
    ("[1, 2]", "not a pytest-benchmark result file"),
    ('{"machine_info": {}}', "not a pytest-benchmark result file"),
    ('{"benchmarks": []}', "holds no benchmarks"),
    ('{"benchmarks": [{"name": "t", "stats": {}}]}', "no timing statistics"),
    ('{"benchmarks": [3]}', "is not an object"),
])
@pytest.mark.parametrize("command", ["report", "compare", "bundle"])
def test_unusable_json_names_the_file_and_exits_2(tmp_path, capsys, content, problem, command):
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    args = {"report": ["report", str(bad), "--out", str(tmp_path / "out")],
            "compare": ["compare", str(SMALL), str(bad)],
            "bundle": ["bundle", "--out", str(tmp_path / "out"), str(bad)]}[command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and problem in err and "Traceback" not in err


def test_a_directory_is_not_a_result_file(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "is a directory" in capsys.readouterr().err


# --------------------------------------------------------------------------- compare


def test_identical_runs_are_not_flagged(tmp_path, capsys):
    same = scaled(tmp_path, 1.0)
    assert main(["compare", str(SMALL), str(same)]) == 0
    out = capsys.readouterr().out
    assert "0 significantly slower, 0 significantly faster" in out
    assert "slower >" not in out


def test_a_2x_slowdown_is_flagged_and_fails(tmp_path, capsys):
    new = scaled(tmp_path, 2.0)
    assert main(["compare", str(SMALL), str(new), "--csv", str(tmp_path / "cmp.csv")]) == 1
    cmp = compare(load(SMALL), load(new))
    assert all(c.ratio == pytest.approx(2.0) for c in cmp.changes)
    assert all(c.verdict in ("slower", "") for c in cmp.changes)
    # Where the rounds spread by less than 2x, every resampled ratio exceeds 1.
    tight = [c for c in cmp.changes if c.old.data.max() / c.old.data.min() < 2]
    assert tight and all(c.verdict == "slower" and c.lo > 1 for c in tight)
    rows = list(csv.DictReader((tmp_path / "cmp.csv").read_text().splitlines()))
    assert {r["fullname"] for r in rows} == {b["fullname"] for b in raw()["benchmarks"]}
    assert "slower > +10%" in capsys.readouterr().out


def test_fail_above_sets_the_threshold(tmp_path):
    new = scaled(tmp_path, 2.0)
    assert main(["compare", str(SMALL), str(new), "--fail-above", "150%"]) == 0
    assert main(["compare", str(SMALL), str(new), "--fail-above", "0.5"]) == 1


def test_a_speedup_is_marked_but_does_not_fail(tmp_path, capsys):
    fast = scaled(tmp_path, 0.5)
    assert main(["compare", str(SMALL), str(fast)]) == 0
    assert "faster" in capsys.readouterr().out


def test_compare_output_is_deterministic(tmp_path, capsys):
    new = scaled(tmp_path, 1.3)
    main(["compare", str(SMALL), str(new)])
    first = capsys.readouterr().out
    main(["compare", str(SMALL), str(new)])
    assert capsys.readouterr().out == first


def test_without_raw_timings_there_is_no_interval(tmp_path, capsys):
    old = scaled(tmp_path, 1.0, name="old.json", keep_data=False)
    new = scaled(tmp_path, 2.0, keep_data=False)
    assert main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "no raw data" in out and "--benchmark-save-data" in out


def test_one_round_gives_no_interval(tmp_path, capsys):
    d = raw()
    for b in d["benchmarks"]:
        b["stats"]["data"] = [b["stats"]["median"]]
    (tmp_path / "one.json").write_text(json.dumps(d))
    for b in d["benchmarks"]:
        b["stats"]["median"] *= 2
        b["stats"]["data"] = [b["stats"]["median"]]
    (tmp_path / "slow.json").write_text(json.dumps(d))
    assert main(["compare", str(tmp_path / "one.json"), str(tmp_path / "slow.json")]) == 0
    out = capsys.readouterr().out
    assert "1 round" in out and "0 significantly slower" in out


def test_unrelated_runs_cannot_be_compared(capsys):
    assert main(["compare", str(SMALL), str(PLAIN)]) == 2
    assert "no benchmark matches" in capsys.readouterr().err


def test_bootstrap_interval():
    rng = np.random.default_rng(1)
    t = rng.lognormal(0, 0.05, 30)
    lo, hi = bootstrap_ratio(t, t, seed=3)
    assert lo < 1 < hi
    assert bootstrap_ratio(t, t, seed=3) == (lo, hi)
    lo, hi = bootstrap_ratio(t, 1.5 * t, seed=3)
    assert 1 < lo <= 1.5 <= hi
    assert bootstrap_ratio([1.0], [2.0]) == (2.0, 2.0)


# --------------------------------------------------------------------------- bundle


def test_bundle_is_self_contained(tmp_path, capsys):
    out = tmp_path / "paper"
    assert main(["bundle", "--out", str(out), str(SMALL)]) == 0
    assert (out / "results" / SMALL.name).read_bytes() == SMALL.read_bytes()
    for name in ("README.md", "report.md", "tables/scan.csv", "figures/ranked_scan.svg", "machine.json",
                 "datasets.csv", "command.txt", "environment/pip-freeze.txt", "SHA256SUMS"):
        assert (out / name).is_file(), name
    if (ROOT / "constraints.txt").is_file():
        assert (out / "environment" / "constraints.txt").read_bytes() == (ROOT / "constraints.txt").read_bytes()
    assert "pytest" in (out / "environment" / "pip-freeze.txt").read_text().lower()
    desc = json.loads((out / "machine.json").read_text())
    assert {"cpu", "memory", "kernel", "file_systems", "cache"} <= desc.keys()
    datasets = list(csv.DictReader((out / "datasets.csv").read_text().splitlines()))
    assert {d["checksum"] for d in datasets} == {d["checksum"] for d in raw()["storebench"]["datasets"]}
    command = (out / "command.txt").read_text()
    assert "storebench run --sizes 20,60 --workers 0,2 --formats 'npy,jpeg[75]'" in command
    assert f"storebench bundle --out {out} {SMALL}" in command
    for line in (out / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest


def test_bundle_refuses_a_non_empty_folder_and_defaults_to_the_latest_run(tmp_path, monkeypatch, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["bundle", "--out", str(tmp_path / "full"), str(SMALL)]) == 2
    assert "not empty" in capsys.readouterr().err

    monkeypatch.chdir(tmp_path)
    assert main(["bundle", "--out", "b", "--figures", "none"]) == 2
    assert "storebench run" in capsys.readouterr().err
    saved = tmp_path / ".benchmarks" / "Linux-CPython-3.11-64bit" / "0001_run.json"
    saved.parent.mkdir(parents=True)
    saved.write_bytes(SMALL.read_bytes())
    assert main(["bundle", "--out", "b", "--figures", "none"]) == 0
    assert (tmp_path / "b" / "results" / "0001_run.json").is_file()
    assert not (tmp_path / "b" / "figures").exists()


# --------------------------------------------------------------------------- generate, run, help


def test_generate_writes_the_preset(tmp_path, capsys):
    from storebench import fixtures, formats
    assert main(["generate", "--preset", "cifar", "--n", "12", "--out", str(tmp_path / "ds")]) == 0
    assert "12 cifar samples" in capsys.readouterr().out
    with formats.open_dataset(tmp_path / "ds") as r:
        assert fixtures.dataset_checksum(r) == fixtures.dataset_checksum(fixtures.make_dataset("cifar", 12, 0))
    assert main(["generate", "--preset", "cifar", "--n", "5", "--out", str(tmp_path / "ds")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["generate", "--preset", "cifar", "--n", "5", "--out", str(tmp_path / "ds"), "--overwrite",
                 "--seed", "3"]) == 0
    with formats.open_dataset(tmp_path / "ds") as r:
        assert len(r) == 5


def test_generate_takes_a_benchmark_id_and_options(tmp_path, capsys):
    from storebench import formats
    assert main(["generate", "--preset", "cifar", "--n", "4", "--out", str(tmp_path / "a"),
                 "--format", "hdf5[gzip,level=4]"]) == 0
    assert formats.read_manifest(tmp_path / "a")["format"] == "hdf5"
    assert "hdf5[gzip,level=4]" in capsys.readouterr().out
    assert main(["generate", "--preset", "cifar", "--n", "4", "--out", str(tmp_path / "b"),
                 "--format", "hdf5", "--option", "compression=gzip", "--option", "level=2"]) == 0
    assert "hdf5[gzip,level=2]" in capsys.readouterr().out


@pytest.mark.parametrize("args, problem", [
    (["--format", "nosuch"], "unknown format"),
    (["--format", "hdf5[nope]"], "not a variant"),
    (["--option", "nosuch=1"], "does not take"),
    (["--option", "novalue"], "NAME=VALUE"),
    (["--preset", "nosuch"], "unknown preset 'nosuch'"),
])
def test_generate_errors_exit_2(tmp_path, capsys, args, problem):
    preset = [] if "--preset" in args else ["--preset", "cifar"]
    assert main(["generate", "--n", "3", "--out", str(tmp_path / "ds"), *preset, *args]) == 2
    assert problem in capsys.readouterr().err


def test_run_passes_pytest_args_and_returns_pytest_status(monkeypatch):
    calls = []

    class FakePopen:
        def __init__(self, cmd, cwd):
            calls.append((cmd, cwd))

        def wait(self):
            return 5

    monkeypatch.setattr(cli.subprocess, "Popen", FakePopen)
    assert main(["run", "--sizes", "100", "-k", "npy", "--benchmark-json=x.json"]) == 5
    (cmd, cwd), = calls
    assert cmd[:4] == [sys.executable, "-m", "pytest", "bench"]
    assert cmd[4:] == [*cli.RUN_FLAGS, "--sizes", "100", "-k", "npy", "--benchmark-json=x.json"]
    assert (Path(cwd) / "bench").is_dir()


@pytest.mark.parametrize("command", ["run", "report", "compare", "bundle", "generate", "verify"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"storebench {command}" in capsys.readouterr().out


def test_citation_cff_is_valid_cff_1_2_0():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    allowed = {"abstract", "authors", "cff-version", "commit", "contact", "date-released", "doi",
               "identifiers", "keywords", "license", "license-url", "message", "preferred-citation",
               "references", "repository", "repository-artifact", "repository-code", "title", "type",
               "url", "version"}
    assert set(cff) <= allowed
    assert {"cff-version", "message", "title", "authors"} <= set(cff)
    assert cff["cff-version"] == "1.2.0" and cff["type"] in ("software", "dataset")
    assert cff["authors"] and all(isinstance(a, dict) and (a.get("name") or a.get("family-names"))
                                  for a in cff["authors"])
    assert all(isinstance(cff[k], str) and cff[k] for k in ("message", "title", "abstract", "license"))
    assert cff["keywords"] and all(isinstance(k, str) and k for k in cff["keywords"])
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert str(cff["version"]) == version


def test_format_ids_of_older_results_read_as_todays(tmp_path):
    """Rows of storebench 0.1 named hdf5[gzip-4]; with their recorded options they read as today's id."""
    data = json.loads(SMALL.read_text())
    row = next(b for b in data["benchmarks"] if b["extra_info"].get("id") == "npy")
    old = copy.deepcopy(row)
    old["extra_info"].update(id="hdf5[gzip-4]", format="hdf5",
                             options={"compression": "gzip", "level": 4, "chunk_kib": 1024})
    unknown = copy.deepcopy(row)
    unknown["extra_info"].update(id="nosuch[1]", format="nosuch", options={"x": 1})
    data["benchmarks"] = [old, unknown]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    labels = [b.label for b in load(path).benches]
    assert labels == ["hdf5[gzip,level=4]", "nosuch[1]"]
