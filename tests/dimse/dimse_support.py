"""Helpers for the DIMSE tests against real peers (not tests themselves).

``QueryScp`` is a pynetdicom Verification + C-FIND SCP, built on the shared
``ScriptedPeer``, whose answer to a C-FIND is scripted by the query's PatientID
and which records what it saw (C-CANCELs, how each association ended):

* ``MATCHES-<n>``: n pending matches (PatientID ``PAT-000`` ...), then Success;
* ``BIG-<n>``: the same with 10,000 characters of PatientComments in each;
* ``CANCEL-<n>``: one match, then it waits (checking ``event.is_cancelled``)
  for our C-CANCEL and answers Cancel; without one, the other n-1 matches.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from io import BytesIO
from typing import Any, Self, TypeVar

from pydicom import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.dsutils import decode, encode

from gateway.dimse.findscu import FindMatch
from gateway.dimse.requestor import Association, Peer, Timeouts
from tests.peers.faults import ScriptedPeer, _set_nodelay

T = TypeVar("T")

#: Generous limits: a loaded CI machine must not turn a passing test into a timeout.
TIMEOUTS = Timeouts(connect=5.0, accept=5.0, dimse=10.0, release=5.0)
CALLING_AET = "GWTEST"


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run one test's coroutine; a hang fails the test instead of the session."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def peer_of(server: Any) -> Peer:
    """The gateway's view of any harness peer (``aet``/``host``/``port``)."""
    return Peer(server.aet, server.host, server.port)


def local_port(assoc: Association) -> int:
    """Our side's TCP port: how a peer's records name this association."""
    assert assoc._protocol is not None and assoc._protocol.transport is not None
    return int(assoc._protocol.transport.get_extra_info("sockname")[1])


def query(patient_id: str, **extra: str) -> Callable[[str], bytes]:
    """A study-level C-FIND identifier, encoded for the negotiated transfer syntax."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = ""
    for keyword, value in extra.items():
        setattr(ds, keyword, value)

    def encoded(transfer_syntax: str) -> bytes:
        data = encode(ds, transfer_syntax == ImplicitVRLittleEndian, True)
        assert data is not None
        return bytes(data)

    return encoded


def decoded(match: FindMatch) -> Dataset:
    return decode(BytesIO(match.dataset), not match.explicit_vr, True)


def patient_id(match: FindMatch) -> str:
    return str(decoded(match).PatientID)


def _match(i: int) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = f"PAT-{i:03d}"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1234.7.{i}"
    return ds


class QueryScp(ScriptedPeer):
    """Scripted C-FIND SCP; ``port`` fixes its address (0: the kernel picks)."""

    def __init__(self, aet: str = "QRSCP", *, port: int = 0) -> None:
        super().__init__(
            aet,
            [
                (evt.EVT_C_FIND, self._on_find),
                (evt.EVT_RELEASED, self._on_end),
                (evt.EVT_ABORTED, self._on_end),
            ],
        )
        self.port = port
        self._seen = threading.Condition()
        #: Message IDs of the C-FINDs the handler saw cancelled.
        self.cancelled: list[int] = []
        #: How each association ended, by the requestor's TCP port.
        self.ended: dict[int, str] = {}
        #: Size of the last C-FIND identifier received, in bytes.
        self.last_identifier_length = 0

    def start(self) -> Self:
        # ScriptedPeer.start always binds port 0; a peer that "comes back" must
        # listen where the client already points, so bind self.port.
        if self._server is None:
            self.configure(self.ae)
            handlers: list[Any] = [
                (evt.EVT_CONN_OPEN, _set_nodelay),
                (evt.EVT_REQUESTED, self._count),
                *self.handlers,
            ]
            self._server = self.ae.start_server(
                (self.host, self.port), block=False, evt_handlers=handlers
            )
            self.port = int(self._server.server_address[1])
        return self

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self._seen:
            return self._seen.wait_for(predicate, timeout)

    def ending_of(self, port: int, timeout: float = 10.0) -> str | None:
        """How the association from our ``port`` ended, once the SCP knows."""
        self.wait_until(lambda: port in self.ended, timeout)
        return self.ended.get(port)

    def _on_end(self, event: Any) -> None:
        kind = "released" if event.event is evt.EVT_RELEASED else "aborted"
        with self._seen:
            self.ended.setdefault(int(event.assoc.requestor.port), kind)
            self._seen.notify_all()

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        self.last_identifier_length = len(event.request.Identifier.getvalue())
        script, _, count = str(event.identifier.PatientID).partition("-")
        n = int(count or 0)
        if script in ("MATCHES", "BIG"):
            for i in range(n):
                ds = _match(i)
                if script == "BIG":
                    ds.PatientComments = "x" * 10_000
                yield 0xFF00, ds
        elif script == "CANCEL":
            yield 0xFF00, _match(0)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if event.is_cancelled:
                    with self._seen:
                        self.cancelled.append(int(event.request.MessageID))
                        self._seen.notify_all()
                    yield 0xFE00, None
                    return
                time.sleep(0.005)
            for i in range(1, n):
                yield 0xFF00, _match(i)
