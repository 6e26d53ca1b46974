"""The cache's SQLite index: which instances are on disk, in which series, how big,
when last read, and which series a whole-series retrieve completed.

The index is the truth about what the cache holds; the directory is only where
the bytes are. ``CacheIndex`` is plain synchronous SQL, used by exactly one
thread (``IndexWorker``), so it needs no locks. WAL mode lets other processes
(gateway replicas sharing one cache, DESIGN.md section 8) read while one writes;
``synchronous=NORMAL`` skips the fsync per commit, which is right for a cache: a
power cut may lose the last commits, never the database.

An index that SQLite cannot read, fails ``quick_check``, or has a schema version
we do not know is replaced by an empty one (``open`` reports it); nothing in it is
worth a repair, since everything can be fetched again from the PACS.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gateway.cache.layout import CacheLayout
from gateway.cache.records import CachedInstance, CachedSeries

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    study_uid   TEXT NOT NULL,
    series_uid  TEXT NOT NULL,
    complete    INTEGER NOT NULL DEFAULT 0,
    last_access REAL NOT NULL,
    PRIMARY KEY (study_uid, series_uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS series_by_access ON series (last_access);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid         TEXT PRIMARY KEY,
    study_uid       TEXT NOT NULL,
    series_uid      TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    size            INTEGER NOT NULL,
    last_access     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances (study_uid, series_uid);
CREATE TABLE IF NOT EXISTS derived (
    sop_uid TEXT NOT NULL,
    key     TEXT NOT NULL,
    size    INTEGER NOT NULL,
    PRIMARY KEY (sop_uid, key)
) WITHOUT ROWID;
"""

OpenedAs = Literal["kept", "created", "rebuilt"]
SeriesKey = tuple[str, str]
InstanceRow = tuple[str, str, str, str, int, float]
"""study, series, SOP instance UID, transfer syntax, size, time of the write."""

_INSTANCE_COLUMNS = "study_uid, series_uid, sop_uid, transfer_syntax, size"
_BATCH = 500  # bound parameters per statement, well under SQLite's limit


class CorruptIndex(sqlite3.DatabaseError):
    """The index file is readable but not ours or not whole."""


@dataclass
class Removed:
    """What ``CacheIndex.remove`` took out of the index: the caller deletes ``files``."""

    instances: int = 0
    size: int = 0
    files: list[Path] = field(default_factory=list)


