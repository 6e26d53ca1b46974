"""DIMSE command sets (PS3.7 9.3, 6.3.1) and message reassembly (PS3.8 Annex E)."""

from __future__ import annotations

import pytest

from gateway.dimse import messages as M
from gateway.dimse.pdu import PDV

# PS3.7 6.3.1: implicit VR little endian, each element tag (group, element), 4-byte
# length, value; (0000,0000) group length first; UI values padded with NUL.
C_ECHO_RQ = (
    b"\x00\x00\x00\x00" + b"\x04\x00\x00\x00" + b"\x38\x00\x00\x00"  # group length 56
    b"\x00\x00\x02\x00" + b"\x12\x00\x00\x00" + b"1.2.840.10008.1.1\x00"  # Affected SOP Class
    b"\x00\x00\x00\x01" + b"\x02\x00\x00\x00" + b"\x30\x00"  # Command Field C-ECHO-RQ
    b"\x00\x00\x10\x01" + b"\x02\x00\x00\x00" + b"\x07\x00"  # Message ID 7
    b"\x00\x00\x00\x08" + b"\x02\x00\x00\x00" + b"\x01\x01"  # Command Data Set Type: none
)

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # 27 characters: padded to 28

C_FIND_RSP_FAILURE = (
    b"\x00\x00\x00\x00" + b"\x04\x00\x00\x00" + b"\x62\x00\x00\x00"  # group length 98
    b"\x00\x00\x02\x00" + b"\x1c\x00\x00\x00" + b"1.2.840.10008.5.1.4.1.2.2.1\x00"
    b"\x00\x00\x00\x01" + b"\x02\x00\x00\x00" + b"\x20\x80"  # C-FIND-RSP
    b"\x00\x00\x20\x01" + b"\x02\x00\x00\x00" + b"\x07\x00"  # Message ID Being Responded To
    b"\x00\x00\x00\x08" + b"\x02\x00\x00\x00" + b"\x01\x01"
    b"\x00\x00\x00\x09" + b"\x02\x00\x00\x00" + b"\x00\xa7"  # Status A700
    b"\x00\x00\x02\x09" + b"\x0e\x00\x00\x00" + b"Out of memory "  # Error Comment (LO)
)

C_MOVE_RSP_PENDING = (  # no group length: some peers leave it out
    b"\x00\x00\x00\x01" + b"\x02\x00\x00\x00" + b"\x21\x80"  # C-MOVE-RSP
    b"\x00\x00\x20\x01" + b"\x02\x00\x00\x00" + b"\x03\x00"
    b"\x00\x00\x00\x08" + b"\x02\x00\x00\x00" + b"\x01\x01"
    b"\x00\x00\x00\x09" + b"\x02\x00\x00\x00" + b"\x00\xff"  # Status FF00
    b"\x00\x00\x20\x10" + b"\x02\x00\x00\x00" + b"\x05\x00"  # remaining 5
    b"\x00\x00\x21\x10" + b"\x02\x00\x00\x00" + b"\x03\x00"  # completed 3
    b"\x00\x00\x22\x10" + b"\x02\x00\x00\x00" + b"\x01\x00"  # failed 1
    b"\x00\x00\x23\x10" + b"\x02\x00\x00\x00" + b"\x00\x00"  # warning 0
)


# --------------------------------------------------------------------------- encode


def test_c_echo_rq_exact_bytes() -> None:
    assert M.c_echo_rq(7).encode() == C_ECHO_RQ


def test_encode_sorts_tags_and_skips_none() -> None:
    cmd = M.Command(
        {
            "CommandDataSetType": M.NO_DATASET,
            "MessageID": 7,
            "CommandField": M.C_ECHO_RQ,
            "AffectedSOPClassUID": "1.2.840.10008.1.1",
            "Priority": None,
            "CommandGroupLength": 999,  # recomputed, never trusted
        }
    )
    assert cmd.encode() == C_ECHO_RQ


def test_c_cancel_rq_exact_bytes() -> None:
    assert (
        M.c_cancel_rq(0x1234).encode()
        == (
            b"\x00\x00\x00\x00" + b"\x04\x00\x00\x00" + b"\x1e\x00\x00\x00"  # group length 30
            b"\x00\x00\x00\x01" + b"\x02\x00\x00\x00" + b"\xff\x0f"  # C-CANCEL-RQ
            b"\x00\x00\x20\x01" + b"\x02\x00\x00\x00" + b"\x34\x12"
            b"\x00\x00\x00\x08" + b"\x02\x00\x00\x00" + b"\x01\x01"
        )
    )


