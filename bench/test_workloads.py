"""Training-realistic reads: DataLoader epochs through the named workloads.

Groups (ids read ``test_workload[npy-cifar-n1000-classify-aug-w2]``):

* ``workload``: one shuffled epoch per workload of :mod:`storebench.workloads`
  across the worker sweep; extra_info holds where one process's time per
  sample goes (``split_read_us``, ``split_decode_us``, ``split_transform_us``,
  see :func:`storebench.workloads.time_split`).  ``random-patch`` rows are
  patch training: each item one random ``--patch`` region of its sample, read
  with ``read_regions`` per batch, boxes clipped to it.
* ``preprocess``: ben-preprocess (then classify-aug) and dicom-display (then
  detect-aug) run ``per-epoch`` on every read, or ``once`` into a
  preprocessed copy in the same format; extra_info has the epoch time, the
  one-time preprocessing time and ``total_s`` for ``folds`` x ``epochs``.
* ``fetch``: how a Dataset gets samples out of the store (no workload, or ``--fetch-workload``):
  ``reopen`` the store in every ``__getitem__``, ``item`` reads from one
  reader per process (opened once per worker), ``batch`` one ``read_batch``
  per batch through ``__getitems__``, ``lookup`` as ``item`` after the APTOS
  notebook's O(N) ``np.where(names == name)`` per item (see
  :class:`storebench.workloads.WorkloadDataset`); extra_info ``fetch`` names it.
* ``gpu``: classify-aug batches to CUDA, ``pin_memory`` on and off,
  ``.to("cuda", non_blocking=True)`` and a synchronize before the clock
  stops; skipped without CUDA.

Workers are persistent and start in an untimed epoch, so a row is a steady
epoch; the cache is warm.  Without ``--formats`` these rows cover a few
representative formats (``DEFAULT_FORMATS``; ``SMOKE_FORMATS`` when
benchmarks are disabled): the full format matrix is ``test_loader``'s.
Without ``--sizes`` they run at the smallest default size only.
Every test asserts that its epoch saw each sample exactly once and that the
model inputs have the workload's shape.
"""
from __future__ import annotations

import shutil
import time

import pytest

torch = pytest.importorskip("torch", reason="the workload benchmarks need PyTorch")
pytest.importorskip("cv2", reason="the workloads need opencv-python-headless")

from bench._data import np_order  # noqa: E402
from bench._loader import quiet_workers, skip_unless_fork_safe  # noqa: E402
from bench._ops import PatchPlan, source_images  # noqa: E402
from bench._options import workload_sizes  # noqa: E402
from bench._params import LoaderSpec  # noqa: E402
from bench._run import format_info  # noqa: E402
from storebench.formats import dataset_files  # noqa: E402
from storebench.workloads import (  # noqa: E402
    FETCHES,
    WORKLOADS,
    WorkloadDataset,
    collate,
    get_workload,
    time_split,
)

pytestmark = pytest.mark.torch

#: Formats of these rows when --formats is not given: raw, lossless-decoded, lossy-decoded, libraries.
DEFAULT_FORMATS = {"workload": ("npy", "png", "jpeg"), "preprocess": ("png",),
                   "fetch": ("npy", "hdf5", "lmdb"), "gpu": ("npy", "jpeg")}
#: The same with benchmarks disabled (smoke runs): each code path once.
SMOKE_FORMATS = {"workload": ("npy", "png"), "preprocess": ("png",), "fetch": ("npy",), "gpu": ("npy",)}
AUGMENTED = tuple(w for w in WORKLOADS if w != "none")
#: Preprocessing step -> the augmentation that follows it in its notebook.
PREPROCESS = {"ben-preprocess": "classify-aug", "dicom-display": "detect-aug"}
STRATEGIES = ("per-epoch", "once")
#: Samples per time split (a seeded permutation's head).
SPLIT_SAMPLES = 256
#: Each test's own axes, after format, preset and size and before workers: (argument, values, ids).
AXES = {"workload": [("workload", AUGMENTED, None)],
        "preprocess": [("prep", list(PREPROCESS), None), ("strategy", STRATEGIES, None)],
        "fetch": [("fetch", FETCHES, None)],
        "gpu": [("pin", [True, False], ["pinned", "pageable"])]}


def _selected(session, group: str) -> list:
    """Format params of a group: --formats if given, else its defaults (default variants only)."""
    params = session.format_params
    if session.opts.formats is not None:
        return params
    names = (SMOKE_FORMATS if session.opts.smoke else DEFAULT_FORMATS)[group]
    return [p for p in params if p.id in names]



