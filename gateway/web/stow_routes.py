"""STOW-RS routes (PS3.18 10.5): stream the multipart body into C-STOREs.

Parts are handed to the store session as soon as each is complete, so the
first C-STORE starts while the client is still uploading.  A body that breaks
off (no final boundary, a part without its header separator) still gets the
outcome of every instance before the break, with status 400 (413 when it grew
past ``stow_max_bytes``) and the reason in a Warning header.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.config import Settings
from gateway.dicom.dicom_xml import json_to_xml
from gateway.dicom.instance_check import InstanceError
from gateway.dicom.json_to_part10 import BulkPart, json_to_part10
from gateway.services.errors import GatewayError, InvalidParameter
from gateway.services.qido_query import validate_uid
from gateway.services.store import PROCESSING_FAILURE, StowResult, StowSession
from gateway.web.accept import parse_accept
from gateway.web.errors import error_response
from gateway.web.multipart_reader import (
    MultipartError,
    MultipartTooLarge,
    SpooledPart,
    boundary_from_content_type,
    parse_content_type,
    read_parts,
)
from gateway.web.qido_routes import pacs_for
from gateway.web.urls import service_base_url

log = logging.getLogger(__name__)

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"


class UnsupportedMediaType(GatewayError):
    status = 415


class PayloadTooLarge(GatewayError):
    status = 413


def _response_type(accept: str | None) -> str:
    """JSON unless the client asks for XML (PS3.18 10.5.3); anything else: JSON too."""
    for media in sorted(parse_accept(accept), key=lambda m: -m.q):
        if f"{media.type}/{media.subtype}" == DICOM_XML and media.q > 0:
            return DICOM_XML
        if f"{media.type}/{media.subtype}" in (
            DICOM_JSON,
            "application/json",
            "*/*",
            "application/*",
        ):
            return DICOM_JSON
    return DICOM_JSON


def _stow_response(
    result: StowResult, media: str, status: int | None = None, warning: str = ""
) -> Response:
    body = result.to_json()
    status = status or result.http_status
    if status >= 500 and result.pacs_error is not None and not result.stored:
        return error_response(status, str(result.pacs_error), result.pacs_error.headers())
    content = json_to_xml(body) if media == DICOM_XML else orjson.dumps(body)
    response = Response(content, status_code=status, media_type=media)
    if warning:
        response.headers.append("Warning", f"299 dicomweb-gateway: {warning}")
    return response


async def _store_dicom(parts: AsyncIterator[SpooledPart], session: StowSession) -> None:
    async for part in parts:
        await session.add(part.view(), release=part.close)


async def _store_json(parts: AsyncIterator[SpooledPart], session: StowSession) -> None:
    """PS3.18 10.5.1.2.2: a JSON array first, then the bulk data it refers to."""
    metadata: list[Any] | None = None
    bulk: dict[str, BulkPart] = {}
    async for part in parts:
        try:
            if metadata is None:
                metadata = orjson.loads(part.read())
                if not isinstance(metadata, list) or not all(isinstance(d, dict) for d in metadata):
                    raise MultipartError("the first part must be a JSON array of datasets")
            elif part.content_location:
                media, params = parse_content_type(part.content_type or "application/octet-stream")
                bulk[part.content_location] = BulkPart(
                    part.read(), media, params.get("transfer-syntax")
                )
        except orjson.JSONDecodeError as exc:
            raise MultipartError(f"the first part is not valid JSON: {exc}") from None
        finally:
            part.close()
    for dataset in metadata or []:
        try:
            data = await asyncio.to_thread(json_to_part10, dataset, bulk)
        except InstanceError as exc:
            sop_class = _json_uid(dataset, "00080016")
            session.add_failure(
                exc.failure_code, exc.reason, sop_class, _json_uid(dataset, "00080018")
            )
            continue
        except (ValueError, TypeError, KeyError) as exc:
            session.add_failure(PROCESSING_FAILURE, f"cannot build an instance: {exc}")
            continue
        await session.add(data)


def _json_uid(dataset: dict[str, Any], tag: str) -> str:
    values = dataset.get(tag, {}).get("Value") or [""]
    return str(values[0])


async def store_instances(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    study = request.path_params.get("study")
    if study is not None:
        validate_uid("StudyInstanceUID", study)
    media, params = parse_content_type(request.headers.get("content-type", ""))
    part_type = params.get("type", "").lower()
    if media != "multipart/related" or part_type not in (DICOM, DICOM_JSON):
        raise UnsupportedMediaType(
            'STOW-RS takes multipart/related; type="application/dicom" or '
            f'type="application/dicom+json", not {request.headers.get("content-type", "nothing")!r}'
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > settings.stow_max_bytes:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds {settings.stow_max_bytes}")
    try:
        boundary = boundary_from_content_type(request.headers["content-type"])
    except MultipartError as exc:
        raise InvalidParameter("Content-Type", exc.reason) from None
    reply_as = _response_type(request.headers.get("accept"))
    session = StowSession(
        pacs_for(request),
        study_uid=study,
        base_url=service_base_url(request, settings.public_url),
        concurrency=settings.stow_concurrency,
    )
    parts = read_parts(
        request.stream(),
        boundary,
        spool_threshold=settings.stow_spool_bytes,
        max_total=settings.stow_max_bytes,
    )
    try:
        if part_type == DICOM:
            await _store_dicom(parts, session)
        else:
            await _store_json(parts, session)
    except ClientDisconnect:
        log.info("STOW-RS client went away; unstarted instances are dropped")
        await session.abort()
        raise
    except MultipartTooLarge as exc:
        return _broken(await session.finish(), reply_as, 413, exc.reason)
    except MultipartError as exc:
        return _broken(await session.finish(), reply_as, 400, exc.reason)
    except BaseException:  # a 500 or a cancelled request: its workers end with it
        session.cancel()
        raise
    return _stow_response(await session.finish(), reply_as)


def _broken(result: StowResult, media: str, status: int, reason: str) -> Response:
    """The body was not read to its end: the connection closes after this answer,
    and says so (see web/errors.py)."""
    if not result.stored and not result.failed:
        return error_response(status, reason, {"Connection": "close"})
    response = _stow_response(result, media, status, reason)
    response.headers["Connection"] = "close"
    return response


def routes() -> list[BaseRoute]:
    return [
        Route("/studies", store_instances, methods=["POST"]),
        Route("/studies/{study}", store_instances, methods=["POST"]),
    ]
