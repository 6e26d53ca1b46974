"""What C-FIND, C-GET and C-MOVE share as operations on a lent association.

Each is used as ``async with Operation(...) as op: async for x in op: ...``.
Leaving the block early (cleanly, or by closing an async generator over it)
cancels the operation with C-CANCEL and drains it, so the PACS stops and the
association can go back to the pool.  A cancelled task (a client hung up)
sends C-CANCEL and aborts at once; any other error aborts the association,
whose state on the wire is then unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

from gateway.dimse.messages import c_cancel_rq
from gateway.dimse.requestor import Association

CANCEL_GRACE_SECONDS = 2.0


class DimseOperation:
    assoc: Association
    finished: bool
    message_id: int
    _context_id: int

    async def start(self) -> None:
        raise NotImplementedError

    async def cancel(self) -> None:
        raise NotImplementedError

    async def after_finish(self) -> None:
        """Called on a clean exit after the final response (nothing to do by default)."""

    async def release(self) -> None:
        """Called last, whatever happened (nothing to do by default)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        clean = exc_type is None or issubclass(exc_type, GeneratorExit)
        try:
            if self.finished:
                if clean:
                    await self.after_finish()
            elif clean:
                try:
                    # A PACS that ignores C-CANCEL would keep sending the rest.
                    async with asyncio.timeout(CANCEL_GRACE_SECONDS):
                        await self.cancel()
                except TimeoutError:
                    self.assoc.abort()
            else:
                if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
                    # A client hung up: tell the PACS to stop (best effort, no
                    # drain: a PACS that ignores C-CANCEL would keep us waiting).
                    with contextlib.suppress(Exception):
                        self.assoc.send_nowait(self._context_id, c_cancel_rq(self.message_id))
                self.assoc.abort()
        finally:
            await self.release()
