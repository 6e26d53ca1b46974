"""The Starlette application: routes, error mapping, and the resources' lifespan.

Everything with a lifetime (the PACS pools) is created and closed in the
lifespan and hangs off ``app.state``: no module-level state, so several apps
(tests, replicas) can live in one process (DESIGN.md section 8). The metrics
registry is per app too (``app.state.metrics``, served at ``/metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from gateway.cache import InstanceCache
from gateway.config import Settings
from gateway.metrics import Registry
from gateway.services.instance_views import InstanceViews
from gateway.services.pacs import PacsDirectory
from gateway.services.qido_headers import HeaderSource, check_header_attributes
from gateway.services.retrieve import Retriever
from gateway.services.workers import Workers
from gateway.web import qido_routes, rendered_routes, stow_routes, wado_routes, wado_uri_routes
from gateway.web.capabilities import capabilities_route
from gateway.web.cors import CorsMiddleware
from gateway.web.errors import EXCEPTION_HANDLERS
from gateway.web.health import healthz, metrics, readyz
from gateway.web.observability import HttpMetrics, ObservabilityMiddleware, TemplatedMount
from gateway.web.routing import merge_methods

log = logging.getLogger(__name__)


def dicomweb_routes() -> list[BaseRoute]:
    """The PS3.18 resources, mounted at the base path and under /aets/{aet}."""
    routes = merge_methods(
        [
            *qido_routes.routes(),
            *stow_routes.routes(),
            *wado_routes.routes(),
            *rendered_routes.routes(),
        ]
    )
    return [capabilities_route(routes), *routes]


async def _expire_idle(directory: PacsDirectory, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        for client in directory.clients:
            client.pool.expire_idle()


class GatewayApp(Starlette):
    """Starlette with ``outer`` wrapped around its whole stack, outside its
    ServerErrorMiddleware: the 500 that one writes for an unhandled exception is
    then counted, logged and given X-Request-ID and CORS headers like any answer."""

    def __init__(self, *, outer: Callable[[ASGIApp], ASGIApp], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._outer = outer

    def build_middleware_stack(self) -> ASGIApp:
        return self._outer(super().build_middleware_stack())


def _outer_middleware(settings: Settings, registry: Registry) -> Callable[[ASGIApp], ASGIApp]:
    http_metrics = HttpMetrics(registry)

    def wrap(app: ASGIApp) -> ASGIApp:
        if settings.cors_origins or settings.cross_origin_isolation:
            app = CorsMiddleware(
                app,
                settings.cors_origins,
                max_age=settings.cors_max_age,
                cross_origin_isolation=settings.cross_origin_isolation,
            )
        # Outermost, so that preflights and CORS refusals are counted and logged too.
        return ObservabilityMiddleware(app, http_metrics, log_phi=settings.log_phi)

    return wrap


def create_app(settings: Settings) -> Starlette:
    for pacs in settings.pacs:
        check_header_attributes(pacs)  # ConfigError now, not a warning at the first search
    registry = Registry()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        directory = PacsDirectory(settings, metrics=registry)
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
        app.state.retriever = Retriever(
            cache,
            metrics=registry,
            progress_log_seconds=settings.progress_log_seconds,
            log_uids=settings.log_phi,
        )
        app.state.views = InstanceViews(settings.metadata_bulk_threshold)
        app.state.qido_headers = HeaderSource(app.state.retriever, settings.qido_header_retrieves)
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
        Route("/metrics", metrics),
        *wado_uri_routes.routes(),
        TemplatedMount(settings.base_path, routes=dicomweb_routes()),
        TemplatedMount("/aets/{aet}/dicomweb", routes=dicomweb_routes()),
    ]
    app = GatewayApp(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        outer=_outer_middleware(settings, registry),
    )
    app.state.settings = settings
    app.state.metrics = registry
    return app
