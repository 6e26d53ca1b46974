"""C-GET as a service user (PS3.4 C.4.3, PS3.7 9.1.3), streamed instance by instance.

The PACS sends each instance as a C-STORE sub-operation on our own
association, so we take the SCP role for the storage SOP classes (role
selection, PS3.7 D.3.3.4).  Each received instance is handed to the caller
before we answer its C-STORE-RSP: the PACS waits for that answer before the
next sub-operation, so a slow HTTP client slows the PACS down instead of
filling our memory (backpressure from the HTTP socket to the DIMSE socket).
With ``eager_ack`` (a consumer that only writes to the cache) each instance is
answered as soon as it arrived, so the PACS and our disk work at the same time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pydicom.uid as U

from gateway.dimse.contexts import STUDY_ROOT_GET, UNCOMPRESSED, ContextProfile
from gateway.dimse.errors import AssociationAborted, DimseError, StatusError
from gateway.dimse.messages import (
    C_GET_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    PENDING,
    Command,
    c_cancel_rq,
    c_get_rq,
    response_to,
    status_category,
)
from gateway.dimse.operation import DimseOperation
from gateway.dimse.pdu import RoleSelection
from gateway.dimse.requestor import Association

# Compressed syntaxes we accept as stored, one context each so the PACS can
# send what it has without transcoding (PS3.5 Annex A.4; HTJ2K: 2023 edition).
STORED_SYNTAXES = (
    U.JPEGBaseline8Bit,
    U.JPEGExtended12Bit,
    U.JPEGLossless,
    U.JPEGLosslessSV1,
    U.JPEGLSLossless,
    U.JPEGLSNearLossless,
    U.JPEG2000Lossless,
    U.JPEG2000,
    U.RLELossless,
    U.HTJ2KLossless,
    U.HTJ2KLosslessRPCL,
    U.HTJ2K,
)

# When the PACS cannot tell us the study's SOP classes (dcmqrscp returns no
# SOPClassUID at IMAGE level), these are proposed: the common ones.
COMMON_STORAGE = (
    U.CTImageStorage,
    U.EnhancedCTImageStorage,
    U.MRImageStorage,
    U.EnhancedMRImageStorage,
    U.ComputedRadiographyImageStorage,
    U.DigitalXRayImageStorageForPresentation,
    U.DigitalMammographyXRayImageStorageForPresentation,
    U.UltrasoundImageStorage,
    U.UltrasoundMultiFrameImageStorage,
    U.SecondaryCaptureImageStorage,
    U.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    U.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    U.MultiFrameTrueColorSecondaryCaptureImageStorage,
    U.NuclearMedicineImageStorage,
    U.PositronEmissionTomographyImageStorage,
    U.XRayAngiographicImageStorage,
    U.XRayRadiofluoroscopicImageStorage,
    U.RTImageStorage,
    U.RTDoseStorage,
    U.RTStructureSetStorage,
    U.RTPlanStorage,
    U.SegmentationStorage,
    U.BasicTextSRStorage,
    U.EnhancedSRStorage,
    U.ComprehensiveSRStorage,
    U.KeyObjectSelectionDocumentStorage,
    U.GrayscaleSoftcopyPresentationStateStorage,
    U.EncapsulatedPDFStorage,
    U.VLPhotographicImageStorage,
)


@functools.lru_cache(maxsize=256)
def _profile(sop_classes: tuple[str, ...], compressed: tuple[str, ...]) -> ContextProfile:
    syntaxes: list[tuple[str, tuple[str, ...]]] = [(STUDY_ROOT_GET, UNCOMPRESSED)]
    for sop_class in sop_classes:
        syntaxes.append((sop_class, UNCOMPRESSED))
        syntaxes.extend((sop_class, (ts,)) for ts in compressed)
    roles = tuple(RoleSelection(c, scu_role=False, scp_role=True) for c in sop_classes)
    name = "get:" + ",".join(sop_classes) + "|" + ",".join(compressed)
    return ContextProfile(name, tuple(syntaxes), roles)


def proposes_every_syntax(sop_classes: Iterable[str]) -> bool:
    """Whether a C-GET for these classes gets every stored syntax within the 128
    contexts, i.e. whether proposing more classes than needed costs nothing."""
    return 1 + (1 + len(STORED_SYNTAXES)) * len(set(sop_classes)) <= 128


def retrieve_profile(sop_classes: Iterable[str] | None) -> ContextProfile:
    """Contexts for a C-GET of instances of these SOP classes (PS3.8: at most 128).

    Known classes get a native context plus one per compressed syntax, so the
    PACS sends what it stores; the unknown case proposes the common classes
    with native and the lossless compressed syntaxes that fit in 128.
    """
    if sop_classes:
        classes = tuple(sorted(set(sop_classes)))
        if proposes_every_syntax(classes):
            return _profile(classes, STORED_SYNTAXES)
        budget = (127 // len(classes)) - 1
        if budget >= 0 and len(classes) <= 127:
            return _profile(classes, STORED_SYNTAXES[:budget])
        classes = classes[:127]
        return _profile(classes, ())
    return _profile(COMMON_STORAGE, (U.JPEG2000Lossless, U.JPEGLosslessSV1, U.RLELossless))


@dataclass(frozen=True)
class RetrievedInstance:
    """One instance received by a C-STORE sub-operation: the data set, no File Meta."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    dataset: bytes


