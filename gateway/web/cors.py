"""CORS for the configured origins, and the cross-origin isolation headers, as
pure ASGI middleware (the Fetch standard's "CORS protocol").

- A preflight (OPTIONS with Origin and Access-Control-Request-Method) is
  answered here, on every path, before routing: 204 for an allowed origin, 403
  with a JSON body for any other (so a misconfigured viewer sees why in the
  network tab instead of a bare CORS failure).
- Other requests go through; the response gets Access-Control-Allow-Origin and
  Access-Control-Expose-Headers when the Origin is allowed, and Vary: Origin
  whenever CORS is on (a shared cache must not hand one origin's answer to
  another). Headers are added on ``http.response.start``, so streamed
  responses get them too.
- A plain OPTIONS (no preflight headers) is not ours: the router answers it.

Starlette's CORSMiddleware would do most of this, but it answers a preflight
from a disallowed origin with 400 text/plain, sends no Vary on responses
without Origin, and knows nothing of the isolation headers; what is left is
small enough to keep here.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.web.errors import error_response
from gateway.web.observability import ROUTE_LABEL

ALLOW_METHODS = b"GET, POST, OPTIONS"
DEFAULT_ALLOW_HEADERS = b"Accept, Content-Type, Authorization, Range, X-Request-ID"
EXPOSE_HEADERS = (
    b"Warning, Content-Location, Content-Type, Content-Length, Content-Range, "
    b"Retry-After, X-Request-ID"
)
#: For viewers that need SharedArrayBuffer (crossOriginIsolated) and load our
#: responses from another origin.
ISOLATION_HEADERS = (
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-embedder-policy", b"require-corp"),
    (b"cross-origin-resource-policy", b"cross-origin"),
)

Headers = list[tuple[bytes, bytes]]


def _add_vary_origin(headers: Headers) -> None:
    for i, (name, value) in enumerate(headers):
        if name.lower() == b"vary":
            if b"origin" not in value.lower() and value.strip() != b"*":
                headers[i] = (name, value + b", Origin")
            return
    headers.append((b"vary", b"Origin"))


class CorsMiddleware:
    """``origins``: exact serialized origins, or ``*`` for any (then
    Access-Control-Allow-Origin is ``*``). Empty origins = CORS off; the
    isolation headers may still be on."""

    def __init__(
        self,
        app: ASGIApp,
        origins: tuple[str, ...],
        *,
        max_age: int = 600,
        cross_origin_isolation: bool = False,
    ) -> None:
        self.app = app
        self.enabled = bool(origins)
        self.any_origin = "*" in origins
        self.origins = frozenset(o.encode("latin-1") for o in origins if o != "*")
        self.max_age = str(max_age).encode()
        self.isolation: Headers = list(ISOLATION_HEADERS) if cross_origin_isolation else []

    def allow_origin(self, origin: bytes | None) -> bytes | None:
        """The Access-Control-Allow-Origin value for this Origin, None if not allowed."""
        if origin is None:
            return None
        if self.any_origin:
            return b"*"
        return origin if origin in self.origins else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (self.enabled or self.isolation):
            await self.app(scope, receive, send)
            return
        origin = request_method = request_headers = None
        if self.enabled:
            for name, value in scope["headers"]:
                if name == b"origin":
                    origin = value
                elif name == b"access-control-request-method":
                    request_method = value
                elif name == b"access-control-request-headers":
                    request_headers = value
        if origin is not None and request_method is not None and scope["method"] == "OPTIONS":
            scope[ROUTE_LABEL] = "preflight"
            await self._preflight(scope, receive, send, origin, request_headers)
            return

        extra = list(self.isolation)
        allowed = self.allow_origin(origin) if self.enabled else None
        if allowed is not None:
            extra.append((b"access-control-allow-origin", allowed))
            extra.append((b"access-control-expose-headers", EXPOSE_HEADERS))
        vary = self.enabled

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if vary:
                    _add_vary_origin(headers)
                headers.extend(extra)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _preflight(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        origin: bytes,
        request_headers: bytes | None,
    ) -> None:
        allowed = self.allow_origin(origin)
        headers: Headers = [(b"vary", b"Origin"), *self.isolation]
        if allowed is None:
            detail = f"origin {origin.decode('latin-1')} is not allowed (setting cors_origins)"
            response = error_response(403, detail)
            response.raw_headers.extend(headers)
            await response(scope, receive, send)
            return
        headers += [
            (b"access-control-allow-origin", allowed),
            (b"access-control-allow-methods", ALLOW_METHODS),
            (b"access-control-allow-headers", request_headers or DEFAULT_ALLOW_HEADERS),
            (b"access-control-max-age", self.max_age),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
