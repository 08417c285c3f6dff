"""``storebench bundle --out DIR``: everything a paper needs to cite and re-run a result.

Layout::

    README.md              what was run, where, with what, and how to re-run it
    command.txt            the exact command lines (the benchmark run and this bundle)
    results/*.json         the raw pytest-benchmark JSON, byte for byte
    report.md, tables/, figures/   as written by ``storebench report``
    environment/constraints.txt    the lock file the environment was installed from
    environment/pip-freeze.txt     what was installed (``pip freeze --all``)
    machine.json           CPU, RAM, kernel, file systems, page-cache state (this machine, now)
    datasets.csv           every dataset the runs used: key, checksum, size on disk
    CITATION.cff           how to cite storebench
    SHA256SUMS             a checksum of every file above

The results' own ``machine_info`` (recorded by the run) stays in their
JSON; ``machine.json`` describes the machine the bundle was made on, which
is the same one when the bundle is made right after ``storebench run``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from . import machine
from .plots import IMAGE_FORMATS
from .report import describe_run, write_report
from .results import ResultsError, Run

#: Where ``storebench run`` (pytest-benchmark's --benchmark-autosave) leaves results.
AUTOSAVE_DIR = ".benchmarks"
_DATASET_FIELDS = ("id", "format", "format_version", "options", "preset", "preset_version", "n", "seed",
                   "checksum", "source_checksum", "bytes_on_disk", "n_files", "raw_bytes", "path")


def project_file(name: str) -> Path | None:
    """``name`` in the current directory or the storebench checkout, whichever exists first."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (root / name).is_file():
            return root / name
    return None


def latest_results(root: str | Path = AUTOSAVE_DIR) -> Path:
    """The newest autosaved result JSON under ``root``; ``FileNotFoundError`` if there is none."""
    found = sorted(Path(root).rglob("*.json"), key=lambda p: (p.stat().st_mtime, str(p)))
    if not found:
        raise FileNotFoundError(f"no result JSON under {root}/: give RESULTS.json files, "
                                "or run `storebench run` first")
    return found[-1]


# --------------------------------------------------------------------------- command lines


def rerun_command(options: dict) -> list[str]:
    """The ``storebench run`` arguments that repeat a sweep, from the JSON's storebench options."""
    def csv_(v):
        return ",".join(map(str, v))

    args = ["storebench", "run"]
    flags = (("sizes", "--sizes", csv_), ("workers", "--workers", csv_), ("formats", "--formats", csv_),
             ("presets", "--preset", csv_), ("rounds", "--rounds", str), ("batch_size", "--batch-size", str),
             ("mp_contexts", "--mp-context", csv_), ("seed", "--seed", str), ("folds", "--folds", str),
             ("epochs", "--epochs", str), ("patch", "--patch", str), ("fetch_workload", "--fetch-workload", str))
    for key, flag, fmt in flags:
        if options.get(key) is not None:
            args += [flag, fmt(options[key])]
    cache = options.get("cache")
    if cache:
        args += ["--cache", "both" if set(cache) == {"warm", "cold"} else csv_(cache)]
    if options.get("persistent") is not None:
        args += ["--persistent", ",".join("on" if p else "off" for p in options["persistent"])]
    return args


def run_command(run: Run) -> tuple[str, str]:
    """(how it is known, the command line) of the benchmark run behind ``run``.

    The suite's JSON may record the command itself (``storebench.command``,
    a string or a list of arguments); otherwise it is rebuilt from the
    recorded options, which decide every benchmark of the sweep.
    """
    sb = run.storebench or {}
    cmd = sb.get("command")
    if isinstance(cmd, list) and all(isinstance(a, str) for a in cmd):
        return "recorded", shlex.join(cmd)
    if isinstance(cmd, str):
        return "recorded", cmd
    if isinstance(sb.get("options"), dict):
        return "rebuilt from the recorded options", shlex.join(rerun_command(sb["options"]))
    return "unknown (not a storebench run)", ""


# --------------------------------------------------------------------------- the pieces


def pip_freeze() -> str:
    """``pip freeze --all`` of this interpreter; the installed distributions if pip is missing."""
    try:
        res = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True,
                             text=True, timeout=300)
        if res.returncode == 0:
            return res.stdout
    except (OSError, subprocess.SubprocessError):
        pass
    dists = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                    if d.metadata["Name"]}, key=str.lower)
    return "# pip is not available: installed distributions from importlib.metadata\n" + "\n".join(dists) + "\n"


def datasets_csv(runs: Sequence[Run]) -> str:
    """One row per dataset record of every run (sorted, de-duplicated)."""
    rows = set()
    for run in runs:
        for d in run.datasets:
            rows.add(tuple(json.dumps(d[k], sort_keys=True) if isinstance(d.get(k), (dict, list))
                           else "" if d.get(k) is None else str(d[k]) for k in _DATASET_FIELDS))
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(_DATASET_FIELDS)
    w.writerows(sorted(rows))
    return out.getvalue()


def sha256sums(root: Path) -> str:
    """``sha256sum``-style lines for every file under ``root``, sorted by path."""
    lines = []
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        lines.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}")
    return "\n".join(lines) + "\n"


