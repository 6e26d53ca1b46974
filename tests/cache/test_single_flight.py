"""SingleFlight, SharedStream and StreamFlight: one operation per key however many
callers, failures shared then retried, cancellation only when nobody is left.
Sequenced with events; no sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.cache.single_flight import FlightCancelled, SharedStream, SingleFlight, StreamFlight


class Operation:
    """A controllable operation: counts calls, reports start and cancellation, and
    finishes (or fails) when the test says so."""

    def __init__(self, result: str = "done") -> None:
        self.result = result
        self.calls = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.error: BaseException | None = None

    async def __call__(self) -> str:
        self.calls += 1
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        if self.error is not None:
            raise self.error
        return self.result


def test_concurrent_callers_share_one_call() -> None:
    async def main() -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        op = Operation()
        waiters = [asyncio.create_task(flights.do("series", op)) for _ in range(10)]
        await op.started.wait()
        assert flights.waiters("series") == 10 and len(flights) == 1
        op.release.set()
        assert await asyncio.gather(*waiters) == ["done"] * 10
        assert op.calls == 1
        assert len(flights) == 0 and flights.waiters("series") == 0

    asyncio.run(main())


def test_different_keys_do_not_share() -> None:
    async def main() -> None:
        flights: SingleFlight[tuple[str, str], str] = SingleFlight()
        a, b = Operation("a"), Operation("b")
        ta = asyncio.create_task(flights.do(("1", "1"), a))
        tb = asyncio.create_task(flights.do(("1", "2"), b))
        await a.started.wait()
        await b.started.wait()
        a.release.set()
        b.release.set()
        assert list(await asyncio.gather(ta, tb)) == ["a", "b"]

    asyncio.run(main())


def test_a_failure_reaches_every_waiter_and_the_next_call_retries() -> None:
    async def main() -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        failing = Operation()
        failing.error = ConnectionError("PACS down")
        waiters = [asyncio.create_task(flights.do("k", failing)) for _ in range(3)]
        await failing.started.wait()
        failing.release.set()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, ConnectionError) for r in results)
        retry = Operation("second")
        retry.release.set()
        assert await flights.do("k", retry) == "second"
        assert (failing.calls, retry.calls) == (1, 1)

    asyncio.run(main())


def test_a_call_after_success_starts_again() -> None:
    async def main() -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        op = Operation()
        op.release.set()
        assert await flights.do("k", op) == "done"
        assert await flights.do("k", op) == "done"
        assert op.calls == 2

    asyncio.run(main())


def test_one_waiter_cancelled_does_not_cancel_the_others() -> None:
    async def main() -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        op = Operation()
        leaving = asyncio.create_task(flights.do("k", op))
        staying = asyncio.create_task(flights.do("k", op))
        await op.started.wait()
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert flights.waiters("k") == 1 and not op.cancelled.is_set()
        op.release.set()
        assert await staying == "done"
        assert op.calls == 1

    asyncio.run(main())


def test_the_last_waiter_leaving_cancels_the_operation() -> None:
    async def main() -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        op = Operation()
        waiters = [asyncio.create_task(flights.do("k", op)) for _ in range(2)]
        await op.started.wait()
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        await op.cancelled.wait()
        assert len(flights) == 0
        fresh = Operation("fresh")  # a new caller starts a new operation
        fresh.release.set()
        assert await flights.do("k", fresh) == "fresh"

    asyncio.run(main())


def test_an_operation_cancelled_from_outside_is_reported_as_such() -> None:
    async def main() -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        started = asyncio.Event()
        inner: list[asyncio.Task[object]] = []

        async def operation() -> str:
            task = asyncio.current_task()
            assert task is not None
            inner.append(task)
            started.set()
            await asyncio.Event().wait()
            return "never"

        waiter = asyncio.create_task(flights.do("k", operation))
        await started.wait()
        inner[0].cancel()  # e.g. shutdown cancelling every task
        with pytest.raises(FlightCancelled):
            await waiter

    asyncio.run(main())


def test_shared_stream_readers_replay_then_follow() -> None:
    async def main() -> None:
        stream: SharedStream[str] = SharedStream()
        stream.append("a")
        stream.append("b")
        seen: list[str] = []
        got_b = asyncio.Event()

        async def read() -> list[str]:
            async for item in stream:
                seen.append(item)
                if item == "b":
                    got_b.set()
            return seen

        early = asyncio.create_task(read())
        await got_b.wait()
        stream.append("c")
        late = [item async for item in _until(stream, 3)]  # joins late: replays a, b, c
        stream.close()
        assert await early == ["a", "b", "c"]
        assert late == ["a", "b", "c"]
        assert [item async for item in stream] == ["a", "b", "c"]
        with pytest.raises(RuntimeError):
            stream.append("d")

    asyncio.run(main())


async def _until(stream: SharedStream[str], n: int) -> AsyncIterator[str]:
    count = 0
    async for item in stream:
        yield item
        count += 1
        if count == n:
            return


def test_shared_stream_error_comes_after_the_items() -> None:
    async def main() -> None:
        stream: SharedStream[int] = SharedStream()
        stream.append(1)
        stream.close(ConnectionError("A-ABORT"))
        seen: list[int] = []
        with pytest.raises(ConnectionError):
            async for item in stream:
                seen.append(item)
        assert seen == [1]

    asyncio.run(main())


def test_a_cancelled_reader_does_not_disturb_the_others() -> None:
    async def main() -> None:
        stream: SharedStream[int] = SharedStream()
        waiting = asyncio.Event()

        async def read() -> list[int]:
            waiting.set()
            return [item async for item in stream]

        victim = asyncio.create_task(read())
        other = asyncio.create_task(read())
        await waiting.wait()
        stream.append(1)
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        stream.append(2)
        stream.close()
        assert await other == [1, 2]

    asyncio.run(main())


class Producer:
    """A shared retrieve: yields item references when the test releases them."""

    def __init__(self) -> None:
        self.calls = 0
        self.ready: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        self.produced = asyncio.Event()
        self.closed = asyncio.Event()

    async def __call__(self) -> AsyncIterator[str]:
        self.calls += 1
        try:
            while (item := await self.ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
                self.produced.set()
        finally:
            self.closed.set()


def test_stream_flight_shares_one_producer_and_late_joiners_replay() -> None:
    async def main() -> None:
        flights: StreamFlight[str, str] = StreamFlight()
        producer = Producer()
        first_item = asyncio.Event()

        async def subscriber(signal: asyncio.Event | None = None) -> list[str]:
            async with flights.subscribe("series", producer) as items:
                seen = []
                async for item in items:
                    seen.append(item)
                    if signal is not None:
                        signal.set()
                return seen

        early = asyncio.create_task(subscriber(first_item))
        producer.ready.put_nowait("/cache/1.dcm")
        await first_item.wait()
        late = asyncio.create_task(subscriber())
        producer.ready.put_nowait("/cache/2.dcm")
        producer.ready.put_nowait(None)
        assert await early == ["/cache/1.dcm", "/cache/2.dcm"]
        assert await late == ["/cache/1.dcm", "/cache/2.dcm"]
        assert producer.calls == 1 and len(flights) == 0

    asyncio.run(main())


def test_stream_flight_failure_reaches_subscribers_and_the_next_one_retries() -> None:
    async def main() -> None:
        flights: StreamFlight[str, str] = StreamFlight()
        producer = Producer()
        producer.ready.put_nowait("a")
        producer.ready.put_nowait(ConnectionError("A-ABORT"))
        seen: list[str] = []
        with pytest.raises(ConnectionError):
            async with flights.subscribe("k", producer) as items:
                async for item in items:
                    seen.append(item)
        assert seen == ["a"]
        producer.ready.put_nowait("b")
        producer.ready.put_nowait(None)
        async with flights.subscribe("k", producer) as items:
            assert [item async for item in items] == ["b"]
        assert producer.calls == 2

    asyncio.run(main())


def test_stream_flight_cancels_the_producer_when_the_last_subscriber_leaves() -> None:
    async def main() -> None:
        flights: StreamFlight[str, str] = StreamFlight()
        producer = Producer()
        producer.ready.put_nowait("a")
        async with flights.subscribe("k", producer) as first:
            async with flights.subscribe("k", producer) as second:
                assert await anext(second) == "a"
            assert flights.subscribers("k") == 1 and not producer.closed.is_set()
            assert await anext(first) == "a"
        await producer.closed.wait()  # the producer's finally ran: cancelled
        assert len(flights) == 0

    asyncio.run(main())