def test_c_find_rq_has_priority_and_a_data_set() -> None:
    wire = M.c_find_rq(2, STUDY_ROOT_FIND).encode()
    assert b"\x00\x00\x00\x07" + b"\x02\x00\x00\x00" + b"\x00\x00" in wire  # Priority medium
    assert wire.endswith(b"\x00\x00\x00\x08" + b"\x02\x00\x00\x00" + b"\x00\x00")
    assert M.Command.decode(wire).has_dataset


def test_c_move_rq_pads_the_destination_with_a_space() -> None:
    wire = M.c_move_rq(1, "1.2.840.10008.5.1.4.1.2.2.2", "GW").encode()
    assert b"\x00\x00\x00\x06" + b"\x02\x00\x00\x00" + b"GW" in wire
    wire = M.c_move_rq(1, "1.2.840.10008.5.1.4.1.2.2.2", "ODD").encode()
    assert b"\x00\x00\x00\x06" + b"\x04\x00\x00\x00" + b"ODD " in wire
    assert M.Command.decode(wire)["MoveDestination"] == "ODD"


def test_c_store_rq_with_move_originator() -> None:
    cmd = M.c_store_rq(5, "1.2.3", "1.2.3.4", move_originator=("PACS", 9))
    back = M.Command.decode(cmd.encode())
    assert back.fields == {
        "CommandGroupLength": len(cmd.encode()) - 12,
        "AffectedSOPClassUID": "1.2.3",
        "CommandField": M.C_STORE_RQ,
        "MessageID": 5,
        "Priority": M.PRIORITY_MEDIUM,
        "CommandDataSetType": M.HAS_DATASET,
        "AffectedSOPInstanceUID": "1.2.3.4",
        "MoveOriginatorApplicationEntityTitle": "PACS",
        "MoveOriginatorMessageID": 9,
    }


def test_unknown_keyword_cannot_be_encoded() -> None:
    with pytest.raises(KeyError):
        M.Command({"PatientName": "X", "CommandField": 1}).encode()


def test_response_to_builds_a_response() -> None:
    rsp = M.response_to(M.c_echo_rq(7), M.C_ECHO_RSP, M.SUCCESS)
    assert (
        rsp.encode()
        == (
            b"\x00\x00\x00\x00" + b"\x04\x00\x00\x00" + b"\x42\x00\x00\x00"  # group length 66
            b"\x00\x00\x02\x00" + b"\x12\x00\x00\x00" + b"1.2.840.10008.1.1\x00"
            b"\x00\x00\x00\x01" + b"\x02\x00\x00\x00" + b"\x30\x80"  # C-ECHO-RSP
            b"\x00\x00\x20\x01" + b"\x02\x00\x00\x00" + b"\x07\x00"
            b"\x00\x00\x00\x08" + b"\x02\x00\x00\x00" + b"\x01\x01"
            b"\x00\x00\x00\x09" + b"\x02\x00\x00\x00" + b"\x00\x00"  # Status 0000
        )
    )


def test_failure_response_exact_bytes() -> None:
    request = M.c_find_rq(7, STUDY_ROOT_FIND)
    response = M.response_to(request, M.C_FIND_RSP, 0xA700, ErrorComment="Out of memory")
    assert response.encode() == C_FIND_RSP_FAILURE


# --------------------------------------------------------------------------- decode


def test_decode_c_echo_rq() -> None:
    cmd = M.Command.decode(C_ECHO_RQ)
    assert cmd.fields == {
        "CommandGroupLength": 56,
        "AffectedSOPClassUID": "1.2.840.10008.1.1",
        "CommandField": M.C_ECHO_RQ,
        "MessageID": 7,
        "CommandDataSetType": M.NO_DATASET,
    }
    assert cmd.command_field == M.C_ECHO_RQ
    assert not cmd.has_dataset
    assert cmd.status == -1  # a request has none


