"""The study, series and instance UIDs of a data set, read from its first elements.

Instances received over DIMSE carry no File Meta; to name them (Content-
Location, cache entries) only the few UI elements up to (0020,000E) are read,
which stops the walk long before Pixel Data.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.dicom.walker import walk_dataset

_SOP_CLASS = 0x00080016
_SOP_INSTANCE = 0x00080018
_STUDY = 0x0020000D
_SERIES = 0x0020000E
_STOP = 0x0020000F


@dataclass(frozen=True)
class Identity:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str


def identity_of(
    data: bytes | memoryview,
    offset: int = 0,
    *,
    explicit_vr: bool = True,
    little_endian: bool = True,
) -> Identity:
    """The four UIDs (empty strings when absent); raises DicomParseError on garbage."""
    values: dict[int, str] = {}
    for tag, _vr, pos, length, _items, _frags in walk_dataset(
        data, offset, explicit_vr=explicit_vr, little_endian=little_endian, stop_before=_STOP
    ):
        if tag in (_SOP_CLASS, _SOP_INSTANCE, _STUDY, _SERIES):
            values[tag] = (
                bytes(data[pos : pos + length]).rstrip(b"\x00 ").decode("ascii", "replace")
            )
    return Identity(
        values.get(_SOP_CLASS, ""),
        values.get(_SOP_INSTANCE, ""),
        values.get(_STUDY, ""),
        values.get(_SERIES, ""),
    )
