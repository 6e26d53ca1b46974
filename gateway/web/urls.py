"""Absolute URLs for RetrieveURL and BulkDataURI, also behind a reverse proxy.

PS3.18 wants absolute URLs (URL-04).  Behind a proxy the Host we see is not
the one the client used, so X-Forwarded-Proto/Host/Port/Prefix win when present,
then the configured ``public_url``, then the request itself.
"""

from __future__ import annotations

from starlette.requests import Request


def _first(value: str | None) -> str | None:
    # A chain of proxies appends: the first value is what the client sent.
    if not value:
        return None
    return value.split(",")[0].strip() or None


def service_base_url(request: Request, public_url: str = "") -> str:
    """The absolute URL of the DICOMweb root that this request came through.

    Starlette's Mount puts the mount path (``/dicomweb`` or
    ``/aets/{aet}/dicomweb``) into ``root_path``, so the same code serves both.
    """
    headers = request.headers
    proto = _first(headers.get("x-forwarded-proto"))
    host = _first(headers.get("x-forwarded-host"))
    port = _first(headers.get("x-forwarded-port"))
    prefix = _first(headers.get("x-forwarded-prefix")) or ""
    root = str(request.scope.get("root_path", ""))
    if not (proto or host or port or prefix) and public_url:
        app_root = str(request.scope.get("app_root_path", ""))
        return public_url.rstrip("/") + root[len(app_root) :]
    scheme = proto or request.url.scheme
    netloc = host or headers.get("host") or request.url.netloc
    if port and port.isdigit():
        # The port the client used replaces any in the host, and is left out
        # when it is the scheme's default (as browsers and nginx write it).
        name = netloc.rsplit(":", 1)[0] if not netloc.endswith("]") else netloc
        default = {"http": "80", "https": "443"}.get(scheme)
        netloc = name if port == default else f"{name}:{port}"
    return f"{scheme}://{netloc}{prefix.rstrip('/')}{root}"
