"""parquet: one Apache Parquet table, a row per sample, raw pixels in a binary column.

``data.parquet`` has the columns ``key`` (string), ``label`` (int64), ``image``
(large_binary: pixels in C order), ``depth`` (0 for a 2-D image, D for a
``(D, H, W, C)`` volume), ``height``, ``width``, ``channels`` (0 for an
``(H, W)`` image), ``dtype`` ("uint8", "uint16", "int16" or "float32"),
``boxes`` (list of 4-float lists, pascal_voc; 6-float lists x_min, y_min,
z_min, x_max, y_max, z_max in a dataset of volumes), ``box_labels``
(list<int64>) and ``meta`` (JSON string): the Petastorm / Hugging Face
datasets layout, which pandas, polars, DuckDB and Spark read as it is.
pyarrow writes row groups of ``row_group_size`` rows; the pixels are never
dictionary-encoded; ``page_index=True`` also writes the page index (column and
offset indexes).  Files written before volumes existed have no ``depth`` column
and read as 2-D images.

Pick it when the dataset also feeds analytics or lives in a data lake, or to
scan the label columns alone; for shuffled reads, ``row_group_size=1`` (the
bench's tuned variant).  The reader reads every column but the pixels once, at
open, into an index; ``r[i]`` then reads the pixel column of its row group.
Caveats: the row group is the unit of random access, as pyarrow reads whole
column chunks: it has no read of selected rows or pages, and ignores the page
index (it serves page-aware readers such as DuckDB or arrow-rs), so ``r[i]``
decodes ``row_group_size`` images (the last row group stays decoded per
process, so neighbouring reads are cheap); small row groups make the footer
(about 0.7 kB per row group) and the open slower; the writer holds about
``WRITE_BYTES`` of samples (at least one row group) in memory; a scan yields
read-only views into Arrow buffers; threads may share a reader, its pyarrow
reads take turns (a lock).
"""
from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ._api import DatasetError, Format, Reader
from ._bound import Bound, BoundInput, BoundRun, named
from ._index import DTYPES, Index, encode_meta

COMPRESSIONS = ("none", "snappy", "zstd")
WRITE_ROWS, WRITE_BYTES = 1024, 16 << 20  #: the writer's tables: whole row groups, to these sizes
_SHAPE = ("depth", "height", "width", "channels")


def _schema(box_width: int) -> pa.Schema:
    return pa.schema([
        ("key", pa.string()), ("label", pa.int64()), ("image", pa.large_binary()), ("depth", pa.int32()),
        ("height", pa.int32()), ("width", pa.int32()), ("channels", pa.int8()), ("dtype", pa.string()),
        ("boxes", pa.list_(pa.list_(pa.float32(), box_width))), ("box_labels", pa.list_(pa.int64())),
        ("meta", pa.string())])


SCHEMA = _schema(4)  #: of a dataset of 2-D images
VOLUME_SCHEMA = _schema(6)  #: of a dataset of volumes: 6 coordinates per box
#: What every data.parquet has; ``depth`` came with volumes (older files lack it: all 2-D).
REQUIRED = tuple(n for n in SCHEMA.names if n != "depth")


def _dhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    """(D, H, W, C) with D 0 for a 2-D image and C 0 for an (H, W) one."""
    return shape if len(shape) == 4 else (0, *shape, *(0,) * (3 - len(shape)))


def _table(rows: list, schema: pa.Schema) -> pa.Table:
    """One row group: the samples ``rows`` as columns, the pixels copied once."""
    imgs = [np.ascontiguousarray(s.image).reshape(-1).view(np.uint8) for s in rows]
    img_off = np.cumsum([0] + [a.size for a in imgs], dtype=np.int64)
    box_off = pa.array(np.cumsum([0] + [len(s.boxes) for s in rows], dtype=np.int32))
    dhwc = np.array([_dhwc(s.image.shape) for s in rows]).T
    width = schema.field("boxes").type.value_type.list_size
    boxes = pa.array(np.concatenate([s.boxes for s in rows]).reshape(-1))
    return pa.table([
        pa.array([s.key for s in rows]), pa.array([s.label for s in rows], pa.int64()),
        pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(rows), [
            None, pa.py_buffer(img_off), pa.py_buffer(np.concatenate(imgs))]),
        *(pa.array(v, schema.field(k).type) for v, k in zip(dhwc, _SHAPE)),
        pa.array([s.image.dtype.name for s in rows]),
        pa.ListArray.from_arrays(box_off, pa.FixedSizeListArray.from_arrays(boxes, width)),
        pa.ListArray.from_arrays(box_off, pa.array(np.concatenate([s.box_labels for s in rows]))),
        pa.array([encode_meta(s.meta).decode() for s in rows], pa.string()),
    ], schema=schema)


