"""DIMSE command sets (PS3.7 9.3, 10.3) and message assembly from PDVs.

A command set is always Implicit VR Little Endian (PS3.7 6.3.1) and holds only
group 0000 elements, so it is encoded here directly with ``struct`` instead of
through pydicom: a C-FIND with a thousand pending responses decodes a thousand
command sets.  Tags and VRs still come from pydicom's dictionary.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from gateway.dimse.pdu import PDV

# PS3.7 Table E.1-1 / 9.3: Command Field values.
C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_GET_RQ = 0x0010
C_GET_RSP = 0x8010
C_FIND_RQ = 0x0020
C_FIND_RSP = 0x8020
C_MOVE_RQ = 0x0021
C_MOVE_RSP = 0x8021
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
C_CANCEL_RQ = 0x0FFF

NO_DATASET = 0x0101  # PS3.7 E.1-1 CommandDataSetType: no data set present
HAS_DATASET = 0x0000

PRIORITY_MEDIUM = 0x0000

# PS3.7 Annex C: status classes.
SUCCESS = 0x0000
CANCEL = 0xFE00
PENDING = frozenset({0xFF00, 0xFF01})


def status_category(status: int) -> str:
    """PS3.7 C.1: success, pending, cancel, warning or failure."""
    if status == SUCCESS:
        return "success"
    if status in PENDING:
        return "pending"
    if status == CANCEL:
        return "cancel"
    if status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return "warning"
    return "failure"


class CommandError(ValueError):
    """A command set that cannot be decoded (PS3.7 6.3.1)."""


@cache
def _tag_vr(keyword: str) -> tuple[int, str]:
    tag = tag_for_keyword(keyword)
    if tag is None or tag >> 16 != 0:
        raise KeyError(f"{keyword} is not a command element")
    return tag, dictionary_VR(tag)


@cache
def _keyword_vr(tag: int) -> tuple[str, str]:
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag) or f"0000{tag:04X}", dictionary_VR(tag)


_ELEM = struct.Struct("<HHL")


def _encode_value(vr: str, value: Any) -> bytes:
    if vr in ("US",):
        return struct.pack("<H", value)
    if vr == "UL":
        return struct.pack("<L", value)
    if vr == "AT":
        return struct.pack("<HH", value >> 16, value & 0xFFFF)
    raw = str(value).encode("ascii")
    if len(raw) % 2:
        raw += b"\x00" if vr == "UI" else b" "  # PS3.5 6.2: UI pads with NUL
    return raw


def _decode_value(vr: str, raw: bytes) -> Any:
    if vr == "US":
        return struct.unpack("<H", raw)[0] if len(raw) == 2 else None
    if vr == "UL":
        return struct.unpack("<L", raw)[0] if len(raw) == 4 else None
    if vr == "AT":
        if len(raw) != 4:
            return None
        g, e = struct.unpack("<HH", raw)
        return (g << 16) | e
    return raw.rstrip(b"\x00 ").decode("ascii", "replace")


@dataclass
class Command:
    """A decoded command set: element keyword -> value."""

    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, keyword: str) -> Any:
        return self.fields[keyword]

    def get(self, keyword: str, default: Any = None) -> Any:
        return self.fields.get(keyword, default)

    @property
    def command_field(self) -> int:
        return int(self.fields.get("CommandField", -1))

    @property
    def status(self) -> int:
        return int(self.fields.get("Status", -1))

    @property
    def has_dataset(self) -> bool:
        return bool(self.fields.get("CommandDataSetType", NO_DATASET) != NO_DATASET)

    def encode(self) -> bytes:
        """PS3.7 6.3.1: implicit VR LE, ascending tags, group length first."""
        elems: list[tuple[int, bytes]] = []
        for keyword, value in self.fields.items():
            if keyword == "CommandGroupLength" or value is None:
                continue
            tag, vr = _tag_vr(keyword)
            elems.append((tag, _encode_value(vr, value)))
        elems.sort()
        body = b"".join(_ELEM.pack(0, t & 0xFFFF, len(v)) + v for t, v in elems)
        return _ELEM.pack(0, 0, 4) + struct.pack("<L", len(body)) + body

    @classmethod
    def decode(cls, data: bytes | memoryview) -> Command:
        raw = bytes(data)
        fields: dict[str, Any] = {}
        pos, end = 0, len(raw)
        while pos < end:
            if pos + 8 > end:
                raise CommandError("truncated command element")
            group, elem, length = _ELEM.unpack_from(raw, pos)
            pos += 8
            if pos + length > end:
                raise CommandError(f"bad command element ({group:04X},{elem:04X})")
            if group != 0:
                # Orthanc (DCMTK) appends a failed C-GET's (0008,0058) Failed SOP
                # Instance UID List, with its group length, to the command set
                # itself. Not ours to interpret: skipped, not fatal.
                pos += length
                continue
            try:
                keyword, vr = _keyword_vr(elem)
            except KeyError:
                keyword, vr = f"0000{elem:04X}", "UN"
            fields[keyword] = _decode_value(vr, raw[pos : pos + length])
            pos += length
        if "CommandField" not in fields:
            raise CommandError("command set without CommandField")
        return cls(fields)


def c_echo_rq(message_id: int) -> Command:
    return Command(
        {
            "AffectedSOPClassUID": "1.2.840.10008.1.1",
            "CommandField": C_ECHO_RQ,
            "MessageID": message_id,
            "CommandDataSetType": NO_DATASET,
        }
    )


def _query_retrieve_rq(command_field: int, message_id: int, sop_class_uid: str) -> Command:
    """C-FIND/C-GET/C-MOVE-RQ share their fields (PS3.7 9.3.2.1, 9.3.3.1, 9.3.4.1)."""
    return Command(
        {
            "AffectedSOPClassUID": sop_class_uid,
            "CommandField": command_field,
            "MessageID": message_id,
            "Priority": PRIORITY_MEDIUM,
            "CommandDataSetType": HAS_DATASET,
        }
    )


def c_find_rq(message_id: int, sop_class_uid: str) -> Command:
    return _query_retrieve_rq(C_FIND_RQ, message_id, sop_class_uid)


def c_get_rq(message_id: int, sop_class_uid: str) -> Command:
    return _query_retrieve_rq(C_GET_RQ, message_id, sop_class_uid)


def c_move_rq(message_id: int, sop_class_uid: str, destination: str) -> Command:
    command = _query_retrieve_rq(C_MOVE_RQ, message_id, sop_class_uid)
    command.fields["MoveDestination"] = destination
    return command


def c_store_rq(
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    *,
    move_originator: tuple[str, int] | None = None,
) -> Command:
    fields: dict[str, Any] = {
        "AffectedSOPClassUID": sop_class_uid,
        "CommandField": C_STORE_RQ,
        "MessageID": message_id,
        "Priority": PRIORITY_MEDIUM,
        "CommandDataSetType": HAS_DATASET,
        "AffectedSOPInstanceUID": sop_instance_uid,
    }
    if move_originator:
        fields["MoveOriginatorApplicationEntityTitle"] = move_originator[0]
        fields["MoveOriginatorMessageID"] = move_originator[1]
    return Command(fields)


def c_cancel_rq(message_id_being_responded_to: int) -> Command:
    return Command(
        {
            "CommandField": C_CANCEL_RQ,
            "MessageIDBeingRespondedTo": message_id_being_responded_to,
            "CommandDataSetType": NO_DATASET,
        }
    )


def response_to(request: Command, response_field: int, status: int, **extra: Any) -> Command:
    """A response command for ``request`` (used by our SCP roles and test peers)."""
    fields: dict[str, Any] = {
        "AffectedSOPClassUID": request.get("AffectedSOPClassUID"),
        "CommandField": response_field,
        "MessageIDBeingRespondedTo": request.get("MessageID"),
        "CommandDataSetType": NO_DATASET,
        "Status": status,
    }
    fields.update(extra)
    return Command(fields)


@dataclass
class Message:
    """One DIMSE message: the command and, if it has one, the data set bytes."""

    context_id: int
    command: Command
    dataset: bytes | None = None


class MessageAssembler:
    """Reassembles DIMSE messages from PDV fragments (PS3.8 Annex E.2).

    Command fragments are collected until the last one; then, if the command
    says a data set follows, data set fragments until theirs.
    """

    def __init__(self) -> None:
        self._command: list[bytes | memoryview] = []
        self._pending: Command | None = None
        self._context_id = 0
        self._data: list[bytes | memoryview] = []

    def feed(self, pdvs: tuple[PDV, ...]) -> Iterator[Message]:
        for pdv in pdvs:
            if pdv.is_command:
                if self._pending is not None:
                    raise CommandError("command fragment while a data set was expected")
                self._command.append(pdv.data)
                self._context_id = pdv.context_id
                if pdv.is_last:
                    command = Command.decode(b"".join(self._command))
                    self._command = []
                    if command.has_dataset:
                        self._pending = command
                    else:
                        yield Message(pdv.context_id, command)
            else:
                if self._pending is None or pdv.context_id != self._context_id:
                    raise CommandError("data set fragment without its command")
                self._data.append(pdv.data)
                if pdv.is_last:
                    message = Message(self._context_id, self._pending, b"".join(self._data))
                    self._pending = None
                    self._data = []
                    yield message
