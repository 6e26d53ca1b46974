"""``/healthz`` (the process answers), ``/readyz`` (every PACS answers C-ECHO) and
``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.metrics import CONTENT_TYPE, Registry
from gateway.services.errors import GatewayError
from gateway.services.pacs import PacsClient, PacsDirectory


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _probe(client: PacsClient) -> dict[str, object]:
    try:
        seconds = await client.echo()
    except GatewayError as exc:
        return {"name": client.name, "aet": client.config.aet, "ok": False, "detail": str(exc)}
    return {
        "name": client.name,
        "aet": client.config.aet,
        "ok": True,
        "echo_ms": round(seconds * 1000, 3),
    }


async def readyz(request: Request) -> Response:
    directory: PacsDirectory = request.app.state.pacs
    results = await asyncio.gather(*(_probe(c) for c in directory.clients))
    ready = bool(results) and all(r["ok"] for r in results)
    return JSONResponse({"ready": ready, "pacs": list(results)}, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    """Prometheus text exposition (format 0.0.4) of this app's registry."""
    registry: Registry = request.app.state.metrics
    return Response(registry.render(), headers={"Content-Type": CONTENT_TYPE})
