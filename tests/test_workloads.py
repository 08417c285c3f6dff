"""The named workloads: registry, outputs, boxes, reproducibility, DataLoader glue, time split."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from storebench import fixtures, formats, workloads
from storebench.formats import Sample
from storebench.workloads import (
    WORKLOADS,
    RandomPatch,
    WorkloadDataset,
    clip_boxes,
    collate,
    get_workload,
    random_region,
    time_split,
)

pytest.importorskip("cv2", reason="the workloads need opencv-python-headless")


def _xray_with_boxes():
    i = next(i for i in range(50) if len(fixtures.make_sample("xray", i).boxes) >= 3)
    return fixtures.make_sample("xray", i)


# --------------------------------------------------------------------------- registry


def test_registry_names_and_errors(monkeypatch):
    assert set(WORKLOADS) == {"none", "detect-aug", "classify-aug", "ben-preprocess", "dicom-display",
                              "random-patch"}
    with pytest.raises(TypeError):
        WORKLOADS["x"] = "read-only"  # type: ignore[index]
    with pytest.raises(ValueError, match="unknown workload 'nope'; workloads: none, detect-aug"):
        get_workload("nope")
    with pytest.raises(TypeError):
        get_workload("classify-aug", colour=True)
    with pytest.raises(ValueError, match="only the last"):
        get_workload("classify-aug+ben-preprocess")
    with pytest.raises(TypeError, match="a chain takes only seed"):
        get_workload("ben-preprocess+classify-aug", size=3)
    real = workloads.importlib.util.find_spec
    monkeypatch.setattr(workloads.importlib.util, "find_spec",
                        lambda name, *a: None if name == "albumentations" else real(name, *a))
    with pytest.raises(ImportError, match=r"storebench\[aug\]"):
        get_workload("detect-aug")


def test_a_chain_runs_its_parts_in_order():
    chain = get_workload("ben-preprocess+classify-aug", seed=3)
    assert chain.name == "ben-preprocess+classify-aug" and chain.kind == "augment"
    s = fixtures.make_sample("fundus", 0)
    want = get_workload("classify-aug", seed=3, tensor=chain.parts[1].tensor)(
        get_workload("ben-preprocess")(s))
    np.testing.assert_array_equal(np.asarray(chain(s)["image"]), np.asarray(want["image"]))


# --------------------------------------------------------------------------- detect-aug


@st.composite
def detection_samples(draw, *, max_side: int = 96, max_boxes: int = 6):
    """A gray (uint8/uint16) or RGB image with boxes anywhere, edges and zero-size boxes included."""
    h, w = draw(st.integers(8, max_side)), draw(st.integers(8, max_side))
    dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    shape = draw(st.sampled_from([(h, w), (h, w, 1), (h, w, 3)])) if dtype == np.uint8 else (h, w)
    img = draw(hnp.arrays(dtype, shape, elements=st.integers(0, np.iinfo(dtype).max)))
    n = draw(st.integers(0, max_boxes))
    xs = draw(hnp.arrays(np.float32, (n, 2), elements=st.floats(0, w, width=32)))
    ys = draw(hnp.arrays(np.float32, (n, 2), elements=st.floats(0, h, width=32)))
    boxes = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1) if n else np.zeros((0, 4))
    labels = np.arange(n) + 100
    rads = draw(st.lists(st.sampled_from(["R1", "R2", "R3"]), min_size=n, max_size=n))
    meta = {"box_rad_ids": ",".join(rads)} if n and draw(st.booleans()) else {}
    return Sample("s", img, 1, boxes, labels, meta)


@given(detection_samples(), st.integers(0, 2**16))
def test_detect_aug_boxes_stay_inside_and_aligned(s, seed):
    out = get_workload("detect-aug", seed=seed, tensor=False)(s)
    img, boxes, labels = out["image"], out["boxes"], out["box_labels"]
    assert img.shape == (3, 224, 224) and img.dtype == np.float32
    assert 0 <= img.min() and img.max() <= 1
    assert boxes.dtype == np.float32 and boxes.shape == (len(labels), 4)
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 224).all() and (boxes[:, [1, 3]] <= 224).all()
    assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()
    # Labels are a sub-multiset of the chosen radiologist's labels.
    rads = s.meta.get("box_rad_ids")
    pool = s.box_labels if not rads else s.box_labels[np.array(rads.split(",")) == out["rad_id"]]
    assert not (set(labels.tolist()) - set(pool.tolist()))
    assert len(labels) <= len(pool)


@pytest.mark.parametrize("seed", range(12))
def test_detect_aug_keeps_labels_with_their_boxes(seed):
    """Three centred boxes of areas 1:4:16 keep their order of size, so labels that moved would show."""
    img = np.random.default_rng(seed).integers(0, 256, (300, 400), dtype=np.uint8)
    boxes = [[190, 140, 210, 160], [140, 130, 180, 170], [160, 110, 240, 190]]  # sides 20, 40, 80
    s = Sample("k", img, 0, boxes, [5, 6, 7])
    out = get_workload("detect-aug", seed=seed, tensor=False)(s)
    b, lb = out["boxes"], out["box_labels"]
    assert len(lb) == 3
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    assert lb[np.argsort(area)].tolist() == [5, 6, 7]


def test_detect_aug_picks_one_radiologist_per_sample():
    s = _xray_with_boxes()
    n = len(s.boxes)
    rads = ["R1"] * (n // 2) + ["R2"] * (n - n // 2)
    s = Sample(s.key, s.image, s.label, s.boxes, np.arange(n), {"box_rad_ids": ",".join(rads)})
    seen = set()
    for seed in range(10):
        out = get_workload("detect-aug", seed=seed, tensor=False)(s)
        mine = {i for i, r in enumerate(rads) if r == out["rad_id"]}
        assert set(out["box_labels"].tolist()) <= mine
        seen.add(out["rad_id"])
    assert seen == {"R1", "R2"}
    bad = Sample("k", s.image, 0, s.boxes, s.box_labels, {"box_rad_ids": "R1"})
    with pytest.raises(ValueError, match="radiologists"):
        get_workload("detect-aug")(bad)


def test_augmentations_are_reproducible_and_seeded():
    s = fixtures.make_sample("imagenet", 1)
    for name in ("detect-aug", "classify-aug"):
        a = [get_workload(name, seed=1, tensor=False)(s)["image"] for _ in range(2)]
        wl = get_workload(name, seed=1, tensor=False)
        b = [wl(s)["image"] for _ in range(3)]
        np.testing.assert_array_equal(a[0], a[1])
        np.testing.assert_array_equal(a[0], b[0])
        assert not np.array_equal(b[0], b[1]), f"{name}: every call draws anew"
        assert not np.array_equal(a[0], get_workload(name, seed=2, tensor=False)(s)["image"])
        clone = pickle.loads(pickle.dumps(wl))  # what a spawn worker gets: options, not state
        np.testing.assert_array_equal(clone(s)["image"], a[0])


def test_outputs_are_tensors_when_torch_is_installed():
    torch = pytest.importorskip("torch")
    s = _xray_with_boxes()
    out = get_workload("detect-aug")(s)
    assert isinstance(out["image"], torch.Tensor) and isinstance(out["boxes"], torch.Tensor)
    assert out["box_labels"].dtype == torch.int64
    assert isinstance(get_workload("classify-aug")(s)["image"], torch.Tensor)


# --------------------------------------------------------------------------- classify-aug


def test_classify_aug_resizes_flips_rotates_and_normalises():
    wl = get_workload("classify-aug", size=64, degrees=0, tensor=False)
    img = np.zeros((40, 50, 3), np.uint8)
    img[:, :25] = 255  # left half white
    outs = [wl(Sample("k", img, 2))["image"] for _ in range(16)]
    for out in outs:
        assert out.shape == (3, 64, 64) and out.dtype == np.float32
        white = (1 - np.float32(workloads.IMAGENET_MEAN)) / np.float32(workloads.IMAGENET_STD)
        black = -np.float32(workloads.IMAGENET_MEAN) / np.float32(workloads.IMAGENET_STD)
        left, right = out[:, 32, 2], out[:, 32, 61]
        assert {tuple(np.round(left, 4)), tuple(np.round(right, 4))} == {tuple(np.round(white, 4)),
                                                                        tuple(np.round(black, 4))}
    flipped = [bool(o[0, 32, 2] < 0) for o in outs]
    assert any(flipped) and not all(flipped)
    gray16 = Sample("g", np.full((30, 30), 4000, np.uint16), 0)
    assert get_workload("classify-aug", tensor=False)(gray16)["image"].shape == (3, 224, 224)


# --------------------------------------------------------------------------- ben-preprocess


def _ben_reference(image, tol=7, size=256, sigma=10):
    """The APTOS notebook's crop_image_from_gray + load_ben_color, verbatim in spirit."""
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    mask = gray > tol
    if image[:, :, 0][np.ix_(mask.any(1), mask.any(0))].shape[0] == 0:
        img = image
    else:
        img = np.stack([image[:, :, c][np.ix_(mask.any(1), mask.any(0))] for c in range(3)], axis=-1)
    img = cv2.resize(img, (size, size))
    return cv2.addWeighted(img, 4, cv2.GaussianBlur(img, (0, 0), sigma), -4, 128)


