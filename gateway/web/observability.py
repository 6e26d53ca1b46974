"""Per-request observability, as the outermost ASGI middleware: the request id,
the HTTP metrics and one access log line.

- Request id: the client's ``X-Request-ID`` when it is 1-128 printable ASCII
  characters, else a new uuid4 hex; set in ``gateway.logging_setup.request_id``
  for every log record of the request and echoed in the response.
- Metrics (``HttpMetrics``): requests by route template, method and status,
  duration by route and method (until the last body byte: a streamed series
  counts whole), response body bytes by route.
- Access log (logger ``gateway.access``, INFO): method, route template, status,
  milliseconds, bytes. The concrete path and query string only with
  ``log_phi``: query values are PatientName/PatientID, and the UIDs in a path
  are identifying too (PS3.15 Annex E replaces them).

The route template is Starlette's: the router leaves the matched route in
``scope["route"]`` and ``TemplatedMount`` leaves its own path beside it, so
``/aets/ORTHANC/dicomweb/studies/1.2.3/series`` is counted as
``/aets/{aet}/dicomweb/studies/{study}/series``; a request no route took is
``unmatched``, a preflight answered by the CORS middleware ``preflight``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.logging_setup import request_id
from gateway.metrics import Registry

access_log = logging.getLogger("gateway.access")

MOUNT_TEMPLATE = "gateway.mount_template"
#: A middleware that answers without routing names the route here.
ROUTE_LABEL = "gateway.route_label"
UNMATCHED = "unmatched"

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
_REQUEST_ID = b"x-request-id"


class TemplatedMount(Mount):
    """A Mount that records its path template in the scope (for ``route_template``)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is Match.FULL:
            child[MOUNT_TEMPLATE] = scope.get(MOUNT_TEMPLATE, "") + self.path
        return match, child


def route_template(scope: Scope) -> str:
    """The template of the route that handled the request (after it ran)."""
    label = scope.get(ROUTE_LABEL)
    if label is not None:
        return str(label)
    route = scope.get("route")
    if route is None or isinstance(route, Mount):  # nothing matched, or only the mount
        return UNMATCHED
    return str(scope.get(MOUNT_TEMPLATE, "")) + str(getattr(route, "path", ""))


def new_request_id() -> str:
    """A random (version 4) UUID as 32 hex digits; ``uuid.uuid4().hex`` gives the same
    but costs several microseconds more, per request."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4 (RFC 9562 5.4)
    raw[8] = (raw[8] & 0x3F) | 0x80  # variant 10
    return raw.hex()


def incoming_request_id(value: bytes) -> str | None:
    """The client's id if usable: 1-128 printable ASCII characters."""
    if not 0 < len(value) <= 128:
        return None
    text = value.decode("latin-1")
    return text if text.isascii() and text.isprintable() else None


class HttpMetrics:
    """``dicomweb_http_*`` and ``dicomweb_response_bytes_total`` on a registry."""

    def __init__(self, registry: Registry) -> None:
        self.requests = registry.counter(
            "dicomweb_http_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ("route", "method", "status"),
        )
        self.duration = registry.histogram(
            "dicomweb_http_request_duration_seconds",
            "Seconds from the request to the last byte of the response.",
            ("route", "method"),
        )
        self.response_bytes = registry.counter(
            "dicomweb_response_bytes_total",
            "Bytes sent in response bodies (streamed parts included), by route template.",
            ("route",),
        )

    def record(self, route: str, method: str, status: int, seconds: float, size: int) -> None:
        self.requests.inc(route, method, str(status))
        self.duration.observe(seconds, route, method)
        self.response_bytes.inc(route, amount=size)


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics, *, log_phi: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.log_phi = log_phi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = None
        for name, value in scope["headers"]:
            if name == _REQUEST_ID:
                rid = incoming_request_id(value)
                break
        if rid is None:
            rid = new_request_id()
        token = request_id.set(rid)
        rid_header = (_REQUEST_ID, rid.encode())
        status = 0
        size = 0

        async def send_observed(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            elif message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), rid_header]}
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except asyncio.CancelledError:
            status = status or 499  # the client went away before any answer
            raise
        except BaseException:
            status = status or 500
            raise
        finally:
            seconds = time.perf_counter() - start
            route = route_template(scope)
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.record(route, method, status, seconds, size)
            if access_log.isEnabledFor(logging.INFO):
                self._log(scope, route, method, status, seconds, size)
            request_id.reset(token)

    def _log(
        self, scope: Scope, route: str, method: str, status: int, seconds: float, size: int
    ) -> None:
        where = route
        extra: dict[str, Any] = {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "bytes": size,
        }
        if self.log_phi:
            query = scope.get("query_string", b"")
            where = scope["path"] + ("?" + query.decode("latin-1") if query else "")
            extra["path"] = where
        access_log.info(
            "%s %s %d %.1f ms %d B", method, where, status, seconds * 1000, size, extra=extra
        )


__all__ = [
    "MOUNT_TEMPLATE",
    "ROUTE_LABEL",
    "UNMATCHED",
    "HttpMetrics",
    "ObservabilityMiddleware",
    "TemplatedMount",
    "incoming_request_id",
    "new_request_id",
    "route_template",
]