class Parquet(Format):
    name = "parquet"
    # Tuned for shuffled reads: one row per row group, since pyarrow reads whole row groups.
    bench_variants = ({}, {"row_group_size": 100}, {"row_group_size": 1})
    libraries = ("pyarrow",)
    remote_reads = "ranges"  # pyarrow's S3 file system: a row group's pixel column per ranged GET

    def __init__(self, row_group_size: int = 1000, compression: str = "none", page_index: bool = False):
        if not (isinstance(row_group_size, int) and row_group_size >= 1):
            raise ValueError(f"row_group_size: must be an int >= 1, got {row_group_size!r}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression: must be one of {COMPRESSIONS}, got {compression!r}")
        self.row_group_size, self.compression, self.page_index = row_group_size, compression, page_index

    @property
    def random_access(self):
        """Only with one row per row group: ``r[i]`` reads and decodes its whole row group."""
        return self.row_group_size == 1

    @property
    def bound(self) -> Bound:
        """bare-pyarrow with this format's row groups and compression."""
        return Bound(named("bare-pyarrow", self), partial(bare_pyarrow, rows=self.row_group_size,
                                                          compression=self.compression))

    def info(self):
        return {"pyarrow": pa.__version__}

    def _write(self, samples, root: Path):
        chunks = _chunks(samples, self.row_group_size)
        first = next(chunks, [])
        # A dataset holds images or volumes (Format.write checks): the first sample decides the boxes' width.
        schema = VOLUME_SCHEMA if first and first[0].image.ndim == 4 else SCHEMA
        # Dictionaries and min/max statistics of pixel blobs cost time and bytes for nothing.
        with pq.ParquetWriter(root / "data.parquet", schema, compression=self.compression.upper(),
                              use_dictionary=["dtype"], write_statistics=["key", "label"],
                              write_page_checksum=True, write_page_index=self.page_index) as w:
            for rows in itertools.chain([first] if first else [], chunks):
                w.write_table(_table(rows, schema), row_group_size=self.row_group_size)


def _chunks(samples, group: int) -> Iterator[list]:
    """Lists of whole row groups of samples (the last perhaps short), ``WRITE_ROWS`` or
    ``WRITE_BYTES`` of pixels at most unless one row group is more: one ``write_table`` each
    (a table per row group of one row would cost more than the write)."""
    rows, size = [], 0
    for s in samples:
        rows.append(s)
        size += s.image.nbytes
        if len(rows) % group == 0 and (len(rows) + group > WRITE_ROWS or size >= WRITE_BYTES):
            yield rows
            rows, size = [], 0
    if rows:
        yield rows


_CODE = {d.name: k for k, d in enumerate(DTYPES)}


