"""FormatTests' checks of bad input: fuzzed damage, images too large, unreadable files, misuse.

:class:`BadInputTests` is a mixin of
:class:`~storebench.formats.testing.FormatTests` (it takes the ``fmt`` and
``dataset_of`` fixtures from there).  The fuzzer damages every file of a small
dataset, the small ones (index, checksums, manifest) as often as the payload:
random byte flips, zeroed or garbled runs and truncations, at offsets drawn
from a seeded generator, so a failing case is reproduced by its seed alone
(:func:`damage`).  Each case is read in a forked child with a timeout
(:func:`fuzz_probe`); the only acceptable outcomes are a DatasetError and
correct data.  A seed that once found a bug is kept in :data:`REGRESSIONS`.
"""
from __future__ import annotations

import builtins
import errno
import io
import os
import re
import shutil
import tempfile
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from .. import DatasetError, Format, Sample
from .._manifest import MANIFEST
from . import edge_samples
from ._common import in_forked_child, leftovers, same_sample, supported

#: Fuzzed cases per format in a default run, and with ``HYPOTHESIS_PROFILE=nightly``
#: or in :meth:`BadInputTests.test_fuzzed_damage_many_seeds` (marked ``slow``).
FUZZ_CASES = 32
SLOW_FUZZ_CASES = 300
TIMEOUT_S = 20

#: Format name -> seeds that once made it crash, hang or return wrong data; each is
#: run before the random seeds (the seeds reproduce only on :func:`fuzz_samples`).
REGRESSIONS: dict[str, tuple[int, ...]] = {
    "tar": (225,),  # np.load of a zeroed .npy header: tokenize.TokenError
    "npy": (532, 609, 621, 674, 944, 1059),  # the same in pixels.npy, at open
    "sqlite": (276,),  # flipped schema text: UnicodeDecodeError from the first query
    # pydicom's BytesLengthException (truncated) and NotImplementedError (bad VR); new UIDs per
    # write shift the bytes, so tests/test_formats_sqlite_dicom.py also pins both by content.
    "dicom": (56, 91),
    "shelve": (305,),  # a garbled shelf.dir: len() of the shelf just closed, in the error message
    "tfrecord": (636,),  # a flipped key in keys.json: keys() wrong, verify() passed (it now compares)
}


def fuzz_samples(fmt: Format) -> list[Sample]:
    """The edge cases ``fmt`` stores plus three 16x16 photographic samples with boxes."""
    from storebench.fixtures import make_dataset

    photos = []
    for s in make_dataset("imagenet", 3, seed=5):
        boxes = np.clip(s.boxes, 0, 16).astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        photos.append(Sample(f"photo {s.key}", np.ascontiguousarray(s.image[:16, :16]), s.label,
                             boxes, s.box_labels, s.meta))
    return supported(fmt, edge_samples() + photos)


def _file_groups(root: Path) -> list[list[Path]]:
    """Each top-level file on its own, each subdirectory's files together: a fault picks a
    group first, so the index and manifest are hit as often as one folder of images."""
    groups = []
    for p in sorted(root.iterdir()):
        if p.is_dir():
            inner = sorted(q for q in p.rglob("*") if q.is_file())
            if inner:
                groups.append(inner)
        else:
            groups.append([p])
    return groups


def _damage_file(f: Path, rng: np.random.Generator) -> str:
    data = bytearray(f.read_bytes())
    size = len(data)
    kind = ("flip", "zero", "garble", "truncate")[int(rng.integers(4))]
    if size == 0:
        return "empty, left as it is"
    if kind == "flip":
        where = np.unique(rng.integers(0, size, int(rng.integers(1, 17))))
        for p in where.tolist():
            data[p] ^= int(rng.integers(1, 256))
        what = f"{len(where)} bytes flipped at {where[:6].tolist()}{'...' if len(where) > 6 else ''}"
    elif kind == "truncate":
        cut = int(rng.integers(0, size))
        del data[cut:]
        what = f"truncated to {cut} of {size} bytes"
    else:  # a run of 1 to 4096 bytes, short runs as likely as long ones
        n = min(size, int(2 ** rng.uniform(0, 12)))
        at = int(rng.integers(0, size - n + 1))
        data[at:at + n] = bytes(n) if kind == "zero" else rng.bytes(n)
        what = f"{n} bytes {'zeroed' if kind == 'zero' else 'garbled'} at {at}"
    f.write_bytes(bytes(data))
    return what


