"""The Sample type, the registry and the manifest: behaviour every format relies on."""
from __future__ import annotations

import json
import pickle
import re
import sys
import textwrap
import types
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest

from storebench import formats
from storebench.formats import DatasetError, Sample, _registry, make_sample
from storebench.formats.testing import check_roundtrip

IMG = np.zeros((4, 6, 3), np.uint8)


# --------------------------------------------------------------------------- Sample


@pytest.mark.parametrize("kwargs, field", [
    (dict(key=3), "key"),
    (dict(key="bad \udc80"), "key: .*lone surrogate"),
    (dict(meta={"a": "\ud800"}), r"meta\[.a.\]: .*lone surrogate"),
    (dict(image=[[1, 2]]), "image"),
    (dict(image=np.zeros((2, 2), np.float64)), "image: dtype must be one of uint8, uint16, int16, float32"),
    (dict(image=np.zeros((2, 2), np.int32)), "image: dtype"),
    (dict(image=np.zeros((2, 2), ">u2")), "image: dtype"),
    (dict(image=np.zeros((2, 2, 5), np.uint8)), "image: shape"),
    (dict(image=np.zeros((2,), np.uint8)), "image: shape"),
    (dict(image=np.zeros((2, 2, 2, 2, 1), np.uint8)), "image: shape"),
    (dict(image=np.zeros((2, 2, 2, 5), np.int16)), "image: shape"),
    (dict(image=np.zeros((0, 2), np.uint8)), "image: every side"),
    (dict(image=np.zeros((2, 0, 2, 1), np.int16)), "image: every side"),
    (dict(image=np.zeros((4, 6, 3), np.uint8)[None], boxes=[[0, 0, 1, 1]], box_labels=[1]),
     r"boxes: shape must be \(N, 6\) for a volume"),
    (dict(image=np.zeros((4, 6, 3), np.uint8)[None], boxes=[[0, 0, 0, 1, 1, 2]], box_labels=[1]),
     "boxes: outside the 6x4x1 volume"),
    (dict(image=np.zeros((4, 6, 3), np.uint8)[None], boxes=[[0, 0, 1, 1, 1, 0]], box_labels=[1]),
     "z_min <= z_max"),
    (dict(boxes=[[0, 0, 0, 1, 1, 1]], box_labels=[1]), r"boxes: shape must be \(N, 4\) for an image"),
    (dict(label=1.5), "label"),
    (dict(label=True), "label"),
    (dict(boxes=[[0, 0, 1]], box_labels=[1]), "boxes: shape"),
    (dict(boxes=[[0, 0, np.nan, 1]], box_labels=[1]), "boxes: coordinates must be finite"),
    (dict(boxes=[[0, 0, np.inf, 1]], box_labels=[1]), "boxes: coordinates must be finite"),
    (dict(boxes=[[3, 0, 1, 1]], box_labels=[1]), "x_min <= x_max"),
    (dict(boxes=[[0, 2, 1, 1]], box_labels=[1]), "y_min <= y_max"),
    (dict(boxes=[[0, 0, 7, 1]], box_labels=[1]), "boxes: outside the 6x4 image"),
    (dict(boxes=[[-1, 0, 1, 1]], box_labels=[1]), "boxes: outside"),
    (dict(boxes=[["a", "b", "c", "d"]], box_labels=[1]), "boxes: must be real numbers"),
    (dict(boxes=[[0, 0, 1, 1]], box_labels=[1, 2]), "box_labels: 2 labels for 1 boxes"),
    (dict(boxes=[[0, 0, 1, 1]]), "box_labels: 0 labels for 1 boxes"),
    (dict(boxes=[[0, 0, 1, 1]], box_labels=[0.5]), "box_labels: must be a 1-D integer"),
    (dict(meta=[("a", 1)]), "meta: must be a mapping"),
    (dict(meta={1: "a"}), "meta: keys must be str"),
    (dict(meta={"a": [1]}), r"meta\['a'\]: must be str"),
    (dict(meta={"a": float("nan")}), r"meta\['a'\]: non-finite"),
])
def test_sample_rejects_bad_fields(kwargs, field):
    args = dict(key="k", image=IMG) | kwargs
    with pytest.raises(ValueError, match=field):
        Sample(**args)


