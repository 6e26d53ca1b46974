"""The Starlette application: routes, error mapping, and the resources' lifespan.

Everything with a lifetime (the PACS pools) is created and closed in the
lifespan and hangs off ``app.state``: no module-level state, so several apps
(tests, replicas) can live in one process (DESIGN.md section 8).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from gateway.cache import InstanceCache
from gateway.config import Settings
from gateway.services.instance_views import InstanceViews
from gateway.services.pacs import PacsDirectory
from gateway.services.retrieve import Retriever
from gateway.services.workers import Workers
from gateway.web import qido_routes, rendered_routes, stow_routes, wado_routes, wado_uri_routes
from gateway.web.errors import EXCEPTION_HANDLERS
from gateway.web.health import healthz, readyz

log = logging.getLogger(__name__)


def dicomweb_routes() -> list[BaseRoute]:
    """The PS3.18 resources, mounted at the base path and under /aets/{aet}."""
    return [
        *qido_routes.routes(),
        *stow_routes.routes(),
        *wado_routes.routes(),
        *rendered_routes.routes(),
    ]


async def _expire_idle(directory: PacsDirectory, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        for client in directory.clients:
            client.pool.expire_idle()


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        directory = PacsDirectory(settings)
        await directory.start()
        app.state.pacs = directory
        app.state.workers = Workers()
        cache_root = Path(settings.cache_dir) if settings.cache_dir else None
        temporary = None
        if cache_root is None:
            temporary = tempfile.TemporaryDirectory(prefix="dicomweb-gateway-cache-")
            cache_root = Path(temporary.name)
        cache = InstanceCache(cache_root, settings.cache_budget_bytes, fsync=settings.cache_fsync)
        await cache.open()
        app.state.retriever = Retriever(cache)
        app.state.views = InstanceViews(settings.metadata_bulk_threshold)
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
            await cache.close()
            if temporary is not None:
                temporary.cleanup()

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        *wado_uri_routes.routes(),
        Mount(settings.base_path, routes=dicomweb_routes()),
        Mount("/aets/{aet}/dicomweb", routes=dicomweb_routes()),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
    app.state.settings = settings
    return app
