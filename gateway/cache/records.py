"""What the cache hands out: plain, immutable records with no I/O behind them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CachedInstance:
    """One instance on disk: where it is and what a response needs to know about it.

    ``path`` is only valid while the instance is cached; hold a lease
    (``InstanceCache.reading`` / ``reading_series``) between looking it up and
    opening it, or treat ``FileNotFoundError`` as a miss.
    """

    study_uid: str
    series_uid: str
    sop_uid: str
    transfer_syntax: str
    size: int
    path: Path


@dataclass(frozen=True)
class CachedSeries:
    """What the cache holds of one series; ``complete`` means a whole-series retrieve
    finished, so a request for the series can be answered without the PACS."""

    study_uid: str
    series_uid: str
    complete: bool
    instances: int
    size: int


@dataclass(frozen=True)
class CacheStats:
    """Counters for metrics. ``bytes`` is the estimate the eviction trigger uses
    (exact after each eviction pass, adjusted by deltas in between)."""

    hits: int
    misses: int
    bytes: int
    budget_bytes: int
    evictions: int
    write_failures: int
