"""Named training workloads: what a training loop does to each sample it reads.

A storage format matters only through what training feels, so the benchmarks
read through the same per-sample transforms as the notebooks they mirror:

* ``detect-aug`` (VinBigData detection): RandomResizedCrop to 224 (scale 0.9
  to 1.0), shift-scale-rotate (``A.Affine``: shift 6.25%, scale 0.9 to 1.1,
  ±10°), RandomBrightnessContrast (±0.1) and ISONoise, with albumentations;
  pascal_voc boxes and their labels carried along, one radiologist's box set
  per sample (see :func:`radiologist_boxes`), grayscale stacked to 3 channels.
* ``classify-aug`` (APTOS / SURF classification): resize, random horizontal
  flip, random rotation, ImageNet normalisation, CHW float.
* ``ben-preprocess`` (APTOS): crop the dark border (gray tolerance 7), resize
  to 256, then Ben Graham's ``4·img − 4·GaussianBlur(σ=10) + 128``.
* ``dicom-display`` (VinBigData DICOM): modality and VOI LUT, MONOCHROME1
  inversion, min-max to uint8, shortest side 600, through
  :func:`storebench.formats.dicom.display_transform` (see :class:`DicomDisplay`).
* ``random-patch`` (nnU-Net / batchgenerators / MONAI patch training): a
  random 224x224 patch of an image or 64^3 patch of a volume, read through
  ``reader.read_region`` so that formats with ``partial_reads`` read only it,
  with the label and the boxes clipped to the patch (see :class:`RandomPatch`).
* ``none``: the sample as read (the baseline).

Augmentations return a model input, ``{"image", "label", "key"}`` plus
``"boxes"``, ``"box_labels"`` and ``"rad_id"`` for detection; the image is a
torch tensor when torch is installed, else a float32 NumPy array.
Preprocessing workloads return a :class:`formats.Sample`, so they run either
on every read or once at write time (``fmt.write(map(wl, reader), path)``).
``"a+b"`` chains workloads: ``ben-preprocess+classify-aug``.

Randomness is reproducible: each process draws from its own generator,
seeded by ``(seed, RANK, DataLoader worker seed)``; the worker seed comes from
the DataLoader's generator, so a seeded loader repeats its augmentations.
Caveats: uint16 images are min-max scaled to uint8 before augmentation (what
the notebooks trained on: 8-bit PNGs); the cv2-based workloads need
``opencv-python-headless`` (installed with albumentations), ``detect-aug``
albumentations and ``dicom-display`` pydicom.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from storebench.formats import NO_BOXES, NO_LABELS, Sample, dataset_files, make_sample

if TYPE_CHECKING:
    import torch

__all__ = ["WORKLOADS", "RandomPatch", "Workload", "WorkloadDataset", "clip_boxes", "collate", "get_workload",
           "radiologist_boxes", "random_region", "time_split"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: meta key of the radiologist of each box: comma-separated ids, one per box.
BOX_RAD_IDS = "box_rad_ids"
#: time_split reads at most this many bytes of the dataset's files to measure their read rate.
READ_BUDGET = 256 << 20
_HINTS = {"cv2": "pip install opencv-python-headless", "albumentations": "pip install 'storebench[aug]'",
          "pydicom": "pip install 'storebench[dicom]'"}


def _need(module: str):
    if module == "albumentations":
        # Otherwise its import asks PyPI for a newer version: a network call from every
        # worker, and a warning when offline (an error where warnings are errors).
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"this workload needs {module}: {_HINTS.get(module, '')}") from err


# --------------------------------------------------------------------------- image helpers


def as_uint8(img: np.ndarray) -> np.ndarray:
    """uint8 unchanged; uint16 min-max scaled to 0..255 (a constant image gives zeros)."""
    if img.dtype == np.uint8:
        return img
    cv2 = _need("cv2")
    return cv2.normalize(np.ascontiguousarray(img), None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)


def _plain(img: np.ndarray) -> np.ndarray:
    """(H, W) for one channel or gray+alpha, (H, W, 3) for RGB and RGBA (alpha dropped)."""
    if img.ndim == 3:
        return img[:, :, 0] if img.shape[2] < 3 else img[:, :, :3]
    return img


def rgb3(img: np.ndarray) -> np.ndarray:
    """Any Sample image as (H, W, 3) uint8: grayscale stacked to 3 channels."""
    img = _plain(as_uint8(img))
    return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img)


def _boxes_kept(boxes, labels, w: int, h: int):
    """Boxes clipped to a ``w`` x ``h`` image; those left with no area are dropped."""
    boxes = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4), 0, np.float32([w, h, w, h]))  # type: ignore[arg-type]  # stubs: scalar only
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return np.ascontiguousarray(boxes[keep]), np.ascontiguousarray(np.asarray(labels, np.int64)[keep])


def radiologist_boxes(s: Sample, rng: np.random.Generator):
    """One radiologist's boxes of ``s``: ``(boxes, box_labels, rad_id)``.

    ``meta["box_rad_ids"]`` names the radiologist of each box, comma-separated
    in box order (``"R8,R8,R10"``: what :func:`fixtures.from_folder` builds from
    a VinBigData-style CSV with a ``rad_id`` column); one of them is drawn from
    ``rng`` and only their boxes are kept.  Without it all boxes form one set,
    by ``meta["rad_id"]`` if present (the xray preset: one reader per image).
    """
    ids = s.meta.get(BOX_RAD_IDS)
    if not ids or not len(s.boxes):
        return s.boxes, s.box_labels, s.meta.get("rad_id")
    per_box = np.array(str(ids).split(","))
    if len(per_box) != len(s.boxes):
        raise ValueError(f"{s.key}: meta[{BOX_RAD_IDS!r}] names {len(per_box)} radiologists "
                         f"for {len(s.boxes)} boxes")
    rads = sorted(set(per_box.tolist()))
    rad = rads[int(rng.integers(len(rads)))]
    keep = per_box == rad
    return s.boxes[keep], s.box_labels[keep], rad


def _with_image(s: Sample, image: np.ndarray, boxes, box_labels, tag: str, **meta) -> Sample:
    m = {**s.meta, **meta}
    m["preprocess"] = f"{m['preprocess']}+{tag}" if m.get("preprocess") else tag
    return make_sample(s.key, image, s.label, boxes, box_labels, m)


# --------------------------------------------------------------------------- workloads


def _stream_key(seed: int) -> list[int]:
    """Entropy of this process's generator: seed, distributed rank, DataLoader worker seed."""
    key = [seed, int(os.environ.get("RANK") or 0)]
    data = sys.modules.get("torch.utils.data")
    info = data.get_worker_info() if data is not None else None
    return key if info is None else key + [info.seed]