def test_decode_failure_response_with_error_comment() -> None:
    cmd = M.Command.decode(memoryview(C_FIND_RSP_FAILURE))
    assert cmd.command_field == M.C_FIND_RSP
    assert cmd.status == 0xA700
    assert cmd["ErrorComment"] == "Out of memory"
    assert cmd["AffectedSOPClassUID"] == STUDY_ROOT_FIND
    assert cmd["MessageIDBeingRespondedTo"] == 7
    assert cmd["CommandGroupLength"] == len(C_FIND_RSP_FAILURE) - 12
    assert M.status_category(cmd.status) == "failure"


def test_decode_sub_operation_counts() -> None:
    cmd = M.Command.decode(C_MOVE_RSP_PENDING)
    assert cmd.status == 0xFF00
    assert [
        cmd["NumberOfRemainingSuboperations"],
        cmd["NumberOfCompletedSuboperations"],
        cmd["NumberOfFailedSuboperations"],
        cmd["NumberOfWarningSuboperations"],
    ] == [5, 3, 1, 0]
    assert "CommandGroupLength" not in cmd.fields


def test_decode_at_and_unknown_elements() -> None:
    cmd = M.Command.decode(
        b"\x00\x00\x00\x01" + b"\x02\x00\x00\x00" + b"\x20\x80"
        b"\x00\x00\x01\x09" + b"\x04\x00\x00\x00" + b"\x10\x00\x20\x00"  # Offending Element
        b"\x00\x00\xfe\x0f" + b"\x02\x00\x00\x00" + b"ab"  # (0000,0FFE): not in the dictionary
        b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00"  # Status, empty value
    )
    assert cmd["OffendingElement"] == 0x00100020
    assert cmd["00000FFE"] == "ab"
    assert cmd.get("Status", "missing") is None


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(C_ECHO_RQ[:-3], id="value-cut"),
        pytest.param(C_ECHO_RQ + b"\x00\x00\x00", id="trailing-partial-header"),
        pytest.param(b"\x08\x00\x00\x01" + b"\x02\x00\x00\x00" + b"\x30\x00", id="not-group-0000"),
        pytest.param(
            b"\x00\x00\x10\x01" + b"\x02\x00\x00\x00" + b"\x07\x00", id="no-command-field"
        ),
        pytest.param(b"", id="empty"),
    ],
)
def test_decode_rejects_bad_command_sets(wire: bytes) -> None:
    with pytest.raises(M.CommandError):
        M.Command.decode(wire)


def test_any_data_set_type_but_0101_means_a_data_set_follows() -> None:
    # PS3.7 E.1-1: 0x0101 is "no data set"; anything else (pynetdicom: 0x0001,
    # some peers: 0xFEFE) means one follows.
    for value, present in [(0x0101, False), (0x0000, True), (0x0001, True), (0xFEFE, True)]:
        cmd = M.Command({"CommandField": M.C_FIND_RSP, "CommandDataSetType": value})
        assert M.Command.decode(cmd.encode()).has_dataset is present


# --------------------------------------------------------------------------- status


@pytest.mark.parametrize(
    ("status", "category"),
    [
        (0x0000, "success"),
        (0xFF00, "pending"),
        (0xFF01, "pending"),
        (0xFE00, "cancel"),
        (0xB000, "warning"),
        (0xB007, "warning"),
        (0x0001, "warning"),
        (0x0107, "warning"),
        (0x0116, "warning"),
        (0xA700, "failure"),
        (0xA900, "failure"),
        (0xC000, "failure"),
        (0xCFFF, "failure"),
        (0x0122, "failure"),
        (0x0110, "failure"),
    ],
)
def test_status_category(status: int, category: str) -> None:
    assert M.status_category(status) == category


# --------------------------------------------------------------------------- assembler

FIND_RSP_PENDING = M.Command(
    {
        "AffectedSOPClassUID": STUDY_ROOT_FIND,
        "CommandField": M.C_FIND_RSP,
        "MessageIDBeingRespondedTo": 3,
        "CommandDataSetType": 0x0001,
        "Status": 0xFF00,
    }
).encode()


def feed(assembler: M.MessageAssembler, *pdvs: PDV) -> list[M.Message]:
    return list(assembler.feed(tuple(pdvs)))