def test_volumes_and_new_dtypes():
    """(D, H, W, C) volumes with 6-column boxes; int16 and float32 compare bit for bit."""
    vol = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4, 1) - 1024
    s = Sample("ct", vol, boxes=[[0, 0, 0, 4, 3, 2]], box_labels=[1])
    assert s.mode == ("int16", 1, "volume") and s.is_volume and s.boxes.shape == (1, 6)
    assert Sample("e", vol).boxes.shape == (0, 6)
    assert not Sample("img", vol[0]).is_volume and Sample("img", vol[0]).mode == ("int16", 1)
    f = np.array([[np.nan, -0.0, np.inf]], np.float32)
    payload = f.copy()
    payload.view(np.uint32)[0, 0] |= 1  # another NaN
    assert Sample("f", f) == Sample("f", f.copy())
    assert Sample("f", f) != Sample("f", payload), "NaN payloads differ bit for bit"
    assert Sample("f", f) != Sample("f", np.abs(f)), "-0.0 is not 0.0"
    assert formats.describe_modes({("int16", 1, "volume"), ("float32", 0)}) == "int16 (D, H, W, 1); float32 (H, W)"
    assert formats.modes_of(("uint8",), (0, 1), volumes=True) == {("uint8", 0), ("uint8", 1), ("uint8", 1, "volume")}
    assert formats.ALL_MODES == formats.IMAGE_MODES | formats.VOLUME_MODES


def test_a_dataset_holds_images_or_volumes(tmp_path):
    npy = formats.get("npy")
    img, vol = Sample("img", np.zeros((2, 2), np.int16)), Sample("vol", np.zeros((1, 2, 2, 1), np.int16))
    for first, second in ((img, vol), (vol, img)):
        with pytest.raises(ValueError, match=f"image of key {second.key!r}: .*one kind or the other"):
            npy.write([first, second], tmp_path / "ds")
        assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("region, problem", [
    ((slice(0, 2),), "has 1 slices; the 3x4 image needs 2"),
    ((slice(0, 2), slice(0, 2), slice(0, 1)), "has 3 slices"),
    ((slice(0, 2, 2), slice(None)), "axis 0 has step 2"),
    ((slice(None), slice(0, 5)), "axis 1 selects 0:5, outside 0:4"),
    ((slice(-1, None), slice(None)), "axis 0 selects -1:3"),
    ((slice(2, 2), slice(None)), "axis 0 selects 2:2"),
    ((1, slice(None)), "axis 0 is int 1, not a slice"),
    ([slice(None), slice(None)], "must be a tuple of slices"),
    ((slice(None), slice(True, 2)), "axis 1 has bound True, not an int"),
])
def test_check_region_errors(region, problem):
    with pytest.raises(formats.RegionError, match=re.escape(problem)) as info:
        formats.check_region((3, 4, 3), region, "/ds: sample 7")
    assert str(info.value).startswith(f"/ds: sample 7: region {region!r}")
    assert isinstance(info.value, IndexError)
    assert pickle.loads(pickle.dumps(info.value)).args == info.value.args


def test_check_region_normalises():
    assert formats.check_region((5, 3, 4, 2), (slice(None), slice(1, None), slice(np.int64(0), 1)), "x") == \
        (slice(0, 5), slice(1, 3), slice(0, 1))


