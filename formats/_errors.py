"""The errors storebench raises for datasets that are not what they should be."""
from __future__ import annotations

import os


class DatasetError(ValueError):
    """The path is not a valid dataset of this format.

    Raised for a wrong format, a missing index, a truncated or damaged file or
    an unknown format version.  The message names the path and the problem.
    """

    def __init__(self, path: os.PathLike | str | object, problem: str):  # object: a Remote (its URL)
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        return (type(self), (self.path, self.problem))


class LocalOnlyError(DatasetError):
    """The format reads local files only and was asked to open a dataset in an object store.

    The message names the URL, the format and why (its ``local_only``).
    """


class ChecksumError(DatasetError):
    """A sample read back does not match the checksum stored when it was written."""



class RegionError(IndexError):
    """A region passed to ``read_region`` is not one of the sample's: wrong number of
    slices, a step other than 1, or bounds outside the image.

    An ``IndexError``, as NumPy's own indexing errors are; the message names the
    sample and the region.
    """

    def __init__(self, where: str, region, problem: str):
        self.where = where
        self.region = region
        self.problem = problem
        super().__init__(f"{where}: region {region!r} {problem}")

    def __reduce__(self):
        return (type(self), (self.where, self.region, self.problem))