def _data_dirs(runs: Sequence[Run]) -> list[str]:
    return [d for run in runs if isinstance(d := ((run.storebench or {}).get("options") or {}).get("data_dir"), str)]


def _readme(runs: Sequence[Run], commands: list[tuple[str, str, str]], bundle_cmd: str, desc: dict,
            has_lock: bool) -> str:
    mem = desc["memory"]["total_bytes"]
    lines = ["# storebench results bundle", "", "## Results", ""]
    lines += [f"- {describe_run(run)}" for run in runs]
    lines += ["", "## How they were made", ""]
    for name, how, cmd in commands:
        lines += [f"`results/{name}` ({how}):", "", "```", cmd or "(unknown)", "```", ""]
    lines += ["This bundle:", "", "```", bundle_cmd, "```", "", "To re-run: install the environment from "
              + ("`environment/constraints.txt` " if has_lock else "`environment/pip-freeze.txt` ")
              + "(`pip install -c environment/constraints.txt -e '.[all]'` in a storebench checkout at the "
              "commit named above), run the command above, then `storebench compare "
              "results/<file>.json <new>.json`.", "", "## Machine (when bundled)", "",
              f"- CPU: {desc['cpu']['model']}, {desc['cpu']['logical']} logical / "
              f"{desc['cpu']['physical']} physical cores",
              f"- RAM: {mem / 2**30:.1f} GiB" if mem else "- RAM: unknown",
              f"- kernel: {desc['kernel']['system']} {desc['kernel']['release']}; OS: {desc['os']}"]
    for path, fs in desc["file_systems"].items():
        lines.append(f"- file system of `{path}`: {fs['type']} on {fs['device']} "
                     f"(rotational: {fs['rotational']})")
    cache = desc["cache"]
    if cache["page_cache_bytes"] is not None:
        lines.append(f"- page cache now: {cache['page_cache_bytes'] / 2**20:,.0f} MiB cached, "
                     f"{(cache['dirty_bytes'] or 0) / 2**20:,.1f} MiB dirty")
    caches = sorted({c for run in runs for c in ((run.storebench or {}).get("options") or {}).get("cache") or ()})
    if caches:
        lines.append(f"- cache state of the read benchmarks: {', '.join(caches)} (warm: files read before "
                     "the timed rounds; cold: evicted before every round, eviction verified)")
    lines += ["", "## Files", "", "- `report.md`, `tables/`, `figures/`: tables and figures",
              "- `results/`: raw pytest-benchmark JSON (with raw round times when saved with "
              "`--benchmark-save-data`)", "- `datasets.csv`: dataset checksums",
              "- `machine.json`, `environment/`: the machine and the installed packages",
              "- `SHA256SUMS`: `sha256sum -c SHA256SUMS` checks this folder", ""]
    return "\n".join(lines)


def make_bundle(paths: Sequence[str | Path], runs: Sequence[Run], out: str | Path,
                argv: Sequence[str], kinds: Sequence[str] = IMAGE_FORMATS) -> list[Path]:
    """Write the bundle of ``runs`` (read from ``paths``) into the new or empty folder ``out``.

    Parameters
    ----------
    paths : sequence of path
        The result files, copied byte for byte into ``results/``.
    runs : sequence of Run
        The same files, loaded.
    out : path
        The bundle folder; it must not exist or be empty.
    argv : sequence of str
        The command line that made the bundle, recorded in ``command.txt``.
    kinds : sequence of str
        Figure file types (``png``, ``svg``); empty for no figures.

    Raises
    ------
    FileExistsError
        ``out`` exists and is not an empty directory.
    ResultsError
        Two result files share a name.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty: choose a new folder for the bundle")
    names = [Path(p).name for p in paths]
    if len(set(names)) != len(names):
        raise ResultsError(paths[0], "two result files share this name; rename one before bundling")
    (out / "results").mkdir(parents=True, exist_ok=True)
    for p in paths:
        shutil.copyfile(p, out / "results" / Path(p).name)
    write_report(runs, out, kinds)

    env = out / "environment"
    env.mkdir()
    lock = project_file("constraints.txt")
    if lock is not None:
        shutil.copyfile(lock, env / "constraints.txt")
    (env / "pip-freeze.txt").write_text(pip_freeze(), encoding="utf-8")
    cff = project_file("CITATION.cff")
    if cff is not None:
        shutil.copyfile(cff, out / "CITATION.cff")

    desc = machine.describe([*_data_dirs(runs), out.resolve()])
    (out / "machine.json").write_text(json.dumps(desc, indent=1) + "\n", encoding="utf-8")
    (out / "datasets.csv").write_text(datasets_csv(runs), encoding="utf-8")

    commands = [(name, *run_command(run)) for name, run in zip(names, runs)]
    bundle_cmd = shlex.join(argv)
    text = "".join(f"# results/{name} ({how})\n{cmd or '# unknown'}\n\n" for name, how, cmd in commands)
    (out / "command.txt").write_text(text + f"# this bundle\n{bundle_cmd}\n", encoding="utf-8")
    (out / "README.md").write_text(_readme(runs, commands, bundle_cmd, desc, lock is not None),
                                   encoding="utf-8")
    (out / "SHA256SUMS").write_text(sha256sums(out), encoding="utf-8")
    return sorted(p for p in out.rglob("*") if p.is_file())
