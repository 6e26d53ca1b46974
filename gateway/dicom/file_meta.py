"""File Meta Information (PS3.10 7.1) for data sets received over DIMSE.

A C-STORE sub-operation carries the data set only; WADO-RS parts and cache
files are Part 10 files, so the gateway writes the preamble and group 0002
itself: a few hundred bytes in front of the unchanged data set, no re-encoding.
"""

from __future__ import annotations

import struct

from gateway import __version__

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1234.1.1"
IMPLEMENTATION_VERSION = f"DWGW_{__version__}"[:16]


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    if vr == b"OB":
        return struct.pack("<HH2sHL", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_aet: str = ""
) -> bytes:
    """Preamble, ``DICM`` and the File Meta elements, Explicit VR Little Endian."""
    body = b"".join(
        (
            _element(0x0002, 0x0001, b"OB", b"\x00\x01"),
            _element(0x0002, 0x0002, b"UI", sop_class_uid.encode("ascii")),
            _element(0x0002, 0x0003, b"UI", sop_instance_uid.encode("ascii")),
            _element(0x0002, 0x0010, b"UI", transfer_syntax.encode("ascii")),
            _element(0x0002, 0x0012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
            _element(0x0002, 0x0013, b"SH", IMPLEMENTATION_VERSION.encode("ascii")),
            _element(0x0002, 0x0016, b"AE", source_aet.encode("ascii")) if source_aet else b"",
        )
    )
    length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body))
    return bytes(128) + b"DICM" + length + body