def test_sample_normalises_and_compares():
    s = Sample("k", IMG, np.int64(3), [[0, 1, 2, 3]], [5], {"r": "R1"})
    assert type(s.label) is int and s.label == 3
    assert s.boxes.dtype == np.float32 and s.boxes.shape == (1, 4)
    assert s.box_labels.dtype == np.int64
    assert s.mode == ("uint8", 3)
    empty = Sample("e", IMG[..., 0])
    assert empty.boxes.shape == (0, 4) and empty.box_labels.shape == (0,) and empty.meta == {}
    assert empty.mode == ("uint8", 0)
    assert s == Sample("k", IMG.copy(), 3, np.array([[0, 1, 2, 3]], np.float64), [5], {"r": "R1"})
    assert s != Sample("k", IMG.astype(np.uint16), 3, [[0, 1, 2, 3]], [5], {"r": "R1"})
    assert s != Sample("k", IMG, 3, [[0, 1, 2, 3]], [5], {"r": "R2"})
    assert s != Sample("k", IMG.reshape(6, 4, 3), 3, [[0, 1, 2, 3]], [5], {"r": "R1"})
    with pytest.raises(TypeError):
        hash(s)
    with pytest.raises(AttributeError):
        s.label = 4  # frozen
    assert pickle.loads(pickle.dumps(s)) == s
    assert make_sample("k", IMG, 3, s.boxes, s.box_labels, {"r": "R1"}) == s


# --------------------------------------------------------------------------- registry


def test_registry_is_read_only_and_lazy():
    avail = formats.available()
    with pytest.raises(TypeError):
        avail["x"] = object  # type: ignore[index]
    assert {"png", "npy", "hdf5", "lmdb", "pickle", "shelve"} <= set(avail)
    assert set(avail).isdisjoint(formats.unavailable())
    assert formats.get("npy").id == "npy"
    with pytest.raises(KeyError, match="unknown format 'nope'"):
        formats.get("nope")


def test_id_lists_non_default_options():
    class Opt(formats.Format):
        name = "opt"

        def __init__(self, *, compression="none", level=None):
            self.compression, self.level = compression, level

        def _write(self, samples, root):
            pass

    assert Opt().id == "opt"
    assert Opt(compression="gzip", level=2).id == "opt[gzip,level=2]"
    assert Opt(level=3).id == "opt[level=3]"
    assert Opt(compression="lzf").id == "opt[lzf]"
    assert Opt(compression="gzip", level=2) == Opt(compression="gzip", level=2)
    assert Opt(compression="gzip") != Opt()
    assert Opt(compression="gzip").options == {"compression": "gzip", "level": None}


@pytest.fixture
def scratch_registry(monkeypatch):
    """Run a test against a copy of the registry state."""
    monkeypatch.setattr(_registry, "_targets", dict(_registry._targets))
    monkeypatch.setattr(_registry, "_classes", dict(_registry._classes))
    monkeypatch.setattr(_registry, "_failed", dict(_registry._failed))
    return _registry


def test_register_refuses_taken_names(scratch_registry):
    with pytest.raises(ValueError, match="already registered"):
        formats.register("npy", "storebench.formats.npy:Npy")


def test_missing_dependency_is_listed_with_hint(scratch_registry):
    formats.register("ghost", "storebench_no_such_module_xyz:Ghost", hint="pip install ghost-format")
    with pytest.warns(RuntimeWarning, match="'ghost' failed to load"):
        assert "ghost" not in formats.available()
    why = formats.unavailable()["ghost"]
    assert "storebench_no_such_module_xyz" in why and "pip install ghost-format" in why
    with pytest.raises(ImportError, match="pip install ghost-format"):
        formats.get("ghost")


