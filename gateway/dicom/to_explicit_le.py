"""Any Part 10 file to Explicit VR Little Endian with native Pixel Data.

Why: when a PACS accepts none of the transfer syntaxes we can offer for an
instance (its presentation contexts come back "transfer-syntaxes-not-
supported", PS3.8 9.3.3.2), uncompressed little endian is what every
Storage SCP accepts (PS3.5 10.1 makes Implicit VR Little Endian the
default; Explicit VR Little Endian keeps the VRs, private ones included, and
is the DICOMweb default, PS3.18 8.7.3). This is that fallback: decode and
re-encode once, in a worker thread (DESIGN.md 4). Nothing here keeps state
between calls, so calls may run in parallel. Check the instance with `check_instance` first:
pydicom reads a truncated file without complaint.

What changes, and why:
- Transfer Syntax UID (0002,0010) becomes 1.2.840.10008.1.2.1. The SOP
  Instance UID is kept: decoding is not a new image (PS3.3 C.7.6.1.1.5 asks
  for a new UID only when an image is lossy *compressed*). pydicom 3's
  `Dataset.decompress()` generates a new UID unless told not to, so it is
  not used. The Media Storage UIDs are taken from the dataset, the
  Implementation Class UID is ours, group lengths (retired, PS3.5 7.2) go.
- Big endian values of OW, OF, OL, OD and OV are byte swapped (PS3.5 7.3);
  pydicom re-encodes numbers but writes those raw values unchanged. Pixel
  Data of VR OW swaps in units of Bits Allocated (8-bit pixels come in
  swapped pairs, pixel cells wider than 16 bits as a whole); OB is a byte
  stream and never swapped. Deflated datasets are inflated.
- Encapsulated Pixel Data is decoded: with pydicom's decoders where they are
  installed and succeed (RLE, JPEG 2000, HTJ2K, 8-bit JPEG via Pillow), and
  with imagecodecs otherwise (12-bit JPEG, JPEG Lossless, JPEG-LS, JPEG 2000
  Part 2, JPEG XL, Encapsulated Uncompressed, and anything pydicom fails on). The GPL
  pylibjpeg-libjpeg plugin is never used.
- Colour: lossy JPEG in YBR_FULL/YBR_FULL_422 becomes RGB, as the JPEG codec
  conventionally converts (and as DCMTK's dcmdjpeg does); JPEG 2000 with
  YBR_ICT/YBR_RCT becomes RGB because the codec undoes the component
  transform (PS3.5 8.2.4). Other YBR_FULL data (RLE, JPEG-LS) stays YBR_FULL:
  converting would lose bits. Colour pixels are interleaved (Planar
  Configuration 0).
- Signed pixels are sign-extended from Bits Stored to Bits Allocated, as
  pydicom's `pixel_array` does (JPEG Lossless and JPEG-LS decoders return the
  stored bits as unsigned).
- A lossy transfer syntax (including those that may be lossy: JPEG 2000,
  HTJ2K, JPEG-LS near-lossless and JPEG XL, as the UID cannot tell) leaves
  Lossy Image Compression (0028,2110) "01" when it was absent, with its
  Method (0028,2114) (PS3.3 C.7.6.1.1.5: once lossy, always marked lossy).
- The Extended Offset Table (7FE0,0001/0002) only describes encapsulated data
  and is removed.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian

from gateway.dicom.instance_check import TRANSFER_SYNTAX_NOT_SUPPORTED, InstanceError
from gateway.dicom.json_to_part10 import IMPLEMENTATION_CLASS_UID

__all__ = ["to_explicit_vr_little_endian"]

Frame = npt.NDArray[Any]

# PS3.5 7.3: values of these VRs are words that big endian byte-swaps.
_SWAPPED_VR_WIDTH: Final = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_PIXEL_DATA: Final = 0x7FE00010
_JPEG_LOSSY: Final = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"})
_EXTENDED_OFFSET_TABLE: Final = (0x7FE00001, 0x7FE00002)

# PS3.3 C.7.6.1.1.5.1: Lossy Image Compression Method defined terms, for the
# transfer syntaxes whose pixels are or may be lossy.
_LOSSY_METHOD: Final = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.93": "ISO_15444_2",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
    "1.2.840.10008.1.2.4.111": "ISO_18181_1",  # recompressed from lossy JPEG
    "1.2.840.10008.1.2.4.112": "ISO_18181_1",
}


def to_explicit_vr_little_endian(data: bytes | memoryview) -> bytes:
    """Return the Part 10 file `data` re-encoded in Explicit VR Little Endian
    with native Pixel Data (see the module docstring for what changes).

    Raises `InstanceError` (0xC000) when pydicom cannot read the file, and
    (0xC122, "Referenced Transfer Syntax not supported") with reason
    "cannot decode <transfer syntax name>" when no codec can decode the
    Pixel Data.
    """
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # pydicom raises many types for broken input
        raise InstanceError(f"cannot read the instance: {exc}") from None
    meta: FileMetaDataset = ds.file_meta
    transfer_syntax = UID(str(meta.get("TransferSyntaxUID", "")).strip("\0 "))
    if not transfer_syntax:
        raise InstanceError("no Transfer Syntax UID (0002,0010) in the File Meta Information")

    # Convert every raw element now: a dataset encoded in implicit VR despite
    # its transfer syntax (pydicom reads it with a warning) keeps VR None on
    # raw elements, which the writer cannot encode in explicit VR.
    for _element in ds.iterall():
        pass
    if transfer_syntax == ExplicitVRBigEndian:
        _swap_to_little_endian(ds)
    if _is_encapsulated(transfer_syntax) and _PIXEL_DATA in ds:
        _decompress(ds, transfer_syntax)

    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    if "ImplementationVersionName" in meta:  # it named the writer of the original file
        del meta.ImplementationVersionName
    out = io.BytesIO()
    try:
        pydicom.dcmwrite(out, ds, enforce_file_format=True)
    except Exception as exc:
        raise InstanceError(f"cannot write the instance: {exc}") from None
    return out.getvalue()


def _is_encapsulated(uid: UID) -> bool:
    """Transfer syntaxes other than the four native ones encapsulate Pixel
    Data (PS3.5 A.4); pydicom's `is_encapsulated` fails on UIDs it does not
    know, and unknown private syntaxes are treated as encapsulated too."""
    return uid not in (
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
    )


# --- big endian ----------------------------------------------------------------------


def _swap_to_little_endian(ds: Dataset) -> None:
    """Byte swap the raw values pydicom would write unchanged (PS3.5 7.3)."""
    bits_allocated = int(ds.get("BitsAllocated", 16) or 16)
    for element in ds.iterall():
        width = _SWAPPED_VR_WIDTH.get(element.VR)
        value = element.value
        if not width or not isinstance(value, bytes) or not value:
            continue
        if element.tag == _PIXEL_DATA and element.VR == "OW" and bits_allocated > 16:
            width = bits_allocated // 8  # a 32/64-bit pixel cell is one value
        element.value = _swap(value, width)


def _swap(value: bytes, width: int) -> bytes:
    usable = len(value) - len(value) % width
    words = np.frombuffer(value, dtype=f"u{width}", count=usable // width)
    return words.byteswap().tobytes() + value[usable:]


# --- encapsulated pixel data ---------------------------------------------------------


def _decompress(ds: Dataset, transfer_syntax: UID) -> None:
    """Replace encapsulated Pixel Data with native Pixel Data."""
    frames, photometric = _decode(ds, transfer_syntax)
    bits_allocated = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    bits_stored = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
    native = b"".join(
        _native_frame(frame, bits_allocated, bits_stored, signed).tobytes() for frame in frames
    )
    if len(native) % 2:
        native += b"\0"  # PS3.5 7.1.1: even value length
    if len(native) >= 0xFFFFFFFE:
        raise InstanceError(
            "native Pixel Data would exceed the 32-bit value length",
            TRANSFER_SYNTAX_NOT_SUPPORTED,
        )

    element = ds[_PIXEL_DATA]
    element.value = native
    element.VR = "OB" if bits_allocated <= 8 else "OW"
    element.is_undefined_length = False
    for tag in _EXTENDED_OFFSET_TABLE:
        if tag in ds:
            del ds[tag]
    ds.PhotometricInterpretation = photometric
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        ds.PlanarConfiguration = 0  # `_native_frame` always interleaves

    method = _LOSSY_METHOD.get(str(transfer_syntax))
    if method and not str(ds.get("LossyImageCompression", "") or "").strip():
        ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = method


def _decode(ds: Dataset, transfer_syntax: UID) -> tuple[list[Frame], str]:
    """All frames, and the Photometric Interpretation of the decoded pixels:
    pydicom first, imagecodecs if pydicom has no plugin or fails."""
    errors: list[Exception] = []
    try:
        return _decode_with_pydicom(ds, transfer_syntax)
    except Exception as exc:  # any failure (no plugin, codec error): try imagecodecs
        errors.append(exc)
    codec = _IMAGECODECS.get(str(transfer_syntax))
    if codec is not None:
        try:
            return _decode_with_imagecodecs(ds, codec)
        except Exception as exc:
            errors.append(exc)
    name = transfer_syntax.name if transfer_syntax.is_valid else str(transfer_syntax)
    # The last codec error stays attached (__cause__) for the log.
    raise InstanceError(f"cannot decode {name}", TRANSFER_SYNTAX_NOT_SUPPORTED) from errors[-1]


def _decode_with_pydicom(ds: Dataset, transfer_syntax: UID) -> tuple[list[Frame], str]:
    decoder = get_decoder(transfer_syntax)  # NotImplementedError for unknown syntaxes
    if not decoder.is_available:
        raise RuntimeError(f"no pydicom plugin for {transfer_syntax}")
    frames: list[Frame] = []
    photometric = str(ds.PhotometricInterpretation)
    # YCbCr to RGB only where the codec conventionally does it (JPEG, as
    # DCMTK's dcmdjpeg): elsewhere YBR_FULL stays, a conversion would lose bits.
    as_rgb = str(transfer_syntax) in _JPEG_LOSSY
    for array, info in decoder.iter_array(ds, as_rgb=as_rgb):
        frames.append(array)
        photometric = str(info.get("photometric_interpretation", photometric))
    _check_frames(ds, frames)
    return frames, photometric


def _decode_with_imagecodecs(
    ds: Dataset, codec: Callable[[bytes, Dataset], tuple[Frame, str]]
) -> tuple[list[Frame], str]:
    frames: list[Frame] = []
    photometric = str(ds.PhotometricInterpretation)
    for fragment in _encapsulated_frames(ds):
        frame, photometric = codec(fragment, ds)
        frames.append(frame)
    _check_frames(ds, frames)
    return frames, photometric


def _encapsulated_frames(ds: Dataset) -> Iterator[bytes]:
    """The compressed frames (PS3.5 A.4), located through the Basic or the
    Extended Offset Table, or by fragment when there is one per frame."""
    count = int(ds.get("NumberOfFrames", 1) or 1)
    extended = None
    if _EXTENDED_OFFSET_TABLE[0] in ds and _EXTENDED_OFFSET_TABLE[1] in ds:
        extended = (ds[_EXTENDED_OFFSET_TABLE[0]].value, ds[_EXTENDED_OFFSET_TABLE[1]].value)
    yield from generate_frames(ds.PixelData, number_of_frames=count, extended_offsets=extended)


def _check_frames(ds: Dataset, frames: list[Frame]) -> None:
    """A decoder's output must match the Image Pixel module, or writing it as
    native Pixel Data would produce a different image."""
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if len(frames) != count:
        raise ValueError(f"{len(frames)} frames decoded, {count} expected")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    shape = (int(ds.Rows), int(ds.Columns)) + ((samples,) if samples > 1 else ())
    for index, frame in enumerate(frames):
        if frame.shape != shape:
            # A single-sample frame may come back as (rows, columns, 1).
            if frame.shape == (*shape, 1):
                frames[index] = frame.reshape(shape)
                continue
            raise ValueError(f"decoded frame has shape {frame.shape}, {shape} expected")


def _native_frame(frame: Frame, bits_allocated: int, bits_stored: int, signed: bool) -> Frame:
    """Pixel cells of Bits Allocated, little endian; signed values
    sign-extended from Bits Stored (codecs return the raw stored bits)."""
    size = max(1, (bits_allocated + 7) // 8)
    unsigned = np.ascontiguousarray(frame).astype(f"<u{size}", copy=False)
    if not signed:
        return unsigned
    shift = size * 8 - bits_stored
    cells = unsigned.view(f"<i{size}")
    if 0 < shift < size * 8:
        cells = (cells << shift) >> shift
    return cells.astype(f"<i{size}", copy=False)


# --- imagecodecs ---------------------------------------------------------------------
# Imported on first use: importing imagecodecs takes about 0.25 s and
# most instances never get here.


def _jpeg(fragment: bytes, ds: Dataset) -> tuple[Frame, str]:
    """JPEG baseline/extended (PS3.5 A.4.1) through libjpeg-turbo, which also
    decodes 12-bit. The YCbCr-to-RGB conversion follows the Photometric
    Interpretation, not libjpeg's guess from JFIF/Adobe markers."""
    import imagecodecs

    photometric = str(ds.PhotometricInterpretation)
    if int(ds.get("SamplesPerPixel", 1) or 1) != 3:
        return imagecodecs.jpeg8_decode(fragment), photometric
    if photometric.startswith("YBR"):
        return imagecodecs.jpeg8_decode(fragment, colorspace="YCBCR", outcolorspace="RGB"), "RGB"
    return imagecodecs.jpeg8_decode(fragment, colorspace="RGB", outcolorspace="RGB"), photometric