def index_of(t: pa.Table, path, what: str = "data.parquet") -> Index:
    """The :class:`~storebench.formats._index.Index` of a table of every column but ``image``:
    keys, labels, shapes, dtypes, boxes and metadata, checked; DatasetError naming ``what``."""
    try:
        c = {k: t.column(k).combine_chunks() for k in t.column_names}
        names = c["dtype"].to_pylist()
        if not set(names) <= _CODE.keys():
            raise DatasetError(path, f"{what}: dtypes {sorted(set(names) - _CODE.keys(), key=str)} are no Sample's")
        box, labels = c["boxes"], c["box_labels"]
        width = box.type.value_type.list_size  # 6 in a dataset of volumes
        h, w, ch = (c[k].to_numpy().astype(np.int64) for k in ("height", "width", "channels"))
        d = c["depth"].to_numpy().astype(np.int64) if "depth" in c else np.zeros_like(h)
        if len(d) and ((d > 0) != (width == 6)).any():
            raise DatasetError(path, f"{what}: the depth column does not match the boxes' width")
        box_off = box.offsets.to_numpy().astype(np.int64)
        if not np.array_equal(box_off - box_off[0], labels.offsets.to_numpy() - labels.offsets[0].as_py()):
            raise DatasetError(path, f"{what}: box labels do not match the boxes")
        keys, meta = c["key"].to_pylist(), [m.encode() for m in c["meta"].to_pylist()]
        arrays = {
            "keys": np.frombuffer("".join(keys).encode("utf-8", "surrogatepass"), np.uint8),
            "key_off": np.cumsum([0] + [len(k) for k in keys], dtype=np.int64),
            "label": c["label"].to_numpy().astype(np.int64),
            "shape": np.stack([d, h, w, ch] if width == 6 else [h, w, ch], 1),
            "dtype": np.array([_CODE[n] for n in names], np.uint8), "box_off": box_off - box_off[0],
            "boxes": box.flatten().flatten().to_numpy().reshape(-1, width),
            "box_labels": labels.flatten().to_numpy(),
            "meta": np.frombuffer(b"".join(meta), np.uint8),
            "meta_off": np.cumsum([0] + [len(m) for m in meta], dtype=np.int64)}
    except (TypeError, ValueError, AttributeError, KeyError, pa.ArrowException) as err:
        if isinstance(err, DatasetError):
            raise
        raise DatasetError(path, f"{what}: the columns beside the pixels are damaged: {err!r}") from err
    return Index(arrays, path, count=len(keys))


def pixels(index: Index, i: int, off: list[int], data: np.ndarray, j: int, path, what: str) -> np.ndarray:
    """Sample ``i``'s image: value ``j`` of a pixel column (``off``, ``data`` from :func:`_binary`), a view."""
    if off[j + 1] - off[j] != index.nbytes(i):
        raise DatasetError(path, f"{what}: the image of sample {i} does not match its shape")
    return data[off[j]:off[j + 1]].view(index.image_dtype[i]).reshape(index.image_shape[i])


class ParquetReader(Reader):
    def _open_handles(self):
        try:
            # pre_buffer=True (the default) would keep every row group a scan has read.
            # In an object store: pyarrow's S3 file, every column chunk a ranged GET.
            src = self.path / "data.parquet" if self.remote is None else self.remote.open_input_file("data.parquet")
            pf = pq.ParquetFile(src, pre_buffer=False, page_checksum_verification=self.verify_reads)
        except (OSError, pa.ArrowException) as err:
            raise DatasetError(self.path, f"data.parquet is missing or damaged: {err}") from err
        md, names = pf.metadata, pf.schema_arrow.names
        if not set(REQUIRED) <= set(names) or md.num_rows != self._n:
            pf.close()
            raise DatasetError(self.path, "data.parquet lacks this dataset's columns or rows")
        if pf.schema_arrow.field("boxes").type not in (SCHEMA.field("boxes").type, VOLUME_SCHEMA.field("boxes").type):
            pf.close()
            raise DatasetError(self.path, f"data.parquet: boxes column has type {pf.schema_arrow.field('boxes').type}")
        try:  # everything but the pixels, once: a read then decodes the pixel column alone
            self._index = self._decode(lambda: index_of(pf.read(columns=[n for n in names if n != "image"]),
                                                        self.path))
        except BaseException:
            pf.close()
            raise
        rows = [md.row_group(k).num_rows for k in range(md.num_row_groups)]
        self._starts, self._cached = np.cumsum([0] + rows).tolist(), (-1, None)
        return pf

    def _decode(self, read, *args):
        """``read(*args)``, pyarrow's errors on damaged bytes a DatasetError."""
        try:
            return read(*args)
        except DatasetError:
            raise
        except (OSError, TypeError, ValueError, pa.ArrowException) as err:
            raise DatasetError(self.path, f"data.parquet does not decode: {err!r}") from err

    def _group(self, k: int):
        """The pixel column of row group ``k``: (offsets, data), read alone and kept for its neighbours."""
        cached = self._cached  # once: another thread may replace it meanwhile
        if cached[0] != k:
            with self._lock:  # one pyarrow read at a time on the shared ParquetFile
                col = self._decode(lambda: self._handles.read_row_group(k, columns=["image"]).column(0))
                cached = self._cached = (k, _binary(col))
        return cached[1]

    def _read(self, i):
        k = bisect.bisect_right(self._starts, i) - 1
        off, data = self._group(k)
        img = pixels(self._index, i, off, data, i - self._starts[k], self.path, "data.parquet")
        return self._index.sample(i, img.copy())  # a view would pin the whole row group

    def _read_many(self, idx):
        out = [None] * len(idx)
        for j in np.argsort(idx, kind="stable").tolist():  # in file order: each row group read once
            out[j] = self._read(int(idx[j]))
        return out

    def _iter(self):
        with self._lock:
            batches = self._handles.iter_batches(batch_size=max(np.diff(self._starts).tolist() or [1]),
                                                 columns=["image"])
        index, i = self._index, 0
        while True:
            with self._lock:
                b = self._decode(next, batches, None)
            if b is None:
                return
            off, data = _binary(b.column(0))
            for j in range(len(off) - 1):
                yield index.sample(i, pixels(index, i, off, data, j, self.path, "data.parquet"))
                i += 1


