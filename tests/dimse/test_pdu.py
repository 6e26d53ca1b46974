"""PDU encode/decode against bytes written out by hand from PS3.8 9.3.

Each expected byte string follows the field tables of the standard, one field
per line, so a reader can check it against PS3.8 without running the code.
"""

from __future__ import annotations

import random

import pytest

from gateway.dimse import pdu as P

VERIFICATION = "1.2.840.10008.1.1"  # 17 bytes
IMPLICIT_LE = "1.2.840.10008.1.2"  # 17 bytes
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"  # 27 bytes
FIXED_AE_FIELDS = b"ANY-SCP         " + b"ECHOSCU         " + b"\x00" * 32
APPLICATION_CONTEXT_ITEM = b"\x10\x00\x00\x15" + b"1.2.840.10008.3.1.1.1"

# PS3.8 9.3.2: A-ASSOCIATE-RQ with one presentation context and a small user info.
ASSOCIATE_RQ = (
    b"\x01\x00"  # PDU type 01, reserved
    + b"\x00\x00\x00\xaf"  # PDU length 175
    + b"\x00\x01\x00\x00"  # protocol version 1, reserved
    + FIXED_AE_FIELDS  # called AE, calling AE (16 bytes each, space padded), 32 reserved
    + APPLICATION_CONTEXT_ITEM  # item 10, length 21
    + b"\x20\x00\x00\x2e"  # presentation context item (RQ), length 46
    + b"\x01\x00\x00\x00"  # context ID 1, three reserved bytes
    + b"\x30\x00\x00\x11"
    + b"1.2.840.10008.1.1"  # abstract syntax sub-item
    + b"\x40\x00\x00\x11"
    + b"1.2.840.10008.1.2"  # transfer syntax sub-item
    + b"\x50\x00\x00\x1c"  # user information item, length 28
    + b"\x51\x00\x00\x04"
    + b"\x00\x00\x40\x00"  # maximum length 16384
    + b"\x52\x00\x00\x07"
    + b"1.2.3.4"  # implementation class UID
    + b"\x55\x00\x00\x05"
    + b"TEST1"  # implementation version name
)

# PS3.8 9.3.3: A-ASSOCIATE-AC accepting context 1 and refusing context 3.
ASSOCIATE_AC = (
    b"\x02\x00"
    + b"\x00\x00\x00\x92"  # PDU length 146
    + b"\x00\x01\x00\x00"
    + FIXED_AE_FIELDS
    + APPLICATION_CONTEXT_ITEM
    + b"\x21\x00\x00\x19"  # presentation context item (AC), length 25
    + b"\x01\x00\x00\x00"  # context ID 1, reserved, result 0 (acceptance), reserved
    + b"\x40\x00\x00\x11"
    + b"1.2.840.10008.1.2"
    + b"\x21\x00\x00\x08"
    + b"\x03\x00\x03\x00"  # context ID 3, result 3 (abstract syntax not supported)
    + b"\x40\x00\x00\x00"  # transfer syntax sub-item, empty (not significant)
    + b"\x50\x00\x00\x08"
    + b"\x51\x00\x00\x04"
    + b"\x00\x01\x00\x00"  # maximum length 65536
)

# PS3.8 9.3.4: rejected-permanent, service-user, called AE title not recognized.
ASSOCIATE_RJ = b"\x03\x00" + b"\x00\x00\x00\x04" + b"\x00\x01\x01\x07"

# PS3.8 9.3.5: two PDVs: a whole command (context 1) and a data fragment (context 3).
PDATA = (
    b"\x04\x00"
    + b"\x00\x00\x00\x11"  # PDU length 17
    + b"\x00\x00\x00\x04"  # PDV item length 4 (context ID + header + 2 bytes)
    + b"\x01"  # presentation context ID 1
    + b"\x03"  # message control header: command, last fragment
    + b"\xaa\xbb"
    + b"\x00\x00\x00\x05"
    + b"\x03"
    + b"\x00"  # data set, not the last fragment
    + b"abc"
)

