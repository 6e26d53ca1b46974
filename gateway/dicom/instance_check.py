"""Checks on one STOW-RS instance before it is sent on with C-STORE.

Why: STOW-RS (PS3.18 10.5) answers per instance. An instance the PACS could
never accept (not DICOM, cut short, without the UIDs that identify it) must
end up in the Failed SOP Sequence with a Failure Reason (PS3.18 Annex I,
checklist STOW-04) without opening an association, and the UIDs found here
drive the rest of the transaction: the presentation context (SOP Class and
Transfer Syntax, PS3.7 Annex D), the C-STORE-RQ (Affected SOP Instance UID),
the study check of STOW-02 and the RetrieveURL of STOW-04.

The check walks every element with `walker.walk_dataset` (offsets only,
values are never copied, so the size of the Pixel Data does not matter) so
that a truncated Pixel Data is noticed, and decodes only the four UIDs. The
cost is about 1 us per element: 90 us for a 512 KB CT of 80 top-level
elements, under 0.3 ms for one with 260 (private) elements.

Failure Reason codes (PS3.18 Table I.2-2, which reuses the C-STORE statuses
of PS3.4 Table B.2-1):

- 0xC000 "Error: Cannot understand": the part is not a DICOM file, it has no
  File Meta Information or one without its Transfer Syntax or Media Storage
  SOP Class/Instance UID (Type 1, PS3.10 7.1), or an element runs past the
  end (truncated; encapsulated Pixel Data without its Sequence Delimiter).
- 0xA900 "Error: Data Set does not match SOP Class": a Type 1 attribute the
  IOD requires is missing (SOP Class/Instance UID, PS3.3 C.12.1; Study
  Instance UID, C.7.2.1; Series Instance UID, C.7.3.1), or the File Meta
  Information names another SOP Class/Instance than the dataset (as a C-STORE
  SCP answers when the dataset contradicts the command, PS3.7 9.1.1).
- 0xC122 "Referenced Transfer Syntax not supported" and 0x0122 "Referenced
  SOP Class not supported" are not decided here: they depend on what the PACS
  accepts (and on whether `to_explicit_le` can decode the instance). They are
  defined here so that every STOW code comes from one place. (0xC122 is the
  Transfer Syntax code; 0x0122 is the SOP Class one, PS3.18 Table I.2-2.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.dicom.part10 import (
    TRANSFER_SYNTAX_UID,
    read_part10,
    transfer_syntax_encoding,
)
from gateway.dicom.walker import DicomParseError, walk_dataset

__all__ = [
    "CANNOT_UNDERSTAND",
    "DATASET_DOES_NOT_MATCH_SOP_CLASS",
    "PROCESSING_FAILURE",
    "SOP_CLASS_NOT_SUPPORTED",
    "TRANSFER_SYNTAX_NOT_SUPPORTED",
    "CheckedInstance",
    "InstanceError",
    "check_instance",
]

# PS3.18 Table I.2-2: Store Instances Response Failure Reason values.
DATASET_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900
CANNOT_UNDERSTAND: Final = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED: Final = 0xC122
PROCESSING_FAILURE: Final = 0x0110
SOP_CLASS_NOT_SUPPORTED: Final = 0x0122

SOP_CLASS_UID: Final = 0x00080016
SOP_INSTANCE_UID: Final = 0x00080018
STUDY_INSTANCE_UID: Final = 0x0020000D
SERIES_INSTANCE_UID: Final = 0x0020000E
_WANTED: Final = frozenset(
    {SOP_CLASS_UID, SOP_INSTANCE_UID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID}
)

_PREAMBLE_AND_PREFIX: Final = 132
_FILE_META_END: Final = 0x00030000
_FILE_META_GROUP_LENGTH: Final = 0x00020000


class InstanceError(ValueError):
    """An instance that cannot be stored, with the Failure Reason to report.

    `reason` is a short human-readable text (for logs and the Warning or
    error comment); `failure_code` is the Failure Reason (0008,1197) of the
    Failed SOP Sequence item (PS3.18 Table I.2-2).
    """

    def __init__(self, reason: str, failure_code: int = CANNOT_UNDERSTAND) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure_code = failure_code

    def __reduce__(self) -> tuple[type[InstanceError], tuple[str, int]]:
        # Raised in worker threads/processes: keep both fields when pickled.
        return type(self), (self.reason, self.failure_code)


@dataclass(frozen=True, slots=True)
class CheckedInstance:
    """What STOW-RS needs to know about one instance.

    The dataset to send with C-STORE is `data[dataset_offset:]` of the checked
    bytes, in `transfer_syntax_uid`; for a deflated transfer syntax that is
    the deflated stream itself (PS3.5 A.5), which C-STORE carries as is.
    `explicit_vr` and `little_endian` describe the (inflated) dataset.
    """

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    dataset_offset: int
    explicit_vr: bool
    little_endian: bool


def check_instance(data: bytes | memoryview) -> CheckedInstance:
    """Check one STOW-RS part that should hold a PS3.10 file; see the module
    docstring for what is checked. Raises `InstanceError`."""
    if not len(data):
        raise InstanceError("not a DICOM file: the part is empty")
    try:
        part = read_part10(data)
    except DicomParseError as exc:
        raise InstanceError(f"not a DICOM file: unreadable File Meta Information ({exc})") from None

    if not part.meta:
        # PS3.18 10.5.1.2.1: application/dicom parts are PS3.10 files. A bare
        # dataset has no Transfer Syntax UID, which C-STORE needs.
        try:
            walk_dataset(data, explicit_vr=part.explicit_vr, little_endian=part.little_endian)
        except DicomParseError:
            raise InstanceError("not a DICOM file") from None
        raise InstanceError("no File Meta Information (PS3.10 7.1)")
    if not part.meta.get(TRANSFER_SYNTAX_UID, b"").strip(b"\0 "):
        raise InstanceError("no Transfer Syntax UID (0002,0010) in the File Meta Information")

    try:
        elements = walk_dataset(
            part.data,
            part.offset,
            explicit_vr=part.explicit_vr,
            little_endian=part.little_endian,
        )
    except DicomParseError as exc:
        raise InstanceError(f"truncated or malformed dataset: {exc}") from None

    uids: dict[int, str] = {}
    raw = part.data
    for tag, _vr, offset, length, _items, _fragments in elements:
        if tag in _WANTED:
            uids[tag] = _uid(bytes(raw[offset : offset + length]))

    sop_class = _required(uids, SOP_CLASS_UID, "SOP Class UID (0008,0016)")
    sop_instance = _required(uids, SOP_INSTANCE_UID, "SOP Instance UID (0008,0018)")
    _same(part.sop_class_uid, sop_class, "Media Storage SOP Class UID (0002,0002)")
    _same(part.sop_instance_uid, sop_instance, "Media Storage SOP Instance UID (0002,0003)")
    study = _required(uids, STUDY_INSTANCE_UID, "Study Instance UID (0020,000D)")
    series = _required(uids, SERIES_INSTANCE_UID, "Series Instance UID (0020,000E)")

    return CheckedInstance(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_instance_uid=study,
        series_instance_uid=series,
        transfer_syntax_uid=part.transfer_syntax_uid,
        dataset_offset=_dataset_offset(data, part.offset, part.transfer_syntax_uid, part.meta),
        explicit_vr=part.explicit_vr,
        little_endian=part.little_endian,
    )


def _uid(raw: bytes) -> str:
    """A UI value without padding (PS3.5 9.1: a trailing NUL; some writers pad
    with spaces)."""
    return raw.decode("ascii", "replace").strip("\0 ")


def _required(uids: dict[int, str], tag: int, name: str) -> str:
    """A Type 1 UID of the dataset, or A900 (PS3.18 Table I.2-2)."""
    value = uids.get(tag, "")
    if not value:
        raise InstanceError(f"missing {name}", DATASET_DOES_NOT_MATCH_SOP_CLASS)
    return value


def _same(meta_value: str, dataset_value: str, name: str) -> None:
    """The File Meta Information must name the dataset's SOP Class and
    Instance (PS3.10 7.1, Type 1 there too)."""
    if not meta_value:
        raise InstanceError(f"missing {name} in the File Meta Information")
    if meta_value != dataset_value:
        raise InstanceError(
            f"{name} {meta_value} does not match the dataset's {dataset_value}",
            DATASET_DOES_NOT_MATCH_SOP_CLASS,
        )


def _dataset_offset(
    data: bytes | memoryview, offset: int, transfer_syntax_uid: str, meta: dict[int, bytes]
) -> int:
    """Where the dataset starts in the checked bytes. `read_part10` gives the
    offset in the inflated buffer for a deflated transfer syntax (always 0);
    then the end of the File Meta Information is found again, from its Group
    Length (PS3.10 7.1, Type 1) or else by walking group 0002."""
    if not transfer_syntax_encoding(transfer_syntax_uid)[2]:
        return offset
    start = _PREAMBLE_AND_PREFIX if bytes(data[128:132]) == b"DICM" else 0
    group_length = meta.get(_FILE_META_GROUP_LENGTH, b"")
    if len(group_length) == 4:
        return start + 12 + int.from_bytes(group_length, "little")
    elements = walk_dataset(data, start, stop_before=_FILE_META_END)
    _tag, _vr, value_offset, length, _items, _fragments = elements[-1]
    return value_offset + length
