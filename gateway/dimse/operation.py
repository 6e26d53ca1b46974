"""What C-FIND, C-GET and C-MOVE share as operations on a lent association.

Each is used as ``async with Operation(...) as op: async for x in op: ...``.
Leaving the block early, cleanly or because an async generator over it was
closed, cancels the operation (C-CANCEL and drain) so the association can go
back to the pool; leaving it with an error aborts the association, whose state
on the wire is then unknown.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from gateway.dimse.requestor import Association


class DimseOperation:
    assoc: Association
    finished: bool

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
                await self.cancel()
            else:
                self.assoc.abort()
        finally:
            await self.release()