@pytest.mark.parametrize("i", range(3))
def test_ben_preprocess_matches_the_notebook_on_fundus_photos(i):
    s = fixtures.make_sample("fundus", i)
    out = get_workload("ben-preprocess")(s)
    assert out.image.shape == (256, 256, 3) and out.image.dtype == np.uint8
    np.testing.assert_array_equal(out.image, _ben_reference(s.image))
    assert out.key == s.key and out.label == s.label
    assert out.meta == {**s.meta, "preprocess": "ben-preprocess"}


def test_ben_preprocess_crops_the_dark_border_and_moves_boxes():
    img = np.full((100, 200, 3), 7, np.uint8)  # at the tolerance: still border
    img[20:60, 50:150] = 200
    s = Sample("k", img, 1, [[50, 20, 100, 40], [0, 0, 10, 10]], [1, 2])
    out = get_workload("ben-preprocess")(s)
    assert (out.image == 128).all()  # a flat picture has no local contrast left
    np.testing.assert_array_equal(out.boxes, [[0, 0, 128, 128]])
    np.testing.assert_array_equal(out.box_labels, [1])  # the box on the border is gone
    dark = get_workload("ben-preprocess")(Sample("d", np.full((10, 10), 3, np.uint8)))
    assert dark.image.shape == (256, 256)


