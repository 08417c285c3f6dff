"""The fixtures package: preset datasets, checksums and hypothesis strategies."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator, Sized
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

from storebench import fixtures
from storebench.fixtures import (
    dataset_checksum,
    make_dataset,
    make_sample,
    sample_checksum,
)
from storebench.fixtures import strategies as fst
from storebench.formats import ALL_MODES, Sample

ROOT = Path(__file__).resolve().parents[1]
# Enough samples to see every property, few enough to stay fast (xray is ~20 ms each).
SMALL_N = {"cifar": 300, "imagenet": 24, "fundus": 6, "xray": 3}


@cache
def _generated(preset: str) -> tuple[Sample, ...]:
    return tuple(make_dataset(preset, SMALL_N[preset], seed=7))


def _check_boxes(s: Sample, max_n: int, n_classes: int | None) -> None:
    h, w = s.image.shape[:2]
    assert s.boxes.dtype == np.float32 and s.boxes.shape == (len(s.box_labels), 4)
    assert len(s.boxes) <= max_n
    if len(s.boxes):
        b = s.boxes
        assert np.isfinite(b).all() and (b >= 0).all()
        assert (b[:, 0] <= b[:, 2]).all() and (b[:, 1] <= b[:, 3]).all()
        assert (b[:, [0, 2]] <= w).all() and (b[:, [1, 3]] <= h).all()
        if n_classes is not None:
            assert ((0 <= s.box_labels) & (s.box_labels < n_classes)).all()


# --------------------------------------------------------------------------- API


def test_presets_is_a_read_only_mapping_of_descriptions():
    assert set(fixtures.PRESETS) == {"cifar", "imagenet", "fundus", "xray"}
    assert all(isinstance(d, str) and d for d in fixtures.PRESETS.values())
    with pytest.raises(TypeError):
        fixtures.PRESETS["mine"] = "no"  # type: ignore[index]


def test_unknown_preset_raises_at_call_listing_presets():
    with pytest.raises(ValueError, match="unknown preset 'mnist'") as err:
        make_dataset("mnist", 10)  # no next(): the error must not wait for iteration
    assert all(name in str(err.value) for name in fixtures.PRESETS)
    with pytest.raises(ValueError, match="presets"):
        make_sample("mnist", 0)


@pytest.mark.parametrize("kwargs", [dict(n=-1), dict(n=1.5), dict(n=True), dict(n=3, seed=-2)],
                         ids=["negative-n", "float-n", "bool-n", "negative-seed"])
def test_bad_counts_and_seeds_raise(kwargs):
    with pytest.raises(ValueError):
        make_dataset("cifar", **kwargs)


def test_make_dataset_streams_lazily():
    it = make_dataset("cifar", 10**9)
    assert isinstance(it, Iterator) and not isinstance(it, (Sized, list, tuple))
    next(make_dataset("cifar", 1))  # load the source photos outside the timing
    t = time.perf_counter()
    first = next(it)
    assert time.perf_counter() - t < 0.5
    assert first.key == "cifar/0000000"
    assert list(make_dataset("cifar", 0)) == []


def test_generation_memory_does_not_grow_with_n():
    next(make_dataset("cifar", 1))
    tracemalloc.start()
    try:
        count = sum(1 for _ in make_dataset("cifar", 1500))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 1500
    assert peak < 1_000_000  # a list of 1500 would hold > 4.6 MB of pixels alone


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("preset", ["cifar", "imagenet", "fundus", "xray"])
def test_deterministic_per_preset_n_seed(preset):
    n = {"cifar": 40, "imagenet": 4, "fundus": 2, "xray": 2}[preset]
    a = dataset_checksum(make_dataset(preset, n, seed=3))
    assert a == dataset_checksum(make_dataset(preset, n, seed=3))
    assert a != dataset_checksum(make_dataset(preset, n, seed=4))
    assert a != dataset_checksum(make_dataset(preset, n + 1, seed=3))


def test_sample_depends_only_on_preset_seed_index():
    long = list(make_dataset("imagenet", 6, seed=5))
    assert long[:3] == list(make_dataset("imagenet", 3, seed=5))  # a prefix is the smaller set
    assert make_sample("imagenet", 4, seed=5) == long[4]
    assert [s.key for s in long] == [f"imagenet/{i:07d}" for i in range(6)]
    checksums = {sample_checksum(s) for s in long}
    assert len(checksums) == 6  # not one image repeated


def test_same_checksum_in_a_fresh_process():
    # Catches seeding by hash() or by process state.
    code = "import fixtures; print(fixtures.dataset_checksum(fixtures.make_dataset('cifar', 20, 9)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == dataset_checksum(make_dataset("cifar", 20, seed=9))


# --------------------------------------------------------------------------- preset properties


def test_cifar_properties():
    ss = _generated("cifar")
    for s in ss:
        assert s.image.dtype == np.uint8 and s.image.shape == (32, 32, 3)
        assert len(s.boxes) == 0 and s.meta == {}
    labels = {s.label for s in ss}
    assert labels == set(range(10))


def test_imagenet_properties():
    ss = _generated("imagenet")
    for s in ss:
        h, w, c = s.image.shape
        assert s.image.dtype == np.uint8 and c == 3
        assert 160 <= min(h, w) <= 512
        assert 3 / 4 - 0.01 <= w / h <= 4 / 3 + 0.01
        assert 0 <= s.label < 1000
        _check_boxes(s, 5, 1000)
    assert len({s.image.shape for s in ss}) > len(ss) // 2  # sizes vary
    assert 0 in {len(s.boxes) for s in ss} and max(len(s.boxes) for s in ss) >= 3


def test_fundus_properties():
    ss = _generated("fundus")
    for s in ss:
        h, w, c = s.image.shape
        assert s.image.dtype == np.uint8 and c == 3 and h == w and 384 <= h <= 768
        assert 0 <= s.label <= 4 and len(s.boxes) == 0
        assert set(s.meta) == {"eye"} and s.meta["eye"] in ("left", "right")
    assert {s.meta["eye"] for s in ss} == {"left", "right"}


def test_xray_properties():
    ss = _generated("xray")
    for s in ss:
        img = s.image
        assert img.dtype == np.uint16 and img.ndim == 2
        assert all(1000 <= side <= 2000 for side in img.shape)
        assert img.max() <= 4095
        assert len(np.unique(img)) > 1000  # real 12-bit content, not stretched 8-bit
        _check_boxes(s, 10, 14)
        assert s.label == int(len(s.boxes) > 0)
        assert s.meta["view"] == "PA" and re.fullmatch(r"R([1-9]|1[0-7])", s.meta["rad_id"])


@pytest.mark.parametrize("preset", ["cifar", "imagenet", "fundus", "xray"])
def test_images_are_photographs_not_noise(preset):
    # Uniform noise has neighbour correlation ~0 and mean |step| ~1/3 of its range.
    corr, step = [], []
    for s in _generated(preset):
        a = s.image.astype(np.float64)
        left, right = a[:, :-1].ravel(), a[:, 1:].ravel()
        if left.std() > 0 and right.std() > 0:
            corr.append(np.corrcoef(left, right)[0, 1])
        step.append(np.abs(right - left).mean() / max(np.ptp(a), 1.0))
    assert np.median(corr) > 0.8
    assert np.median(step) < 0.1
    assert np.mean(np.asarray(corr) > 0.5) > 0.9


# --------------------------------------------------------------------------- checksums


def _base(**kw) -> Sample:
    args = dict(key="k/1", image=np.arange(24, dtype=np.uint8).reshape(2, 4, 3), label=3,
                boxes=[[0, 0, 1, 1.5]], box_labels=[7], meta={"a": 1, "b": "x"})
    args.update(kw)
    return Sample(**args)


def test_checksum_known_answer():
    # Pinned: datasets cached on disk are keyed by this encoding.
    assert sample_checksum(_base()) == (
        "61c6870675aea607720ff1e3aac682f45fabd18535e72bab591c32fc03c36750")
    assert dataset_checksum([]) == dataset_checksum(iter([]))


def test_checksum_sees_every_field():
    base = _base()
    pixel = base.image.copy()
    pixel[1, 2, 0] += 1
    variants = {
        "pixel": _base(image=pixel),
        "key": _base(key="k/2"),
        "label": _base(label=4),
        "box": _base(boxes=[[0, 0, 1, 1.25]]),
        "box label": _base(box_labels=[8]),
        "no boxes": _base(boxes=None, box_labels=None),
        "meta value": _base(meta={"a": 2, "b": "x"}),
        "meta type": _base(meta={"a": True, "b": "x"}),
        "meta float": _base(meta={"a": 1.0, "b": "x"}),
        "meta key": _base(meta={"a": 1}),
        "shape": _base(image=base.image.reshape(4, 2, 3)),
        "channels": _base(image=base.image.reshape(2, 3, 4)),
        "dtype": _base(image=base.image.astype(np.uint16)),
        "same bytes": _base(image=base.image.reshape(-1).view(np.uint16).reshape(2, 2, 3)),
    }
    seen = {sample_checksum(base)}
    for name, s in variants.items():
        c = sample_checksum(s)
        assert c not in seen, name
        seen.add(c)
    a, b = base, variants["key"]
    assert dataset_checksum([a, b]) != dataset_checksum([b, a])  # order counts
    assert dataset_checksum([a]) != dataset_checksum([a, a])  # count counts


def test_checksum_ignores_layout_and_meta_order():
    base = _base()
    img = base.image
    same = [
        _base(image=np.asfortranarray(img)),
        _base(image=np.ascontiguousarray(img[::-1])[::-1]),
        _base(meta={"b": "x", "a": 1}),
        _base(boxes=np.array([[0, 0, 1, 1.5]], np.float64), box_labels=np.array([7], np.int32)),
    ]
    for s in same:
        assert sample_checksum(s) == sample_checksum(base)


def test_dataset_checksum_streams_a_generator():
    gen = make_dataset("cifar", 5, seed=1)
    assert dataset_checksum(gen) == dataset_checksum(list(make_dataset("cifar", 5, seed=1)))
    assert next(gen, None) is None  # consumed once, not listed first


# --------------------------------------------------------------------------- strategies

_MODE_SETS = [ALL_MODES, frozenset({("uint8", 3)}), frozenset({("uint16", 0), ("uint8", 1)})]


@pytest.mark.parametrize("modes", _MODE_SETS, ids=["all", "rgb8", "gray16-or-gray8x1"])
def test_sample_lists_are_valid_and_honor_modes(modes):
    @settings(max_examples=15, deadline=None, database=None)
    @given(fst.sample_lists(modes=modes, max_size=5))
    def check(samples):
        assert len({s.key for s in samples}) == len(samples)
        for s in samples:
            assert isinstance(s, Sample) and s.mode in modes and s.key
            assert max(s.image.shape[:2]) <= 24
            _check_boxes(s, 8, None)
            json.dumps(s.meta)  # JSON-able
            assert sample_checksum(s) == sample_checksum(Sample(
                s.key, s.image.copy(), s.label, s.boxes, s.box_labels, s.meta))

    check()


def test_strategies_reach_the_corners():
    seen: set[str] = set()

    @settings(max_examples=150, deadline=None, database=None, derandomize=True)
    @given(fst.samples(max_boxes=3))
    def collect(s):
        img, h, w = s.image, s.image.shape[0], s.image.shape[1]
        seen.update(k for k, hit in {
            "uint8": img.dtype == np.uint8, "uint16": img.dtype == np.uint16,
            "2-D": img.ndim == 2, "1 channel": s.mode[1] == 1, "4 channels": s.mode[1] == 4,
            "1x1": (h, w) == (1, 1), "odd": h % 2 == 1 and w % 2 == 1 and h != w,
            "no boxes": len(s.boxes) == 0, "max boxes": len(s.boxes) == 3,
            "edge box": bool(len(s.boxes)) and bool((s.boxes[:, 2:] == (w, h)).all(axis=1).any()),
            "slash key": "/" in s.key, "space key": " " in s.key,
            "unicode key": any(ord(ch) > 127 for ch in s.key),
            "fortran": img.ndim > 1 and not img.flags.c_contiguous and img.flags.f_contiguous,
            "negative strides": any(st < 0 for st in img.strides),
            "read-only": not img.flags.writeable,
            "label -1": s.label == -1,
        }.items() if hit)
        seen.update(f"meta {type(v).__name__}" for v in s.meta.values())

    collect()
    wanted = {"uint8", "uint16", "2-D", "1 channel", "4 channels",
              "1x1", "odd", "no boxes", "max boxes", "edge box", "slash key", "space key",
              "unicode key", "fortran", "negative strides", "read-only", "label -1",
              "meta NoneType", "meta bool", "meta int", "meta float", "meta str"}
    assert wanted <= seen, wanted - seen


def test_images_strategy_options():
    @settings(max_examples=30, deadline=None, database=None)
    @given(fst.images(dtypes=("uint16",), channels=(0, 4), max_side=3, views=False))
    def check(img):
        assert img.dtype == np.uint16 and img.flags.c_contiguous and img.flags.writeable
        assert img.ndim == 2 or img.shape[2] == 4
        assert max(img.shape[:2]) <= 3

    check()


@pytest.mark.parametrize("call", [
    lambda: fst.samples(modes=set()),
    lambda: fst.samples(modes={("uint32", 3)}),
    lambda: fst.images(channels=(5,)),
    lambda: fst.images(dtypes=("float32",)),
    lambda: fst.images(max_side=0),
], ids=["no-modes", "bad-mode", "bad-channels", "bad-dtype", "bad-side"])
def test_strategy_options_are_checked_eagerly(call):
    with pytest.raises(ValueError):
        call()
