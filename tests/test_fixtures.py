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
from hypothesis import strategies as st

from storebench import fixtures
from storebench.fixtures import (
    dataset_checksum,
    make_dataset,
    make_sample,
    preset_id,
    sample_checksum,
)
from storebench.fixtures import presets as presets_module
from storebench.fixtures import strategies as fst
from storebench.formats import ALL_MODES, DTYPE_NAMES, Sample

pytest.importorskip("pydicom", reason="the ct and mri presets are built from pydicom's bundled slices")

ROOT = Path(__file__).resolve().parents[1]
# The volume presets at small sizes (the defaults are 256-320 px x 64-96 slices, 128-160 x 64-96).
CT = "ct[side=48-64,slices=8-12]"
MRI = "mri[side=40-56,slices=12-16]"
PRESET_NAMES = ("cifar", "imagenet", "fundus", "xray", "ct", "mri")
SMALL = {"cifar": "cifar", "imagenet": "imagenet", "fundus": "fundus", "xray": "xray[side=256-512]", "ct": CT,
         "mri": MRI}
# Enough samples to see every property, few enough to stay fast (xray at its default
# 1500-3000 px is ~0.1 s each; the small volumes are ~10 ms).
SMALL_N = {"cifar": 300, "imagenet": 24, "fundus": 6, "xray": 3, CT: 12, MRI: 8}


@cache
def _generated(preset: str) -> tuple[Sample, ...]:
    return tuple(make_dataset(preset, SMALL_N[preset], seed=7))


def _check_boxes(s: Sample, max_n: int, n_classes: int | None) -> None:
    volume = s.image.ndim == 4
    k = 3 if volume else 2
    sizes = s.image.shape[2::-1] if volume else s.image.shape[1::-1]  # (w, h[, d])
    assert s.boxes.dtype == np.float32 and s.boxes.shape == (len(s.box_labels), 2 * k)
    assert len(s.boxes) <= max_n
    if len(s.boxes):
        b = s.boxes
        assert np.isfinite(b).all() and (b >= 0).all()
        assert (b[:, :k] <= b[:, k:]).all()
        assert (b[:, :k] <= sizes).all() and (b[:, k:] <= sizes).all()
        if n_classes is not None:
            assert ((0 <= s.box_labels) & (s.box_labels < n_classes)).all()


# --------------------------------------------------------------------------- API


def test_presets_is_a_read_only_mapping_of_descriptions():
    assert tuple(fixtures.PRESETS) == PRESET_NAMES
    assert all(isinstance(d, str) and d for d in fixtures.PRESETS.values())
    with pytest.raises(TypeError):
        fixtures.PRESETS["mine"] = "no"


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


def test_preset_id_is_canonical():
    assert preset_id("ct") == "ct" == preset_id("ct", side=(256, 320), slices="64-96")
    assert preset_id("ct[slices=300,side=512-512]") == "ct[side=512,slices=300]"
    assert preset_id("ct", slices=300, side=512) == "ct[side=512,slices=300]"
    assert preset_id("xray[side=1500 - 2000]") == "xray[side=1500-2000]"
    assert preset_id("mri", side=[240, 240], slices=np.int64(155)) == "mri[side=240,slices=155]"
    assert preset_id("cifar") == "cifar" == preset_id("cifar[]")
    canonical = preset_id(CT)
    assert preset_id(canonical) == canonical  # a fixed point: caches can key on it


def test_options_in_the_name_equal_keyword_options():
    a = make_sample("ct[side=40,slices=6]", 3, seed=2)
    b = make_sample("ct", 3, seed=2, side=40, slices=6)
    c = make_sample("ct", 3, seed=2, side=(40, 40), slices="6-6")
    assert a == b == c and a.image.shape == (6, 40, 40, 1)
    assert a.key == "ct/0000003"  # the name without its options


