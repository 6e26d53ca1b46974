"""Errors as short JSON bodies, mapped from exceptions in one place (ERR-01).

Every 4xx/5xx the gateway sends is ``{"error": <reason phrase>, "detail": ...}``
so that curl users and viewers see what was wrong without reading logs.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.services.errors import GatewayError
from gateway.web.observability import route_template

log = logging.getLogger(__name__)


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"error": HTTPStatus(status).phrase, "detail": detail})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def loggable_path(request: Request) -> str:
    """The path for a log line: its route template unless ``log_phi`` (UIDs identify)."""
    settings = getattr(request.app.state, "settings", None)
    if settings is not None and settings.log_phi:
        return request.url.path
    return route_template(request.scope)


def _closing(request: Request, headers: dict[str, str]) -> dict[str, str]:
    """An error to a request with a body (STOW) may come before the body was read;
    the server then closes the connection after the answer, so it says so
    (RFC 9112 9.6): a client must not send its next request on that connection
    (seen: requests' pool reused it and got "Remote end closed connection")."""
    if request.method in ("POST", "PUT"):
        headers = {**headers, "Connection": "close"}
    return headers


async def gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    if exc.status >= 500:
        settings = getattr(request.app.state, "settings", None)
        text = exc.log_text(settings is not None and settings.log_phi)
        log.warning("%s %s -> %d: %s", request.method, loggable_path(request), exc.status, text)
    return error_response(exc.status, str(exc), _closing(request, exc.headers()))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = _closing(request, dict(exc.headers or {}))
    return error_response(exc.status_code, exc.detail, headers)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, loggable_path(request))
    return error_response(500, "internal error; see the gateway log")


EXCEPTION_HANDLERS = {
    GatewayError: gateway_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