# --------------------------------------------------------------------------- dicom-display


def test_dicom_display_equals_display_transform_on_real_files(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    import shutil

    from storebench.fixtures.dicom import bundled_files
    from storebench.fixtures.folder import from_folder
    from storebench.formats.dicom import display_transform

    files = bundled_files(["CT_small.dcm", "MR_small.dcm", "examples_overlay.dcm"])
    for f in files:
        (tmp_path / "x").mkdir(exist_ok=True)
        shutil.copy(f, tmp_path / "x" / f.name)
    wl = get_workload("dicom-display")
    for f, s in zip(sorted(files, key=lambda p: p.name), from_folder(tmp_path)):
        out = wl(s)
        np.testing.assert_array_equal(out.image, display_transform(pydicom.dcmread(f), size=600))
        assert min(out.image.shape) == 600 and out.image.dtype == np.uint8
        assert "WindowCenter" not in out.meta and "RescaleIntercept" not in out.meta


def test_dicom_display_inverts_monochrome1_and_scales_boxes():
    pytest.importorskip("pydicom")
    s = _xray_with_boxes()
    wl, full = get_workload("dicom-display"), get_workload("dicom-display", size=None)
    m1 = Sample(s.key, s.image, s.label, s.boxes, s.box_labels,
                {**s.meta, "PhotometricInterpretation": "MONOCHROME1"})
    inv = full(m1)
    assert np.abs(inv.image.astype(int) + full(s).image.astype(int) - 255).max() <= 1  # truncation
    assert inv.meta["PhotometricInterpretation"] == "MONOCHROME2" and inv.image.shape == s.image.shape
    m2 = wl(s)
    h, w = s.image.shape
    assert min(m2.image.shape) == 600
    k = np.float32([m2.image.shape[1] / w, m2.image.shape[0] / h] * 2)
    np.testing.assert_allclose(m2.boxes, s.boxes * k, rtol=1e-5)
    np.testing.assert_array_equal(m2.box_labels, s.box_labels)
    rgb = wl(fixtures.make_sample("cifar", 0))
    assert rgb.image.shape == (600, 600, 3)


def test_preprocessing_once_at_write_time(tmp_path):
    fmt = formats.get("npy")
    fmt.write(fixtures.make_dataset("fundus", 3), tmp_path / "raw")
    wl = get_workload("ben-preprocess")
    with fmt.open(tmp_path / "raw") as r:
        fmt.write(map(wl, r), tmp_path / "pre")
        with fmt.open(tmp_path / "pre") as pre:
            assert [p.image.shape for p in pre] == [(256, 256, 3)] * 3
            assert all(np.array_equal(wl(a).image, b.image) for a, b in zip(r, pre))


# --------------------------------------------------------------------------- DataLoader glue


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("wl") / "npy"
    formats.get("npy").write(fixtures.make_dataset("imagenet", 6), path)
    return path


@pytest.mark.parametrize("fetch", workloads.FETCHES)
def test_fetch_strategies_give_the_same_samples(small, fetch):
    with formats.open_dataset(small) as r:
        ds = WorkloadDataset(r, fetch=fetch)
        assert len(ds) == 6
        assert [s.key for s in ds.__getitems__([4, 0, 2])] == [r[4].key, r[0].key, r[2].key]
        assert ds[1] == r[1]
    with pytest.raises(ValueError, match="fetch"):
        WorkloadDataset(r, fetch="later")


class _Counted(str):
    """A name that counts the comparisons made against it (all of them share the count)."""

    seen = [0]

    def __eq__(self, other):
        self.seen[0] += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_lookup_reads_the_position_of_the_name_found_among_all_names(small, monkeypatch):
    """The APTOS notebook's ``np.where(names == name)[0][0]`` per item: every name compared, the names
    read once per process; the same items as ``item``."""
    with formats.open_dataset(small) as r:
        item, lookup = WorkloadDataset(r, fetch="item"), WorkloadDataset(r, fetch="lookup")
        assert [lookup[i] for i in range(6)] == [item[i] for i in range(6)]
        assert lookup.lookup(4) == 4
        calls, keys = [], r.keys()
        monkeypatch.setattr(r, "keys", lambda: calls.append(1) or keys[:3] + keys[1:2] + keys[4:])
        fresh = WorkloadDataset(r, fetch="lookup")  # name 3 is name 1: the first match is read
        assert [s.key for s in fresh.__getitems__([0, 3, 5])] == [keys[0], keys[1], keys[5]]
        assert fresh[3] == r[1] and calls == [1]  # the names are read once (per process)
        names = np.empty(6, object)
        names[:] = [_Counted(k) for k in r._keys()]
        fresh._names = (os.getpid(), names)
        _Counted.seen[0] = 0
        assert fresh[3] == r[3] and _Counted.seen[0] == 6  # O(N): every name compared for one item
        assert pickle.loads(pickle.dumps(fresh))._names is None  # workers read the names themselves


def test_collate_stacks_equal_shapes_and_lists_the_rest(small):
    with formats.open_dataset(small) as r:
        batch = collate([r[i] for i in range(3)])  # imagenet sizes differ
        assert isinstance(batch["image"], list) and batch["key"] == [r[i].key for i in range(3)]
        if any(len(r[i].boxes) for i in range(3)):  # then every image gets its (maybe empty) boxes
            assert [tuple(b.shape) for b in batch["boxes"]] == [(len(r[i].boxes), 4) for i in range(3)]
            assert [len(b) for b in batch["box_labels"]] == [len(r[i].boxes) for i in range(3)]
        mixed = collate([r[0], Sample("k", r[0].image, 1)])
        assert [len(b) for b in mixed.get("boxes", [[], []])][1] == 0
        wl = get_workload("classify-aug", size=32)
        batch = collate([wl(r[i]) for i in range(3)])
        assert tuple(batch["image"].shape) == (3, 3, 32, 32)


def _storages(tensors) -> set:
    return {t.untyped_storage().data_ptr() for t in tensors}


def test_collate_puts_ragged_images_and_boxes_in_one_buffer_each(small):
    torch = pytest.importorskip("torch")
    with formats.open_dataset(small) as r:
        samples = [r[i] for i in range(4)]
        batch = collate(samples)
        assert len({s.image.shape for s in samples}) > 1
        assert len(_storages(batch["image"])) == 1
        for t, s in zip(batch["image"], samples):
            assert tuple(t.shape) == s.image.shape and t.dtype == torch.uint8
            np.testing.assert_array_equal(t.numpy(), s.image)
        assert any(len(s.boxes) for s in samples) and len(_storages(batch["boxes"])) == 1
        for t, s in zip(batch["boxes"], samples):
            np.testing.assert_array_equal(t.numpy(), s.boxes)
        batch["image"][0].view(-1)[:] = 0  # the batch owns its memory: the reader's image is intact
        assert r[0] == samples[0] and r[0].image.any()


def test_ragged_batches_reach_the_main_process_as_one_shared_buffer(small):
    torch = pytest.importorskip("torch")
    with formats.open_dataset(small) as r:
        dl = torch.utils.data.DataLoader(WorkloadDataset(r), batch_size=3, collate_fn=collate,
                                         num_workers=1, multiprocessing_context="fork")
        batches = list(dl)
        assert [k for b in batches for k in b["key"]] == list(r.keys())
        for b in batches:
            assert len(_storages(b["image"])) == 1 and b["image"][0].is_shared()
            for t, k in zip(b["image"], b["key"]):
                np.testing.assert_array_equal(t.numpy(), r.get(k).image)


def test_dataloader_workers_are_seeded_and_reproducible(small):
    torch = pytest.importorskip("torch")

    def epoch():
        with formats.open_dataset(small) as r:
            dl = torch.utils.data.DataLoader(
                WorkloadDataset(r, get_workload("classify-aug", size=16, seed=5)), batch_size=2,
                shuffle=True, num_workers=2, collate_fn=collate, multiprocessing_context="fork",
                generator=torch.Generator().manual_seed(0))
            return {k: img for b in dl for k, img in zip(b["key"], b["image"])}

    a, b = epoch(), epoch()
    assert sorted(a) == sorted(b) and len(a) == 6
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_time_split_adds_up(small):
    with formats.open_dataset(small) as r:
        split = time_split(r, get_workload("classify-aug", size=32), range(6))
    assert split["split_samples"] == 6 and split["split_cache"] == "warm"
    assert all(split[f"split_{p}_us"] >= 0 for p in ("read", "decode", "transform"))
    assert split["split_read_us"] + split["split_decode_us"] == pytest.approx(split["split_get_us"], abs=0.02)
    assert split["split_dominant"] in ("read", "decode", "transform")
    with pytest.raises(ValueError, match="no indices"):
        time_split(r, None, [])


# --------------------------------------------------------------------------- random patches


def test_boxes_are_shifted_clipped_to_the_patch_and_empty_ones_dropped():
    boxes = np.float32([[10, 20, 50, 60],    # partly inside: clipped
                        [0, 0, 5, 5],        # left of and above the patch: dropped
                        [30, 30, 40, 40],    # inside: shifted only
                        [100, 25, 120, 35],  # right of it: dropped
                        [15, 10, 25, 90]])   # through it top to bottom: clipped on y
    region = (slice(25, 75), slice(12, 62))  # rows 25:75 (y), cols 12:62 (x): a 50x50 patch at x=12, y=25
    got, labels = clip_boxes(boxes, np.arange(5), region)
    np.testing.assert_array_equal(got, np.float32([[0, 0, 38, 35], [18, 5, 28, 15], [3, 0, 13, 50]]))
    np.testing.assert_array_equal(labels, [0, 2, 4])
    assert got.dtype == np.float32 and labels.dtype == np.int64
    empty, none = clip_boxes(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), region)
    assert empty.shape == (0, 4) and none.shape == (0,)
    # A box touching the patch only along an edge has no area left: dropped.
    assert len(clip_boxes(np.float32([[0, 0, 12, 30]]), [1], region)[0]) == 0


