"""Fault injection for :class:`~storebench.formats.testing.FormatTests` and the README's fault matrix.

Each fault damages a copy of a small dataset; :func:`probe` then opens and
reads it in a forked child with a timeout.  The only acceptable outcomes are
``typed error`` (a DatasetError) and ``correct data``; anything else (a signal,
a hang, an untyped exception, or wrong data that verify() does not flag) is a
bug.  ``python -m storebench.formats.testing.faults [FORMAT ...]`` (or
``python tests/faults.py``) prints the matrix as markdown.
"""
from __future__ import annotations

import itertools
import math
import os
import pickle
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

from .. import _registry
from .._errors import DatasetError
from .._manifest import MANIFEST
from .._reader import Reader
from .._sample import Sample
from ._common import child_context, in_forked_child, same_sample, supported

OK_OUTCOMES = ("typed error", "correct data")
TIMEOUT_S = 20


def fault_samples(fmt) -> list[Sample]:
    """A dozen photographic samples the format can store, with boxes and meta."""
    from storebench.fixtures import make_dataset

    small = []  # the files kept small so faults hit headers, index and payload alike
    for s in make_dataset("imagenet", 12, seed=3):
        img = s.image[:40, :48]
        boxes = np.clip(s.boxes, 0, [48, 40, 48, 40]).astype(np.float32)
        boxes[:, 2] = np.maximum(boxes[:, 2], boxes[:, 0])
        boxes[:, 3] = np.maximum(boxes[:, 3], boxes[:, 1])
        small.append(Sample(s.key, np.ascontiguousarray(img), s.label, boxes, s.box_labels, s.meta))
    return supported(fmt, small)


def _payload_files(root: Path) -> list[Path]:
    """The dataset's top-level files plus the first file of each subdirectory."""
    files = []
    for p in sorted(root.iterdir()):
        if p.is_dir():
            inner = sorted(q for q in p.rglob("*") if q.is_file())
            files += inner[:1]
        elif p.name != MANIFEST:
            files.append(p)
    return files


def _truncate(f: Path, frac: float):
    size = f.stat().st_size
    with open(f, "r+b") as h:
        h.truncate(int(size * frac))


def _flip(f: Path, where: float):
    size = f.stat().st_size
    if size == 0:
        return
    pos = min(size - 1, int(size * where))
    with open(f, "r+b") as h:
        h.seek(pos)
        b = h.read(1)
        h.seek(pos)
        h.write(bytes([b[0] ^ 0xFF]))


def _zero(f: Path, where: float, n: int = 4096):
    size = f.stat().st_size
    pos = int(size * where)
    with open(f, "r+b") as h:
        h.seek(pos)
        h.write(bytes(min(n, size - pos)))


FAULTS = {
    "truncate 0": lambda f: _truncate(f, 0.0),
    "truncate 1/2": lambda f: _truncate(f, 0.5),
    "truncate -1 byte": lambda f: _truncate(f, (f.stat().st_size - 1) / max(f.stat().st_size, 1)),
    "flip header": lambda f: _flip(f, 0.0),
    "flip byte 9": lambda f: _flip(f, 9 / max(f.stat().st_size, 1)),
    "flip 1/3": lambda f: _flip(f, 1 / 3),
    "flip middle": lambda f: _flip(f, 0.5),
    "flip last": lambda f: _flip(f, 1.0),
    "zero 4 KiB at 1/4": lambda f: _zero(f, 0.25),
    "delete": lambda f: f.unlink(),
    "rename": lambda f: f.rename(f.with_name(f.name + ".moved")),
}


def damaged_copies(fmt, src: Path, workdir: Path):
    """Yield (fault label, damaged dataset path) for every file x fault, plus manifest faults."""
    n = 0
    for f in _payload_files(src):
        rel = f.relative_to(src)
        for label, fault in FAULTS.items():
            n += 1
            dst = workdir / f"case{n}"
            shutil.copytree(src, dst)
            fault(dst / rel)
            yield f"{rel} {label}", dst
    for label in ("flip middle", "delete", "truncate 1/2"):
        n += 1
        dst = workdir / f"case{n}"
        shutil.copytree(src, dst)
        FAULTS[label](dst / MANIFEST)
        yield f"{MANIFEST} {label}", dst


