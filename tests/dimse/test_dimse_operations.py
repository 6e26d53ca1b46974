"""C-ECHO and C-FIND SCU logic against scripted responses, without a network.

The real-peer tests cannot make pynetdicom send odd but legal answers (a pending
response without identifier, a final Success racing our C-CANCEL, a stray
message); here a stand-in association replays exactly those.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.dimse import messages as M
from gateway.dimse.contexts import STUDY_ROOT_FIND
from gateway.dimse.echoscu import c_echo
from gateway.dimse.errors import AssociationAborted, DimseTimeout, StatusError
from gateway.dimse.findscu import FindMatch, FindOperation
from gateway.dimse.pdu import PresentationContextAC

MESSAGE_ID = 7


class ScriptedAssociation:
    """Stands in for ``requestor.Association``: records sends, replays responses."""

    def __init__(self, *responses: M.Message, transfer_syntax: str = ExplicitVRLittleEndian):
        self.inbox = deque(responses)
        self.sent: list[tuple[int, M.Command, bytes | None]] = []
        self.aborted = False
        self.transfer_syntax = transfer_syntax

    def context_for(self, abstract_syntax: str) -> PresentationContextAC:
        return PresentationContextAC(3, 0, self.transfer_syntax)

    def next_message_id(self) -> int:
        return MESSAGE_ID

    async def send(self, context_id: int, command: M.Command, dataset: Any = None) -> None:
        self.sent.append((context_id, command, None if dataset is None else bytes(dataset)))

    async def receive(self, timeout: float) -> M.Message:
        if not self.inbox:
            raise DimseTimeout("no more scripted responses")
        return self.inbox.popleft()

    def abort(self) -> None:
        self.aborted = True

    @property
    def sent_fields(self) -> list[int]:
        return [cmd.command_field for _, cmd, _ in self.sent]


def rsp(field: int, status: int, dataset: bytes | None = None, **extra: Any) -> M.Message:
    fields: dict[str, Any] = {
        "CommandField": field,
        "MessageIDBeingRespondedTo": extra.pop("responding_to", MESSAGE_ID),
        "CommandDataSetType": M.NO_DATASET if dataset is None else 0x0001,
        "Status": status,
        **extra,
    }
    return M.Message(3, M.Command(fields), dataset)


def find_rsp(status: int, dataset: bytes | None = None, **extra: Any) -> M.Message:
    return rsp(M.C_FIND_RSP, status, dataset, **extra)


def operation(assoc: ScriptedAssociation) -> FindOperation:
    return FindOperation(
        assoc,  # type: ignore[arg-type]
        STUDY_ROOT_FIND,
        lambda ts: b"IDENTIFIER:" + ts.encode(),
        timeout=1,
    )


async def collect(op: FindOperation) -> list[FindMatch]:
    async with op:
        return [m async for m in op]


# --------------------------------------------------------------------------- C-ECHO


def test_echo_success() -> None:
    assoc = ScriptedAssociation(rsp(M.C_ECHO_RSP, 0x0000))
    asyncio.run(c_echo(assoc, timeout=1))  # type: ignore[arg-type]
    ((ctx, cmd, data),) = assoc.sent
    assert (ctx, data) == (3, None)
    assert cmd.encode() == M.c_echo_rq(MESSAGE_ID).encode()


def test_echo_failure_status_raises() -> None:
    assoc = ScriptedAssociation(rsp(M.C_ECHO_RSP, 0x0211, ErrorComment="unrecognized"))
    with pytest.raises(StatusError) as err:
        asyncio.run(c_echo(assoc, timeout=1))  # type: ignore[arg-type]
    assert (err.value.operation, err.value.status, err.value.comment) == (
        "C-ECHO",
        0x0211,
        "unrecognized",
    )
    assert not assoc.aborted


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(rsp(M.C_FIND_RSP, 0x0000), id="wrong-command"),
        pytest.param(rsp(M.C_ECHO_RSP, 0x0000, responding_to=8), id="wrong-message-id"),
    ],
)
def test_echo_wrong_answer_aborts(answer: M.Message) -> None:
    assoc = ScriptedAssociation(answer)
    with pytest.raises(AssociationAborted):
        asyncio.run(c_echo(assoc, timeout=1))  # type: ignore[arg-type]
    assert assoc.aborted


# --------------------------------------------------------------------------- C-FIND


def test_find_sends_the_identifier_for_the_negotiated_syntax() -> None:
    for ts, explicit in [(ExplicitVRLittleEndian, True), (ImplicitVRLittleEndian, False)]:
        assoc = ScriptedAssociation(find_rsp(0xFF00, b"m1"), find_rsp(0x0000), transfer_syntax=ts)
        matches = asyncio.run(collect(operation(assoc)))
        assert matches == [FindMatch(b"m1", explicit)]
        ((ctx, cmd, data),) = assoc.sent
        assert ctx == 3
        assert cmd.command_field == M.C_FIND_RQ and cmd["MessageID"] == MESSAGE_ID
        assert data == b"IDENTIFIER:" + ts.encode()


def test_find_skips_a_pending_response_without_identifier() -> None:
    assoc = ScriptedAssociation(
        find_rsp(0xFF00, b"a"), find_rsp(0xFF01), find_rsp(0xFF01, b"b"), find_rsp(0x0000)
    )
    assert [m.dataset for m in asyncio.run(collect(operation(assoc)))] == [b"a", b"b"]


def test_find_warning_status_ends_with_a_comment() -> None:
    assoc = ScriptedAssociation(find_rsp(0xFF00, b"a"), find_rsp(0xB000, ErrorComment="partial"))
    op = operation(assoc)
    assert len(asyncio.run(collect(op))) == 1
    assert (op.final_status, op.warning_comment) == (0xB000, "partial")

    assoc = ScriptedAssociation(find_rsp(0x0107))
    op = operation(assoc)
    asyncio.run(collect(op))
    assert op.warning_comment == "status 0x0107"


def test_find_stray_message_aborts() -> None:
    assoc = ScriptedAssociation(find_rsp(0xFF00, b"a"), find_rsp(0xFF00, b"b", responding_to=99))
    with pytest.raises(AssociationAborted):
        asyncio.run(collect(operation(assoc)))
    assert assoc.aborted


def test_cancel_drains_until_the_final_response_whatever_it_is() -> None:
    # The peer had already finished when our C-CANCEL arrived: pending, then Success.
    assoc = ScriptedAssociation(
        find_rsp(0xFF00, b"a"), find_rsp(0xFF00, b"b"), find_rsp(0xFF00, b"c"), find_rsp(0x0000)
    )
    op = operation(assoc)

    async def first_only() -> None:
        async with op:
            async for _ in op:
                break

    asyncio.run(first_only())
    assert assoc.sent_fields == [M.C_FIND_RQ, M.C_CANCEL_RQ]
    assert assoc.sent[1][1]["MessageIDBeingRespondedTo"] == MESSAGE_ID
    assert (op.finished, op.final_status) == (True, 0x0000)
    assert not assoc.inbox and not assoc.aborted


def test_cancel_that_goes_wrong_aborts() -> None:
    assoc = ScriptedAssociation(find_rsp(0xFF00, b"a"), rsp(M.C_ECHO_RSP, 0, responding_to=1))
    op = operation(assoc)

    async def first_only() -> None:
        async with op:
            async for _ in op:
                break

    with pytest.raises(AssociationAborted):
        asyncio.run(first_only())
    assert assoc.aborted

    # No answer to the C-CANCEL at all: a timeout, and the association is aborted.
    assoc = ScriptedAssociation(find_rsp(0xFF00, b"a"))
    op = operation(assoc)
    with pytest.raises(DimseTimeout):
        asyncio.run(first_only())
    assert assoc.aborted


def test_failure_after_matches_raises_and_needs_no_cancel() -> None:
    assoc = ScriptedAssociation(find_rsp(0xFF00, b"a"), find_rsp(0xC001, ErrorComment="boom"))
    with pytest.raises(StatusError, match="0xC001 \\(boom\\)"):
        asyncio.run(collect(operation(assoc)))
    assert assoc.sent_fields == [M.C_FIND_RQ]
    assert not assoc.aborted