class Workload:
    """A per-sample transform; options are keyword arguments stored as attributes.

    ``kind`` is ``"preprocess"`` (Sample to Sample: may run once at write time)
    or ``"augment"`` (Sample to model input).  ``requires`` names the modules
    it imports; :func:`get_workload` reports a missing one with an install hint.
    """

    name: str  # Chain sets both per instance
    kind: str = "augment"
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    #: A workload that reads its items itself (``read(reader, i)``, ``read_many(reader, indices)``),
    #: say only a region of each: :class:`WorkloadDataset` hands it the reader.
    reads: ClassVar[bool] = False

    def __init__(self, *, seed: int = 0):
        self.seed = seed
        self._state: tuple[int, np.random.Generator] | None = None

    @property
    def options(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def rng(self) -> np.random.Generator:
        """This process's generator, made on first use in each process (and worker)."""
        pid = os.getpid()
        if self._state is None or self._state[0] != pid:
            self._state = (pid, np.random.default_rng(_stream_key(self.seed)))
            self._reseed(self._state[1])
        return self._state[1]

    def _reseed(self, rng: np.random.Generator) -> None:
        """Seed library generators (albumentations) from ``rng``."""

    def __getstate__(self):  # options only: generators and pipelines are rebuilt per process
        return self.options

    def __setstate__(self, state):
        self.__init__(**state)

    def __call__(self, s: Sample):
        raise NotImplementedError

    def read(self, reader, i: int):
        """Item ``i`` of ``reader`` (workloads with ``reads``)."""
        raise NotImplementedError

    def read_many(self, reader, indices: Sequence[int]) -> list:
        return [self.read(reader, i) for i in indices]

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"


class _Tensor(Workload):
    """An augmentation whose image ends as a torch tensor (``tensor=None``: if torch is installed)."""

    def __init__(self, *, tensor: bool | None = None, seed: int = 0):
        super().__init__(seed=seed)
        self.tensor = importlib.util.find_spec("torch") is not None if tensor is None else tensor

    def _out(self, s: Sample, chw: np.ndarray | torch.Tensor, **extra) -> dict:
        if self.tensor:
            import torch

            chw = torch.from_numpy(chw)
            extra = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                     for k, v in extra.items()}
        return {"image": chw, "label": s.label, "key": s.key, **extra}


class NoWorkload(Workload):
    name, kind = "none", "preprocess"
    description = "the sample as read (baseline)"

    def __call__(self, s):
        return s


