"""Where incoming C-STORE sub-operations of a C-MOVE meet the request that caused them.

A C-MOVE (PS3.4 C.4.2) makes the PACS open a *separate* association to the
move destination (our ``StoreSCP``) and send the instances there; the
C-MOVE-RSPs keep coming on the original association.  The mediator joins the
two: a C-MOVE registers a ``MoveWaiter`` before it sends its request, and the
Storage SCP's handler (``MoveMediator.handle_store``) gives each received
instance to the waiter it belongs to.

Matching rules, in order (DESIGN.md section 2):

1. By Move Originator Message ID (0000,1031) and Move Originator Application
   Entity Title (0000,1030), which a PACS copies from the C-MOVE-RQ into each
   C-STORE-RQ it sends on our behalf (PS3.7 9.1.1.1, 9.3.1.1).  Message IDs
   are only unique per association, and pooled associations of one gateway
   share one AE title, so the mediator hands out message IDs that are unique
   among all live waiters (``allocate_message_id``).  If the C-STORE names an
   originator message ID that no live waiter has (a cancelled move's
   straggler, another gateway sharing the destination), it is refused: it is
   never re-routed by UID to a different move, which could then see the
   instance twice.  An empty originator AE title with a message ID matches by
   the message ID alone.
2. Only when the originator message ID is absent (or 0), by UID: the Study,
   Series and SOP Instance UIDs the waiting request asked for, read from the
   received data set (AffectedSOPInstanceUID from the command).  Of the live
   waiters that want the instance and have not received that SOP instance
   yet, the oldest gets it; so two overlapping moves of one series each get
   every instance once.
3. Anything else is refused with 0x0124 "Refused: Not authorized" (PS3.7
   Annex C): a failure the PACS counts as a failed sub-operation, and not a
   resource status (0xA7xx) that could invite a retry.  The first refusal per
   sender and originator is logged as a warning, the rest at debug level.

Each waiter has a bounded queue; when it is full, ``handle_store`` waits
before it returns the status, so the C-STORE-RSP (and the PACS's next
sub-operation) waits for the consumer: backpressure from the HTTP client to
the PACS, as with C-GET.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Final

from gateway.dicom.part10 import transfer_syntax_encoding
from gateway.dicom.walker import DicomParseError, walk_dataset
from gateway.dimse.getscu import RetrievedInstance
from gateway.dimse.messages import SUCCESS, Command

log = logging.getLogger(__name__)

NOT_AUTHORIZED: Final = 0x0124  # PS3.7 Annex C: refused, not authorized
CANNOT_UNDERSTAND: Final = 0xC000  # PS3.4 B.2.3: error, cannot understand

_SOP_INSTANCE_UID: Final = 0x00080018
_STUDY_INSTANCE_UID: Final = 0x0020000D
_SERIES_INSTANCE_UID: Final = 0x0020000E
_STOP_AFTER_SERIES: Final = 0x0020000F  # walk no further than the UIDs we need
_LOGGED_REFUSALS: Final = 1024


def dataset_uids(dataset: bytes, transfer_syntax: str) -> tuple[str, str, str]:
    """(Study, Series, SOP Instance UID) from the start of an encoded data set.

    Only the elements before (0020,000F) are walked, so Pixel Data is never
    touched.  Deflated data sets are not walked (we do not accept those
    syntaxes by default); they yield empty UIDs.
    """
    explicit, little, deflated = transfer_syntax_encoding(transfer_syntax)
    if deflated:
        return "", "", ""
    found: dict[int, str] = {}
    for tag, _vr, offset, length, _items, _frags in walk_dataset(
        dataset, explicit_vr=explicit, little_endian=little, stop_before=_STOP_AFTER_SERIES
    ):
        if tag in (_SOP_INSTANCE_UID, _STUDY_INSTANCE_UID, _SERIES_INSTANCE_UID):
            found[tag] = (
                dataset[offset : offset + length].rstrip(b"\x00 ").decode("ascii", "replace")
            )
    return (
        found.get(_STUDY_INSTANCE_UID, ""),
        found.get(_SERIES_INSTANCE_UID, ""),
        found.get(_SOP_INSTANCE_UID, ""),
    )


class MoveWaiter:
    """The receiving end of one C-MOVE: an async iterator of ``RetrievedInstance``.

    The C-MOVE side calls ``finish()`` when its final response has arrived (or
    it failed); iteration then yields what is still queued and ends, raising
    the error if there was one.  ``drain()`` (after C-CANCEL) discards from
    then on; ``close()`` unregisters the waiter.
    """

    def __init__(
        self,
        mediator: MoveMediator,
        order: int,
        originator_aet: str,
        message_id: int,
        study_uid: str,
        series_uid: str | None,
        sop_uid: str | None,
        queue_size: int,
    ) -> None:
        self.mediator = mediator
        self.order = order
        self.originator_aet = originator_aet.strip()
        self.message_id = message_id
        self.study_uid = study_uid
        self.series_uid = series_uid or None
        self.sop_uid = sop_uid or None
        self.queue_size = max(1, queue_size)
        #: Instances queued for the consumer so far (discarded ones not counted).
        self.delivered = 0
        self.discarded = 0
        self.draining = False
        self.closed = False
        self.finished = False
        self.error: BaseException | None = None
        self._items: deque[RetrievedInstance] = deque()
        self._claimed: set[str] = set()
        # One event for every change, set synchronously (finish/drain/close are
        # called from plain code); each waiting side re-checks its own condition.
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.last_activity = self._loop.time()

    def __repr__(self) -> str:
        target = self.sop_uid or self.series_uid or self.study_uid
        return f"<MoveWaiter {self.originator_aet}#{self.message_id} {target}>"

    def _signal(self) -> None:
        self._changed.set()

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            self._changed.clear()
            await self._changed.wait()

    # -- matching (synchronous: the mediator decides before any await) -------
    def wants(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        """True if the C-MOVE asked for this instance and has not received it yet."""
        return (
            not self.closed
            and study_uid == self.study_uid
            and (self.series_uid is None or series_uid == self.series_uid)
            and (self.sop_uid is None or sop_uid == self.sop_uid)
            and sop_uid not in self._claimed
        )

    def claim(self, sop_uid: str) -> None:
        self._claimed.add(sop_uid)
        self.last_activity = self._loop.time()

    @property
    def consumer_is_behind(self) -> bool:
        """The queue is full: if the PACS is silent now, it is waiting for us."""
        return len(self._items) >= self.queue_size

    # -- producer side (the Storage SCP handler) ----------------------------
    async def deliver(self, instance: RetrievedInstance) -> bool:
        """Queue one instance, waiting for room; False if it was discarded."""
        await self._until(
            lambda: len(self._items) < self.queue_size or self.draining or self.closed
        )
        self.last_activity = self._loop.time()
        if self.draining or self.closed:
            self.discarded += 1
            return False
        self._items.append(instance)
        self.delivered += 1
        self._signal()
        return True

    async def wait_delivered(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` instances were queued; False if that took too long."""
        try:
            async with asyncio.timeout(timeout):
                await self._until(lambda: self.delivered >= count or self.closed)
        except TimeoutError:
            return False
        return self.delivered >= count

    # -- the C-MOVE side ------------------------------------------------------
    def finish(self, error: BaseException | None = None) -> None:
        """No more instances will come; ``error`` is raised after the queue is empty."""
        if not self.finished:
            self.finished = True
            self.error = error
            self._signal()

    def drain(self) -> None:
        """Discard queued and further instances (after C-CANCEL), answering them Success."""
        self.draining = True
        self.discarded += len(self._items)
        self._items.clear()
        self._signal()

    def close(self) -> None:
        """Unregister: C-STOREs for this move are refused from now on."""
        if not self.closed:
            self.closed = True
            self._items.clear()
            self.mediator._forget(self)
            self._signal()

    # -- consumer side --------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[RetrievedInstance]:
        return self

    async def __anext__(self) -> RetrievedInstance:
        await self._until(lambda: bool(self._items) or self.finished or self.closed)
        if self._items:
            instance = self._items.popleft()
            self._signal()  # room for a producer waiting in deliver()
            return instance
        if self.error is not None:
            raise self.error
        raise StopAsyncIteration