@pytest.mark.parametrize(("spec", "options", "match"), [
    ("ct[sides=64]", {}, r"unknown option sides \(it takes options: side, slices\)"),
    ("ct", {"depth": 3}, r"unknown option depth"),
    ("cifar[side=32]", {}, r"'cifar': unknown option side \(it takes no options\)"),
    ("ct[side=64]", {"side": 64}, r"option side given twice"),
    ("ct[side=64,side=80]", {}, r"option side given twice"),
    ("ct[side]", {}, r"expected option=value"),
    ("ct[side=big]", {}, r"option side: expected N or LO-HI"),
    ("ct", {"side": 64.0}, r"option side: expected an int"),
    ("ct", {"side": True}, r"option side: expected an int"),
    ("ct", {"side": (64, 80, 96)}, r"option side: expected an int"),
    ("ct", {"side": (96, 64)}, r"need 16 <= lo <= hi <= 1024, got 96-64"),
    ("ct", {"slices": 2}, r"need 4 <= lo"),
    ("xray", {"side": 10_000}, r"<= 8192"),
    ("ct[side=64", {}, r"unknown preset 'ct\[side=64'"),
    ("CT", {}, r"unknown preset 'CT'"),
], ids=lambda v: v if isinstance(v, str) and "(" not in v else None)
def test_bad_options_raise_at_the_call(spec, options, match):
    for call in (lambda: make_dataset(spec, 10**9, **options), lambda: make_sample(spec, 0, **options),
                 lambda: preset_id(spec, **options)):
        with pytest.raises(ValueError, match=match):
            call()  # make_dataset: no next(), the error must not wait for iteration


@pytest.mark.parametrize("preset", ["xray", "ct", "mri"])
def test_options_change_only_the_sizes(preset):
    sizes = {"xray": [dict(side=64), dict(side=(96, 160))],
             "ct": [dict(side=32, slices=4), dict(side=(48, 64), slices=(6, 9))],
             "mri": [dict(side=32, slices=8), dict(side=(40, 48), slices=(10, 12))]}[preset]
    for i in range(4):
        small, large = (make_sample(preset, i, seed=1, **kw) for kw in sizes)
        meta_small, meta_large = dict(small.meta), dict(large.meta)
        if preset == "ct":  # the same field of view, in more pixels
            fov = [m.pop("pixel_spacing") * img.shape[2] for m, img in ((meta_small, small.image),
                                                                         (meta_large, large.image))]
            assert fov[0] == pytest.approx(fov[1], abs=0.01) and 320 <= fov[0] <= 420
        assert (small.label, meta_small, small.box_labels.tolist()) == \
            (large.label, meta_large, large.box_labels.tolist())
        if preset == "xray":
            assert small.image.shape == (64, 64)
            assert 96 <= min(large.image.shape) and max(large.image.shape) <= 160
        else:
            d, h, w = large.image.shape[:3]
            assert small.image.shape[:3] == (sizes[0]["slices"], 32, 32)
            assert h == w and sizes[1]["side"][0] <= h <= sizes[1]["side"][1]
            assert sizes[1]["slices"][0] <= d <= sizes[1]["slices"][1]


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


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_deterministic_per_preset_n_seed(preset):
    spec = SMALL[preset]
    n = {"cifar": 40, "imagenet": 4, "fundus": 2, "xray": 2, "ct": 3, "mri": 3}[preset]
    a = dataset_checksum(make_dataset(spec, n, seed=3))
    assert a == dataset_checksum(make_dataset(spec, n, seed=3))
    assert a != dataset_checksum(make_dataset(spec, n, seed=4))
    assert a != dataset_checksum(make_dataset(spec, n + 1, seed=3))


@pytest.mark.parametrize("preset", ["imagenet", CT, MRI])
def test_sample_depends_only_on_preset_seed_index(preset):
    long = list(make_dataset(preset, 6, seed=5))
    assert long[:3] == list(make_dataset(preset, 3, seed=5))  # a prefix is the smaller set
    assert make_sample(preset, 4, seed=5) == long[4]
    name = preset.partition("[")[0]
    assert [s.key for s in long] == [f"{name}/{i:07d}" for i in range(6)]
    checksums = {sample_checksum(s) for s in long}
    assert len(checksums) == 6  # not one image repeated


