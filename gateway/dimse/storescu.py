"""C-STORE as a service user (PS3.4 B.2, PS3.7 9.1.1): what STOW-RS sends to the PACS."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian

from gateway.dimse.contexts import ContextProfile
from gateway.dimse.errors import AssociationAborted
from gateway.dimse.messages import C_STORE_RSP, c_store_rq
from gateway.dimse.requestor import Association


@dataclass(frozen=True)
class StoreResponse:
    """The C-STORE-RSP status and comment, as the PACS sent them (STOW-05)."""

    status: int
    comment: str = ""


@functools.lru_cache(maxsize=1024)
def store_profile(sop_class_uid: str, transfer_syntax: str) -> ContextProfile:
    """Contexts to store one SOP class in one transfer syntax.

    The instance's own syntax first; for any other syntax a second context
    with Explicit VR Little Endian, so that an instance the PACS refuses as it
    is can still be stored after conversion (issue 4: transcode with a warning).
    One syntax per context, so the accepted syntax is always one we can send.
    """
    syntaxes: tuple[tuple[str, tuple[str, ...]], ...] = ((sop_class_uid, (transfer_syntax,)),)
    if transfer_syntax != ExplicitVRLittleEndian:
        syntaxes += ((sop_class_uid, (ExplicitVRLittleEndian,)),)
    return ContextProfile(f"store:{sop_class_uid}:{transfer_syntax}", syntaxes)


async def c_store(
    assoc: Association,
    context_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    dataset: bytes | memoryview,
    *,
    timeout: float,
) -> StoreResponse:
    """Send one instance's data set (no File Meta) and wait for the C-STORE-RSP."""
    message_id = assoc.next_message_id()
    await assoc.send(context_id, c_store_rq(message_id, sop_class_uid, sop_instance_uid), dataset)
    rsp = await assoc.receive(timeout)
    cmd = rsp.command
    if cmd.command_field != C_STORE_RSP or cmd.get("MessageIDBeingRespondedTo") != message_id:
        assoc.abort()
        raise AssociationAborted(
            f"unexpected answer to C-STORE (command 0x{cmd.command_field:04X})"
        )
    return StoreResponse(cmd.status, cmd.get("ErrorComment", "") or "")
