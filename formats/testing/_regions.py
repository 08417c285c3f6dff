"""FormatTests, regions: ``read_region`` equals slicing for every format, its errors are typed,
and a format that declares ``partial_reads`` reads from storage only what a region overlaps."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storebench.fixtures.strategies import regions, sample_lists

from .. import RegionError, Sample, dataset_files
from .._fs import evict
from . import check_regions, volume_edge_samples
from ._common import supported

_IO_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]
#: A partial read of a small region may read at most this fraction of the sample's bytes on disk.
PARTIAL_FRACTION = 0.25


def storage_read_bytes() -> int:
    """Bytes this process (all its threads) has had read from storage: ``/proc/self/io`` read_bytes."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    raise OSError("/proc/self/io has no read_bytes line")


def large_sample(fmt) -> tuple[Sample, tuple[slice, ...], tuple[slice, ...]] | None:
    """A sample big enough that reading it whole is many times a small region, of a mode ``fmt``
    stores, with two small regions far apart; None if it stores neither kind."""
    rng = np.random.default_rng(14)
    for mode in (("uint16", 0), ("uint8", 0), ("int16", 1, "volume"), ("uint8", 1, "volume"),
                 ("uint8", 3)):
        if mode not in fmt.modes:
            continue
        dtype = np.dtype(mode[0])
        top = 4095 if dtype == np.uint16 else 255
        if len(mode) == 3:  # a 96x256x256 volume, 6 or 12 MB
            img = rng.integers(0, top + 1, (96, 256, 256, 1)).astype(dtype)
            return (Sample("large", img), (slice(8, 24), slice(16, 48), slice(16, 48)),
                    (slice(64, 80), slice(200, 232), slice(200, 232)))
        shape = (2048, 2048) if mode[1] == 0 else (1536, 1536, 3)
        img = rng.integers(0, top + 1, shape).astype(dtype)
        return (Sample("large", img), (slice(100, 164), slice(100, 164)),
                (slice(1700, 1764), slice(1200, 1264)))
    return None


