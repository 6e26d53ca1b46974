"""DICOM files (PS3.10 7.1): File Meta Information and where the dataset starts.

Why: the cache and STOW-RS hold Part 10 files, and the fast paths (metadata,
frames) must find the dataset and its transfer syntax without pydicom. The
result says how to walk the dataset; nothing else is decoded here.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPIPHTJ2KReferencedDeflate,
)

from gateway.dicom.walker import DicomParseError, looks_explicit_vr, walk_dataset

__all__ = ["Part10", "read_part10", "transfer_syntax_encoding"]

MEDIA_STORAGE_SOP_CLASS_UID: Final = 0x00020002
MEDIA_STORAGE_SOP_INSTANCE_UID: Final = 0x00020003
TRANSFER_SYNTAX_UID: Final = 0x00020010

_PREAMBLE: Final = 128
_PREFIX: Final = b"DICM"
# PS3.5 A.5 (and the JPIP Referenced Deflate syntaxes, PS3.5 A.6): the dataset
# after the File Meta Information is a raw deflate stream of Explicit VR LE.
_DEFLATED: Final = frozenset(
    {str(DeflatedExplicitVRLittleEndian), "1.2.840.10008.1.2.4.95", str(JPIPHTJ2KReferencedDeflate)}
)


@dataclass(frozen=True, slots=True)
class Part10:
    """A Part 10 file (or a bare dataset), ready to walk.

    `meta` maps each File Meta Information tag to its raw value bytes; it is
    empty for a bare dataset. The dataset is `data[offset:]`, encoded as
    `explicit_vr`/`little_endian` say; for a deflated transfer syntax `data` is
    the inflated dataset and `offset` is 0.
    """

    meta: dict[int, bytes]
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    data: bytes | memoryview
    offset: int
    explicit_vr: bool
    little_endian: bool


def transfer_syntax_encoding(uid: str) -> tuple[bool, bool, bool]:
    """Return (explicit VR, little endian, deflated) for a transfer syntax UID.

    PS3.5 10: every transfer syntax other than Implicit VR Little Endian and
    Explicit VR Big Endian is Explicit VR Little Endian, including private ones.
    """
    if uid == ImplicitVRLittleEndian:
        return False, True, False
    if uid == ExplicitVRBigEndian:
        return True, False, False
    return True, True, uid in _DEFLATED


def read_part10(data: bytes | memoryview) -> Part10:
    """Read the File Meta Information of a Part 10 file (PS3.10 7.1).

    Files without the 128-byte preamble and "DICM" are accepted too: File Meta
    Information at the very start, or a bare dataset whose encoding is guessed
    from its first element, as pydicom does with ``force=True``.
    Raises `DicomParseError` when the meta information cannot be walked or a
    deflated dataset cannot be inflated.
    """
    size = len(data)
    if size >= _PREAMBLE + 4 and bytes(data[_PREAMBLE : _PREAMBLE + 4]) == _PREFIX:
        meta_start = _PREAMBLE + 4
    elif size >= 8 and struct.unpack_from("<H", data, 0)[0] == 0x0002:
        meta_start = 0  # File Meta Information without preamble
    else:
        return _bare_dataset(data)

    # PS3.10 7.1: explicit VR little endian; some writers use implicit VR.
    explicit_meta = looks_explicit_vr(data, meta_start)
    meta_end = _meta_end(data, meta_start) if explicit_meta else None
    if meta_end is not None:
        elements = walk_dataset(data, meta_start, meta_end)
    else:  # no usable group length: walk while the group is 0002
        elements = walk_dataset(data, meta_start, explicit_vr=explicit_meta, stop_before=0x00030000)
    meta: dict[int, bytes] = {}
    offset = meta_start
    for tag, _vr, value_offset, length, items, fragments in elements:
        if items is not None or fragments is not None:
            raise DicomParseError("sequence in File Meta Information")
        meta[tag] = bytes(data[value_offset : value_offset + length])
        offset = value_offset + length

    uid = _uid(meta.get(TRANSFER_SYNTAX_UID))
    explicit, little, deflated = transfer_syntax_encoding(uid)
    if deflated:
        data, offset = _inflate(data, offset), 0
    elif offset + 6 <= size:
        # A dataset whose encoding contradicts its transfer syntax is read as
        # it is encoded, as pydicom does (with a warning).
        explicit = looks_explicit_vr(data, offset)
    if not uid:
        uid = _transfer_syntax_for(explicit, little)
    return Part10(
        meta=meta,
        transfer_syntax_uid=uid,
        sop_class_uid=_uid(meta.get(MEDIA_STORAGE_SOP_CLASS_UID)),
        sop_instance_uid=_uid(meta.get(MEDIA_STORAGE_SOP_INSTANCE_UID)),
        data=data,
        offset=offset,
        explicit_vr=explicit,
        little_endian=little,
    )


def _meta_end(data: bytes | memoryview, start: int) -> int | None:
    """Where the File Meta Information ends according to its Group Length
    (0002,0000), if that is present and consistent with what follows."""
    size = len(data)
    if start + 12 > size or bytes(data[start : start + 8]) != b"\x02\x00\x00\x00UL\x04\x00":
        return None
    end: int = start + 12 + struct.unpack_from("<L", data, start + 8)[0]
    if end > size or (end + 2 <= size and struct.unpack_from("<H", data, end)[0] == 0x0002):
        return None
    return end


def _bare_dataset(data: bytes | memoryview) -> Part10:
    """A dataset with no File Meta Information: guess its encoding from the
    first element (explicit if a VR follows the tag; the byte order that makes
    the first group number smaller)."""
    explicit = looks_explicit_vr(data, 0)
    little = True
    if len(data) >= 2:
        little = struct.unpack_from("<H", data, 0)[0] <= struct.unpack_from(">H", data, 0)[0]
    uid = _transfer_syntax_for(explicit, little)
    return Part10({}, uid, "", "", data, 0, explicit, little)


def _transfer_syntax_for(explicit: bool, little: bool) -> str:
    if not explicit:
        return str(ImplicitVRLittleEndian)
    return str(ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def _uid(raw: bytes | None) -> str:
    """A UI value without its padding (PS3.5 9.1)."""
    return raw.decode("ascii", "replace").rstrip("\0 ") if raw else ""


def _inflate(data: bytes | memoryview, offset: int) -> bytes:
    """Inflate a deflated dataset (PS3.5 A.5: RFC 1951 without zlib header)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        return inflater.decompress(data[offset:]) + inflater.flush()
    except zlib.error as exc:
        raise DicomParseError(f"cannot inflate the dataset: {exc}") from None
