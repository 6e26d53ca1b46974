"""WADO-RS retrieve (PS3.18 10.4): instances from the cache, or by C-GET/C-MOVE from the PACS.

A series that was retrieved completely before is served from the disk cache
without touching the PACS.  Otherwise one C-GET runs per series however many
requests ask for it at once (single flight): each instance is written to the
cache as it arrives and handed to every waiting request.  Before a C-GET, an
IMAGE-level C-FIND tells whether the target exists (404 otherwise, also for an
instance that is not in the named series), and the C-GET proposes storage
contexts for the SOP classes it holds: the study's SOPClassesInStudy from a
STUDY-level C-FIND where the PACS answers it (cheap on Orthanc), else each
instance's SOPClassUID from the IMAGE-level one (``ClassFinder``).

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
from functools import partial
from pathlib import Path
from typing import Any

from pydicom import Dataset

from gateway.cache import CachedInstance, InstanceCache, StreamFlight
from gateway.dicom.encode import encode_dataset
from gateway.dicom.file_meta import file_meta
from gateway.dicom.identity import identity_of
from gateway.dimse.errors import AssociationAborted, StatusError
from gateway.dimse.getscu import RetrievedInstance, SubOperations, proposes_every_syntax
from gateway.logging_setup import request_id
from gateway.metrics import Registry
from gateway.services.errors import GatewayError, NotFound, PacsBusy, PacsFailed
from gateway.services.pacs import PacsClient, match_json
from gateway.services.qido_query import is_uid

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
    Not so when a cache write fails (the disk filled up during the retrieve):
    that instance keeps its bytes for as long as the flight lasts, as the
    in-memory ``part10`` did before; a disk that stays full makes the next
    retrieves go straight to the PACS, unshared (see ``instances``).
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


def _now_cached(data: InstanceData, written: asyncio.Future[CachedInstance | None]) -> None:
    cached = written.result()
    if cached is not None:
        data.cached_as(cached)


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


async def _image_find(
    pacs: PacsClient, target: Target, *, with_classes: bool
) -> tuple[list[str], set[str] | None]:
    ds = _identifier(target, "IMAGE", ("SOPClassUID",) if with_classes else ())
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


async def instance_uids(pacs: PacsClient, target: Target) -> list[str]:
    """The target's SOP Instance UIDs: without SOPClassUID, which Orthanc reads from
    every instance's file (about twice the time of the query without it)."""
    sops, _classes = await _image_find(pacs, target, with_classes=False)
    return sops


async def instance_classes(pacs: PacsClient, target: Target) -> tuple[list[str], set[str] | None]:
    """(the target's SOP Instance UIDs, their SOP classes or None if the PACS does not say)."""
    return await _image_find(pacs, target, with_classes=True)


@dataclass(frozen=True)
class Found:
    """What the C-FINDs before a retrieve learned: the target's instances and the SOP
    classes to negotiate (None: the PACS did not say, propose the common ones).

    ``sops`` is None when the instances were not asked before the retrieve: for a
    study or a series whose classes are known without them, the IMAGE-level
    C-FIND runs beside the retrieve (``_Listing``) instead of in front of it.
    """

    sops: list[str] | None
    classes: set[str] | None
    #: ``classes`` is the study's SOPClassesInStudy, not read from each instance:
    #: the C-GET may meet an instance of a class it left out (see ``_from_pacs``).
    study_level: bool = False