class DetectAug(_Tensor):
    """VinBigData detection augmentation; image ``(3, size, size)`` float in 0..1.

    Geometry and brightness run on the native channels (cheaper on large
    grayscale radiographs), then the image is stacked to RGB for ISONoise.
    Boxes are pascal_voc, clipped to the output, and dropped (with their
    labels) when nothing of them is left.
    """

    name = "detect-aug"
    description = ("VinBigData detection: RandomResizedCrop 224, shift-scale-rotate ±10°, "
                   "brightness/contrast ±0.1, ISONoise; boxes and one radiologist's set")
    requires = ("cv2", "albumentations")

    def __init__(self, *, size: int = 224, rotate: float = 10, p: float = 0.5,
                 tensor: bool | None = None, seed: int = 0):
        super().__init__(tensor=tensor, seed=seed)
        self.size, self.rotate, self.p = size, rotate, p
        self._geo = self._noise = None

    def _reseed(self, rng):
        A = _need("albumentations")
        if self._geo is None:
            self._geo = A.Compose([
                A.RandomResizedCrop(size=(self.size, self.size), scale=(0.9, 1.0)),
                # ShiftScaleRotate's defaults as an Affine: the former warns in albumentations 2.
                A.Affine(translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1),
                         rotate=(-self.rotate, self.rotate), border_mode=0, fill=0, p=self.p),
                A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=self.p),
            ], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True,
                                        filter_invalid_bboxes=True))
            self._noise = A.Compose([A.ISONoise(p=self.p)])
        self._geo.set_random_seed(int(rng.integers(2**31)))
        self._noise.set_random_seed(int(rng.integers(2**31)))

    def __call__(self, s):
        rng = self.rng()
        boxes, labels, rad = radiologist_boxes(s, rng)
        img = _plain(as_uint8(s.image))
        boxes, labels = _boxes_kept(boxes, labels, img.shape[1], img.shape[0])
        out = self._geo(image=img, bboxes=boxes, labels=labels)
        img = rgb3(out["image"])
        img = self._noise(image=img)["image"]
        boxes, labels = _boxes_kept(out["bboxes"], out["labels"], self.size, self.size)
        chw = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
        chw *= np.float32(1 / 255)
        return self._out(s, chw, boxes=boxes, box_labels=labels, rad_id=rad)


class ClassifyAug(_Tensor):
    """APTOS / SURF classification augmentation; image ``(3, size, size)`` normalised float."""

    name = "classify-aug"
    description = "APTOS/SURF classification: resize, random h-flip, random rotation, normalize, CHW float"
    requires = ("cv2",)

    def __init__(self, *, size: int = 224, degrees: float = 15, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 tensor: bool | None = None, seed: int = 0):
        super().__init__(tensor=tensor, seed=seed)
        self.size, self.degrees, self.mean, self.std = size, degrees, tuple(mean), tuple(std)

    def __call__(self, s):
        cv2, rng, n = _need("cv2"), self.rng(), self.size
        img = cv2.resize(rgb3(s.image), (n, n), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        m = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), rng.uniform(-self.degrees, self.degrees), 1)
        img = cv2.warpAffine(np.ascontiguousarray(img), m, (n, n), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        scale = np.float32(1 / 255) / np.float32(self.std)
        chw = (img.astype(np.float32) * scale - np.float32(self.mean) / np.float32(self.std))
        return self._out(s, np.ascontiguousarray(chw.transpose(2, 0, 1)))


class BenPreprocess(Workload):
    """Ben Graham's APTOS preprocessing; a uint8 ``(size, size[, 3])`` Sample.

    The crop keeps the bounding box of pixels whose gray value exceeds
    ``tol`` (the notebook's ``np.ix_`` also drops fully dark rows inside the
    picture, which fundus photographs do not have); an image darker than
    that everywhere is kept whole.  Boxes follow the crop and the resize.
    """

    name, kind = "ben-preprocess", "preprocess"
    description = "APTOS: crop the dark border (tol 7), resize 256, 4*img - 4*GaussianBlur(sigma 10) + 128"
    requires = ("cv2",)

    def __init__(self, *, size: int = 256, tol: int = 7, sigma: float = 10, seed: int = 0):
        super().__init__(seed=seed)
        self.size, self.tol, self.sigma = size, tol, sigma

    def __call__(self, s):
        cv2 = _need("cv2")
        img = _plain(as_uint8(s.image))
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
        bright = gray > self.tol
        rows, cols = np.flatnonzero(bright.any(1)), np.flatnonzero(bright.any(0))
        if len(rows):
            y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        else:  # too dark to crop: keep it whole, like the notebook
            y0, y1, x0, x1 = 0, img.shape[0], 0, img.shape[1]
        n = self.size
        img = cv2.resize(np.ascontiguousarray(img[y0:y1, x0:x1]), (n, n), interpolation=cv2.INTER_LINEAR)
        img = cv2.addWeighted(img, 4, cv2.GaussianBlur(img, (0, 0), self.sigma), -4, 128)
        f = np.float32([n / (x1 - x0), n / (y1 - y0)] * 2)
        boxes, labels = _boxes_kept((s.boxes - np.float32([x0, y0, x0, y0])) * f, s.box_labels, n, n)
        return _with_image(s, img, boxes, labels, self.name)


class DicomDisplay(Workload):
    """The VinBigData DICOM-to-picture step; a uint8 Sample, shortest side ``size``.

    A grayscale Sample is wrapped in a minimal pydicom Dataset built from its
    pixels and meta (``PhotometricInterpretation``, ``BitsStored``,
    ``PixelRepresentation``, ``RescaleSlope``/``RescaleIntercept``,
    ``WindowCenter``/``WindowWidth``, ``VOILUTFunction``: what
    :func:`fixtures.from_folder` keeps from ``.dcm`` files; absent ones take
    the DICOM defaults, MONOCHROME2 and no window) and handed to
    :func:`storebench.formats.dicom.display_transform`, so an array and its file give the
    same picture.  A VOI LUT *sequence* has no meta form: for that, call
    ``display_transform(reader.dataset(i))`` on a dicom dataset.  Colour
    images skip the grayscale steps and are only resized.  The output meta
    drops the tags it applied (and says MONOCHROME2 where it named one), so
    a second pass only rescales.  Boxes follow the resize.
    """

    name, kind = "dicom-display", "preprocess"
    description = "VinBigData DICOM: VOI LUT, MONOCHROME1 inversion, scale to uint8, shortest side 600"
    requires = ("pydicom",)
    TAGS = ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "VOILUTFunction")
    APPLIED = TAGS + ("BitsStored", "PixelRepresentation")  # meta keys the output no longer obeys

    def __init__(self, *, size: int | None = 600, seed: int = 0):
        super().__init__(seed=seed)
        self.size = size

    def _dataset(self, s: Sample, img: np.ndarray):
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian

        ds, meta, bits = Dataset(), s.meta, 8 * img.itemsize
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Rows, ds.Columns, ds.SamplesPerPixel = *img.shape, 1
        ds.PhotometricInterpretation = meta.get("PhotometricInterpretation") or "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored = bits, int(meta.get("BitsStored") or bits)
        ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, int(meta.get("PixelRepresentation") or 0)
        for tag in self.TAGS:
            if meta.get(tag) is not None:
                setattr(ds, tag, meta[tag])
        ds.PixelData = np.ascontiguousarray(img).tobytes()
        return ds

    def __call__(self, s):
        _need("pydicom")
        from storebench.formats.dicom import display_transform

        img = _plain(s.image)
        h, w = img.shape[:2]
        if img.ndim == 2:
            out = display_transform(self._dataset(s, img), size=self.size)
        else:
            from PIL import Image

            out = as_uint8(img)
            if self.size is not None:
                k = self.size / min(h, w)
                out = np.asarray(Image.fromarray(out).resize(
                    (max(1, round(w * k)), max(1, round(h * k))), Image.LANCZOS))
        f = np.float32([out.shape[1] / w, out.shape[0] / h] * 2)
        boxes, labels = _boxes_kept(s.boxes * f, s.box_labels, out.shape[1], out.shape[0])
        meta = {k: v for k, v in s.meta.items() if k not in self.APPLIED}
        if out.ndim == 2 and "PhotometricInterpretation" in meta:
            meta["PhotometricInterpretation"] = "MONOCHROME2"  # inverted already
        s = make_sample(s.key, s.image, s.label, s.boxes, s.box_labels, meta)
        return _with_image(s, out, boxes, labels, self.name)


