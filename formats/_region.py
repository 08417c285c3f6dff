"""Regions of an image or volume: what ``Reader.read_region`` takes and checks.

A region is a tuple of ``slice`` objects, one per spatial axis: ``(rows, cols)``
for a 2-D image, ``(depth, rows, cols)`` for a volume; the channel axis is
always whole.  ``None`` bounds mean the axis's start or end; steps other than 1,
negative or out-of-range bounds and empty slices are refused, so a region
always selects the same pixels NumPy's ``image[region]`` would, and at least one.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._errors import RegionError

__all__ = ["RegionError", "check_region", "region_shape", "spatial_shape"]


def spatial_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """The spatial sides of an image shape: ``(H, W)`` or ``(D, H, W)``."""
    return tuple(shape[:3]) if len(shape) == 4 else tuple(shape[:2])


def check_region(shape: Sequence[int], region, where: str) -> tuple[slice, ...]:
    """``region`` as slices with int bounds (``start < stop``) inside ``shape``; RegionError if not.

    ``where`` names the sample in the error (``"/data/ds: sample 3"``).
    """
    sides = spatial_shape(shape)
    if not isinstance(region, tuple):
        raise RegionError(where, region, "must be a tuple of slices, one per spatial axis, "
                          f"{'(depth, rows, cols)' if len(sides) == 3 else '(rows, cols)'}")
    if len(region) != len(sides):
        kind = "volume" if len(sides) == 3 else "image"
        raise RegionError(where, region, f"has {len(region)} slices; the {_side_text(sides)} {kind} "
                          f"needs {len(sides)}")
    out = []
    axis = 0
    for sl, n in zip(region, sides):  # the per-patch path: type checks before isinstance ones
        if type(sl) is not slice:
            raise RegionError(where, region, f"axis {axis} is {type(sl).__name__} {sl!r}, not a slice")
        start, stop, step = sl.start, sl.stop, sl.step
        if step is not None and step != 1:
            raise RegionError(where, region, f"axis {axis} has step {step!r}; only 1 is supported")
        if start is None:
            start = 0
        elif type(start) is not int:
            start = _as_int(start, where, region, axis)
        if stop is None:
            stop = n
        elif type(stop) is not int:
            stop = _as_int(stop, where, region, axis)
        if not 0 <= start < stop <= n:
            raise RegionError(where, region, f"axis {axis} selects {start}:{stop}, outside 0:{n} "
                              f"of the {_side_text(sides)} image or empty")
        out.append(sl if step is None and type(sl.start) is int and type(sl.stop) is int else slice(start, stop))
        axis += 1
    return tuple(out)


def region_shape(shape: Sequence[int], region: tuple[slice, ...]) -> tuple[int, ...]:
    """The shape of ``image[region]`` for an image of ``shape`` and a checked region."""
    sides = tuple(sl.stop - sl.start for sl in region)
    return sides + tuple(shape[len(region):])


def _as_int(v, where, region, axis) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise RegionError(where, region, f"axis {axis} has bound {v!r}, not an int")
    return int(v)


def _side_text(sides: Sequence[int]) -> str:
    return "x".join(str(s) for s in sides)
