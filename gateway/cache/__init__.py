"""Instance cache (DESIGN.md section 5): instances on disk under a byte budget with
LRU eviction, a SQLite index, derived data beside each instance, and single-flight
sharing of retrieves. ``store.InstanceCache`` is the entry point."""

from gateway.cache.records import CachedInstance, CachedSeries, CacheStats
from gateway.cache.single_flight import FlightCancelled, SharedStream, SingleFlight, StreamFlight
from gateway.cache.store import InstanceCache, InstanceWriter

__all__ = [
    "CacheStats",
    "CachedInstance",
    "CachedSeries",
    "FlightCancelled",
    "InstanceCache",
    "InstanceWriter",
    "SharedStream",
    "SingleFlight",
    "StreamFlight",
]
