"""Frames of Pixel Data, found without decoding (PS3.5 8 and A.4, PS3.18 8.7.3.3).

Why: WADO-RS /frames is the hottest pixel path: a viewer scrolling a stack
asks for hundreds of frames, mostly in the transfer syntax they are stored in.
Serving those must not cost a decode, nor a `pydicom.dcmread`. `pixel_info`
walks the instance once (with `walker`) and resolves where every frame is;
`frame_bytes` is then a slice (or, for a frame split over several fragments, a
join) of the caller's buffer. Decoding lives in `codecs`, transcoding in
`transcode`.

Rules, with the part of the standard they come from:
- Native Pixel Data (PS3.5 8.1.1, 8.2): frame i is bytes
  ``[i * L, (i + 1) * L)`` with ``L = Rows x Columns x Samples x BitsAllocated / 8``,
  except YBR_FULL_422, which stores 2 samples per pixel (PS3.3 C.7.6.3.1.2).
  Bits Allocated 1 packs pixels across frame boundaries (PS3.5 8.1.1); such a
  frame is re-packed to start at bit 0 and is ``ceil(L)`` bytes (PS3.18
  8.7.3.3.1: a frame is returned on its own). Big endian (retired) values are
  swapped to little endian, which is what PS3.18 8.7.3.3.1 returns.
- Encapsulated Pixel Data (PS3.5 A.4): the Extended Offset Table
  (7FE0,0001)/(7FE0,0002) when present (PS3.3 C.7.6.3.1.8: one fragment per
  frame), else the Basic Offset Table, else one fragment per frame when the
  counts agree, else all fragments for a single frame, else fragments grouped
  by the end-of-image marker FFD9 that ends JPEG, JPEG-LS and JPEG 2000
  codestreams (EOI, EOC). Tables that contradict the fragments are ignored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Final

import numpy as np
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from gateway.dicom.part10 import Part10
from gateway.dicom.walker import ITEM, Fragment, walk_dataset

__all__ = [
    "ENCAPSULATED_UNCOMPRESSED",
    "NATIVE_TRANSFER_SYNTAXES",
    "PixelDataError",
    "PixelInfo",
    "frame_bytes",
    "frame_media_type",
    "pixel_info",
]


class PixelDataError(ValueError):
    """The instance has no usable Pixel Data, or a frame cannot be located."""


# PS3.5 A.4.11: Encapsulated Uncompressed Explicit VR Little Endian: native
# frames, one per fragment.
ENCAPSULATED_UNCOMPRESSED: Final = "1.2.840.10008.1.2.1.98"
NATIVE_TRANSFER_SYNTAXES: Final = frozenset(
    {
        str(ImplicitVRLittleEndian),
        str(ExplicitVRLittleEndian),
        str(ExplicitVRBigEndian),
        str(DeflatedExplicitVRLittleEndian),
    }
)

_OCTET_STREAM: Final = "application/octet-stream"
# PS3.18 Table 8.7.3-5 (media types of compressed Bulkdata) and 8.7.3.3.1
# (uncompressed Bulkdata is application/octet-stream).
_MEDIA_TYPES: Final[dict[str, str]] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.107": "video/H265",
    "1.2.840.10008.1.2.4.108": "video/H265",
    ENCAPSULATED_UNCOMPRESSED: _OCTET_STREAM,
}

_ROWS: Final = 0x00280010
_COLUMNS: Final = 0x00280011
_SAMPLES_PER_PIXEL: Final = 0x00280002
_PHOTOMETRIC: Final = 0x00280004
_PLANAR_CONFIGURATION: Final = 0x00280006
_NUMBER_OF_FRAMES: Final = 0x00280008
_BITS_ALLOCATED: Final = 0x00280100
_BITS_STORED: Final = 0x00280101
_PIXEL_REPRESENTATION: Final = 0x00280103
_EXTENDED_OFFSET_TABLE: Final = 0x7FE00001
_EXTENDED_OFFSET_TABLE_LENGTHS: Final = 0x7FE00002
_FLOAT_PIXEL_DATA: Final = 0x7FE00008
_DOUBLE_FLOAT_PIXEL_DATA: Final = 0x7FE00009
_PIXEL_DATA: Final = 0x7FE00010
# Pixel Data first: an instance with more than one of them is not valid, and
# (7FE0,0010) is the one every viewer reads.
_PIXEL_TAGS: Final = (_PIXEL_DATA, _FLOAT_PIXEL_DATA, _DOUBLE_FLOAT_PIXEL_DATA)
_WANTED: Final = frozenset(
    {
        _ROWS,
        _COLUMNS,
        _SAMPLES_PER_PIXEL,
        _PHOTOMETRIC,
        _PLANAR_CONFIGURATION,
        _NUMBER_OF_FRAMES,
        _BITS_ALLOCATED,
        _BITS_STORED,
        _PIXEL_REPRESENTATION,
        _EXTENDED_OFFSET_TABLE,
        _EXTENDED_OFFSET_TABLE_LENGTHS,
        *_PIXEL_TAGS,
    }
)

_EOI: Final = b"\xff\xd9"  # JPEG EOI, JPEG-LS EOI and JPEG 2000 EOC are all FFD9
# Codestream starts: JPEG/JPEG-LS SOI, JPEG 2000 SOC+SIZ, JP2 signature box.
_STARTS: Final = (b"\xff\xd8", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")
_ITEM_TAG: Final = struct.pack("<HH", ITEM >> 16, ITEM & 0xFFFF)


@dataclass(frozen=True, slots=True)
class PixelInfo:
    """What `frame_bytes`, `codecs` and `transcode` need to know about the
    pixels of one instance. Immutable, so one copy can be cached per instance
    and shared between worker threads.

    Offsets are into the buffer `pixel_info` walked (`Part10.data`: the file
    bytes, or the inflated dataset for a deflated transfer syntax).
    `fragments` excludes the Basic Offset Table; `frame_fragments[i]` lists the
    fragments (offset, length) of frame i, and is empty for native Pixel Data
    or shorter than `number_of_frames` if frames could not all be located.
    """

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int
    number_of_frames: int
    transfer_syntax_uid: str
    encapsulated: bool
    little_endian: bool
    pixel_data_tag: int
    pixel_data_vr: str
    value_offset: int
    value_length: int
    fragments: tuple[Fragment, ...] = ()
    basic_offsets: tuple[int, ...] = ()
    extended_offsets: tuple[int, ...] | None = None
    extended_lengths: tuple[int, ...] | None = None
    frame_fragments: tuple[tuple[Fragment, ...], ...] = ()

    @property
    def frame_bits(self) -> int:
        """Bits of one native frame. YBR_FULL_422 keeps two samples per pixel
        in native encodings (PS3.3 C.7.6.3.1.2)."""
        samples = self.samples_per_pixel
        if samples == 3 and self.photometric_interpretation == "YBR_FULL_422":
            samples = 2
        return self.rows * self.columns * samples * self.bits_allocated

    @property
    def frame_length(self) -> int:
        """Bytes of one native frame as `frame_bytes` returns it (PS3.18
        8.7.3.3.1; Bits Allocated 1 rounds up to whole bytes)."""
        return (self.frame_bits + 7) // 8


def frame_media_type(transfer_syntax: str) -> str:
    """The media type of a frame in `transfer_syntax` (PS3.18 Table 8.7.3-5;
    native frames are application/octet-stream, PS3.18 8.7.3.3.1).

    Raises `ValueError` for a transfer syntax that has no Bulkdata media type.
    """
    if transfer_syntax in NATIVE_TRANSFER_SYNTAXES:
        return _OCTET_STREAM
    try:
        return _MEDIA_TYPES[transfer_syntax]
    except KeyError:
        raise ValueError(f"no frame media type for transfer syntax {transfer_syntax}") from None


def pixel_info(part10: Part10) -> PixelInfo:
    """Describe the Pixel Data of `part10` and locate its frames.

    Raises `PixelDataError` if there is no Pixel Data or the Image Pixel
    attributes needed to cut it into frames are missing or nonsensical, and
    `walker.DicomParseError` if the dataset cannot be walked.
    """
    data = part10.data
    little = part10.little_endian
    elements = walk_dataset(
        data, part10.offset, explicit_vr=part10.explicit_vr, little_endian=little
    )
    found: dict[int, tuple[str, int, int, list[Fragment] | None]] = {}
    for tag, vr, offset, length, _items, fragments in elements:
        if tag in _WANTED:
            found[tag] = (vr, offset, length, fragments)
    pixel_tag = next((tag for tag in _PIXEL_TAGS if tag in found), None)
    if pixel_tag is None:
        raise PixelDataError("the instance has no Pixel Data")
    vr, value_offset, value_length, fragments = found[pixel_tag]

    def us(tag: int, default: int | None = None) -> int:
        value = _us(data, found.get(tag), little)
        if value is None:
            if default is None:
                raise PixelDataError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is missing")
            return default
        return value

    rows, columns = us(_ROWS), us(_COLUMNS)
    samples = us(_SAMPLES_PER_PIXEL, 1)
    bits_allocated = us(_BITS_ALLOCATED)
    bits_stored = us(_BITS_STORED, bits_allocated)
    frames = _frame_count(data, found.get(_NUMBER_OF_FRAMES))
    if rows == 0 or columns == 0 or samples == 0 or bits_allocated == 0:
        raise PixelDataError("Rows, Columns, Samples per Pixel or Bits Allocated is zero")
    if bits_allocated != 1 and bits_allocated % 8:
        raise PixelDataError(f"Bits Allocated {bits_allocated} is not 1 or a multiple of 8")
    info = PixelInfo(
        rows=rows,
        columns=columns,
        samples_per_pixel=samples,
        bits_allocated=bits_allocated,
        bits_stored=min(bits_stored, bits_allocated) or bits_allocated,
        pixel_representation=us(_PIXEL_REPRESENTATION, 0),
        photometric_interpretation=_text(data, found.get(_PHOTOMETRIC)),
        planar_configuration=us(_PLANAR_CONFIGURATION, 0),
        number_of_frames=frames,
        transfer_syntax_uid=part10.transfer_syntax_uid,
        encapsulated=fragments is not None,
        little_endian=little,
        pixel_data_tag=pixel_tag,
        pixel_data_vr=vr,
        value_offset=value_offset,
        value_length=value_length,
    )
    if fragments is None:
        return info
    basic = _basic_offsets(data, fragments[0]) if fragments else ()
    items = tuple(fragments[1:])
    eot = _ov(data, found.get(_EXTENDED_OFFSET_TABLE))
    eot_lengths = _ov(data, found.get(_EXTENDED_OFFSET_TABLE_LENGTHS))
    return replace(
        info,
        fragments=items,
        basic_offsets=basic,
        extended_offsets=eot,
        extended_lengths=eot_lengths,
        frame_fragments=_locate_frames(data, items, basic, eot, eot_lengths, frames),
    )


def frame_bytes(data: bytes | memoryview, info: PixelInfo, index: int) -> memoryview | bytes:
    """The bytes of frame `index` (0-based), as stored: a compressed codestream
    for an encapsulated transfer syntax, little endian native pixels otherwise.

    `data` is the buffer `pixel_info` walked (`Part10.data`). A frame in one
    fragment, and a byte-aligned little endian native frame, is a zero-copy
    memoryview of `data`; anything else is new bytes.
    Raises `IndexError` unless ``0 <= index < number_of_frames`` (no negative
    indexing: a 1-based frame number 0 from a URL must not become the last
    frame), and `PixelDataError` when the frame is not in the data (truncated
    Pixel Data, fragments that cannot be grouped into frames).
    """
    if not 0 <= index < info.number_of_frames:
        raise IndexError(f"frame {index} out of range 0..{info.number_of_frames - 1}")
    view = memoryview(data)
    if info.encapsulated:
        if index >= len(info.frame_fragments):
            raise PixelDataError(f"cannot locate frame {index} in the encapsulated Pixel Data")
        parts = info.frame_fragments[index]
        if len(parts) == 1:
            offset, length = parts[0]
            return view[offset : offset + length]
        return b"".join(view[offset : offset + length] for offset, length in parts)
    return _native_frame(view, info, index)


def _native_frame(view: memoryview, info: PixelInfo, index: int) -> memoryview | bytes:
    """Frame `index` of native Pixel Data (PS3.5 8.1.1), little endian."""
    bits = info.frame_bits
    start_bit, end_bit = index * bits, (index + 1) * bits
    start, end = start_bit // 8, (end_bit + 7) // 8
    if end > info.value_length:
        raise PixelDataError(
            f"Pixel Data holds {info.value_length} bytes, frame {index} needs {end}"
        )
    base = info.value_offset
    unit = _swap_unit(info)
    if unit > 1:  # PS3.5 7.3: big endian words; PS3.18 8.7.3.3.1 wants little
        lo = start - start % unit
        hi = min(-(-end // unit) * unit, info.value_length - info.value_length % unit)
        words = np.frombuffer(view[base + lo : base + hi], dtype=f">u{unit}")
        view = memoryview(words.astype(f"<u{unit}").tobytes())
        base = -lo
    if start_bit % 8 == 0:
        return view[base + start : base + end]
    # Bits Allocated 1 (PS3.5 8.1.1: bit 0 of each byte is the first pixel) and
    # a frame that starts inside a byte: shift it to start at bit 0.
    shift = start_bit % 8
    packed = np.frombuffer(view[base + start : base + end], dtype=np.uint8)
    pixels = np.unpackbits(packed, bitorder="little")[shift : shift + bits]
    return np.packbits(pixels, bitorder="little").tobytes()


def _swap_unit(info: PixelInfo) -> int:
    """Bytes per word to swap for big endian native Pixel Data; 1 for none.
    OW (and OF, OD) values are words of that size (PS3.5 7.3); 8- and 1-bit
    pixels in an OW value are packed into 16-bit words."""
    if info.little_endian:
        return 1
    if info.bits_allocated >= 16:
        return info.bits_allocated // 8
    return 2 if info.pixel_data_vr == "OW" else 1


def _locate_frames(
    data: bytes | memoryview,
    items: tuple[Fragment, ...],
    basic: tuple[int, ...],
    eot: tuple[int, ...] | None,
    eot_lengths: tuple[int, ...] | None,
    count: int,
) -> tuple[tuple[Fragment, ...], ...]:
    """Group the fragments into frames (PS3.5 A.4), trying the most reliable
    source first; returns fewer than `count` frames if nothing fits."""
    if not items:
        return ()
    if eot is not None and eot_lengths is not None:
        frames = _from_extended(data, items, eot, eot_lengths, count)
        if frames is not None:
            return frames
    if basic:
        frames = _from_basic(items, basic, count)
        if frames is not None:
            return frames
    if len(items) == count:
        return tuple((item,) for item in items)
    if count == 1:
        return (items,)
    if len(items) < count:
        return ()
    return _from_markers(data, items, count)


def _from_extended(
    data: bytes | memoryview,
    items: tuple[Fragment, ...],
    offsets: tuple[int, ...],
    lengths: tuple[int, ...],
    count: int,
) -> tuple[tuple[Fragment, ...], ...] | None:
    """Frames from the Extended Offset Table (PS3.3 C.7.6.3.1.8): offsets of
    each frame's item tag from the first fragment's item tag, and the length
    of the frame, which is then a single fragment."""
    if len(offsets) != count or len(lengths) != count:
        return None
    first = items[0][0] - 8
    end = items[-1][0] + items[-1][1]
    frames = []
    for offset, length in zip(offsets, lengths, strict=True):
        item = first + offset
        if item + 8 + length > end or bytes(data[item : item + 4]) != _ITEM_TAG:
            return None
        frames.append(((item + 8, length),))
    return tuple(frames)


def _from_basic(
    items: tuple[Fragment, ...], offsets: tuple[int, ...], count: int
) -> tuple[tuple[Fragment, ...], ...] | None:
    """Frames from the Basic Offset Table (PS3.5 A.4): the offset of each
    frame's first item tag from the first fragment's item tag. A table that
    does not point at fragment starts (for example wrapped at 4 GiB) is not
    used."""
    if len(offsets) != count:
        return None
    first = items[0][0] - 8
    index_at = {offset - 8 - first: i for i, (offset, _length) in enumerate(items)}
    starts = [index_at.get(offset, -1) for offset in offsets]
    if starts[0] != 0 or any(b <= a for a, b in pairwise(starts)):
        return None
    bounds = [*starts, len(items)]
    return tuple(items[a:b] for a, b in pairwise(bounds))


def _from_markers(
    data: bytes | memoryview, items: tuple[Fragment, ...], count: int
) -> tuple[tuple[Fragment, ...], ...]:
    """Group fragments by codestream markers when there is no offset table
    and more fragments than frames: a frame ends with a fragment ending in
    FFD9 (maybe followed by a 00 pad byte, PS3.5 A.4 even lengths) and the
    next fragment starts a codestream. Without start markers (unknown
    codestream) the end marker alone decides."""
    ends = [_ends_codestream(data, item) for item in items]
    starts = [_starts_codestream(data, item) for item in items]
    strict = [ends[i] and (i + 1 == len(items) or starts[i + 1]) for i in range(len(items))]
    for boundary in (strict, ends):
        frames: list[tuple[Fragment, ...]] = []
        current: list[Fragment] = []
        for item, is_end in zip(items, boundary, strict=True):
            current.append(item)
            if is_end:
                frames.append(tuple(current))
                current = []
        if current:
            frames.append(tuple(current))
        if len(frames) == count:
            return tuple(frames)
    return tuple(frames[:count]) if len(frames) > count else tuple(frames)


def _ends_codestream(data: bytes | memoryview, item: Fragment) -> bool:
    offset, length = item
    tail = bytes(data[offset + max(0, length - 10) : offset + length]).rstrip(b"\0")
    return tail.endswith(_EOI)


def _starts_codestream(data: bytes | memoryview, item: Fragment) -> bool:
    offset, length = item
    head = bytes(data[offset : offset + min(length, 12)])
    return head.startswith(_STARTS)


def _basic_offsets(data: bytes | memoryview, bot: Fragment) -> tuple[int, ...]:
    """The Basic Offset Table item's 32-bit little endian offsets (PS3.5 A.4)."""
    offset, length = bot
    count = length // 4
    return struct.unpack_from(f"<{count}L", data, offset) if count else ()


