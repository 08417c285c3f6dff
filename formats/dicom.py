"""dicom: one uncompressed DICOM file per image or volume, labels and boxes in an index.

``images/00000000.dcm``, ... are Explicit VR Little Endian files (no
compression), written and read with pydicom, so that
``pydicom.dcmread(f).pixel_array`` is the stored array:

* 2-D images are Secondary Capture instances: 8- and 16-bit grayscale,
  unsigned or signed (``int16``: ``PixelRepresentation`` 1, two's complement,
  so CT Hounsfield units keep their sign), ``MONOCHROME2`` (``MONOCHROME1``
  when the sample's ``meta["PhotometricInterpretation"]`` says so: only the
  tag changes, not the pixels), and 8-bit colour as ``RGB`` with interleaved
  samples.  Signed images carry an identity Modality LUT
  (``RescaleSlope`` 1, ``RescaleIntercept`` 0, ``RescaleType`` ``US``): the
  stored values are the values.
* Grayscale volumes ``(D, H, W, 1)`` are one multi-frame file each, ``D``
  frames of ``H x W`` (``NumberOfFrames``; ``pixel_array`` is ``(D, H, W)``):
  Multi-frame Grayscale Byte SC for uint8, Multi-frame Grayscale Word SC for
  uint16 and int16, with the SC Multi-frame Image module's identity rescale,
  ``PresentationLUTShape`` ``IDENTITY``, ``BurnedInAnnotation`` ``NO`` and a
  ``FrameLabelVector`` of frame indices as the ``FrameIncrementPointer``.

Keys, labels, boxes (``(N, 6)`` for volumes), metadata and the exact shape
live in ``index.npz``.  Reads decode with :func:`pydicom.pixels.pixel_array`,
which parses only the pixel-module tags (about 20% faster than ``dcmread``
followed by ``.pixel_array``, same decoder and dtype rules).

Pick it to benchmark the medical-imaging baseline (VinBigData, RSNA: a folder
of ``.dcm`` files) or to hand images to DICOM tools.  Caveats: the slowest
format here (pydicom is pure Python: ~0.3 ms to read and ~2 ms to write even
a 32x32 image), one inode and ~350 bytes of header per image; no float32
(DICOM's float pixel data belongs to IODs such as the Parametric Map), no
uint16 colour, no 2- or 4-channel images and no colour volumes; a region read decodes the whole
file.  PS3.3 A.8.4.4 asks Multi-frame Grayscale Word SC for unsigned pixels:
an int16 volume is written signed anyway (``PixelRepresentation`` 1), which
pydicom reads as int16 but a strict validator (dciodvfy) flags; the
conformant alternatives would store offset values
(``pixel_array`` no longer the Sample) or need an Enhanced CT/MR header with
geometry storebench does not know.  Volumes are ``MONOCHROME2`` whatever the
meta says (the multi-frame SC IODs allow nothing else).  Rows and Columns are
16-bit and the pixel data's length 32-bit, so an image or frame with a side
over 65535 pixels or over 4 GiB of pixels in one file is refused on write
with a ``ValueError``.  :func:`display_transform` is the separate, lossy
VinBigData-style preprocessing for viewing and training; the reader never
applies it.
"""
from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import (
    ExplicitVRLittleEndian,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from ._api import DatasetError, Format, Reader
from ._bound import Bound, BoundInput, BoundRun
from ._fs import OpenDir, dataset_files, read_file
from ._index import Index, IndexWriter
from ._sample import modes_of

#: What DICOM holds: 8-, 16-bit and signed 16-bit grayscale images and volumes, 8-bit RGB images.
MODES = (modes_of(("uint8", "uint16", "int16"), (0, 1)) | modes_of(("uint8",), (3,))
         | modes_of(("uint8", "uint16", "int16"), (1,), images=False, volumes=True))
MAX_SIDE = 0xFFFF  # Rows and Columns are US: 16-bit
MAX_PIXEL_BYTES = 0xFFFFFFFE  # a 32-bit even value length (0xFFFFFFFF means "undefined")
FRAME_LABEL_VECTOR = 0x00182002  # (0018,2002), what the FrameIncrementPointer of a volume names


def _to_dataset(s, i: int, study: str, series: str) -> Dataset:
    img, uid = s.image, generate_uid()
    if img.nbytes > MAX_PIXEL_BYTES:
        raise ValueError(f"image of key {s.key!r}: {img.nbytes} bytes of pixels, over the "
                         f"{MAX_PIXEL_BYTES} a DICOM PixelData element can hold")
    volume, signed, bits = img.ndim == 4, img.dtype.kind == "i", 8 * img.itemsize
    rows, cols = img.shape[1:3] if volume else img.shape[:2]
    if max(rows, cols) > MAX_SIDE:  # Format.write checks it per frame first; kept for direct callers
        raise ValueError(f"image of key {s.key!r}: frames of {rows}x{cols} have a side over {MAX_SIDE} "
                         "pixels, the most dicom can store (its max_image_side)")
    if not volume:
        sop_class = SecondaryCaptureImageStorage
    elif bits == 8:
        sop_class = MultiFrameGrayscaleByteSecondaryCaptureImageStorage
    else:
        sop_class = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series  # one of each per dataset
    ds.Modality, ds.ConversionType, ds.InstanceNumber = "OT", "WSD", i + 1
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = img.shape[2] if img.ndim == 3 else 1  # volumes are grey
    if ds.SamplesPerPixel == 3:
        ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0  # RGBRGB: NumPy's order
    elif not volume and s.meta.get("PhotometricInterpretation") == "MONOCHROME1":
        ds.PhotometricInterpretation = "MONOCHROME1"
    else:
        ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, int(signed)  # int16: two's complement
    if volume:  # the SC Multi-frame Image and Multi-frame modules
        frames = img.shape[0]
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = FRAME_LABEL_VECTOR
        ds.FrameLabelVector = [str(z) for z in range(frames)]  # frame z is image[z]
        ds.BurnedInAnnotation, ds.PresentationLUTShape = "NO", "IDENTITY"
    if volume or signed:  # identity Modality LUT: the stored values are the values (HU for CT)
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.PixelData = np.ascontiguousarray(img).tobytes()  # little-endian on every supported host
    return ds


class DICOM(Format):
    name = "dicom"
    remote_reads = "objects"  # a GET of one file's object per sample
    modes = MODES
    image_codec = "dicom"
    max_image_side = MAX_SIDE
    libraries = ("pydicom",)

    @property
    def bound(self) -> Bound:
        return Bound("bare-pydicom", bare_pydicom)

    def info(self):
        return {"pydicom": pydicom.__version__, "transfer_syntax": ExplicitVRLittleEndian.name}

    def _write(self, samples, root: Path):
        index = IndexWriter()
        (root / "images").mkdir()
        study, series = generate_uid(), generate_uid()
        for i, s in enumerate(samples):
            index.add(s)
            ds = _to_dataset(s, i, study, series)
            ds.save_as(root / "images" / f"{i:08d}.dcm", enforce_file_format=True)
        index.save(root / "index.npz")
        return {"pydicom": pydicom.__version__}


class DICOMReader(Reader):
    def _open_handles(self):
        index = Index.load(self.path / "index.npz", self.path, count=self._n)
        if self.remote is not None:  # a GET of one file's object per read
            self._index = index
            return self.remote
        try:  # images/ of the pinned dataset: each read opens its file relative to it
            images = OpenDir("images", self._dir_fd)
        except OSError as err:
            raise DatasetError(self.path, "images/ is missing") from err
        self._index = index
        return images

    def _file(self, i: int) -> io.BytesIO:
        # Read whole, then parsed from memory: pydicom opens paths only by name.
        h = self._handles
        if self.remote is not None:
            return io.BytesIO(self.remote.read_bytes(f"images/{i:08d}.dcm"))
        return io.BytesIO(read_file(f"{i:08d}.dcm", dir_fd=h.fd))

    def _read(self, i):
        index = self._index
        try:
            arr = pixel_array(self._file(i))
        except FileNotFoundError as err:
            raise DatasetError(self.path, f"images/{i:08d}.dcm is missing") from err
        except PermissionError:
            raise  # names the file: not damage
        # Warning too: a damaged header makes pydicom warn, an error where warnings are errors.
        except (InvalidDicomError, ValueError, AttributeError, KeyError, EOFError, OSError, Warning,
                BytesLengthException, NotImplementedError, TypeError, IndexError, struct.error) as err:
            raise DatasetError(self.path, f"images/{i:08d}.dcm is damaged: {err}") from err
        shape, dtype = index.image_shape[i], index.image_dtype[i]
        if arr.dtype != dtype or arr.nbytes != index.nbytes(i):
            raise DatasetError(self.path, f"images/{i:08d}.dcm holds {arr.dtype} {arr.shape}, "
                               f"the index says {dtype} {shape}")
        return index.sample(i, arr.reshape(shape))

    def dataset(self, i: int) -> Dataset:
        """The whole pydicom Dataset of sample ``i`` (tags included), e.g. for :func:`display_transform`."""
        if not -self._n <= i < self._n:
            raise IndexError(f"{self.path}: index {i} out of range for {self._n} samples")
        if self._handles is None:
            self.handles
        try:
            return pydicom.dcmread(self._file(i % self._n))
        except FileNotFoundError as err:
            raise DatasetError(self.path, f"images/{i % self._n:08d}.dcm is missing") from err


DICOM.reader = DICOMReader


def bare_pydicom(c: BoundInput) -> BoundRun:
    """``pydicom.dcmread(file).pixel_array`` + Sample, on a folder of the pool's images as DICOM files."""
    pool = c.pool

    def make(tmp: Path):
        tmp.mkdir()
        study, series = generate_uid(), generate_uid()
        for i, a in enumerate(pool.args):
            _to_dataset(pool.sample(i, a[1]), i, study, series).save_as(tmp / f"{i:08d}.dcm",
                                                                       enforce_file_format=True)

    path = c.store("bare.dicom", make)
    files = [str(path / f"{i:08d}.dcm") for i in range(pool.m)]
    shapes = [a[1].shape for a in pool.args]
    dcmread = pydicom.dcmread
    return BoundRun(c.each(lambda i: dcmread(files[i]).pixel_array.reshape(shapes[i])),
                    files=dataset_files(path))



def display_transform(ds: Dataset, *, size: int | None = None) -> np.ndarray:
    """The VinBigData chest X-ray preprocessing: a lossy ``uint8 (H, W)`` view of ``ds``.

    ``ds`` is a single-frame grayscale pydicom Dataset (the steps need its
    tags).  Applies the modality LUT (rescale) and the VOI LUT or window, in
    the standard's order (:func:`pydicom.pixels.apply_voi_lut`); inverts
    ``MONOCHROME1``, where low values are white; scales min-max to 0..255,
    truncating like the widely shared Kaggle ``read_xray`` (a constant image
    gives zeros); and, given ``size``, resizes (Lanczos) so that the shorter
    side is ``size`` pixels.
    """
    if ds.get("SamplesPerPixel", 1) != 1 or ds.get("NumberOfFrames", 1) != 1:
        raise ValueError("display_transform: needs a single-frame grayscale image")
    arr = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float32)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        arr = arr.max() - arr
    arr -= arr.min()
    top = arr.max()
    out = (arr * (255 / top) if top > 0 else arr).astype(np.uint8)
    if size is not None:
        h, w = out.shape
        scale = size / min(h, w)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        out = np.asarray(Image.fromarray(out).resize(new, Image.LANCZOS))  # type: ignore[attr-defined, unused-ignore]  # Pillow 13 sets it dynamically
    return out
