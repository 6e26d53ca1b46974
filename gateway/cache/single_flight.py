"""Single flight: concurrent callers for one key share one running operation.

Ten viewers opening the same series at once must cause one retrieve from the
PACS, not ten (DESIGN.md section 5). Two front ends over one registry:

``SingleFlight[K, T]``
    ``await flights.do(key, operation)``: the first caller for ``key`` starts
    ``operation()`` as a task; callers arriving while it runs wait for the same
    task and get the same result or the same exception.

``StreamFlight[K, T]``
    ``async with flights.subscribe(key, produce) as items: async for item in
    items``: for operations that yield results over time (a C-GET delivers the
    instances of a series one by one). The first subscriber starts ``produce()``;
    every subscriber, however late it joins, sees every item from the first one
    and then follows live, through a ``SharedStream``.

Rules, the same for both:

- The operation runs as its own task, so a caller that is cancelled (a client
  that hangs up) does not cancel it while other callers still wait; when the
  *last* caller leaves, the operation is cancelled, since nobody wants it.
- A flight ends with its operation: success or failure, the key is free again,
  so the next call starts a new operation (a failure is retried, a success is
  not remembered: remembering is the cache's job).
- If the operation is cancelled by someone else (shutdown), waiters get
  ``FlightCancelled`` rather than a ``CancelledError`` they did not ask for.

A ``SharedStream`` keeps every item for as long as a reader may want to replay
it, so items must be small references (cached paths, UIDs), never the bytes of
instances: the disk is the buffer (the retriever's items hold an instance's
bytes only until its cache write is done, or for good if that write fails).
This also means a shared retrieve runs at the PACS's pace, not the slowest
client's.

Event-loop only (no threads); no state outside the objects, so an app keeps one
registry per kind of operation in its state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Hashable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
F = TypeVar("F", bound="_Flight[Any]")


class FlightCancelled(Exception):
    """The shared operation was cancelled by something other than its callers leaving."""


class _Flight(Generic[T]):
    """One running operation and the number of callers still interested in it."""

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self.task: asyncio.Task[T] = asyncio.get_running_loop().create_task(coro)
        self.users = 0


class _Registry(Generic[K, F]):
    """Flights by key, each cancelled when its last user leaves."""

    def __init__(self) -> None:
        self._flights: dict[K, F] = {}

    def users(self, key: K) -> int:
        flight = self._flights.get(key)
        return 0 if flight is None else flight.users

    def __len__(self) -> int:
        return len(self._flights)

    def join(self, key: K, start: Callable[[], F]) -> F:
        flight = self._flights.get(key)
        if flight is None or flight.task.done():
            flight = start()
            self._flights[key] = flight
            flight.task.add_done_callback(partial(self._ended, key, flight))
        flight.users += 1
        return flight

    def leave(self, key: K, flight: F) -> None:
        flight.users -= 1
        if flight.users == 0 and not flight.task.done():
            self._forget(key, flight)  # a new caller must not join a dying flight
            flight.task.cancel()

    def _ended(self, key: K, flight: F, task: asyncio.Task[Any]) -> None:
        self._forget(key, flight)
        if not task.cancelled():
            task.exception()  # retrieved here, so no "never retrieved" if all left

    def _forget(self, key: K, flight: F) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]


async def _await(operation: Callable[[], Awaitable[T]]) -> T:
    return await operation()


class SingleFlight(Generic[K, T]):
    """One running ``operation`` per key, shared by all concurrent callers."""

    def __init__(self) -> None:
        self._registry: _Registry[K, _Flight[T]] = _Registry()

    def waiters(self, key: K) -> int:
        """Callers waiting on ``key`` now (0 when nothing runs for it)."""
        return self._registry.users(key)

    def __len__(self) -> int:
        """Keys with an operation running."""
        return len(self._registry)

    async def do(self, key: K, operation: Callable[[], Awaitable[T]]) -> T:
        """The result of the operation running for ``key``, starting ``operation()``
        if none is; exceptions of the operation are raised to every caller."""
        flight = self._registry.join(key, lambda: _Flight(_await(operation)))
        try:
            # wait() neither cancels the task when this caller is cancelled nor
            # raises when the task is: both are decided below.
            await asyncio.wait((flight.task,))
        finally:
            self._registry.leave(key, flight)
        if flight.task.cancelled():
            raise FlightCancelled(f"shared operation for {key!r} was cancelled")
        return flight.task.result()


class SharedStream(Generic[T]):
    """An append-only list of items with an end; each reader replays from the first
    item, then follows live until the end (or the producer's error)."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._closed = False
        self._error: BaseException | None = None
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, item: T) -> None:
        if self._closed:
            raise RuntimeError("append to a closed SharedStream")
        self._items.append(item)
        self._wake()

    def close(self, error: BaseException | None = None) -> None:
        """End the stream; readers raise ``error`` after the last item, if given."""
        if not self._closed:
            self._closed = True
            self._error = error
            self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def __aiter__(self) -> AsyncIterator[T]:
        return self.follow()

    async def follow(self) -> AsyncIterator[T]:
        """Every item from the first, then new ones as they come."""
        position = 0
        while True:
            if position < len(self._items):
                position += 1
                yield self._items[position - 1]
            elif self._closed:
                if self._error is not None:
                    raise self._error
                return
            else:
                await self._changed.wait()


class _StreamFlight(_Flight[None], Generic[T]):
    def __init__(self, produce: Callable[[], AsyncIterator[T]]) -> None:
        self.stream: SharedStream[T] = SharedStream()
        super().__init__(self._pump(produce))

    async def _pump(self, produce: Callable[[], AsyncIterator[T]]) -> None:
        items = produce()
        try:
            async for item in items:
                self.stream.append(item)
        except asyncio.CancelledError:
            self.stream.close(FlightCancelled("shared stream was cancelled"))
            raise
        except Exception as exc:
            self.stream.close(exc)
        else:
            self.stream.close()
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()


class StreamFlight(Generic[K, T]):
    """One running producer per key; every subscriber sees all of its items."""

    def __init__(self) -> None:
        self._registry: _Registry[K, _StreamFlight[T]] = _Registry()

    def subscribers(self, key: K) -> int:
        return self._registry.users(key)

    def __len__(self) -> int:
        return len(self._registry)

    @asynccontextmanager
    async def subscribe(
        self, key: K, produce: Callable[[], AsyncIterator[T]]
    ) -> AsyncIterator[AsyncIterator[T]]:
        """Join (or start) the producer for ``key``; the block gets an iterator over
        all its items. Leaving the block leaves the flight; the last one to leave
        before the producer ends cancels it."""
        flight = self._registry.join(key, lambda: _StreamFlight(produce))
        try:
            yield flight.stream.follow()
        finally:
            self._registry.leave(key, flight)