def _ov(
    data: bytes | memoryview, element: tuple[str, int, int, list[Fragment] | None] | None
) -> tuple[int, ...] | None:
    """An OV value (the Extended Offset Table, PS3.3 C.7.6.3.1.8); always
    little endian, since encapsulated Pixel Data is (PS3.5 A.4)."""
    if element is None or element[3] is not None or element[2] < 8:
        return None
    _vr, offset, length, _ = element
    return struct.unpack_from(f"<{length // 8}Q", data, offset)


def _us(
    data: bytes | memoryview,
    element: tuple[str, int, int, list[Fragment] | None] | None,
    little: bool,
) -> int | None:
    if element is None or element[2] < 2:
        return None
    value: int = struct.unpack_from("<H" if little else ">H", data, element[1])[0]
    return value


def _text(
    data: bytes | memoryview, element: tuple[str, int, int, list[Fragment] | None] | None
) -> str:
    if element is None:
        return ""
    _vr, offset, length, _ = element
    return bytes(data[offset : offset + length]).decode("ascii", "replace").strip("\0 ")


def _frame_count(
    data: bytes | memoryview, element: tuple[str, int, int, list[Fragment] | None] | None
) -> int:
    """Number of Frames (IS, PS3.3 C.7.6.6); absent, empty, zero or garbage
    means a single frame, as viewers read it."""
    text = _text(data, element).split("\\")[0].strip()
    try:
        value = int(text)
    except ValueError:
        try:
            value = int(float(text))
        except ValueError:
            return 1
    return max(value, 1)