RELEASE_RQ = b"\x05\x00" + b"\x00\x00\x00\x04" + b"\x00\x00\x00\x00"
RELEASE_RP = b"\x06\x00" + b"\x00\x00\x00\x04" + b"\x00\x00\x00\x00"
# PS3.8 9.3.8: source 2 (service provider), reason 1 (unrecognized PDU).
ABORT = b"\x07\x00" + b"\x00\x00\x00\x04" + b"\x00\x00\x02\x01"

ASSOCIATE_RQ_PDU = P.AssociateRequest(
    called_aet="ANY-SCP",
    calling_aet="ECHOSCU",
    user_information=P.UserInformation(
        max_length=16384, implementation_class_uid="1.2.3.4", implementation_version_name="TEST1"
    ),
    contexts=(P.PresentationContextRQ(1, VERIFICATION, (IMPLICIT_LE,)),),
)
ASSOCIATE_AC_PDU = P.AssociateAccept(
    called_aet="ANY-SCP",
    calling_aet="ECHOSCU",
    user_information=P.UserInformation(max_length=65536),
    contexts=(
        P.PresentationContextAC(1, P.ACCEPTANCE, IMPLICIT_LE),
        P.PresentationContextAC(3, P.ABSTRACT_SYNTAX_NOT_SUPPORTED, ""),
    ),
)
PDATA_PDU = P.PDataTF(
    (
        P.PDV(1, is_command=True, is_last=True, data=b"\xaa\xbb"),
        P.PDV(3, is_command=False, is_last=False, data=b"abc"),
    )
)

ALL_PDUS = [
    pytest.param(ASSOCIATE_RQ, ASSOCIATE_RQ_PDU, id="A-ASSOCIATE-RQ"),
    pytest.param(ASSOCIATE_AC, ASSOCIATE_AC_PDU, id="A-ASSOCIATE-AC"),
    pytest.param(ASSOCIATE_RJ, P.AssociateReject(1, 1, 7), id="A-ASSOCIATE-RJ"),
    pytest.param(PDATA, PDATA_PDU, id="P-DATA-TF"),
    pytest.param(RELEASE_RQ, P.ReleaseRequest(), id="A-RELEASE-RQ"),
    pytest.param(RELEASE_RP, P.ReleaseReply(), id="A-RELEASE-RP"),
    pytest.param(ABORT, P.Abort(P.ABORT_SOURCE_PROVIDER, 1), id="A-ABORT"),
]


def parse_one(data: bytes) -> P.Pdu:
    pdus = P.PduParser().feed(data)
    assert len(pdus) == 1
    return pdus[0]


def normalized(pdu: P.Pdu) -> P.Pdu:
    """P-DATA values decode as memoryviews; compare them as bytes."""
    if isinstance(pdu, P.PDataTF):
        return P.PDataTF(
            tuple(P.PDV(v.context_id, v.is_command, v.is_last, bytes(v.data)) for v in pdu.pdvs)
        )
    return pdu


# --------------------------------------------------------------------------- all PDU types


@pytest.mark.parametrize(("wire", "pdu"), ALL_PDUS)
def test_encode_gives_the_bytes_of_the_standard(wire: bytes, pdu: P.Pdu) -> None:
    assert pdu.encode() == wire


@pytest.mark.parametrize(("wire", "pdu"), ALL_PDUS)
def test_decode_gives_the_dataclass(wire: bytes, pdu: P.Pdu) -> None:
    assert normalized(parse_one(wire)) == pdu
    assert normalized(P.decode_pdu(wire[0], memoryview(wire[6:]))) == pdu


@pytest.mark.parametrize(("wire", "pdu"), ALL_PDUS)
def test_round_trip(wire: bytes, pdu: P.Pdu) -> None:
    assert parse_one(pdu.encode()).encode() == wire


def test_pdata_encode_parts_are_header_and_value_slices() -> None:
    parts = PDATA_PDU.encode_parts()
    assert [bytes(p) for p in parts] == [
        b"\x04\x00\x00\x00\x00\x11",
        b"\x00\x00\x00\x04\x01\x03",
        b"\xaa\xbb",
        b"\x00\x00\x00\x05\x03\x00",
        b"abc",
    ]