class ClassFinder:
    """Which instances a retrieve will get and which SOP classes its C-GET proposes.

    The per-instance SOPClassUID is expensive on Orthanc (it reads every file: 164
    against 76 ms for 100 instances, 5.5 s before the first byte of a 4,000-instance
    study), while a STUDY-level SOPClassesInStudy is cheap.  So for a study or a
    series the STUDY level is asked first and, if it names classes, the IMAGE level
    is asked for the UIDs only.  PACS that leave SOPClassesInStudy empty (dcmqrscp,
    pynetdicom's qrscp) or refuse it are remembered and not asked again for an
    hour: each retrieve from them would pay a useless round trip.  One that has answered once is
    asked every time (an odd study then falls back on its own).  The study-level
    query must not fail a retrieve the per-instance query would have served: a
    failure status, an abort or a garbled answer falls back to the per-instance
    query, logged at DEBUG (a PACS that cannot be reached, is busy or times out
    fails the request as before).  A single instance is asked at the IMAGE level
    directly (one file is cheap to read; two queries are not), and a C-MOVE needs
    no classes at all.

    The UIDs-only query of a study or a series is left to the retrieve, which runs
    it alongside (``_Listing``): on Orthanc it takes 15-25 ms for 100 instances
    before the first answer, time the C-GET or C-MOVE can use.
    """

    #: A PACS found not to answer is asked again after this long: it may have been
    #: upgraded, or one stale answer made us distrust a PACS that usually answers.
    RETRY_SECONDS = 3600.0

    def __init__(self) -> None:
        #: PACS name -> whether it answers SOPClassesInStudy (absent: not known yet).
        self._answers: dict[str, bool] = {}
        self._since: dict[str, float] = {}

    def _asks(self, pacs: PacsClient) -> bool:
        if self._answers.get(pacs.name, True):
            return True
        if time.monotonic() - self._since.get(pacs.name, 0.0) >= self.RETRY_SECONDS:
            del self._answers[pacs.name]
            return True
        return False

    async def find(self, pacs: PacsClient, target: Target) -> Found:
        """The classes to propose; the instances too unless they can be asked beside
        the retrieve (a study or a series: a single instance must be confirmed in
        its series first, the retrieve would not check that)."""
        listed_later = target.level != "IMAGE"
        if pacs.config.retrieve_method == "move":
            return Found(None if listed_later else await instance_uids(pacs, target), None)
        if listed_later and self._asks(pacs):
            classes = await self._study_classes(pacs, target.study_uid)
            if classes is not None:
                return Found(None, classes, study_level=True)
        sops, classes = await instance_classes(pacs, target)
        return Found(sops, classes)

    def distrust(self, pacs: PacsClient) -> None:
        """The PACS's SOPClassesInStudy missed a class: use the per-instance classes
        from now on rather than risk another C-GET that has to be repeated."""
        self._answers[pacs.name] = False
        self._since[pacs.name] = time.monotonic()

    def _remember(self, pacs: PacsClient, answered: bool) -> None:
        if answered:
            self._answers[pacs.name] = True
        elif pacs.name not in self._answers:
            self._answers[pacs.name] = False
            self._since[pacs.name] = time.monotonic()

    async def _study_classes(self, pacs: PacsClient, study_uid: str) -> set[str] | None:
        """SOPClassesInStudy, or None to fall back to the per-instance classes."""
        ds = _identifier(Target(study_uid), "STUDY", ("SOPClassesInStudy",))
        try:
            async with contextlib.aclosing(pacs.find(_encoder(ds))) as stream:
                matches = [match async for match in stream]
        except PacsFailed as exc:
            # A failure status (A900, C000 ...) is the PACS's answer to the key; an
            # abort may be one too, or a glitch (not remembered). Unreachable, busy
            # or timed out would fail the IMAGE-level query as well: those propagate,
            # as they did before (and a swallowed connect failure would turn into
            # the pool's back-off, a 503 instead of the 502 it is).
            if isinstance(exc.__cause__, StatusError):
                self._remember(pacs, False)
            elif not isinstance(exc.__cause__, AssociationAborted):
                raise
            log.debug("SOPClassesInStudy from %s: %s; per-instance classes", pacs.name, exc)
            return None
        if not matches:
            return None  # no such study: the IMAGE level will say so
        classes: set[str] = set()
        try:
            for match in matches:
                value = match_json(pacs.config.aet, match).get("00080062", {}).get("Value")
                for uid in value or ():
                    if not isinstance(uid, str) or not is_uid(uid):
                        raise PacsFailed(f"PACS {pacs.name}: SOPClassesInStudy {uid!r}")
                    classes.add(uid)
        except PacsFailed as exc:
            log.debug("SOPClassesInStudy unusable: %s; per-instance classes", exc)
            classes = set()
        self._remember(pacs, bool(classes))
        if not classes:
            return None
        if not proposes_every_syntax(classes):
            # So many classes that each would get fewer stored syntaxes (the PACS
            # then transcodes): the per-instance classes may be fewer.
            log.debug("SOPClassesInStudy from %s: %d classes", pacs.name, len(classes))
            return None
        return classes


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


