"""Bring-your-own-data readers: ImageFolder trees with annotations, CIFAR-10 pickles, bench presets."""
from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from storebench import fixtures, formats
from storebench.fixtures.folder import (
    from_cifar10,
    from_folder,
    is_user_preset,
    user_fingerprint,
    user_samples,
)


def _save(path, arr, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return arr


@pytest.fixture
def tree(tmp_path):
    """``cat/`` (two PNGs, one nested), ``dog/`` (a JPEG, a 16-bit and a palette PNG), junk beside."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    want = {
        "cat/a.png": _save(root / "cat/a.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)),
        "cat/sub/b.PNG": _save(root / "cat/sub/b.PNG", rng.integers(0, 256, (12, 8), dtype=np.uint8)),
        "dog/c.png": _save(root / "dog/c.png", rng.integers(0, 65536, (9, 7), dtype=np.uint16)),
        "dog/e.png": _save(root / "dog/e.png", rng.integers(0, 256, (10, 10, 4), dtype=np.uint8)),
    }
    _save(root / "dog/d.jpg", np.full((16, 16, 3), 120, np.uint8), quality=95)
    pal = Image.fromarray(rng.integers(0, 4, (6, 5), dtype=np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    pal.save(root / "dog/f.png")
    want["dog/f.png"] = np.asarray(pal.convert("RGB"))
    (root / "dog/notes.txt").write_text("not an image")
    (root / "dog/.hidden.png").write_bytes(b"")
    (root / "README.md").write_text("ignored: files beside the class folders")
    return root, want


def test_image_folder_layout_labels_keys_and_pixels(tree):
    root, want = tree
    got = list(from_folder(root))
    assert [s.key for s in got] == ["cat/a.png", "cat/sub/b.PNG", "dog/c.png", "dog/d.jpg", "dog/e.png",
                                    "dog/f.png"]
    assert [s.label for s in got] == [0, 0, 1, 1, 1, 1]
    by_key = {s.key: s for s in got}
    for key, arr in want.items():
        assert by_key[key].image.dtype == arr.dtype and np.array_equal(by_key[key].image, arr), key
    assert by_key["dog/d.jpg"].image.shape == (16, 16, 3)
    assert abs(int(by_key["dog/d.jpg"].image.mean()) - 120) <= 2
    assert all(s.meta["class"] == s.key.split("/")[0] for s in got)
    assert all(len(s.boxes) == 0 for s in got)


def test_float_tiffs_become_float32_samples(tmp_path):
    """A 32-bit float image (normalised intensities, PIL mode F) is a float32 Sample, values kept."""
    from PIL import Image

    arr = np.array([[0.5, -1.25], [3.0e-3, 2.0]], np.float32)
    (tmp_path / "cls").mkdir()
    Image.fromarray(arr, mode="F").save(tmp_path / "cls" / "x.tif")
    (s,) = list(from_folder(tmp_path))
    assert s.image.dtype == np.float32 and s.image.tobytes() == arr.tobytes()


def test_folder_streams_and_refuses_early(tmp_path, tree):
    root, _ = tree
    it = from_folder(root)
    assert iter(it) is it
    with pytest.raises(FileNotFoundError):
        from_folder(tmp_path / "missing")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        from_folder(tmp_path / "empty")
    with pytest.raises(NotADirectoryError):
        from_folder(root / "cat" / "a.png")


def test_folder_writes_to_a_format_and_reads_back(tmp_path, tree):
    root, _ = tree
    fmt = formats.get("npy")
    fmt.write(from_folder(root), tmp_path / "ds")
    with fmt.open(tmp_path / "ds") as r:
        assert fixtures.dataset_checksum(r) == fixtures.dataset_checksum(from_folder(root))


def test_coco_annotations(tree):
    root, _ = tree
    coco = {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "dog/c.png"},
                   {"id": 3, "file_name": "elsewhere.png"}],
        "annotations": [
            {"image_id": 1, "bbox": [2, 3, 10, 5], "category_id": 7, "rad_id": "R1"},
            {"image_id": 1, "bbox": [25, 10, 10, 20], "category_id": 3, "rad_id": "R2"},  # clipped
            {"image_id": 2, "bbox": [0, 0, 7, 9], "category_id": 1},
            {"image_id": 3, "bbox": [0, 0, 1, 1], "category_id": 1},  # not in the folder: ignored
        ],
        "categories": [{"id": 7, "name": "x"}],
    }
    (root / "annotations.json").write_text(json.dumps(coco))
    got = {s.key: s for s in from_folder(root)}
    a = got["cat/a.png"]
    np.testing.assert_array_equal(a.boxes, [[2, 3, 12, 8], [25, 10, 30, 20]])
    np.testing.assert_array_equal(a.box_labels, [7, 3])
    assert a.meta["box_rad_ids"] == "R1,R2"
    np.testing.assert_array_equal(got["dog/c.png"].boxes, [[0, 0, 7, 9]])
    assert "box_rad_ids" not in got["dog/c.png"].meta
    assert len(got["dog/e.png"].boxes) == 0
    assert all(len(s.boxes) == 0 for s in from_folder(root, annotations=None))


def _vinbig_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"])
        w.writerows(rows)


def test_vinbigdata_csv_keeps_each_radiologist(tree, tmp_path):
    root, _ = tree
    ann = tmp_path / "train.csv"
    _vinbig_csv(ann, [
        ["a", "Aortic enlargement", 0, "R8", 1, 2, 5, 6],
        ["a", "Cardiomegaly", 3, "R9", 3, 3, 9, 9],
        ["a", "Aortic enlargement", 0, "R8", 10, 10, 12, 14],
        ["c", "No finding", 14, "R1", "", "", "", ""],
        ["b", "Nodule/Mass", 8, "R10", 0.5, 0.5, 100, 100],
    ])
    got = {s.key: s for s in from_folder(root, annotations=ann)}
    a = got["cat/a.png"]
    assert a.meta["box_rad_ids"] == "R8,R9,R8"
    np.testing.assert_array_equal(a.box_labels, [0, 3, 0])
    assert len(got["dog/c.png"].boxes) == 0
    np.testing.assert_array_equal(got["cat/sub/b.PNG"].boxes, [[0.5, 0.5, 8, 12]])  # clipped to 8x12
    from storebench.workloads import radiologist_boxes

    seen = set()
    for seed in range(20):
        boxes, labels, rad = radiologist_boxes(a, np.random.default_rng(seed))
        seen.add(rad)
        keep = np.array(a.meta["box_rad_ids"].split(",")) == rad
        np.testing.assert_array_equal(boxes, a.boxes[keep])
        np.testing.assert_array_equal(labels, a.box_labels[keep])
    assert seen == {"R8", "R9"}


def test_csv_without_box_columns_is_refused(tree, tmp_path):
    root, _ = tree
    bad = tmp_path / "bad.csv"
    bad.write_text("image,label\na.png,1\n")
    with pytest.raises(ValueError, match="box columns"):
        from_folder(root, annotations=bad)


def test_dicom_files_carry_the_tags_dicom_display_needs(tmp_path):
    pytest.importorskip("pydicom")
    from storebench.fixtures.dicom import bundled_files

    root = tmp_path / "dcm"
    for f, cls in zip(bundled_files(["CT_small.dcm", "MR_small.dcm"]), ["ct", "mr"]):
        (root / cls).mkdir(parents=True)
        shutil.copy(f, root / cls / f.name)
    ct, mr = from_folder(root)
    assert ct.key == "ct/CT_small.dcm" and ct.label == 0 and ct.meta["Modality"] == "CT"
    assert ct.meta["RescaleIntercept"] == -1024.0 and ct.meta["PixelRepresentation"] == 1
    assert mr.meta["WindowWidth"] == 1600.0 and mr.meta["WindowCenter"] == 600.0


# --------------------------------------------------------------------------- CIFAR-10


def _cifar_dir(root, n=4, batches=("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                   "data_batch_5", "test_batch")):
    """Batches shaped like the real ones (bytes keys, R/G/B planes), pickled as Python 2 did."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    images = {}
    for b in batches:
        imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        images[b] = imgs
        d = {b"batch_label": b"fake", b"labels": [int(x) for x in rng.integers(10, size=n)],
             b"data": imgs.transpose(0, 3, 1, 2).reshape(n, 3072),
             b"filenames": [f"img_{b}_{i}.png".encode() for i in range(n)]}
        (root / b).write_bytes(pickle.dumps(d, protocol=2))
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_cases_per_batch": n}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return images


def test_cifar10_batches(tmp_path):
    images = _cifar_dir(tmp_path / "cifar-10-batches-py")
    train = list(from_cifar10(tmp_path))  # the parent folder works too
    assert len(train) == 20 and train[0].key == "data_batch_1/00000" and train[-1].key == "data_batch_5/00003"
    np.testing.assert_array_equal(train[5].image, images["data_batch_2"][1])
    assert train[5].meta == {"filename": "img_data_batch_2_1.png", "class": f"class{train[5].label}"}
    test = list(from_cifar10(tmp_path / "cifar-10-batches-py", split="test"))
    assert [s.key for s in test] == [f"test_batch/{i:05d}" for i in range(4)]
    assert len(list(from_cifar10(tmp_path, split="all"))) == 24
    with pytest.raises(ValueError, match="split"):
        from_cifar10(tmp_path, split="val")


def test_cifar10_from_the_tar_gz(tmp_path):
    _cifar_dir(tmp_path / "cifar-10-batches-py")
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    a = fixtures.dataset_checksum(from_cifar10(tgz, split="all"))
    assert a == fixtures.dataset_checksum(from_cifar10(tmp_path, split="all"))


def test_cifar10_old_numpy_pickles_load_without_warnings(tmp_path):
    _cifar_dir(tmp_path, n=2, batches=("test_batch",))
    f = tmp_path / "test_batch"
    old = f.read_bytes().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert old != f.read_bytes()
    f.write_bytes(old)  # what NumPy 1 (and the real 2009 files) name
    assert len(list(from_cifar10(tmp_path, split="test"))) == 2


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.remove, (self.path,))