def test_associate_reject_describes_its_reason() -> None:
    assert P.AssociateReject(1, 1, 7).describe() == (
        "association rejected (permanent): called AE title not recognized"
    )
    assert P.AssociateReject(2, 3, 2).describe() == (
        "association rejected (transient): local limit exceeded"
    )
    assert "reason 9" in P.AssociateReject(1, 2, 9).describe()


def test_decode_tolerates_nul_padded_uids_and_reads_version_and_contexts() -> None:
    # A peer that pads UIDs with NUL (PS3.8 9.3.2.2 says unpadded): still the same UID.
    wire = (
        b"\x01\x00\x00\x00\x00\xa9"  # PDU length 169
        + b"\x00\x01\x00\x00"
        + FIXED_AE_FIELDS
        + b"\x10\x00\x00\x16"
        + b"1.2.840.10008.3.1.1.1\x00"
        + b"\x20\x00\x00\x47"  # context 5, length 71: two transfer syntaxes
        + b"\x05\x00\x00\x00"
        + b"\x30\x00\x00\x12"
        + b"1.2.840.10008.1.1\x00"
        + b"\x40\x00\x00\x14"
        + b"1.2.840.10008.1.2.1\x00"
        + b"\x40\x00\x00\x11"
        + b"1.2.840.10008.1.2"
    )
    rq = parse_one(wire)
    assert isinstance(rq, P.AssociateRequest)
    assert rq.called_aet == "ANY-SCP"
    assert rq.calling_aet == "ECHOSCU"
    assert rq.protocol_version == 1
    assert rq.application_context == P.APPLICATION_CONTEXT
    assert rq.contexts == (
        P.PresentationContextRQ(5, VERIFICATION, ("1.2.840.10008.1.2.1", IMPLICIT_LE)),
    )
    assert rq.user_information == P.UserInformation()  # no user information item


def test_presentation_context_items_encode_alone() -> None:
    rq = P.PresentationContextRQ(7, VERIFICATION, (IMPLICIT_LE, "1.2.840.10008.1.2.1"))
    assert rq.encode() == (
        b"\x20\x00\x00\x45"  # length 4 + 21 + 21 + 23 = 69
        + b"\x07\x00\x00\x00"
        + b"\x30\x00\x00\x11"
        + b"1.2.840.10008.1.1"
        + b"\x40\x00\x00\x11"
        + b"1.2.840.10008.1.2"
        + b"\x40\x00\x00\x13"
        + b"1.2.840.10008.1.2.1"
    )
    ac = P.PresentationContextAC(7, P.TRANSFER_SYNTAXES_NOT_SUPPORTED, IMPLICIT_LE)
    assert ac.encode() == (
        b"\x21\x00\x00\x19" + b"\x07\x00\x04\x00" + b"\x40\x00\x00\x11" + b"1.2.840.10008.1.2"
    )
    assert not ac.accepted
    assert P.PresentationContextAC(1, P.ACCEPTANCE, IMPLICIT_LE).accepted


def test_ae_titles_must_be_1_to_16_characters() -> None:
    with pytest.raises(ValueError):
        P.AssociateRequest("", "ME").encode()
    with pytest.raises(ValueError):
        P.AssociateRequest("A" * 17, "ME").encode()
    with pytest.raises(ValueError):
        P.AssociateRequest("   ", "ME").encode()


# --------------------------------------------------------------------------- user information

