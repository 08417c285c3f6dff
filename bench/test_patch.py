"""Patch reads: one random region of every sample per round, through ``reader.read_region``.

What patch training (nnU-Net, batchgenerators, MONAI) asks of a store: a
224x224 crop of a radiograph, a 64^3 block of a CT volume (``--patch``, see
``bench/_options.py``), never the whole image.  Ids read
``test_patch[hdf5-xray-n20-cold]`` (format id, preset, size, page-cache state)
and ``test_patch_bound[xray-n20]`` (group ``bound``: the same patches copied out
of in-memory images, ``patch-gather``).

* Regions: for sample ``i``, the patch clipped to the image at a position
  drawn from ``(--seed, i)``, so every format, round and run reads the same
  regions; samples are visited in the seeded order of the random rows, and
  formats without random access skip at large ``n`` as those rows do.
* Rate: ``patches/s`` and ``MB/s`` of patch pixels, from the fastest round;
  ``efficiency`` is patches/s over ``patch-gather``'s (timed before each
  round, from memory, whatever the row's cache state): as many distinct
  patches copied out of the in-memory pool of the dataset's first images.
* Storage reads (cold rows): ``read_bytes_per_patch`` from ``/proc/self/io``
  (every thread of this process: libraries that decompress in threads count)
  over the round, and ``amplification`` = that / the patch's pixel bytes;
  ``cached_bytes_per_patch`` / ``cache_amplification`` count the pages the
  round brought into the page cache instead.  Warm rows: None.
* Memory: ``peak_rss_mb`` (the round's peak RSS) and ``rss_growth_mb`` (how far
  it rose over the round's start), beside ``image_mb_max``: a format with
  ``partial_reads`` reading patches of 300-slice volumes never holds one whole.

Without ``--sizes`` these rows run at the smallest default size only (the
default sweep's cifar images are smaller than a patch: each patch is the
whole image, which keeps the rows cheap).  The patch runs of the README::

    pytest bench/test_patch.py --preset "xray[side=2000-3000],ct" --sizes 20 --cache cold,warm \\
        --patch 224,64 --benchmark-json patch.json
    pytest bench/test_patch.py --preset "ct[side=512,slices=300]" --sizes 4 --cache cold \\
        --formats npy,hdf5,zarr,blosc2,tiff,lmdb,pickle --benchmark-json ct300.json   # peak RSS
"""
from __future__ import annotations

import numpy as np
import pytest

from bench._bounds import PATCH_GATHER, patch_gather
from bench._case import Case, require_random_access
from bench._data import Unsupported, np_order
from bench._ops import PatchPlan, RoundMeter, patch_io_info, patch_reads, source_images
from storebench.formats import describe_modes


def _source(session, preset: str, n: int):
    try:
        return session.data.source(preset, n)
    except Unsupported as err:
        pytest.skip(str(err))


def _plan(session, source, n: int) -> PatchPlan:
    opts = session.opts
    return PatchPlan.of(source_images(source), opts.patch_for, opts.seed, np_order(n, opts.seed).tolist())


def _dataset(session, fmt, preset: str, n: int):
    """(source, fmt's dataset); skipped where ``fmt`` cannot store the preset's images."""
    source = _source(session, preset, n)
    missing = {tuple(m) for m in source.modes} - {tuple(m) for m in fmt.modes}
    if missing:
        pytest.skip(f"{fmt.id} cannot store the {preset} preset's images ({describe_modes(missing)})")
    return source, session.dataset_or_skip(fmt, preset, n)


def _check_patches(fmt, ds, source, plan: PatchPlan) -> None:
    """The first and last patch of the order are the source's pixels (lossless) or shapes (lossy)."""
    with ds.open() as r, source.open() as src:
        for i in dict.fromkeys((plan.order[0], plan.order[-1])):
            got, want = r.read_region(i, plan.regions[i]), src[i].image[plan.regions[i]]
            assert (got.shape, got.dtype) == (want.shape, want.dtype), (i, got.shape, want.shape)
            if fmt.lossless:
                np.testing.assert_array_equal(got, want)


def test_patch(runner, session, fmt, preset, patch_n, cache):
    n = patch_n
    source, ds = _dataset(session, fmt, preset, n)
    require_random_access(fmt, n)
    plan = _plan(session, source, n)
    bounds = [patch_gather(session.pool(preset, n), plan.order, session.opts.patch_for, session.opts.seed)]
    case, meter = Case(fmt, preset, n, cache, ds), RoundMeter()
    count = case.reads(runner, lambda r: patch_reads(r, plan.order, plan.regions), None,
                       bounds=bounds, meter=meter)
    assert count == n
    _check_patches(fmt, ds, source, plan)
    extra = {**plan.info(), "partial_reads": bool(fmt.partial_reads), "random_access": bool(fmt.random_access),
             "read_api": "read_region",
             **patch_io_info(meter.rounds, cold=cache == "cold", patches=n, patch_bytes=plan.patch_bytes,
                             gained_pages=runner.gained)}
    case.record(runner, "patch", rate_key="patches/s", raw_bytes=plan.patch_bytes, bound=PATCH_GATHER,
                extra=extra)


def test_patch_bound(runner, session, preset, patch_n):
    n = patch_n
    runner.benchmark.group = "bound"
    plan = _plan(session, _source(session, preset, n), n)
    b = patch_gather(session.pool(preset, n), plan.order, session.opts.patch_for, session.opts.seed)
    assert runner.pedantic(b.run) == n
    info = {**b.info, **plan.info(), "preset": preset, "n": n, "cache": "warm", "batch_size": None}
    runner.record(op="patch", preset=preset, n=n, cache="warm", info=info, items=n,
                  raw_bytes=plan.patch_bytes, bound=PATCH_GATHER, rate_key="patches/s")
