"""C-STORE as a service provider (PS3.4 B.2.2, PS3.7 9.1.1): the C-MOVE destination.

``StoreSCP`` is a listener whose only service besides Verification is
C-STORE; what happens to a received instance is the ``StoreHandler``'s
business (the ``MoveMediator`` hands it to the waiting C-MOVE).  The handler
is awaited before the C-STORE-RSP goes out, so the status it returns is the
one the sender sees, and the time it takes is backpressure on the sender.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final

from gateway.dimse.acceptor import (
    ACCEPTED_SYNTAXES,
    MAX_PDU_LENGTH,
    AcceptedAssociation,
    AcceptorSettings,
    AssociationServer,
    RequestHandler,
)
from gateway.dimse.messages import C_STORE_RQ, C_STORE_RSP, Command, Message, response_to

StoreHandler = Callable[[str, Command, str, bytes], Awaitable[int]]
"""``(calling AE title, C-STORE-RQ command, context transfer syntax, data set) -> status``.

The data set is exactly as received (no File Meta), in the transfer syntax of
the presentation context it came on.  The status goes into the C-STORE-RSP
(PS3.4 B.2.3: 0x0000 success, 0xB000/0xB007/0xB006 warnings, 0xA7xx out of
resources, 0xA9xx data set does not match SOP class, 0xCxxx cannot understand,
and the general ones of PS3.7 Annex C such as 0x0124 not authorized).
"""

# PS3.7 Annex C.
SOP_CLASS_NOT_SUPPORTED: Final = 0x0122
CANNOT_UNDERSTAND: Final = 0xC000


def store_service(handler: StoreHandler) -> RequestHandler:
    """Adapt a ``StoreHandler`` to the acceptor's request handler for C-STORE-RQ."""

    async def on_store(assoc: AcceptedAssociation, msg: Message) -> Command:
        cmd = msg.command
        abstract, transfer_syntax = assoc.contexts[msg.context_id]
        if msg.dataset is None:
            status = CANNOT_UNDERSTAND  # PS3.7 9.3.1.1: a C-STORE-RQ always has a data set
        elif cmd.get("AffectedSOPClassUID") != abstract:
            # PS3.7 9.1.1.1.2: the SOP class must be that of the context it came on.
            status = SOP_CLASS_NOT_SUPPORTED
        else:
            status = await handler(assoc.calling_aet, cmd, transfer_syntax, msg.dataset)
        return response_to(
            cmd, C_STORE_RSP, status, AffectedSOPInstanceUID=cmd.get("AffectedSOPInstanceUID")
        )

    return on_store


class StoreSCP:
    """A Storage SCP listening on (host, port) as AE ``aet``.

    ``port`` 0 lets the kernel pick one; ``port`` holds the real one after
    ``start()``.  Use ``async with StoreSCP(...)`` or ``start()``/``close()``.
    """

    def __init__(
        self,
        aet: str,
        host: str,
        port: int,
        handler: StoreHandler,
        *,
        accept_any_called_aet: bool = False,
        calling_aets: frozenset[str] | None = None,
        transfer_syntaxes: tuple[str, ...] = ACCEPTED_SYNTAXES,
        max_associations: int = 16,
        request_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        max_pdu_length: int = MAX_PDU_LENGTH,
    ) -> None:
        self.settings = AcceptorSettings(
            aet=aet,
            accept_any_called_aet=accept_any_called_aet,
            calling_aets=calling_aets,
            transfer_syntaxes=transfer_syntaxes,
            max_pdu_length=max_pdu_length,
            max_associations=max_associations,
            request_timeout=request_timeout,
            idle_timeout=idle_timeout,
        )
        self.server = AssociationServer(
            self.settings, {C_STORE_RQ: store_service(handler)}, host, port
        )

    @property
    def aet(self) -> str:
        return self.settings.aet

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        await self.server.close()

    async def __aenter__(self) -> StoreSCP:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