# PS3.8 9.3.2.3 / PS3.7 D.3.3: every sub-item we understand plus one we do not.
USER_INFORMATION = (
    b"\x50\x00\x00\x60"  # user information item, length 96
    + b"\x51\x00\x00\x04"
    + b"\x00\x10\x00\x00"  # maximum length 1048576
    + b"\x52\x00\x00\x0f"
    + b"1.2.826.0.1.234"  # implementation class UID
    + b"\x53\x00\x00\x04"
    + b"\x00\x05"  # max operations invoked 5
    + b"\x00\x01"  # max operations performed 1
    + b"\x54\x00\x00\x1f"  # SCP/SCU role selection, length 31
    + b"\x00\x1b"  # UID length 27
    + b"1.2.840.10008.5.1.4.1.2.2.3"
    + b"\x00"  # SCU role: no
    + b"\x01"  # SCP role: yes
    + b"\x55\x00\x00\x0a"
    + b"DWGW_0.1.0"  # implementation version name
    + b"\x58\x00\x00\x08"  # user identity (not interpreted): kept raw
    + b"\x01\x00\x00\x02me\x00\x00"
)
USER_INFORMATION_VALUE = P.UserInformation(
    max_length=1048576,
    implementation_class_uid="1.2.826.0.1.234",
    implementation_version_name="DWGW_0.1.0",
    role_selections=(P.RoleSelection(STUDY_ROOT_GET, scu_role=False, scp_role=True),),
    async_ops=(5, 1),
    other=((0x58, b"\x01\x00\x00\x02me\x00\x00"),),
)


def test_user_information_encode() -> None:
    assert USER_INFORMATION_VALUE.encode() == USER_INFORMATION


def test_user_information_decode() -> None:
    assert P.UserInformation.decode(memoryview(USER_INFORMATION[4:])) == USER_INFORMATION_VALUE


def test_user_information_minimal_is_only_max_length() -> None:
    assert P.UserInformation().encode() == b"\x50\x00\x00\x08" + b"\x51\x00\x00\x04" + bytes(4)


def test_user_information_inside_an_associate_request_round_trips() -> None:
    rq = P.AssociateRequest("PACS", "GATEWAY", USER_INFORMATION_VALUE)
    wire = rq.encode()
    assert wire.endswith(USER_INFORMATION)
    assert parse_one(wire) == rq


def test_role_selection_sub_item_alone() -> None:
    role = P.RoleSelection(VERIFICATION, scu_role=True, scp_role=False)
    assert role.encode() == (
        b"\x54\x00\x00\x15" + b"\x00\x11" + b"1.2.840.10008.1.1" + b"\x01" + b"\x00"
    )


def test_unknown_and_odd_sub_items_are_kept_raw() -> None:
    body = (
        b"\x51\x00\x00\x04\x00\x00\x10\x00"
        + b"\x56\x00\x00\x03"  # SOP class extended negotiation, not interpreted
        + b"xyz"
        + b"\x53\x00\x00\x02"  # asynchronous operations item of the wrong size
        + b"\x00\x01"
    )
    info = P.UserInformation.decode(memoryview(body))
    assert info.max_length == 4096
    assert info.async_ops is None
    assert info.other == ((0x56, b"xyz"), (0x53, b"\x00\x01"))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\x51\x00\x00\x02\x00\x01", id="max-length-not-4-bytes"),
        pytest.param(b"\x54\x00\x00\x03\x00\x01\x31", id="role-selection-too-short"),
        pytest.param(b"\x54\x00\x00\x06\x00\x09\x31\x32\x01\x00", id="role-uid-length-wrong"),
        pytest.param(b"\x52\x00\x00\x09" + b"1.2", id="sub-item-runs-past"),
        pytest.param(b"\x51\x00\x00\x04\x00\x00\x10\x00\x52\x00", id="truncated-header"),
    ],
)
def test_invalid_user_information_sub_items(body: bytes) -> None:
    with pytest.raises(P.PduError):
        P.UserInformation.decode(memoryview(body))


# --------------------------------------------------------------------------- PduParser


STREAM = ASSOCIATE_AC + PDATA + RELEASE_RQ + ABORT
STREAM_PDUS = [ASSOCIATE_AC_PDU, PDATA_PDU, P.ReleaseRequest(), P.Abort(2, 1)]


def test_parser_fed_one_byte_at_a_time() -> None:
    parser = P.PduParser()
    out: list[P.Pdu] = []
    boundaries = set()
    for i in range(len(STREAM)):
        got = parser.feed(STREAM[i : i + 1])
        if got:
            boundaries.add(i + 1)
        out += got
    assert [normalized(p) for p in out] == STREAM_PDUS
    # Each PDU completes exactly on its last byte.
    ends = {len(ASSOCIATE_AC)}
    ends.add(max(ends) + len(PDATA))
    ends.add(max(ends) + len(RELEASE_RQ))
    ends.add(max(ends) + len(ABORT))
    assert boundaries == ends