def _child(fmt, path, expected, conn):
    try:
        with fmt.open(path, verify=True) as r:
            got = list(r) + [r[i] for i in range(len(r))] + r.read_batch(list(range(len(r)))[::-1])
        same = len(got) == 3 * len(expected) and all(
            same_sample(a, b, fmt.lossless) for a, b in zip(expected * 2 + expected[::-1], got))
        # verify() must flag any damage a plain reader would hand back silently.
        with fmt.open(path) as r:
            plain = list(r)
            bad = r.verify()
        plain_ok = len(plain) == len(expected) and all(
            same_sample(a, b, fmt.lossless) for a, b in zip(expected, plain))
        if same and plain_ok and not bad:
            conn.send(("correct data", ""))
        elif bad and not same:
            conn.send(("typed error", f"verify flagged {bad[:3]}"))
        else:
            conn.send(("wrong data", f"verify={bad[:3]} same={same} plain_ok={plain_ok}"))
    except DatasetError as err:
        conn.send(("typed error", str(err)[-160:]))
    except BaseException as err:  # the point is to classify everything
        conn.send(("untyped error", f"{type(err).__name__}: {err}"[-300:] + traceback.format_exc()[-600:]))
    finally:
        conn.close()


def probe(fmt, path: Path, expected: list[Sample], timeout: float = TIMEOUT_S) -> tuple[str, str]:
    """Open and read ``path`` in a forked child; classify what happened."""
    return in_forked_child(_child, (fmt, path, expected), timeout)


def matrix(names=None) -> dict[str, dict[str, tuple[str, str]]]:
    """{format: {fault: (outcome, detail)}} for every available format."""
    result = {}
    for name, cls in _registry.available().items():
        if names and name not in names:
            continue
        fmt = cls()
        expected = fault_samples(fmt)
        with tempfile.TemporaryDirectory() as d:
            src = Path(d) / "src"
            fmt.write(expected, src)
            result[name] = {label: probe(fmt, path, expected)
                            for label, path in damaged_copies(fmt, src, Path(d))}
    return result


