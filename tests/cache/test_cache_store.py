"""InstanceCache: lookups, LRU eviction by series within the budget, reader leases,
series completeness, derived data, wipe and housekeeping."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from gateway.cache import CachedSeries
from gateway.cache.layout import CacheLayout, check_derived_key
from tests.cache.cache_support import (
    STUDY,
    data_files,
    new_cache,
    payload,
    put,
    put_series,
)


def test_layout_spreads_by_hash_and_never_escapes() -> None:
    layout = CacheLayout(Path("/c"))
    path = layout.instance_path("1.2.840.113619.2.1")
    assert path.name == "1.2.840.113619.2.1.dcm"
    assert path.parent.parent.parent == Path("/c/data")
    assert len(path.parent.name) == len(path.parent.parent.name) == 2
    odd = layout.instance_path("../../etc/passwd\x00 ")
    assert odd.parent.parent.parent == Path("/c/data")
    assert odd.name.startswith("h") and odd.name.endswith(".dcm") and "/" not in odd.name[:-4]
    assert layout.derived_path("1.2.3", "json").name == "1.2.3.json"
    for bad in ("dcm", "tmp", "", "../x", "A", "x" * 40):
        with pytest.raises(ValueError):
            check_derived_key(bad)


def test_lookup_hits_misses_and_stats(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            instance = await put(cache, "1.2.3.4", "1.2.3.4.5")
            assert await cache.get_path("1.2.3.4.5") == instance.path
            assert await cache.lookup("9.9") is None
            async with cache.reading("1.2.3.4.5") as leased:
                assert leased == instance
            stats = cache.stats
            assert (stats.hits, stats.misses, stats.bytes, stats.evictions) == (2, 1, 100, 0)

    asyncio.run(main())


def test_the_least_recently_read_series_goes_first(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path, budget=1000) as cache:
            a = await put_series(cache, "1.1", 3)
            b = await put_series(cache, "1.2", 3)
            c = await put_series(cache, "1.3", 3)
            assert await cache.lookup(a[0]) is not None  # A is now more recent than B
            await put_series(cache, "1.4", 3)  # 1200 bytes: one series must go
            await cache.evict_to_budget()
            assert [await cache.lookup(sop) for sop in b] == [None, None, None]
            for sop in a + c:
                assert await cache.lookup(sop) is not None
            assert await cache.series_instances(STUDY, "1.2") is None
            assert cache.stats.bytes == 900 and cache.stats.evictions == 3
            assert len(data_files(tmp_path)) == 9

    asyncio.run(main())


def test_eviction_keeps_the_cache_within_budget(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path, budget=1000) as cache:
            for i in range(1, 31):
                await put(cache, f"2.{i}", f"2.{i}.1", 100)
                await cache.evict_to_budget()
                assert cache.stats.bytes <= 1000
            kept = [i for i in range(1, 31) if await cache.lookup(f"2.{i}.1")]
            assert kept == list(range(21, 31))
            assert sum(p.stat().st_size for p in data_files(tmp_path)) == 1000

    asyncio.run(main())


def test_eviction_runs_by_itself_after_a_commit(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path, budget=250) as cache:
            await put(cache, "3.1", "3.1.1", 200)
            await put(cache, "3.2", "3.2.1", 200)
            await cache.evict_to_budget()  # joins the pass the commit started
            assert cache.stats.evictions == 1
            assert await cache.lookup("3.1.1") is None

    asyncio.run(main())


def test_a_reader_lease_holds_eviction_back(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path, budget=250) as cache:
            await put_series(cache, "4.1", 2)
            async with cache.reading("4.1.1") as instance:
                assert instance is not None
                await put(cache, "4.2", "4.2.1")  # 300 bytes: series 4.1 is the oldest
                await cache.evict_to_budget()
                assert instance.path.read_bytes() == payload("4.1.1", 100)
                assert await cache.lookup("4.1.2") is None  # the rest of the series went
                assert await cache.series_instances(STUDY, "4.1") is None
            await put(cache, "4.3", "4.3.1")  # over again, and the lease is gone
            await cache.evict_to_budget()
            assert not instance.path.exists()

    asyncio.run(main())


def test_a_fully_leased_series_is_skipped_for_the_next_one(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path, budget=250) as cache:
            await put(cache, "5.1", "5.1.1")
            await put(cache, "5.2", "5.2.1")
            async with cache.reading("5.1.1"):
                await put(cache, "5.3", "5.3.1")
                await cache.evict_to_budget()
                assert await cache.lookup("5.1.1") is not None
                assert await cache.lookup("5.2.1") is None

    asyncio.run(main())


def test_a_pinned_series_is_not_evicted_even_while_it_grows(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path, budget=250) as cache, cache.pin_series(STUDY, "6.1"):
            await put(cache, "6.1", "6.1.1")
            await put(cache, "6.2", "6.2.1")
            await put(cache, "6.1", "6.1.2")
            await cache.evict_to_budget()
            assert await cache.lookup("6.1.1") is not None
            assert await cache.lookup("6.2.1") is None

    asyncio.run(main())


def test_reading_series_pins_a_complete_series(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path, budget=250) as cache:
            sops = await put_series(cache, "7.1", 2)
            async with cache.reading_series(STUDY, "7.1") as instances:
                assert instances is not None and [i.sop_uid for i in instances] == sops
                await put(cache, "7.2", "7.2.1")
                await cache.evict_to_budget()
                assert all(i.path.exists() for i in instances)
            async with cache.reading_series(STUDY, "7.2") as missing:
                assert missing is None  # cached, but no whole-series retrieve finished

    asyncio.run(main())


def test_a_series_is_complete_only_once_marked_with_all_its_instances(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            for sop in ("8.1.1", "8.1.2"):
                await put(cache, "8.1", sop)
            assert await cache.series_instances(STUDY, "8.1") is None
            assert not await cache.mark_series_complete(STUDY, "8.1", ["8.1.1", "8.1.2", "8.1.3"])
            assert await cache.series_instances(STUDY, "8.1") is None
            await put(cache, "8.1", "8.1.3")
            assert await cache.mark_series_complete(STUDY, "8.1", ["8.1.1", "8.1.2", "8.1.3"])
            instances = await cache.series_instances(STUDY, "8.1")
            assert [i.sop_uid for i in instances or []] == ["8.1.1", "8.1.2", "8.1.3"]
            await put(cache, "8.2", "8.2.1")
            assert await cache.study_series(STUDY) == [
                CachedSeries(STUDY, "8.1", True, 3, 300),
                CachedSeries(STUDY, "8.2", False, 1, 100),
            ]
            assert await cache.study_series("9.9") == []

    asyncio.run(main())


def test_marking_complete_drops_instances_the_pacs_no_longer_has(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            gone = await put(cache, "9.1", "9.1.9")
            await put_series(cache, "9.1", 2)
            assert not gone.path.exists()
            instances = await cache.series_instances(STUDY, "9.1")
            assert [i.sop_uid for i in instances or []] == ["9.1.1", "9.1.2"]

    asyncio.run(main())


def test_a_file_deleted_behind_the_cache_is_a_miss(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            sops = await put_series(cache, "10.1", 2)
            (await put(cache, "10.2", "10.2.1")).path.unlink()
            assert await cache.lookup("10.2.1") is None
            first = await cache.lookup(sops[0])
            assert first is not None
            first.path.write_bytes(b"")  # what a power cut can leave without fsync
            assert await cache.series_instances(STUDY, "10.1") is None
            assert await cache.lookup(sops[0]) is None
            assert await cache.lookup(sops[1]) is not None

    asyncio.run(main())


def test_derived_data_lives_and_dies_with_its_instance(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path, budget=450) as cache:
            assert not await cache.put_derived("11.1.1", "json", b"{}")  # not cached
            await put(cache, "11.1", "11.1.1")
            assert await cache.put_derived("11.1.1", "json", b'{"a": 1}')
            assert await cache.put_derived("11.1.1", "offsets", b"\x00" * 50)
            assert await cache.get_derived("11.1.1", "json") == b'{"a": 1}'
            assert await cache.get_derived("11.1.1", "png") is None
            assert cache.stats.bytes == 100 + 8 + 50
            with pytest.raises(ValueError):
                await cache.put_derived("11.1.1", "../x", b"")
            await put(cache, "11.2", "11.2.1", 300)  # 458 bytes: series 11.1 goes
            await cache.evict_to_budget()
            assert await cache.get_derived("11.1.1", "json") is None
            assert [p.name for p in data_files(tmp_path)] == ["11.2.1.dcm"]

    asyncio.run(main())


def test_rewriting_an_instance_drops_its_derived_data(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            await put(cache, "12.1", "12.1.1")
            assert await cache.put_derived("12.1.1", "json", b"{}")
            await put(cache, "12.1", "12.1.1", 120)
            assert await cache.get_derived("12.1.1", "json") is None
            assert cache.stats.bytes == 120

    asyncio.run(main())


def test_wipe_forgets_everything_and_the_cache_goes_on(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            sops = await put_series(cache, "13.1", 3)
            await cache.wipe()
            assert data_files(tmp_path) == []
            assert await cache.lookup(sops[0]) is None
            assert await cache.study_series(STUDY) == []
            assert cache.stats.bytes == 0
            await put(cache, "13.1", sops[0])
            assert await cache.lookup(sops[0]) is not None
            await cache.housekeeping()
            assert list((tmp_path / "trash").iterdir()) == []

    asyncio.run(main())


def test_the_cache_survives_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            sops = await put_series(cache, "14.1", 2)
            await cache.put_derived(sops[0], "json", b"[]")
        async with new_cache(tmp_path) as cache:
            assert cache.stats.bytes == 202
            assert await cache.series_instances(STUDY, "14.1") is not None
            assert await cache.get_derived(sops[0], "json") == b"[]"

    asyncio.run(main())


def test_a_restart_over_budget_evicts(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            for i in range(1, 6):
                await put(cache, f"15.{i}", f"15.{i}.1")
        async with new_cache(tmp_path, budget=300) as cache:
            await cache.evict_to_budget()
            assert cache.stats.bytes == 300

    asyncio.run(main())


def test_housekeeping_removes_stale_temporary_files_only(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            instance = await put(cache, "16.1", "16.1.1")
            stale = instance.path.with_name(".16.1.2.dcm.0123456789ab.tmp")
            fresh = instance.path.with_name(".16.1.3.dcm.0123456789ab.tmp")
            stale.write_bytes(b"half")
            fresh.write_bytes(b"half")
            old = time.time() - 2 * 3600
            os.utime(stale, (old, old))
            await cache.housekeeping()
            assert not stale.exists()
            assert fresh.exists() and instance.path.exists()

    asyncio.run(main())


def test_an_unusable_root_turns_the_cache_off_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Tests run as root, where chmod does not stop writes: a root under a regular
    file fails with ENOTDIR for anyone."""
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")

    async def main() -> None:
        async with new_cache(blocker / "cache") as cache:
            assert not cache.enabled and not cache.writable
            async with cache.open_writer(STUDY, "17.1", "17.1.1", "1.2.840.10008.1.2") as w:
                await w.write(b"x" * 1000)
                assert await w.commit() is None
            assert await cache.lookup("17.1.1") is None
            async with cache.reading("17.1.1") as instance:
                assert instance is None
            assert await cache.series_instances(STUDY, "17.1") is None
            assert not await cache.mark_series_complete(STUDY, "17.1", ["17.1.1"])
            assert not await cache.put_derived("17.1.1", "json", b"{}")
            assert await cache.get_derived("17.1.1", "json") is None
            assert await cache.evict_to_budget() == 0
            await cache.wipe()
            assert cache.stats.misses == 3

    asyncio.run(main())
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "off" in warnings[0].getMessage()


def test_budget_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        new_cache(tmp_path, budget=0)
