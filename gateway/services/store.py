"""STOW-RS (PS3.18 10.5) as C-STORE on pooled associations.

Every instance the client sent ends in exactly one of two lists: stored (the
PACS answered C-STORE success or warning) or failed (with the C-STORE status
or the gateway's own reason).  Nothing is reported stored that the PACS did
not confirm.  Instances are sent several at a time (``concurrency``); the
web layer hands them over as they are parsed, and ``add`` returns once a
worker can take the part, so at most ``concurrency`` instances are in C-STORE
and one waits in the queue when ``add`` returns (one more while it waits).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.dicom.identity import identity_of
from gateway.dicom.instance_check import CheckedInstance, InstanceError, check_instance
from gateway.dicom.part10 import read_part10
from gateway.dicom.to_explicit_le import to_explicit_vr_little_endian
from gateway.services.errors import GatewayError, PacsBusy
from gateway.services.pacs import PacsClient, StoreRefused

log = logging.getLogger(__name__)

# PS3.18 Table I.2-1 / PS3.4 B.2.3 failure and warning reasons we produce ourselves.
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
STUDY_MISMATCH = 0xA900  # the data set does not belong to the study the URL names
COERCION = 0xB000  # stored after conversion to Explicit VR Little Endian


@dataclass(frozen=True)
class Stored:
    sop_class_uid: str
    sop_instance_uid: str
    retrieve_url: str
    warning: int | None = None


@dataclass(frozen=True)
class Failed:
    sop_class_uid: str
    sop_instance_uid: str
    reason: int
    detail: str


@dataclass
class StowResult:
    """The outcome of one STOW-RS request, in request order."""

    study_url: str | None
    stored: list[Stored] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    pacs_error: GatewayError | None = None

    @property
    def http_status(self) -> int:
        """PS3.18 10.5.3.1 (checklist STOW-03)."""
        if not self.stored:
            if self.pacs_error is not None and len(self.failed) > 0:
                return self.pacs_error.status
            return 409
        if self.failed or any(s.warning is not None for s in self.stored):
            return 202
        return 200

    def to_json(self) -> dict[str, Any]:
        """The response data set in the DICOM JSON model (PS3.18 Annex I)."""
        # RetrieveURL is Type 2 (Table I.1-1): empty when no single study was stored.
        out: dict[str, Any] = {"00081190": {"vr": "UR"}}
        if self.study_url:
            out["00081190"] = {"vr": "UR", "Value": [self.study_url]}
        if self.failed:
            out["00081198"] = {
                "vr": "SQ",
                "Value": [
                    {
                        "00081150": _ui(f.sop_class_uid),
                        "00081155": _ui(f.sop_instance_uid),
                        "00081197": {"vr": "US", "Value": [f.reason]},
                    }
                    for f in self.failed
                ],
            }
        if self.stored:
            items = []
            for s in self.stored:
                item: dict[str, Any] = {
                    "00081150": _ui(s.sop_class_uid),
                    "00081155": _ui(s.sop_instance_uid),
                    "00081190": {"vr": "UR", "Value": [s.retrieve_url]},
                }
                if s.warning is not None:
                    item["00081196"] = {"vr": "US", "Value": [s.warning]}
                items.append(item)
            out["00081199"] = {"vr": "SQ", "Value": items}
        return dict(sorted(out.items()))


def _readable_uids(data: bytes | memoryview) -> tuple[str, str]:
    """The SOP Class and Instance UIDs of a part that failed its check, if readable.

    PS3.18 Table I.2-1 makes both Type 1 in a FailedSOPSequence item: a client
    needs them to know which of its instances failed.
    """
    try:
        part = read_part10(data)
        ident = identity_of(
            part.data, part.offset, explicit_vr=part.explicit_vr, little_endian=part.little_endian
        )
    except (ValueError, IndexError):
        return "", ""
    return (
        ident.sop_class_uid or part.sop_class_uid,
        ident.sop_instance_uid or part.sop_instance_uid,
    )


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


_Job = tuple[int, CheckedInstance, "bytes | memoryview", "Callable[[], None] | None"]


class StowSession:
    """Stores the instances of one request; ``add`` them, then ``finish``.

    ``concurrency`` worker tasks (started as parts arrive) take checked
    instances from a queue of one and store them.  A worker goes from one
    C-STORE-RSP straight to the next C-STORE, without a task or a semaphore
    in between: with one association (``stow_concurrency = 1``, dcmqrscp)
    the gap between two C-STOREs is what the PACS waits for.  At most
    ``concurrency`` instances are being stored, one waits in the queue and
    the web layer reads the next.
    """

    def __init__(
        self,
        pacs: PacsClient,
        *,
        study_uid: str | None,
        base_url: str,
        concurrency: int = 4,
    ) -> None:
        self.pacs = pacs
        self.study_uid = study_uid
        self.base_url = base_url
        self._concurrency = max(1, concurrency)
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue(maxsize=1)
        self._workers: list[asyncio.Task[None]] = []
        self._idle = 0
        self._outcomes: list[Stored | Failed] = []
        self._pacs_error: GatewayError | None = None

    async def add(
        self, data: bytes | memoryview, release: Callable[[], None] | None = None
    ) -> None:
        """Queue one Part 10 instance; returns once the queue of one has room
        (bounded memory).

        The part is checked before it waits: that work overlaps the C-STOREs
        in flight instead of delaying the next one.
        """
        queued = False
        try:
            checked = self._check(data)
            if isinstance(checked, Failed):
                self._outcomes.append(checked)
                return
            # Failed until a worker says otherwise: an instance is never left out.
            index = len(self._outcomes)
            self._outcomes.append(
                Failed(
                    checked.sop_class_uid,
                    checked.sop_instance_uid,
                    PROCESSING_FAILURE,
                    "not stored: the request ended before its C-STORE",
                )
            )
            # A worker still counts as idle while a part handed to it sits in the
            # queue: a new one is needed unless more workers wait than parts do.
            if self._idle <= self._queue.qsize() and len(self._workers) < self._concurrency:
                self._workers.append(asyncio.create_task(self._work()))
            await self._queue.put((index, checked, data, release))
            queued = True
        finally:
            if not queued and release is not None:  # a worker releases what it took
                release()

    def add_failure(
        self, reason: int, detail: str, sop_class: str = "", sop_instance: str = ""
    ) -> None:
        """Record a part that never became an instance (e.g. bad bulk data)."""
        self._outcomes.append(Failed(sop_class, sop_instance, reason, detail))

    async def _work(self) -> None:
        queue = self._queue
        while True:
            self._idle += 1
            try:
                job = await queue.get()
            finally:
                self._idle -= 1
            if job is None:
                return
            index, inst, data, release = job
            try:
                self._outcomes[index] = await self._store(inst, data)
            except Exception as exc:  # a bug: report the instance, keep the others going
                log.exception("C-STORE of an instance failed unexpectedly")
                self._outcomes[index] = Failed(
                    inst.sop_class_uid, inst.sop_instance_uid, PROCESSING_FAILURE, str(exc)
                )
            finally:
                if release is not None:
                    try:
                        release()
                    except Exception:  # a worker must outlive a failed clean-up
                        log.exception("releasing a STOW part failed")

    def _check(self, data: bytes | memoryview) -> CheckedInstance | Failed:
        try:
            inst = check_instance(data)
        except InstanceError as exc:
            sop_class, sop_instance = _readable_uids(data)
            return Failed(sop_class, sop_instance, exc.failure_code, exc.reason)
        if self.study_uid is not None and inst.study_instance_uid != self.study_uid:
            return Failed(
                inst.sop_class_uid,
                inst.sop_instance_uid,
                STUDY_MISMATCH,
                f"instance belongs to study {inst.study_instance_uid}, not {self.study_uid}",
            )
        return inst

    async def _store(self, inst: CheckedInstance, data: bytes | memoryview) -> Stored | Failed:
        try:
            outcome = await self.pacs.store(
                inst.sop_class_uid,
                inst.sop_instance_uid,
                inst.transfer_syntax_uid,
                memoryview(data)[inst.dataset_offset :],
                convert=lambda: self._convert(data),
            )
        except StoreRefused as exc:
            return Failed(
                inst.sop_class_uid, inst.sop_instance_uid, SOP_CLASS_NOT_SUPPORTED, str(exc)
            )
        except (GatewayError, InstanceError) as exc:
            if isinstance(exc, GatewayError):
                self._pacs_error = self._pacs_error or exc
            code = PROCESSING_FAILURE
            if isinstance(exc, PacsBusy):
                code = 0xA700
            elif isinstance(exc, InstanceError):
                code = exc.failure_code
            return Failed(inst.sop_class_uid, inst.sop_instance_uid, code, str(exc))
        return self._outcome(inst, outcome.status, outcome.comment, outcome.converted)

    async def _convert(self, data: bytes | memoryview) -> bytes:
        converted = await asyncio.to_thread(to_explicit_vr_little_endian, bytes(data))
        return converted[check_instance(converted).dataset_offset :]

    def _outcome(
        self, inst: CheckedInstance, status: int, comment: str, converted: bool
    ) -> Stored | Failed:
        # PS3.4 B.2.3: 0000 success, Bxxx warning, anything else failure.
        if status == 0 or 0xB000 <= status <= 0xBFFF:
            warning = status if status else (COERCION if converted else None)
            url = (
                f"{self.base_url}/studies/{inst.study_instance_uid}"
                f"/series/{inst.series_instance_uid}/instances/{inst.sop_instance_uid}"
            )
            return Stored(inst.sop_class_uid, inst.sop_instance_uid, url, warning)
        log.info("C-STORE of an instance failed with status 0x%04X", status)
        detail = f"C-STORE status 0x{status:04X}" + (f": {comment}" if comment else "")
        return Failed(inst.sop_class_uid, inst.sop_instance_uid, status, detail)

    async def finish(self) -> StowResult:
        """Wait for every queued instance and build the result."""
        try:
            for _ in self._workers:
                await self._queue.put(None)
            await asyncio.gather(*self._workers)
        except BaseException:  # cancelled while waiting: the workers end with the request
            self.cancel()
            raise
        result = StowResult(study_url=None, pacs_error=self._pacs_error)
        for outcome in self._outcomes:
            if isinstance(outcome, Stored):
                result.stored.append(outcome)
            else:
                result.failed.append(outcome)
        studies = {s.retrieve_url.split("/series/")[0] for s in result.stored}
        if self.study_uid is not None:
            result.study_url = f"{self.base_url}/studies/{self.study_uid}"
        elif len(studies) == 1:
            result.study_url = studies.pop()
        return result

    async def abort(self) -> None:
        """The client went away: stop what has not started; what the PACS took stays."""
        self.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def cancel(self) -> None:
        """Stop the workers and free the queued parts without waiting (the request
        failed, or is being cancelled itself): workers never outlive their request."""
        for task in self._workers:
            task.cancel()
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if job is not None and job[3] is not None:
                job[3]()