def test_parser_several_pdus_in_one_chunk() -> None:
    assert [normalized(p) for p in P.PduParser().feed(STREAM)] == STREAM_PDUS


def test_parser_pdu_split_across_chunks() -> None:
    parser = P.PduParser()
    cut1, cut2 = 3, len(ASSOCIATE_AC) + 9  # inside the header, inside the P-DATA PDV header
    assert parser.feed(STREAM[:cut1]) == []
    assert parser.feed(STREAM[cut1:cut2]) == [ASSOCIATE_AC_PDU]
    rest = parser.feed(bytearray(STREAM[cut2:]))
    assert [normalized(p) for p in rest] == STREAM_PDUS[1:]
    assert parser.feed(b"") == []


def test_parser_any_split_of_a_long_stream_gives_the_same_pdus() -> None:
    stream = STREAM[: len(STREAM) - len(ABORT)] * 40 + ABORT
    whole = [normalized(p) for p in P.PduParser().feed(stream)]
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 60)))
        parser = P.PduParser()
        out: list[P.Pdu] = []
        for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            out += parser.feed(stream[start:stop])
        assert [normalized(p) for p in out] == whole


def test_a_chunk_that_completes_a_pdu_is_not_copied_whole() -> None:
    """Only the PDU that straddles two reads is copied; the PDUs after it in the
    second read are views into that read (a C-GET's megabytes are not copied)."""
    parser = P.PduParser()
    cut = len(PDATA) // 2
    assert parser.feed(PDATA[:cut]) == []
    chunk = PDATA[cut:] + PDATA + PDATA
    first, second, third = parser.feed(chunk)
    for pdu in (first, second, third):
        assert isinstance(pdu, P.PDataTF)
        assert bytes(pdu.pdvs[1].data) == b"abc"
    assert isinstance(second, P.PDataTF) and isinstance(third, P.PDataTF)
    assert second.pdvs[1].data.obj is chunk
    assert third.pdvs[0].data.obj is chunk


def test_parser_pdv_values_survive_later_feeds() -> None:
    parser = P.PduParser()
    (pdata,) = parser.feed(PDATA)
    assert isinstance(pdata, P.PDataTF)
    parser.feed(ASSOCIATE_AC[:50])  # the parser's buffer is reused and grown
    parser.feed(b"\xff" * 20)
    assert bytes(pdata.pdvs[0].data) == b"\xaa\xbb"
    assert bytes(pdata.pdvs[1].data) == b"abc"


def test_parser_accepts_pdata_of_exactly_the_max_length() -> None:
    pdata = P.PDataTF((P.PDV(1, False, True, b"x" * 14),))  # PDU length 20
    (pdu,) = P.PduParser(max_length=20).feed(pdata.encode())
    assert isinstance(pdu, P.PDataTF)
    assert bytes(pdu.pdvs[0].data) == b"x" * 14


def test_parser_rejects_pdata_over_the_max_length_from_its_header_alone() -> None:
    header = b"\x04\x00" + b"\x00\x00\x10\x00"  # PDU length 4096, max is 1024
    with pytest.raises(P.PduError, match="exceeds"):
        P.PduParser(max_length=1024).feed(header)


def test_parser_max_length_applies_to_pdata_only() -> None:
    # An A-ASSOCIATE-AC is bigger than a tiny maximum: still fine.
    assert P.PduParser(max_length=16).feed(ASSOCIATE_AC) == [ASSOCIATE_AC_PDU]


def test_parser_rejects_implausible_lengths() -> None:
    with pytest.raises(P.PduError, match="implausible"):
        P.PduParser().feed(b"\x01\x00" + b"\x7f\xff\xff\xff")


# --------------------------------------------------------------------------- invalid PDUs


