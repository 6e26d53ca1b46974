"""A missing or corrupt index is rebuilt empty with one log line, never a crash; the
files it described are discarded with it."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from gateway.cache.index import CacheIndex
from tests.cache.cache_support import (
    STUDY,
    data_files,
    new_cache,
    put,
    put_series,
    warnings_from_cache,
)


async def _fill(root: Path) -> list[str]:
    async with new_cache(root) as cache:
        return await put_series(cache, "1.1", 3)


async def _reopen_and_check_empty(root: Path, sops: list[str]) -> None:
    async with new_cache(root) as cache:
        assert cache.enabled
        assert cache.stats.bytes == 0
        assert data_files(root) == []
        assert [await cache.lookup(sop) for sop in sops] == [None] * len(sops)
        assert await cache.series_instances(STUDY, "1.1") is None
        await put(cache, "1.1", sops[0])  # and it works again
        assert await cache.lookup(sops[0]) is not None
        await cache.housekeeping()
        assert list((root / "trash").iterdir()) == []


def test_a_deleted_index_starts_an_empty_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        sops = await _fill(tmp_path)
        for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        await _reopen_and_check_empty(tmp_path, sops)

    with caplog.at_level(logging.WARNING, logger="gateway.cache"):
        asyncio.run(main())
    (warning,) = warnings_from_cache(caplog)
    assert "missing" in warning


def test_a_first_start_logs_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.cache"):
        asyncio.run(_fill(tmp_path))
    assert warnings_from_cache(caplog) == []


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"this is not a database" * 100), id="garbage"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:1500]), id="truncated"),
        pytest.param(
            lambda p: sqlite3.connect(p).execute("PRAGMA user_version = 99").connection.commit(),
            id="unknown-schema",
        ),
    ],
)
def test_a_corrupt_index_is_rebuilt_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    async def main() -> None:
        sops = await _fill(tmp_path)
        assert callable(damage)
        damage(tmp_path / "index.sqlite")
        await _reopen_and_check_empty(tmp_path, sops)

    with caplog.at_level(logging.WARNING, logger="gateway.cache"):
        asyncio.run(main())
    assert len(warnings_from_cache(caplog)) == 1


def test_corruption_found_while_running_rebuilds_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_lookup = CacheIndex.lookup
    broken = [True]

    def malformed(self: CacheIndex, sop_uid: str) -> object:
        if broken:
            broken.clear()
            raise sqlite3.DatabaseError("database disk image is malformed")
        return real_lookup(self, sop_uid)

    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            sops = await put_series(cache, "1.1", 3)
            monkeypatch.setattr(CacheIndex, "lookup", malformed)
            results = await asyncio.gather(*(cache.lookup(sop) for sop in sops))
            assert results == [None, None, None]  # one failed, the rest found nothing
            assert data_files(tmp_path) == []
            assert cache.stats.bytes == 0 and cache.enabled
            await put(cache, "1.1", sops[0])
            assert await cache.lookup(sops[0]) is not None

    with caplog.at_level(logging.WARNING, logger="gateway.cache"):
        asyncio.run(main())
    (warning,) = warnings_from_cache(caplog)
    assert "corrupt" in warning
