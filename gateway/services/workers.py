"""A thread pool for codec work (decode, encode, transcode), off the event loop.

imagecodecs, OpenJPEG and zlib release the GIL while they work, so threads
give real parallelism for pixel work, and the event loop keeps streaming
other responses meanwhile (DESIGN.md section 4).  One pool per app, created
and shut down in the lifespan.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Workers:
    def __init__(self, threads: int | None = None) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=threads or max(2, os.cpu_count() or 2), thread_name_prefix="codec"
        )

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
