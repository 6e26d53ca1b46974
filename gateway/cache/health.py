"""Whether the cache's storage takes writes, and the one log line when it stops.

A full disk or a read-only mount fails every write, and a series retrieve makes
hundreds of them: the log must say it once, not once per instance. So the first
failure logs a warning and opens a quiet period; during it new writers are
no-ops (requests are served straight from the PACS), except one probe per
``retry_seconds`` that tries for real. Failures while already failing are
silent; the first success logs one line saying writes work again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


class StorageHealth:
    """Shared by every writer of one cache; event-loop thread only."""

    def __init__(
        self,
        root: Path,
        retry_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._root = root
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._failing = False
        self._retry_at = 0.0
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self._failing

    def writable(self) -> bool:
        """Whether a new writer should try the disk; while failing, one per retry period."""
        if not self._failing:
            return True
        now = self._clock()
        if now < self._retry_at:
            return False
        self._retry_at = now + self._retry_seconds
        return True

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self._failing:
            log.debug("instance cache write failed again: %s", exc)
            return
        self._failing = True
        self._retry_at = self._clock() + self._retry_seconds
        log.warning(
            "instance cache under %s stopped taking writes (%s); serving straight from the PACS,"
            " retrying every %gs",
            self._root,
            exc,
            self._retry_seconds,
        )

    def succeeded(self) -> None:
        if self._failing:
            self._failing = False
            log.info("instance cache under %s takes writes again", self._root)