def test_command_and_data_set_split_over_pdvs_and_pdus() -> None:
    a = M.MessageAssembler()
    cmd = FIND_RSP_PENDING
    # First P-DATA-TF: two command fragments; second: the last one and a data
    # fragment; third: the last data fragment.
    assert feed(a, PDV(5, True, False, cmd[:10]), PDV(5, True, False, cmd[10:30])) == []
    assert (
        feed(a, PDV(5, True, True, memoryview(cmd)[30:]), PDV(5, False, False, b"\x08\x00")) == []
    )
    (msg,) = feed(a, PDV(5, False, True, memoryview(b"\x52\x00")))
    assert msg.context_id == 5
    assert msg.command.status == 0xFF00
    assert msg.command["MessageIDBeingRespondedTo"] == 3
    assert msg.dataset == b"\x08\x00\x52\x00"
    assert isinstance(msg.dataset, bytes)


def test_command_without_data_set_is_complete_at_once() -> None:
    a = M.MessageAssembler()
    (msg,) = feed(a, PDV(1, True, True, C_ECHO_RQ))
    assert msg == M.Message(1, M.Command.decode(C_ECHO_RQ), None)


def test_several_messages_in_one_pdu() -> None:
    a = M.MessageAssembler()
    msgs = feed(
        a,
        PDV(3, True, True, FIND_RSP_PENDING),
        PDV(3, False, True, b"one"),
        PDV(3, True, True, FIND_RSP_PENDING),
        PDV(3, False, True, b"two"),
        PDV(3, True, True, C_FIND_RSP_FAILURE),
    )
    assert [(m.command.status, m.dataset) for m in msgs] == [
        (0xFF00, b"one"),
        (0xFF00, b"two"),
        (0xA700, None),
    ]


def test_empty_data_set_fragment() -> None:
    a = M.MessageAssembler()
    (msg,) = feed(a, PDV(1, True, True, FIND_RSP_PENDING), PDV(1, False, True, b""))
    assert msg.dataset == b""


def test_data_fragment_without_command_is_an_error() -> None:
    with pytest.raises(M.CommandError):
        feed(M.MessageAssembler(), PDV(1, False, True, b"data"))


def test_data_fragment_before_the_last_command_fragment_is_an_error() -> None:
    a = M.MessageAssembler()
    with pytest.raises(M.CommandError):
        feed(a, PDV(1, True, False, FIND_RSP_PENDING[:8]), PDV(1, False, True, b"data"))


def test_data_fragment_on_another_context_is_an_error() -> None:
    a = M.MessageAssembler()
    with pytest.raises(M.CommandError):
        feed(a, PDV(1, True, True, FIND_RSP_PENDING), PDV(3, False, True, b"data"))


def test_command_while_a_data_set_is_expected_is_an_error() -> None:
    a = M.MessageAssembler()
    with pytest.raises(M.CommandError):
        feed(a, PDV(1, True, True, FIND_RSP_PENDING), PDV(1, True, True, C_ECHO_RQ))


def test_undecodable_command_is_an_error() -> None:
    with pytest.raises(M.CommandError):
        feed(M.MessageAssembler(), PDV(1, True, True, b"\x00\x00\x10\x01\x02\x00"))


def test_decode_skips_stray_elements_after_the_command_group() -> None:
    """Orthanc (DCMTK) puts a failed C-GET's Failed SOP Instance UID List, with its
    group length, into the command set itself (seen on the wire from Orthanc 1.10.1)."""
    command = M.Command(
        {
            "AffectedSOPClassUID": "1.2.840.10008.5.1.4.1.2.1.3",
            "CommandField": 0x8010,
            "MessageIDBeingRespondedTo": 1,
            "CommandDataSetType": 0x0101,
            "Status": 0xC000,
            "NumberOfCompletedSuboperations": 0,
            "NumberOfFailedSuboperations": 1,
            "NumberOfWarningSuboperations": 0,
        }
    ).encode()
    uid = b"1.2.3.4.5\x00"
    stray = (
        b"\x08\x00\x00\x00\x04\x00\x00\x00" + (8 + len(uid)).to_bytes(4, "little")
        + b"\x08\x00\x58\x00" + len(uid).to_bytes(4, "little") + uid
    )  # fmt: skip
    decoded = M.Command.decode(command + stray)
    assert decoded.status == 0xC000
    assert decoded.fields["NumberOfFailedSuboperations"] == 1
    assert not decoded.has_dataset