def damage(root: Path, seed: int) -> str:
    """Damage the dataset at ``root`` in place, as seed ``seed`` says; describe what was done.

    One fault, or two (one case in five), each in a file drawn by group
    (:func:`_file_groups`): a flip of 1-16 random bytes, a zeroed or garbled
    run, or a truncation.
    """
    rng = np.random.default_rng(seed)
    groups = _file_groups(root)
    done = []
    for _ in range(2 if rng.random() < 0.2 else 1):
        group = groups[int(rng.integers(len(groups)))]
        f = group[int(rng.integers(len(group)))]
        done.append(f"{f.relative_to(root)}: {_damage_file(f, rng)}")
    return "; ".join(done)


def _all_same(expected: Sequence[Sample], got: Sequence[Sample], lossless: bool) -> bool:
    return len(got) == len(expected) and all(same_sample(a, b, lossless) for a, b in zip(expected, got))


def read_back(fmt: Format, path: Path, expected: list[Sample]) -> tuple[str, str]:
    """What reading the (damaged) dataset at ``path`` gives: ("correct data" | "typed error" |
    "wrong data", detail).  Any other exception propagates: it is the bug."""
    lossless, n = fmt.lossless, len(expected)
    errors = []
    # 1. A verifying reader: every read path gives the samples written, or a DatasetError.
    try:
        with fmt.open(path, verify=True) as r:
            got = list(r) + [r[i] for i in range(len(r))] + r.read_batch(np.arange(len(r))[::-1])
        if not _all_same(expected * 2 + expected[::-1], got, lossless):
            return "wrong data", "a reader opened with verify=True returned other samples"
    except DatasetError as err:
        errors.append(str(err)[-200:])
    # 2. A plain reader: verify() lists damage or raises DatasetError; what it passes reads back right.
    try:
        with fmt.open(path) as r:
            bad = r.verify()
            if not isinstance(bad, list):
                return "wrong data", f"verify() returned {type(bad).__name__}"
            if bad:
                errors.append(f"verify() flagged {bad[:3]}")
            else:
                keys = r.keys()
                plain = list(r) + r.read_batch(list(range(n)))
                if keys != [s.key for s in expected] or not _all_same(expected * 2, plain, lossless):
                    return "wrong data", "verify() passed and the samples differ"
    except DatasetError as err:
        errors.append(str(err)[-200:])
    return ("typed error", " | ".join(errors)) if errors else ("correct data", "")


def _child(fmt, path, expected, conn):
    try:
        conn.send(read_back(fmt, path, expected))
    except BaseException as err:  # the point is to classify everything
        conn.send(("untyped error", f"{type(err).__name__}: {err}"[-300:] + "\n" + traceback.format_exc()[-1500:]))
    finally:
        conn.close()


def fuzz_probe(fmt: Format, path: Path, expected: list[Sample], timeout: float = TIMEOUT_S) -> tuple[str, str]:
    """:func:`read_back` in a forked child: a signal or no answer in ``timeout`` s is an outcome too."""
    return in_forked_child(_child, (fmt, path, expected), timeout)


def fuzz(fmt: Format, seeds: Sequence[int], workdir: Path) -> dict[int, tuple[str, str, str]]:
    """{seed: (damage, outcome, detail)} for a fresh damaged copy of one small dataset per seed."""
    expected = fuzz_samples(fmt)
    src = workdir / "src"
    fmt.write(expected, src)
    with fmt.open(src) as r:  # lossy formats: compare with what the undamaged dataset reads
        expected = list(r)
    out = {}
    for seed in seeds:
        dst = workdir / f"seed{seed}"
        shutil.copytree(src, dst)
        what = damage(dst, seed)
        out[seed] = (what, *fuzz_probe(fmt, dst, expected))
        shutil.rmtree(dst)
    return out


def fuzz_cases() -> int:
    """:data:`FUZZ_CASES`, or :data:`SLOW_FUZZ_CASES` with ``HYPOTHESIS_PROFILE=nightly``."""
    return SLOW_FUZZ_CASES if os.environ.get("HYPOTHESIS_PROFILE") == "nightly" else FUZZ_CASES