def _jpeg_lossless(fragment: bytes, ds: Dataset) -> tuple[Frame, str]:
    """JPEG Lossless, process 14 (PS3.5 A.4.1): libjpeg-turbo 3, else liblj92.
    Lossless JPEG has no colour transform: the Photometric Interpretation stays."""
    import imagecodecs

    try:
        frame = imagecodecs.jpeg8_decode(fragment)
    except Exception:
        frame = imagecodecs.ljpeg_decode(fragment)
    return frame, str(ds.PhotometricInterpretation)


def _jpeg_ls(fragment: bytes, ds: Dataset) -> tuple[Frame, str]:
    """JPEG-LS (PS3.5 A.4.3) through CharLS."""
    import imagecodecs

    return imagecodecs.jpegls_decode(fragment), str(ds.PhotometricInterpretation)


def _jpeg_2000(fragment: bytes, ds: Dataset) -> tuple[Frame, str]:
    """JPEG 2000 (Part 1 and 2) and HTJ2K (PS3.5 A.4.4 and A.4)
    through OpenJPEG, which applies the multi-component transform:
    YBR_ICT/YBR_RCT come out RGB."""
    import imagecodecs

    photometric = str(ds.PhotometricInterpretation)
    if photometric in ("YBR_ICT", "YBR_RCT"):
        photometric = "RGB"
    return imagecodecs.jpeg2k_decode(fragment), photometric


