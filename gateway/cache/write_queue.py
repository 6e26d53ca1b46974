"""Whole instances to disk on one thread, published to the index in batches.

Why not one ``AtomicWriter`` per instance: a retrieve hands over hundreds of
instances, each already whole in memory (it arrived over DIMSE), while the cold
retrieve keeps the process CPU-bound. Per instance the writer costs two thread
hops with their futures and wake-ups on the event loop, and one SQLite commit:
70-80 ms of CPU per 100 x 512 KB instances, 22 ms of it on the event loop's
thread (docs/benchmarks.md). Here the event loop only appends to a queue. One
thread writes the files and, when no instance came for a moment or a batch is
full, publishes what it wrote in one index job (the renames and one transaction), then
hands the outcomes back in one event-loop callback per batch: about 33 ms of
CPU, 2 ms of it on the loop, for the same 100 instances.

Order: files are published in the order they were queued, and ``settled()``
returns once everything queued before it is published (or failed), so that a
series is marked complete only after its instances are in the index.

Memory: a queued instance holds its bytes until it is written; ``put`` waits
while more than ``max_queued_bytes`` are queued (a disk slower than the PACS).

Failures are the cache's business, never the caller's: a write or rename that
fails removes its temporary file and is reported through ``failed``; the
instance's future resolves to None, as it does when the queue is closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.cache.index import InstanceRow
from gateway.cache.layout import temp_path
from gateway.cache.records import CachedInstance
from gateway.cache.worker import Published, WrittenInstance
from gateway.cache.writer import NEW_FILE_FLAGS, Chunk, write_all

log = logging.getLogger(__name__)

BATCH = 32
"""At most this many files per index job: the first instances of a long retrieve
become visible while the rest is still arriving."""

PUBLISH_AFTER = 0.02
"""Seconds the thread waits for another instance before it publishes what it wrote.
A retrieve delivers an instance every millisecond or two, and the disk writes it
faster than that: publishing whenever the queue is empty would be one index job
and one event-loop wake-up per instance again. A barrier or a full batch
publishes at once."""

MAX_QUEUED_BYTES = 64 * 1024 * 1024

PublishBatch = Callable[[list[WrittenInstance]], list[Published]]
"""Runs on the writer thread and blocks until the index job is done."""


@dataclass(slots=True)
class QueuedWrite:
    """One instance waiting for the writer thread; ``future`` gets what was cached."""

    final: Path
    row: InstanceRow
    chunks: tuple[Chunk, ...]
    future: asyncio.Future[CachedInstance | None]
    temp: Path | None = None

    @property
    def size(self) -> int:
        return self.row[4]


@dataclass(slots=True)
class _Barrier:
    future: asyncio.Future[None]


_STOP = object()
_Outcome = Published | BaseException


class WriteQueue:
    """See the module docstring. ``put``, ``settled`` and ``close`` are for the event
    loop's thread; ``published`` and ``failed`` are called there too."""

    def __init__(
        self,
        publish_batch: PublishBatch,
        published: Callable[[CachedInstance, int, int], CachedInstance | None],
        failed: Callable[[BaseException], None],
        *,
        fsync: bool = False,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        self._publish_batch = publish_batch
        self._published = published
        self._failed = failed
        self._fsync = fsync
        self._max_queued_bytes = max_queued_bytes
        self._queue: queue.SimpleQueue[QueuedWrite | _Barrier | object] = queue.SimpleQueue()
        self._queued_bytes = 0
        self._outstanding = 0  # put and not yet handed back
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="instance-cache-writer", daemon=True)
        self._thread.start()

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    async def put(self, write: QueuedWrite) -> None:
        """Queue ``write``; waits only while the queue holds too many bytes."""
        while self._queued_bytes > self._max_queued_bytes and not self._closing:
            self._room.clear()
            await self._room.wait()
        if self._closing:
            write.future.set_result(None)
            return
        self._queued_bytes += write.size
        self._outstanding += 1
        self._queue.put(write)

    async def settled(self) -> None:
        """Return once everything queued before this call is published or failed
        (at once when nothing is: no round trip through the thread)."""
        if self._closing or not self._outstanding:
            return
        barrier = _Barrier(self._loop.create_future())
        self._queue.put(barrier)
        await barrier.future

    async def close(self) -> None:
        """Stop: what is queued and not yet written is dropped (its futures resolve
        to None), what was written goes to ``publish_batch`` (which a closed cache
        refuses: the files are removed); returns when the thread is done."""
        if self._closing:
            return
        self._closing = True
        self._room.set()
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    # -- event-loop side of the hand-back ----------------------------------------

    def _deliver(self, done: list[QueuedWrite], outcome: list[_Outcome] | BaseException) -> None:
        if isinstance(outcome, BaseException):
            self._report(outcome)  # the index job failed: once for the whole batch
        for n, write in enumerate(done):
            self._queued_bytes -= write.size
            self._outstanding -= 1
            cached = None
            try:
                result = outcome if isinstance(outcome, BaseException) else outcome[n]
                if isinstance(result, tuple):
                    cached = self._published(*result)
                elif result is not None and result is not outcome:
                    self._report(result)
            except Exception:  # whatever a callback did, the others go on: nobody waits
                log.exception("handing back a cache write failed")
            if not write.future.done():
                write.future.set_result(cached)
        if self._queued_bytes <= self._max_queued_bytes:
            self._room.set()

    def _report(self, exc: BaseException) -> None:
        try:
            self._failed(exc)
        except Exception:
            log.exception("reporting a cache write failure failed")

    @staticmethod
    def _release(barrier: _Barrier) -> None:
        if not barrier.future.done():
            barrier.future.set_result(None)

    def _hand_back(self, callback: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self._loop.call_soon_threadsafe(callback, *args)

    # -- writer thread -------------------------------------------------------------

    def _run(self) -> None:
        batch: list[QueuedWrite] = []
        failed: list[tuple[QueuedWrite, _Outcome]] = []
        while True:
            try:
                item = self._queue.get(timeout=PUBLISH_AFTER if batch or failed else None)
            except queue.Empty:  # nothing more came: publish what is written
                self._flush(batch, failed)
                batch, failed = [], []
                continue
            if isinstance(item, QueuedWrite):
                if self._closing:
                    failed.append((item, None))
                else:
                    try:
                        self._write(item)
                        batch.append(item)
                    except Exception as exc:  # OSError, or a bug: the thread must live on
                        failed.append((item, exc))
                if len(batch) < BATCH and not failed:
                    continue  # a failure goes back at once: the cache stops taking writes
            self._flush(batch, failed)
            batch, failed = [], []
            if isinstance(item, _Barrier):
                self._hand_back(self._release, item)
            elif item is _STOP:
                return

    def _flush(self, batch: list[QueuedWrite], failed: list[tuple[QueuedWrite, _Outcome]]) -> None:
        """Publish ``batch``; hand its outcomes and the earlier failures back."""
        if batch:
            try:
                outcomes = self._publish_batch([_written(w) for w in batch])
            except BaseException as exc:  # handed to the loop, which reports it
                for write in batch:
                    self._remove_temp(write)
                self._hand_back(self._deliver, batch, exc)
            else:
                for write, outcome in zip(batch, outcomes, strict=True):
                    if not isinstance(outcome, tuple):
                        self._remove_temp(write)
                failed = [*zip(batch, outcomes, strict=True), *failed]
        if failed:
            self._hand_back(self._deliver, [w for w, _ in failed], [o for _, o in failed])

    def _write(self, write: QueuedWrite) -> None:
        write.temp = temp_path(write.final)
        try:
            fd = os.open(write.temp, NEW_FILE_FLAGS, 0o644)
        except FileNotFoundError:  # a new bucket directory (or the cache was wiped)
            write.final.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(write.temp, NEW_FILE_FLAGS, 0o644)
        try:
            write_all(fd, write.chunks)
            if self._fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            self._remove_temp(write)
            raise
        os.close(fd)
        write.chunks = ()  # the loop's copy may be needed; ours is not

    @staticmethod
    def _remove_temp(write: QueuedWrite) -> None:
        if write.temp is not None:
            try:
                write.temp.unlink(missing_ok=True)
            except OSError as exc:  # the sweep at the next start removes it
                log.debug("could not remove %s: %s", write.temp, exc)


def _written(write: QueuedWrite) -> WrittenInstance:
    assert write.temp is not None
    return WrittenInstance(write.temp, write.final, write.row)