def pytest_generate_tests(metafunc):
    """Ids read format-preset-size-<the group's axes>-workers, like test_loader's."""
    from bench import _session

    group = metafunc.definition.originalname.removeprefix("test_")
    if group not in AXES:
        return
    s = _session.get(metafunc.config)
    metafunc.parametrize("wfmt_id", _selected(s, group))
    metafunc.parametrize("preset_", s.opts.presets)  # not "preset": bench/conftest.py would order it first
    sizes = workload_sizes(metafunc.config, s.opts)
    metafunc.parametrize("size", sizes, ids=[f"n{n}" for n in sizes])
    for name, values, ids in AXES[group]:
        metafunc.parametrize(name, values, ids=ids)
    metafunc.parametrize("workers", s.opts.workers, ids=[f"w{w}" for w in s.opts.workers])


@pytest.fixture
def wfmt(session, wfmt_id):
    return session.format(wfmt_id)


def _workload(name: str, seed: int, session=None):
    """The workload ``name``; random-patch takes its patch shapes from ``--patch``."""
    opts = {}
    if name == "random-patch" and session is not None:
        opts = {"size": session.opts.patch[0], "volume_size": session.opts.patch[1]}
    try:
        return get_workload(name, seed=seed, **opts)
    except ImportError as err:
        pytest.skip(str(err))


def _loader(data, workers: int, session, *, pin: bool = False):
    opts = session.opts
    with quiet_workers():
        return torch.utils.data.DataLoader(
            data, batch_size=opts.batch_size, shuffle=True, collate_fn=collate, num_workers=workers,
            multiprocessing_context=opts.mp_contexts[0] if workers else None,
            persistent_workers=workers > 0, pin_memory=pin,
            generator=torch.Generator().manual_seed(opts.seed))


def _spec(session, workers: int) -> LoaderSpec:
    return LoaderSpec(workers, session.opts.mp_contexts[0] if workers else None, workers > 0)


def _check_batch(batch, kind: str | None, patch: tuple | None = None) -> None:
    """What a model would get: CHW float images with boxes inside them; preprocessed sizes;
    random-patch: channel-first float patches of the ``patch`` shape, boxes inside them."""
    img = batch["image"]
    if kind in ("classify-aug", "detect-aug"):
        assert img.dtype == torch.float32 and img.shape[1:] == (3, 224, 224), (img.dtype, img.shape)
    elif kind == "random-patch":
        assert patch is not None
        want = patch[1] if img.ndim == 5 else patch[0]
        assert img.dtype == torch.float32 and tuple(img.shape[2:]) == tuple(want), (img.dtype, img.shape)
        for boxes in batch.get("boxes", []):
            size = torch.tensor(list(reversed(want)) * 2, dtype=boxes.dtype)
            assert bool((boxes >= 0).all()) and bool((boxes <= size).all()), boxes
    elif kind == "ben-preprocess":
        assert img.dtype == torch.uint8 and img.shape[1:3] == (256, 256), (img.dtype, img.shape)
    elif kind == "dicom-display":
        assert all(min(i.shape[:2]) == 600 and i.dtype == torch.uint8 for i in img)
    for boxes, labels in zip(batch.get("boxes", []), batch.get("box_labels", [])):
        assert len(boxes) == len(labels)
        if kind == "detect-aug":
            assert bool((boxes >= 0).all()) and bool((boxes <= 224).all())


def _epochs(session, data, workers, check: str | None, *, pin=False, to_cuda=False):
    """``(timed epoch, open_round, close_round)`` for :meth:`Runner.reads`."""

    def epoch(dl):
        keys = []
        with quiet_workers():
            for batch in dl:
                if to_cuda:
                    batch["image"].to("cuda", non_blocking=True)
                _check_batch(batch, check, session.opts.patch)
                keys += batch["key"]
        if to_cuda:
            torch.cuda.synchronize()
        return keys

    def open_round():
        dl = _loader(data, workers, session, pin=pin)
        if workers:
            epoch(dl)  # the workers start in this untimed epoch and serve the timed ones
        return (dl,)

    return epoch, open_round, lambda args: data.reader.close()


def _run_epochs(runner, session, ds, reader, workload, workers, check, **kw):
    data = WorkloadDataset(reader, workload, fetch=kw.pop("fetch", "batch"))
    epoch, open_round, close = _epochs(session, data, workers, check, **kw)
    keys = runner.reads(epoch, files=ds.files, cache="warm", open_round=open_round, close_round=close)
    with ds.open() as r:
        assert sorted(keys) == sorted(r.keys()), "the epoch did not see every sample exactly once"


def test_workload(runner, session, wfmt, preset_, size, workload, workers):
    preset, n = preset_, size
    skip_unless_fork_safe(wfmt, workers, session.opts.mp_contexts[0])
    ds = session.dataset_or_skip(wfmt, preset, n)
    wl = _workload(workload, session.opts.seed, session)
    with ds.open() as r:
        split = time_split(r, wl, np_order(n, session.opts.seed)[:SPLIT_SAMPLES])
    _run_epochs(runner, session, ds, ds.open(), wl, workers, workload)
    info = format_info(wfmt, preset, n, cache="warm", ds=ds, loader=_spec(session, workers),
                       batch_size=session.opts.batch_size)
    info.update(workload=workload, workload_options=repr(wl.options), **split)
    raw = ds.raw_bytes
    if workload == "random-patch":  # MB/s of patch pixels (their sizes do not depend on where they are)
        plan = PatchPlan.of(source_images(ds.source), session.opts.patch_for, session.opts.seed, range(n))
        raw = plan.patch_bytes
        info.update(plan.info(), partial_reads=bool(wfmt.partial_reads), read_api="read_regions")
    runner.record(op="workload", preset=preset, n=n, cache="warm", info=info, items=n,
                  raw_bytes=raw, fmt_id=wfmt.id)