def markdown(result) -> str:
    """Format × fault kind, counting outcomes over the files of each format."""
    kinds = list(FAULTS) + ["manifest"]
    lines = ["| format | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for name, cases in result.items():
        cells = []
        for kind in kinds:
            hits = [o for label, (o, _d) in cases.items()
                    if (label.startswith(MANIFEST) if kind == "manifest"
                        else label.endswith(" " + kind) and not label.startswith(MANIFEST))]
            typed, correct = hits.count("typed error"), hits.count("correct data")
            bad = len(hits) - typed - correct
            cell = f"{typed} err / {correct} ok" + (f" / **{bad} BUG**" if bad else "")
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- concurrency

#: What a reader may raise when its dataset is gone: the dataset's own error or "not there".
TYPED = (DatasetError, FileNotFoundError)
_RANK = {"correct data": 0, "typed error": 1, "untyped error": 2, "wrong data": 3, "hang": 3, "signal": 3}


def concurrency_samples(fmt, n: int = 12) -> list[Sample]:
    """``n`` cifar samples the format can store (fewer where it cannot store colour)."""
    from storebench.fixtures import make_dataset

    return supported(fmt, list(make_dataset("cifar", n, seed=11)))


def written_over(samples: list[Sample]) -> list[Sample]:
    """The same keys and shapes with other pixels, labels and meta: what a dataset written
    over an open one holds, which a reader must never return under the old keys."""
    return [Sample(s.key, ~s.image, s.label + 1, s.boxes, s.box_labels, {**s.meta, "written_over": True})
            for s in samples]


def worst(*outcomes: tuple[str, str]) -> tuple[str, str]:
    """The worst of several (outcome, detail) pairs; details of the worst kind joined."""
    top = max(_RANK.get(o, 3) for o, _ in outcomes)
    same = [(o, d) for o, d in outcomes if _RANK.get(o, 3) == top]
    return same[0][0], "; ".join(d for _, d in same if d)[:600]


def read_every_way(r, reference: list[Sample], what: str = "") -> tuple[str, str]:
    """Read ``r`` by position, negative position, batch, key and scan, and compare every
    field of every sample with ``reference`` (what ``r`` returned before, pixels exact).

    "correct data" if every read matched; "typed error" if some raised a DatasetError
    or FileNotFoundError and the rest matched; "wrong data" or "untyped error" otherwise.
    """
    n = len(reference)
    ways = [("r[i]", lambda: [r[i] for i in range(n)], reference),
            ("r[i - n]", lambda: [r[i - n] for i in range(n)], reference),
            ("read_batch", lambda: r.read_batch(list(range(n))[::-1]), reference[::-1]),
            ("get", lambda: [r.get(s.key) for s in reference], reference),
            ("iter", lambda: list(r), reference)]
    return worst(*(_attempt(f"{what}{name}", fn, expect) for name, fn, expect in ways))


def _attempt(what: str, fn, expect: list[Sample]) -> tuple[str, str]:
    try:
        got = fn()
    except TYPED as err:
        return "typed error", f"{what}: {type(err).__name__}: {err}"[:200]
    except Exception as err:  # the point is to classify everything
        return "untyped error", f"{what}: {type(err).__name__}: {err}"[:300]
    return _compare(what, got, expect)


def _compare(what: str, got, expect: list[Sample]) -> tuple[str, str]:
    got = list(got)
    if len(got) != len(expect):
        return "wrong data", f"{what}: {len(got)} samples for {len(expect)}"
    bad = [f"{b.key!r}" for a, b in zip(expect, got) if not (isinstance(b, Sample) and a == b)]
    if bad:
        return "wrong data", f"{what}: {len(bad)} of {len(expect)} samples differ from the dataset opened " \
                             f"(keys {', '.join(bad[:3])})"
    return "correct data", ""


def _reference(fmt, path: Path, samples: list[Sample]):
    """Open ``path``; return the reader and what it reads (checked against ``samples``)."""
    r = fmt.open(path)
    ref = [r[i] for i in range(len(r))]
    ok = len(ref) == len(samples) and all(same_sample(a, b, fmt.lossless) for a, b in zip(samples, ref))
    if not ok:
        r.close()
        raise AssertionError(f"{fmt.id}: the dataset does not read back before anything changed")
    return r, ref


def _send_outcome(fn, args, child):
    try:
        child.send(fn(*args))
    except BaseException as err:  # the point is to classify everything
        child.send(("untyped error", f"{type(err).__name__}: {err}"[-300:] + traceback.format_exc()[-600:]))
    finally:
        child.close()
        os._exit(0)


def _start_fork(fn, *args):
    """Start ``fn(*args)`` in a forked child (which inherits open readers as they are); in a
    forkserver child (readers pickled) where the format of ``args[0]`` is not ``fork_safe``."""
    fmt = args[0].format if isinstance(args[0], Reader) else args[0]
    ctx = child_context(fmt)
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_send_outcome, args=(fn, args, child))
    proc.start()
    child.close()
    return proc, parent


def _outcome(proc, parent, timeout: float = TIMEOUT_S) -> tuple[str, str]:
    try:
        outcome = parent.recv() if parent.poll(timeout) else ("hang", f"no answer in {timeout} s")
    except EOFError:
        outcome = None
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return outcome or ("signal", f"child died with exit code {proc.exitcode}")


def _in_fork(fn, *args, timeout: float = TIMEOUT_S) -> tuple[str, str]:
    """``fn(*args)`` in a forked child; its (outcome, detail)."""
    proc, parent = _start_fork(fn, *args)
    return _outcome(proc, parent, timeout)


def _write_over(fmt, path: Path, samples: list[Sample]) -> tuple[str, str]:
    fmt.write(samples, path, overwrite=True)
    return "correct data", ""


def _after_change(r, ref: list[Sample], what: str) -> tuple[str, str]:
    """The open reader, a pickled copy (a spawn worker's reopen) and a forked child's use of it."""
    clone = pickle.loads(pickle.dumps(r))
    try:
        return summarize(read_every_way(r, ref, f"{what}, open reader: "),
                         worst(read_every_way(clone, ref, f"{what}, unpickled copy: "),
                               _in_fork(read_every_way, r, ref, f"{what}, forked child: ")))
    finally:
        clone.close()


