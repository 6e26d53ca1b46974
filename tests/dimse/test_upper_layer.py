"""The PS3.8 9.2 association state machine, both roles, bytes in and events out.

No sockets: every test feeds PDU bytes to ``UpperLayer.receive`` and checks the
events, the state and what the machine queued to send.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.dimse import pdu as P
from gateway.dimse import upper_layer as U
from gateway.dimse.upper_layer import State

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"

RQ = P.AssociateRequest(
    "PACS",
    "GATEWAY",
    P.UserInformation(16384),
    contexts=(P.PresentationContextRQ(1, VERIFICATION, (IMPLICIT_LE,)),),
)
AC = P.AssociateAccept(
    "PACS",
    "GATEWAY",
    P.UserInformation(16384),
    contexts=(P.PresentationContextAC(1, 0, IMPLICIT_LE),),
)

# The fixed-size PDUs, as PS3.8 9.3.4-9.3.8 lay them out.
RJ_BYTES = b"\x03\x00\x00\x00\x00\x04" + b"\x00\x02\x03\x02"  # transient, local limit exceeded
PDATA_BYTES = b"\x04\x00\x00\x00\x00\x08" + b"\x00\x00\x00\x04\x01\x03\xaa\xbb"
RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
RELEASE_RP = b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"
PEER_ABORT = b"\x07\x00\x00\x00\x00\x04" + b"\x00\x00\x00\x00"  # service user, no reason
# What the machine sends on a protocol error: source 2 (provider), reason 2 or 1.
ABORT_UNEXPECTED = b"\x07\x00\x00\x00\x00\x04" + b"\x00\x00\x02\x02"
ABORT_UNRECOGNIZED = b"\x07\x00\x00\x00\x00\x04" + b"\x00\x00\x02\x01"
USER_ABORT = b"\x07\x00\x00\x00\x00\x04" + b"\x00\x00\x00\x00"

RECEIVED: dict[str, bytes] = {
    "A-ASSOCIATE-RQ": RQ.encode(),
    "A-ASSOCIATE-AC": AC.encode(),
    "A-ASSOCIATE-RJ": RJ_BYTES,
    "P-DATA-TF": PDATA_BYTES,
    "A-RELEASE-RQ": RELEASE_RQ,
    "A-RELEASE-RP": RELEASE_RP,
}


# --------------------------------------------------------------------------- machines in each state


def requestor_idle() -> U.UpperLayer:
    return U.UpperLayer(requestor=True)


def requestor_awaiting_accept() -> U.UpperLayer:
    m = requestor_idle()
    m.request(RQ)
    return m


def requestor_established() -> U.UpperLayer:
    m = requestor_awaiting_accept()
    assert m.receive(AC.encode()) == [U.AssociationAccepted(AC)]
    return m


def acceptor_waiting_for_rq() -> U.UpperLayer:
    return U.UpperLayer(requestor=False)


def acceptor_awaiting_local_response() -> U.UpperLayer:
    m = acceptor_waiting_for_rq()
    assert m.receive(RQ.encode()) == [U.AssociationRequested(RQ)]
    return m


def acceptor_established() -> U.UpperLayer:
    m = acceptor_awaiting_local_response()
    m.accept(AC)
    return m


def awaiting_release_reply(make: Callable[[], U.UpperLayer]) -> Callable[[], U.UpperLayer]:
    def setup() -> U.UpperLayer:
        m = make()
        m.release()
        return m

    return setup


def awaiting_local_release(make: Callable[[], U.UpperLayer]) -> Callable[[], U.UpperLayer]:
    def setup() -> U.UpperLayer:
        m = make()
        assert m.receive(RELEASE_RQ) == [U.ReleaseRequested()]
        return m

    return setup


SETUPS: dict[str, tuple[Callable[[], U.UpperLayer], State]] = {
    "requestor-Sta1": (requestor_idle, State.IDLE),
    "requestor-Sta5": (requestor_awaiting_accept, State.AWAITING_ACCEPT),
    "requestor-Sta6": (requestor_established, State.ESTABLISHED),
    "requestor-Sta7": (awaiting_release_reply(requestor_established), State.AWAITING_RELEASE_REPLY),
    "requestor-Sta8": (awaiting_local_release(requestor_established), State.AWAITING_LOCAL_RELEASE),
    "acceptor-Sta3-before-rq": (acceptor_waiting_for_rq, State.AWAITING_LOCAL_RESPONSE),
    "acceptor-Sta3": (acceptor_awaiting_local_response, State.AWAITING_LOCAL_RESPONSE),
    "acceptor-Sta6": (acceptor_established, State.ESTABLISHED),
    "acceptor-Sta7": (awaiting_release_reply(acceptor_established), State.AWAITING_RELEASE_REPLY),
    "acceptor-Sta8": (awaiting_local_release(acceptor_established), State.AWAITING_LOCAL_RELEASE),
}

PDATA_EVENT = U.DataReceived((P.PDV(1, True, True, b"\xaa\xbb"),))

# Every (state, received PDU) pair that is *expected*, with the event and next state.
# PS3.8 Table 9-10; every other pair is an AA-8 protocol error.
EXPECTED: dict[tuple[str, str], tuple[U.Event | None, State]] = {
    ("requestor-Sta5", "A-ASSOCIATE-AC"): (U.AssociationAccepted(AC), State.ESTABLISHED),
    ("requestor-Sta5", "A-ASSOCIATE-RJ"): (
        U.AssociationRejected(P.AssociateReject(2, 3, 2)),
        State.CLOSED,
    ),
    ("requestor-Sta6", "P-DATA-TF"): (PDATA_EVENT, State.ESTABLISHED),
    ("requestor-Sta6", "A-RELEASE-RQ"): (U.ReleaseRequested(), State.AWAITING_LOCAL_RELEASE),
    ("requestor-Sta7", "P-DATA-TF"): (PDATA_EVENT, State.AWAITING_RELEASE_REPLY),
    ("requestor-Sta7", "A-RELEASE-RP"): (U.Released(), State.CLOSED),
    ("requestor-Sta7", "A-RELEASE-RQ"): (None, State.AWAITING_RELEASE_REPLY),  # collision
    ("acceptor-Sta3-before-rq", "A-ASSOCIATE-RQ"): (
        U.AssociationRequested(RQ),
        State.AWAITING_LOCAL_RESPONSE,
    ),
    ("acceptor-Sta6", "P-DATA-TF"): (PDATA_EVENT, State.ESTABLISHED),
    ("acceptor-Sta6", "A-RELEASE-RQ"): (U.ReleaseRequested(), State.AWAITING_LOCAL_RELEASE),
    ("acceptor-Sta7", "P-DATA-TF"): (PDATA_EVENT, State.AWAITING_RELEASE_REPLY),
    ("acceptor-Sta7", "A-RELEASE-RP"): (U.Released(), State.CLOSED),
    ("acceptor-Sta7", "A-RELEASE-RQ"): (None, State.AWAITING_RELEASE_REPLY),  # collision
}

ALL_PAIRS = [(s, p) for s in SETUPS for p in RECEIVED]


@pytest.mark.parametrize(("setup", "received"), ALL_PAIRS, ids=[f"{s}+{p}" for s, p in ALL_PAIRS])
def test_every_pdu_in_every_state(setup: str, received: str) -> None:
    make, state = SETUPS[setup]
    m = make()
    assert m.state is state
    m.outbox.clear()
    events = m.receive(RECEIVED[received])
    if (setup, received) in EXPECTED:
        event, next_state = EXPECTED[(setup, received)]
        assert events == ([event] if event is not None else [])
        assert m.state is next_state
    else:
        assert len(events) == 1
        (ev,) = events
        assert isinstance(ev, U.Aborted)
        assert (ev.source, ev.reason, ev.local) == (2, 2, True)
        assert m.outbox == [ABORT_UNEXPECTED]
        assert m.state is State.CLOSED


@pytest.mark.parametrize("setup", list(SETUPS))
def test_a_abort_received_in_any_state_closes(setup: str) -> None:
    m = SETUPS[setup][0]()
    m.outbox.clear()
    assert m.receive(b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x06") == [
        U.Aborted(source=2, reason=6, local=False)
    ]
    assert m.state is State.CLOSED
    assert m.outbox == []  # never answer an A-ABORT


@pytest.mark.parametrize("setup", list(SETUPS))
def test_garbage_bytes_abort_with_unrecognized_pdu(setup: str) -> None:
    m = SETUPS[setup][0]()
    m.outbox.clear()
    (ev,) = m.receive(b"GET / HTTP/1.1\r\n\r\n")
    assert isinstance(ev, U.Aborted)
    assert (ev.source, ev.reason, ev.local) == (2, 1, True)
    assert "0x47" in ev.detail  # 'G' is not a PDU type
    assert m.outbox == [ABORT_UNRECOGNIZED]
    assert m.state is State.CLOSED
    # Closed: later bytes are ignored and nothing more is queued.
    assert m.receive(PDATA_BYTES) == []
    assert m.outbox == [ABORT_UNRECOGNIZED]


def test_malformed_pdu_of_a_known_type_aborts() -> None:
    m = requestor_established()
    (ev,) = m.receive(b"\x04\x00\x00\x00\x00\x06" + b"\x00\x00\x00\x09\x01\x03")
    assert isinstance(ev, U.Aborted)
    assert ev.local
    assert m.outbox == [ABORT_UNRECOGNIZED]


def test_pdata_over_our_maximum_aborts() -> None:
    m = U.UpperLayer(requestor=True, max_receive_length=16)
    m.request(RQ)
    m.receive(AC.encode())
    big = P.PDataTF((P.PDV(1, False, True, b"x" * 64),)).encode()
    (ev,) = m.receive(big[:6])  # the header alone is enough to know
    assert isinstance(ev, U.Aborted)
    assert m.outbox == [ABORT_UNRECOGNIZED]


# --------------------------------------------------------------------------- requestor role


def test_requestor_request_then_accept() -> None:
    m = U.UpperLayer(requestor=True)
    assert m.state is State.IDLE
    assert m.request(RQ) == RQ.encode()
    assert m.state is State.AWAITING_ACCEPT
    wire = AC.encode()
    assert m.receive(wire[:10]) == []
    assert m.receive(wire[10:]) == [U.AssociationAccepted(AC)]
    assert m.state is State.ESTABLISHED
    assert m.outbox == []


def test_requestor_reject_closes() -> None:
    m = requestor_awaiting_accept()
    (ev,) = m.receive(b"\x03\x00\x00\x00\x00\x04\x00\x01\x01\x03")
    assert isinstance(ev, U.AssociationRejected)
    assert ev.reject == P.AssociateReject(1, 1, 3)
    assert m.state is State.CLOSED
    assert m.outbox == []


def test_accept_and_data_in_one_chunk_give_both_events() -> None:
    m = requestor_awaiting_accept()
    events = m.receive(AC.encode() + PDATA_BYTES + PDATA_BYTES)
    assert events == [U.AssociationAccepted(AC), PDATA_EVENT, PDATA_EVENT]


def test_nothing_after_an_abort_in_the_same_chunk_is_delivered() -> None:
    m = requestor_established()
    assert m.receive(PDATA_BYTES + PEER_ABORT + PDATA_BYTES) == [
        PDATA_EVENT,
        U.Aborted(0, 0, local=False),
    ]
    assert m.state is State.CLOSED


def test_nothing_after_a_release_reply_is_delivered() -> None:
    m = awaiting_release_reply(requestor_established)()
    assert m.receive(RELEASE_RP + PDATA_BYTES) == [U.Released()]


def test_requestor_releases() -> None:
    m = requestor_established()
    assert m.release() == RELEASE_RQ
    assert m.state is State.AWAITING_RELEASE_REPLY
    # PS3.8 AR-6: the peer may still send P-DATA before its A-RELEASE-RP.
    assert m.receive(PDATA_BYTES) == [PDATA_EVENT]
    assert m.receive(RELEASE_RP) == [U.Released()]
    assert m.state is State.CLOSED
    assert m.outbox == []


def test_peer_releases_a_requestor() -> None:
    m = requestor_established()
    assert m.receive(RELEASE_RQ) == [U.ReleaseRequested()]
    assert m.state is State.AWAITING_LOCAL_RELEASE
    # AR-7: we may still send P-DATA before answering.
    pdata = P.PDataTF((P.PDV(1, False, True, b"zz"),))
    sent = m.send_message_part(1, b"zz", is_command=False, max_pdu_length=16384)
    assert b"".join(bytes(x) for x in sent) == pdata.encode()
    assert m.release_reply() == RELEASE_RP
    assert m.state is State.CLOSED


def test_release_collision_requestor_answers_first() -> None:
    # PS3.8 9.2.3 / AR-8, AR-9, AR-3: both sides sent A-RELEASE-RQ.
    m = requestor_established()
    assert m.release() == RELEASE_RQ
    assert m.receive(RELEASE_RQ) == []
    assert m.outbox == [RELEASE_RP]
    assert m.state is State.AWAITING_RELEASE_REPLY
    assert m.receive(RELEASE_RP) == [U.Released()]
    assert m.outbox == [RELEASE_RP]  # nothing more sent
    assert m.state is State.CLOSED


def test_release_collision_acceptor_answers_after_the_requestor() -> None:
    # PS3.8 AR-8 -> Sta10, AR-10 -> Sta12, AR-4: the acceptor replies only once
    # the requestor's A-RELEASE-RP has arrived (Sta9 would abort an early reply).
    m = acceptor_established()
    assert m.release() == RELEASE_RQ
    assert m.receive(RELEASE_RQ) == []
    assert m.outbox == []
    assert m.receive(RELEASE_RP) == [U.Released()]
    assert m.outbox == [RELEASE_RP]
    assert m.state is State.CLOSED


def test_second_release_request_during_a_collision_aborts() -> None:
    m = requestor_established()
    m.release()
    m.receive(RELEASE_RQ)
    m.outbox.clear()
    (ev,) = m.receive(RELEASE_RQ)
    assert isinstance(ev, U.Aborted)
    assert m.outbox == [ABORT_UNEXPECTED]


def test_data_received_keeps_pdv_fields() -> None:
    m = requestor_established()
    wire = (
        b"\x04\x00\x00\x00\x00\x0e"
        + b"\x00\x00\x00\x03\x01\x01X"  # command, not last
        + b"\x00\x00\x00\x03\x03\x02Y"  # data set, last, context 3
    )
    (ev,) = m.receive(wire)
    assert isinstance(ev, U.DataReceived)
    assert [(p.context_id, p.is_command, p.is_last, bytes(p.data)) for p in ev.pdvs] == [
        (1, True, False, b"X"),
        (3, False, True, b"Y"),
    ]


# --------------------------------------------------------------------------- acceptor role


def test_acceptor_accepts() -> None:
    m = U.UpperLayer(requestor=False)
    assert m.state is State.AWAITING_LOCAL_RESPONSE
    assert m.receive(RQ.encode()) == [U.AssociationRequested(RQ)]
    assert m.accept(AC) == AC.encode()
    assert m.state is State.ESTABLISHED
    assert m.receive(PDATA_BYTES) == [PDATA_EVENT]


def test_acceptor_rejects() -> None:
    m = acceptor_awaiting_local_response()
    assert m.reject(P.AssociateReject(2, 3, 2)) == RJ_BYTES
    assert m.state is State.CLOSED


def test_acceptor_releases_and_is_released() -> None:
    m = acceptor_established()
    assert m.receive(RELEASE_RQ) == [U.ReleaseRequested()]
    assert m.release_reply() == RELEASE_RP
    assert m.state is State.CLOSED

    m = acceptor_established()
    assert m.release() == RELEASE_RQ
    assert m.receive(RELEASE_RP) == [U.Released()]
    assert m.state is State.CLOSED


# --------------------------------------------------------------------------- local primitives


WRONG_CALLS: list[tuple[str, str]] = [
    ("requestor-Sta1", "accept"),
    ("requestor-Sta1", "reject"),
    ("requestor-Sta1", "send_message_part"),
    ("requestor-Sta1", "release"),
    ("requestor-Sta1", "release_reply"),
    ("requestor-Sta5", "request"),
    ("requestor-Sta5", "send_message_part"),
    ("requestor-Sta5", "release"),
    ("requestor-Sta6", "request"),
    ("requestor-Sta6", "accept"),
    ("requestor-Sta6", "release_reply"),
    ("requestor-Sta7", "send_message_part"),
    ("requestor-Sta7", "release"),
    ("requestor-Sta7", "release_reply"),
    ("requestor-Sta8", "release"),
    ("acceptor-Sta3", "request"),
    ("acceptor-Sta3", "send_message_part"),
    ("acceptor-Sta3", "release"),
    ("acceptor-Sta6", "accept"),
    ("acceptor-Sta6", "reject"),
]

CALLS: dict[str, Callable[[U.UpperLayer], object]] = {
    "request": lambda m: m.request(RQ),
    "accept": lambda m: m.accept(AC),
    "reject": lambda m: m.reject(P.AssociateReject(1, 1, 1)),
    "send_message_part": lambda m: m.send_message_part(1, b"", is_command=True, max_pdu_length=0),
    "release": lambda m: m.release(),
    "release_reply": lambda m: m.release_reply(),
}


@pytest.mark.parametrize(("setup", "call"), WRONG_CALLS, ids=[f"{s}-{c}" for s, c in WRONG_CALLS])
def test_local_calls_in_wrong_states_raise(setup: str, call: str) -> None:
    make, state = SETUPS[setup]
    m = make()
    with pytest.raises(U.ProtocolStateError, match=state.value):
        CALLS[call](m)
    assert m.state is state  # unchanged


@pytest.mark.parametrize("call", list(CALLS))
def test_nothing_but_abort_is_allowed_once_closed(call: str) -> None:
    m = requestor_established()
    assert m.abort() == USER_ABORT
    with pytest.raises(U.ProtocolStateError):
        CALLS[call](m)


@pytest.mark.parametrize("setup", list(SETUPS))
def test_local_abort_from_any_state(setup: str) -> None:
    m = SETUPS[setup][0]()
    assert m.abort(P.ABORT_REASON_UNSPECIFIED) == USER_ABORT
    assert m.state is State.CLOSED
    assert m.receive(PDATA_BYTES) == []


def test_connection_lost_is_an_abort_unless_finished() -> None:
    m = requestor_established()
    (ev,) = m.connection_lost()
    assert isinstance(ev, U.Aborted)
    assert ev.local and ev.detail == "connection closed"
    assert m.state is State.CLOSED

    done = awaiting_release_reply(requestor_established)()
    done.receive(RELEASE_RP)
    assert done.connection_lost() == []
    assert requestor_idle().connection_lost() == []
