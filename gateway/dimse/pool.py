"""A bounded pool of associations to one PACS, keyed by context profile.

Opening an association costs a TCP handshake plus A-ASSOCIATE (5 ms or more
here, ten times a C-ECHO on an open one), so sequential operations reuse
them.  Rules (issue 2, DESIGN.md section 2):

- at most ``max_size`` associations open at once, whatever their profile;
- an association goes back to the pool only when the operation ended cleanly
  and nothing is left unread; one that failed, timed out or was cancelled
  mid-operation is aborted, never reused;
- idle associations are released after ``idle_seconds``;
- after the PACS refused or could not be reached, new associations fail fast
  with the same error for ``backoff_seconds``, then the next request tries
  again, so the pool recovers by itself when the PACS comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.dimse.contexts import ContextProfile
from gateway.dimse.errors import (
    AssociationRefused,
    DimseError,
    NoAcceptableContext,
    PeerUnreachable,
    PoolExhausted,
)
from gateway.dimse.requestor import Association, Peer, Timeouts, associate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolSettings:
    calling_aet: str
    timeouts: Timeouts
    max_size: int = 8
    idle_seconds: float = 60.0
    backoff_seconds: float = 2.0
    max_pdu_length: int = 1048576


class AssociationPool:
    """Associations to one peer; ``acquire(profile)`` lends one to a single operation."""

    def __init__(self, peer: Peer, settings: PoolSettings) -> None:
        self.peer = peer
        self.settings = settings
        self._idle: dict[str, deque[Association]] = {}
        self._open = 0
        self._in_use = 0
        self._changed = asyncio.Condition()
        self._down_until = 0.0
        self._down_error: DimseError | None = None
        self._closed = False
        self._background: set[asyncio.Task[None]] = set()

    @property
    def size(self) -> int:
        """Associations open now (idle plus in use)."""
        return self._open

    @property
    def in_use(self) -> int:
        return self._in_use

    def _retire(self, assoc: Association) -> None:
        """Release an idle association in the background; it no longer counts."""
        task = asyncio.get_running_loop().create_task(assoc.release(self.settings.timeouts.release))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _take_idle(self, profile: ContextProfile) -> Association | None:
        now = time.monotonic()
        queue = self._idle.get(profile.name)
        while queue:
            assoc = queue.pop()  # most recently used first: the warmest socket
            if assoc.is_idle and now - assoc.last_used < self.settings.idle_seconds:
                return assoc
            self._open -= 1
            self._retire(assoc)
        return None

    def _evict_other_profile(self, keep: str) -> bool:
        for name, queue in self._idle.items():
            if name != keep and queue:
                self._open -= 1
                self._retire(queue.popleft())
                return True
        return False

    def expire_idle(self) -> int:
        """Release idle associations past their idle time; returns how many."""
        now = time.monotonic()
        n = 0
        for queue in self._idle.values():
            keep = deque(
                a for a in queue if a.is_idle and now - a.last_used < self.settings.idle_seconds
            )
            for assoc in queue:
                if assoc not in keep:
                    self._open -= 1
                    self._retire(assoc)
                    n += 1
            queue.clear()
            queue.extend(keep)
        return n

    async def _reserve(self, profile: ContextProfile) -> Association | None:
        """An idle association, or None with a slot reserved for a new one."""
        async with self._changed:
            while True:
                if self._closed:
                    raise DimseError("pool closed")
                assoc = self._take_idle(profile)
                if assoc is not None:
                    self._in_use += 1
                    return assoc
                if self._open < self.settings.max_size or self._evict_other_profile(profile.name):
                    self._open += 1
                    self._in_use += 1
                    return None
                await self._changed.wait()

    def _give_back(
        self, assoc: Association | None, reusable: bool, profile: ContextProfile
    ) -> None:
        """The slot's bookkeeping, without an await: nothing can cancel it half-way.

        Everything that changes these counters runs without awaiting in
        between, so the lock is not needed for them; it is for the waiters.
        """
        self._in_use -= 1
        if assoc is not None and reusable and assoc.is_idle and not self._closed:
            self._idle.setdefault(profile.name, deque()).append(assoc)
        else:
            self._open -= 1
            if assoc is not None and assoc.is_established:
                self._retire(assoc)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify()

    async def _connect(self, profile: ContextProfile) -> Association:
        if time.monotonic() < self._down_until and self._down_error is not None:
            raise type(self._down_error)(f"{self._down_error} (backing off)")
        try:
            assoc = await associate(
                self.peer,
                self.settings.calling_aet,
                profile,
                timeouts=self.settings.timeouts,
                max_pdu_length=self.settings.max_pdu_length,
            )
        except NoAcceptableContext:
            raise  # the PACS is up; it only does not take these contexts
        except (AssociationRefused, PeerUnreachable) as exc:
            self._down_until = time.monotonic() + self.settings.backoff_seconds
            self._down_error = exc
            log.warning("PACS %s: %s", self.peer.aet, exc)
            raise
        self._down_until = 0.0
        self._down_error = None
        return assoc

    @contextlib.asynccontextmanager
    async def acquire(self, profile: ContextProfile) -> AsyncIterator[Association]:
        """Lend an association for one operation.

        If the block raises (or is cancelled), the association is aborted: its
        state on the wire is unknown.  Operations that end cleanly leave it
        idle and it returns to the pool.
        """
        try:
            async with asyncio.timeout(self.settings.timeouts.dimse):
                assoc = await self._reserve(profile)
        except TimeoutError:
            raise PoolExhausted(
                f"all {self.settings.max_size} associations to {self.peer.aet} stayed busy "
                f"for {self.settings.timeouts.dimse:g} s"
            ) from None
        reusable = False
        try:
            if assoc is None:
                assoc = await self._connect(profile)
            yield assoc
            reusable = True
        except GeneratorExit:
            # A consumer closed the async generator we were lent to: not a failure.
            reusable = assoc is not None and assoc.is_idle
            raise
        except BaseException:
            if assoc is not None:
                assoc.abort()
            raise
        finally:
            self._give_back(assoc, reusable, profile)
            # Nobody holds the lock across an await, so nobody queues for it and
            # taking it does not suspend: the notify needs no shield task (whose
            # loop iterations cost 40 us median between a C-STORE-RSP and the next
            # C-STORE into dcmqrscp). The shield stays for a lock found held.
            if self._changed.locked():
                await asyncio.shield(self._notify())
            else:
                await self._notify()

    async def close(self) -> None:
        """Release every idle association (in-use ones are aborted by their owners)."""
        async with self._changed:
            self._closed = True
            idle = [a for q in self._idle.values() for a in q]
            self._idle.clear()
            self._open -= len(idle)
            self._changed.notify_all()
        await asyncio.gather(
            *(a.release(self.settings.timeouts.release) for a in idle), return_exceptions=True
        )
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