# --------------------------------------------------------------------------- patches


def patch_side(value, rank: int, what: str = "patch") -> tuple[int, ...]:
    """A patch shape of ``rank`` axes from an int side (``224`` -> ``(224, 224)``) or a shape."""
    def whole(v) -> bool:
        return bool(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1)

    sides = (value,) * rank if whole(value) else value
    try:
        sides = tuple(sides)
    except TypeError:
        sides = ()
    if len(sides) != rank or not all(whole(v) for v in sides):
        raise ValueError(f"{what}: expected a whole number >= 1 or {rank} of them, got {value!r}")
    return tuple(int(v) for v in sides)


def random_region(spatial: Sequence[int], patch: Sequence[int], rng: np.random.Generator) -> tuple[slice, ...]:
    """A uniformly placed region of ``patch`` (clipped to the image) inside ``spatial`` sides.

    ``spatial`` is ``(H, W)`` or ``(D, H, W)`` and ``patch`` has as many sides;
    a side longer than the image's is the whole axis.
    """
    if len(spatial) != len(patch):
        raise ValueError(f"a {len(patch)}-axis patch for a {len(spatial)}-axis image")
    out = []
    for n, p in zip(spatial, patch):
        p = min(int(p), int(n))
        start = int(rng.integers(0, int(n) - p + 1))
        out.append(slice(start, start + p))
    return tuple(out)


def region_origin(region: Sequence[slice]) -> tuple[int, ...]:
    """The first pixel of a region in box coordinate order: ``(x, y)`` or ``(x, y, z)``."""
    return tuple(int(sl.start) for sl in reversed(region))


