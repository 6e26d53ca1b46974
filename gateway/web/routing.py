"""One route per path, whatever the methods: so a 405 names every method.

PS3.18 puts QIDO (GET) and STOW (POST) on the same ``/studies`` path, in
different modules.  Starlette answers a wrong method with the ``Allow`` of the
first route whose path matched, which would say ``GET, HEAD`` for a path that
also takes POST (RFC 9110 15.5.6 wants all of them).  Merging the routes of a
path into one route with a per-method dispatcher fixes that without a
framework change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

Endpoint = Callable[[Request], Awaitable[Response]]


def _options(methods: list[str]) -> Endpoint:
    allow = ", ".join(
        sorted({*methods, "HEAD", "OPTIONS"} if "GET" in methods else {*methods, "OPTIONS"})
    )

    async def endpoint(request: Request) -> Response:
        return Response(status_code=204, headers={"Allow": allow})

    return endpoint


def _dispatcher(by_method: dict[str, Endpoint]) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await by_method[method](request)

    return endpoint


def merge_methods(routes: list[BaseRoute]) -> list[BaseRoute]:
    """The same routes, those sharing a path merged (order of first appearance kept)."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    order: list[str | BaseRoute] = []
    for route in routes:
        if not isinstance(route, Route) or not route.methods:
            order.append(route)
            continue
        if route.path not in by_path:
            by_path[route.path] = {}
            order.append(route.path)
        for method in route.methods:
            if method != "HEAD":
                by_path[route.path][method] = route.endpoint
    out: list[BaseRoute] = []
    for entry in order:
        if not isinstance(entry, str):
            out.append(entry)
            continue
        endpoints = by_path[entry]
        # A plain OPTIONS (not a CORS preflight, which the CORS middleware
        # answers) says what the resource takes.
        endpoints.setdefault("OPTIONS", _options(list(endpoints)))
        out.append(Route(entry, _dispatcher(endpoints), methods=sorted(endpoints)))
    return out