def _associate(pdu_type: bytes, items: bytes) -> bytes:
    body = b"\x00\x01\x00\x00" + FIXED_AE_FIELDS + items
    return pdu_type + b"\x00" + len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"\x08\x00\x00\x00\x00\x04\x00\x00\x00\x00", id="unknown-type-08"),
        pytest.param(b"\x00\x00\x00\x00\x00\x00", id="unknown-type-00"),
        pytest.param(b"\x01\x00\x00\x00\x00\x10" + bytes(16), id="associate-shorter-than-fixed"),
        pytest.param(
            _associate(b"\x01", b"\x10\x00\x00\x20" + b"1.2.840.10008.3.1.1.1"),
            id="item-runs-past-pdu",
        ),
        pytest.param(_associate(b"\x01", APPLICATION_CONTEXT_ITEM + b"\x20\x00"), id="cut-item"),
        pytest.param(_associate(b"\x01", b"\x20\x00\x00\x02\x01\x00"), id="context-item-too-short"),
        pytest.param(
            _associate(b"\x01", b"\x20\x00\x00\x08\x01\x00\x00\x00\x30\x00\x00\x09"),
            id="context-sub-item-runs-past",
        ),
        pytest.param(
            _associate(b"\x01", b"\x21\x00\x00\x04\x01\x00\x00\x00"), id="ac-context-in-rq"
        ),
        pytest.param(
            _associate(b"\x02", b"\x20\x00\x00\x04\x01\x00\x00\x00"), id="rq-context-in-ac"
        ),
        pytest.param(
            _associate(b"\x01", b"\x50\x00\x00\x06\x51\x00\x00\x02\x00\x01"),
            id="bad-user-information",
        ),
        pytest.param(b"\x03\x00\x00\x00\x00\x03\x00\x01\x01", id="reject-body-3-bytes"),
        pytest.param(b"\x05\x00\x00\x00\x00\x05" + bytes(5), id="release-rq-body-5-bytes"),
        pytest.param(b"\x06\x00\x00\x00\x00\x00", id="release-rp-empty-body"),
        pytest.param(b"\x07\x00\x00\x00\x00\x02\x00\x00", id="abort-body-2-bytes"),
        pytest.param(b"\x04\x00\x00\x00\x00\x00", id="pdata-without-pdv"),
        pytest.param(b"\x04\x00\x00\x00\x00\x04" + b"\x00\x00\x00\x02", id="pdata-cut-pdv-header"),
        pytest.param(
            b"\x04\x00\x00\x00\x00\x0a" + b"\x00\x00\x00\x10\x01\x03abcd",
            id="pdv-length-past-pdu",
        ),
        pytest.param(
            b"\x04\x00\x00\x00\x00\x06" + b"\x00\x00\x00\x01\x01\x03", id="pdv-length-below-2"
        ),
        pytest.param(
            b"\x04\x00\x00\x00\x00\x0a" + b"\x00\x00\x00\x03\x01\x03a" + b"\x00\x00\x00",
            id="pdv-then-trailing-bytes",
        ),
    ],
)
def test_invalid_pdus_raise_pdu_error(wire: bytes) -> None:
    with pytest.raises(P.PduError):
        P.PduParser().feed(wire)


def test_decode_pdu_rejects_unknown_type() -> None:
    with pytest.raises(P.PduError, match="0x09"):
        P.decode_pdu(0x09, memoryview(bytes(4)))


def test_pdu_error_is_a_value_error() -> None:
    assert issubclass(P.PduError, ValueError)


# --------------------------------------------------------------------------- pdata_wire


def wire_pdus(
    context_id: int, data: bytes | memoryview, *, is_command: bool, max_pdu_length: int
) -> list[P.PDataTF]:
    """``pdata_wire`` output read back by the parser, PDU by PDU."""
    wire = P.pdata_wire(context_id, data, is_command=is_command, max_pdu_length=max_pdu_length)
    assert len(wire) % 2 == 0 and all(len(h) == 12 for h in wire[::2])
    pdus = P.PduParser().feed(b"".join(bytes(x) for x in wire))
    assert all(isinstance(p, P.PDataTF) and len(p.pdvs) == 1 for p in pdus)
    return pdus  # type: ignore[return-value]


