"""The services' handle on one PACS: its association pool and DIMSE errors as service errors.

Routes never see a ``DimseError``: every DIMSE failure leaves this module as a
``GatewayError`` with the HTTP status the checklist asks for (ERR-02, ERR-03):
unreachable, refused or aborted -> 502; refused for now, backing off or every
pooled association busy -> 503;
timeout -> 504; C-FIND A700 (out of resources) -> 503, other failures -> 502.

Every operation is also counted and timed here (``DimseMetrics``), since every
one of them passes through ``PacsClient``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian

from gateway.config import PacsConfig, Settings
from gateway.dicom.dicom_json import dataset_to_json
from gateway.dicom.walker import DicomParseError
from gateway.dimse import contexts
from gateway.dimse.contexts import ContextProfile
from gateway.dimse.echoscu import c_echo
from gateway.dimse.errors import (
    AssociationAborted,
    AssociationRefused,
    DimseError,
    DimseTimeout,
    NoAcceptableContext,
    PeerUnreachable,
    PoolExhausted,
    StatusError,
)
from gateway.dimse.findscu import FindMatch, FindOperation
from gateway.dimse.getscu import GetOperation, RetrievedInstance, SubOperations, retrieve_profile
from gateway.dimse.messages import status_category
from gateway.dimse.move_mediator import MoveMediator
from gateway.dimse.movescu import RETRIEVE_BY_MOVE, MoveOperation
from gateway.dimse.pool import AssociationPool, PoolSettings
from gateway.dimse.requestor import Association, Peer, Timeouts
from gateway.dimse.storescp import StoreSCP
from gateway.dimse.storescu import c_store, store_profile
from gateway.metrics import Registry, Sample
from gateway.services.errors import GatewayError, PacsBusy, PacsFailed, PacsTimeout


def translate(exc: DimseError, pacs: str, retry_after: float) -> GatewayError:
    """The service error (and so the HTTP status) for a DIMSE failure."""
    if isinstance(exc, DimseTimeout):
        return PacsTimeout(f"PACS {pacs}: {exc}")
    if isinstance(exc, StatusError):
        # The PACS's own comment may quote a patient's name or a UID (log_phi).
        text = f"PACS {pacs}: {exc.operation} failed with status 0x{exc.status:04X}"
        if 0xA700 <= exc.status <= 0xA7FF:
            return PacsBusy(
                text, retry_after=retry_after, identifying=exc.comment, status=exc.status
            )
        return PacsFailed(text, status=exc.status, identifying=exc.comment)
    if isinstance(exc, PoolExhausted):
        return PacsBusy(f"PACS {pacs}: {exc}", retry_after=retry_after)
    if isinstance(exc, AssociationRefused) and exc.transient:
        return PacsBusy(f"PACS {pacs}: {exc}", retry_after=retry_after)
    if isinstance(exc, AssociationRefused | PeerUnreachable | AssociationAborted):
        if "backing off" in str(exc):
            return PacsBusy(f"PACS {pacs}: {exc}", retry_after=retry_after)
        return PacsFailed(f"PACS {pacs}: {exc}")
    return PacsFailed(f"PACS {pacs}: {exc}")


log = logging.getLogger(__name__)


def match_json(pacs: str, match: FindMatch) -> dict[str, Any]:
    """A C-FIND match as DICOM JSON; an identifier we cannot parse is the PACS's fault (502)."""
    try:
        return dataset_to_json(match.dataset, explicit_vr=match.explicit_vr)
    except DicomParseError as exc:
        raise PacsFailed(f"PACS {pacs} sent a C-FIND identifier we cannot parse: {exc}") from exc


class StoreRefused(Exception):
    """The PACS does not take this SOP class in any syntax we can send (0x0122)."""


@dataclass(frozen=True)
class StoreOutcome:
    status: int
    comment: str
    converted: bool


class DimseMetrics:
    """``dicomweb_dimse_operations_total`` and ``..._duration_seconds`` on a registry."""

    def __init__(self, registry: Registry) -> None:
        self.operations = registry.counter(
            "dicomweb_dimse_operations_total",
            "DIMSE operations by PACS, operation (C-ECHO, C-FIND, C-GET, C-MOVE, C-STORE) and "
            "outcome: success, warning, failure (a failure status), cancel (C-CANCEL sent or "
            "the client went away), error (refused, aborted, unreachable), timeout.",
            ("pacs", "operation", "status"),
        )
        self.duration = registry.histogram(
            "dicomweb_dimse_operation_duration_seconds",
            "Seconds from asking the pool for an association to the operation's end.",
            ("pacs", "operation"),
        )

    def record(self, pacs: str, operation: str, status: str, seconds: float) -> None:
        self.operations.inc(pacs, operation, status)
        self.duration.observe(seconds, pacs, operation)