def test_same_checksum_in_a_fresh_process():
    # Catches seeding by hash() or by process state.
    code = ("import fixtures; print(fixtures.dataset_checksum(fixtures.make_dataset('cifar', 20, 9)), "
            f"fixtures.dataset_checksum(fixtures.make_dataset({CT!r}, 2, 9)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split() == [dataset_checksum(make_dataset("cifar", 20, seed=9)),
                                  dataset_checksum(make_dataset(CT, 2, seed=9))]


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
        assert all(1500 <= side <= 3000 for side in img.shape)  # VinBigData's radiographs
        assert img.max() <= 4095
        assert len(np.unique(img)) > 1000  # real 12-bit content, not stretched 8-bit
        _check_boxes(s, 10, 14)
        assert s.label == int(len(s.boxes) > 0)
        assert s.meta["view"] == "PA" and re.fullmatch(r"R([1-9]|1[0-7])", s.meta["rad_id"])
    assert len({s.image.shape for s in ss}) == len(ss)


# dataset_checksum(make_dataset(spec, 3)) before fundus took side and xray took bits: the defaults
# must not change (PRESET_VERSION and cached datasets key on them).
_BEFORE_OPTIONS = {
    "fundus": "53fccbe4b963e8ea67e0df8508de01489268c06b6f986cc453f106a52f26fc3c",
    "xray": "6640b4d52e50ba599bf0a104616bdbabdff17327ade92983e53cef5bae58d4cf",
    "xray[side=256-512]": "6f7b1bf001ee5d1d4712c10c39ae065b2e3af133d0a400a4afc6ef24bf009d8e",
}


@pytest.mark.parametrize("spec", _BEFORE_OPTIONS)
def test_new_options_leave_the_defaults_unchanged(spec):
    assert dataset_checksum(make_dataset(spec, 3)) == _BEFORE_OPTIONS[spec]
    assert presets_module.PRESET_VERSION == 2


def test_fundus_fixed_side_and_xray_bits():
    assert preset_id("fundus[side=256-256]") == "fundus[side=256]" == preset_id("fundus", side=256)
    assert preset_id("fundus", side=(384, 768)) == "fundus"
    assert preset_id("xray[side=600-750,bits=8]") == "xray[side=600-750,bits=8]"
    assert preset_id("xray", bits=12) == "xray"
    for i in range(3):  # the APTOS notebook's fixed shape; the rest of the sample as at the default size
        small, default = make_sample("fundus[side=256]", i), make_sample("fundus", i)
        assert small.image.shape == (256, 256, 3) and small.image.dtype == np.uint8
        assert (small.label, small.meta) == (default.label, default.meta)
    spread = {make_sample("fundus[side=100-900]", i).image.shape[0] for i in range(6)}
    assert len(spread) > 1 and all(100 <= h <= 900 for h in spread)
    for bits, dtype in ((8, np.uint8), (10, np.uint16), (16, np.uint16)):
        eight = make_sample("xray[side=64-96]", 1, bits=bits)
        twelve = make_sample("xray[side=64-96]", 1)
        assert eight.image.dtype == dtype and eight.image.shape == twelve.image.shape
        assert int(eight.image.max()) <= 2 ** bits - 1 and int(eight.image.max()) > 2 ** (bits - 1)
        assert np.corrcoef(eight.image.ravel(), twelve.image.ravel())[0, 1] > 0.999  # the same image
        assert (eight.label, eight.meta, eight.boxes.tolist()) == (twelve.label, twelve.meta, twelve.boxes.tolist())
    with pytest.raises(ValueError, match="option bits: takes one value"):
        make_dataset("xray[bits=8-12]", 1)
    with pytest.raises(ValueError, match=r"option bits: need 8 <= lo"):
        make_dataset("xray", 1, bits=7)


def _fractions(hu: np.ndarray, ranges: dict[str, tuple[int, int]]) -> dict[str, float]:
    return {k: float(((hu >= lo) & (hu <= hi)).mean()) for k, (lo, hi) in ranges.items()}


