"""The association state machine of PS3.8 9.2, without I/O.

Bytes go in through ``receive()`` and come back as events; whatever the
machine must send (our requests, or an A-ABORT after a protocol error) is
returned by the method that caused it or queued in ``outbox``.  The asyncio
drivers in ``requestor.py`` and ``acceptor.py`` own the sockets.

States are named after PS3.8 Table 9-10 (Sta1 idle, Sta3 awaiting local
response, Sta5 awaiting A-ASSOCIATE-AC, Sta6 established, Sta7 awaiting
A-RELEASE-RP, Sta8 awaiting local release response, Sta13 awaiting close).
Transport connect/accept (Sta2, Sta4) belong to the driver.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.dimse import pdu as P


class State(enum.Enum):
    IDLE = "Sta1"
    AWAITING_LOCAL_RESPONSE = "Sta3"
    AWAITING_ACCEPT = "Sta5"
    ESTABLISHED = "Sta6"
    AWAITING_RELEASE_REPLY = "Sta7"
    AWAITING_LOCAL_RELEASE = "Sta8"
    CLOSED = "Sta13"


@dataclass(frozen=True)
class AssociationRequested:
    request: P.AssociateRequest


@dataclass(frozen=True)
class AssociationAccepted:
    accept: P.AssociateAccept


@dataclass(frozen=True)
class AssociationRejected:
    reject: P.AssociateReject


@dataclass(frozen=True)
class DataReceived:
    pdvs: tuple[P.PDV, ...]


@dataclass(frozen=True)
class ReleaseRequested:
    """The peer asked to release; answer with ``release_reply()`` when idle."""


@dataclass(frozen=True)
class Released:
    """A-RELEASE-RP received (or sent): the transport may be closed."""


@dataclass(frozen=True)
class Aborted:
    """A-ABORT received, or a protocol error made us send one (``local``)."""

    source: int
    reason: int
    local: bool = False
    detail: str = ""


Event = (
    AssociationRequested
    | AssociationAccepted
    | AssociationRejected
    | DataReceived
    | ReleaseRequested
    | Released
    | Aborted
)


class ProtocolStateError(RuntimeError):
    """A local call that the current state does not allow (a bug in the caller)."""


class UpperLayer:
    """One association, either role.  Not thread-safe; one driver owns it."""

    def __init__(self, *, requestor: bool, max_receive_length: int = 0) -> None:
        self.requestor = requestor
        self.state = State.IDLE if requestor else State.AWAITING_LOCAL_RESPONSE
        self._parser = P.PduParser(max_receive_length)
        self.outbox: list[bytes] = []
        self._requested = False
        self._collision = False

    def _need(self, *states: State) -> None:
        if self.state not in states:
            raise ProtocolStateError(f"not allowed in {self.state.value}")

    # -- local primitives -------------------------------------------------
    def request(self, rq: P.AssociateRequest) -> bytes:
        """A-ASSOCIATE request primitive (AE-2): Sta1 -> Sta5."""
        self._need(State.IDLE)
        self.state = State.AWAITING_ACCEPT
        return rq.encode()

    def accept(self, ac: P.AssociateAccept) -> bytes:
        """A-ASSOCIATE response accept (AE-7): Sta3 -> Sta6."""
        self._need(State.AWAITING_LOCAL_RESPONSE)
        self.state = State.ESTABLISHED
        return ac.encode()

    def reject(self, rj: P.AssociateReject) -> bytes:
        """A-ASSOCIATE response reject (AE-8): Sta3 -> Sta13."""
        self._need(State.AWAITING_LOCAL_RESPONSE)
        self.state = State.CLOSED
        return rj.encode()

    def check_send_data(self) -> None:
        """P-DATA request (DT-1, AR-7): allowed established or while the peer releases."""
        self._need(State.ESTABLISHED, State.AWAITING_LOCAL_RELEASE)

    def send_message_part(
        self, context_id: int, data: bytes | memoryview, *, is_command: bool, max_pdu_length: int
    ) -> list[bytes | memoryview]:
        """P-DATA requests for a whole command or data set (``pdu.pdata_wire``)."""
        self.check_send_data()
        return P.pdata_wire(context_id, data, is_command=is_command, max_pdu_length=max_pdu_length)

    def release(self) -> bytes:
        """A-RELEASE request (AR-1): Sta6 -> Sta7."""
        self._need(State.ESTABLISHED)
        self.state = State.AWAITING_RELEASE_REPLY
        return P.ReleaseRequest().encode()

    def release_reply(self) -> bytes:
        """A-RELEASE response (AR-4): Sta8 -> Sta13."""
        self._need(State.AWAITING_LOCAL_RELEASE)
        self.state = State.CLOSED
        return P.ReleaseReply().encode()

    def abort(self, reason: int = P.ABORT_REASON_UNSPECIFIED) -> bytes:
        """A-ABORT request (AA-1): any state -> Sta13."""
        self.state = State.CLOSED
        return P.Abort(P.ABORT_SOURCE_USER, reason).encode()

    def connection_lost(self) -> list[Event]:
        """Transport closed (AA-4 / AA-5): an abort unless we were already done."""
        was = self.state
        self.state = State.CLOSED
        if was in (State.CLOSED, State.IDLE):
            return []
        return [
            Aborted(P.ABORT_SOURCE_PROVIDER, P.ABORT_REASON_UNSPECIFIED, True, "connection closed")
        ]

    # -- received PDUs ----------------------------------------------------
    def receive(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes from the transport; returns the events they complete."""
        if self.state is State.CLOSED:
            return []
        try:
            pdus = self._parser.feed(data)
        except P.PduError as exc:
            return [self._protocol_error(P.ABORT_REASON_UNRECOGNIZED_PDU, str(exc))]
        events: list[Event] = []
        for pdu in pdus:
            ev = self._on_pdu(pdu)
            if ev is not None:
                events.append(ev)
            if isinstance(ev, Aborted | Released | AssociationRejected):
                break
        return events

    def _protocol_error(self, reason: int, detail: str) -> Aborted:
        # AA-8: send A-ABORT (service-provider source) and close.
        self.state = State.CLOSED
        self.outbox.append(P.Abort(P.ABORT_SOURCE_PROVIDER, reason).encode())
        return Aborted(P.ABORT_SOURCE_PROVIDER, reason, True, detail)

    def _on_pdu(self, pdu: P.Pdu) -> Event | None:
        st = self.state
        if isinstance(pdu, P.Abort):
            self.state = State.CLOSED
            return Aborted(pdu.source, pdu.reason)
        if isinstance(pdu, P.PDataTF) and st in (State.ESTABLISHED, State.AWAITING_RELEASE_REPLY):
            return DataReceived(pdu.pdvs)
        if isinstance(pdu, P.AssociateAccept) and st is State.AWAITING_ACCEPT:
            self.state = State.ESTABLISHED
            return AssociationAccepted(pdu)
        if isinstance(pdu, P.AssociateReject) and st is State.AWAITING_ACCEPT:
            self.state = State.CLOSED
            return AssociationRejected(pdu)
        if isinstance(pdu, P.AssociateRequest) and st is State.AWAITING_LOCAL_RESPONSE:
            if self._requested:
                return self._protocol_error(P.ABORT_REASON_UNEXPECTED_PDU, "second A-ASSOCIATE-RQ")
            self._requested = True
            return AssociationRequested(pdu)
        if isinstance(pdu, P.ReleaseRequest):
            if st is State.ESTABLISHED:
                self.state = State.AWAITING_LOCAL_RELEASE
                return ReleaseRequested()
            if st is State.AWAITING_RELEASE_REPLY and not self._collision:
                # Release collision (PS3.8 9.2.3, AR-8): the requestor answers at once
                # (AR-9) and waits for theirs; the acceptor answers only after the
                # requestor's A-RELEASE-RP has arrived (AR-10, AR-4).
                self._collision = True
                if self.requestor:
                    self.outbox.append(P.ReleaseReply().encode())
                return None
        if isinstance(pdu, P.ReleaseReply) and st is State.AWAITING_RELEASE_REPLY:
            if self._collision and not self.requestor:
                self.outbox.append(P.ReleaseReply().encode())
            self.state = State.CLOSED
            return Released()
        name = type(pdu).__name__
        return self._protocol_error(
            P.ABORT_REASON_UNEXPECTED_PDU, f"unexpected {name} in {st.value}"
        )
