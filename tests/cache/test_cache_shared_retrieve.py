"""The pieces together, as the retrieve service is meant to use them: concurrent
requests for one series share one retrieve that writes into the cache and passes
cached paths on; once it completes, requests are served without the PACS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.cache import CachedInstance, InstanceCache, StreamFlight
from tests.cache.cache_support import EXPLICIT_LE, STUDY, new_cache, payload

SERIES = "1.2.3.4"
SOPS = [f"{SERIES}.{i}" for i in range(1, 6)]


class FakePacs:
    """A C-GET of a series: instances arrive one by one, in fragments, when released."""

    def __init__(self) -> None:
        self.retrieves = 0
        self.first_sent = asyncio.Event()
        self.go_on = asyncio.Event()

    async def retrieve(self, cache: InstanceCache) -> AsyncIterator[CachedInstance]:
        self.retrieves += 1
        for n, sop in enumerate(SOPS):
            data = payload(sop, 1000)
            async with cache.open_writer(STUDY, SERIES, sop, EXPLICIT_LE) as writer:
                for start in range(0, len(data), 300):
                    await writer.write(data[start : start + 300])
                instance = await writer.commit()
            assert instance is not None
            yield instance
            if n == 0:
                self.first_sent.set()
                await self.go_on.wait()
        await cache.mark_series_complete(STUDY, SERIES, SOPS)


async def serve_series(
    cache: InstanceCache,
    flights: StreamFlight[tuple[str, str], CachedInstance],
    pacs: FakePacs,
    joined: asyncio.Event | None = None,
) -> list[bytes]:
    """What a WADO-RS series handler does with the cache (``joined``: for the test)."""
    async with cache.reading_series(STUDY, SERIES) as cached:
        if cached is not None:
            return [i.path.read_bytes() for i in cached]
    async with (
        cache.pin_series(STUDY, SERIES),
        flights.subscribe((STUDY, SERIES), lambda: pacs.retrieve(cache)) as instances,
    ):
        if joined is not None:
            joined.set()
        return [i.path.read_bytes() async for i in instances]


def test_concurrent_requests_share_one_retrieve_then_hit_the_cache(tmp_path: Path) -> None:
    async def main() -> None:
        async with new_cache(tmp_path) as cache:
            flights: StreamFlight[tuple[str, str], CachedInstance] = StreamFlight()
            pacs = FakePacs()
            expected = [payload(sop, 1000) for sop in SOPS]
            early = [asyncio.create_task(serve_series(cache, flights, pacs)) for _ in range(3)]
            await pacs.first_sent.wait()
            joined = asyncio.Event()
            late = asyncio.create_task(serve_series(cache, flights, pacs, joined))
            await joined.wait()  # joined mid-way: it must still get the first instance
            assert flights.subscribers((STUDY, SERIES)) == 4
            pacs.go_on.set()
            assert await asyncio.gather(*early, late) == [expected] * 4
            assert pacs.retrieves == 1
            assert await serve_series(cache, flights, pacs) == expected
            assert pacs.retrieves == 1

    asyncio.run(main())
