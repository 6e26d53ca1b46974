"""Fault-injection peers: DICOM servers that misbehave on purpose.

A real PACS fails rarely and never on cue, so the gateway's error paths (status
mapping, abort handling, timeouts, pool back-off) are driven by these scripted
peers instead. Each one runs in a background thread on 127.0.0.1, on a port the
kernel picks, and exposes ``aet``/``host``/``port`` like the real servers:

* :class:`RejectingPeer` -- A-ASSOCIATE-RJ for every association;
* :class:`AbortingFindPeer` -- sends one pending C-FIND match, then A-ABORT;
* :class:`FindStatusPeer` -- answers C-FIND with a failure status (A700, C000 ...);
* :class:`SilentListener` -- accepts TCP and never sends a byte;
* :class:`ClosedPort` -- a free port nobody listens on (connection refused).

:class:`ScriptedPeer` is the pynetdicom base for further scripted behaviour
(pass your own event handlers).
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, Self

from pydicom import Dataset
from pynetdicom import AE, evt

from gateway.config import PacsConfig

from .common import pacs_config
from .ports import free_port

Handler = tuple[Any, Callable[..., Any]]

# SOP Class UIDs spelled out: pynetdicom.sop_class builds its names at run time,
# which type checkers cannot see.
VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
_FIND_MODELS = (STUDY_ROOT_FIND, PATIENT_ROOT_FIND)


class _PeerBase:
    """start/stop/context-manager plumbing shared by every fault peer."""

    aet: str
    host: str = "127.0.0.1"
    port: int = 0

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def pacs_config(self, name: str | None = None, **overrides: Any) -> PacsConfig:
        """A :class:`gateway.config.PacsConfig` pointing at this peer."""
        return pacs_config(self, name, **overrides)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.aet}@{self.host}:{self.port}>"


def _set_nodelay(event: Any) -> None:
    """EVT_CONN_OPEN handler: pynetdicom never sets TCP_NODELAY itself.

    Without it the peer's small responses wait for the client's delayed ACK
    (~40 ms each), which would make timing-sensitive tests flaky.
    """
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class ScriptedPeer(_PeerBase):
    """A pynetdicom SCP whose behaviour is the event handlers you give it.

    It supports Verification and the C-FIND query models; ``contexts`` replaces
    that list (an empty list makes it reject every presentation context).
    """

    def __init__(
        self,
        aet: str = "SCRIPTED",
        handlers: Sequence[Handler] = (),
        *,
        contexts: Sequence[str] | None = None,
    ) -> None:
        self.aet = aet
        self.handlers = list(handlers)
        self.contexts = list(contexts) if contexts is not None else [VERIFICATION, *_FIND_MODELS]
        self.ae = AE(ae_title=aet)
        for uid in self.contexts:
            self.ae.add_supported_context(uid)
        # Short timeouts: a misbehaving client must not keep threads around
        # after the test that used it has finished.
        self.ae.acse_timeout = 5
        self.ae.dimse_timeout = 5
        self.ae.network_timeout = 10
        self._server: Any = None
        #: Number of associations the peer has seen requested (any outcome).
        self.association_requests = 0
        self._lock = threading.Lock()

    def _count(self, event: Any) -> None:
        with self._lock:
            self.association_requests += 1

    def configure(self, ae: AE) -> None:
        """Hook for subclasses to change the AE before the server starts."""

    def start(self) -> Self:
        """Start the SCP in a background thread on a kernel-chosen port."""
        if self._server is not None:
            return self
        self.configure(self.ae)
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, _set_nodelay),
            (evt.EVT_REQUESTED, self._count),
            *self.handlers,
        ]
        self._server = self.ae.start_server((self.host, 0), block=False, evt_handlers=handlers)
        self.port = int(self._server.server_address[1])
        return self

    def stop(self) -> None:
        """Shut the server down and end its associations."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.ae.shutdown()


RejectMode = Literal["calling-aet", "busy"]


class RejectingPeer(ScriptedPeer):
    """Rejects every association request (A-ASSOCIATE-RJ).

    ``mode="calling-aet"``: rejected-permanent, "calling AE title not
    recognized" (result 1, source 1, reason 3) -- only the AE title
    ``allowed_calling_aet`` (nobody in practice) is accepted.
    ``mode="busy"``: rejected-transient, "local limit exceeded" (result 2,
    source 3, reason 2), what a PACS at its association limit sends.
    """

    def __init__(
        self,
        aet: str = "REJECTOR",
        *,
        mode: RejectMode = "calling-aet",
        allowed_calling_aet: str = "NOBODY-ALLOWED",
    ) -> None:
        super().__init__(aet)
        self.mode = mode
        self.allowed_calling_aet = allowed_calling_aet

    def configure(self, ae: AE) -> None:
        if self.mode == "calling-aet":
            ae.require_calling_aet = [self.allowed_calling_aet]
        else:
            # The public setter refuses 0; with 0 every request exceeds the
            # limit and pynetdicom sends the transient local-limit rejection.
            ae._maximum_associations = 0


