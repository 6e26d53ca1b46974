"""DICOM upper layer PDUs (PS3.8 9.3): parse and build, no I/O.

Every PDU is a frozen dataclass with ``encode()``; ``PduParser`` turns a byte
stream into PDUs, however the bytes were split by the network.  P-DATA-TF
values stay ``memoryview`` slices of the received buffer so that a 1 MB PDU is
not copied again before the DIMSE layer decides what to do with it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"  # PS3.7 Annex A.2.1
PROTOCOL_VERSION = 1

_HEADER = struct.Struct(">BxL")
_ITEM = struct.Struct(">BxH")


class PduError(ValueError):
    """The peer sent bytes that are not a valid PDU (PS3.8 9.3): abort with reason 2."""


def _aet(value: str) -> bytes:
    raw = value.encode("ascii")
    if not 0 < len(raw.strip()) <= 16:
        raise ValueError(f"AE title must be 1-16 characters: {value!r}")
    return raw.ljust(16)


def _uid(data: bytes | memoryview) -> str:
    # PS3.8 9.3.2.2: UIDs in items are not padded, but some peers add a NUL.
    return bytes(data).rstrip(b"\x00 ").decode("ascii", "replace")


def _item(item_type: int, value: bytes) -> bytes:
    return _ITEM.pack(item_type, len(value)) + value


def _iter_items(data: memoryview, start: int, end: int) -> Iterable[tuple[int, memoryview]]:
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise PduError("truncated item header")
        item_type, length = _ITEM.unpack_from(data, pos)
        pos += 4
        if pos + length > end:
            raise PduError(f"item 0x{item_type:02X} runs past its PDU")
        yield item_type, data[pos : pos + length]
        pos += length


@dataclass(frozen=True)
class PresentationContextRQ:
    """A proposed presentation context (PS3.8 9.3.2.2): one abstract syntax, many TS."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]

    def encode(self) -> bytes:
        sub = _item(0x30, self.abstract_syntax.encode("ascii"))
        for ts in self.transfer_syntaxes:
            sub += _item(0x40, ts.encode("ascii"))
        return _item(0x20, bytes((self.context_id, 0, 0, 0)) + sub)


# PS3.8 Table 9-18: result/reason of a presentation context in the A-ASSOCIATE-AC.
ACCEPTANCE = 0
USER_REJECTION = 1
NO_REASON = 2
ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


@dataclass(frozen=True)
class PresentationContextAC:
    """The acceptor's answer for one proposed context (PS3.8 9.3.3.2)."""

    context_id: int
    result: int
    transfer_syntax: str

    @property
    def accepted(self) -> bool:
        return self.result == ACCEPTANCE

    def encode(self) -> bytes:
        sub = _item(0x40, self.transfer_syntax.encode("ascii"))
        return _item(0x21, bytes((self.context_id, 0, self.result, 0)) + sub)


@dataclass(frozen=True)
class RoleSelection:
    """SCP/SCU Role Selection sub-item (PS3.7 D.3.3.4); C-GET needs scp_role=True."""

    sop_class_uid: str
    scu_role: bool
    scp_role: bool

    def encode(self) -> bytes:
        uid = self.sop_class_uid.encode("ascii")
        body = struct.pack(">H", len(uid)) + uid + bytes((self.scu_role, self.scp_role))
        return _item(0x54, body)


