"""C-ECHO as a service user (PS3.7 9.1.5): the readiness probe of every PACS."""

from __future__ import annotations

from gateway.dimse.contexts import VERIFICATION
from gateway.dimse.errors import AssociationAborted, StatusError
from gateway.dimse.messages import C_ECHO_RSP, SUCCESS, c_echo_rq
from gateway.dimse.requestor import Association


async def c_echo(assoc: Association, timeout: float) -> None:
    """One C-ECHO on an established association; raises unless status is Success."""
    ctx = assoc.context_for(VERIFICATION)
    message_id = assoc.next_message_id()
    await assoc.send(ctx.context_id, c_echo_rq(message_id))
    rsp = await assoc.receive(timeout)
    cmd = rsp.command
    if cmd.command_field != C_ECHO_RSP or cmd.get("MessageIDBeingRespondedTo") != message_id:
        assoc.abort()
        raise AssociationAborted(f"unexpected answer to C-ECHO (command 0x{cmd.command_field:04X})")
    if cmd.status != SUCCESS:
        raise StatusError("C-ECHO", cmd.status, cmd.get("ErrorComment", ""))