def clip_boxes(boxes, labels, region: Sequence[slice]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of an image in the coordinates of its ``region``: shifted, clipped, empty ones dropped.

    2-D: ``(N, 4)`` x_min, y_min, x_max, y_max and a ``(rows, cols)`` region;
    volumes: ``(N, 6)`` x_min, y_min, z_min, x_max, y_max, z_max and a
    ``(depth, rows, cols)`` region (z along depth).  A box left with no
    extent on some axis is dropped with its label.
    """
    k = len(region)
    origin = np.asarray(region_origin(region) * 2, np.float32)
    size = np.asarray(tuple(int(sl.stop) - int(sl.start) for sl in reversed(region)) * 2, np.float32)
    b = np.asarray(boxes, np.float32).reshape(-1, 2 * k) - origin
    b = np.clip(b, np.float32(0), size)
    keep = np.all(b[:, k:] > b[:, :k], axis=1)
    return np.ascontiguousarray(b[keep]), np.ascontiguousarray(np.asarray(labels, np.int64).reshape(-1)[keep])


def _spatial(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(shape[:3]) if len(shape) == 4 else tuple(shape[:2])


class RandomPatch(_Tensor):
    """batchgenerators-style random patches: one region of each sample, read through ``read_region``.

    Each item is a ``size`` patch of a 2-D image (default 224x224) or a
    ``volume_size`` patch of a volume (default 64^3), uniformly placed and
    clipped to the image; with ``pad`` (default) a smaller image is padded
    with zeros at its end to the full patch shape, as batchgenerators'
    ``random_crop`` does, so batches stack.  The output image is channel-first
    float32, ``(C, H, W)`` or ``(C, D, H, W)``, the stored values unscaled;
    ``boxes`` are in patch coordinates (clipped, empty ones dropped, their
    labels with them) and ``origin`` is the patch's first pixel as
    ``(x, y[, z])``.

    Through :class:`WorkloadDataset`, an item reads only its region
    (:meth:`read`, :meth:`read_many`: ``reader.read_region(s)``, so formats
    with ``partial_reads`` never hold the whole image); its position comes from
    a generator seeded by ``(seed, RANK, DataLoader worker seed, item)``, so
    an item's patch does not depend on what else its process read.  Called on
    a Sample (a chain, or without a reader) it crops the whole image with the
    process's generator.
    """

    name = "random-patch"
    description = ("batchgenerators-style random patch (224x224, volumes 64^3) read through read_region, "
                   "boxes clipped to the patch")
    reads = True

    def __init__(self, *, size=224, volume_size=64, pad: bool = True, tensor: bool | None = None,
                 seed: int = 0):
        super().__init__(tensor=tensor, seed=seed)
        self.size = patch_side(size, 2, "size")
        self.volume_size = patch_side(volume_size, 3, "volume_size")
        self.pad = bool(pad)

    def patch_for(self, spatial: Sequence[int]) -> tuple[int, ...]:
        return self.volume_size if len(spatial) == 3 else self.size

    def item_rng(self, i: int) -> np.random.Generator:
        """The generator of item ``i`` in this process."""
        return np.random.default_rng(_stream_key(self.seed) + [int(i)])

    def region(self, shape: Sequence[int], rng: np.random.Generator) -> tuple[slice, ...]:
        """A random region for an image of ``shape`` (the full array shape)."""
        sp = _spatial(shape)
        return random_region(sp, self.patch_for(sp), rng)

    def __call__(self, s: Sample) -> dict:
        r = self.region(s.image.shape, self.rng())
        return self.finish(s, np.asarray(s.image[r]), r)

    def fetch(self, reader, i: int) -> tuple[Sample, np.ndarray, tuple[slice, ...]]:
        """Item ``i``'s (annotations, patch pixels, region), reading only the region where the
        format can: see :meth:`fetch_many`."""
        return self.fetch_many(reader, [i])[0]

    def fetch_many(self, reader, indices: Sequence[int]) -> list[tuple[Sample, np.ndarray, tuple[slice, ...]]]:
        """(annotations, patch, region) per item; one ``read_regions`` for the items whose shape
        the reader knows without reading them, whole reads for the others."""
        idx = [int(i) % len(reader) for i in indices]
        shapes = [image_shape(reader, i) for i in idx]
        regions = [None if sh is None else self.region(sh, self.item_rng(i)) for i, sh in zip(idx, shapes)]
        known = [k for k, r in enumerate(regions) if r is not None]
        out: list = [None] * len(idx)
        if known:
            patches = reader.read_regions([idx[k] for k in known], [regions[k] for k in known])
            for k, p in zip(known, patches):
                out[k] = (patch_annotations(reader, idx[k], p), p, regions[k])
        for k, r in enumerate(regions):
            if r is None:  # only a read tells the shape: read it whole and crop
                s = reader[idx[k]]
                r = self.region(s.image.shape, self.item_rng(idx[k]))
                out[k] = (s, np.array(s.image[r]), r)
        return out

    def read(self, reader, i: int) -> dict:
        """Item ``i``: its patch, label and clipped boxes."""
        return self.finish(*self.fetch(reader, i))

    def read_many(self, reader, indices: Sequence[int]) -> list[dict]:
        return [self.finish(*f) for f in self.fetch_many(reader, indices)]

    def finish(self, s: Sample, patch: np.ndarray, region: tuple[slice, ...]) -> dict:
        """The model input from a patch of ``s`` (``s``'s pixels are not used, only its annotations)."""
        boxes, labels = clip_boxes(s.boxes, s.box_labels, region)
        img = patch if patch.ndim == len(region) + 1 else patch[..., None]  # (H, W) -> (H, W, 1)
        want = self.patch_for(img.shape[:-1])
        if self.pad and img.shape[:-1] != want:
            full = np.zeros((*want, img.shape[-1]), img.dtype)
            full[tuple(slice(0, n) for n in img.shape[:-1])] = img
            img = full
        chw = np.ascontiguousarray(np.moveaxis(img, -1, 0), dtype=np.float32)
        return self._out(s, chw, boxes=boxes, box_labels=labels,
                         origin=np.asarray(region_origin(region), np.int64))


def image_shape(reader, i: int) -> tuple[int, ...] | None:
    """The shape of sample ``i`` if ``reader`` knows it without reading the pixels (its index), else None."""
    reader.handles  # opens the index
    try:
        shape = reader._image_shape(i)
    except (AttributeError, TypeError, IndexError):
        return None
    return None if shape is None else tuple(int(v) for v in shape)


def patch_annotations(reader, i: int, image: np.ndarray) -> Sample:
    """Sample ``i``'s key, label, boxes and meta with ``image`` as pixels, from the reader's index
    where it has one (nothing decoded), else from a whole read."""
    index = getattr(reader, "_index", None)
    build = getattr(index, "sample", None)
    if callable(build):
        return build(i, image)
    return reader[i]


class Chain(Workload):
    """``a+b+...``: preprocessing steps, then at most one augmentation last."""

    def __init__(self, parts: Sequence[Workload]):
        self.parts = tuple(parts)
        self.name = "+".join(p.name for p in parts)
        self.kind = parts[-1].kind
        self.seed = parts[0].seed

    @property
    def options(self):
        return {p.name: p.options for p in self.parts}

    def __getstate__(self):
        return {"parts": self.parts}

    def __setstate__(self, state):
        self.__init__(state["parts"])

    def __call__(self, s):
        for p in self.parts:
            s = p(s)
        return s


_CLASSES: dict[str, type[Workload]] = {c.name: c for c in (NoWorkload, DetectAug, ClassifyAug,
                                                            BenPreprocess, DicomDisplay, RandomPatch)}
#: Read-only mapping of workload name to a one-line description.
WORKLOADS = MappingProxyType({k: c.description for k, c in _CLASSES.items()})


def get_workload(name: str, **options) -> Workload:
    """The workload ``name`` with ``options`` (``seed`` and its own keywords).

    ``"a+b"`` chains workloads (preprocessing first); a chain takes ``seed`` only.

    Raises
    ------
    ValueError
        Unknown name (the message lists them) or an augmentation before the end of a chain.
    TypeError
        An option the workload does not take.
    ImportError
        A library the workload needs is missing; the message says how to install it.
    """
    names = name.split("+")
    for part in names:
        if part not in _CLASSES:
            raise ValueError(f"unknown workload {part!r}; workloads: {', '.join(WORKLOADS)}")
    if len(names) > 1:
        if set(options) - {"seed"}:
            raise TypeError(f"{name}: a chain takes only seed, got {', '.join(sorted(options))}")
        parts = [get_workload(p, **options) for p in names]
        if any(p.kind != "preprocess" for p in parts[:-1]):
            raise ValueError(f"{name}: only the last workload of a chain may be an augmentation")
        return Chain(parts)
    cls = _CLASSES[name]
    for module in cls.requires:
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"workload {name!r} needs {module}: {_HINTS[module]}")
    return cls(**options)


# --------------------------------------------------------------------------- DataLoader glue


#: How :class:`WorkloadDataset` gets samples out of the store (its ``fetch``).
FETCHES = ("reopen", "item", "batch", "lookup")


class WorkloadDataset:
    """A map-style dataset for ``torch.utils.data.DataLoader``: a reader plus a workload.

    ``fetch`` is how samples leave the store:

    * ``"reopen"``: every ``__getitem__`` opens the dataset, reads item ``i``
      and closes it again (the naive ``with h5py.File(path) as f:`` inside
      ``__getitem__``): one open per item, in whichever process runs it.
    * ``"item"``: one ``reader[i]`` per ``__getitem__`` from one reader per
      process: the dataset holds the reader, which pickles as its path, so
      each DataLoader worker opens it once (on its first item, under fork,
      spawn and forkserver alike) and keeps it for its life.
    * ``"batch"``: one ``read_batch`` per batch through ``__getitems__``
      (which DataLoader calls when a dataset has it), same reader per process.
    * ``"lookup"``: ``"item"`` behind the APTOS notebook's name lookup: item
      ``i``'s name is looked up among *all* the names,
      ``np.where(names == name)[0][0]`` (O(N) per item), and that position is
      read.  ``names`` are the dataset's keys, an object array (as a pandas
      column's ``.values``), read once per process.
    """

    def __init__(self, reader, workload: Workload | None = None, *, fetch: str = "batch"):
        if fetch not in FETCHES:
            raise ValueError(f"fetch: {fetch!r}, choose from {', '.join(FETCHES)}")
        self.reader, self.workload, self.fetch = reader, workload, fetch
        self._names: tuple[int, np.ndarray] | None = None  # (pid, the keys), for "lookup"

    def __len__(self):
        return len(self.reader)

    def names(self) -> np.ndarray:
        """The dataset's keys as an object array, read once per process (``fetch="lookup"``)."""
        pid = os.getpid()
        if self._names is None or self._names[0] != pid:
            keys = self.reader.keys()
            names = np.empty(len(keys), object)
            names[:] = keys
            self._names = (pid, names)
        return self._names[1]

    def lookup(self, i: int) -> int:
        """Item ``i``'s position found by its name, as the APTOS notebook: a scan of every name."""
        names = self.names()
        name = names[i]
        return int(np.where(names == name)[0][0])

    def __getstate__(self):  # the names are read again in each process, not shipped to workers
        return {**self.__dict__, "_names": None}

    def _read(self, i):
        wl = self.workload
        reads = wl is not None and wl.reads
        if self.fetch == "reopen":
            r = self.reader
            with r.format.open(r.path) as fresh:
                return wl.read(fresh, i) if wl is not None and reads else fresh[i]
        if self.fetch == "lookup":
            i = self.lookup(i)
        return wl.read(self.reader, i) if wl is not None and reads else self.reader[i]

    def __getitem__(self, i):
        s = self._read(i)
        wl = self.workload
        return s if wl is None or wl.reads else wl(s)

    def __getitems__(self, indices):
        if self.fetch != "batch":
            return [self[i] for i in indices]
        wl = self.workload
        if wl is not None and wl.reads:
            return wl.read_many(self.reader, indices)
        samples = self.reader.read_batch(indices)
        return samples if wl is None else [wl(s) for s in samples]


def _as_dict(item) -> dict:
    if isinstance(item, Sample):
        out = {"image": item.image, "label": item.label, "key": item.key}
        if len(item.boxes):
            out.update(boxes=item.boxes, box_labels=item.box_labels)
        return out
    return item


def _torch_views(torch, arrays: list) -> list:
    """Tensors equal to ``arrays``, as views into one new buffer when they share a dtype.

    A DataLoader worker hands each tensor storage to the main process on its
    own (a file descriptor over a socket, ~0.4 ms here): a batch of 64 ragged
    images with boxes was ~190 handoffs, more than the reading.  Views into
    one buffer travel as one storage and arrive as the same list of tensors.
    """
    tensors = _as_tensors(torch, arrays)
    if len(tensors) < 2 or len({t.dtype for t in tensors}) != 1:
        return [t.clone() for t in tensors]  # own memory: never a view of a reader's map
    dtype = tensors[0].dtype
    flat = torch.cat([t.reshape(-1) for t in tensors], out=_new_flat(torch, sum(t.numel() for t in tensors), dtype))
    return [v.view(t.shape) for v, t in zip(torch.split(flat, [t.numel() for t in tensors]), tensors)]


def _new_flat(torch, numel: int, dtype):
    """An empty 1-D tensor; in a DataLoader worker, in shared memory from the start.

    The same private call ``default_collate`` makes: a tensor in ordinary
    memory would be copied into shared memory when the batch is sent.
    """
    from torch.utils.data import get_worker_info
    if get_worker_info() is not None:
        try:
            elem = torch.empty(0, dtype=dtype)
            return elem.new(elem._typed_storage()._new_shared(numel))
        except (AttributeError, RuntimeError):  # a torch without it: one more copy, same result
            pass
    return torch.empty(numel, dtype=dtype)


def _as_tensors(torch, arrays: list) -> list:
    """``torch.from_numpy`` of each array (tensors pass through), without copying.

    Reader images may be read-only views (memory maps): torch only reads them
    here (cat, stack and clone copy), so its warning about writes does not
    apply.  One filter for the whole list: ``catch_warnings`` per array cost
    more than the conversion.
    """
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        return [a if isinstance(a, torch.Tensor) else torch.from_numpy(a) for a in arrays]


def collate(items: list) -> dict:
    """Batch workload outputs (dicts or Samples) for a DataLoader.

    Images that share shape and dtype are stacked, others listed; labels
    become one tensor, keys a list, and boxes, box labels and radiologists
    per-image lists (empty for images without).  Tensors when torch is
    installed, else NumPy arrays.  The result never shares memory with a
    reader (images may be read-only memory maps): stacking copies.

    With torch, equal shapes go through ``default_collate`` (which in a
    worker stacks straight into shared memory, one copy), and the tensors of
    a list are views into one buffer, so a batch crosses from a worker to
    the main process as a handful of storages, not one per image and box.
    """
    items = [_as_dict(it) for it in items]
    torch = sys.modules.get("torch")
    if torch is None and importlib.util.find_spec("torch") is not None:
        import torch
    imgs = [it["image"] for it in items]
    first = imgs[0]
    same = all(i.shape == first.shape and i.dtype == first.dtype for i in imgs)
    if torch is not None:
        from torch.utils.data import default_collate
        if same:
            images = default_collate(_as_tensors(torch, imgs))
        else:
            images = _torch_views(torch, imgs)
        labels = torch.tensor([it["label"] for it in items])
    else:
        images = np.stack(imgs) if same else [np.array(i) for i in imgs]
        labels = np.array([it["label"] for it in items], np.int64)
    out = {"image": images, "label": labels, "key": [it["key"] for it in items]}
    if any("boxes" in it for it in items):
        for k, empty in (("boxes", NO_BOXES), ("box_labels", NO_LABELS)):
            got = [it.get(k, empty) for it in items]
            out[k] = _torch_views(torch, got) if torch is not None else got
    if any("rad_id" in it for it in items):
        out["rad_id"] = [it.get("rad_id") for it in items]
    if all("origin" in it for it in items):  # random-patch: each patch's first pixel, (x, y[, z])
        origins = [np.asarray(it["origin"]) for it in items]
        out["origin"] = torch.from_numpy(np.stack(origins)) if torch is not None else np.stack(origins)
    return out


# --------------------------------------------------------------------------- where time goes


def _touch(img: np.ndarray) -> None:
    flat = np.ascontiguousarray(img).reshape(-1).view(np.uint8)
    int(flat[::4096].max())  # one byte a page: maps lazily read pixels in


def file_read_rate(path, budget: int = READ_BUDGET, chunk: int = 1 << 20) -> tuple[int, float]:
    """Plain reads of a dataset's files, in order, until ``budget`` bytes: (bytes, seconds)."""
    buf, total = bytearray(chunk), 0
    t = time.perf_counter()
    for f in dataset_files(path):
        with open(f, "rb", buffering=0) as fh:
            while total < budget and (k := fh.readinto(buf)):
                total += k
        if total >= budget:
            break
    return total, time.perf_counter() - t


def time_split(reader, workload: Workload | None, indices: Sequence[int], *,
               evict: Callable[[], None] | None = None) -> dict:
    """Where one process's time per sample goes: read, decode, transform (microseconds).

    * ``get``: ``reader[i]`` with its pixels touched, for each of ``indices``
      (a workload that ``reads`` its items, random-patch: its ``fetch``, the
      region read);
    * ``read``: the sample's share of the dataset's bytes on disk, at the rate
      of plain sequential file reads (at most ``READ_BUDGET`` bytes of them),
      capped at ``get``: what moving the stored bytes costs (for a region read
      by a format with ``partial_reads``, the region's part of that share);
    * ``decode``: ``get - read``: everything the reader does beyond moving
      bytes (parsing, decompressing, building the Sample, read amplification);
    * ``transform``: the workload on the sample.

    Warm (``evict`` None): the file reads come first and leave the files
    cached.  Cold: ``evict()`` runs before the reads of samples and again
    before the file reads, so both come from disk.  One untimed read first
    opens the reader's files.
    """
    idx = [int(i) for i in indices]
    if not idx:
        raise ValueError("time_split: no indices")
    reader[idx[0]]
    stored = sum(os.path.getsize(f) for f in dataset_files(reader.path))
    if evict is None:
        rate = file_read_rate(reader.path)
    else:
        evict()
    get = transform = 0.0
    share = 0.0  # samples' worth of stored bytes moved
    partial = workload is not None and workload.reads and bool(getattr(reader.format, "partial_reads", False))
    for i in idx:
        if workload is not None and workload.reads:
            t0 = time.perf_counter()
            got = workload.fetch(reader, i)  # type: ignore[attr-defined]  # reading workloads have it
            _touch(got[1])
            t1 = time.perf_counter()
            workload.finish(*got)  # type: ignore[attr-defined]
            shape = image_shape(reader, i) if partial else None
            share += got[1].nbytes / (math.prod(shape) * got[1].itemsize) if shape else 1.0
        else:
            t0 = time.perf_counter()
            s = reader[i]
            _touch(s.image)
            t1 = time.perf_counter()
            if workload is not None:
                workload(s)
            share += 1.0
        transform += time.perf_counter() - t1
        get += t1 - t0
    if evict is not None:
        evict()
        rate = file_read_rate(reader.path)
    k, us = len(idx), 1e6
    get_us = get / k * us
    read_us = min(stored / len(reader) * share / k * rate[1] / max(rate[0], 1) * us, get_us)
    parts = {"read": read_us, "decode": get_us - read_us, "transform": transform / k * us}
    return {"split_samples": k, "split_cache": "warm" if evict is None else "cold",
            "split_get_us": round(get_us, 2),
            "split_file_MB/s": round(rate[0] / rate[1] / 1e6, 1) if rate[1] > 0 else None,
            **{f"split_{p}_us": round(v, 2) for p, v in parts.items()},
            "split_dominant": max(parts, key=cast("Callable[[str], float]", parts.get))}
