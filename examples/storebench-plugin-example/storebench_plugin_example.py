"""pngdir: a folder of PNG files and a JSON-lines index, storebench's worked plug-in format.

Every image is ``images/{position:08d}.png``, written by Pillow, read back with
:func:`storebench.formats.png.decode`; ``index.jsonl`` holds one line per sample
(key, label, boxes, box labels, metadata, dtype, shape).

A model for a format package: one module, one entry point, a ten-line
``FormatTests`` subclass; ``image_codec = "png"`` gives it the decode-only
bound.  Caveats: one inode per image; no 16-bit colour (Pillow cannot write it).
"""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from storebench.formats import DatasetError, Format, Reader, Sample
from storebench.formats.png import decode


def _name(i: int) -> str:  # the file of sample i
    return f"images/{i:08d}.png"


class PNGDirReader(Reader):
    def _open_handles(self):
        try:  # read_bytes: relative to the dataset directory the reader pinned at open
            records = [json.loads(line) for line in self.read_bytes("index.jsonl").decode().splitlines()]
        except PermissionError:
            raise  # unreadable is not damaged
        except (OSError, ValueError) as err:
            raise DatasetError(self.path, f"index.jsonl cannot be read: {err}") from err
        if len(records) != self._n or not all(isinstance(r, dict) and isinstance(r.get("key"), str)
                                              for r in records):
            raise DatasetError(self.path, f"index.jsonl does not describe {self._n} samples")
        self._index = records
        return records  # nothing stays open: r[i] opens its file, as loose files do

    def _keys(self):
        return [r["key"] for r in self._index]

    def _read(self, i):
        r = self._index[i]
        try:
            img = decode(self.read_bytes(_name(i))).astype(r["dtype"], copy=False).reshape(r["shape"])
            return Sample(r["key"], img, r["label"], np.array(r["boxes"], np.float32).reshape(-1, 4),
                          r["box_labels"], r["meta"])
        except PermissionError:
            raise
        except (OSError, SyntaxError, ValueError, KeyError, TypeError) as err:  # a damaged file or line
            raise DatasetError(self.path, f"sample {i} ({_name(i)}) is damaged: {err}") from err


class PNGDir(Format):
    name = "pngdir"
    image_codec = "png"  # PNG files: the decode-only bound, with no edit to storebench
    libraries = ("pillow",)
    # (H, W, 1) is saved as 2-D and reshaped back from the index.
    modes = frozenset({("uint8", c) for c in range(5)} | {("uint16", 0), ("uint16", 1)})
    reader = PNGDirReader

    @property
    def max_image_pixels(self):  # Pillow refuses to decode more: such images are refused on write
        return Image.MAX_IMAGE_PIXELS

    def __init__(self, *, compress_level: int = 6):
        self.compress_level = compress_level  # options are attributes named like the arguments

    def _write(self, samples, root):
        (root / "images").mkdir()
        with open(root / "index.jsonl", "w", encoding="utf-8") as index:
            for i, s in enumerate(samples):
                img = s.image[:, :, 0] if s.image.ndim == 3 and s.image.shape[2] == 1 else s.image
                Image.fromarray(np.ascontiguousarray(img)).save(
                    root / _name(i), format="PNG", compress_level=self.compress_level)
                index.write(json.dumps({
                    "key": s.key, "label": s.label, "boxes": s.boxes.tolist(),
                    "box_labels": s.box_labels.tolist(), "meta": dict(s.meta),
                    "dtype": s.image.dtype.name, "shape": list(s.image.shape)}) + "\n")