@dataclass(frozen=True)
class UserInformation:
    """User Information item (PS3.8 9.3.2.3, PS3.7 D.3.3): the parts we use.

    Sub-items we do not interpret are kept as raw (type, bytes) pairs so that a
    peer's extended negotiation never breaks parsing.
    """

    max_length: int = 0
    implementation_class_uid: str = ""
    implementation_version_name: str = ""
    role_selections: tuple[RoleSelection, ...] = ()
    async_ops: tuple[int, int] | None = None
    other: tuple[tuple[int, bytes], ...] = ()

    def encode(self) -> bytes:
        sub = _item(0x51, struct.pack(">L", self.max_length))
        if self.implementation_class_uid:
            sub += _item(0x52, self.implementation_class_uid.encode("ascii"))
        if self.async_ops is not None:
            sub += _item(0x53, struct.pack(">HH", *self.async_ops))
        for role in self.role_selections:
            sub += role.encode()
        if self.implementation_version_name:
            sub += _item(0x55, self.implementation_version_name.encode("ascii"))
        for item_type, value in self.other:
            sub += _item(item_type, value)
        return _item(0x50, sub)

    @classmethod
    def decode(cls, data: memoryview) -> UserInformation:
        max_length = 0
        impl_uid = impl_name = ""
        roles: list[RoleSelection] = []
        async_ops = None
        other: list[tuple[int, bytes]] = []
        for item_type, value in _iter_items(data, 0, len(data)):
            if item_type == 0x51:
                if len(value) != 4:
                    raise PduError("maximum length sub-item must be 4 bytes")
                (max_length,) = struct.unpack(">L", value)
            elif item_type == 0x52:
                impl_uid = _uid(value)
            elif item_type == 0x53 and len(value) == 4:
                async_ops = struct.unpack(">HH", value)
            elif item_type == 0x54:
                if len(value) < 4:
                    raise PduError("role selection sub-item too short")
                (n,) = struct.unpack_from(">H", value, 0)
                if 2 + n + 2 != len(value):
                    raise PduError("role selection sub-item has a bad UID length")
                roles.append(
                    RoleSelection(_uid(value[2 : 2 + n]), bool(value[2 + n]), bool(value[3 + n]))
                )
            elif item_type == 0x55:
                impl_name = bytes(value).decode("ascii", "replace").strip()
            else:
                other.append((item_type, bytes(value)))
        return cls(max_length, impl_uid, impl_name, tuple(roles), async_ops, tuple(other))


@dataclass(frozen=True)
class _AssociatePdu:
    """Shared layout of A-ASSOCIATE-RQ and -AC (PS3.8 9.3.2, 9.3.3)."""

    pdu_type: ClassVar[int]
    called_aet: str
    calling_aet: str
    user_information: UserInformation = field(default_factory=UserInformation)
    application_context: str = APPLICATION_CONTEXT
    protocol_version: int = PROTOCOL_VERSION

    def _contexts_encoded(self) -> bytes:
        raise NotImplementedError

    def encode(self) -> bytes:
        body = (
            struct.pack(">H2x", self.protocol_version)
            + _aet(self.called_aet)
            + _aet(self.calling_aet)
            + bytes(32)
            + _item(0x10, self.application_context.encode("ascii"))
            + self._contexts_encoded()
            + self.user_information.encode()
        )
        return _HEADER.pack(self.pdu_type, len(body)) + body


@dataclass(frozen=True)
class AssociateRequest(_AssociatePdu):
    """A-ASSOCIATE-RQ (PS3.8 9.3.2)."""

    pdu_type: ClassVar[int] = 0x01
    contexts: tuple[PresentationContextRQ, ...] = ()

    def _contexts_encoded(self) -> bytes:
        return b"".join(c.encode() for c in self.contexts)


@dataclass(frozen=True)
class AssociateAccept(_AssociatePdu):
    """A-ASSOCIATE-AC (PS3.8 9.3.3)."""

    pdu_type: ClassVar[int] = 0x02
    contexts: tuple[PresentationContextAC, ...] = ()

    def _contexts_encoded(self) -> bytes:
        return b"".join(c.encode() for c in self.contexts)


# PS3.8 Table 9-21: A-ASSOCIATE-RJ result, source and reason.
REJECTED_PERMANENT = 1
REJECTED_TRANSIENT = 2
SOURCE_USER = 1
SOURCE_ACSE_PROVIDER = 2
SOURCE_PRESENTATION_PROVIDER = 3


