"""The asyncio driver of an association we request (the SCU side).

One ``asyncio.Protocol`` per association feeds received bytes to the sans-I/O
``UpperLayer`` and queues the DIMSE messages it completes; operations await
them.  No thread, no polling: the event loop wakes us when bytes arrive.

TCP_NODELAY is set on the socket and TCP_QUICKACK re-armed after every read
and write: against peers that leave Nagle on (stock DCMTK and Orthanc),
NODELAY alone still stalls each exchange about 40 ms on delayed ACKs
(DESIGN.md section 2, lab pitfall 8).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway import __version__
from gateway.dimse import pdu as P
from gateway.dimse import upper_layer as U
from gateway.dimse.contexts import ContextProfile
from gateway.dimse.errors import (
    AssociationAborted,
    AssociationRefused,
    DimseError,
    DimseTimeout,
    NoAcceptableContext,
    PeerUnreachable,
)
from gateway.dimse.messages import Command, CommandError, Message, MessageAssembler

log = logging.getLogger(__name__)

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1234.1.1"
IMPLEMENTATION_VERSION = f"DWGW_{__version__}"[:16]
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
_WRITE_BATCH = 256 * 1024
_IOV_MAX = 1024  # sendmsg's limit on pieces per call (Linux UIO_MAXIOV)
_MAX_QUEUED = 8  # unread DIMSE messages before we stop reading the socket


@dataclass(frozen=True)
class Timeouts:
    """Every wait has a limit (DESIGN.md section 2)."""

    connect: float = 5.0
    accept: float = 5.0
    dimse: float = 30.0
    network: float = 60.0
    release: float = 2.0


@dataclass(frozen=True)
class Peer:
    aet: str
    host: str
    port: int


def _tune_socket(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if _QUICKACK is not None:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
    except OSError:  # pragma: no cover - socket already gone
        pass


def _raw_socket(transport: asyncio.Transport) -> socket.socket | None:
    """The selector transport's own socket, for ``sendmsg`` (see ``_writelines``).

    Only where ``writelines`` would join: Python 3.12 sends the list itself.
    A transport without that attribute (another event loop) keeps writelines.
    """
    if sys.version_info >= (3, 12):
        return None
    raw = getattr(transport, "_sock", None)
    return raw if isinstance(raw, socket.socket) and hasattr(raw, "sendmsg") else None


def _quickack(sock: socket.socket | None) -> None:
    """Re-arm TCP_QUICKACK: Linux clears it again after a while (tcp(7))."""
    if _QUICKACK is not None and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


class DimseProtocol(asyncio.Protocol):
    """The socket side of one association, for either role (requestor or acceptor).

    It only tunes the socket, hands received bytes to ``on_bytes`` and reports
    the end of the connection; the driver that owns the ``UpperLayer`` does the
    rest.  Shared so that both roles get TCP_NODELAY and TCP_QUICKACK.
    """

    def __init__(self, on_bytes: Callable[[bytes], None], on_lost: Callable[[], None]) -> None:
        self._on_bytes = on_bytes
        self._on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._sock: socket.socket | None = None
        self._raw: socket.socket | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._sock = transport.get_extra_info("socket")
        _tune_socket(self._sock)
        self._raw = _raw_socket(transport)

    def data_received(self, data: bytes) -> None:
        _quickack(self._sock)
        self._on_bytes(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._raw = None
        self._can_write.set()
        self._on_lost()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def write(self, parts: list[bytes | memoryview] | bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise AssociationAborted("connection closed")
        if isinstance(parts, bytes):
            self.transport.write(parts)
        else:
            self._writelines(parts)
        _quickack(self._sock)

    def _writelines(self, parts: list[bytes | memoryview]) -> None:
        """Scatter-gather send while the transport has nothing queued.

        Python 3.11's ``writelines`` joins the list first, one more copy of
        every data set sent; ``sendmsg`` hands the pieces to the kernel as
        they are.  What the socket does not take goes to the transport, which
        keeps the order (its buffer is empty, and later writes queue behind).
        """
        assert self.transport is not None
        raw = self._raw
        if raw is None or self.transport.get_write_buffer_size():
            self.transport.writelines(parts)
            return
        try:
            sent = raw.sendmsg(parts[:_IOV_MAX])
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # let the transport see and report the broken socket
            self.transport.writelines(parts)
            return
        rest: list[bytes | memoryview] = []
        for i, part in enumerate(parts):
            size = len(part)
            if sent >= size:
                sent -= size
                continue
            rest.append(memoryview(part)[sent:] if sent else part)
            rest.extend(parts[i + 1 :])
            break
        if rest:
            self.transport.writelines(rest)

    async def drain(self) -> None:
        await self._can_write.wait()

    def close(self) -> None:
        """Close the transport after what is buffered has been sent."""
        if self.transport is not None:
            self.transport.close()


class Association:
    """An established association to one peer, used by one operation at a time."""

    _ids = itertools.count(1)

    def __init__(self, peer: Peer, profile: ContextProfile, max_receive: int) -> None:
        self.peer = peer
        self.profile = profile
        #: Our AE title on this association: what a PACS puts in Move Originator AE Title.
        self.calling_aet = ""
        self.id = next(self._ids)
        self.machine = U.UpperLayer(requestor=True, max_receive_length=max_receive)
        self.assembler = MessageAssembler()
        self.peer_max_pdu = 0
        self.accepted: dict[int, P.PresentationContextAC] = {}
        self.accept_pdu: P.AssociateAccept | None = None
        self._by_abstract: dict[str, list[P.PresentationContextAC]] = {}
        self._messages: deque[Message] = deque()
        self._error: DimseError | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._protocol: DimseProtocol | None = None
        self._message_ids = itertools.count(0)
        self._loop = asyncio.get_running_loop()
        self._rx_at = 0.0
        self._reading_paused = False
        self.network_timeout = 60.0
        self.created = time.monotonic()
        self.last_used = self.created

    # -- state ------------------------------------------------------------
    @property
    def is_established(self) -> bool:
        return self._error is None and self.machine.state is U.State.ESTABLISHED

    @property
    def is_idle(self) -> bool:
        """Established with nothing unread: safe to hand to the next operation."""
        return self.is_established and not self._messages

    def next_message_id(self) -> int:
        return next(self._message_ids) % 0xFFFF + 1  # PS3.7 E.1: 1..65535

    def context_for(
        self, abstract_syntax: str, transfer_syntax: str | None = None
    ) -> P.PresentationContextAC:
        """The accepted context for an abstract syntax (and transfer syntax, if given)."""
        for ctx in self._by_abstract.get(abstract_syntax, ()):
            if transfer_syntax is None or ctx.transfer_syntax == transfer_syntax:
                return ctx
        raise AssociationRefused(
            f"peer did not accept a presentation context for {abstract_syntax}"
        )

    def has_context(self, abstract_syntax: str, transfer_syntax: str | None = None) -> bool:
        return any(
            transfer_syntax is None or ctx.transfer_syntax == transfer_syntax
            for ctx in self._by_abstract.get(abstract_syntax, ())
        )

    # -- events from the protocol ----------------------------------------
    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _fail(self, error: DimseError) -> None:
        if self._error is None:
            self._error = error
        for fut in (self._handshake, self._released):
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # mark retrieved: nobody may be waiting on it
        self._wake()

    def _on_bytes(self, data: bytes) -> None:
        self._rx_at = self._loop.time()
        events = self.machine.receive(data)
        self._flush_outbox()
        for ev in events:
            self._on_event(ev)

    def _flush_outbox(self) -> None:
        if self.machine.outbox and self._protocol is not None:
            out, self.machine.outbox = self.machine.outbox, []
            with contextlib.suppress(DimseError):
                for data in out:
                    self._protocol.write(data)

    def _on_event(self, ev: U.Event) -> None:
        if isinstance(ev, U.DataReceived):
            try:
                self._messages.extend(self.assembler.feed(ev.pdvs))
            except CommandError as exc:
                self._send_abort()
                self._fail(AssociationAborted(f"invalid DIMSE message from peer: {exc}"))
                return
            self._flow_control()
            self._wake()
        elif isinstance(ev, U.AssociationAccepted):
            self._on_accept(ev.accept)
        elif isinstance(ev, U.AssociationRejected):
            rj = ev.reject
            self._fail(
                AssociationRefused(rj.describe(), transient=rj.result == P.REJECTED_TRANSIENT)
            )
            self._close_transport()
        elif isinstance(ev, U.Aborted):
            what = ev.detail or f"A-ABORT from peer (source {ev.source}, reason {ev.reason})"
            self._fail(AssociationAborted(what))
            self._close_transport()
        elif isinstance(ev, U.ReleaseRequested):
            # The peer wants to end the association (e.g. its idle timer): agree.
            self._send(self.machine.release_reply())
            self._fail(AssociationAborted("peer released the association"))
            self._close_transport()
        elif isinstance(ev, U.Released):
            if not self._released.done():
                self._released.set_result(None)
            self._close_transport()

    def _on_accept(self, ac: P.AssociateAccept) -> None:
        self.accept_pdu = ac
        self.peer_max_pdu = ac.user_information.max_length
        proposed = {c.context_id: c.abstract_syntax for c in self.profile.proposal()}
        for ctx in ac.contexts:
            if ctx.accepted and ctx.context_id in proposed:
                self.accepted[ctx.context_id] = ctx
                self._by_abstract.setdefault(proposed[ctx.context_id], []).append(ctx)
        if not self._handshake.done():
            self._handshake.set_result(None)

    def _on_connection_lost(self) -> None:
        for ev in self.machine.connection_lost():
            self._on_event(ev)
        self._fail(AssociationAborted("connection closed by peer"))

    def _send(self, data: bytes | list[bytes | memoryview]) -> None:
        if self._protocol is None:
            raise AssociationAborted("not connected")
        self._protocol.write(data)

    def _send_abort(self) -> None:
        with contextlib.suppress(DimseError):
            self._send(self.machine.abort())

    def _close_transport(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()

    # -- operations' API ----------------------------------------------------
    async def send(
        self, context_id: int, command: Command, dataset: bytes | memoryview | None = None
    ) -> None:
        """Send one DIMSE message, fragmented to the peer's maximum PDU length."""
        if self._error is not None:
            raise self._error
        assert self._protocol is not None
        self.last_used = time.monotonic()
        max_len = self.peer_max_pdu
        # One write per ~256 KiB: a C-FIND (command + identifier) is a single
        # send() instead of two, which is most of a round trip on loopback.
        machine = self.machine
        wire = machine.send_message_part(
            context_id, command.encode(), is_command=True, max_pdu_length=max_len
        )
        if dataset is not None:
            wire += machine.send_message_part(
                context_id, dataset, is_command=False, max_pdu_length=max_len
            )
        start = pending = 0
        for i in range(1, len(wire), 2):  # header, value, header, value ...
            pending += 12 + len(wire[i])
            if pending >= _WRITE_BATCH and i + 1 < len(wire):
                self._send(wire[start : i + 1])
                start, pending = i + 1, 0
                await self._protocol.drain()
                if self._error is not None:  # aborted while we waited for the socket
                    raise self._error
                machine.check_send_data()
        self._send(wire[start:])
        await self._protocol.drain()

    def send_nowait(self, context_id: int, command: Command) -> None:
        """Queue a small command without waiting for the socket (e.g. C-CANCEL on the way out)."""
        if self._error is not None:
            raise self._error
        self._send(
            self.machine.send_message_part(
                context_id, command.encode(), is_command=True, max_pdu_length=self.peer_max_pdu
            )
        )

    async def receive(self, timeout: float) -> Message:
        """The next DIMSE message, or the reason there will be none.

        ``timeout`` bounds the wait for a response; while a long message is
        still arriving it is extended for as long as bytes keep coming with
        gaps shorter than the network timeout (a 500 MB data set on a slow
        link is not a silent peer).
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + timeout
        while not self._messages:
            if self._error is not None:
                raise self._error
            remaining = deadline - loop.time()
            if remaining <= 0:
                if self._rx_at > start and self._rx_at + self.network_timeout > loop.time():
                    deadline = self._rx_at + self.network_timeout
                    continue
                raise DimseTimeout(f"no DIMSE response from {self.peer.aet} within {timeout:g} s")
            self._wakeup = loop.create_future()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup
            except TimeoutError:
                continue
            finally:
                self._wakeup = None
        self.last_used = time.monotonic()
        message = self._messages.popleft()
        self._flow_control()
        return message

    def _flow_control(self) -> None:
        """Stop reading the socket while unread messages pile up (TCP backpressure).

        A C-GET whose sub-operations are acknowledged before they are consumed
        would otherwise buffer as fast as the PACS sends.
        """
        transport = self._protocol.transport if self._protocol is not None else None
        if transport is None or transport.is_closing():
            return
        queued = len(self._messages)
        if queued >= _MAX_QUEUED and not self._reading_paused:
            transport.pause_reading()
            self._reading_paused = True
        elif queued < _MAX_QUEUED // 2 and self._reading_paused:
            transport.resume_reading()
            self._reading_paused = False

    async def release(self, timeout: float = 2.0) -> None:
        """Orderly A-RELEASE; aborts if the peer does not answer in time."""
        if not self.is_established:
            self.abort()
            return
        try:
            self._send(self.machine.release())
            async with asyncio.timeout(timeout):
                await self._released
        except (DimseError, TimeoutError):
            self.abort()
        finally:
            self._close_transport()

    def abort(self) -> None:
        """A-ABORT and close; the association is never used again."""
        if self.machine.state is not U.State.CLOSED:
            self._send_abort()
        self._fail(AssociationAborted("aborted by the gateway"))
        self._close_transport()


async def associate(
    peer: Peer,
    calling_aet: str,
    profile: ContextProfile,
    *,
    timeouts: Timeouts,
    max_pdu_length: int = 1048576,
) -> Association:
    """Open TCP, send A-ASSOCIATE-RQ, and wait for the answer (PS3.8 9.2, AE-1..AE-4)."""
    loop = asyncio.get_running_loop()
    assoc = Association(peer, profile, max_pdu_length)
    assoc.calling_aet = calling_aet
    assoc.network_timeout = timeouts.network
    try:
        async with asyncio.timeout(timeouts.connect):
            _, protocol = await loop.create_connection(
                lambda: DimseProtocol(assoc._on_bytes, assoc._on_connection_lost),
                peer.host,
                peer.port,
            )
    except TimeoutError:
        raise DimseTimeout(f"TCP connect to {peer.host}:{peer.port} timed out") from None
    except OSError as exc:
        raise PeerUnreachable(
            f"cannot connect to {peer.host}:{peer.port}: {exc.strerror or exc}"
        ) from None
    assoc._protocol = protocol
    rq = P.AssociateRequest(
        called_aet=peer.aet,
        calling_aet=calling_aet,
        user_information=P.UserInformation(
            max_length=max_pdu_length,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION,
            role_selections=profile.roles,
        ),
        contexts=profile.proposal(),
    )
    try:
        assoc._send(assoc.machine.request(rq))
        async with asyncio.timeout(timeouts.accept):
            await assoc._handshake
    except TimeoutError:
        assoc.abort()
        raise DimseTimeout(
            f"{peer.aet} did not answer the association request within {timeouts.accept:g} s"
        ) from None
    except BaseException:
        assoc.abort()
        raise
    if not assoc.accepted:
        await assoc.release()
        raise NoAcceptableContext(f"{peer.aet} accepted none of the proposed presentation contexts")
    log.debug(
        "association %d to %s accepted, peer max PDU %d", assoc.id, peer.aet, assoc.peer_max_pdu
    )
    return assoc
