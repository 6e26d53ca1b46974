"""C-FIND as a service user (PS3.4 C.4.1, PS3.7 9.1.2), streamed.

Matches are yielded as they arrive, so a QIDO response can start before the
PACS has finished, and a client that needs only ``limit`` matches stops the
query with C-CANCEL (PS3.7 9.3.2.3) instead of waiting for thousands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydicom.uid import ImplicitVRLittleEndian

from gateway.dimse.errors import AssociationAborted, DimseError, StatusError
from gateway.dimse.messages import (
    C_FIND_RSP,
    PENDING,
    c_cancel_rq,
    c_find_rq,
    status_category,
)
from gateway.dimse.operation import DimseOperation
from gateway.dimse.requestor import Association


@dataclass(frozen=True)
class FindMatch:
    """One pending response's identifier, still encoded."""

    dataset: bytes
    explicit_vr: bool


class FindOperation(DimseOperation):
    """One C-FIND on an association; iterate it, then close it (or use ``async with``).

    Closing before the final response sends C-CANCEL and drains what the peer
    still sends, so the association can go back to the pool; if that fails
    the association is aborted.
    """

    def __init__(
        self,
        assoc: Association,
        sop_class_uid: str,
        identifier: Callable[[str], bytes],
        *,
        timeout: float,
    ) -> None:
        self.assoc = assoc
        self.sop_class_uid = sop_class_uid
        self._identifier = identifier
        self.timeout = timeout
        self.message_id = 0
        self.finished = False
        self.final_status: int | None = None
        self.warning_comment = ""
        self._context_id = 0
        self._explicit = True

    async def start(self) -> None:
        ctx = self.assoc.context_for(self.sop_class_uid)
        self._context_id = ctx.context_id
        self._explicit = ctx.transfer_syntax != ImplicitVRLittleEndian
        self.message_id = self.assoc.next_message_id()
        await self.assoc.send(
            ctx.context_id,
            c_find_rq(self.message_id, self.sop_class_uid),
            self._identifier(ctx.transfer_syntax),
        )

    def __aiter__(self) -> FindOperation:
        return self

    async def __anext__(self) -> FindMatch:
        if self.finished:
            raise StopAsyncIteration
        while True:
            msg = await self.assoc.receive(self.timeout)
            cmd = msg.command
            if (
                cmd.command_field != C_FIND_RSP
                or cmd.get("MessageIDBeingRespondedTo") != self.message_id
            ):
                self.assoc.abort()
                raise AssociationAborted(
                    f"unexpected DIMSE message 0x{cmd.command_field:04X} during C-FIND"
                )
            status = cmd.status
            if status in PENDING:
                if msg.dataset is None:
                    continue  # PS3.4 C.4.1.1.4: a pending response must carry one; skip
                return FindMatch(msg.dataset, self._explicit)
            self.finished = True
            self.final_status = status
            category = status_category(status)
            if category == "failure":
                raise StatusError("C-FIND", status, cmd.get("ErrorComment", ""))
            if category == "warning":
                self.warning_comment = cmd.get("ErrorComment", "") or f"status 0x{status:04X}"
            raise StopAsyncIteration

    async def cancel(self) -> None:
        """C-CANCEL and drain to the final response (Cancel or otherwise)."""
        if self.finished:
            return
        try:
            await self.assoc.send(self._context_id, c_cancel_rq(self.message_id))
            while not self.finished:
                msg = await self.assoc.receive(self.timeout)
                if msg.command.get("MessageIDBeingRespondedTo") != self.message_id:
                    raise AssociationAborted("unexpected message while cancelling C-FIND")
                if msg.command.status not in PENDING:
                    self.finished = True
                    self.final_status = msg.command.status
        except DimseError:
            self.assoc.abort()
            raise