def test_volume_boxes_are_clipped_in_x_y_and_z():
    boxes = np.float32([[2, 3, 4, 20, 30, 40],   # x 2..20, y 3..30, z 4..40
                        [0, 0, 0, 10, 10, 1],    # ends at z=1, before the patch's z=5: dropped
                        [12, 12, 12, 14, 14, 14]])
    region = (slice(5, 21), slice(10, 26), slice(8, 24))  # z 5:21, y 10:26, x 8:24 (16^3)
    got, labels = clip_boxes(boxes, [7, 8, 9], region)
    np.testing.assert_array_equal(got, np.float32([[0, 0, 0, 12, 16, 16], [4, 2, 7, 6, 4, 9]]))
    np.testing.assert_array_equal(labels, [7, 9])


@given(st.lists(st.integers(1, 300), min_size=2, max_size=3), st.integers(1, 400), st.integers(0, 2**32 - 1))
def test_random_regions_stay_inside_the_image(sides, patch, seed):
    region = random_region(sides, [patch] * len(sides), np.random.default_rng(seed))
    assert len(region) == len(sides)
    for sl, n in zip(region, sides):
        assert 0 <= sl.start < sl.stop <= n and sl.stop - sl.start == min(patch, n)


@pytest.fixture(scope="module")
def patchy(tmp_path_factory):
    """A 2-D dataset (xray-like, uint16 with boxes) and a volume dataset with 6-column boxes."""
    root = tmp_path_factory.mktemp("patch")
    rng = np.random.default_rng(0)
    images = [Sample(f"img{i}", rng.integers(0, 4096, (300 + 7 * i, 260), np.uint16), i % 2,
                     np.float32([[10, 10, 200, 250], [150, 100, 160, 120]]), [3, 4]) for i in range(5)]
    images.append(Sample("small", rng.integers(0, 4096, (40, 50), np.uint16), 1))  # smaller than a patch
    volumes = [Sample(f"vol{i}", rng.integers(-1024, 3071, (30 + i, 40, 44, 1)).astype(np.int16), i,
                      np.float32([[5, 5, 5, 30, 30, 20]]), [1]) for i in range(4)]
    formats.get("npy").write(images, root / "img")
    formats.get("npy").write(volumes, root / "vol")
    return root / "img", root / "vol"