@dataclass(frozen=True)
class AssociateReject:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4)."""

    pdu_type: ClassVar[int] = 0x03
    result: int
    source: int
    reason: int

    def encode(self) -> bytes:
        return _HEADER.pack(self.pdu_type, 4) + bytes((0, self.result, self.source, self.reason))

    def describe(self) -> str:
        """Human-readable reason, for error bodies and logs (PS3.8 Table 9-21)."""
        reasons = {
            (SOURCE_USER, 1): "no reason given",
            (SOURCE_USER, 2): "application context name not supported",
            (SOURCE_USER, 3): "calling AE title not recognized",
            (SOURCE_USER, 7): "called AE title not recognized",
            (SOURCE_ACSE_PROVIDER, 1): "no reason given",
            (SOURCE_ACSE_PROVIDER, 2): "protocol version not supported",
            (SOURCE_PRESENTATION_PROVIDER, 1): "temporary congestion",
            (SOURCE_PRESENTATION_PROVIDER, 2): "local limit exceeded",
        }
        kind = "permanent" if self.result == REJECTED_PERMANENT else "transient"
        why = reasons.get((self.source, self.reason), f"reason {self.reason}")
        return f"association rejected ({kind}): {why}"


@dataclass(frozen=True)
class PDV:
    """One Presentation Data Value item of a P-DATA-TF (PS3.8 9.3.5.1, Annex E.2)."""

    context_id: int
    is_command: bool
    is_last: bool
    data: bytes | memoryview


_PDV_HEAD = struct.Struct(">LBB")


@dataclass(frozen=True)
class PDataTF:
    """P-DATA-TF (PS3.8 9.3.5)."""

    pdu_type: ClassVar[int] = 0x04
    pdvs: tuple[PDV, ...]

    def encode(self) -> bytes:
        return b"".join(self.encode_parts())

    def encode_parts(self) -> list[bytes | memoryview]:
        """Header and value slices, for a scatter write without joining big values."""
        total = sum(6 + len(p.data) for p in self.pdvs)
        parts: list[bytes | memoryview] = [_HEADER.pack(self.pdu_type, total)]
        for p in self.pdvs:
            mch = (1 if p.is_command else 0) | (2 if p.is_last else 0)
            parts.append(_PDV_HEAD.pack(len(p.data) + 2, p.context_id, mch))
            parts.append(p.data)
        return parts


@dataclass(frozen=True)
class ReleaseRequest:
    """A-RELEASE-RQ (PS3.8 9.3.6)."""

    pdu_type: ClassVar[int] = 0x05

    def encode(self) -> bytes:
        return _HEADER.pack(self.pdu_type, 4) + bytes(4)


@dataclass(frozen=True)
class ReleaseReply:
    """A-RELEASE-RP (PS3.8 9.3.7)."""

    pdu_type: ClassVar[int] = 0x06

    def encode(self) -> bytes:
        return _HEADER.pack(self.pdu_type, 4) + bytes(4)


# PS3.8 Table 9-26: A-ABORT source and reason.
ABORT_SOURCE_USER = 0
ABORT_SOURCE_PROVIDER = 2
ABORT_REASON_UNSPECIFIED = 0
ABORT_REASON_UNRECOGNIZED_PDU = 1
ABORT_REASON_UNEXPECTED_PDU = 2
ABORT_REASON_INVALID_PARAMETER = 6


@dataclass(frozen=True)
class Abort:
    """A-ABORT (PS3.8 9.3.8)."""

    pdu_type: ClassVar[int] = 0x07
    source: int = ABORT_SOURCE_USER
    reason: int = ABORT_REASON_UNSPECIFIED

    def encode(self) -> bytes:
        return _HEADER.pack(self.pdu_type, 4) + bytes((0, 0, self.source, self.reason))


Pdu = (
    AssociateRequest
    | AssociateAccept
    | AssociateReject
    | PDataTF
    | ReleaseRequest
    | ReleaseReply
    | Abort
)


def _decode_associate(pdu_type: int, body: memoryview) -> AssociateRequest | AssociateAccept:
    if len(body) < 68:
        raise PduError("A-ASSOCIATE PDU shorter than its fixed fields")
    (version,) = struct.unpack_from(">H", body, 0)
    called = bytes(body[4:20]).decode("ascii", "replace").strip()
    calling = bytes(body[20:36]).decode("ascii", "replace").strip()
    app_context = ""
    rq: list[PresentationContextRQ] = []
    ac: list[PresentationContextAC] = []
    user = UserInformation()
    for item_type, value in _iter_items(body, 68, len(body)):
        if item_type == 0x10:
            app_context = _uid(value)
        elif item_type in (0x20, 0x21):
            if len(value) < 4:
                raise PduError("presentation context item too short")
            ctx_id, result = value[0], value[2]
            abstract = ""
            syntaxes: list[str] = []
            for sub_type, sub in _iter_items(value, 4, len(value)):
                if sub_type == 0x30:
                    abstract = _uid(sub)
                elif sub_type == 0x40:
                    syntaxes.append(_uid(sub))
            if item_type == 0x20 and pdu_type == 0x01:
                rq.append(PresentationContextRQ(ctx_id, abstract, tuple(syntaxes)))
            elif item_type == 0x21 and pdu_type == 0x02:
                ac.append(PresentationContextAC(ctx_id, result, syntaxes[0] if syntaxes else ""))
            else:
                raise PduError(f"item 0x{item_type:02X} not allowed in PDU 0x{pdu_type:02X}")
        elif item_type == 0x50:
            user = UserInformation.decode(value)
    if pdu_type == 0x01:
        return AssociateRequest(called, calling, user, app_context, version, contexts=tuple(rq))
    return AssociateAccept(called, calling, user, app_context, version, contexts=tuple(ac))


def _decode_pdata(body: memoryview) -> PDataTF:
    pdvs: list[PDV] = []
    pos, end = 0, len(body)
    while pos < end:
        if pos + 6 > end:
            raise PduError("truncated PDV header")
        length, ctx_id, mch = _PDV_HEAD.unpack_from(body, pos)
        if length < 2 or pos + 4 + length > end:
            raise PduError("PDV length does not fit its P-DATA-TF")
        pdvs.append(PDV(ctx_id, bool(mch & 1), bool(mch & 2), body[pos + 6 : pos + 4 + length]))
        pos += 4 + length
    if not pdvs:
        raise PduError("P-DATA-TF without a PDV")
    return PDataTF(tuple(pdvs))


def decode_pdu(pdu_type: int, body: memoryview) -> Pdu:
    """One PDU from its type and body (the bytes after the 6-byte header)."""
    if pdu_type in (0x01, 0x02):
        return _decode_associate(pdu_type, body)
    if pdu_type == 0x04:
        return _decode_pdata(body)
    if pdu_type in (0x03, 0x05, 0x06, 0x07):
        if len(body) != 4:
            raise PduError(f"PDU 0x{pdu_type:02X} must have a 4-byte body")
        if pdu_type == 0x03:
            return AssociateReject(body[1], body[2], body[3])
        if pdu_type == 0x07:
            return Abort(body[2], body[3])
        return ReleaseRequest() if pdu_type == 0x05 else ReleaseReply()
    raise PduError(f"unrecognized PDU type 0x{pdu_type:02X}")


class PduParser:
    """Accumulates received bytes and yields whole PDUs (PS3.8 9.3.1).

    ``max_length`` bounds what we accept, so a garbage length field cannot make
    us buffer gigabytes; for P-DATA-TF it is the maximum length we offered.
    """

    def __init__(self, max_length: int = 0) -> None:
        self._buf = bytearray()
        self.max_length = max_length

    def _check(self, pdu_type: int, length: int) -> None:
        limit = self.max_length + 6 if self.max_length else 0
        if pdu_type == 0x04 and limit and length > limit:
            raise PduError(f"P-DATA-TF of {length} bytes exceeds the negotiated maximum")
        if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
            raise PduError(f"unrecognized PDU type 0x{pdu_type:02X}")
        if length > 64 * 1024 * 1024:
            raise PduError(f"PDU length {length} is implausible")

    def feed(self, data: bytes | bytearray | memoryview) -> list[Pdu]:
        """Whole PDUs from the bytes received so far.

        PDU bodies are views into immutable ``bytes``: the received chunk itself
        when the PDU lies inside it (no copy: a C-GET moves megabytes through
        here), else one ``bytes`` made of the PDU that straddles two chunks. Only
        that PDU is copied, not the chunk that completes it: reads end in the
        middle of a PDU almost every time, and copying each whole chunk twice
        cost about 20 ms of CPU per 50 MB series.
        """
        source = bytes(data) if not isinstance(data, bytes) else data
        view = memoryview(source)
        out: list[Pdu] = []
        pos = 0
        if self._buf:
            pos = self._complete(view, out)
            if pos < 0:
                return out
        end = len(source)
        while end - pos >= 6:
            pdu_type, length = _HEADER.unpack_from(source, pos)
            self._check(pdu_type, length)
            if end - pos < 6 + length:
                break
            out.append(decode_pdu(pdu_type, view[pos + 6 : pos + 6 + length]))
            pos += 6 + length
        if pos < end:
            self._buf += view[pos:]
        return out

    def _complete(self, view: memoryview, out: list[Pdu]) -> int:
        """Finish the PDU begun in ``self._buf`` with the start of ``view``: the
        offset in ``view`` after it, or -1 when ``view`` did not finish it (then
        all of it was buffered)."""
        buf = self._buf
        pos = 0
        if len(buf) < 6:
            pos = min(6 - len(buf), len(view))
            buf += view[:pos]
            if len(buf) < 6:
                return -1
        pdu_type, length = _HEADER.unpack_from(buf, 0)
        self._check(pdu_type, length)
        missing: int = 6 + length - len(buf)
        if len(view) - pos < missing:
            buf += view[pos:]
            return -1
        buf += view[pos : pos + missing]
        whole = bytes(buf)
        buf.clear()
        out.append(decode_pdu(pdu_type, memoryview(whole)[6:]))
        return pos + missing


_PDATA_HEAD = struct.Struct(">BxLLBB")  # P-DATA-TF header and its one PDV item's header


def pdata_wire(
    context_id: int, data: bytes | memoryview, *, is_command: bool, max_pdu_length: int
) -> list[bytes | memoryview]:
    """One command or data set as P-DATA-TF PDUs of one PDV each (PS3.8
    Annex E), encoded: for each PDU its 12-byte header (PDU and PDV item),
    then its slice of ``data`` (never copied).

    ``max_pdu_length`` is the peer's announced maximum (0 = unlimited); a PDV
    costs 6 bytes of it (PS3.8 9.3.5: the limit counts the PDV item headers).
    No ``PDataTF`` objects on this path: at a 16 KB maximum PDU a 512 KB
    instance is 32 PDUs, and building, checking and encoding a ``PDataTF``
    and ``PDV`` for each was about 5-7% of a STOW's samples in a profile of
    the gateway (issue 4).
    """
    view = memoryview(data)
    chunk = max_pdu_length - 6 if max_pdu_length else max(len(view), 1)
    if chunk <= 0:
        raise ValueError("peer maximum PDU length too small")
    head = _PDATA_HEAD.pack
    kind = 1 if is_command else 0
    total = len(view)
    parts: list[bytes | memoryview] = []
    pos = 0
    while True:
        end = min(pos + chunk, total)
        size = end - pos
        last = 2 if end >= total else 0
        parts.append(head(0x04, size + 6, size + 2, context_id, kind | last))
        parts.append(view[pos:end])
        pos = end
        if pos >= total:
            return parts