def test_ct_properties():
    ss = _generated(CT)
    tissue = {"air": (-1024, -1000), "lung": (-990, -700), "fat": (-130, -70), "soft": (0, 80),
              "bone": (700, 3071)}
    seen = []
    for s in ss:
        img = s.image
        d, h, w, c = img.shape
        assert img.dtype == np.int16 and c == 1 and h == w and 48 <= h <= 64 and 8 <= d <= 12
        hu = img[..., 0]
        assert -1024 <= hu.min() and hu.max() <= 3071
        border = np.concatenate([hu[:, 0], hu[:, -1], hu[:, :, 0], hu[:, :, -1]], axis=None)
        assert border.min() == -1024 and border.max() <= -1000  # air all round, -1024 outside the FOV
        assert (hu[:, [0, 0, -1, -1], [0, -1, 0, -1]] == -1024).all()
        assert (hu[:, h // 2, w // 2] > -1000).all()  # the body, on every slice
        fr = _fractions(hu, tissue)
        assert 0.3 < fr["air"] < 0.8 and all(fr[k] > 0.002 for k in tissue), fr
        seen.append(fr)
        _check_boxes(s, 3, 2)
        assert s.label == int(len(s.boxes) > 0)
        assert set(s.meta) == {"modality", "slice_thickness", "pixel_spacing"} and s.meta["modality"] == "CT"
    assert np.median([fr["lung"] for fr in seen]) > 0.03
    assert np.median([fr["bone"] for fr in seen]) > 0.003
    assert 0 in {len(s.boxes) for s in ss} and max(len(s.boxes) for s in ss) >= 2
    assert max(s.image.max() for s in ss) > 1200  # cortical bone brighter than CT_small's 1167


def test_ct_lesions_are_in_their_boxes():
    centres = 0
    for s in make_dataset("ct[side=64,slices=32]", 8, seed=2):
        d, h, w = s.image.shape[:3]
        for b in s.boxes:
            if b[2] == 0 or b[5] == d:
                continue  # clipped at the volume's ends: its centre is not the lesion's
            x, y, z = ((b[:3] + b[3:]) / 2).astype(int)
            assert 19 <= s.image[z, y, x, 0] <= 81  # soft tissue, 20-80 HU, also in a lung
            centres += 1
    assert centres >= 3


def test_ct_full_sizes_are_an_option():
    s = make_sample("ct", 0, side=512, slices=4)
    assert s.image.shape == (4, 512, 512, 1) and s.image.dtype == np.int16


def test_mri_properties():
    ss = _generated(MRI)
    grades = set()
    for s in ss:
        img = s.image
        d, h, w, c = img.shape
        assert img.dtype == np.float32 and c == 4 and h == w and 40 <= h <= 56 and 12 <= d <= 16
        assert np.isfinite(img).all()
        background = (img == 0).all(axis=-1)
        brain = ~background
        assert background[:, [0, 0, -1, -1], [0, -1, 0, -1]].all()  # corners of every slice
        assert not np.signbit(img[background]).any()  # exactly +0.0, not -0.0
        assert 0.1 < brain.mean() < 0.6
        assert (brain == (img != 0).all(axis=-1)).all()  # one brain mask for the four channels
        voxels = img[brain]
        np.testing.assert_allclose(voxels.mean(axis=0), 0, atol=1e-3)  # z-scored over the brain
        np.testing.assert_allclose(voxels.std(axis=0), 1, atol=1e-3)
        corr = np.corrcoef(voxels.T)
        assert np.abs(corr[np.triu_indices(4, 1)]).max() < 0.99  # four different contrasts
        grades.add(s.label)
        _check_boxes(s, 3, 3)
        assert s.box_labels.tolist() == list(range(2 + s.label))  # whole tumour, core, enhancing
        wt, tc = s.boxes[0], s.boxes[1]
        assert (wt[:3] <= tc[:3]).all() and (tc[3:] <= wt[3:]).all()  # the core inside the oedema
        x, y, z = ((tc[:3] + tc[3:]) / 2).astype(int)
        if brain[z, y, x]:
            assert img[z, y, x, 3] > 0.5  # FLAIR: the tumour is bright
        if s.label:
            lo, hi = np.floor(tc[:3]).astype(int), np.ceil(tc[3:]).astype(int)
            assert img[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0], 1].max() > 2  # T1ce: the enhancing rim
        assert s.meta == {"modality": "MR", "channels": "T1,T1ce,T2,FLAIR"}
    assert grades == {0, 1}


def test_volume_presets_need_pydicom(monkeypatch):
    presets_module._dicom_slice.cache_clear()
    monkeypatch.setitem(sys.modules, "pydicom", None)
    try:
        for preset in ("ct", "mri"):
            with pytest.raises(ImportError, match=r"pip install 'storebench\[dicom\]'"):
                make_sample(preset, 0, side=16, slices=4)
    finally:
        presets_module._dicom_slice.cache_clear()


@pytest.mark.parametrize("preset", ["ct[side=96,slices=16]", "mri[side=48,slices=12]"])
def test_volumes_stream_one_at_a_time(preset):
    one = make_sample(preset, 0).image.nbytes

    def peak(n: int) -> int:
        tracemalloc.start()
        try:
            assert sum(1 for _ in make_dataset(preset, n)) == n
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    few, many = peak(2), peak(6)
    assert many < few + one // 2  # the 4 more volumes held would add 4x
    assert few < 3 * one + 2_000_000  # two volumes (the last and the next) and working arrays


def _neighbours(a: np.ndarray, axis: int, foreground) -> tuple[np.ndarray, np.ndarray]:
    n = a.shape[axis]
    left, right = np.take(a, range(n - 1), axis), np.take(a, range(1, n), axis)
    keep = foreground(left) & foreground(right)
    return left[keep], right[keep]


@pytest.mark.parametrize("preset", ["cifar", "imagenet", "fundus", "xray", CT, MRI])
def test_images_are_photographs_not_noise(preset):
    # Uniform noise has neighbour correlation ~0 and mean |step| ~1/3 of its range.
    # Volumes: neighbours along x and along z, inside the body (CT) or the brain (MRI), each channel.
    corr, step = [], []
    for s in _generated(preset):
        a = s.image.astype(np.float64)
        if a.ndim == 4:
            fg = (lambda v: v > -990) if s.image.dtype == np.int16 else (lambda v: v != 0)
            pairs = [_neighbours(a[..., c], axis, fg) for c in range(a.shape[3]) for axis in (2, 0)]
        else:
            pairs = [(a[:, :-1].ravel(), a[:, 1:].ravel())]
        for left, right in pairs:
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


def test_checksum_sees_dtypes_float_bits_and_volumes():
    zeros = np.zeros((2, 3), np.float32)
    nan = np.full((2, 3), np.nan, np.float32)
    other_nan = nan.view(np.uint32) | np.uint32(1)
    same_bits = np.zeros((2, 3), np.int16)
    variants = {
        "+0.0": _base(image=zeros, boxes=None, box_labels=None),
        "-0.0": _base(image=-zeros, boxes=None, box_labels=None),
        "nan": _base(image=nan, boxes=None, box_labels=None),
        "nan payload": _base(image=other_nan.view(np.float32), boxes=None, box_labels=None),
        "int16": _base(image=same_bits, boxes=None, box_labels=None),
        "uint16": _base(image=same_bits.view(np.uint16), boxes=None, box_labels=None),
        "int16 of float bytes": _base(image=zeros.view(np.int16), boxes=None, box_labels=None),
        "volume": _base(image=zeros.reshape(1, 2, 3, 1), boxes=None, box_labels=None),
        "volume box": _base(image=zeros.reshape(1, 2, 3, 1), boxes=[[0, 0, 0, 1, 1, 1]], box_labels=[7]),
    }
    checksums = {name: sample_checksum(s) for name, s in variants.items()}
    assert len(set(checksums.values())) == len(variants), checksums
    assert sample_checksum(variants["nan"]) == sample_checksum(_base(image=nan.copy(), boxes=None,
                                                                     box_labels=None))
    for s in _generated(CT)[:2] + _generated(MRI)[:2]:  # the preset dtypes hash, layout-independent
        copy = Sample(s.key, np.asfortranarray(s.image), s.label, s.boxes, s.box_labels, s.meta)
        assert sample_checksum(copy) == sample_checksum(s)


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

_MODE_SETS = [ALL_MODES, frozenset({("uint8", 3)}), frozenset({("uint16", 0), ("uint8", 1)}),
              frozenset({("int16", 1, "volume"), ("float32", 4, "volume")})]


@pytest.mark.parametrize("modes", _MODE_SETS, ids=["all", "rgb8", "gray16-or-gray8x1", "ct-or-mri"])
def test_sample_lists_are_valid_and_honor_modes(modes):
    @settings(max_examples=15, deadline=None, database=None)
    @given(fst.sample_lists(modes=modes, max_size=5))
    def check(samples):
        assert len({s.key for s in samples}) == len(samples)
        assert len({s.is_volume for s in samples}) <= 1  # a dataset holds images or volumes
        for s in samples:
            assert isinstance(s, Sample) and s.mode in modes and s.key
            assert max(s.image.shape[:3] if s.is_volume else s.image.shape[:2]) <= (8 if s.is_volume else 24)
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
        img = s.image
        h, w = img.shape[1:3] if s.is_volume else img.shape[:2]
        far = (w, h, img.shape[0]) if s.is_volume else (w, h)
        k = len(far)
        bits = img.view(np.uint32) if img.dtype == np.float32 else None
        seen.update(k for k, hit in {
            **{dt: img.dtype == np.dtype(dt) for dt in DTYPE_NAMES},
            "nan": bits is not None and bool(np.isnan(img).any()),
            "-0.0": bits is not None and bool((bits == 0x80000000).any()),
            "volume": s.is_volume, "1-slice volume": s.is_volume and img.shape[0] == 1,
            "2-D": img.ndim == 2, "1 channel": s.mode[1] == 1, "4 channels": s.mode[1] == 4,
            "1x1": (h, w) == (1, 1), "odd": h % 2 == 1 and w % 2 == 1 and h != w,
            "no boxes": len(s.boxes) == 0, "max boxes": len(s.boxes) == 3,
            "edge box": bool(len(s.boxes)) and bool((s.boxes[:, k:] == far).all(axis=1).any()),
            "slash key": "/" in s.key, "space key": " " in s.key,
            "unicode key": any(ord(ch) > 127 for ch in s.key),
            "fortran": img.ndim > 1 and not img.flags.c_contiguous and img.flags.f_contiguous,
            "negative strides": any(st < 0 for st in img.strides),
            "read-only": not img.flags.writeable,
            "label -1": s.label == -1,
        }.items() if hit)
        seen.update(f"meta {type(v).__name__}" for v in s.meta.values())

    collect()
    # "-0.0" is left out: drawn as uint32 bits, 0x80000000 is too rare to count on in 150 examples.
    wanted = {*DTYPE_NAMES, "nan", "volume", "1-slice volume", "2-D", "1 channel", "4 channels",
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


def test_volumes_and_regions_strategies():
    @settings(max_examples=40, deadline=None, database=None)
    @given(fst.volumes(dtypes=("int16",), channels=(1,), max_side=5).flatmap(
        lambda v: st.tuples(st.just(v), fst.regions(v.shape))))
    def check(args):
        vol, region = args
        assert vol.dtype == np.int16 and vol.ndim == 4 and vol.shape[3] == 1 and max(vol.shape[:3]) <= 5
        assert len(region) == 3 and all(isinstance(r, slice) and r.step is None for r in region)
        part = vol[region]
        assert part.ndim == 4 and min(part.shape) >= 1  # never empty

    check()


@pytest.mark.parametrize("call", [
    lambda: fst.samples(modes=set()),
    lambda: fst.samples(modes={("uint32", 3)}),
    lambda: fst.images(channels=(5,)),
    lambda: fst.images(dtypes=("float64",)),
    lambda: fst.images(max_side=0),
    lambda: fst.volumes(channels=(0,)),
], ids=["no-modes", "bad-mode", "bad-channels", "bad-dtype", "bad-side", "volume-without-channels"])
def test_strategy_options_are_checked_eagerly(call):
    with pytest.raises(ValueError):
        call()


def test_crop_box_stays_inside_the_photo_when_its_side_rounds_past_the_width():
    """A crop as wide as the photo: ``h * aspect`` rounds to 100.00000000000001 for a 100-px width
    (imagenet's samples 1000-2000 of seed 0 met it: numpy's uniform refused a negative range)."""
    from PIL import Image

    from storebench.fixtures.presets import _crop_box

    im = Image.new("RGB", (100, 400))
    x0, y0, x1, y1 = _crop_box(np.random.default_rng(0), im, 100 / 92.38095238095238, (1.0, 1.0))
    assert 0 <= x0 <= x1 <= 100 and 0 <= y0 <= y1 <= 400