def test_cifar10_refuses_pickles_that_run_code(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("still here")
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(str(victim))}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="posix.remove|os.remove|nt.remove"):
        next(from_cifar10(tmp_path))
    assert victim.read_text() == "still here"


# --------------------------------------------------------------------------- bench presets


def test_user_presets_for_the_bench(tree, tmp_path):
    root, _ = tree
    spec = f"folder:{root}"
    assert is_user_preset(spec) and is_user_preset("cifar10:/x")
    assert not is_user_preset("cifar") and not is_user_preset("folder:") and not is_user_preset("x:/y")
    assert [s.key for s in user_samples(spec, 3)] == ["cat/a.png", "cat/sub/b.PNG", "dog/c.png"]
    with pytest.raises(ValueError, match="6 images, fewer than n=7"):
        user_samples(spec, 7)
    before = user_fingerprint(spec)
    assert before == user_fingerprint(spec)
    _save(root / "cat/new.png", np.zeros((3, 3), np.uint8))
    assert user_fingerprint(spec) != before
    _cifar_dir(tmp_path / "c", n=2)
    assert len(list(user_samples(f"cifar10:{tmp_path / 'c'}", 11))) == 11


def test_the_bench_caches_a_user_folder_by_its_files(tree, tmp_path):
    from bench import _data
    from bench._options import parse_presets

    root, _ = tree
    spec = f"folder:{root}"
    assert parse_presets(f"cifar,{spec}") == ("cifar", spec)
    with pytest.raises(ValueError, match="folder:PATH, cifar10:PATH"):
        parse_presets("folder")
    src = _data.DataCache(tmp_path / "data").source(spec, 4)
    name = _data.preset_dir(spec)
    assert src.n == 4 and src.path.name.startswith(name) and name.startswith("folder-images-")
    with src.open() as r:
        assert r.keys() == ["cat/a.png", "cat/sub/b.PNG", "dog/c.png", "dog/d.jpg"]
    again = _data.DataCache(tmp_path / "data")
    again.source(spec, 4)
    assert again.builds == 0  # reused
    _save(root / "cat/aa.png", np.zeros((3, 3), np.uint8))  # sorts second: the first four change
    _data._user_data.cache_clear()  # the fingerprint is taken once per session
    edited = _data.DataCache(tmp_path / "data")
    with edited.source(spec, 4).open() as r:
        assert r.keys()[1] == "cat/aa.png" and edited.builds == 1
    with pytest.raises(_data.Unsupported, match="fewer than n=50"):
        edited.source(spec, 50)