def study_match(n: int = 1, *, patient_name: str = "FAULT^PEER", level: str = "STUDY") -> Dataset:
    """A small, valid C-FIND identifier the fault peers send as a pending match."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = patient_name
    ds.PatientID = f"FAULT-{n}"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1234.999.{n}"
    ds.StudyDate = "20240101"
    return ds


class AbortingFindPeer(ScriptedPeer):
    """Answers C-FIND with ``pending`` matches, then aborts the association.

    The gateway must treat the partial result as failed (not as a short
    success) and must not reuse the aborted association.
    """

    def __init__(self, aet: str = "ABORTER", *, pending: int = 1) -> None:
        super().__init__(aet, [(evt.EVT_C_FIND, self._on_find)])
        self.pending = pending

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        for i in range(self.pending):
            yield 0xFF00, study_match(i + 1)
        # The pending response is queued for the DUL thread; give it a moment
        # to reach the socket so the client really sees match, then abort.
        time.sleep(0.1)
        event.assoc.abort()
        # pynetdicom checks is_established after each yield and returns
        # without sending anything more, so this value is never sent.
        yield 0x0000, None


class FindStatusPeer(ScriptedPeer):
    """Answers C-FIND with ``status`` after ``pending`` matches.

    Typical statuses: 0xA700 (out of resources), 0xA900 (identifier does not
    match SOP class), 0xC000 (unable to process). An ErrorComment is sent
    along so the gateway's error reporting can be checked.
    """

    def __init__(
        self,
        status: int,
        aet: str = "FINDFAIL",
        *,
        pending: int = 0,
        error_comment: str = "injected failure",
    ) -> None:
        super().__init__(aet, [(evt.EVT_C_FIND, self._on_find)])
        self.status = status
        self.pending = pending
        self.error_comment = error_comment

    def _on_find(self, event: Any) -> Iterator[tuple[Dataset | int, Dataset | None]]:
        for i in range(self.pending):
            yield 0xFF00, study_match(i + 1)
        status = Dataset()
        status.Status = self.status
        if self.error_comment:
            status.ErrorComment = self.error_comment
        yield status, None


class SilentListener(_PeerBase):
    """A TCP listener that accepts connections and never sends anything.

    Models a hung PACS or a firewall that completes the handshake: the
    gateway's accept/DIMSE timeouts must fire. Received bytes are read and
    discarded (so the client's writes never block) and counted.
    """

    def __init__(self, aet: str = "SILENT") -> None:
        self.aet = aet
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        #: Connections accepted so far.
        self.connections = 0
        #: Bytes received (and ignored) so far.
        self.bytes_received = 0

    def start(self) -> Self:
        """Listen on 127.0.0.1 (kernel-chosen port) and serve in a daemon thread."""
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(16)
        listener.setblocking(False)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"silent-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._listener is not None
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        clients: list[socket.socket] = []
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        try:
                            conn, _addr = sock.accept()
                        except BlockingIOError:
                            continue
                        conn.setblocking(False)
                        clients.append(conn)
                        sel.register(conn, selectors.EVENT_READ)
                        with self._lock:
                            self.connections += 1
                        continue
                    try:
                        data = sock.recv(65536)
                    except (BlockingIOError, ConnectionError):
                        data = b""
                    if data:
                        with self._lock:
                            self.bytes_received += len(data)
                    else:  # peer closed: forget the connection
                        sel.unregister(sock)
                        clients.remove(sock)
                        sock.close()
        finally:
            for c in clients:
                c.close()
            sel.close()

    def stop(self) -> None:
        """Stop the thread and close the listener and every open connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None


class ClosedPort(_PeerBase):
    """A port on 127.0.0.1 with nothing listening: connect() is refused at once.

    The port comes from :func:`free_port`, which never hands it out again in
    this process, so no other harness server can take it.
    """

    def __init__(self, aet: str = "NOBODY") -> None:
        self.aet = aet
        self.port = free_port()

    def start(self) -> Self:
        return self

    def stop(self) -> None:
        pass


__all__ = [
    "AbortingFindPeer",
    "ClosedPort",
    "FindStatusPeer",
    "RejectingPeer",
    "ScriptedPeer",
    "SilentListener",
    "study_match",
]
