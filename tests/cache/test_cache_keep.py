"""``InstanceCache.keep``: whole instances queued to the cache's writer thread and
published to the index in batches. What must hold: a kept instance is whole or
absent, ``settled``/``mark_series_complete`` see everything kept before them, the
queue bounds the bytes it holds, and failures resolve to None with one warning,
leaving no file behind."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.cache import InstanceCache
from gateway.cache.worker import IndexWorker
from tests.cache.cache_support import (
    EXPLICIT_LE,
    STUDY,
    data_files,
    fail_under,
    new_cache,
    payload,
    temp_files,
    warnings_from_cache,
)

SERIES = "1.2.3.4"


def _keep(cache: InstanceCache, sop: str, *chunks: bytes) -> Any:
    return cache.keep(STUDY, SERIES, sop, EXPLICIT_LE, chunks)


def _block_writes(monkeypatch: pytest.MonkeyPatch, root: Path) -> threading.Event:
    """Hold every os.write to a file under ``root`` until the returned event is set."""
    go_on = threading.Event()
    real_open, real_write = os.open, os.write
    ours: set[int] = set()

    def tracking_open(path: Any, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, *args, **kwargs)
        if str(path).startswith(str(root)):
            ours.add(fd)
        return fd

    def held_write(fd: int, data: Any) -> int:
        if fd in ours:
            assert go_on.wait(30), "the test never released the writes"
        return real_write(fd, data)

    monkeypatch.setattr(os, "open", tracking_open)
    monkeypatch.setattr(os, "write", held_write)
    return go_on


def test_a_kept_instance_is_the_chunks_joined_under_its_final_name(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            head, body = b"META" * 10, payload("1.2.3.4.5", 300_000)
            cached = await (await _keep(cache, "1.2.3.4.5", head, body))
            assert cached is not None
            assert cached.path.read_bytes() == head + body
            assert cached.path.name == "1.2.3.4.5.dcm"
            assert (cached.size, cached.transfer_syntax) == (len(head) + len(body), EXPLICIT_LE)
            assert await cache.lookup("1.2.3.4.5") == cached
            assert cache.stats.bytes == cached.size
            assert temp_files(tmp_path) == []

    asyncio.run(main())


def test_a_series_is_published_in_batches_not_one_commit_per_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs: list[int] = []
    real = IndexWorker.publish_many

    def counting(self: IndexWorker, written: Any) -> Any:
        jobs.append(len(written))
        return real(self, written)

    monkeypatch.setattr(IndexWorker, "publish_many", counting)
    n = 100

    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            sops = [f"{SERIES}.{i}" for i in range(n)]
            futures = [await _keep(cache, sop, payload(sop, 20_000)) for sop in sops]
            results = await asyncio.gather(*futures)
            assert [r.sop_uid if r else None for r in results] == sops
            for sop, cached in zip(sops, results, strict=True):
                assert cached is not None and cached.path.read_bytes() == payload(sop, 20_000)

    asyncio.run(main())
    assert sum(jobs) == n
    # Queued faster than written: the thread finds several waiting at each publish.
    assert len(jobs) < n // 4, jobs


def test_mark_series_complete_sees_instances_still_in_the_queue(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            sops = [f"{SERIES}.{i}" for i in range(20)]
            futures = [await _keep(cache, sop, payload(sop, 50_000)) for sop in sops]
            assert not all(f.done() for f in futures)  # the writes are behind the caller
            assert await cache.mark_series_complete(STUDY, SERIES, sops)
            assert all(f.done() for f in futures)
            async with cache.reading_series(STUDY, SERIES) as series:
                assert series is not None
                assert sorted(i.sop_uid for i in series) == sorted(sops)

    asyncio.run(main())


def test_settled_waits_for_what_was_kept_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            go_on = _block_writes(monkeypatch, tmp_path)
            written = await _keep(cache, "1.2.3.4.5", b"x" * 1000)
            settled = asyncio.ensure_future(cache.settled())
            await asyncio.sleep(0.2)
            assert not settled.done() and not written.done()
            go_on.set()
            await asyncio.wait_for(settled, 10)
            assert written.done() and written.result() is not None
            assert await cache.lookup("1.2.3.4.5") is not None

    asyncio.run(main())


def test_the_queue_holds_at_most_its_byte_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            assert cache._writes is not None
            monkeypatch.setattr(cache._writes, "_max_queued_bytes", 1500)
            go_on = _block_writes(monkeypatch, tmp_path)
            first = await _keep(cache, "1.2.3.4.1", b"a" * 1000)
            second = await _keep(cache, "1.2.3.4.2", b"b" * 1000)  # 1000 queued <= 1500
            third = asyncio.ensure_future(_keep(cache, "1.2.3.4.3", b"c" * 1000))
            await asyncio.sleep(0.2)
            assert not third.done()  # 2000 queued: waits for room
            assert cache._writes.queued_bytes == 2000
            go_on.set()
            kept = await asyncio.wait_for(await asyncio.wait_for(third, 10), 10)
            assert kept is not None and await first is not None and await second is not None
            assert cache._writes.queued_bytes == 0

    asyncio.run(main())


@pytest.mark.parametrize(
    ("call", "err"),
    [
        pytest.param("open", errno.EACCES, id="open-fails"),
        pytest.param("write", errno.ENOSPC, id="disk-full"),
        pytest.param("replace", errno.EROFS, id="rename-fails"),
    ],
)
def test_a_failed_write_is_none_with_one_warning_and_no_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    call: str,
    err: int,
) -> None:
    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            fail_under(monkeypatch, tmp_path, call, err)
            futures = [await _keep(cache, f"{SERIES}.{i}", b"x" * 5000) for i in range(10)]
            assert await asyncio.gather(*futures) == [None] * 10
            assert not cache.writable
            assert (await _keep(cache, f"{SERIES}.99", b"y")).result() is None  # no retry yet
            assert await cache.lookup(f"{SERIES}.1") is None
            assert not await cache.mark_series_complete(STUDY, SERIES, [f"{SERIES}.1"])

    with caplog.at_level(logging.WARNING, logger="gateway.cache"):
        asyncio.run(main())
    assert len(warnings_from_cache(caplog)) == 1
    assert data_files(tmp_path) == []


def test_a_failed_index_job_unpublishes_its_whole_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(self: Any, rows: Any) -> Any:
        raise sqlite3.OperationalError("database or disk is full")

    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            monkeypatch.setattr("gateway.cache.index.CacheIndex.record_many", refuse)
            futures = [await _keep(cache, f"{SERIES}.{i}", b"x" * 5000) for i in range(10)]
            assert await asyncio.gather(*futures) == [None] * 10
            assert cache.stats.bytes == 0
            monkeypatch.undo()
            assert await cache.lookup(f"{SERIES}.1") is None

    with caplog.at_level(logging.WARNING, logger="gateway.cache"):
        asyncio.run(main())
    assert len(warnings_from_cache(caplog)) == 1
    assert data_files(tmp_path) == []


def test_close_drops_what_is_not_written_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        cache = new_cache(tmp_path)
        await cache.open()
        go_on = _block_writes(monkeypatch, tmp_path)
        futures = [await _keep(cache, f"{SERIES}.{i}", b"x" * 1000) for i in range(5)]
        closing = asyncio.ensure_future(cache.close())
        await asyncio.sleep(0.1)
        go_on.set()
        await asyncio.wait_for(closing, 10)
        assert all(f.done() for f in futures)
        assert [f.result() for f in futures] == [None] * 5  # closed before any publish
        assert (await _keep(cache, f"{SERIES}.9", b"y")).result() is None

    asyncio.run(main())
    assert temp_files(tmp_path) == []


def test_a_wipe_under_queued_writes_loses_nothing_it_should_keep(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            futures = [
                await _keep(cache, f"{SERIES}.{i}", payload(f"{SERIES}.{i}", 30_000))
                for i in range(30)
            ]
            await cache.wipe()
            results = await asyncio.gather(*futures)
            # Whatever the index names after the wipe is whole; the rest is a miss.
            found = [await cache.lookup(f"{SERIES}.{i}") for i in range(30)]
            for i, hit in enumerate(found):
                if hit is not None:
                    assert hit == results[i]
                    assert hit.path.read_bytes() == payload(f"{SERIES}.{i}", 30_000)
            # An estimate: a batch published after the wipe but handed back before
            # it finished is not counted until the next eviction pass recounts.
            assert cache.stats.bytes <= sum(h.size for h in found if h is not None)
            assert temp_files(tmp_path) == []

    asyncio.run(main())


def test_an_unexpected_error_in_a_write_fails_that_instance_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not an OSError (a bug, MemoryError): the instance is not cached, it is logged,
    and the writer thread lives on: nobody waits for ever."""
    import gateway.cache.write_queue as wq

    real = wq.write_all
    calls: list[int] = []

    def once_broken(fd: int, chunks: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("scratch")
        real(fd, chunks)

    monkeypatch.setattr(wq, "write_all", once_broken)

    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            broken = await _keep(cache, f"{SERIES}.1", b"x" * 1000)
            assert await asyncio.wait_for(broken, 10) is None
            await asyncio.wait_for(cache.settled(), 10)
            fine = await _keep(cache, f"{SERIES}.2", b"y" * 1000)
            assert await asyncio.wait_for(fine, 10) is not None

    with caplog.at_level(logging.ERROR, logger="gateway.cache"):
        asyncio.run(main())
    assert any(r.exc_info and "scratch" in str(r.exc_info[1]) for r in caplog.records)
    assert temp_files(tmp_path) == []


def test_a_failing_disk_is_reported_at_once_not_after_the_retrieve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instances keep coming every few ms while every write fails: the first failure
    goes back at once (the cache stops taking writes), it does not wait for a lull
    or a full batch."""

    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            fail_under(monkeypatch, tmp_path, "write", errno.ENOSPC)
            first = await _keep(cache, f"{SERIES}.0", b"x" * 5000)
            for i in range(1, 40):
                await asyncio.sleep(0.005)
                if first.done():
                    break
                await _keep(cache, f"{SERIES}.{i}", b"x" * 5000)
            assert first.done(), "the failure waited for the instances to stop coming"
            assert first.result() is None
            assert not cache.writable

    asyncio.run(main())


@pytest.mark.parametrize("handed_back", ["after the wipe", "while it runs"])
def test_an_instance_published_before_a_wipe_is_not_counted_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handed_back: str
) -> None:
    """The outcome of a write published just before a wipe reaches the event loop
    after the wipe, or while the wipe coroutine has not resumed yet (the index is
    already empty): the wiped instance is neither counted nor handed out."""
    published = threading.Event()
    go_on = threading.Event()
    real = InstanceCache._publish_batch

    def slow_hand_back(self: InstanceCache, written: Any) -> Any:
        outcome = real(self, written)
        published.set()
        if handed_back == "after the wipe":
            assert go_on.wait(10)
        else:  # as soon as the index worker has emptied the index
            deadline = time.monotonic() + 10
            while self._worker.epoch == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
        return outcome

    monkeypatch.setattr(InstanceCache, "_publish_batch", slow_hand_back)

    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            kept = await _keep(cache, f"{SERIES}.1", b"x" * 5000)
            assert await asyncio.to_thread(published.wait, 10)
            await cache.wipe()
            go_on.set()
            assert await asyncio.wait_for(kept, 10) is None
            assert cache.stats.bytes == 0
            assert await cache.lookup(f"{SERIES}.1") is None

    asyncio.run(main())


def test_a_raising_hand_back_leaves_the_other_writes_of_its_batch_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = InstanceCache._published
    calls: list[int] = []

    def once_broken(self: InstanceCache, *args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("scratch")
        return real(self, *args)

    monkeypatch.setattr(InstanceCache, "_published", once_broken)

    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            futures = [await _keep(cache, f"{SERIES}.{i}", b"x" * 1000) for i in range(5)]
            results = await asyncio.wait_for(asyncio.gather(*futures), 10)
            assert results[0] is None and all(r is not None for r in results[1:])
            assert cache._writes is not None and cache._writes.queued_bytes == 0

    with caplog.at_level(logging.ERROR, logger="gateway.cache"):
        asyncio.run(main())
    assert any(r.exc_info and "scratch" in str(r.exc_info[1]) for r in caplog.records)


def test_an_outcome_handed_back_after_close_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch published just before ``close`` and handed back after it: the
    instance is not handed out, and no eviction starts on the closed index (the
    budget here is smaller than the instance, so counting it would start one)."""
    real = InstanceCache._publish_batch
    published = threading.Event()

    def after_close(self: InstanceCache, written: Any) -> Any:
        outcome = real(self, written)
        published.set()
        deadline = time.monotonic() + 10
        while self.enabled and time.monotonic() < deadline:
            time.sleep(0.001)
        return outcome

    monkeypatch.setattr(InstanceCache, "_publish_batch", after_close)

    async def main() -> None:
        cache = new_cache(tmp_path, budget=1000)
        await cache.open()
        kept = await _keep(cache, f"{SERIES}.1", b"x" * 5000)
        assert await asyncio.to_thread(published.wait, 10)  # published, not handed back
        await cache.close()
        assert await asyncio.wait_for(kept, 10) is None
        assert cache._eviction is None

    asyncio.run(main())
