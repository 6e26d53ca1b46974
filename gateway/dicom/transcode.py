"""Change the transfer syntax of one frame, or of a whole Part 10 instance.

Why: WADO-RS answers in the transfer syntax the client accepts (PS3.18
8.7.3.5, WADO-03), by default Explicit VR Little Endian (PS3.18 8.7.3.4,
WADO-02), while a PACS hands out whatever it stores. `can_transcode` answers
406 up front, before anything is fetched or decoded; `transcode_frame` serves
/frames; `transcode_instance` serves whole instances. Everything here is a
pure function of its arguments (no shared state), so it can run in a worker
thread pool; the codecs release the GIL.

Targets (`TARGETS`): Explicit VR Little Endian, RLE Lossless, JPEG 2000
Lossless, HTJ2K Lossless (.201), JPEG-LS Lossless, JPEG Baseline (8-bit
unsigned only). Decoded sources: see `codecs.DECODERS`.

Lossy data, decided from the standard's text:
- Lossy to Explicit VR Little Endian is allowed. PS3.18 8.7.3.4 (note 2)
  *permits* a server holding only lossy pixels to answer in the lossy syntax
  instead of the default, it does not forbid decompressing; we decompress, so
  the default (WADO-02) always works.
- Lossy to a lossless syntax (RLE, J2K/HTJ2K/JPEG-LS lossless) is allowed
  too: pointless for size, but a client may decode nothing else, and nothing
  in PS3.18 forbids it. The instance stays marked: Lossy Image Compression
  (0028,2110) "01" is never reset (PS3.3 C.7.6.1.1.5), and is set to "01" when
  a lossy source syntax left it absent.
- To JPEG Baseline (lossy) only when asked, for 8-bit unsigned grey or colour
  (not palette indices); Lossy Image Compression becomes "01" and the ratio and
  method (ISO_10918_1) are appended to (0028,2112)/(0028,2114) (PS3.3
  C.7.6.1.1.5). The SOP Instance UID is kept: the result is this instance in
  a transfer syntax the client negotiated, as with a lossy DIMSE transfer
  syntax, not a new derived image stored under a new UID.

Pixel layout: a native target keeps the instance's Planar Configuration (so
/frames octet-streams match /metadata); a compressed target records Planar
Configuration 0 (PS3.5 8.2: the codestream defines the component layout).
Photometric Interpretation follows the decoded pixels (`codecs`: lossy JPEG
YBR and J2K YBR_RCT/ICT decode to RGB; JPEG Baseline output is YBR_FULL_422).
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, Final

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.filewriter import dcmwrite
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from gateway.dicom.codecs import (
    DECODERS,
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS,
    J2K_LOSSLESS,
    JPEG_BASELINE,
    JPEG_LS_LOSSLESS,
    LOSSY_TRANSFER_SYNTAXES,
    RLE_LOSSLESS,
    can_encode,
    decode_frame,
    decoded_photometric,
    encode_frame,
    encoded_photometric,
)
from gateway.dicom.frames import (
    NATIVE_TRANSFER_SYNTAXES,
    PixelDataError,
    PixelInfo,
    frame_bytes,
    pixel_info,
)
from gateway.dicom.part10 import read_part10

__all__ = [
    "TARGETS",
    "TranscodeError",
    "can_transcode",
    "transcode_frame",
    "transcode_instance",
]


class TranscodeError(ValueError):
    """The requested transfer syntax cannot be produced for this instance."""


#: Transfer syntaxes this module writes.
TARGETS: Final = frozenset(
    {
        EXPLICIT_VR_LITTLE_ENDIAN,
        RLE_LOSSLESS,
        J2K_LOSSLESS,
        HTJ2K_LOSSLESS,
        JPEG_LS_LOSSLESS,
        JPEG_BASELINE,
    }
)

# PS3.5 A.4: an encapsulated value's Basic Offset Table holds 32-bit offsets,
# and a native value's length is a 32-bit field whose maximum is reserved.
_MAX_LENGTH: Final = 0xFFFFFFFE
_ICON_IMAGE_SEQUENCE: Final = 0x00880200
_EXTENDED_OFFSET_TABLE: Final = 0x7FE00001
_EXTENDED_OFFSET_TABLE_LENGTHS: Final = 0x7FE00002
# PS3.3 C.7.6.1.1.5, Lossy Image Compression Method defined terms.
_LOSSY_METHOD: Final = {JPEG_BASELINE: "ISO_10918_1"}
_SOURCE_LOSSY_METHOD: Final = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
}
_SWAP_UNITS: Final = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def can_transcode(source_ts: str, target_ts: str, info: PixelInfo) -> bool:
    """Whether the pixels `info` describes, stored in `source_ts`, can be
    written in `target_ts` (answer 406 when not, PS3.18 8.7.3.5 / WADO-03).

    The same syntax is always possible (nothing to do); a native source can
    always become Explicit VR Little Endian (a copy); otherwise the source must
    be decodable and the decoded pixels encodable in the target (for example
    JPEG Baseline needs 8-bit unsigned samples).
    """
    if source_ts == target_ts:
        return True
    if target_ts not in TARGETS:
        return False
    native_source = source_ts in NATIVE_TRANSFER_SYNTAXES
    if target_ts == EXPLICIT_VR_LITTLE_ENDIAN:
        native_size = info.frame_length * info.number_of_frames
        if native_size > _MAX_LENGTH:
            return False  # PS3.18 8.7.3.4: too long for a native value
        if native_source:
            return True
    if source_ts not in DECODERS:
        return False
    return can_encode(
        target_ts,
        bits_allocated=info.bits_allocated,
        bits_stored=info.bits_stored,
        signed=info.pixel_representation == 1,
        samples_per_pixel=info.samples_per_pixel,
        photometric=decoded_photometric(info),
        floating=info.pixel_data_tag != 0x7FE00010,
    )


def transcode_frame(
    frame: bytes | memoryview, info: PixelInfo, target_ts: str, *, threads: int = 1
) -> bytes:
    """One frame (as `frames.frame_bytes` returns it) in `target_ts`: a
    codestream, or native little endian pixels laid out per the instance's
    Planar Configuration. Raises `TranscodeError` when `can_transcode` says
    no, `codecs.CodecError` when the data cannot be decoded."""
    source_ts = info.transfer_syntax_uid
    if target_ts == source_ts:
        return bytes(frame)
    if not can_transcode(source_ts, target_ts, info):
        raise TranscodeError(f"cannot transcode {source_ts} to {target_ts} for these pixels")
    if target_ts == EXPLICIT_VR_LITTLE_ENDIAN and source_ts in NATIVE_TRANSFER_SYNTAXES:
        return bytes(frame)  # frame_bytes already made it little endian
    pixels = decode_frame(frame, info, threads=threads)
    photometric = decoded_photometric(info)
    if target_ts == EXPLICIT_VR_LITTLE_ENDIAN:
        return _native_bytes(pixels, info.planar_configuration)
    return encode_frame(
        pixels, target_ts, bits_stored=info.bits_stored, photometric=photometric, threads=threads
    )


def transcode_instance(data: bytes | memoryview, target_ts: str, *, threads: int = 1) -> bytes:
    """A Part 10 file in `target_ts`, with the same SOP Instance UID.

    Pixel Data is rebuilt frame by frame (encapsulated with a filled Basic
    Offset Table, PS3.5 A.4, or an Extended Offset Table past 4 GiB); Image
    Pixel and Lossy Image Compression attributes are updated as the module
    docstring says; the File Meta Information gets the new Transfer Syntax UID.
    The rest of the dataset is re-encoded by pydicom. Raises
    `TranscodeError`, `frames.PixelDataError`, `codecs.CodecError` or
    `walker.DicomParseError`.
    """
    part10 = read_part10(data)
    info = pixel_info(part10)
    source_ts = info.transfer_syntax_uid
    if target_ts == source_ts:
        return bytes(data)
    if not can_transcode(source_ts, target_ts, info):
        raise TranscodeError(f"cannot transcode {source_ts} to {target_ts} for these pixels")

    ds = dcmread(BytesIO(bytes(data)), force=True)
    if not info.little_endian:
        _swap_binary_values(ds, info.pixel_data_tag)
    for tag in (_EXTENDED_OFFSET_TABLE, _EXTENDED_OFFSET_TABLE_LENGTHS):
        if tag in ds:
            del ds[tag]
    if info.encapsulated and _ICON_IMAGE_SEQUENCE in ds:
        del ds[_ICON_IMAGE_SEQUENCE]  # its Pixel Data is in the old syntax (PS3.5 A.4)

    frames = [frame_bytes(part10.data, info, i) for i in range(info.number_of_frames)]
    if target_ts == EXPLICIT_VR_LITTLE_ENDIAN:
        if source_ts in NATIVE_TRANSFER_SYNTAXES:
            value = _native_value(part10.data, info, frames)
        else:
            value = b"".join(transcode_frame(f, info, target_ts, threads=threads) for f in frames)
            ds.PhotometricInterpretation = decoded_photometric(info)
        vr = _native_vr(info)
        if info.pixel_data_tag in ds:
            del ds[info.pixel_data_tag]
        ds.add_new(info.pixel_data_tag, vr, value + b"\0" * (len(value) % 2))
    else:
        encoded = [transcode_frame(f, info, target_ts, threads=threads) for f in frames]
        _set_encapsulated(ds, encoded)
        ds.PhotometricInterpretation = encoded_photometric(target_ts, decoded_photometric(info))
        if info.samples_per_pixel > 1:
            ds.PlanarConfiguration = 0
        if target_ts in LOSSY_TRANSFER_SYNTAXES:
            native_size = info.frame_length * info.number_of_frames
            ratio = native_size / max(1, sum(len(f) for f in encoded))
            _record_lossy(ds, _LOSSY_METHOD.get(target_ts), ratio)
    if source_ts in LOSSY_TRANSFER_SYNTAXES and "LossyImageCompression" not in ds:
        _record_lossy(ds, _SOURCE_LOSSY_METHOD.get(source_ts), None)

    _set_file_meta(ds, target_ts, part10.sop_class_uid, part10.sop_instance_uid)
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def _native_bytes(pixels: Any, planar_configuration: int) -> bytes:
    """Decoded pixels as a native little endian frame (PS3.5 8.1.1), colour
    by plane when Planar Configuration is 1 (PS3.3 C.7.6.3.1.3)."""
    array = np.asarray(pixels)
    if array.ndim == 3 and planar_configuration == 1:
        array = np.moveaxis(array, 2, 0)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _native_value(
    data: bytes | memoryview, info: PixelInfo, frames: list[memoryview | bytes]
) -> bytes:
    """The whole native Pixel Data value, little endian. Frames of Bits
    Allocated 1 that share bytes are copied as one bit stream (PS3.5 8.1.1)."""
    if info.frame_bits % 8 == 0:
        return b"".join(frames)
    total = (info.frame_bits * info.number_of_frames + 7) // 8
    if total > info.value_length:
        raise PixelDataError(f"Pixel Data holds {info.value_length} bytes, needs {total}")
    value = bytes(memoryview(data)[info.value_offset : info.value_offset + total])
    if not info.little_endian and info.pixel_data_vr == "OW":
        padded = value + b"\0" * (len(value) % 2)
        value = np.frombuffer(padded, dtype=">u2").astype("<u2").tobytes()[:total]
    return value


def _native_vr(info: PixelInfo) -> str:
    """PS3.5 8.2 / A.2: OW above 8 bits allocated, OB otherwise; Float and
    Double Float Pixel Data are OF and OD."""
    if info.pixel_data_tag == 0x7FE00008:
        return "OF"
    if info.pixel_data_tag == 0x7FE00009:
        return "OD"
    return "OW" if info.bits_allocated > 8 else "OB"


def _set_encapsulated(ds: Dataset, frames: list[bytes]) -> None:
    """Encapsulated Pixel Data (PS3.5 A.4): one fragment per frame, Basic
    Offset Table filled; past 32-bit offsets an empty Basic Offset Table and
    an Extended Offset Table (PS3.3 C.7.6.3.1.8)."""
    if 0x7FE00010 in ds:
        del ds[0x7FE00010]
    if sum(len(f) + 9 for f in frames) < _MAX_LENGTH:
        ds.add_new(0x7FE00010, "OB", encapsulate(frames, has_bot=True))
    else:
        value, offsets, lengths = encapsulate_extended(frames)
        ds.add_new(0x7FE00010, "OB", value)
        ds.add_new(_EXTENDED_OFFSET_TABLE, "OV", offsets)
        ds.add_new(_EXTENDED_OFFSET_TABLE_LENGTHS, "OV", lengths)
    ds[0x7FE00010].is_undefined_length = True


def _record_lossy(ds: Dataset, method: str | None, ratio: float | None) -> None:
    """Lossy Image Compression (0028,2110) "01", and the ratio and method of
    this compression appended (PS3.3 C.7.6.1.1.5)."""
    ds.LossyImageCompression = "01"
    if ratio is None or method is None:
        if method is not None and "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = method
        return
    ratios = [str(r) for r in _values(ds.get("LossyImageCompressionRatio"))]
    methods = [str(m) for m in _values(ds.get("LossyImageCompressionMethod"))]
    ds.LossyImageCompressionRatio = [*ratios, f"{ratio:.2f}"]
    ds.LossyImageCompressionMethod = [*methods, method]


def _values(element: Any) -> list[Any]:
    if element is None or element == "":
        return []
    if isinstance(element, str | int | float):
        return [element]
    return list(element)


def _set_file_meta(ds: Dataset, target_ts: str, sop_class: str, sop_instance: str) -> None:
    """File Meta Information for the new transfer syntax (PS3.10 7.1); the
    SOP Class and Instance UIDs stay those of the instance."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
        ds.file_meta = meta
    meta.TransferSyntaxUID = target_ts
    meta.MediaStorageSOPClassUID = sop_class or ds.get("SOPClassUID", "")
    meta.MediaStorageSOPInstanceUID = sop_instance or ds.get("SOPInstanceUID", "")
    if "ImplementationClassUID" not in meta:
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    if "FileMetaInformationVersion" not in meta:
        meta.FileMetaInformationVersion = b"\x00\x01"


def _swap_binary_values(ds: Dataset, pixel_tag: int) -> None:
    """pydicom keeps OW/OF/OL/OD/OV values as read; from a big endian
    source they must be swapped before writing little endian (PS3.5 7.3)."""
    for element in ds.iterall():
        unit = _SWAP_UNITS.get(element.VR)
        value = element.value
        if unit is None or element.tag == pixel_tag or not isinstance(value, bytes):
            continue
        usable = len(value) - len(value) % unit
        swapped = np.frombuffer(value[:usable], dtype=f">u{unit}").astype(f"<u{unit}")
        element.value = swapped.tobytes() + value[usable:]
