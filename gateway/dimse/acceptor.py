"""The asyncio driver of associations we accept (the SCP side).

C-MOVE needs a listener: the PACS opens its own association to the move
destination and sends each instance there as a C-STORE sub-operation
(PS3.4 C.4.2.2).  This module owns that listener.  It is the acceptor-role
twin of ``requestor.py``: the same sans-I/O ``UpperLayer`` and
``MessageAssembler``, the same socket tuning (``DimseProtocol``: TCP_NODELAY
and TCP_QUICKACK), one task per association that answers its messages in
order.

What the acceptor decides itself, and why:

- the A-ASSOCIATE-RQ, in ``negotiate()``, a pure function (PS3.8 9.3.3/9.3.4):
  the called AE title must be ours unless configured otherwise; storage SOP
  classes and Verification are accepted, each with the first transfer syntax
  the requestor proposed that we take;
- C-ECHO is answered here (PS3.7 9.1.5): every SCP supports Verification;
- other requests go to the handler registered for their command field
  (``storescp.py`` registers C-STORE); an exception in a handler becomes a
  0x0110 "processing failure" response, never a dead association;
- a handler is awaited before the next message is read, and reading from the
  socket pauses while messages queue up: a slow consumer slows the PACS down
  (it waits for our response) instead of filling our memory;
- limits: at most ``max_associations`` at once (beyond: A-ASSOCIATE-RJ,
  transient, local limit exceeded), the ARTIM timer for the A-ASSOCIATE-RQ
  (PS3.8 9.1.5), and an idle timer that aborts an association whose peer has
  sent nothing for ``idle_timeout`` seconds while we were waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

from gateway.dimse import pdu as P
from gateway.dimse import upper_layer as U
from gateway.dimse.contexts import UNCOMPRESSED, VERIFICATION
from gateway.dimse.errors import AssociationAborted
from gateway.dimse.getscu import STORED_SYNTAXES
from gateway.dimse.messages import (
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_ECHO_RSP,
    SUCCESS,
    Command,
    CommandError,
    Message,
    MessageAssembler,
    response_to,
)
from gateway.dimse.requestor import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    DimseProtocol,
)
from gateway.dimse.upper_layer import ProtocolStateError

log = logging.getLogger(__name__)

MAX_PDU_LENGTH: Final = 1048576

# PS3.4 B.5: every Storage SOP Class UID lives under this root.
STORAGE_ROOT: Final = "1.2.840.10008.5.1.4.1.1."

# Uncompressed first, then what a PACS keeps compressed (the same list the
# C-GET side proposes), so instances arrive as stored, without transcoding.
ACCEPTED_SYNTAXES: Final[tuple[str, ...]] = (*UNCOMPRESSED, *map(str, STORED_SYNTAXES))

# PS3.7 Annex C: general failure statuses of any DIMSE response.
PROCESSING_FAILURE: Final = 0x0110
UNRECOGNIZED_OPERATION: Final = 0x0211

# Reading pauses while this many messages wait for the dispatch task.
_INBOX_HIGH: Final = 2


def is_storage(abstract_syntax: str) -> bool:
    """True for a Storage SOP Class (PS3.4 Annex B): what a move destination accepts."""
    return abstract_syntax.startswith(STORAGE_ROOT)


@dataclass(frozen=True)
class AcceptorSettings:
    """What the listener accepts and how long it waits.

    ``calling_aets``: if set, only these peers may associate (PS3.8 Table 9-21,
    reason 3 otherwise).  ``abstract_syntaxes`` decides which SOP classes are
    taken besides Verification, which is always taken.
    """

    aet: str
    accept_any_called_aet: bool = False
    calling_aets: frozenset[str] | None = None
    abstract_syntaxes: Callable[[str], bool] = is_storage
    transfer_syntaxes: tuple[str, ...] = ACCEPTED_SYNTAXES
    max_pdu_length: int = MAX_PDU_LENGTH
    max_associations: int = 16
    request_timeout: float = 10.0
    idle_timeout: float = 60.0


def _reject(result: int, source: int, reason: int) -> P.AssociateReject:
    return P.AssociateReject(result, source, reason)


def negotiate(
    rq: P.AssociateRequest, settings: AcceptorSettings, *, busy: bool = False
) -> P.AssociateAccept | P.AssociateReject:
    """Our answer to an A-ASSOCIATE-RQ (PS3.8 9.3.3, 9.3.4; PS3.7 Annex D.3.3).

    Permanent reasons are checked before the transient one, so a peer that
    could never associate is told so even while we are busy.
    """
    if not rq.protocol_version & 1:
        # PS3.8 9.3.2: bit 0 is version 1, the only one there is.
        return _reject(P.REJECTED_PERMANENT, P.SOURCE_ACSE_PROVIDER, 2)
    if rq.application_context != P.APPLICATION_CONTEXT:
        return _reject(P.REJECTED_PERMANENT, P.SOURCE_USER, 2)
    if not settings.accept_any_called_aet and rq.called_aet != settings.aet:
        return _reject(P.REJECTED_PERMANENT, P.SOURCE_USER, 7)
    calling = rq.calling_aet.strip()
    if not calling or (settings.calling_aets is not None and calling not in settings.calling_aets):
        return _reject(P.REJECTED_PERMANENT, P.SOURCE_USER, 3)
    if busy:
        return _reject(P.REJECTED_TRANSIENT, P.SOURCE_PRESENTATION_PROVIDER, 2)
    contexts = []
    for pc in rq.contexts:
        if pc.abstract_syntax == VERIFICATION:
            wanted: tuple[str, ...] = UNCOMPRESSED
        elif settings.abstract_syntaxes(pc.abstract_syntax):
            wanted = settings.transfer_syntaxes
        else:
            wanted = ()
        chosen = next((ts for ts in pc.transfer_syntaxes if ts in wanted), None)
        if chosen is not None:
            contexts.append(P.PresentationContextAC(pc.context_id, P.ACCEPTANCE, chosen))
            continue
        result = P.TRANSFER_SYNTAXES_NOT_SUPPORTED if wanted else P.ABSTRACT_SYNTAX_NOT_SUPPORTED
        # PS3.8 9.3.3.2: the sub-item is present but not tested when rejected;
        # echoing a proposed syntax keeps strict parsers happy.
        echo = pc.transfer_syntaxes[0] if pc.transfer_syntaxes else UNCOMPRESSED[1]
        contexts.append(P.PresentationContextAC(pc.context_id, result, echo))
    # No Asynchronous Operations Window and no SCP/SCU Role Selection in the
    # answer: PS3.7 D.3.3.3 then means one operation at a time (what the
    # dispatch task does) and D.3.3.4 the default roles (the peer is SCU).
    return P.AssociateAccept(
        called_aet=rq.called_aet or settings.aet,
        calling_aet=calling,
        user_information=P.UserInformation(
            max_length=settings.max_pdu_length,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION,
        ),
        contexts=tuple(contexts),
    )


RequestHandler = Callable[["AcceptedAssociation", Message], Awaitable[Command]]
"""Answers one request message with its response command (no data set)."""


class _ReleaseMarker:
    """Queued after the messages that came before the peer's A-RELEASE-RQ."""


