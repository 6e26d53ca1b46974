"""The gateway itself, served by Hypercorn on a free port in a background thread.

Tests talk to it over real HTTP with ``requests``, as a viewer would; the PACS
behind it is a real one (Orthanc, dcmqrscp) or a pynetdicom fault peer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import requests
from hypercorn.asyncio import serve
from hypercorn.config import Config

from gateway.cli import read_larger_chunks
from gateway.config import PacsConfig, Settings
from gateway.malloc_tuning import keep_freed_memory
from gateway.web.app import create_app
from tests.peers.ports import free_port


class GatewayServer:
    """One gateway app with its own event loop thread; ``url`` is the DICOMweb root."""

    def __init__(self, pacs: PacsConfig | tuple[PacsConfig, ...], **settings: Any) -> None:
        pacs_tuple = pacs if isinstance(pacs, tuple) else (pacs,)
        self.port = free_port()
        self.settings = Settings(host="127.0.0.1", port=self.port, pacs=pacs_tuple, **settings)
        self.app = create_app(self.settings)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"gateway-{self.port}", daemon=True)
        self._error: BaseException | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.root + self.settings.base_path

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        read_larger_chunks()  # as ``gateway serve`` does: tests read bodies as production does
        keep_freed_memory()  # and allocate as it does
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.accesslog = None
        config.errorlog = None

        async def main() -> None:
            self._stop = asyncio.Event()
            await serve(self.app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc

    def start(self, timeout: float = 10.0) -> GatewayServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._error is not None:
                raise RuntimeError(f"gateway failed to start: {self._error!r}")
            try:
                if requests.get(self.root + "/healthz", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"gateway did not answer /healthz within {timeout} s")

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the gateway's loop (to inspect pools from a test)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