def _check_item(item, s: Sample, wl: RandomPatch):
    """The item is the patch of ``s`` at its origin (channel-first float, zero-padded), boxes clipped."""
    origin = tuple(int(v) for v in np.asarray(item["origin"]))
    sides = s.image.shape[:3] if s.image.ndim == 4 else s.image.shape[:2]
    patch = wl.patch_for(sides)
    region = tuple(slice(o, o + min(p, n)) for o, p, n in zip(reversed(origin), patch, sides))
    assert all(0 <= sl.start < sl.stop <= n for sl, n in zip(region, sides))
    img = np.asarray(item["image"])
    pixels = s.image[region]
    pixels = pixels if pixels.ndim == len(sides) + 1 else pixels[..., None]
    assert img.dtype == np.float32 and img.shape == (pixels.shape[-1], *patch)
    inner = img[(slice(None), *(slice(0, k) for k in pixels.shape[:-1]))]
    np.testing.assert_array_equal(inner, np.moveaxis(pixels, -1, 0).astype(np.float32))
    assert img.sum() == inner.sum(), "outside the image the patch is zero padding"
    boxes, labels = clip_boxes(s.boxes, s.box_labels, region)
    np.testing.assert_array_equal(np.asarray(item["boxes"]), boxes)
    np.testing.assert_array_equal(np.asarray(item["box_labels"]), labels)
    assert item["label"] == s.label and item["key"] == s.key