class _Listing:
    """The target's SOP Instance UIDs, for the completeness check at the end of a
    retrieve: given by the C-FIND in front of it, or asked by one that runs beside
    it. Beside it, two things the C-FIND in front used to settle are checked
    otherwise: a target the PACS does not have (the retrieve brings nothing or
    fails, and the listing is empty: 404) and UIDs that do not belong together (a
    series asked under another study: ``_belongs`` on every instance received)."""

    def __init__(self, pacs: PacsClient, target: Target, sops: list[str] | None) -> None:
        self._pacs = pacs
        self._target = target
        self._sops = sops
        self._task: asyncio.Task[list[str]] | None = None
        if sops is None:
            self._task = asyncio.get_running_loop().create_task(instance_uids(pacs, target))

    @property
    def alongside(self) -> bool:
        return self._task is not None

    @property
    def known(self) -> int:
        """How many instances the C-FIND listed so far (0 while it runs)."""
        return len(self._sops) if self._sops is not None else 0

    async def sops(self) -> list[str]:
        """The UIDs; raises what the C-FIND raised."""
        if self._sops is None:
            assert self._task is not None
            self._sops = await self._task
        return self._sops

    async def sops_after_retrieve(self) -> list[str]:
        """``sops()``, asked once more if the C-FIND found the pool busy: with as
        many associations as retrieves (one, say) it waited for the retrieve's and
        gave up; now that the retrieve is over it gets one."""
        try:
            return await self.sops()
        except PacsBusy:
            self._sops = await instance_uids(self._pacs, self._target)
            return self._sops

    async def empty(self) -> bool:
        """Whether the PACS listed no instance (False if the C-FIND failed)."""
        try:
            return not await self.sops()
        except GatewayError:
            return False

    async def close(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # retrieved: a failure nobody asked for is not an error


def _belongs(target: Target, study: str, series: str) -> bool:
    """An instance the PACS sent is of the target (its UIDs, where it names them)."""
    if study and study != target.study_uid:
        return False
    return not (target.series_uid and series and series != target.series_uid)


class RetrieveProgress:
    """Counts what a C-GET/C-MOVE delivered and, every ``every`` seconds while it
    runs, logs a line: instances received / expected, MB (10^6 bytes of data
    sets), MB/s. Expected comes from the sub-operation counts of the last
    C-GET/C-MOVE-RSP, else from the C-FIND when it preceded the retrieve (0 when
    it runs beside)."""

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
        self._finder = ClassFinder()
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
        self, pacs: PacsClient, target: Target, found: Found
    ) -> AsyncGenerator[InstanceData, None]:
        """C-GET the target, caching each instance; mark series complete at the end.

        When the C-GET proposed the study's SOPClassesInStudy and sub-operations
        failed, that list may have left a class out (a stale or partial answer): the
        PACS cannot send an instance whose class has no context, and the client would
        get fewer instances with a 200, as if that were all. Then the instances' own
        classes are asked and, if they name one the C-GET left out, the target is
        fetched once more with them, skipping what already arrived. The whole target
        rather than the missing instances: it is one more C-GET of the same kind
        (single flight, progress, cancellation unchanged) instead of a new one per
        instance, and it happens at most once per PACS, which is not trusted with
        SOPClassesInStudy afterwards.
        """
        by_series: dict[tuple[str, str], list[str]] = {}
        received: set[str] = set()
        listing = _Listing(pacs, target, found.sops)
        progress = RetrieveProgress(pacs.name, target, listing.known, log_uids=self.log_uids)
        progress.start(self.progress_log_seconds)
        finished = complete = False
        try:
            failure: PacsFailed | PacsBusy | None = None
            # Each C-GET closed with this generator (aclosing): a client that hangs up
            # cancels it here and now, not later from a garbage collector's hook.
            fetch = self._fetch(pacs, target, found.classes, progress, by_series, received, listing)
            try:
                async with contextlib.aclosing(fetch) as first:
                    async for data in first:
                        yield data
            except (PacsFailed, PacsBusy) as exc:
                if not received and listing.alongside and await listing.empty():
                    # What the C-FIND in front would have said: no such target.
                    raise NotFound(f"no {target.describe()} in the PACS") from exc
                # Every sub-operation failing may end the C-GET with a failure status:
                # C000, or A702 (out of resources: unable to perform sub-operations,
                # what pynetdicom answers when all failed), which maps to a 503.
                if not found.study_level or exc.dimse_status is None:
                    raise
                failure = exc
            classes = await self._missed_classes(pacs, target, found, listing, progress, received)
            if classes is not None:
                fetch = self._fetch(pacs, target, classes, progress, by_series, received, listing)
                async with contextlib.aclosing(fetch) as again:
                    async for data in again:
                        yield data
            elif failure is not None:
                raise failure
            finished = True
            if self.cache is not None and target.level != "IMAGE" and by_series:
                complete = await self._complete(pacs, listing, received)
        finally:
            progress.stop(finished)
            await listing.close()
        if self.cache is None:
            return
        # What the retrieve kept is in the index before it ends, so that what follows
        # (derived data of the instance, the next request) finds it.
        await self.cache.settled()
        # A series is complete only if nothing of the target is missing: marking it
        # also evicts cached instances the retrieve did not return.
        if complete:
            for (study, series), got in by_series.items():
                await self.cache.mark_series_complete(study, series, got)

    @staticmethod
    async def _complete(pacs: PacsClient, listing: _Listing, received: set[str]) -> bool:
        """Whether the retrieve brought every instance the C-FIND listed; a listing
        that failed beside a retrieve that worked leaves the series unmarked (the
        response is whole, the next request retrieves again)."""
        try:
            sops = await listing.sops_after_retrieve()
        except GatewayError as exc:
            log.warning(
                "instance list from %s failed (%s): series not marked complete in the cache",
                pacs.name,
                exc,
            )
            return False
        return set(sops) <= received

    async def _fetch(
        self,
        pacs: PacsClient,
        target: Target,
        classes: set[str] | None,
        progress: RetrieveProgress,
        by_series: dict[tuple[str, str], list[str]],
        received: set[str],
        listing: _Listing,
    ) -> AsyncGenerator[InstanceData, None]:
        """One C-GET (or C-MOVE) of the target; instances in ``received`` are skipped."""
        identifier = _encoder(_identifier(target, target.level))
        cache = self.cache
        if pacs.config.retrieve_method == "move":
            source = pacs.move(
                identifier,
                target.study_uid,
                target.series_uid,
                target.sop_uid,
                watch=progress.watch,
            )
        else:
            # Into the cache: acknowledge each instance at once (see getscu).
            eager = cache is not None and cache.writable
            source = pacs.get(identifier, classes, eager_ack=eager, watch=progress.watch)
        async with contextlib.aclosing(source) as instances:
            async for instance in instances:
                uid = instance.sop_instance_uid
                if uid and uid in received:
                    continue  # a repeated C-GET sends again what came the first time
                study, series = _identity(instance)
                if listing.alongside and not _belongs(target, study, series):
                    # The PACS went by the lowest level's UID alone (a series asked
                    # under another study): the C-FIND in front would have said 404.
                    await self._cancelled(instances)
                    raise NotFound(f"no {target.describe()} in the PACS")
                received.add(uid)
                progress.received(len(instance.dataset))
                data = self._received(target, instance, study, series, by_series)
                # Handed on first, queued after: the response sends these bytes
                # while the cache's writer thread writes the same bytes to disk.
                yield data
                if cache is not None and cache.writable:
                    try:
                        await self._keep(cache, data)
                    except asyncio.CancelledError:
                        await self._cancelled(instances)
                        raise

    async def _missed_classes(
        self,
        pacs: PacsClient,
        target: Target,
        found: Found,
        listing: _Listing,
        progress: RetrieveProgress,
        received: set[str],
    ) -> set[str] | None:
        """The instances' own classes if the study-level ones proved incomplete, else None."""
        counts = progress.counts
        if not found.study_level or counts is None or not counts.failed:
            return None
        try:
            if set(await listing.sops_after_retrieve()) <= received:
                return None
        except GatewayError as exc:  # the query below lists the UIDs as well
            log.debug("instance list from %s failed (%s); asking the classes", pacs.name, exc)
        _sops, classes = await instance_classes(pacs, target)
        missed = (classes or set()) - (found.classes or set())
        if not missed:
            return None  # the sub-operations failed for another reason
        self._finder.distrust(pacs)
        log.warning(
            "SOPClassesInStudy from %s left out %d SOP class(es) of the instances: "
            "C-GET again with the instances' classes",
            pacs.name,
            len(missed),
            extra={"pacs": pacs.name, "missed_classes": sorted(missed)},
        )
        return classes

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
        study: str,
        series: str,
        by_series: dict[tuple[str, str], list[str]],
    ) -> InstanceData:
        """One retrieved instance, in memory (File Meta and data set, not joined);
        ``study``/``series`` are its own UIDs (empty where it names none)."""
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
        """Queue a whole received instance for the cache; once it is written, ``data``
        names the file and drops its bytes (if the write fails it keeps them: the
        cache said why)."""
        chunks = data.chunks
        assert chunks is not None
        written = await cache.keep(
            data.study_uid, data.series_uid, data.sop_instance_uid, data.transfer_syntax, chunks
        )
        written.add_done_callback(partial(_now_cached, data))

    async def collect(self, pacs: PacsClient, target: Target) -> list[InstanceData]:
        """All of the target's instances (for metadata, frames, rendering: the files
        are on disk or small, so a list is fine where a stream is not needed)."""
        async with contextlib.aclosing(self.instances(pacs, target)) as items:
            return [item async for item in items]

    async def cached(self, target: Target, *, count: bool = True) -> list[InstanceData] | None:
        """The whole target from the cache, or None (then use ``instances``).

        ``count=False``: a look that answers no WADO request (a QIDO search reading
        headers), so it is not a cache hit in the metrics."""
        found = await self._lookup(target)
        if found is not None and count:
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
            found = await self._finder.find(pacs, target)
            if found.sops is not None:
                if not found.sops:
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
            return self._from_pacs(pacs, target, found)

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
