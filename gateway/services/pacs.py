"""The services' handle on one PACS: its association pool and DIMSE errors as service errors.

Routes never see a ``DimseError``: every DIMSE failure leaves this module as a
``GatewayError`` with the HTTP status the checklist asks for (ERR-02, ERR-03):
unreachable, refused or aborted -> 502; refused for now, backing off or every
pooled association busy -> 503;
timeout -> 504; C-FIND A700 (out of resources) -> 503, other failures -> 502.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian

from gateway.config import PacsConfig, Settings
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
from gateway.dimse.getscu import GetOperation, RetrievedInstance, retrieve_profile
from gateway.dimse.move_mediator import MoveMediator
from gateway.dimse.movescu import RETRIEVE_BY_MOVE, MoveOperation
from gateway.dimse.pool import AssociationPool, PoolSettings
from gateway.dimse.requestor import Association, Peer, Timeouts
from gateway.dimse.storescp import StoreSCP
from gateway.dimse.storescu import c_store, store_profile
from gateway.services.errors import GatewayError, PacsBusy, PacsFailed, PacsTimeout


def translate(exc: DimseError, pacs: str, retry_after: float) -> GatewayError:
    """The service error (and so the HTTP status) for a DIMSE failure."""
    if isinstance(exc, DimseTimeout):
        return PacsTimeout(f"PACS {pacs}: {exc}")
    if isinstance(exc, StatusError):
        if 0xA700 <= exc.status <= 0xA7FF:
            return PacsBusy(f"PACS {pacs}: {exc}", retry_after=retry_after)
        return PacsFailed(f"PACS {pacs}: {exc}", status=exc.status)
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


class StoreRefused(Exception):
    """The PACS does not take this SOP class in any syntax we can send (0x0122)."""


@dataclass(frozen=True)
class StoreOutcome:
    status: int
    comment: str
    converted: bool


class PacsClient:
    """One configured PACS, reached over pooled associations."""

    def __init__(
        self, config: PacsConfig, settings: Settings, mediator: MoveMediator | None = None
    ) -> None:
        self.config = config
        self.mediator = mediator
        self.settings = settings
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

    async def echo(self) -> float:
        """C-ECHO on a pooled association; returns the round trip in seconds."""
        with self._errors():
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
        with self._errors():
            async with (
                self.pool.acquire(contexts.QUERY) as assoc,
                FindOperation(assoc, sop_class, identifier, timeout=self.timeouts.dimse) as op,
            ):
                async for match in op:
                    yield match

    def get(
        self,
        identifier: Callable[[str], bytes],
        sop_classes: Iterable[str] | None,
        *,
        eager_ack: bool = False,
    ) -> AsyncGenerator[RetrievedInstance, None]:
        """Stream a C-GET's instances; closing the iterator early cancels the retrieve."""

        def operation(assoc: Association) -> GetOperation:
            return GetOperation(assoc, identifier, timeout=self.timeouts.dimse, eager_ack=eager_ack)

        return self._retrieve("C-GET", retrieve_profile(sop_classes), operation)

    def move(
        self,
        identifier: Callable[[str], bytes],
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> AsyncGenerator[RetrievedInstance, None]:
        """Stream a C-MOVE to our own C-STORE SCP; closing early cancels it."""
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

        return self._retrieve("C-MOVE", RETRIEVE_BY_MOVE, operation)

    async def _retrieve(
        self,
        name: str,
        profile: ContextProfile,
        operation: Callable[[Association], GetOperation | MoveOperation],
    ) -> AsyncGenerator[RetrievedInstance, None]:
        with self._errors():
            async with self.pool.acquire(profile) as assoc, operation(assoc) as op:
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
        with self._errors():
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

    def __init__(self, settings: Settings) -> None:
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
        self.clients = [PacsClient(p, settings, self.mediator) for p in settings.pacs]

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
