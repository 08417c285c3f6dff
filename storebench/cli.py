"""The ``storebench`` console script.

Subcommands each have ``--help``:

* ``run [pytest args]``: the benchmark suite, saved with raw round times;
* ``report RESULTS.json... --out DIR``: tables and figures;
* ``run --claims [ID...]``: exactly the scenarios the notebooks' claims need, then their verdicts;
* ``claims RESULTS.json... --out DIR``: the claims' ratios and verdicts (claims.md, claims.csv, a figure);
* ``compare OLD.json NEW.json``: ratios of medians with bootstrap intervals;
* ``bundle --out DIR [RESULTS.json...]``: a self-contained folder for a paper;
* ``generate --preset P --n N --out DIR``: write a preset dataset in a format;
* ``verify PATH``: check every sample of a dataset against its stored checksums.

Exit status 2 means the input could not be used (an unreadable or foreign
result file, a bad option); the message names the file and the problem.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

from .progress import progress
from .results import ForeignResultsWarning, ResultsError


class CommandError(Exception):
    """A problem with the command's input, reported as one line and exit status 2."""


# --------------------------------------------------------------------------- verify


def _cmd_verify(args: argparse.Namespace) -> int:
    from storebench import formats
    status = 0
    for path in args.paths:
        try:
            manifest = formats.read_manifest(Path(path))
            try:  # an option may decide it (lmdb's encoding): ask the instance the manifest describes
                unpickles = formats.get(manifest["format"], **manifest.get("options", {})).executes_code
            except (KeyError, TypeError, ValueError):
                unpickles = False
            if unpickles:
                print(f"warning: {path} is a {manifest['format']} dataset: reading it unpickles "
                      "Python objects, which can run arbitrary code. Only verify datasets you trust.",
                      file=sys.stderr)
            with formats.open_dataset(path) as r:
                bad = r.verify()
        except (formats.DatasetError, OSError, ImportError) as err:
            print(f"{path}: ERROR {_one_line(err)}", file=sys.stderr)
            status = 2
            continue
        if bad:
            status = max(status, 1)
            print(f"{path}: {len(bad)} of {len(r)} samples damaged")
            for key in bad[: args.max_keys]:
                print(f"  {key!r}")  # escaped: a key holding a newline or an ANSI escape prints as text
            if len(bad) > args.max_keys:
                print(f"  ... and {len(bad) - args.max_keys} more")
        else:
            print(f"{path}: OK, {len(r)} samples ({manifest['format']})")
    return status


# --------------------------------------------------------------------------- run

#: What ``storebench run`` always passes: timings on, saved under .benchmarks/, with raw round times.
RUN_FLAGS = ("--benchmark-enable", "--benchmark-autosave", "--benchmark-save-data")


def _bench_root() -> Path:
    """The folder to run ``pytest bench`` in: here, or the storebench checkout."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (root / "bench").is_dir() and (root / "conftest.py").is_file():
            return root
    raise CommandError("no bench/ folder here or in the storebench checkout: run storebench from "
                       "a storebench checkout")


def run_bench(pytest_args: Sequence[str]) -> int:
    """Run ``pytest bench`` with :data:`RUN_FLAGS` and ``pytest_args``; pytest's exit status."""
    root = _bench_root()
    cmd = [sys.executable, "-m", "pytest", "bench", *RUN_FLAGS, *pytest_args]
    where = "" if root == Path.cwd() else f" (in {root})"
    print(f"storebench run: {shlex.join(cmd)}{where}", file=sys.stderr)
    proc = subprocess.Popen(cmd, cwd=root)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # pytest got the signal too: let it print its summary
        return proc.wait()


CLAIMS_OUT = "results/claims"


def _claims_run_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="storebench run --claims",
                description="Runs the benchmark scenarios the claims need (each `pytest bench ... "
                "--benchmark-json OUT/<scenario>.json`), then `storebench claims` on their results. "
                "Arguments after -- go to every pytest run.")
    p.add_argument("--claims", nargs="*", metavar="ID", required=True,
                   help="claim ids or prefixes (000a, 003a, ...); none: every claim")
    p.add_argument("--scale", choices=("default", "notebook"), default="default",
                   help="default: sizes that finish in under 30 minutes on 2 cores; notebook: the notebooks' own "
                        "sizes and worker counts")
    p.add_argument("--out", default=CLAIMS_OUT, metavar="DIR", help=f"results and claims (default {CLAIMS_OUT})")
    p.add_argument("--figures", default="png,svg", metavar="KINDS", help="claims figure file types, or none")
    return p