@pytest.mark.parametrize("which", [0, 1], ids=["2d", "volume"])
def test_random_patches_read_the_region_with_label_and_clipped_boxes(patchy, which):
    wl = get_workload("random-patch", size=128, volume_size=16, seed=3, tensor=False)
    with formats.open_dataset(patchy[which]) as r:
        data = WorkloadDataset(r, wl)
        items = data.__getitems__(list(range(len(r))))
        for i, item in enumerate(items):
            _check_item(item, r[i], wl)
            np.testing.assert_array_equal(np.asarray(data[i]["image"]), np.asarray(item["image"]))
        assert {tuple(np.asarray(it["origin"])) for it in items} != {(0,) * (2 + which)}
        batch = collate(items)
        assert tuple(batch["image"].shape) == (len(r), 1, *((16,) * 3 if which else (128, 128)))
        assert tuple(batch["origin"].shape) == (len(r), 2 + which)
        # A reader that cannot tell a shape without reading: the whole sample is read, same patch.
        r._image_shape = lambda i: None
        for i, item in enumerate(data.__getitems__(list(range(len(r))))):
            np.testing.assert_array_equal(np.asarray(item["image"]), np.asarray(items[i]["image"]))


def test_random_patches_are_seeded_per_item(patchy):
    def origins(seed, order):
        wl = get_workload("random-patch", size=64, seed=seed, tensor=False)
        with formats.open_dataset(patchy[0]) as r:
            return {i: tuple(np.asarray(wl.read(r, i)["origin"])) for i in order}

    a = origins(5, range(6))
    assert a == origins(5, [5, 3, 1, 0, 2, 4]), "an item's patch depends on the seed and the item only"
    assert a != origins(6, range(6))
    wl = RandomPatch(size=64, seed=5, tensor=False)
    assert pickle.loads(pickle.dumps(wl)).options == wl.options