def test_pdata_wire_splits_at_max_length_minus_6() -> None:
    data = bytes(range(10))
    wire = P.pdata_wire(3, data, is_command=False, max_pdu_length=10)
    assert [bytes(x) for x in wire] == [
        b"\x04\x00\x00\x00\x00\x0a" + b"\x00\x00\x00\x06\x03\x00",
        b"\x00\x01\x02\x03",
        b"\x04\x00\x00\x00\x00\x0a" + b"\x00\x00\x00\x06\x03\x00",
        b"\x04\x05\x06\x07",
        b"\x04\x00\x00\x00\x00\x08" + b"\x00\x00\x00\x04\x03\x02",
        b"\x08\x09",
    ]


@pytest.mark.parametrize("size", [0, 1, 5, 6, 7, 16377, 16378, 16379, 100_001])
@pytest.mark.parametrize("is_command", [True, False])
def test_pdata_wire_is_the_encoding_of_one_pdv_per_pdu(size: int, is_command: bool) -> None:
    data = bytes(i % 251 for i in range(size))
    chunk = 16378
    expected = b"".join(
        P.PDataTF((P.PDV(7, is_command, end >= size, data[pos:end]),)).encode()
        for pos, end in ((p, min(p + chunk, size)) for p in range(0, max(size, 1), chunk))
    )
    wire = P.pdata_wire(7, data, is_command=is_command, max_pdu_length=16384)
    assert b"".join(bytes(x) for x in wire) == expected


def test_pdata_wire_every_pdu_fits_the_peer_maximum() -> None:
    data = b"\x5a" * 100_001
    pdus = wire_pdus(1, data, is_command=True, max_pdu_length=16384)
    assert len(pdus) == 7  # ceil(100001 / 16378)
    assert [len(p.encode()) - 6 for p in pdus[:-1]] == [16384] * 6
    assert len(pdus[-1].encode()) - 6 <= 16384
    assert [p.pdvs[0].is_last for p in pdus] == [False] * 6 + [True]
    assert all(p.pdvs[0].is_command and p.pdvs[0].context_id == 1 for p in pdus)
    assert b"".join(bytes(p.pdvs[0].data) for p in pdus) == data


def test_pdata_wire_exact_multiple_has_no_empty_tail() -> None:
    pdus = wire_pdus(1, b"abcdefgh", is_command=True, max_pdu_length=10)
    assert [bytes(p.pdvs[0].data) for p in pdus] == [b"abcd", b"efgh"]
    assert [p.pdvs[0].is_last for p in pdus] == [False, True]


def test_pdata_wire_empty_data_is_one_empty_last_pdv() -> None:
    wire = P.pdata_wire(5, b"", is_command=True, max_pdu_length=16384)
    assert b"".join(bytes(x) for x in wire) == b"\x04\x00\x00\x00\x00\x06" + (
        b"\x00\x00\x00\x02\x05\x03"
    )
    # ...which the parser reads back as one empty, last command PDV.
    (pdu,) = wire_pdus(5, b"", is_command=True, max_pdu_length=16384)
    assert normalized(pdu) == P.PDataTF((P.PDV(5, True, True, b""),))


def test_pdata_wire_unlimited_peer_is_one_pdu() -> None:
    (pdu,) = wire_pdus(1, b"z" * 70_000, is_command=False, max_pdu_length=0)
    assert len(pdu.pdvs[0].data) == 70_000
    assert pdu.pdvs[0].is_last


def test_pdata_wire_does_not_copy_the_data() -> None:
    data = bytearray(b"0123456789")
    wire = P.pdata_wire(1, memoryview(data), is_command=False, max_pdu_length=11)
    data[0:1] = b"X"
    assert bytes(wire[1]) == b"X1234"


def test_pdata_wire_refuses_a_maximum_without_room_for_data() -> None:
    with pytest.raises(ValueError):
        P.pdata_wire(1, b"a", is_command=False, max_pdu_length=6)
