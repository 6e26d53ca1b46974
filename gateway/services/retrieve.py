"""WADO-RS retrieve (PS3.18 10.4): instances from the cache, or by C-GET/C-MOVE from the PACS.

A series that was retrieved completely before is served from the disk cache
without touching the PACS.  Otherwise one C-GET runs per series however many
requests ask for it at once (single flight): each instance is written to the
cache as it arrives and handed to every waiting request.  Before a C-GET, one
IMAGE-level C-FIND tells whether the target exists (404 otherwise, also for an
instance that is not in the named series) and which SOP classes it holds, so
the C-GET proposes storage contexts for exactly those.

When the cache cannot take writes (disk full, read-only), requests are served
straight from the PACS, each on its own retrieve.

Observability: the Retriever is where "from the cache or from the PACS" is
decided, so it counts ``dicomweb_cache_hits_total`` / ``_misses_total`` (once
per request and target), and a retrieve that runs longer than
``progress_log_seconds`` logs a progress line at that interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import Dataset

from gateway.cache import CachedInstance, InstanceCache, StreamFlight
from gateway.dicom.encode import encode_dataset
from gateway.dicom.file_meta import file_meta
from gateway.dicom.identity import identity_of
from gateway.dimse.getscu import RetrievedInstance, SubOperations
from gateway.logging_setup import request_id
from gateway.metrics import Registry
from gateway.services.errors import NotFound
from gateway.services.pacs import PacsClient, match_json

log = logging.getLogger(__name__)

_IMPLICIT_LE = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"


@dataclass(frozen=True)
class Target:
    """What a WADO-RS request names: a study, a series or one instance."""

    study_uid: str
    series_uid: str | None = None
    sop_uid: str | None = None

    @property
    def level(self) -> str:
        return "IMAGE" if self.sop_uid else "SERIES" if self.series_uid else "STUDY"

    def describe(self) -> str:
        if self.sop_uid:
            return f"instance {self.sop_uid} of series {self.series_uid} of study {self.study_uid}"
        if self.series_uid:
            return f"series {self.series_uid} of study {self.study_uid}"
        return f"study {self.study_uid}"


@dataclass(eq=False)
class InstanceData:
    """One instance as a Part 10 file: on disk in the cache, or in memory.

    An instance just received from the PACS comes with ``chunks`` (File Meta,
    data set) so that the response can send it while the cache write runs,
    instead of waiting for the write and reading the file back. Once it is in
    the cache the retriever sets ``path`` and drops ``chunks``: a shared
    retrieve keeps its items for late subscribers, and they must not pin a
    whole series in memory (only the instance being written holds bytes).
    """

    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    path: Path | None = None
    part10: bytes | None = None
    chunks: tuple[bytes, ...] | None = None

    def read(self) -> bytes:
        if self.part10 is not None:
            return self.part10
        chunks = self.chunks
        if chunks is not None:
            return b"".join(chunks)
        assert self.path is not None
        return self.path.read_bytes()

    def cached_as(self, cached: CachedInstance) -> None:
        """The instance is now in the cache: read it from there, let the bytes go."""
        self.path = cached.path
        self.chunks = None

    @classmethod
    def from_cache(cls, cached: CachedInstance, sop_class_uid: str = "") -> InstanceData:
        return cls(
            cached.study_uid,
            cached.series_uid,
            sop_class_uid,
            cached.sop_uid,
            cached.transfer_syntax,
            path=cached.path,
        )


def _identifier(target: Target, level: str, extra: tuple[str, ...] = ()) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = target.study_uid
    if target.series_uid or level in ("SERIES", "IMAGE"):
        ds.SeriesInstanceUID = target.series_uid or ""
    if target.sop_uid or level == "IMAGE":
        ds.SOPInstanceUID = target.sop_uid or ""
    for keyword in extra:
        setattr(ds, keyword, "")
    return ds


def _encoder(ds: Dataset) -> Callable[[str], bytes]:
    def encode(transfer_syntax: str) -> bytes:
        return encode_dataset(ds, explicit_vr=transfer_syntax != _IMPLICIT_LE)

    return encode


async def instance_classes(pacs: PacsClient, target: Target) -> tuple[list[str], set[str] | None]:
    """(the target's SOP Instance UIDs, their SOP classes or None if the PACS does not say)."""
    ds = _identifier(target, "IMAGE", ("SOPClassUID",))
    sops: dict[str, None] = {}
    classes: set[str] = set()
    unknown = False
    async with contextlib.aclosing(pacs.find(_encoder(ds))) as matches:
        async for match in matches:
            item = match_json(pacs.config.aet, match)
            sop = (item.get("00080018", {}).get("Value") or [None])[0]
            if not sop or sop in sops:
                continue  # some SCPs repeat a match; a match without UID is useless
            sops[str(sop)] = None
            value = (item.get("00080016", {}).get("Value") or [None])[0]
            if value:
                classes.add(str(value))
            else:
                unknown = True
    return list(sops), None if unknown or not classes else classes


def _identity(instance: RetrievedInstance) -> tuple[str, str]:
    try:
        ident = identity_of(
            instance.dataset,
            explicit_vr=instance.transfer_syntax != _IMPLICIT_LE,
            little_endian=instance.transfer_syntax != _BIG_ENDIAN,
        )
    except ValueError:
        return "", ""
    return ident.study_instance_uid, ident.series_instance_uid


class RetrieveProgress:
    """Counts what a C-GET/C-MOVE delivered and, every ``every`` seconds while it
    runs, logs a line: instances received / expected, MB (10^6 bytes of data
    sets), MB/s. Expected comes from the sub-operation counts of the last
    C-GET/C-MOVE-RSP, else from the C-FIND that preceded the retrieve."""

    def __init__(self, pacs: str, target: Target, found: int, *, log_uids: bool = False) -> None:
        self.pacs = pacs
        self.target = target
        self.found = found
        self.log_uids = log_uids
        self.counts: SubOperations | None = None
        self.instances = 0
        self.bytes = 0
        self.started = time.monotonic()
        self.reported = False
        self._task: asyncio.Task[None] | None = None

    def watch(self, counts: SubOperations) -> None:
        self.counts = counts

    def received(self, size: int) -> None:
        self.instances += 1
        self.bytes += size

    @property
    def expected(self) -> int:
        c = self.counts
        total = 0 if c is None else c.completed + c.failed + c.warning + c.remaining
        return total or self.found

    def log(self, done: bool = False) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        mb = self.bytes / 1e6
        extra: dict[str, Any] = {
            "pacs": self.pacs,
            "retrieve_level": self.target.level,
            "received": self.instances,
            "expected": self.expected,
            "mbytes": round(mb, 3),
            "mbytes_per_s": round(mb / elapsed, 3),
            "seconds": round(elapsed, 3),
            "done": done,
        }
        # UIDs identify a patient's studies: named only with log_phi.
        what = f"{self.target.level.lower()}-level retrieve"
        if self.log_uids:
            what = f"retrieve of {self.target.describe()}"
            extra.update(
                study_uid=self.target.study_uid,
                series_uid=self.target.series_uid,
                sop_uid=self.target.sop_uid,
            )
        log.info(
            "%s from %s %s: %d/%d instances, %.1f MB, %.1f MB/s",
            what,
            self.pacs,
            f"done in {elapsed:.1f} s" if done else "running",
            self.instances,
            self.expected,
            mb,
            mb / elapsed,
            extra=extra,
        )

    async def _every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.reported = True
            self.log()

    def start(self, every: float) -> None:
        if every > 0:
            self._task = asyncio.get_running_loop().create_task(self._every(every))

    def stop(self, finished: bool) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if finished and self.reported:
            self.log(done=True)  # a long retrieve says when it ended


#: The target this request already counted as a cache hit (with the request id, in
#: case a server ran two requests in one context): a route that looks at ``cached``
#: and then streams ``instances`` is one hit, not two.
_counted_hit: ContextVar[tuple[str | None, Target] | None] = ContextVar(
    "retriever_counted_hit", default=None
)


class Retriever:
    """Instances for WADO-RS, through the cache; one per app (created in the lifespan)."""

    def __init__(
        self,
        cache: InstanceCache | None,
        *,
        metrics: Registry | None = None,
        progress_log_seconds: float = 0.0,
        log_uids: bool = False,
    ) -> None:
        self.cache = cache
        self.progress_log_seconds = progress_log_seconds
        self.log_uids = log_uids
        self._flights: StreamFlight[tuple[str, str, str], InstanceData] = StreamFlight()
        registry = metrics if metrics is not None else Registry()  # unread when not given
        self._hits = registry.counter(
            "dicomweb_cache_hits_total",
            "WADO requests (any resource that needs instances) answered from the cache.",
        )
        self._misses = registry.counter(
            "dicomweb_cache_misses_total",
            "WADO requests the cache could not answer whole, so the PACS was asked.",
        )
        if metrics is not None and cache is not None:
            metrics.callback(
                "dicomweb_cache_bytes",
                "Bytes the instance cache holds (its eviction estimate).",
                (),
                lambda: [((), float(cache.stats.bytes))],
            )
            metrics.callback(
                "dicomweb_cache_evictions_total",
                "Instances evicted from the cache (budget, or gone from the PACS).",
                (),
                lambda: [((), float(cache.stats.evictions))],
                kind="counter",
            )

    def _count_hit(self, target: Target) -> None:
        key = (request_id.get(), target)
        if _counted_hit.get() != key:
            _counted_hit.set(key)
            self._hits.inc()

    def _count_miss(self) -> None:
        if self.cache is not None:
            self._misses.inc()

    async def _from_pacs(
        self, pacs: PacsClient, target: Target, sops: list[str], classes: set[str] | None
    ) -> AsyncGenerator[InstanceData, None]:
        """C-GET the target, caching each instance; mark series complete at the end."""
        identifier = _identifier(target, target.level)
        by_series: dict[tuple[str, str], list[str]] = {}
        cache = self.cache
        progress = RetrieveProgress(pacs.name, target, len(sops), log_uids=self.log_uids)
        if pacs.config.retrieve_method == "move":
            source = pacs.move(
                _encoder(identifier),
                target.study_uid,
                target.series_uid,
                target.sop_uid,
                watch=progress.watch,
            )
        else:
            # Into the cache: acknowledge each instance at once (see getscu).
            eager = cache is not None and cache.writable
            source = pacs.get(_encoder(identifier), classes, eager_ack=eager, watch=progress.watch)
        progress.start(self.progress_log_seconds)
        finished = False
        try:
            async with contextlib.aclosing(source) as instances:
                async for instance in instances:
                    progress.received(len(instance.dataset))
                    data = self._received(target, instance, by_series)
                    # Handed on first, written after: the response sends these bytes
                    # while a worker thread writes the same bytes to the cache.
                    yield data
                    if cache is not None and cache.writable:
                        try:
                            await self._keep(cache, data)
                        except asyncio.CancelledError:
                            await self._cancelled(instances)
                            raise
            finished = True
        finally:
            progress.stop(finished)
        if cache is not None and target.level != "IMAGE":
            for (study, series), got in by_series.items():
                expected = {s for s in sops} if target.level == "SERIES" else set(got)
                if expected <= set(got):
                    await cache.mark_series_complete(study, series, got)

    @staticmethod
    async def _cancelled(source: AsyncGenerator[RetrievedInstance, None]) -> None:
        """Cancelled (the last client hung up) while writing an instance, between two
        sub-operations: stop the retrieve as a cancelled one (C-CANCEL and abort at
        once, as when the cancel arrives while waiting for the PACS), not as an early
        close that drains what the PACS still sends."""
        with contextlib.suppress(BaseException):
            await source.athrow(asyncio.CancelledError())

    @staticmethod
    def _received(
        target: Target,
        instance: RetrievedInstance,
        by_series: dict[tuple[str, str], list[str]],
    ) -> InstanceData:
        """One retrieved instance, in memory (File Meta and data set, not joined)."""
        study, series = _identity(instance)
        study = study or target.study_uid
        series = series or target.series_uid or ""
        meta = file_meta(
            instance.sop_class_uid, instance.sop_instance_uid, instance.transfer_syntax
        )
        by_series.setdefault((study, series), []).append(instance.sop_instance_uid)
        return InstanceData(
            study,
            series,
            instance.sop_class_uid,
            instance.sop_instance_uid,
            instance.transfer_syntax,
            chunks=(meta, instance.dataset),
        )

    @staticmethod
    async def _keep(cache: InstanceCache, data: InstanceData) -> None:
        """Write a whole received instance to the cache; on success ``data`` names the
        file and drops its bytes (on failure it keeps them: the cache said why)."""
        chunks = data.chunks
        assert chunks is not None
        async with cache.open_writer(
            data.study_uid, data.series_uid, data.sop_instance_uid, data.transfer_syntax
        ) as writer:
            cached = await writer.write_and_commit(*chunks)
        if cached is not None:
            data.cached_as(cached)

    async def collect(self, pacs: PacsClient, target: Target) -> list[InstanceData]:
        """All of the target's instances (for metadata, frames, rendering: the files
        are on disk or small, so a list is fine where a stream is not needed)."""
        async with contextlib.aclosing(self.instances(pacs, target)) as items:
            return [item async for item in items]

    async def cached(self, target: Target) -> list[InstanceData] | None:
        """The whole target from the cache, or None (then use ``instances``)."""
        found = await self._lookup(target)
        if found is not None:
            self._count_hit(target)
        return found

    async def _lookup(self, target: Target) -> list[InstanceData] | None:
        async with contextlib.aclosing(self._cached(target)) as items:
            found = [item async for item in items]
        return found or None

    async def _cached(self, target: Target) -> AsyncGenerator[InstanceData, None]:
        """The target from the cache when the cache can answer it whole, else nothing."""
        cache = self.cache
        if cache is None:
            return
        if target.level == "SERIES":
            assert target.series_uid is not None
            async with cache.reading_series(target.study_uid, target.series_uid) as series:
                for entry in series or ():
                    yield InstanceData.from_cache(entry)
        elif target.level == "IMAGE":
            assert target.sop_uid is not None
            async with cache.reading(target.sop_uid) as hit:
                if (
                    hit is not None
                    and hit.series_uid == target.series_uid
                    and hit.study_uid == target.study_uid
                ):
                    yield InstanceData.from_cache(hit)

    async def instances(
        self, pacs: PacsClient, target: Target
    ) -> AsyncGenerator[InstanceData, None]:
        """The target's instances; NotFound if there are none."""
        cache = self.cache
        hit = await self._lookup(target)
        if hit is None:
            sops, classes = await instance_classes(pacs, target)
            if not sops:
                self._count_miss()
                raise NotFound(f"no {target.describe()} in the PACS")
            # Another request may have completed the same retrieve during our C-FIND.
            hit = await self._lookup(target)
        if hit is not None:
            self._count_hit(target)
            for entry in hit:
                yield entry
            return
        self._count_miss()

        def produce() -> AsyncGenerator[InstanceData, None]:
            return self._from_pacs(pacs, target, sops, classes)

        delivered = 0
        if cache is None or not cache.writable:
            async with contextlib.aclosing(produce()) as direct:
                async for item in direct:
                    delivered += 1
                    yield item
        else:
            key = (pacs.name, target.study_uid, target.series_uid or target.sop_uid or "")
            pin = (
                cache.pin_series(target.study_uid, target.series_uid)
                if target.series_uid
                else contextlib.nullcontext()
            )
            async with pin, self._flights.subscribe(key, produce) as shared:
                async for item in shared:
                    delivered += 1
                    yield item
        if delivered == 0:
            raise NotFound(f"the PACS sent no instance of {target.describe()}")