def test_random_patch_options_are_checked():
    assert RandomPatch(size=(32, 48), volume_size=8).volume_size == (8, 8, 8)
    for bad in ({"size": 0}, {"size": (1, 2, 3)}, {"volume_size": "64"}, {"size": True}):
        with pytest.raises(ValueError, match="size"):
            RandomPatch(**bad)


def test_random_patches_through_dataloader_workers_are_reproducible(patchy):
    torch = pytest.importorskip("torch")

    def epoch():
        with formats.open_dataset(patchy[1]) as r:
            dl = torch.utils.data.DataLoader(
                WorkloadDataset(r, get_workload("random-patch", volume_size=16, seed=1)), batch_size=2,
                shuffle=True, num_workers=2, collate_fn=collate, multiprocessing_context="fork",
                generator=torch.Generator().manual_seed(0))
            return {k: (img, o) for b in dl for k, img, o in zip(b["key"], b["image"], b["origin"])}

    a, b = epoch(), epoch()
    assert sorted(a) == ["vol0", "vol1", "vol2", "vol3"]
    assert all(torch.equal(a[k][0], b[k][0]) and torch.equal(a[k][1], b[k][1]) for k in a)
    assert all(tuple(v[0].shape) == (1, 16, 16, 16) for v in a.values())


def test_time_split_of_random_patches_times_the_region_reads(patchy):
    with formats.open_dataset(patchy[1]) as r:
        split = time_split(r, get_workload("random-patch", volume_size=16, tensor=False), range(4))
    assert split["split_samples"] == 4
    assert split["split_read_us"] + split["split_decode_us"] == pytest.approx(split["split_get_us"], abs=0.02)