def run_claims(argv: Sequence[str]) -> int:
    """``storebench run --claims [ID...] [--scale S] [--out DIR] [-- pytest args]``."""
    from .claims import claim_scenarios, get_claims

    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = _claims_run_parser().parse_args(argv)
    try:
        claims = get_claims(args.claims or None)
    except KeyError as err:
        raise CommandError(str(err).strip('"')) from None
    kinds = _figure_kinds(args.figures)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = _bench_root()
    status, results = 0, []
    for sc in claim_scenarios(claims):
        dest = (out / f"{sc.name}.json").resolve()
        dest.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "pytest", *sc.pytest_args(args.scale), "--benchmark-enable",
               "--benchmark-save-data", f"--benchmark-json={dest}", "-p", "no:cacheprovider", *extra]
        print(f"storebench run --claims: scenario {sc.name}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
        # A format named in a scenario is its default options; other ids are named in full.
        rc = subprocess.call(cmd, cwd=root, env={**os.environ, "STOREBENCH_FORMAT_VARIANTS": "defaults"})
        if rc not in (0, 5):  # 5: nothing collected (e.g. every row skipped): its claims are not measured
            status = status or rc
        if dest.is_file():
            results.append(str(dest))
    if not results:
        raise CommandError("no scenario wrote results")
    return _write_claims(results, out, kinds, claims) or status


def _write_claims(paths: Sequence[str], out: Path, kinds: Sequence[str], claims=None) -> int:
    from .claims import NOT_MEASURED, evaluate, write_claims

    runs = _load(paths)
    results = evaluate(runs, claims)
    figure = None
    if kinds:
        from .plots import claims_figure

        def figure(res, folder):
            return claims_figure(res, folder, kinds)
    written = write_claims(results, out, runs, figure=figure)
    width = max(len(r.claim.id) for r in results)
    for r in results:
        line = r.verdict if r.verdict != NOT_MEASURED else f"{NOT_MEASURED}: {r.why}"
        print(f"{r.claim.id:<{width}}  {r.ours if r.measured else '':<28}  {line}")
    print(f"{out}: {', '.join(p.name for p in written)}")
    return 0


def _cmd_claims(args: argparse.Namespace) -> int:
    from .claims import get_claims

    try:
        claims = get_claims(args.only) if args.only else None
    except KeyError as err:
        raise CommandError(str(err).strip('"')) from None
    return _write_claims(args.results, Path(args.out), _figure_kinds(args.figures), claims)


# --------------------------------------------------------------------------- report, compare, bundle


def _load(paths: Sequence[str]):
    from .results import load_all

    return load_all(paths)


def _figure_kinds(text: str) -> tuple[str, ...]:
    from .plots import IMAGE_FORMATS

    if text == "none":
        return ()
    kinds = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [k for k in kinds if k not in IMAGE_FORMATS]
    if bad or not kinds:
        raise CommandError(f"--figures: expected none or a list of {', '.join(IMAGE_FORMATS)}, got {text!r}")
    return kinds


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    runs = _load(args.results)
    try:
        written = write_report(runs, args.out, _figure_kinds(args.figures))
    except ImportError as err:
        raise CommandError(str(err)) from None
    tables = [p for p in written if p.suffix == ".csv"]
    figures = [p for p in written if p.parent.name == "figures"]
    print(f"{args.out}: report.md, {len(tables)} tables (markdown and CSV), {len(figures)} figure files")
    return 0


def fraction(text: str) -> float:
    """``"10%"`` or ``"0.10"`` -> 0.1 (argparse type); a bare number above 1 is refused.

    ``--fail-above 10`` would mean 1000%, a gate that never fails: the user
    meant ``10%``, so it is an error with that hint.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(%?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a fraction like 0.10 or 10%, got {text!r}")
    value = float(m.group(1))
    if not m.group(2) and value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} would mean {value:.0%}; write {m.group(1)}% for "
                                         f"{m.group(1)} percent, or a fraction such as {value / 100:g}")
    return value / (100 if m.group(2) else 1)


def seed(text: str) -> int:
    """A dataset or bootstrap seed: a whole number >= 0 (argparse type)."""
    if not re.fullmatch(r"\s*\d+\s*", text):
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def _one_line(err: BaseException) -> str:
    """An error's message on one line (library messages may hold newlines or tracebacks)."""
    text = str(err) or type(err).__name__
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return first if len(first) <= 500 else first[:497] + "..."


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare, render, to_csv

    old, new = _load([args.old, args.new])
    cmp = compare(old, new, seed=args.seed, n_boot=args.bootstrap)
    print(render(cmp, fail_above=args.fail_above), end="")
    if args.csv:
        Path(args.csv).write_text(to_csv(cmp), encoding="utf-8")
    return 1 if any(c.fails(args.fail_above) for c in cmp.changes) else 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    from .bundle import latest_results, make_bundle

    paths = list(args.results)
    if not paths:
        try:
            paths = [str(latest_results())]
        except FileNotFoundError as err:
            raise CommandError(str(err)) from None
        print(f"storebench bundle: using the latest results, {paths[0]}", file=sys.stderr)
    runs = _load(paths)
    try:
        files = make_bundle(paths, runs, args.out, ["storebench", *args.argv], _figure_kinds(args.figures))
    except (FileExistsError, ImportError) as err:
        raise CommandError(str(err)) from None
    print(f"{args.out}: {len(files)} files (README.md, results, tables, figures, environment, machine, "
          "datasets, command line)")
    return 0


# --------------------------------------------------------------------------- generate


def count(text: str) -> int:
    """``"1000"``, ``"10k"``, ``"1M"`` -> int (argparse type)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a whole number like 1000 or 10k, got {text!r}")
    return int(m.group(1)) * {"": 1, "k": 1000, "m": 1_000_000}[m.group(2).lower()]


def _option_value(text: str):
    """``4`` -> 4, ``0.5`` -> 0.5, ``true``/``false``/``none``, anything else a string."""
    low = text.lower()
    if low in ("true", "false", "none"):
        return {"true": True, "false": False, "none": None}[low]
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text


def resolve_format(spec: str, options: Sequence[str] = ()):
    """A Format from a name (``hdf5``) or a benchmark id (``hdf5[gzip,level=4]``) and ``K=V`` options."""
    from storebench import formats
    opts = {}
    for item in options:
        key, eq, value = item.partition("=")
        if not eq or not key.isidentifier():
            raise CommandError(f"--option: expected NAME=VALUE, got {item!r}")
        opts[key] = _option_value(value)
    name = spec.split("[", 1)[0]
    try:
        cls = type(formats.get(name))
    except (KeyError, ImportError) as err:
        raise CommandError(str(err.args[0] if err.args else err)) from None
    base = {}
    if spec != name:
        ids = {cls(**v).id: v for v in cls.bench_variants}
        if spec not in ids:
            raise CommandError(f"--format: {spec!r} is not a variant of {name}; variants: {', '.join(ids)} "
                               "(or give options with --option NAME=VALUE)")
        base = ids[spec]
    try:
        return cls(**{**base, **opts})
    except (TypeError, ValueError) as err:
        raise CommandError(f"--option: {name} does not take {opts}: {err}") from None


def _cmd_generate(args: argparse.Namespace) -> int:
    from storebench import fixtures
    if Path(args.out).name in ("", ".", ".."):
        raise CommandError(f"--out: {args.out!r} names no new directory; give a path like data/cifar")
    fmt = resolve_format(args.format, args.option)
    try:
        args.preset = fixtures.preset_id(args.preset)  # "ct[side=512,slices=300]": sizes are options
    except ValueError as err:
        raise CommandError(f"--preset: {err}") from None
    samples = progress(fixtures.make_dataset(args.preset, args.n, args.seed), args.n,
                        f"{fmt.id} {args.preset}")
    try:
        rep = fmt.write(samples, args.out, overwrite=args.overwrite)
    except FileExistsError as err:
        raise CommandError(str(err)) from None
    except ValueError as err:  # the format cannot store this preset's images
        raise CommandError(f"{fmt.id}: {err}") from None
    except OSError as err:  # permission denied, disk full, ...: the writer left nothing behind
        raise CommandError(f"{args.out}: {_one_line(err)}") from None
    print(f"{args.out}: {rep.count} {args.preset} samples (seed {args.seed}) as {fmt.id}, "
          f"{rep.bytes_on_disk:,} bytes in {rep.n_files} files")
    return 0


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, with a user error as one line on stderr (exit 2) instead of usage + error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="storebench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the benchmark suite (pytest bench), saving raw timings",
                       description="Runs `pytest bench " + " ".join(RUN_FLAGS) + " [pytest args]` in "
                       "this checkout. Results go to .benchmarks/ (pytest-benchmark's autosave). "
                       "The sweep options (--sizes, --formats, --workers, --preset, --cache, "
                       "--rounds, ...) are listed by `python -m pytest bench --help`. "
                       "Exit status: pytest's.")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed to pytest as they are")

    p = sub.add_parser("claims", help="the notebooks' claims: ratios, intervals and verdicts from result JSON",
                       description="Writes claims.md, claims.csv and the claims figure into DIR. A claim whose rows "
                       "are missing is 'not measured', with the reason. `storebench run --claims` runs the "
                       "scenarios first.")
    p.add_argument("results", nargs="+", metavar="RESULTS.json")
    p.add_argument("--out", default=CLAIMS_OUT, metavar="DIR", help=f"output folder (default {CLAIMS_OUT})")
    p.add_argument("--only", nargs="+", metavar="ID", help="these claims (ids or prefixes) only")
    p.add_argument("--figures", default="png,svg", metavar="KINDS",
                   help="figure file types: png, svg, both (default png,svg) or none")
    p.set_defaults(func=_cmd_claims)

    p = sub.add_parser("report", help="tables (markdown, CSV) and figures from result JSON",
                       description="Writes report.md, tables/<operation>.md|csv and "
                       "figures/<name>.png|svg into DIR. Rerunning gives identical files.")
    p.add_argument("results", nargs="+", metavar="RESULTS.json")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--figures", default="png,svg", metavar="KINDS",
                   help="figure file types: png, svg, both (default png,svg) or none")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("compare", help="ratio of medians per benchmark with bootstrap 95%% intervals",
                       description="Exit status: 0 no significant slowdown beyond --fail-above, "
                       "1 a benchmark is significantly slower by more than that, 2 unusable input.")
    p.add_argument("old", metavar="OLD.json")
    p.add_argument("new", metavar="NEW.json")
    p.add_argument("--fail-above", type=fraction, default=0.10, metavar="F",
                   help="exit 1 when a significantly slower benchmark's median time grew by more "
                        "than F, e.g. 0.10 or 10%% (default 10%%)")
    p.add_argument("--bootstrap", type=count, default=10_000, metavar="B", help="resamples (default 10000)")
    p.add_argument("--seed", type=seed, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--csv", metavar="FILE", help="also write the comparison as CSV")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("bundle", help="a self-contained folder for a paper",
                       description="Raw JSON, tables, figures, environment (lock file and pip "
                       "freeze), machine description, dataset checksums and the exact command "
                       "lines, with SHA256SUMS. Without RESULTS.json, the newest file under "
                       ".benchmarks/ (from `storebench run`).")
    p.add_argument("results", nargs="*", metavar="RESULTS.json")
    p.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder")
    p.add_argument("--figures", default="png,svg", metavar="KINDS",
                   help="figure file types: png, svg, both (default png,svg) or none")
    p.set_defaults(func=_cmd_bundle)

    p = sub.add_parser("generate", help="write a preset dataset in a format",
                       description="Writes fixtures.make_dataset(PRESET, N, SEED) to DIR.")
    p.add_argument("--preset", required=True, help="cifar, imagenet, fundus or xray")
    p.add_argument("--n", type=count, required=True, metavar="N", help="samples, e.g. 1000 or 10k")
    p.add_argument("--out", required=True, metavar="DIR", help="the dataset directory to create")
    p.add_argument("--format", default="npy", metavar="NAME|ID",
                   help="a format name or benchmark id such as 'hdf5[gzip,level=4]' (default npy)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a format option, e.g. --option level=4 (repeatable)")
    p.add_argument("--seed", type=seed, default=0, help="dataset seed (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace DIR if it is a storebench dataset (anything else there is refused)")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("verify", help="check every sample of datasets against their stored checksums",
                       description="Exit status: 0 all good, 1 damaged samples, 2 not a readable dataset.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="dataset directories")
    p.add_argument("--max-keys", type=count, default=20, help="damaged keys to list per dataset")
    p.set_defaults(func=_cmd_verify)
    return parser


@contextlib.contextmanager
def _warnings_to_stderr():
    """Show storebench's warnings as one ``storebench: warning:`` line each."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"storebench: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", ForeignResultsWarning)
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:  # writers remove their temporary directory on the way out
        # Exiting now: a second Ctrl-C (or one the shell repeats) must not turn the exit
        # status 130 into death by SIGINT while the interpreter shuts down.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("storebench: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    if argv[:1] == ["run"] and "--claims" in argv[1:argv.index("--") if "--" in argv else None]:
        try:
            with _warnings_to_stderr():
                return run_claims(argv[1:])
        except (CommandError, ResultsError) as err:
            print(f"storebench run --claims: error: {_one_line(err)}", file=sys.stderr)
            return 2
    if argv[:1] == ["run"] and not {"-h", "--help"} & set(argv[1:2]):
        try:  # pytest's options go through untouched, so no argparse here
            return run_bench(argv[1:])
        except CommandError as err:
            print(f"storebench run: error: {err}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        with _warnings_to_stderr():
            return args.func(args)
    except (CommandError, ResultsError) as err:
        print(f"storebench {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
