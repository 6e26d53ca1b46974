"""The Starlette application: routes, error mapping, and the resources' lifespan.

Everything with a lifetime (the PACS pools) is created and closed in the
lifespan and hangs off ``app.state``: no module-level state, so several apps
(tests, replicas) can live in one process (DESIGN.md section 8).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from gateway.config import Settings
from gateway.services.pacs import PacsDirectory
from gateway.services.workers import Workers
from gateway.web import qido_routes, stow_routes, wado_routes
from gateway.web.errors import EXCEPTION_HANDLERS
from gateway.web.health import healthz, readyz

log = logging.getLogger(__name__)


def dicomweb_routes() -> list[BaseRoute]:
    """The PS3.18 resources, mounted at the base path and under /aets/{aet}."""
    return [*qido_routes.routes(), *stow_routes.routes(), *wado_routes.routes()]


async def _expire_idle(directory: PacsDirectory, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        for client in directory.clients:
            client.pool.expire_idle()


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        directory = PacsDirectory(settings)
        app.state.pacs = directory
        app.state.workers = Workers()
        reaper = asyncio.create_task(
            _expire_idle(directory, max(settings.pool_idle_seconds / 2, 0.5))
        )
        try:
            yield
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            await directory.close()
            app.state.workers.close()

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Mount(settings.base_path, routes=dicomweb_routes()),
        Mount("/aets/{aet}/dicomweb", routes=dicomweb_routes()),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
    app.state.settings = settings
    return app
