"""C-MOVE as a service user (PS3.4 C.4.2, PS3.7 9.1.4), streamed instance by instance.

For PACS that do not do C-GET.  The instances do not come back on our
association: the PACS sends them as C-STORE sub-operations to the move
destination (our ``StoreSCP``), where the ``MoveMediator`` hands them to this
operation's ``MoveWaiter``.  So there are two sources to read at once:

- the C-MOVE association, for the C-MOVE-RSPs (pending with sub-operation
  counts, then the final status), read by a background task;
- the waiter's queue, for the instances, read by the caller's iteration.

The final response can arrive while instances are still queued (the PACS
sends it after our last C-STORE-RSP, and that goes out as soon as the
instance is queued, before the caller has taken it).  Iteration therefore ends
only when the final response has arrived *and* the queue is empty; a failure
status is raised at that point, after every instance that did arrive, as with
C-GET.  To the caller this feels like ``GetOperation``: iterate
``RetrievedInstance``s inside ``async with``, read ``counts`` after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from gateway.dimse.contexts import STUDY_ROOT_MOVE, UNCOMPRESSED, VERIFICATION, ContextProfile
from gateway.dimse.errors import AssociationAborted, DimseError, DimseTimeout, StatusError
from gateway.dimse.getscu import RetrievedInstance, SubOperations
from gateway.dimse.messages import (
    C_MOVE_RSP,
    PENDING,
    Command,
    c_cancel_rq,
    c_move_rq,
    status_category,
)
from gateway.dimse.move_mediator import MoveMediator, MoveWaiter
from gateway.dimse.operation import DimseOperation
from gateway.dimse.requestor import Association

log = logging.getLogger(__name__)

#: Contexts of a C-MOVE association: the pool keys associations by this profile.
RETRIEVE_BY_MOVE: Final = ContextProfile(
    "move", ((VERIFICATION, UNCOMPRESSED), (STUDY_ROOT_MOVE, UNCOMPRESSED))
)

#: How long to wait, after the final response, for instances that the final
#: response counts as completed but that have not been queued yet (a PACS that
#: answers the C-MOVE before it has our last C-STORE-RSP).
_LATE_GRACE: Final = 5.0


class MoveOperation(DimseOperation):
    """One C-MOVE; iterate the instances, then close it (or use ``async with``).

    ``identifier`` encodes the C-MOVE identifier for the negotiated transfer
    syntax; ``study_uid``/``series_uid``/``sop_uid`` say what it asks for, so
    that the mediator can match PACS that omit the Move Originator fields.
    Closing before the final response sends C-CANCEL and drains (instances
    still in flight are answered and discarded) so the association can go back
    to the pool; if that fails the association is aborted.
    """

    def __init__(
        self,
        assoc: Association,
        identifier: Callable[[str], bytes],
        destination_aet: str,
        mediator: MoveMediator,
        *,
        timeout: float,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        sop_class_uid: str = STUDY_ROOT_MOVE,
    ) -> None:
        self.assoc = assoc
        self.destination_aet = destination_aet
        self.mediator = mediator
        self.timeout = timeout
        self.study_uid = study_uid
        self.series_uid = series_uid
        self.sop_uid = sop_uid
        self.sop_class_uid = sop_class_uid
        self._identifier = identifier
        self.message_id = 0
        #: The final C-MOVE-RSP has arrived (whatever its status).
        self.finished = False
        self.final_status: int | None = None
        self.counts = SubOperations()
        self.comment = ""
        self.waiter: MoveWaiter | None = None
        self._context_id = 0
        self._reader: asyncio.Task[None] | None = None
        self._cancelled = False

    async def start(self) -> None:
        """Register with the mediator, then send the C-MOVE-RQ (PS3.7 9.3.4.1)."""
        ctx = self.assoc.context_for(self.sop_class_uid)
        self._context_id = ctx.context_id
        # Unique among all live moves, not only on this association: the PACS
        # echoes it as Move Originator Message ID, and pooled associations
        # share our AE title (see move_mediator.py).
        self.message_id = self.mediator.allocate_message_id()
        originator = self.assoc.calling_aet or (
            self.assoc.accept_pdu.calling_aet if self.assoc.accept_pdu else ""
        )
        self.waiter = self.mediator.expect(
            originator, self.message_id, self.study_uid, self.series_uid, self.sop_uid
        )
        try:
            await self.assoc.send(
                ctx.context_id,
                c_move_rq(self.message_id, self.sop_class_uid, self.destination_aet),
                self._identifier(ctx.transfer_syntax),
            )
        except BaseException:
            self.waiter.close()
            raise
        self._reader = asyncio.get_running_loop().create_task(self._read_responses())

    # -- the C-MOVE association -------------------------------------------
    async def _receive(self) -> Command:
        """The next C-MOVE-RSP; silence is a timeout only if instances stopped too.

        A PACS may send no pending responses at all while it moves a big
        study, so instances arriving at the Storage SCP count as progress; and
        while our consumer is behind, the PACS is waiting for us, not silent.
        """
        assert self.waiter is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                msg = await self.assoc.receive(self.timeout)
                break
            except DimseTimeout:
                waiter = self.waiter
                recent = loop.time() - waiter.last_activity < self.timeout
                if not (recent or waiter.consumer_is_behind) or waiter.closed:
                    raise
        cmd = msg.command
        if (
            cmd.command_field != C_MOVE_RSP
            or cmd.get("MessageIDBeingRespondedTo") != self.message_id
        ):
            self.assoc.abort()
            raise AssociationAborted(
                f"unexpected DIMSE message 0x{cmd.command_field:04X} during C-MOVE"
            )
        return cmd

    async def _read_responses(self) -> None:
        """Background task: C-MOVE-RSPs until the final one, then end the waiter."""
        assert self.waiter is not None
        error: BaseException | None = None
        try:
            while True:
                cmd = await self._receive()
                self.counts.update(cmd)
                if cmd.status in PENDING:
                    continue
                self.finished = True
                self.final_status = cmd.status
                if cmd.get("NumberOfRemainingSuboperations") is None:
                    # PS3.7 9.3.4.2: Remaining is sent with Pending (and may be with
                    # Cancel); a final response without it means none remain.
                    self.counts.remaining = 0
                self.comment = str(cmd.get("ErrorComment", "") or "")
                break
            category = status_category(self.final_status)
            if category == "failure":
                error = StatusError("C-MOVE", self.final_status, self.comment)
            expected = self.counts.completed + self.counts.warning
            if not self._cancelled and self.waiter.delivered < expected:
                # PS3.4 C.4.2.3: every sub-operation is complete before the final
                # response, but a PACS may answer before our last C-STORE-RSP.
                await self.waiter.wait_delivered(expected, min(self.timeout, _LATE_GRACE))
        except DimseError as exc:
            error = exc
        except asyncio.CancelledError:
            error = AssociationAborted("C-MOVE response reader cancelled")
            raise
        except Exception as exc:  # a bug must not leave the consumer waiting forever
            log.exception("C-MOVE response reader failed")
            error = exc
        finally:
            self.waiter.finish(error)

    # -- the caller's side -----------------------------------------------------
    def __aiter__(self) -> MoveOperation:
        return self

    async def __anext__(self) -> RetrievedInstance:
        if self.waiter is None:
            raise RuntimeError("MoveOperation not started")
        return await self.waiter.__anext__()

    async def cancel(self) -> None:
        """C-CANCEL (PS3.7 9.3.4.3), discard what still comes, wait for the final RSP.

        The final status after a cancel (0xFE00, or whatever the PACS had
        reached) is kept in ``final_status``; it is not raised.
        """
        if self.finished or self.waiter is None:
            return
        self._cancelled = True
        self.waiter.drain()
        try:
            await self.assoc.send(self._context_id, c_cancel_rq(self.message_id))
            if self._reader is not None:
                await asyncio.shield(self._reader)
            error = self.waiter.error
            if not self.finished and isinstance(error, DimseError):
                raise error
        except DimseError:
            self.assoc.abort()
            raise
        finally:
            self.waiter.close()

    async def close(self) -> None:
        """Unregister from the mediator and stop the reader (after the end or an error)."""
        if self.waiter is not None:
            self.waiter.close()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def release(self) -> None:
        await self.close()
