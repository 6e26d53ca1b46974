"""Retrieve Capabilities (PS3.18 8.9): ``OPTIONS {base}/`` answers a WADL document.

The description is generated from the route table itself, so it lists exactly
what is served: each path template with its methods and the media types each
method answers.  A plain ``OPTIONS`` on any other resource answers 204 with
``Allow`` (a CORS preflight never gets here: the CORS middleware answers it).
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.config import Settings
from gateway.web.urls import service_base_url

WADL = "application/vnd.sun.wadl+xml"

_JSON = ("application/dicom+json", 'multipart/related; type="application/dicom+xml"')
_DICOM = ('multipart/related; type="application/dicom"',)
_FRAMES = (
    'multipart/related; type="application/octet-stream"',
    'multipart/related; type="image/jp2"',
    'multipart/related; type="image/jls"',
    'multipart/related; type="image/jphc"',
    'multipart/related; type="image/jpeg"',
    'multipart/related; type="image/dicom-rle"',
)
_IMAGES = ("image/jpeg", "image/png", "image/gif", 'multipart/related; type="image/jpeg"')


def _representations(path: str, method: str) -> tuple[str, ...]:
    if method == "POST":
        return ("application/dicom+json", "application/dicom+xml")
    last = path.rstrip("/").rsplit("/", 1)[-1]
    if last in ("studies", "series", "instances"):
        return _JSON
    if last == "metadata":
        return ("application/dicom+json",)
    if last in ("rendered", "thumbnail"):
        return _IMAGES
    if "/frames/" in path:
        return _FRAMES
    if "/bulk/" in path:
        return ('multipart/related; type="application/octet-stream"', "application/octet-stream")
    return _DICOM


def describe(routes: list[BaseRoute], base_url: str) -> bytes:
    """The WADL of ``routes`` (those under the DICOMweb base) at ``base_url``."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<application xmlns="http://wadl.dev.java.net/2009/02">',
        f"  <resources base={quoteattr(base_url + '/')}>",
    ]
    for route in routes:
        if not isinstance(route, Route) or route.path == "/" or not route.methods:
            continue
        path = route.path.lstrip("/").replace("{path:path}", "{path}")
        lines.append(f"    <resource path={quoteattr(path)}>")
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            lines.append(f"      <method name={quoteattr(method)}>")
            if method == "POST":
                lines.append(
                    '        <request><representation mediaType="multipart/related; '
                    'type=&quot;application/dicom&quot;"/></request>'
                )
            lines.append('        <response status="200">')
            for media in _representations(route.path, method):
                lines.append(f"          <representation mediaType={quoteattr(media)}/>")
            lines.append("        </response>")
            lines.append("      </method>")
        lines.append("    </resource>")
    lines += ["  </resources>", "</application>", ""]
    return "\n".join(lines).encode()


def capabilities_route(routes: list[BaseRoute]) -> Route:
    """``OPTIONS /`` under the base path, describing ``routes``."""

    async def capabilities(request: Request) -> Response:
        settings: Settings = request.app.state.settings
        body = describe(routes, service_base_url(request, settings.public_url))
        return Response(body, media_type=WADL)

    return Route("/", capabilities, methods=["OPTIONS"])
