"""Everything that runs on the cache's one index thread.

Why one dedicated thread rather than ``asyncio.to_thread`` per query: a SQLite
connection then belongs to a single thread (no lock, ``check_same_thread`` stays
on), writes to the index are serialised as SQLite wants them anyway, and jobs run
in the order the event loop submitted them. That order is what makes reader
leases cheap: a reader takes its lease on the loop *before* submitting its
lookup, and each eviction step is submitted with a snapshot of the leases, so a
lookup either runs before an eviction step (and is protected by the lease the
step sees) or after it (and finds the instance gone: a miss, not a dangling path).

The thread also owns the namespace of final file names: renaming a finished file
into place and unlinking an evicted one happen in the same job as the index
change, so no other job ever sees the index and the directory disagree. Large
writes happen elsewhere (the write queue's thread, ``AtomicWriter`` in
``to_thread`` workers); here only renames, unlinks, stats and small reads.

Reads (last-access times, for LRU) are kept in memory and written in one
transaction per second, and before every eviction step, which is their only
reader: a lookup stays a read-only query, and a read-only disk still serves hits.

A corrupt index detected mid-run is replaced by an empty one here, in the thread
that owns it, exactly once however many jobs were queued behind the failing one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from gateway.cache.index import CacheIndex, InstanceRow, SeriesKey
from gateway.cache.layout import CacheLayout
from gateway.cache.records import CachedInstance, CachedSeries

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_EVICTION_PAGE = 64
READS_FLUSH_SECONDS = 1.0
"""Reads are recorded in memory and written to the index at most this often (and
before every eviction step), so a lookup is a read-only query."""


@dataclass(frozen=True)
class WrittenInstance:
    """A finished temporary file waiting to be published under ``final``, and its
    index row."""

    temp: Path
    final: Path
    row: InstanceRow


Published = tuple[CachedInstance, int, int] | OSError | None
"""What ``publish_many`` made of one file: (instance, byte delta, the index's
``epoch`` then), the rename's error, or None when the file was gone."""


class IndexUnavailable(OSError):
    """The index could not be opened or recreated; the cache is off."""