def _jpeg_xl(fragment: bytes, ds: Dataset) -> tuple[Frame, str]:
    """JPEG XL (PS3.5 A.4; unknown to pydicom 3.0) through libjxl, which
    returns the colour it encoded (RGB, or grey)."""
    import imagecodecs

    photometric = str(ds.PhotometricInterpretation)
    if photometric.startswith("YBR"):
        photometric = "RGB"
    return imagecodecs.jpegxl_decode(fragment), photometric


def _uncompressed(fragment: bytes, ds: Dataset) -> tuple[Frame, str]:
    """Encapsulated Uncompressed Explicit VR Little Endian (PS3.5 A.4):
    each fragment is one native frame."""
    bits_allocated = int(ds.BitsAllocated)
    if bits_allocated % 8:
        raise ValueError("encapsulated uncompressed frames need whole bytes per cell")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    shape = (int(ds.Rows), int(ds.Columns)) + ((samples,) if samples > 1 else ())
    count = int(np.prod(shape))
    frame = np.frombuffer(fragment, dtype=f"<u{bits_allocated // 8}", count=count)
    if int(ds.get("PlanarConfiguration", 0) or 0) == 1 and samples > 1:
        return frame.reshape(samples, *shape[:2]).transpose(1, 2, 0), str(
            ds.PhotometricInterpretation
        )
    return frame.reshape(shape), str(ds.PhotometricInterpretation)


