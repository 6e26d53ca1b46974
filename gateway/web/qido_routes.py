"""QIDO-RS routes (PS3.18 10.6): parse the request, call the search, write JSON or XML."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway.config import Settings
from gateway.dicom.dicom_xml import json_to_xml
from gateway.services import qido
from gateway.services.errors import NoPacs
from gateway.services.pacs import PacsClient, PacsDirectory
from gateway.services.qido_attributes import Level
from gateway.services.qido_query import parse_qido_query
from gateway.web.accept import choose_qido_representation
from gateway.web.multipart import content_type, new_boundary, stream_parts
from gateway.web.urls import service_base_url


def pacs_for(request: Request) -> PacsClient:
    """The PACS named by ``/aets/{aet}/...``, or the default one."""
    directory: PacsDirectory = request.app.state.pacs
    name = request.path_params.get("aet")
    client = directory.get(name)
    if client is None:
        raise NoPacs(f"no PACS named {name!r} is configured" if name else "no PACS is configured")
    return client


def add_warnings(request: Request, response: Response, texts: list[str]) -> Response:
    """PS3.18 8.3.3.1 / 8.3.4.4: one ``Warning: 299 {service}: {text}`` line per warning."""
    service = request.headers.get("host", "dicomweb-gateway")
    for text in texts:
        response.headers.append("Warning", f"299 {service}: {text}")
    return response


def _json_body(matches: list[dict[str, object]]) -> bytes:
    return orjson.dumps(matches)


async def _xml_parts(
    matches: list[dict[str, object]],
) -> AsyncIterator[tuple[Mapping[str, str], bytes]]:
    for item in matches:
        yield {"Content-Type": "application/dicom+xml"}, json_to_xml(item)


async def _search(request: Request, level: Level) -> Response:
    settings: Settings = request.app.state.settings
    representation = choose_qido_representation(request.headers.get("accept"))
    query = parse_qido_query(
        level,
        list(request.query_params.multi_items()),
        study_uid=request.path_params.get("study"),
        series_uid=request.path_params.get("series"),
        max_limit=settings.qido_max_results,
    )
    pacs = pacs_for(request)
    result = await qido.search(
        pacs,
        query,
        base_url=service_base_url(request, settings.public_url),
        charset=settings.qido_charset,
        max_results=settings.qido_max_results,
        fill=settings.qido_fill,
        header_source=request.app.state.qido_headers,
    )
    return add_warnings(
        request, _represent(result.matches, representation, settings), result.warnings
    )


def _represent(
    matches: list[dict[str, object]], representation: str, settings: Settings
) -> Response:
    if not matches:
        # A multipart body needs at least one part (RFC 2046 5.1.1), so an empty
        # XML answer is 204 whatever the setting says (docs/qido.md).
        if settings.qido_empty_status == 204 or representation != "json":
            return Response(status_code=204)
        return Response(b"[]", media_type="application/dicom+json")
    if representation == "json":
        return Response(_json_body(matches), media_type="application/dicom+json")
    boundary = new_boundary()
    return StreamingResponse(
        stream_parts(boundary, _xml_parts(matches)),
        headers={"Content-Type": content_type(boundary, "application/dicom+xml")},
    )


async def search_studies(request: Request) -> Response:
    return await _search(request, "STUDY")


async def search_series(request: Request) -> Response:
    return await _search(request, "SERIES")


async def search_instances(request: Request) -> Response:
    return await _search(request, "IMAGE")


def routes() -> list[BaseRoute]:
    return [
        Route("/studies", search_studies, methods=["GET"]),
        Route("/series", search_series, methods=["GET"]),
        Route("/instances", search_instances, methods=["GET"]),
        Route("/studies/{study}/series", search_series, methods=["GET"]),
        Route("/studies/{study}/instances", search_instances, methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances", search_instances, methods=["GET"]),
    ]