class RegionTests:
    """read_region / read_regions, through the conformance suite."""

    def test_read_region_equals_slicing(self, fmt):
        """Hypothesis samples and regions (edges, one pixel, the whole image): ``read_region`` is
        ``image[region]`` of the whole read and, for a lossless format, of what was written."""
        strategy = sample_lists(modes=fmt.modes, min_size=1, max_size=4, fixed_shape=fmt.fixed_shape)

        @settings(deadline=None, suppress_health_check=_IO_HEALTH)
        @given(data=st.data())
        def prop(data):
            samples = data.draw(strategy, label="samples")
            asked = [data.draw(st.lists(regions(s.image.shape), min_size=1, max_size=3), label=f"regions {i}")
                     for i, s in enumerate(samples)]
            with tempfile.TemporaryDirectory() as d:
                fmt.write(samples, Path(d) / "ds")
                with fmt.open(Path(d) / "ds") as r:
                    check_regions(r, list(r), samples if fmt.lossless else None, asked)
        prop()

    def test_region_errors_name_the_sample_and_region(self, fmt, dataset_of, tmp_path):
        """Wrong slice counts, steps, bounds outside the image, empty and non-slice regions are a
        RegionError (an IndexError) naming the path, the sample and the region; nothing is read."""
        cases = [(dataset_of(fmt), 2)]
        vols = supported(fmt, volume_edge_samples())
        if vols:
            fmt.write(vols, tmp_path / "vols")
            cases.append((tmp_path / "vols", 3))
        for path, rank in cases:
            with fmt.open(path) as r:
                shape = r[1].image.shape
                sides = shape[:rank]
                whole = tuple(slice(None) for _ in sides)
                bad = [
                    whole + (slice(None),),  # one slice too many: the channel axis is always whole
                    whole[:-1],
                    (slice(0, 1, 2),) + whole[1:],
                    (slice(0, sides[0] + 1),) + whole[1:],
                    (slice(-1, None),) + whole[1:],
                    whole[:-1] + (slice(1, 1),),
                    whole[:-1] + (0,),
                    list(whole),
                    whole[:-1] + (slice(0.5, 2),),
                ]
                for reg in bad:
                    with pytest.raises(RegionError, match=re.escape(f"{path}: sample 1: region")) as info:
                        r.read_region(1, reg)
                    assert isinstance(info.value, IndexError)
                    assert repr(reg) in str(info.value)
                with pytest.raises(IndexError, match="out of range"):
                    r.read_region(len(r), whole)
                with pytest.raises(ValueError, match="2 indices but 1 regions"):
                    r.read_regions([0, 1], [whole])
                with pytest.raises(RegionError, match="sample 1"):
                    r.read_regions([0, 1], [tuple(slice(None) for _ in r[0].image.shape[:rank]), bad[0]])
                assert r.read_regions([], []) == []
                got = r.read_region(-1, whole)
                assert got.tobytes() == r[len(r) - 1].image.tobytes()

    def test_region_reads_with_verify_are_checked(self, fmt, tmp_path):
        """With ``verify=True`` a region of a sample whose checksum does not match is a ChecksumError."""
        from .. import ChecksumError
        from .._manifest import CHECKSUMS

        samples = supported(fmt, [s for s in _edge() if s.image.ndim == 2])
        fmt.write(samples, tmp_path / "ds")
        crc = tmp_path / "ds" / CHECKSUMS
        raw = bytearray(crc.read_bytes())
        raw[0] ^= 0xFF
        crc.write_bytes(bytes(raw))
        with fmt.open(tmp_path / "ds", verify=True) as r:
            whole = tuple(slice(None) for _ in r[1].image.shape[:2])
            with pytest.raises(ChecksumError, match="sample 0"):
                r.read_region(0, whole)
            assert r.read_region(1, whole).tobytes() == r[1].image.tobytes()

    def test_partial_reads_read_only_the_region(self, fmt, tmp_path):
        """A format declaring ``partial_reads`` reads from storage, cold, under a quarter of a large
        sample's bytes for a small region, while a whole read of the same sample reads most of them
        (so the measurement can fail).  Counted with ``/proc/self/io`` read_bytes after evicting."""
        if not fmt.partial_reads:
            pytest.skip(f"{fmt.id} reads whole samples for a region (partial_reads is false)")
        made = large_sample(fmt)
        assert made is not None, f"{fmt.id} declares partial_reads but stores no large image or volume mode"
        sample, warm_region, cold_region = made
        report = fmt.write([sample], tmp_path / "ds")
        files = list(dataset_files(tmp_path / "ds"))
        with fmt.open(tmp_path / "ds") as r:
            r.read_region(0, warm_region)  # opens the files and reads the index: not the region's cost
            evict(files)
            before = storage_read_bytes()
            got = r.read_region(0, cold_region)
            partial = storage_read_bytes() - before
            assert got.tobytes() == sample.image[cold_region].tobytes()
            evict(files)
            before = storage_read_bytes()
            whole = r[0]
            pixels = whole.image.tobytes()  # a memory map reads only when touched
            read_whole = storage_read_bytes() - before
            assert whole == sample or not fmt.lossless and len(pixels) == sample.image.nbytes
        assert read_whole >= 0.5 * report.bytes_on_disk, \
            f"a cold whole read read {read_whole} of {report.bytes_on_disk} bytes: eviction failed?"
        assert partial <= PARTIAL_FRACTION * report.bytes_on_disk, (
            f"{fmt.id}: a cold {got.shape} region read {partial} bytes from storage, "
            f"{partial / max(report.bytes_on_disk, 1):.0%} of the {report.bytes_on_disk}-byte dataset")


def _edge():
    from . import edge_samples
    return edge_samples()
