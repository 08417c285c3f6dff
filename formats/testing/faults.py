"""Fault injection for :class:`~storebench.formats.testing.FormatTests` and the README's fault matrix.

Each fault damages a copy of a small dataset; :func:`probe` then opens and
reads it in a forked child with a timeout.  The only acceptable outcomes are
``typed error`` (a DatasetError) and ``correct data``; anything else (a signal,
a hang, an untyped exception, or wrong data that verify() does not flag) is a
bug.  ``python -m storebench.formats.testing.faults [FORMAT ...]`` (or
``python tests/faults.py``) prints the matrix as markdown.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

from .. import _registry
from .._errors import DatasetError
from .._manifest import MANIFEST
from .._sample import Sample

OK_OUTCOMES = ("typed error", "correct data")
TIMEOUT_S = 20


def fault_samples(fmt) -> list[Sample]:
    """A dozen photographic samples the format can store, with boxes and meta."""
    from storebench.fixtures import make_dataset

    out = [s for s in make_dataset("imagenet", 12, seed=3) if s.mode in fmt.modes]
    small = []
    for s in out:  # keep the files small so faults hit headers, index and payload alike
        img = s.image[:40, :48]
        boxes = np.clip(s.boxes, 0, [48, 40, 48, 40]).astype(np.float32)
        boxes[:, 2] = np.maximum(boxes[:, 2], boxes[:, 0])
        boxes[:, 3] = np.maximum(boxes[:, 3], boxes[:, 1])
        small.append(Sample(s.key, np.ascontiguousarray(img), s.label, boxes, s.box_labels, s.meta))
    return small


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
            _same(a, b, fmt.lossless) for a, b in zip(expected * 2 + expected[::-1], got))
        # verify() must flag any damage a plain reader would hand back silently.
        with fmt.open(path) as r:
            plain = list(r)
            bad = r.verify()
        plain_ok = len(plain) == len(expected) and all(
            _same(a, b, fmt.lossless) for a, b in zip(expected, plain))
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


def _same(a: Sample, b: Sample, lossless: bool) -> bool:
    if lossless:
        return a == b
    return (a.key, a.label, a.meta, a.image.shape, a.image.dtype) == \
        (b.key, b.label, b.meta, b.image.shape, b.image.dtype) and \
        np.array_equal(a.boxes, b.boxes) and np.array_equal(a.box_labels, b.box_labels)


def probe(fmt, path: Path, expected: list[Sample], timeout: float = TIMEOUT_S) -> tuple[str, str]:
    """Open and read ``path`` in a forked child; classify what happened."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fmt, path, expected, child))
    proc.start()
    child.close()
    if parent.poll(timeout):
        try:
            outcome = parent.recv()
        except EOFError:
            outcome = None
    else:
        outcome = ("hang", f"no answer in {timeout} s")
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if outcome is None:
        outcome = ("signal", f"child died with exit code {proc.exitcode}")
    return outcome


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


def main(names: list[str]) -> None:
    """Print the matrix of ``names`` (default: every available format); bugs go to stderr."""
    res = matrix(names or None)
    print(markdown(res))
    for name, cases in res.items():
        for label, (o, detail) in cases.items():
            if o not in OK_OUTCOMES:
                print(f"{name}: {label}: {o}: {detail}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
    os._exit(0)