def summarize(opened: tuple[str, str], reopened: tuple[str, str]) -> tuple[str, str]:
    """The worst of the open reader's and its reopened copies' outcomes, the detail led by
    ``open: <outcome>, reopened: <outcome> | `` (the matrix shows that part)."""
    outcome, detail = worst(opened, reopened)
    return outcome, f"open: {opened[0]}, reopened: {reopened[0]} | {detail}"


def overwrite_while_reading(fmt, root: Path) -> tuple[str, str]:
    """A dataset written over by another process while a reader is open (and mid-scan)."""
    samples = concurrency_samples(fmt)
    path = root / "ds"
    fmt.write(samples, path)
    r, ref = _reference(fmt, path, samples)
    with r:
        it = iter(r)
        head = [next(it) for _ in range(3)]
        writer = _in_fork(_write_over, fmt, path, written_over(samples))
        if writer[0] != "correct data":
            return "untyped error", f"the writer failed: {writer[1]}"
        scan = _attempt("rest of a scan begun before", lambda: head + list(it), ref)
        after = _after_change(r, ref, "overwritten")
        outcome, detail = worst(scan, after)
        return outcome, f"{after[1].split(' | ')[0]}, scan begun before: {scan[0]} | {detail}"


def moved_path(fmt, root: Path) -> tuple[str, str]:
    """The dataset renamed (another written at its path), a symlink retargeted, and
    ``os.chdir`` after opening a relative path (which must change nothing at all)."""
    samples = concurrency_samples(fmt)
    other = written_over(samples)
    outcomes = []
    # renamed, and another dataset written where it was
    fmt.write(samples, root / "ds")
    r, ref = _reference(fmt, root / "ds", samples)
    with r:
        (root / "ds").rename(root / "moved")
        fmt.write(other, root / "ds")
        outcomes.append(_after_change(r, ref, "renamed"))
    # opened through a symlink that is then pointed at another dataset
    fmt.write(other, root / "other")
    (root / "link").symlink_to(root / "moved", target_is_directory=True)
    r, ref = _reference(fmt, root / "link", samples)
    with r:
        (root / "link.new").symlink_to(root / "other", target_is_directory=True)
        os.replace(root / "link.new", root / "link")
        outcomes.append(_after_change(r, ref, "symlink retargeted"))
    # opened as a relative path, then the working directory changes to one holding another dataset
    (root / "a").mkdir()
    (root / "b").mkdir()
    (root / "moved").rename(root / "a" / "ds")
    fmt.write(other, root / "b" / "ds")
    cwd = os.getcwd()
    try:
        os.chdir(root / "a")
        r, ref = _reference(fmt, Path("ds"), samples)
        with r:
            os.chdir(root / "b")
            chdir = _after_change(r, ref, "chdir")
    finally:
        os.chdir(cwd)
    if chdir[0] == "typed error":  # nothing moved: a chdir must not even be an error
        chdir = ("wrong data", f"an error after chdir: {chdir[1]}")
    outcomes.append(chdir)
    outcome, detail = worst(*outcomes)
    parts = [f"{w}: {o[1].split(' | ')[0]}" for w, o in zip(("renamed", "symlink", "chdir"), outcomes)]
    return outcome, "; ".join(parts) + f" | {detail}"


def deleted(fmt, root: Path) -> tuple[str, str]:
    """The dataset deleted while a reader is open: the old data (held handles) or a typed error."""
    samples = concurrency_samples(fmt)
    fmt.write(samples, root / "ds")
    r, ref = _reference(fmt, root / "ds", samples)
    with r:
        shutil.rmtree(root / "ds")
        return _after_change(r, ref, "deleted")


def thread_plans(n: int, seed: int, threads: int = 8, ops: int = 40) -> list[list[tuple]]:
    """Seeded op lists for :func:`hammer`: r[i], r[i - n], read_batch, get and partial scans."""
    rng = np.random.default_rng(seed)
    kinds = ("item", "neg", "batch", "get", "iter")
    plans = []
    for _ in range(threads):
        plan: list[tuple] = []
        for kind in rng.choice(kinds, ops, p=[0.35, 0.1, 0.25, 0.2, 0.1]).tolist():
            if kind == "batch":
                plan.append((kind, rng.integers(0, n, rng.integers(0, 9)).tolist()))
            elif kind == "iter":
                plan.append((kind, int(rng.integers(0, n + 1))))
            else:
                plan.append((kind, int(rng.integers(0, n))))
        plans.append(plan)
    return plans