_IMAGECODECS: Final[dict[str, Callable[[bytes, Dataset], tuple[Frame, str]]]] = {
    "1.2.840.10008.1.2.4.50": _jpeg,
    "1.2.840.10008.1.2.4.51": _jpeg,
    "1.2.840.10008.1.2.4.57": _jpeg_lossless,
    "1.2.840.10008.1.2.4.70": _jpeg_lossless,
    "1.2.840.10008.1.2.4.80": _jpeg_ls,
    "1.2.840.10008.1.2.4.81": _jpeg_ls,
    "1.2.840.10008.1.2.4.90": _jpeg_2000,
    "1.2.840.10008.1.2.4.91": _jpeg_2000,
    "1.2.840.10008.1.2.4.92": _jpeg_2000,  # Part 2: OpenJPEG reads its MCT extension
    "1.2.840.10008.1.2.4.93": _jpeg_2000,
    "1.2.840.10008.1.2.4.201": _jpeg_2000,
    "1.2.840.10008.1.2.4.202": _jpeg_2000,
    "1.2.840.10008.1.2.4.203": _jpeg_2000,
    "1.2.840.10008.1.2.4.110": _jpeg_xl,
    "1.2.840.10008.1.2.4.111": _jpeg_xl,
    "1.2.840.10008.1.2.4.112": _jpeg_xl,
    "1.2.840.10008.1.2.1.98": _uncompressed,
}