def is_corruption(exc: BaseException) -> bool:
    """SQLite says the file is damaged (as opposed to busy, full or read-only)."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def _intact(instance: CachedInstance) -> bool:
    """The file is there with the size we wrote: catches a wipe behind our back, and
    the empty file a power cut can leave when fsync is off."""
    try:
        return os.stat(instance.path).st_size == instance.size
    except OSError:
        return False


class IndexWorker:
    """Jobs for the index thread; call them only through ``run`` on that thread."""

    def __init__(self, layout: CacheLayout) -> None:
        self._layout = layout
        self._index: CacheIndex | None = None
        self._reads: dict[str, float] = {}
        self._series_reads: dict[SeriesKey, float] = {}
        self._whole_series_reads: dict[SeriesKey, float] = {}
        self._reads_flushed = time.monotonic()
        #: Counts the times the index was emptied (wipe, corruption): an outcome of
        #: an earlier epoch names instances that are gone.
        self.epoch = 0

    @property
    def index(self) -> CacheIndex:
        if self._index is None:
            raise IndexUnavailable("cache index is not open")
        return self._index

    def run(self, job: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run one job; on corruption, start again empty and re-raise."""
        try:
            result = job(*args, **kwargs)
            if time.monotonic() - self._reads_flushed >= READS_FLUSH_SECONDS:
                self.flush_reads()
            return result
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc) and self._index is not None:
                self._rebuild(exc)
            raise

    def open(self) -> bool:
        """Open (or create) the index; returns whether the cache starts empty, in
        which case any data left on disk was moved to the trash."""
        self._layout.data_dir.mkdir(parents=True, exist_ok=True)
        self._layout.trash_dir.mkdir(exist_ok=True)
        self._index, how = CacheIndex.open(self._layout)
        if how == "kept":
            return False
        with os.scandir(self._layout.data_dir) as entries:
            leftovers = any(entries)
        if how == "created" and leftovers:
            log.warning(
                "cache index %s was missing: discarding the cached files left without it",
                self._layout.index_path,
            )
        self._trash_data()
        return True

    def close(self) -> None:
        if self._index is not None:
            with contextlib.suppress(sqlite3.Error):
                self.flush_reads()
            self._index.close()
            self._index = None

    def _read(self, instance: CachedInstance, now: float) -> None:
        self._reads[instance.sop_uid] = now
        self._series_reads[instance.study_uid, instance.series_uid] = now

    def flush_reads(self) -> None:
        """Write the reads recorded since the last flush (dropped if the disk refuses:
        they only order evictions)."""
        self._reads_flushed = time.monotonic()
        if not (self._reads or self._series_reads):
            return
        reads, self._reads = self._reads, {}
        series, self._series_reads = self._series_reads, {}
        whole, self._whole_series_reads = self._whole_series_reads, {}
        try:
            self.index.touch(reads, series, whole)
        except sqlite3.OperationalError as exc:
            log.debug("cache reads not recorded: %s", exc)

    def _rebuild(self, exc: BaseException) -> None:
        log.warning(
            "cache index %s is corrupt (%s): starting again with an empty cache",
            self._layout.index_path,
            exc,
        )
        self.close()
        self.epoch += 1
        try:
            self._index = CacheIndex.create_empty(self._layout)
            self._trash_data()
        except (OSError, sqlite3.Error) as again:
            log.warning("cache index could not be recreated (%s): cache off", again)

    def _trash_data(self) -> None:
        """Move the data directory to the trash (instant); the store empties the trash
        in the background."""
        data = self._layout.data_dir
        with contextlib.suppress(FileNotFoundError):
            data.rename(self._layout.trash_dir / secrets.token_hex(8))
        data.mkdir(exist_ok=True)

    def _delete(self, sop_uids: Iterable[str]) -> tuple[int, int]:
        """Remove instances from the index, then their files; (instances, bytes)."""
        removed = self.index.remove(sop_uids)
        for path in removed.files:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.debug("could not remove %s: %s", path, exc)
        return removed.instances, removed.size

    # -- jobs ------------------------------------------------------------------

    def total_bytes(self) -> int:
        return self.index.total_bytes()

    def lookup(self, sop_uid: str, now: float) -> CachedInstance | None:
        instance = self.index.lookup(sop_uid)
        if instance is None:
            return None
        if not _intact(instance):
            self._delete([sop_uid])
            return None
        self._read(instance, now)
        return instance

    def series(self, study_uid: str, series_uid: str, now: float) -> list[CachedInstance] | None:
        found = self.index.series(study_uid, series_uid)
        if found is None or not found[0]:
            return None
        broken = [i.sop_uid for i in found[1] if not _intact(i)]
        if broken:
            self._delete(broken)
            return None
        key = (study_uid, series_uid)
        self._series_reads[key] = self._whole_series_reads[key] = now
        return found[1]

    def study_series(self, study_uid: str) -> list[CachedSeries]:
        return self.index.study_series(study_uid)

    def publish_many(self, written: Sequence[WrittenInstance]) -> list[Published]:
        """Rename finished files into place and index them, in one transaction.

        Per file: the instance, byte delta and epoch; None when its temporary file is gone
        (the cache was wiped under the write); or the ``OSError`` its rename raised
        (the caller removes the temporary file). A failure of the transaction takes
        the whole batch out of place again and propagates.
        """
        outcomes: list[Published] = [None] * len(written)
        placed: list[tuple[int, Path]] = []
        for n, entry in enumerate(written):
            final = entry.final
            try:
                os.replace(entry.temp, final)
            except FileNotFoundError:
                continue
            except OSError as exc:
                outcomes[n] = exc
                continue
            placed.append((n, final))
        try:
            recorded = self.index.record_many([written[n].row for n, _ in placed])
        except BaseException:
            for _, final in placed:
                final.unlink(missing_ok=True)  # never a file the index does not know
            raise
        for (n, final), (delta, stale) in zip(placed, recorded, strict=True):
            for path in stale:
                path.unlink(missing_ok=True)
            study_uid, series_uid, sop_uid, transfer_syntax, size, _ = written[n].row
            instance = CachedInstance(study_uid, series_uid, sop_uid, transfer_syntax, size, final)
            outcomes[n] = (instance, delta, self.epoch)
        return outcomes

    def mark_complete(
        self,
        study_uid: str,
        series_uid: str,
        sop_uids: frozenset[str],
        leased: frozenset[str],
    ) -> tuple[bool, int, int]:
        """Flag a series complete if every instance the PACS sent is cached; instances
        cached earlier but not sent (deleted on the PACS since) are evicted first.
        Returns (complete, instances evicted, bytes freed)."""
        found = self.index.series(study_uid, series_uid)
        cached = {i.sop_uid for i in found[1]} if found else set()
        if not sop_uids or not sop_uids <= cached:
            return False, 0, 0
        extra = cached - sop_uids
        evicted, freed = self._delete(extra - leased)
        if extra & leased:
            return False, evicted, freed
        self.index.set_complete(study_uid, series_uid)
        return True, evicted, freed

    def evict_oldest(self, leased: frozenset[str], pinned: frozenset[SeriesKey]) -> tuple[int, int]:
        """Evict the least recently read series that is not pinned, all of it but its
        leased instances; (instances, bytes), (0, 0) when nothing can go."""
        self.flush_reads()
        offset = 0
        while keys := self.index.oldest_series(_EVICTION_PAGE, offset):
            for key in keys:
                if key in pinned:
                    continue
                found = self.index.series(*key)
                victims = [i.sop_uid for i in found[1] if i.sop_uid not in leased] if found else []
                if victims:
                    return self._delete(victims)
            offset += len(keys)
        return 0, 0

    def put_derived(self, temp: Path, sop_uid: str, key: str, size: int) -> int | None:
        """Rename derived data into place if its instance is cached; the byte delta."""
        final = self._layout.derived_path(sop_uid, key)
        if self.index.lookup(sop_uid) is None:
            return None
        os.replace(temp, final)
        try:
            delta = self.index.record_derived(sop_uid, key, size)
        except BaseException:
            final.unlink(missing_ok=True)
            raise
        return delta

    def get_derived(self, sop_uid: str, key: str, now: float) -> bytes | None:
        instance = self.index.lookup(sop_uid)
        if instance is None or self.index.derived_size(sop_uid, key) is None:
            return None
        try:
            data = self._layout.derived_path(sop_uid, key).read_bytes()
        except FileNotFoundError:
            self.index.forget_derived(sop_uid, key)
            return None
        self._read(instance, now)
        return data

    def wipe(self) -> None:
        self.epoch += 1
        self.index.clear()
        self._trash_data()
