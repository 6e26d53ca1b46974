"""The instance cache (DESIGN.md section 5): instances retrieved from the PACS, on
disk, within a byte budget, least recently read evicted first.

What a caller can rely on:

- A lookup that returns an instance returns a whole file: writes are atomic
  (``keep`` through the ``WriteQueue``, ``open_writer`` and derived data through
  ``AtomicWriter``) and the index only names renamed, finished files.
- A series is *complete* only after ``mark_series_complete``, called when a
  whole-series retrieve finished; only then does ``series_instances`` answer,
  so that a series request can skip the PACS. Losing any instance of the series
  (eviction, a file deleted behind our back) clears the flag.
- Nothing a lease covers is evicted: ``reading(sop)`` for one instance,
  ``pin_series``/``reading_series`` for a series. Leases are per process; on
  POSIX a file already open stays readable after another replica unlinks it.
- The cache never fails a request. A directory that cannot be opened turns the
  cache off (one warning); a disk that fills up or turns read-only makes writers
  no-ops (one warning, ``StorageHealth``) while reads of what is there go on; a
  corrupt index is replaced by an empty one (one warning). Callers then see
  misses and go to the PACS.
- It is a cache: ``wipe()`` (or deleting the directory while stopped) loses
  nothing that cannot be fetched again.

Threads: every index query and every rename/unlink of a final file runs on one
dedicated thread (see ``worker.py`` for why). Instances a retrieve keeps are
written by the write queue's one thread (``write_queue.py``: why one thread and
batches); streamed writes and derived data in ``asyncio.to_thread`` workers.
Everything else here, leases and counters included, lives on the event loop and
needs no lock.

Eviction is by whole series, least recently read first: a series with a hole
is no use to a series request, and the series is what viewers ask for. It runs
in the background when a commit takes the cache over budget, one series per
index job so that lookups interleave, and it may overshoot by up to one series.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar

from gateway.cache.health import StorageHealth
from gateway.cache.index import SeriesKey
from gateway.cache.layout import CacheLayout, check_derived_key
from gateway.cache.records import CachedInstance, CachedSeries, CacheStats
from gateway.cache.sweep import empty_trash, remove_stale_temps
from gateway.cache.worker import IndexWorker, Published, WrittenInstance, is_corruption
from gateway.cache.write_queue import QueuedWrite, WriteQueue
from gateway.cache.writer import AtomicWriter, Chunk

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
H = TypeVar("H", bound=Hashable)

InstanceWriter = AtomicWriter[CachedInstance]

STALE_TEMP_SECONDS = 3600.0
"""Temporary files older than this at start-up are leftovers of a crash."""

_StoreState = Literal["new", "open", "off", "closed"]
_FAILURES = (OSError, sqlite3.Error)


class InstanceCache:
    """See the module docstring. Create it, ``await open()`` in the app's lifespan,
    ``await close()`` at the end (or use ``async with``)."""

    def __init__(
        self,
        root: Path,
        budget_bytes: int,
        *,
        fsync: bool = False,
        write_retry_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``fsync`` makes each commit durable across a power cut (slower); without it
        a file a crash truncated is noticed by its size and dropped. ``clock`` gives
        the last-access times (wall clock, since they outlive the process)."""
        if budget_bytes <= 0:
            raise ValueError("budget_bytes must be positive")
        self.root = Path(root)
        self.budget_bytes = budget_bytes
        self._layout = CacheLayout(self.root)
        self._worker = IndexWorker(self._layout)
        self._fsync = fsync
        self._clock = clock
        self._health = StorageHealth(self.root, write_retry_seconds)
        self._state: _StoreState = "new"
        self._executor: ThreadPoolExecutor | None = None
        self._writes: WriteQueue | None = None
        self._leases: Counter[str] = Counter()
        self._pins: Counter[SeriesKey] = Counter()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._eviction: asyncio.Task[int] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifespan ----------------------------------------------------------------

    async def open(self) -> None:
        """Open or create the cache; never raises for a bad directory (the cache is
        then off and says so once)."""
        if self._state != "new":
            raise RuntimeError(f"cache already {self._state}")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="instance-cache-index")
        try:
            await self._call(self._worker.open)
            self._bytes = await self._call(self._worker.total_bytes)
        except _FAILURES as exc:
            log.warning(
                "instance cache off: %s is unusable (%s); serving straight from the PACS",
                self.root,
                exc,
            )
            self._state = "off"
            return
        self._state = "open"
        self._writes = WriteQueue(
            self._publish_batch, self._published, self._write_failed, fsync=self._fsync
        )
        self._spawn(self.housekeeping())
        self._check_budget()

    async def close(self) -> None:
        """Stop background work and close the index. Writers still open afterwards
        commit nothing."""
        if self._state == "closed":
            return
        self._state = "closed"
        tasks = [*self._background, *([self._eviction] if self._eviction else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._writes is not None:
            await self._writes.close()
        if self._executor is not None:
            try:
                await self._call(self._worker.close)
            except _FAILURES as exc:
                log.debug("closing the cache index: %s", exc)
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> InstanceCache:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def enabled(self) -> bool:
        """Open and usable (False before ``open``, after ``close``, or when off)."""
        return self._state == "open"

    @property
    def writable(self) -> bool:
        """Whether writes currently reach the disk. Callers that share a retrieve by
        passing cached paths around (``StreamFlight``) should stream straight from
        the PACS instead when this is False."""
        return self.enabled and not self._health.failing

    @property
    def stats(self) -> CacheStats:
        return CacheStats(
            hits=self._hits,
            misses=self._misses,
            bytes=self._bytes,
            budget_bytes=self.budget_bytes,
            evictions=self._evictions,
            write_failures=self._health.failures,
        )

    # -- reads -------------------------------------------------------------------

    async def lookup(self, sop_uid: str) -> CachedInstance | None:
        """The cached instance, or None; counts as a read for LRU. Without a lease
        the file may be evicted before it is opened: prefer ``reading``."""
        instance = await self._read(self._worker.lookup, sop_uid, self._clock())
        self._count(instance is not None)
        return instance

    async def get_path(self, sop_uid: str) -> Path | None:
        """Shorthand for ``lookup(sop_uid).path``."""
        instance = await self.lookup(sop_uid)
        return None if instance is None else instance.path

    @asynccontextmanager
    async def reading(self, sop_uid: str) -> AsyncIterator[CachedInstance | None]:
        """``async with cache.reading(sop) as instance:`` the instance (or None on a
        miss) cannot be evicted until the block ends."""
        async with self._lease(self._leases, sop_uid):
            yield await self.lookup(sop_uid)

    async def series_instances(
        self, study_uid: str, series_uid: str
    ) -> list[CachedInstance] | None:
        """All instances of a complete series, in the order they were retrieved; None
        unless a whole-series retrieve completed (then the PACS must be asked)."""
        instances = await self._read(self._worker.series, study_uid, series_uid, self._clock())
        self._count(instances is not None)
        return instances

    def pin_series(self, study_uid: str, series_uid: str) -> AbstractAsyncContextManager[None]:
        """``async with cache.pin_series(study, series):`` no instance of the series is
        evicted meanwhile, including ones cached during the block (e.g. by a shared
        retrieve whose followers are still replaying)."""
        return self._lease(self._pins, (study_uid, series_uid))

    @asynccontextmanager
    async def reading_series(
        self, study_uid: str, series_uid: str
    ) -> AsyncIterator[list[CachedInstance] | None]:
        """``series_instances`` under a pin, for streaming a cached series."""
        async with self.pin_series(study_uid, series_uid):
            yield await self.series_instances(study_uid, series_uid)

    async def study_series(self, study_uid: str) -> list[CachedSeries]:
        """What the cache holds of each series of a study (complete or not)."""
        return await self._read(self._worker.study_series, study_uid) or []

    async def get_derived(self, sop_uid: str, key: str) -> bytes | None:
        """Derived data stored with ``put_derived``; None if absent or the instance
        is gone. Counts as a read of the instance."""
        check_derived_key(key)
        return await self._read(self._worker.get_derived, sop_uid, key, self._clock())

    # -- writes ------------------------------------------------------------------

    def open_writer(
        self, study_uid: str, series_uid: str, sop_uid: str, transfer_syntax: str
    ) -> InstanceWriter:
        """A writer for one instance that arrives in pieces (a whole one: ``keep``)::

            async with cache.open_writer(study, series, sop, ts) as writer:
                async for chunk in fragments:
                    await writer.write(chunk)   # and send it to the client
                instance = await writer.commit()

        Replacing a cached instance drops its derived data. When the cache is off or
        not taking writes, the writer is a no-op and ``commit`` returns None.
        """
        publish = partial(self._publish_instance, study_uid, series_uid, sop_uid, transfer_syntax)
        return AtomicWriter(
            self._layout.instance_path(sop_uid),
            publish,
            self._health,
            enabled=self.enabled and self._health.writable(),
            fsync=self._fsync,
        )

    async def keep(
        self,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        transfer_syntax: str,
        chunks: tuple[Chunk, ...],
    ) -> asyncio.Future[CachedInstance | None]:
        """Queue a whole instance (its File Meta and data set, say) for the cache.

        Returns at once, unless the write queue holds too many bytes
        (``write_queue``), with a future of what the cache recorded: None when the
        cache is off, not taking writes, closing, or the write failed (reported
        once). The chunks must not change until the future is done. Replacing a
        cached instance drops its derived data.
        """
        future: asyncio.Future[CachedInstance | None] = asyncio.get_running_loop().create_future()
        writes = self._writes
        if writes is None or not self.enabled or not self._health.writable():
            future.set_result(None)
            return future
        size = sum(len(chunk) for chunk in chunks)
        row = (study_uid, series_uid, sop_uid, transfer_syntax, size, self._clock())
        final = self._layout.instance_path(sop_uid)
        await writes.put(QueuedWrite(final, row, chunks, future))
        return future

    async def settled(self) -> None:
        """Return once every instance ``keep`` queued before this call is in the index
        (or failed)."""
        if self._writes is not None:
            await self._writes.settled()

    async def mark_series_complete(
        self, study_uid: str, series_uid: str, sop_uids: Iterable[str]
    ) -> bool:
        """Record that a whole-series retrieve returned exactly ``sop_uids``; True if
        all of them are cached and the series is now complete. Instances cached
        earlier but not in ``sop_uids`` (deleted on the PACS since) are evicted
        first, pins notwithstanding; one that is being read keeps the series
        incomplete."""
        if not self.enabled:
            return False
        await self.settled()  # the instances kept before this call
        try:
            complete, evicted, freed = await self._call(
                self._worker.mark_complete,
                study_uid,
                series_uid,
                frozenset(sop_uids),
                frozenset(self._leases),
            )
        except _FAILURES as exc:
            self._report(exc)
            return False
        self._evictions += evicted
        self._bytes -= freed
        return complete

    async def put_derived(self, sop_uid: str, key: str, data: bytes) -> bool:
        """Keep ``data`` (metadata JSON, frame offsets, a rendered image) with a cached
        instance, deleted with it; False if the instance is not cached or the disk
        refused. ``key`` is a short lowercase word (``layout.check_derived_key``)."""
        final = self._layout.derived_path(sop_uid, key)
        publish = partial(self._publish_derived, sop_uid, key)
        enabled = self.enabled and self._health.writable()
        async with AtomicWriter(final, publish, self._health, enabled=enabled) as writer:
            await writer.write(data)
            return await writer.commit() is not None

    async def evict_to_budget(self) -> int:
        """Evict until the cache fits its budget (or only leased data is left); bytes
        freed. Runs by itself after commits; joins the pass already running."""
        if not self.enabled:
            return 0
        if self._eviction is None or self._eviction.done():
            self._eviction = asyncio.get_running_loop().create_task(self._evict())
        return await asyncio.shield(self._eviction)

    async def wipe(self) -> None:
        """Forget everything, now. Leases do not hold a wipe back: a reader that has
        its file open keeps reading it (POSIX), one that has not sees a miss."""
        if not self.enabled:
            return
        await self._call(self._worker.wipe)
        self._bytes = 0
        self._spawn(asyncio.to_thread(empty_trash, self._layout.trash_dir))

    async def housekeeping(self) -> None:
        """Empty the trash and remove temporary files older than STALE_TEMP_SECONDS
        (writes a crash interrupted). ``open`` starts it in the background."""
        await asyncio.to_thread(empty_trash, self._layout.trash_dir)
        stale = time.time() - STALE_TEMP_SECONDS  # file times, whatever self._clock is
        await asyncio.to_thread(remove_stale_temps, self._layout.data_dir, stale)

    # -- internals ---------------------------------------------------------------

    async def _call(self, job: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a job on the index thread, in submission order."""
        if self._executor is None:
            raise RuntimeError("cache not opened")
        loop = asyncio.get_running_loop()
        call = partial(self._worker.run, job, *args, **kwargs)
        try:
            return await loop.run_in_executor(self._executor, call)
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc):
                self._after_corruption()
            raise

    def _after_corruption(self) -> None:
        """The worker started again with an empty index; the old data is in the trash."""
        self._bytes = 0
        self._spawn(asyncio.to_thread(empty_trash, self._layout.trash_dir))

    async def _read(self, job: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R | None:
        """A read job; any storage failure is a miss (and reported once)."""
        if not self.enabled:
            return None
        try:
            return await self._call(job, *args, **kwargs)
        except _FAILURES as exc:
            self._report(exc)
            return None

    async def _publish_instance(
        self,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        transfer_syntax: str,
        temp: Path,
        size: int,
    ) -> CachedInstance | None:
        """The publish step of ``open_writer``'s writers: a batch of one."""
        if not self.enabled:
            return None
        row = (study_uid, series_uid, sop_uid, transfer_syntax, size, self._clock())
        try:
            (outcome,) = await self._call(
                self._worker.publish_many,
                [WrittenInstance(temp, self._layout.instance_path(sop_uid), row)],
            )
        except _FAILURES as exc:
            self._report(exc)
            return None
        if isinstance(outcome, tuple):
            return self._published(*outcome)
        if outcome is not None:
            self._report(outcome)
        return None

    async def _publish_derived(self, sop_uid: str, key: str, temp: Path, size: int) -> bool | None:
        delta = await self._publish(self._worker.put_derived, temp, sop_uid, key, size)
        if delta is None:
            return None
        self._grow(delta)
        return True

    async def _publish(self, job: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R | None:
        """The writers' publish step: None when the cache is closed, was wiped under
        the writer (its temporary file is gone) or the disk refused (reported)."""
        if not self.enabled:
            return None
        try:
            result = await self._call(job, *args, **kwargs)
        except FileNotFoundError:
            return None
        except _FAILURES as exc:
            self._report(exc)
            return None
        self._health.succeeded()
        return result

    def _publish_batch(self, written: list[WrittenInstance]) -> list[Published]:
        """The write queue's publish step, on its thread: one index job, waited for."""
        if self._executor is None or self._state != "open":
            return [None] * len(written)
        job = partial(self._worker.run, self._worker.publish_many, written)
        return self._executor.submit(job).result()

    def _published(self, instance: CachedInstance, delta: int, epoch: int) -> CachedInstance | None:
        """A write's outcome on the loop: None if the cache closed or was emptied
        (wiped, corrupt) since it was published: then it is gone, and not counted.
        The worker's epoch is read live (an int only its thread writes): the loop
        learns of a wipe a turn later than the outcomes of the writes before it."""
        if not self.enabled or epoch < self._worker.epoch:
            return None
        self._health.succeeded()
        self._grow(delta)
        return instance

    def _write_failed(self, exc: BaseException) -> None:
        if not isinstance(exc, _FAILURES):
            log.error("instance cache write failed", exc_info=exc)
            return
        if is_corruption(exc):
            self._after_corruption()
        self._report(exc)

    def _grow(self, delta: int) -> None:
        self._bytes += delta
        self._check_budget()

    def _check_budget(self) -> None:
        if not self.enabled:
            return  # closed: no index to evict from
        if self._bytes > self.budget_bytes and (self._eviction is None or self._eviction.done()):
            self._eviction = asyncio.get_running_loop().create_task(self._evict())

    async def _evict(self) -> int:
        freed_total = 0
        try:
            self._bytes = await self._call(self._worker.total_bytes)
            while self._bytes > self.budget_bytes and self.enabled:
                evicted, freed = await self._call(
                    self._worker.evict_oldest, frozenset(self._leases), frozenset(self._pins)
                )
                if not evicted:
                    break
                self._evictions += evicted
                self._bytes -= freed
                freed_total += freed
        except _FAILURES as exc:
            self._report(exc)
        return freed_total

    @asynccontextmanager
    async def _lease(self, leases: Counter[H], key: H) -> AsyncIterator[None]:
        leases[key] += 1
        try:
            yield
        finally:
            leases[key] -= 1
            if leases[key] <= 0:
                del leases[key]
                if self.enabled:
                    self._check_budget()  # the lease may have held eviction back

    def _report(self, exc: BaseException) -> None:
        """A storage failure, said once (a corrupt index was already said by the worker)."""
        if not is_corruption(exc):
            self._health.failed(exc)

    def _count(self, hit: bool) -> None:
        if hit:
            self._hits += 1
        else:
            self._misses += 1

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