def hammer(r, reference: list[Sample], plans: list[list[tuple]]) -> tuple[str, str]:
    """Run each plan in a thread of its own on the one reader ``r``, all started at once;
    compare every sample with ``reference``."""
    outcomes: list[tuple[str, str]] = []
    start = threading.Barrier(len(plans))

    def run(plan):
        start.wait()
        for kind, arg in plan:
            outcomes.append(_attempt(*_thread_op(r, reference, kind, arg)))

    threads = [threading.Thread(target=run, args=(p,)) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(outcomes) != sum(map(len, plans)):
        return "untyped error", "a thread died"
    return worst(("correct data", ""), *outcomes)


def _thread_op(r, reference: list[Sample], kind: str, arg):
    """(what, read, expected) for one op of a :func:`thread_plans` plan."""
    if kind == "item":
        return f"r[{arg}]", lambda: [r[arg]], [reference[arg]]
    if kind == "neg":
        return f"r[{arg - len(reference)}]", lambda: [r[arg - len(reference)]], [reference[arg]]
    if kind == "batch":
        return f"read_batch({arg})", lambda: r.read_batch(arg), [reference[i] for i in arg]
    if kind == "get":
        return f"get(#{arg})", lambda: [r.get(reference[arg].key)], [reference[arg]]
    return f"first {arg} of a scan", lambda: list(itertools.islice(r, arg)), reference[:arg]


def shared_by_threads(fmt, root: Path, seeds=range(4), n: int = 40) -> tuple[str, str]:
    """8 threads on one reader, each a seeded mix of reads, fresh (unopened) for every seed."""
    samples = concurrency_samples(fmt, n)
    fmt.write(samples, root / "ds")
    r, ref = _reference(fmt, root / "ds", samples)
    outcomes = []
    with r:
        for seed in seeds:
            clone = pickle.loads(pickle.dumps(r))  # unopened: 8 first reads race to open it
            with clone:
                outcomes.append(hammer(clone, ref, thread_plans(len(ref), seed)))
    return worst(*outcomes)


def _write_new(fmt, path: Path, samples, go) -> tuple[str, str]:
    go.wait()
    try:
        fmt.write(samples, path)
    except FileExistsError as err:
        return "FileExistsError", str(err)[:200]
    except Exception as err:  # the point is to classify everything
        return type(err).__name__, str(err)[:200]
    return "success", ""


def two_writers(fmt, root: Path, trials: int = 6) -> tuple[str, str]:
    """Two processes write one new path with ``overwrite=False``, ``trials`` times: exactly one
    must succeed and the other get FileExistsError, and the dataset must be one writer's, whole."""
    samples = concurrency_samples(fmt)
    tally: dict[str, int] = {}
    for t in range(trials):
        path, go = root / f"new{t}", child_context(fmt).Event()
        writers = [_start_fork(_write_new, fmt, path, samples, go) for _ in range(2)]
        time.sleep(0.05)
        go.set()  # both at once
        got = sorted(_outcome(proc, parent, 120)[0] for proc, parent in writers)
        whole = False
        try:
            with fmt.open(path) as r:
                whole = r.verify() == [] and len(r) == len(samples)
        except TYPED:
            pass
        key = " + ".join(got) + ("" if whole else ", dataset not whole")
        tally[key] = tally.get(key, 0) + 1
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(tally.items()))
    good = "FileExistsError + success"
    return ("typed error" if set(tally) == {good} else "wrong data"), f"{detail} of {trials}"


def _bomb_roundtrip(fmt, path: Path, side: int, limit: int | None) -> tuple[str, str]:
    from PIL import Image

    if limit is not None:
        Image.MAX_IMAGE_PIXELS = limit
    y = np.arange(side, dtype=np.uint8)
    big = Sample("huge", np.add.outer(y, y).astype(np.uint8))  # compresses, unlike noise
    try:
        fmt.write([big], path)
    except ValueError as err:
        return "refused at write (ValueError)", str(err)[:200]
    try:
        with fmt.open(path) as r:
            got = r[0]
            bad = r.verify()
    except Exception as err:  # the point is to classify everything
        return "wrong data", f"written, then unreadable: {type(err).__name__}: {err}"[:300]
    if bad or not same_sample(big, got, fmt.lossless):
        return "wrong data", f"written, then read back wrong (verify: {bad})"
    return "reads back", ""