class _Scratch:
    """Just enough of a cached Dataset for a throw-away preprocessed copy."""

    def __init__(self, fmt, path):
        self.fmt, self.path = fmt, path

    @property
    def files(self):
        return dataset_files(self.path)

    def open(self):
        return self.fmt.open(self.path)


def test_preprocess(runner, session, request, wfmt, preset_, size, prep, strategy, workers):
    preset, n = preset_, size
    seed, aug = session.opts.seed, PREPROCESS[prep]
    folds, epochs = session.opts.folds, session.opts.epochs
    ds = session.dataset_or_skip(wfmt, preset, n)
    extra = {"bytes_on_disk_preprocessed": None}
    if strategy == "per-epoch":
        wl, prep_s, read_ds = _workload(f"{prep}+{aug}", seed), 0.0, ds
    else:
        step, wl = _workload(prep, seed), _workload(aug, seed)
        out = session.data.scratch(f"{wfmt.id}-{prep}")
        shutil.rmtree(out, ignore_errors=True)
        with ds.open() as r:
            t = time.perf_counter()
            try:
                report = wfmt.write(map(step, r), out)
            except ValueError as err:  # e.g. a format that cannot store the output's mode
                pytest.skip(f"{wfmt.id} cannot store {prep}'s output: {err}")
            prep_s = time.perf_counter() - t
        assert report.count == n
        extra["bytes_on_disk_preprocessed"] = report.bytes_on_disk
        read_ds = _Scratch(wfmt, out)
    try:
        _run_epochs(runner, session, read_ds, read_ds.open(), wl, workers, aug)
    finally:
        if strategy == "once":
            shutil.rmtree(out, ignore_errors=True)
    stats = getattr(runner.benchmark.stats, "stats", None)
    epoch_s = stats.min if stats is not None else None
    info = format_info(wfmt, preset, n, cache="warm", ds=ds, loader=_spec(session, workers),
                       batch_size=session.opts.batch_size)
    info.update(extra, workload=wl.name, strategy=strategy, preprocess=prep, folds=folds, epochs=epochs,
                preprocess_s=round(prep_s, 4), epoch_s=round(epoch_s, 4) if epoch_s else None,
                total_s=round(prep_s + folds * epochs * epoch_s, 3) if epoch_s else None)
    runner.record(op="preprocess", preset=preset, n=n, cache="warm", info=info, items=n,
                  raw_bytes=ds.raw_bytes, fmt_id=wfmt.id)


def test_fetch(runner, session, wfmt, preset_, size, fetch, workers):
    preset, n = preset_, size
    skip_unless_fork_safe(wfmt, workers, session.opts.mp_contexts[0])
    ds = session.dataset_or_skip(wfmt, preset, n)
    name = session.opts.fetch_workload
    wl = None if name == "none" else _workload(name, session.opts.seed, session)
    _run_epochs(runner, session, ds, ds.open(), wl, workers, None if wl is None else name, fetch=fetch)
    info = format_info(wfmt, preset, n, cache="warm", ds=ds, loader=_spec(session, workers),
                       batch_size=session.opts.batch_size)
    info.update(fetch=fetch, getitems=fetch == "batch", workload=name)
    runner.record(op="fetch", preset=preset, n=n, cache="warm", info=info, items=n,
                  raw_bytes=ds.raw_bytes, fmt_id=wfmt.id)


def test_gpu(runner, session, wfmt, preset_, size, pin, workers):
    preset, n = preset_, size
    if not torch.cuda.is_available():
        pytest.skip(f"no CUDA device: torch {torch.__version__} reports torch.cuda.is_available() False")
    ds = session.dataset_or_skip(wfmt, preset, n)
    wl = _workload("classify-aug", session.opts.seed)
    _run_epochs(runner, session, ds, ds.open(), wl, workers, "classify-aug", pin=pin, to_cuda=True)
    info = format_info(wfmt, preset, n, cache="warm", ds=ds, loader=_spec(session, workers),
                       batch_size=session.opts.batch_size)
    info.update(workload="classify-aug", pin_memory=pin, non_blocking=True,
                device=torch.cuda.get_device_name())
    runner.record(op="gpu", preset=preset, n=n, cache="warm", info=info, items=n,
                  raw_bytes=ds.raw_bytes, fmt_id=wfmt.id)
