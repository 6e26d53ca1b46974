"""Write one file so that nobody ever sees it half written.

The bytes go to a temporary file in the final directory; ``commit()`` closes it
(fsync optional) and hands it to a *publish* callback that renames it into place
and records it in the index, in one step on the index thread. ``abort()`` (or
leaving the ``async with`` block without ``commit()``: a PACS abort, an exception,
a cancelled request) deletes the temporary file.

The cache must never fail a request, so an ``OSError`` here (disk full, read-only
file system, permission denied, a root that is not a directory) does not
propagate: it is reported once to ``StorageHealth``, the temporary file is
removed, and the writer becomes a no-op for the rest of the instance while the
caller keeps streaming from the PACS.

File I/O runs in worker threads (``asyncio.to_thread``), never on the event loop.
Small chunks are gathered up to ``COALESCE_BYTES`` first, so that a PACS sending
small PDVs does not cost one thread hop per PDV.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Generic, Literal, TypeVar

from gateway.cache.health import StorageHealth
from gateway.cache.layout import temp_path

log = logging.getLogger(__name__)

R = TypeVar("R")

COALESCE_BYTES = 256 * 1024

NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
"""A temporary file is always new: another writer's is never reused."""

Chunk = bytes | bytearray | memoryview

_State = Literal["writing", "disabled", "publishing", "committed", "aborted"]

Publish = Callable[[Path, int], Awaitable[R | None]]
"""``publish(temp_path, size)``: rename into place and index; None if it did not
(it reported why); it deletes nothing, the writer removes the temporary file."""


class AtomicWriter(Generic[R]):
    """One file being written; see the module docstring. Event-loop thread only."""

    def __init__(
        self,
        final: Path,
        publish: Publish[R],
        health: StorageHealth,
        *,
        enabled: bool = True,
        fsync: bool = False,
    ) -> None:
        self.final = final
        self._publish = publish
        self._health = health
        self._fsync = fsync
        self._state: _State = "writing" if enabled else "disabled"
        self._pending = bytearray()
        self._size = 0
        # Owned by worker threads; the lock orders a write still running in a thread
        # after its caller was cancelled against the abort that follows.
        self._lock = threading.Lock()
        self._tmp: Path | None = None
        self._fd: int | None = None
        self._discarded = False

    @property
    def active(self) -> bool:
        """Whether bytes are still going to disk (False once disabled by a failure)."""
        return self._state == "writing"

    @property
    def size(self) -> int:
        """Bytes passed to ``write`` so far."""
        return self._size

    async def __aenter__(self) -> AtomicWriter[R]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.abort()

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Append ``chunk``; a no-op once the writer is disabled."""
        if self._state != "writing":
            if self._state in ("committed", "aborted"):
                raise RuntimeError(f"write after {self._state}")
            return
        self._size += len(chunk)
        if len(chunk) >= COALESCE_BYTES:
            # A large chunk goes straight to disk: one more write, not a copy.
            if self._pending:
                await self._flush_pending()
            await self._to_disk(chunk)
            return
        self._pending += chunk
        if len(self._pending) >= COALESCE_BYTES:
            await self._flush_pending()

    async def commit(self) -> R | None:
        """Publish the file; returns what the cache recorded, or None if nothing was
        (writer disabled, nothing written, or the cache refused it)."""
        if self._state == "disabled":
            return None
        if self._state != "writing":
            raise RuntimeError(f"commit after {self._state}")
        await self._flush_pending()
        if self._state != "writing" or self._tmp is None:
            await self.abort()
            return None
        self._state = "publishing"
        try:
            await asyncio.to_thread(self._close)
        except OSError as exc:
            await self._fail(exc)
            return None
        try:
            result = await self._publish(self._tmp, self._size)
        except BaseException:  # cancelled: whatever was not renamed into place goes
            self._state = "aborted"
            await self._discard()
            raise
        if result is None:
            self._state = "aborted"
            await self._discard()
            return None
        self._state = "committed"
        return result

    async def abort(self) -> None:
        """Drop what was written; nothing of it is visible. Idempotent."""
        if self._state in ("committed", "aborted"):
            return
        self._state = "aborted"
        self._pending = bytearray()
        await self._discard()

    async def _flush_pending(self) -> None:
        if self._pending:
            data, self._pending = self._pending, bytearray()
            await self._to_disk(data)

    async def _to_disk(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await asyncio.to_thread(self._append, data)
        except OSError as exc:
            await self._fail(exc)

    async def _fail(self, exc: OSError) -> None:
        self._health.failed(exc)
        self._state = "disabled"
        self._pending = bytearray()
        await self._discard()

    async def _discard(self) -> None:
        # Shielded: if the caller is cancelled meanwhile, the clean-up still runs.
        await asyncio.shield(asyncio.to_thread(self._discard_sync))

    # -- worker threads --------------------------------------------------------

    def _append(self, data: bytes | bytearray | memoryview) -> None:
        with self._lock:
            if self._discarded:
                return
            if self._fd is None:
                self.final.parent.mkdir(parents=True, exist_ok=True)
                self._tmp = temp_path(self.final)
                self._fd = os.open(self._tmp, NEW_FILE_FLAGS, 0o644)
            write_all(self._fd, (data,))

    def _close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                try:
                    if self._fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)

    def _discard_sync(self) -> None:
        with self._lock:
            self._discarded = True
            fd, self._fd = self._fd, None
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if self._tmp is not None:
                try:
                    self._tmp.unlink(missing_ok=True)
                except OSError as exc:  # the sweep at the next start removes it
                    log.debug("could not remove %s: %s", self._tmp, exc)


def write_all(fd: int, chunks: Iterable[Chunk]) -> None:
    """Write every byte of ``chunks`` to ``fd`` (``os.write`` may write less)."""
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