class MoveMediator:
    """Routes C-STOREs received by our Storage SCP to the C-MOVEs waiting for them.

    ``handle_store`` is a ``storescp.StoreHandler``: pass it to ``StoreSCP``.
    One mediator per destination AE; create and close it in the app's lifespan.
    """

    def __init__(self, *, queue_size: int = 4) -> None:
        self.queue_size = queue_size
        self._waiters: dict[tuple[str, int], MoveWaiter] = {}
        self._order = itertools.count()
        self._last_id = 0
        self._refusals_logged: set[tuple[str, str]] = set()

    @property
    def waiters(self) -> list[MoveWaiter]:
        """Live waiters, oldest first."""
        return sorted(self._waiters.values(), key=lambda w: w.order)

    def allocate_message_id(self) -> int:
        """A C-MOVE Message ID no live waiter uses, whatever its AE (PS3.7 E.1: 1-65535)."""
        in_use = {mid for _, mid in self._waiters}
        if len(in_use) >= 0xFFFF:
            raise RuntimeError("65535 C-MOVEs in flight: no free message ID")
        while True:
            self._last_id = self._last_id % 0xFFFF + 1
            if self._last_id not in in_use:
                return self._last_id

    def expect(
        self,
        originator_aet: str,
        message_id: int,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> MoveWaiter:
        """Register a C-MOVE before its request is sent (instances may come at once)."""
        key = (originator_aet.strip(), message_id)
        if key in self._waiters:
            raise ValueError(f"a C-MOVE from {key[0]} with message ID {message_id} is waiting")
        waiter = MoveWaiter(
            self,
            next(self._order),
            originator_aet,
            message_id,
            study_uid,
            series_uid,
            sop_uid,
            self.queue_size,
        )
        self._waiters[key] = waiter
        return waiter

    def _forget(self, waiter: MoveWaiter) -> None:
        key = (waiter.originator_aet, waiter.message_id)
        if self._waiters.get(key) is waiter:
            del self._waiters[key]

    def match(self, command: Command, transfer_syntax: str, dataset: bytes) -> MoveWaiter | None:
        """The waiter this C-STORE-RQ belongs to, by the rules in the module docstring."""
        originator = str(command.get("MoveOriginatorApplicationEntityTitle") or "").strip()
        message_id = command.get("MoveOriginatorMessageID")
        sop_uid = str(command.get("AffectedSOPInstanceUID") or "")
        if isinstance(message_id, int) and message_id:
            if originator:
                waiter = self._waiters.get((originator, message_id))
            else:
                same_id = [w for (_, mid), w in self._waiters.items() if mid == message_id]
                waiter = same_id[0] if len(same_id) == 1 else None
            return waiter if waiter is not None and not waiter.closed else None
        study_uid, series_uid, dataset_sop = dataset_uids(dataset, transfer_syntax)
        sop_uid = sop_uid or dataset_sop
        for waiter in self.waiters:
            if waiter.wants(study_uid, series_uid, sop_uid):
                return waiter
        return None

    async def handle_store(
        self, calling_aet: str, command: Command, transfer_syntax: str, dataset: bytes
    ) -> int:
        """The Storage SCP handler: deliver to the matching waiter or refuse."""
        try:
            waiter = self.match(command, transfer_syntax, dataset)
        except DicomParseError as exc:
            log.warning("C-STORE from %s: data set unreadable (%s)", calling_aet, exc)
            return CANNOT_UNDERSTAND
        sop_class = str(command.get("AffectedSOPClassUID") or "")
        sop_uid = str(command.get("AffectedSOPInstanceUID") or "")
        if waiter is None:
            self._log_refusal(calling_aet, command)
            return NOT_AUTHORIZED
        waiter.claim(sop_uid)
        await waiter.deliver(RetrievedInstance(sop_class, sop_uid, transfer_syntax, dataset))
        # Discarded (draining after C-CANCEL) still answers Success: the PACS
        # should wind down quietly, not log failures for a cancel we asked for.
        if waiter.closed and not waiter.draining:
            return NOT_AUTHORIZED  # the consumer went away while we waited for room
        return SUCCESS

    def _log_refusal(self, calling_aet: str, command: Command) -> None:
        originator = str(command.get("MoveOriginatorApplicationEntityTitle") or "")
        message_id = command.get("MoveOriginatorMessageID")
        key = (calling_aet, f"{originator}#{message_id}")
        first = key not in self._refusals_logged
        if first:
            if len(self._refusals_logged) >= _LOGGED_REFUSALS:
                self._refusals_logged.clear()
            self._refusals_logged.add(key)
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "C-STORE from %s refused (0x%04X): no C-MOVE waits for it "
            "(move originator %r, message ID %r)",
            calling_aet,
            NOT_AUTHORIZED,
            originator,
            message_id,
        )

    def close(self) -> None:
        """End every waiter (their consumers see the end of the stream)."""
        for waiter in list(self._waiters.values()):
            waiter.finish()
            waiter.close()