_RELEASE: Final = _ReleaseMarker()


class AcceptedAssociation:
    """One association a peer opened to us; one task serves its messages in order."""

    _ids = itertools.count(1)

    def __init__(self, server: AssociationServer) -> None:
        self.server = server
        self.settings = server.settings
        self.id = next(self._ids)
        self.machine = U.UpperLayer(
            requestor=False, max_receive_length=self.settings.max_pdu_length
        )
        self.assembler = MessageAssembler()
        self.protocol = DimseProtocol(self._on_bytes, self._on_connection_lost)
        self.request: P.AssociateRequest | None = None
        self.calling_aet = ""
        #: Accepted presentation contexts: id -> (abstract syntax, transfer syntax).
        self.contexts: dict[int, tuple[str, str]] = {}
        self.peer_max_pdu = 0
        self.established = False
        self.ended: str | None = None
        self._inbox: deque[Message | _ReleaseMarker] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._reading_paused = False
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<AcceptedAssociation {self.id} from {self.calling_aet or '?'}>"

    # -- events from the socket -------------------------------------------
    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
        self._wake()

    def _write(self, data: bytes | list[bytes | memoryview]) -> None:
        with contextlib.suppress(AssociationAborted):
            self.protocol.write(data)

    def _on_bytes(self, data: bytes) -> None:
        events = self.machine.receive(data)
        if self.machine.outbox:  # an A-ABORT after a protocol error (PS3.8 AA-8)
            out, self.machine.outbox = self.machine.outbox, []
            for chunk in out:
                self._write(chunk)
        for ev in events:
            self._on_event(ev)

    def _on_event(self, ev: U.Event) -> None:
        if isinstance(ev, U.AssociationRequested):
            self._on_request(ev.request)
        elif isinstance(ev, U.DataReceived):
            try:
                self._inbox.extend(self.assembler.feed(ev.pdvs))
            except CommandError as exc:
                self.abort(f"invalid DIMSE message: {exc}")
                return
            if len(self._inbox) >= _INBOX_HIGH and self.protocol.transport is not None:
                self.protocol.transport.pause_reading()
                self._reading_paused = True
            self._wake()
        elif isinstance(ev, U.ReleaseRequested):
            self._inbox.append(_RELEASE)
            self._wake()
        elif isinstance(ev, U.Aborted):
            why = ev.detail or f"A-ABORT from peer (source {ev.source}, reason {ev.reason})"
            self._end(why)
            self.protocol.close()
        else:  # Released after a collision we never start; nothing else reaches an acceptor
            self._end("released")
            self.protocol.close()

    def _on_request(self, rq: P.AssociateRequest) -> None:
        answer = negotiate(rq, self.settings, busy=self.server.at_capacity)
        self.request = rq
        self.calling_aet = rq.calling_aet.strip()
        if isinstance(answer, P.AssociateReject):
            log.info("association from %s refused: %s", self.calling_aet, answer.describe())
            self._write(self.machine.reject(answer))
            self._end("rejected")
            self.protocol.close()  # PS3.8 AE-8: Sta13, the transport closes after the RJ
            return
        proposed = {pc.context_id: pc.abstract_syntax for pc in rq.contexts}
        self.contexts = {
            ac.context_id: (proposed[ac.context_id], ac.transfer_syntax)
            for ac in answer.contexts
            if ac.accepted
        }
        self.peer_max_pdu = rq.user_information.max_length
        self._write(self.machine.accept(answer))
        self.established = True
        log.debug(
            "association %d from %s accepted: %d of %d contexts",
            self.id,
            self.calling_aet,
            len(self.contexts),
            len(rq.contexts),
        )
        self._wake()

    def _on_connection_lost(self) -> None:
        for ev in self.machine.connection_lost():
            self._on_event(ev)
        self._end("connection closed")

    # -- the dispatch task ------------------------------------------------
    async def _wait(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``ready()`` or the association ended; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready() and self.ended is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._wakeup = loop.create_future()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup
            except TimeoutError:
                pass
            finally:
                self._wakeup = None
        return True

    def _next(self) -> Message | _ReleaseMarker:
        item = self._inbox.popleft()
        if self._reading_paused and len(self._inbox) < _INBOX_HIGH:
            self._reading_paused = False
            if self.protocol.transport is not None and not self.protocol.transport.is_closing():
                self.protocol.transport.resume_reading()
        return item

    async def serve(self) -> None:
        """Negotiate, then answer messages until release, abort or idle timeout."""
        try:
            # PS3.8 9.1.5: ARTIM runs from the TCP accept to the A-ASSOCIATE-RQ.
            if not await self._wait(lambda: self.established, self.settings.request_timeout):
                log.info("no A-ASSOCIATE-RQ within %g s: closing", self.settings.request_timeout)
                self._end("no association request")
                return
            while True:
                if not await self._wait(lambda: bool(self._inbox), self.settings.idle_timeout):
                    log.info(
                        "association %d from %s idle for %g s: aborting",
                        self.id,
                        self.calling_aet,
                        self.settings.idle_timeout,
                    )
                    self.abort("idle timeout")
                    return
                if self.ended is not None:
                    return  # aborted, connection lost or rejected: nothing more to answer
                item = self._next()
                if isinstance(item, _ReleaseMarker):
                    # PS3.8 AR-4: answered after every earlier message was answered.
                    self._write(self.machine.release_reply())
                    self._end("released")
                    return
                await self._dispatch(item)
        finally:
            self.protocol.close()

    async def _dispatch(self, msg: Message) -> None:
        cmd = msg.command
        field = cmd.command_field
        if msg.context_id not in self.contexts:
            self.abort(f"DIMSE message on presentation context {msg.context_id}, not accepted")
            return
        if field == C_CANCEL_RQ:
            return  # each request is answered before the next is read: nothing to cancel
        if field & 0x8000:
            self.abort(f"unexpected DIMSE response 0x{field:04X}")
            return
        rsp: Command
        if field == C_ECHO_RQ:
            rsp = response_to(cmd, C_ECHO_RSP, SUCCESS)
        elif (handler := self.server.handlers.get(field)) is None:
            rsp = response_to(cmd, field | 0x8000, UNRECOGNIZED_OPERATION)
        else:
            try:
                rsp = await handler(self, msg)
            except Exception:
                log.exception("handler for DIMSE 0x%04X from %s failed", field, self.calling_aet)
                rsp = response_to(
                    cmd,
                    field | 0x8000,
                    PROCESSING_FAILURE,
                    AffectedSOPInstanceUID=cmd.get("AffectedSOPInstanceUID"),
                )
        self.send(msg.context_id, rsp)

    # -- what handlers and the server may call -------------------------------
    def send(self, context_id: int, command: Command) -> None:
        """Send a response command (small: no drain needed), fragmented for the peer."""
        if self.ended is not None:
            return  # the peer is gone; the handler's work stands, the answer cannot
        try:
            parts = self.machine.send_message_part(
                context_id, command.encode(), is_command=True, max_pdu_length=self.peer_max_pdu
            )
        except ProtocolStateError:
            return
        self._write(parts)

    def abort(self, reason: str) -> None:
        """A-ABORT (PS3.8 AA-1) and close; the dispatch task ends."""
        if self.machine.state is not U.State.CLOSED:
            self._write(self.machine.abort())
        if self.ended is None:
            log.info("association %d from %s aborted: %s", self.id, self.calling_aet, reason)
        self._end(reason)
        self.protocol.close()


class AssociationServer:
    """A listener on (host, port) serving every association with ``handlers``.

    ``handlers`` maps a request's Command Field (PS3.7 E.1) to its handler;
    C-ECHO needs none.  ``port`` 0 lets the kernel pick; read ``port`` after
    ``start()``.
    """

    def __init__(
        self,
        settings: AcceptorSettings,
        handlers: Mapping[int, RequestHandler],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.settings = settings
        self.handlers = dict(handlers)
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self.associations: set[AcceptedAssociation] = set()

    @property
    def port(self) -> int:
        return self._port

    @property
    def at_capacity(self) -> bool:
        """True when accepting one more would exceed ``max_associations``."""
        established = sum(1 for a in self.associations if a.established and a.ended is None)
        return established >= self.settings.max_associations

    def _connection(self) -> DimseProtocol:
        assoc = AcceptedAssociation(self)
        self.associations.add(assoc)
        assoc.task = asyncio.get_running_loop().create_task(assoc.serve())
        assoc.task.add_done_callback(lambda _: self.associations.discard(assoc))
        return assoc.protocol

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._connection, self.host, self._port, reuse_address=True
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        log.info("%s listening on %s:%d", self.settings.aet, self.host, self._port)

    async def close(self) -> None:
        """Stop listening, abort the associations still open, and wait for their tasks."""
        if self._server is not None:
            self._server.close()
        tasks = []
        for assoc in list(self.associations):
            assoc.abort("server closing")
            if assoc.task is not None:
                assoc.task.cancel()  # a handler may wait for a consumer that is gone
                tasks.append(assoc.task)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