def test_entry_point_formats_are_discovered(scratch_registry, monkeypatch):
    mod = types.ModuleType("sb_plugin_demo")
    exec(textwrap.dedent("""
        from storebench.formats.npy import Npy
        class Demo(Npy):
            name = "demo"
        class Broken:
            name = "broken"
    """), mod.__dict__)
    monkeypatch.setitem(sys.modules, "sb_plugin_demo", mod)
    eps = [EntryPoint("demo", "sb_plugin_demo:Demo", formats.ENTRY_POINT_GROUP),
           EntryPoint("broken", "sb_plugin_demo:Broken", formats.ENTRY_POINT_GROUP),
           EntryPoint("npy", "sb_plugin_demo:Demo", formats.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(_registry, "entry_points", lambda group: eps if group == formats.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(_registry, "_loaded", False)
    with pytest.warns(RuntimeWarning) as record:
        avail = formats.available()
    messages = " ".join(str(w.message) for w in record)
    assert "'npy'" in messages and "clashes" in messages
    assert "'broken'" in messages and "not a formats.Format subclass" in messages
    assert avail["demo"] is mod.Demo and avail["npy"] is not mod.Demo
    assert "broken" in formats.unavailable()


# --------------------------------------------------------------------------- manifest


def test_manifest_problems_are_dataset_errors(tmp_path):
    formats.get("npy").write([Sample("a", IMG)], tmp_path / "ds")
    manifest = tmp_path / "ds" / formats.MANIFEST
    good = json.loads(manifest.read_text())
    assert good["format"] == "npy" and good["count"] == 1 and good["format_version"] == 1
    cases = [
        (b"{not json", "damaged storebench.json"),
        (b"[]", "not a storebench manifest"),
        (json.dumps(good | {"count": "1"}).encode(), "bad 'count'"),
        (json.dumps(good | {"format_version": 99}).encode(), "newer than this reader"),
    ]
    for raw, problem in cases:
        manifest.write_bytes(raw)
        with pytest.raises(DatasetError, match=problem) as info:
            formats.get("npy").open(tmp_path / "ds")
        assert info.value.path == str(tmp_path / "ds")
    manifest.unlink()
    with pytest.raises(DatasetError, match="no storebench.json"):
        formats.open_dataset(tmp_path / "ds")


def test_dataset_error_pickles():
    err = DatasetError("/x", "broken")
    clone = pickle.loads(pickle.dumps(err))
    assert isinstance(clone, ValueError) and str(clone) == "/x: broken"


# --------------------------------------------------------------------------- README example


def _readme_example() -> str:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(# formats/raw_zlib\.py.*?)```", text, re.S)
    assert blocks, "README lost its worked format example"
    return blocks[0]


def test_readme_format_example_runs(scratch_registry, tmp_path, monkeypatch):
    """The README's add-a-format example is real code that passes the round-trip checks."""
    mod = types.ModuleType("raw_zlib")
    monkeypatch.setitem(sys.modules, "raw_zlib", mod)  # pickled readers import it by name
    exec(compile(_readme_example(), "README.md", "exec"), mod.__dict__)
    formats.register("raw_zlib", mod.RawZlib)
    fmt = formats.get("raw_zlib", level=1)
    assert fmt.id == "raw_zlib[1]"
    samples = [Sample(f"k{i}", np.full((3 + i, 4, 3), i, np.uint8), i, meta={"i": i}) for i in range(5)]
    check_roundtrip(fmt, samples, tmp_path / "ds", batch=[4, 0, 4])


def test_from_id_rebuilds_every_variant_and_names_bad_options():
    from storebench.formats.testing import format_params

    for p in format_params(variants=True):
        fmt = p.values[0]
        if fmt is not None:
            again = formats.from_id(fmt.id)
            assert type(again) is type(fmt) and again.options == fmt.options, fmt.id
    assert formats.from_id("hdf5[level=2, compression=gzip]").id == "hdf5[gzip,level=2]"
    for bad, words in [("hdf5[gzip,gzip]", "needs a name"), ("hdf5[colour=red]", "no option 'colour'"),
                       ("hdf5[chunk_kib=big]", "not a whole number"), ("hdf5[", "expected name")]:
        with pytest.raises(ValueError, match=re.escape(words)):
            formats.from_id(bad)
    with pytest.raises(KeyError, match="unknown format"):
        formats.from_id("nosuch[1]")