def _check_fuzz(fmt: Format, seeds: Sequence[int], workdir: Path) -> dict:
    results = fuzz(fmt, seeds, workdir)
    bugs = {s: r for s, r in results.items() if r[1] not in ("typed error", "correct data")}
    assert not bugs, f"{fmt.id}: " + "\n".join(
        f"seed {s} ({what}): {o}: {d}" for s, (what, o, d) in bugs.items())
    return results


def _denying(names: set[str]):
    """Patches for ``os.open`` and ``open`` that raise EACCES for files named in ``names``
    (works as root too, which ignores mode bits; C libraries' own opens are not seen)."""
    real_os_open, real_open = os.open, builtins.open

    def check(file):
        if isinstance(file, (str, bytes, os.PathLike)):
            name = os.path.basename(os.fsdecode(file))
            if name in names:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(file))

    def os_open(path, *args, **kwargs):
        check(path)
        return real_os_open(path, *args, **kwargs)

    def open_(file, *args, **kwargs):
        check(file)
        return real_open(file, *args, **kwargs)
    return os_open, open_


class BadInputTests:
    """Fuzzed damage, huge images, permission errors, a damaged index, and reader misuse."""

    #: Seeds run before the random ones, by format name (a plug-in may add its own).
    fuzz_regressions: ClassVar[dict[str, tuple[int, ...]]] = REGRESSIONS

    # ----------------------------------------------------------------------- fuzzing

    def test_fuzzed_damage_gives_typed_errors_or_correct_data(self, fmt, tmp_path):
        """Random flips, zeroed and garbled runs and truncations in every file, small ones
        included; each case read in a forked child: a DatasetError or the right samples."""
        seeds = [*self.fuzz_regressions.get(fmt.name, ()), *range(fuzz_cases())]
        results = _check_fuzz(fmt, seeds, tmp_path)
        assert any(o == "typed error" for _w, o, _d in results.values())

    @pytest.mark.slow
    def test_fuzzed_damage_many_seeds(self, fmt, tmp_path):
        """:data:`SLOW_FUZZ_CASES` more seeds (marked ``slow``: ``make test`` and CI deselect it
        with ``-m "not slow"``; ``pytest -m slow`` runs it)."""
        _check_fuzz(fmt, range(10_000, 10_000 + SLOW_FUZZ_CASES), tmp_path)

    def test_damaged_shared_index_is_a_dataset_error(self, fmt, dataset_of, tmp_path):
        """16 flipped bytes anywhere in ``index.npz`` (its zip headers too): DatasetError naming
        the path, never zipfile's NotImplementedError or another untyped error."""
        src = dataset_of(fmt)
        if not (src / "index.npz").is_file():
            pytest.skip(f"{fmt.id} keeps no index.npz")
        with fmt.open(src) as r:
            expected = list(r)
        raw = (src / "index.npz").read_bytes()
        rng = np.random.default_rng(11)
        starts = [len(raw) - 22 - 16, len(raw) - 200, 0, 30]  # end record, central directory, local header
        starts += rng.integers(0, len(raw) - 16, 12).tolist()
        typed = 0
        for k, at in enumerate(max(0, a) for a in starts):
            dst = tmp_path / f"case{k}"
            shutil.copytree(src, dst)
            data = bytearray(raw)
            for p in range(at, at + 16):
                data[p] ^= int(rng.integers(1, 256))
            (dst / "index.npz").write_bytes(bytes(data))
            try:
                fmt.open(dst).close()
            except DatasetError as err:
                assert str(err).startswith(f"{dst}: index file index.npz is damaged"), err
                typed += 1
            # Fields zipfile never reads (timestamps, attributes) may take flips: then the data is right.
            outcome = read_back(fmt, dst, expected)  # in this process: zipfile and numpy are pure Python
            assert outcome[0] in ("typed error", "correct data"), (at, outcome)
            shutil.rmtree(dst)
        assert typed >= len(starts) // 2, f"only {typed} of {len(starts)} damaged indexes refused"

    # ----------------------------------------------------------------------- huge images

    def test_images_over_the_declared_limit_are_refused_on_write(self, fmt, tmp_path, monkeypatch):
        """A format that declares ``max_image_pixels`` or ``max_image_side`` refuses an image over
        it, naming the key and the limit, and leaves nothing; an image at the limit reads back.

        Pillow's limit is lowered for the test (the declared limit must follow it), so no
        image of 179 M pixels is allocated.
        """
        import PIL.Image

        monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 600)
        px, side = fmt.max_image_pixels, fmt.max_image_side
        if px is None and side is None:
            pytest.skip(f"{fmt.id} declares no image size limit")
        dt, c = min(fmt.modes, key=lambda m: (m[0] != "uint8", m[1]))
        if side is not None:  # a 1-pixel-high strip: cheap even at dicom's 65535
            big, fits = (1, side + 1), (1, side)
        else:
            h = int(px ** 0.5)
            big, fits = (h + 1, h + 1), (px // h, h)
        shape = (lambda hw: hw + (c,) if c else hw)
        ok = Sample("at the limit", np.ones(shape(fits), dt))
        bad = Sample("one over", np.ones(shape(big), dt))
        if px is not None:
            assert px == 600, "max_image_pixels must follow PIL.Image.MAX_IMAGE_PIXELS"
        limit = str(px if px is not None and big[0] * big[1] > px else side)
        with pytest.raises(ValueError, match=re.escape(repr(bad.key))) as info:
            fmt.write([ok, bad], tmp_path / "ds")
        assert limit in str(info.value)
        assert not (tmp_path / "ds").exists() and leftovers(tmp_path, "ds") == []
        fmt.write([ok], tmp_path / "ds")
        with fmt.open(tmp_path / "ds") as r:
            assert r.verify() == []
            assert r[0].image.shape == ok.image.shape

    def test_a_real_size_huge_image_is_refused_before_it_is_encoded(self, fmt, tmp_path):
        """At Pillow's own limit (89 M pixels unless changed): refused by key before a byte is
        encoded; the zeros are never touched, so this costs no memory."""
        px = fmt.max_image_pixels
        if px is None or px > 10 ** 9:
            pytest.skip(f"{fmt.id} declares no max_image_pixels (or one too large to try)")
        dt, c = min(fmt.modes, key=lambda m: (m[0] != "uint8", m[1]))
        h = int(px ** 0.5) + 1
        huge = Sample("huge", np.zeros((h, h, c) if c else (h, h), dt))
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match=re.escape(f"image of key 'huge': {h}x{h} is {h * h} pixels, "
                                                       f"over the {px} pixels")):
            fmt.write([huge], tmp_path / "ds")
        assert time.perf_counter() - t0 < 2
        assert not (tmp_path / "ds").exists() and leftovers(tmp_path, "ds") == []

    def test_an_image_over_the_reader_limit_is_a_dataset_error(self, fmt, tmp_path, monkeypatch):
        """An image written under a higher limit, read under a lower one (Pillow's bomb check):
        every read and verify() give typed errors, never DecompressionBombError."""
        import PIL.Image

        if fmt.max_image_pixels is None:
            pytest.skip(f"{fmt.id} declares no max_image_pixels")
        dt, c = min(fmt.modes, key=lambda m: (m[0] != "uint8", m[1]))
        s = Sample("bomb", np.ones((40, 40, c) if c else (40, 40), dt))
        fmt.write([s], tmp_path / "ds")
        monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)  # 1600 > 2 x 100: an error, not a warning
        with fmt.open(tmp_path / "ds") as r:
            with pytest.raises(DatasetError, match="DecompressionBomb"):
                r[0]
            with pytest.raises(DatasetError):
                list(r)
            assert r.verify() == ["bomb"]
        monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)  # a warning: an error under -W error
        with fmt.open(tmp_path / "ds") as r, warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            with pytest.raises(DatasetError, match="DecompressionBombWarning"):
                r[0]

    # ----------------------------------------------------------------------- permissions

    def test_permission_denied_is_not_damage(self, fmt, dataset_of, monkeypatch):
        """EACCES on a dataset file is a PermissionError naming the file, or the data (where a C
        library opens it unseen), never a DatasetError calling the dataset damaged."""
        src = dataset_of(fmt)
        with fmt.open(src) as r:
            expected = list(r)
        for group in _file_groups(src):
            f = group[0]
            if f.name == MANIFEST:
                continue
            os_open, open_ = _denying({f.name})
            with monkeypatch.context() as m:
                m.setattr(os, "open", os_open)
                m.setattr(builtins, "open", open_)
                m.setattr(io, "open", open_)
                try:
                    with fmt.open(src) as r:
                        got = list(r) + [r[i] for i in range(len(r))]
                        bad = r.verify()
                except PermissionError as err:
                    assert f.name in str(err), f"{f.name}: {err}"
                    continue
                except DatasetError as err:
                    pytest.fail(f"{f.relative_to(src)} unreadable is reported as damage: {err}")
            assert bad == [] and len(got) == 2 * len(expected), f"{f.relative_to(src)}: {bad}"

    # ----------------------------------------------------------------------- misuse

    def test_closed_reader_says_so_on_every_path(self, fmt, dataset_of):
        """After close(): reads, scans, batches, keys, verify and an iterator made before
        close() all raise ValueError "reader is closed" naming the path."""
        path = dataset_of(fmt)
        r = fmt.open(path)
        early, started = iter(r), iter(r)
        first = next(started)
        assert first.key == r[0].key
        r.close()
        r.close()  # twice is fine
        for what, call in [("r[0]", lambda: r[0]), ("iter", lambda: list(r)), ("batch", lambda: r.read_batch([0])),
                           ("keys", r.keys), ("verify", r.verify), ("get", lambda: r.get(first.key)),
                           ("iterator made before close", lambda: next(early)),
                           ("iterator started before close", lambda: next(started))]:
            with pytest.raises(ValueError, match=re.escape(f"{path}: reader is closed")):
                call()
                pytest.fail(f"{what} after close() did not raise")

    def test_indices_must_be_integers(self, fmt, dataset_of):
        """Floats, bools and bool masks are a TypeError naming what was given; NumPy integers
        and integer arrays of any width work; uint64 past int64 is out of range, not wrapped."""
        with fmt.open(dataset_of(fmt)) as r:
            n = len(r)
            want = [s.key for s in r.read_batch([1, 0])]
            for bad, shown in [(1.7, "float"), (True, "bool"), (np.True_, "bool"), (np.float64(1), "float"),
                               (None, "NoneType")]:
                with pytest.raises(TypeError, match=shown):
                    r[bad]
            for bad, shown in [([1.7], "float64"), ([True, False], "bool mask"),
                               (np.ones(n, bool), "bool mask"), (np.array([1.0]), "float64"), ("01", "str")]:
                with pytest.raises(TypeError, match=shown):
                    r.read_batch(bad)
            assert r[np.int64(1)].key == r[np.uint8(1)].key == want[0]
            for arr in (np.array([1, 0]), np.array([1, 0], np.uint16), np.array([[1], [0]], np.int32),
                        np.array([1 - n, -n]), (1, 0), range(1, -1, -1)):
                assert [s.key for s in r.read_batch(arr)] == want, arr
            assert r.read_batch(np.array([], np.int64)) == [] and r.read_batch([]) == []
            with pytest.raises(IndexError, match="out of range"):
                r.read_batch(np.array([2 ** 64 - 1], np.uint64))
            with pytest.raises(IndexError, match="out of range"):
                r.read_batch([2 ** 70])
            with pytest.raises(IndexError, match="out of range"):
                r[2 ** 70]


def time_fuzz(names: Sequence[str] = (), cases: int = FUZZ_CASES) -> None:
    """Print outcome counts and seconds per format (``python -m storebench.formats.testing._badinput``)."""
    from .. import _registry

    for name, cls in _registry.available().items():
        if names and name not in names:
            continue
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            res = fuzz(cls(), range(cases), Path(d))
            outcomes = [o for _w, o, _d in res.values()]
            print(f"{name}: {time.perf_counter() - t0:.1f} s, " +
                  ", ".join(f"{o} {outcomes.count(o)}" for o in sorted(set(outcomes))))
            for seed, (what, o, detail) in res.items():
                if o not in ("typed error", "correct data"):
                    print(f"  seed {seed} ({what}): {o}: {detail}")


if __name__ == "__main__":
    import sys

    args = sys.argv[1:]
    count = int(args.pop(0)) if args and args[0].isdigit() else FUZZ_CASES
    time_fuzz(args, count)
    os._exit(0)