def huge_image(fmt, root: Path, side: int = 13500, limit: int | None = None) -> tuple[str, str]:
    """One ``side`` x ``side`` grey image (13500: 182 Mpx, over Pillow's 179 Mpx limit), written
    and read back in a child (with ``PIL.Image.MAX_IMAGE_PIXELS`` set to ``limit`` there, if given)."""
    return _in_fork(_bomb_roundtrip, fmt, root / "huge", side, limit, timeout=600)


CONCURRENCY = {
    "overwrite while reading": overwrite_while_reading,
    "moved path": moved_path,
    "deleted": deleted,
    "threads": shared_by_threads,
    "two writers": two_writers,
}


def concurrency_matrix(names=None, *, huge_side: int = 13500,
                       huge_limit: int | None = None) -> dict[str, dict[str, tuple[str, str]]]:
    """{format: {case: (outcome, detail)}} for every available format, each case in a forked child."""
    result = {}
    for name, cls in _registry.available().items():
        if names and name not in names:
            continue
        fmt, row = cls(), {}
        for case, fn in CONCURRENCY.items():
            with tempfile.TemporaryDirectory() as d:
                row[case] = _in_fork(fn, fmt, Path(d), timeout=300)
        with tempfile.TemporaryDirectory() as d:
            row["huge image"] = huge_image(fmt, Path(d), huge_side, huge_limit)
        result[name] = row
    return result


def concurrency_markdown(result, *, huge_header: str = "huge image") -> str:
    """Format × case: "typed error" / "correct data" / "BUG: ..."; two writers as counted."""
    cases = list(CONCURRENCY) + ["huge image"]
    lines = ["| format | " + " | ".join(cases[:-1] + [huge_header]) + " |", "|---" * (len(cases) + 1) + "|"]
    for name, row in result.items():
        cells = []
        for case in cases:
            outcome, detail = row[case]
            if case == "two writers":
                cell = detail if outcome in OK_OUTCOMES else f"**BUG**: {detail}"
            elif case == "huge image" and outcome in ("refused at write (ValueError)", "reads back"):
                cell = outcome
            elif outcome in OK_OUTCOMES:
                cell = detail.split(" | ")[0] if " | " in detail else outcome
            else:
                cell = f"**BUG**: {outcome}: {detail}"[:160].replace("|", "/").replace("\n", " ")
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """Print the matrix of the formats named in ``argv`` (default: every available one) as
    markdown; bugs go to stderr.  ``--concurrency`` prints the second table (open readers
    under changing paths, threads, two writers, a huge image); with ``--huge-limit N`` its
    huge image is ``isqrt(2.25 N)`` pixels square with ``PIL.Image.MAX_IMAGE_PIXELS = N`` in
    the child, instead of 13500 x 13500 under Pillow's own limit."""
    names = [a for a in argv if not a.startswith("--")]
    if "--concurrency" not in argv:
        res = matrix(names or None)
        print(markdown(res))
    else:
        limit = None
        if "--huge-limit" in argv:
            limit = int(argv[argv.index("--huge-limit") + 1])
            names = [n for n in names if n != str(limit)]
        side = 13500 if limit is None else math.isqrt(limit * 9 // 4)
        res = concurrency_matrix(names or None, huge_side=side, huge_limit=limit)
        header = (f"huge image ({side}x{side}" + (f", MAX_IMAGE_PIXELS lowered to {limit}" if limit else
                                                 ", over Pillow's limit") + ")")
        print(concurrency_markdown(res, huge_header=header))
    for name, cases in res.items():
        for label, (o, detail) in cases.items():
            if o not in OK_OUTCOMES + ("refused at write (ValueError)", "reads back") and \
                    not (label == "two writers" and o == "typed error"):
                print(f"{name}: {label}: {o}: {detail}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.stdout.flush()  # os._exit skips the interpreter's flush of a piped stdout
    sys.stderr.flush()
    os._exit(0)