Parquet.reader = ParquetReader


def _binary(col) -> tuple[list[int], np.ndarray]:
    """The offsets (a list) and the data (zero-copy) of a large_binary Arrow array."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    off = np.frombuffer(col.buffers()[1], np.int64)[col.offset:][:len(col) + 1]
    return off.tolist(), np.frombuffer(col.buffers()[2] or b"", np.uint8)


def bare_pyarrow(c: BoundInput, rows: int, compression: str) -> BoundRun:
    """pyarrow on a Parquet file of the pool's pixels (one binary column, ``rows`` per row group):
    ``iter_batches`` for a scan, ``read_row_group`` for ``r[i]`` (the last one kept), and
    ``read_row_groups`` + ``take`` for a batch; each image a view + Sample."""
    pool, touch, sample = c.pool, c.touch, c.pool.sample
    spec = [(a[1].dtype, a[1].shape) for a in pool.args]

    def make(tmp: Path):
        imgs = pa.array([a[1].tobytes() for a in pool.args], pa.large_binary())
        pq.write_table(pa.table({"image": imgs}), tmp, row_group_size=rows, compression=compression.upper(),
                       use_dictionary=False, write_statistics=False)

    path = c.store(f"bare-{rows}-{compression}.parquet", make)
    pf = pq.ParquetFile(path, pre_buffer=False)

    def put(i, off, data, j):
        dt, sh = spec[i]
        touch(sample(i, data[off[j]:off[j + 1]].view(dt).reshape(sh)).image)

    if c.op == "scan":
        n = len(c.order)

        def run():
            k = 0
            while k < n:
                for b in pf.iter_batches(batch_size=rows, columns=["image"]):
                    off, data = _binary(b.column(0))
                    for j in range(min(len(off) - 1, n - k)):
                        put(k % pool.m, off, data, j)
                        k += 1
                    if k == n:
                        break
            return k
    elif c.op == "random":
        idx = c.idx

        def run():
            group = None
            for i in idx:
                if group != i // rows:
                    group = i // rows
                    off, data = _binary(pf.read_row_group(group, columns=["image"]).column(0))
                put(i, off, data, i % rows)
            return len(idx)
    else:
        chunks = c.chunks()

        def run():
            k = 0
            for ch in chunks:
                groups = np.unique(ch // rows)
                first = np.searchsorted(groups, ch // rows) * rows  # where each group starts in the read
                t = pf.read_row_groups(groups.tolist(), columns=["image"])
                off, data = _binary(t.column(0).take(first + ch % rows))
                for j, i in enumerate(ch.tolist()):
                    put(i, off, data, j)
                    k += 1
            return k
    return BoundRun(run, pf.close, [path])