def _batches(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _BATCH):
        yield items[start : start + _BATCH]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class CacheIndex:
    """SQL over the index; one instance per thread, see the module docstring."""

    def __init__(self, conn: sqlite3.Connection, layout: CacheLayout) -> None:
        self._conn = conn
        self._layout = layout

    @classmethod
    def open(cls, layout: CacheLayout) -> tuple[CacheIndex, OpenedAs]:
        """Open the index; says whether it was ``kept``, ``created`` (there was none)
        or ``rebuilt`` (it was corrupt: deleted and created again, one warning).
        Errors that are not about the file's content (unwritable directory, disk
        full) propagate: the caller runs without a cache.
        """
        path = layout.index_path
        existed = path.exists()
        try:
            return cls(_connect(path), layout), "kept" if existed else "created"
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            log.warning(
                "cache index %s is unreadable (%s): starting with an empty cache", path, exc
            )
            return cls.create_empty(layout), "rebuilt"

    @classmethod
    def create_empty(cls, layout: CacheLayout) -> CacheIndex:
        """Delete whatever index files exist and create a new, empty index."""
        path = layout.index_path
        for suffix in ("", "-wal", "-shm", "-journal"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        return cls(_connect(path), layout)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _instance(self, row: tuple[str, str, str, str, int]) -> CachedInstance:
        study, series, sop, syntax, size = row
        return CachedInstance(study, series, sop, syntax, size, self._layout.instance_path(sop))

    # -- reads -------------------------------------------------------------

    def lookup(self, sop_uid: str) -> CachedInstance | None:
        row = self._conn.execute(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE sop_uid = ?", (sop_uid,)
        ).fetchone()
        return None if row is None else self._instance(row)

    def series(self, study_uid: str, series_uid: str) -> tuple[bool, list[CachedInstance]] | None:
        """The series' completeness flag and instances (in the order they were cached)."""
        row = self._conn.execute(
            "SELECT complete FROM series WHERE study_uid = ? AND series_uid = ?",
            (study_uid, series_uid),
        ).fetchone()
        if row is None:
            return None
        rows = self._conn.execute(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances"
            " WHERE study_uid = ? AND series_uid = ? ORDER BY rowid",
            (study_uid, series_uid),
        ).fetchall()
        return bool(row[0]), [self._instance(r) for r in rows]

    def study_series(self, study_uid: str) -> list[CachedSeries]:
        rows = self._conn.execute(
            "SELECT s.series_uid, s.complete, COUNT(i.sop_uid), COALESCE(SUM(i.size), 0)"
            " FROM series s LEFT JOIN instances i"
            " ON i.study_uid = s.study_uid AND i.series_uid = s.series_uid"
            " WHERE s.study_uid = ? GROUP BY s.series_uid ORDER BY s.series_uid",
            (study_uid,),
        ).fetchall()
        return [CachedSeries(study_uid, uid, bool(c), n, size) for uid, c, n, size in rows]

    def oldest_series(self, limit: int, offset: int = 0) -> list[SeriesKey]:
        """Series keys, least recently read first: the eviction order."""
        rows = self._conn.execute(
            "SELECT study_uid, series_uid FROM series"
            " ORDER BY last_access, study_uid, series_uid LIMIT ? OFFSET ?",
            (limit, offset),
        ).fetchall()
        return [(study, series) for study, series in rows]

    def derived_size(self, sop_uid: str, key: str) -> int | None:
        row = self._conn.execute(
            "SELECT size FROM derived WHERE sop_uid = ? AND key = ?", (sop_uid, key)
        ).fetchone()
        return None if row is None else int(row[0])

    def total_bytes(self) -> int:
        row = self._conn.execute(
            "SELECT (SELECT COALESCE(SUM(size), 0) FROM instances)"
            " + (SELECT COALESCE(SUM(size), 0) FROM derived)"
        ).fetchone()
        return int(row[0])

    # -- writes ------------------------------------------------------------

    def touch(
        self,
        instances: Mapping[str, float],
        series: Mapping[SeriesKey, float],
        whole_series: Mapping[SeriesKey, float],
    ) -> None:
        """Record reads, batched: of single instances, of series (any of their
        instances), and of whole series (all of their instances). Times only move
        forward, so a late batch never makes a newer entry look older."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE instances SET last_access = max(last_access, ?) WHERE sop_uid = ?",
                [(t, sop) for sop, t in instances.items()],
            )
            db.executemany(
                "UPDATE instances SET last_access = max(last_access, ?)"
                " WHERE study_uid = ? AND series_uid = ?",
                [(t, *key) for key, t in whole_series.items()],
            )
            db.executemany(
                "UPDATE series SET last_access = max(last_access, ?)"
                " WHERE study_uid = ? AND series_uid = ?",
                [(t, *key) for key, t in series.items()],
            )

    def record_many(self, rows: Sequence[InstanceRow]) -> list[tuple[int, list[Path]]]:
        """Insert or replace instances, in one transaction (one commit for a batch:
        most of the cost of a small row is its commit). Per row: the change in bytes
        and the derived files of a replaced instance (derived from the old bytes, so
        no longer valid)."""
        with self._transaction() as db:
            return [self._record(db, *row) for row in rows]

    def _record(
        self,
        db: sqlite3.Connection,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        transfer_syntax: str,
        size: int,
        now: float,
    ) -> tuple[int, list[Path]]:
        old = db.execute(
            "SELECT study_uid, series_uid, size FROM instances WHERE sop_uid = ?", (sop_uid,)
        ).fetchone()
        delta, stale = size, []
        if old is not None:
            keys = db.execute(
                "SELECT key, size FROM derived WHERE sop_uid = ?", (sop_uid,)
            ).fetchall()
            db.execute("DELETE FROM derived WHERE sop_uid = ?", (sop_uid,))
            delta -= old[2] + sum(s for _, s in keys)
            stale = [self._layout.derived_path(sop_uid, k) for k, _ in keys]
        db.execute(
            "INSERT INTO series (study_uid, series_uid, complete, last_access)"
            " VALUES (?, ?, 0, ?) ON CONFLICT DO UPDATE SET last_access = excluded.last_access",
            (study_uid, series_uid, now),
        )
        db.execute(
            "INSERT INTO instances"
            " (sop_uid, study_uid, series_uid, transfer_syntax, size, last_access)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sop_uid) DO UPDATE SET"
            " study_uid = excluded.study_uid, series_uid = excluded.series_uid,"
            " transfer_syntax = excluded.transfer_syntax, size = excluded.size,"
            " last_access = excluded.last_access",
            (sop_uid, study_uid, series_uid, transfer_syntax, size, now),
        )
        if old is not None and (old[0], old[1]) != (study_uid, series_uid):
            self._settle_series([(old[0], old[1])])
        return delta, stale

    def set_complete(self, study_uid: str, series_uid: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE series SET complete = 1 WHERE study_uid = ? AND series_uid = ?",
                (study_uid, series_uid),
            )

    def record_derived(self, sop_uid: str, key: str, size: int) -> int | None:
        """Record derived data of a cached instance; the change in bytes, or None
        when the instance is not cached (derived data lives and dies with it)."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM instances WHERE sop_uid = ?", (sop_uid,)).fetchone():
                old = self.derived_size(sop_uid, key)
                db.execute(
                    "INSERT INTO derived (sop_uid, key, size) VALUES (?, ?, ?)"
                    " ON CONFLICT DO UPDATE SET size = excluded.size",
                    (sop_uid, key, size),
                )
                return size - (old or 0)
        return None

    def forget_derived(self, sop_uid: str, key: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM derived WHERE sop_uid = ? AND key = ?", (sop_uid, key))

    def remove(self, sop_uids: Iterable[str]) -> Removed:
        """Take instances (and their derived data) out of the index. A series that
        loses instances is no longer complete; one that loses all is forgotten."""
        removed = Removed()
        touched: set[SeriesKey] = set()
        with self._transaction() as db:
            for batch in _batches(list(sop_uids)):
                marks = _marks(len(batch))
                for study, series, sop, size in db.execute(
                    f"SELECT study_uid, series_uid, sop_uid, size FROM instances"
                    f" WHERE sop_uid IN ({marks})",
                    batch,
                ):
                    touched.add((study, series))
                    removed.instances += 1
                    removed.size += size
                    removed.files.append(self._layout.instance_path(sop))
                for sop, key, size in db.execute(
                    f"SELECT sop_uid, key, size FROM derived WHERE sop_uid IN ({marks})", batch
                ):
                    removed.size += size
                    removed.files.append(self._layout.derived_path(sop, key))
                db.execute(f"DELETE FROM instances WHERE sop_uid IN ({marks})", batch)
                db.execute(f"DELETE FROM derived WHERE sop_uid IN ({marks})", batch)
            self._settle_series(touched)
        return removed

    def _settle_series(self, keys: Iterable[SeriesKey]) -> None:
        """After instances left these series: drop the empty ones, mark the rest incomplete."""
        for study, series in keys:
            self._conn.execute(
                "DELETE FROM series WHERE study_uid = ?1 AND series_uid = ?2 AND NOT EXISTS"
                " (SELECT 1 FROM instances WHERE study_uid = ?1 AND series_uid = ?2)",
                (study, series),
            )
            self._conn.execute(
                "UPDATE series SET complete = 0 WHERE study_uid = ? AND series_uid = ?",
                (study, series),
            )

    def clear(self) -> None:
        with self._transaction() as db:
            for table in ("derived", "instances", "series"):
                db.execute(f"DELETE FROM {table}")


def _connect(path: Path) -> sqlite3.Connection:
    """Open the index file, check it, and make sure the schema is there."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")  # another replica holding the write lock
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        (check,) = conn.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise CorruptIndex(f"quick_check: {check}")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version not in (0, SCHEMA_VERSION):
            raise CorruptIndex(f"schema version {version}, expected {SCHEMA_VERSION}")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.close()
        raise
    return conn