class _Measured:
    """``with client._measure("C-FIND") as m:`` times the block and records its
    outcome: the category of ``m.final_status`` (or of ``m.op.final_status``)
    when it ends normally, else what the exception says."""

    __slots__ = ("_metrics", "_operation", "_pacs", "_start", "final_status", "op")

    def __init__(self, metrics: DimseMetrics | None, pacs: str, operation: str) -> None:
        self._metrics = metrics
        self._pacs = pacs
        self._operation = operation
        self._start = 0.0
        self.final_status: int | None = None
        self.op: FindOperation | GetOperation | MoveOperation | None = None

    def __enter__(self) -> _Measured:
        self._start = time.perf_counter()
        return self

    def _final(self) -> int | None:
        return self.op.final_status if self.op is not None else self.final_status

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._metrics is None:
            return
        final = self._final()
        if exc_type is None:
            status = "success" if final is None else status_category(final)
        elif issubclass(exc_type, GeneratorExit):
            # The consumer stopped early: C-CANCEL was sent unless the final response
            # had already come (then its status stands).
            status = "cancel" if final is None else status_category(final)
        elif issubclass(exc_type, asyncio.CancelledError):
            status = "cancel"
        elif issubclass(exc_type, DimseTimeout):
            status = "timeout"
        elif isinstance(exc, StatusError):
            status = status_category(exc.status)
        else:
            status = "error"
        self._metrics.record(self._pacs, self._operation, status, time.perf_counter() - self._start)


class PacsClient:
    """One configured PACS, reached over pooled associations."""

    def __init__(
        self,
        config: PacsConfig,
        settings: Settings,
        mediator: MoveMediator | None = None,
        metrics: DimseMetrics | None = None,
    ) -> None:
        self.config = config
        self.mediator = mediator
        self.settings = settings
        self.metrics = metrics
        self.timeouts = Timeouts(
            connect=settings.connect_timeout,
            accept=settings.accept_timeout,
            dimse=settings.dimse_timeout,
            network=settings.network_timeout,
        )
        self.pool = AssociationPool(
            Peer(config.aet, config.host, config.port),
            PoolSettings(
                calling_aet=settings.calling_aet,
                timeouts=self.timeouts,
                max_size=config.max_associations,
                idle_seconds=settings.pool_idle_seconds,
                backoff_seconds=settings.pool_backoff_seconds,
                max_pdu_length=settings.max_pdu_length,
            ),
        )

    @property
    def name(self) -> str:
        return self.config.name

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except DimseError as exc:
            raise translate(exc, self.config.aet, self.settings.pool_backoff_seconds) from exc

    def _measure(self, operation: str) -> _Measured:
        """Use inside ``_errors``: it must see the DimseError, not the service error."""
        return _Measured(self.metrics, self.config.name, operation)

    async def echo(self) -> float:
        """C-ECHO on a pooled association; returns the round trip in seconds."""
        with self._errors(), self._measure("C-ECHO"):
            async with self.pool.acquire(contexts.QUERY) as assoc:
                start = time.perf_counter()
                await c_echo(assoc, self.timeouts.dimse)
                return time.perf_counter() - start

    async def find(
        self, identifier: Callable[[str], bytes], *, patient_root: bool = False
    ) -> AsyncGenerator[FindMatch, None]:
        """Stream C-FIND matches; closing the iterator early cancels the query.

        ``identifier`` encodes the query for the negotiated transfer syntax.
        """
        sop_class = contexts.PATIENT_ROOT_FIND if patient_root else contexts.STUDY_ROOT_FIND
        with self._errors(), self._measure("C-FIND") as measured:
            async with (
                self.pool.acquire(contexts.QUERY) as assoc,
                FindOperation(assoc, sop_class, identifier, timeout=self.timeouts.dimse) as op,
            ):
                measured.op = op
                async for match in op:
                    yield match

    def get(
        self,
        identifier: Callable[[str], bytes],
        sop_classes: Iterable[str] | None,
        *,
        eager_ack: bool = False,
        watch: Callable[[SubOperations], None] | None = None,
    ) -> AsyncGenerator[RetrievedInstance, None]:
        """Stream a C-GET's instances; closing the iterator early cancels the retrieve.

        ``watch`` is given the operation's live sub-operation counts when it starts
        (for progress reports)."""

        def operation(assoc: Association) -> GetOperation:
            return GetOperation(assoc, identifier, timeout=self.timeouts.dimse, eager_ack=eager_ack)

        return self._retrieve("C-GET", retrieve_profile(sop_classes), operation, watch)

    def move(
        self,
        identifier: Callable[[str], bytes],
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        *,
        watch: Callable[[SubOperations], None] | None = None,
    ) -> AsyncGenerator[RetrievedInstance, None]:
        """Stream a C-MOVE to our own C-STORE SCP; closing early cancels it (``watch``
        as for ``get``)."""
        mediator = self.mediator
        if mediator is None:
            raise PacsFailed(f"PACS {self.config.aet}: C-MOVE needs the gateway's C-STORE SCP")

        def operation(assoc: Association) -> MoveOperation:
            return MoveOperation(
                assoc,
                identifier,
                self.settings.calling_aet,
                mediator,
                timeout=self.timeouts.dimse,
                study_uid=study_uid,
                series_uid=series_uid,
                sop_uid=sop_uid,
            )

        return self._retrieve("C-MOVE", RETRIEVE_BY_MOVE, operation, watch)

    async def _retrieve(
        self,
        name: str,
        profile: ContextProfile,
        operation: Callable[[Association], GetOperation | MoveOperation],
        watch: Callable[[SubOperations], None] | None,
    ) -> AsyncGenerator[RetrievedInstance, None]:
        with self._errors(), self._measure(name) as measured:
            async with self.pool.acquire(profile) as assoc, operation(assoc) as op:
                measured.op = op
                if watch is not None:
                    watch(op.counts)
                async for instance in op:
                    yield instance
            if op.counts.failed:
                log.warning(
                    "%s from %s: %d sub-operations failed (status 0x%04X)",
                    name,
                    self.config.aet,
                    op.counts.failed,
                    op.final_status or 0,
                )

    async def store(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        dataset: bytes | memoryview,
        *,
        convert: Callable[[], Awaitable[bytes]],
    ) -> StoreOutcome:
        """C-STORE one data set; ``convert`` gives it in Explicit VR LE if the PACS
        refuses its own syntax (then ``converted`` is set: a warning for the client).
        """
        profile = store_profile(sop_class_uid, transfer_syntax)
        with self._errors(), self._measure("C-STORE") as measured:
            try:
                async with self.pool.acquire(profile) as assoc:
                    converted = False
                    if assoc.has_context(sop_class_uid, transfer_syntax):
                        ctx = assoc.context_for(sop_class_uid, transfer_syntax)
                    elif assoc.has_context(sop_class_uid, ExplicitVRLittleEndian):
                        ctx = assoc.context_for(sop_class_uid, ExplicitVRLittleEndian)
                        dataset = await convert()
                        converted = True
                    else:  # pragma: no cover - associate() refuses this case
                        raise StoreRefused(
                            f"{self.config.aet} accepted no context for {sop_class_uid}"
                        )
                    rsp = await c_store(
                        assoc,
                        ctx.context_id,
                        sop_class_uid,
                        sop_instance_uid,
                        dataset,
                        timeout=self.timeouts.dimse,
                    )
                    measured.final_status = rsp.status
                    return StoreOutcome(rsp.status, rsp.comment, converted)
            except NoAcceptableContext as exc:
                raise StoreRefused(
                    f"{self.config.aet} does not accept SOP class {sop_class_uid} "
                    f"in {transfer_syntax} or Explicit VR Little Endian"
                ) from exc

    async def close(self) -> None:
        await self.pool.close()