@dataclass
class SubOperations:
    """The counts of the final C-GET-RSP (PS3.4 C.4.3.1.3.1)."""

    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int = 0

    def update(self, cmd: Command) -> None:
        """Take the counts a C-GET/C-MOVE-RSP carries (each is conditional, PS3.7 9.3.3.2)."""
        for name, field in (
            ("NumberOfCompletedSuboperations", "completed"),
            ("NumberOfFailedSuboperations", "failed"),
            ("NumberOfWarningSuboperations", "warning"),
            ("NumberOfRemainingSuboperations", "remaining"),
        ):
            value = cmd.get(name)
            if isinstance(value, int):
                setattr(self, field, value)


class GetOperation(DimseOperation):
    """One C-GET; iterate the instances, then close it (or use ``async with``).

    Closing before the final response sends C-CANCEL and drains the
    sub-operations still in flight, so the association can go back to the
    pool; if that fails the association is aborted.
    """

    def __init__(
        self,
        assoc: Association,
        identifier: Callable[[str], bytes],
        *,
        timeout: float,
        sop_class_uid: str = STUDY_ROOT_GET,
        eager_ack: bool = False,
    ) -> None:
        self.assoc = assoc
        self.eager_ack = eager_ack
        self.sop_class_uid = sop_class_uid
        self._identifier = identifier
        self.timeout = timeout
        self.message_id = 0
        self.finished = False
        self.final_status: int | None = None
        self.counts = SubOperations()
        self.comment = ""
        self._context_id = 0
        self._store_context = 0
        self._unanswered: Command | None = None

    async def start(self) -> None:
        ctx = self.assoc.context_for(self.sop_class_uid)
        self._context_id = ctx.context_id
        self.message_id = self.assoc.next_message_id()
        await self.assoc.send(
            ctx.context_id,
            c_get_rq(self.message_id, self.sop_class_uid),
            self._identifier(ctx.transfer_syntax),
        )

    async def _answer_store(self, status: int = 0x0000) -> None:
        request, self._unanswered = self._unanswered, None
        if request is None:
            return
        rsp = response_to(
            request,
            C_STORE_RSP,
            status,
            AffectedSOPInstanceUID=request.get("AffectedSOPInstanceUID"),
        )
        await self.assoc.send(self._store_context, rsp)

    def __aiter__(self) -> GetOperation:
        return self

    async def __anext__(self) -> RetrievedInstance:
        await self._answer_store()
        if self.finished:
            raise StopAsyncIteration
        while True:
            msg = await self.assoc.receive(self.timeout)
            cmd = msg.command
            if cmd.command_field == C_STORE_RQ:
                ctx = self.assoc.accepted.get(msg.context_id)
                if ctx is None or msg.dataset is None:
                    raise AssociationAborted("C-STORE sub-operation on a context we did not accept")
                self._unanswered = cmd
                self._store_context = msg.context_id
                if self.eager_ack:
                    # The consumer is not the bottleneck (it writes to disk); let the
                    # PACS send the next one now. Memory stays bounded by the
                    # association's flow control (it stops reading the socket).
                    await self._answer_store()
                return RetrievedInstance(
                    str(cmd.get("AffectedSOPClassUID", "")),
                    str(cmd.get("AffectedSOPInstanceUID", "")),
                    ctx.transfer_syntax,
                    msg.dataset,
                )
            if (
                cmd.command_field != C_GET_RSP
                or cmd.get("MessageIDBeingRespondedTo") != self.message_id
            ):
                self.assoc.abort()
                raise AssociationAborted(
                    f"unexpected DIMSE message 0x{cmd.command_field:04X} during C-GET"
                )
            self.counts.update(cmd)
            if cmd.status in PENDING:
                continue
            self.finished = True
            self.final_status = cmd.status
            self.comment = str(cmd.get("ErrorComment", "") or "")
            if status_category(cmd.status) == "failure":
                raise StatusError("C-GET", cmd.status, self.comment)
            raise StopAsyncIteration

    async def cancel(self) -> None:
        """C-CANCEL, then answer what is still in flight until the final C-GET-RSP."""
        if self.finished:
            return
        try:
            await self._answer_store()
            await self.assoc.send(self._context_id, c_cancel_rq(self.message_id))
            while not self.finished:
                msg = await self.assoc.receive(self.timeout)
                cmd = msg.command
                if cmd.command_field == C_STORE_RQ:
                    self._unanswered = cmd
                    self._store_context = msg.context_id
                    await self._answer_store()
                    continue
                if cmd.get("MessageIDBeingRespondedTo") != self.message_id:
                    raise AssociationAborted("unexpected message while cancelling C-GET")
                self.counts.update(cmd)
                if cmd.status not in PENDING:
                    self.finished = True
                    self.final_status = cmd.status
        except DimseError:
            self.assoc.abort()
            raise

    async def after_finish(self) -> None:
        await self._answer_store()