class PacsDirectory:
    """All configured PACS by name and AE title; the first one is the default.

    When a PACS retrieves by C-MOVE, the directory also runs the gateway's
    C-STORE SCP and the mediator that hands incoming sub-operations to the
    waiting requests (``start``/``close`` in the app's lifespan).
    """

    def __init__(self, settings: Settings, metrics: Registry | None = None) -> None:
        self.mediator: MoveMediator | None = None
        self.store_scp: StoreSCP | None = None
        if any(p.retrieve_method == "move" for p in settings.pacs):
            self.mediator = MoveMediator()
            self.store_scp = StoreSCP(
                settings.calling_aet,
                settings.store_scp_host,
                settings.store_scp_port,
                self.mediator.handle_store,
            )
        dimse_metrics = DimseMetrics(metrics) if metrics is not None else None
        self.clients = [
            PacsClient(p, settings, self.mediator, dimse_metrics) for p in settings.pacs
        ]
        if metrics is not None:
            metrics.callback(
                "dicomweb_pool_associations",
                "Associations to each PACS: open (idle plus in use) and in_use (lent to an "
                "operation), read when scraped.",
                ("pacs", "state"),
                self._pool_sizes,
            )

    def _pool_sizes(self) -> Iterator[Sample]:
        for client in self.clients:
            yield (client.name, "open"), float(client.pool.size)
            yield (client.name, "in_use"), float(client.pool.in_use)

    async def start(self) -> None:
        if self.store_scp is not None:
            await self.store_scp.start()

    def get(self, name: str | None = None) -> PacsClient | None:
        if not self.clients:
            return None
        if name is None:
            return self.clients[0]
        for client in self.clients:
            if name in (client.config.name, client.config.aet):
                return client
        return None

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        if self.store_scp is not None:
            await self.store_scp.close()
        if self.mediator is not None:
            self.mediator.close()
