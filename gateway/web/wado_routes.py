"""WADO-RS instance retrieval (PS3.18 10.4): multipart/related application/dicom, streamed.

The response starts when the first instance has arrived (so an unknown UID is
still a clean 404 and an impossible transfer syntax a 406); after that each
instance is written as soon as the PACS sent it.  A PACS failure after the
first part aborts the connection instead of closing the multipart, so a client
never takes a partial series for a complete one (WADO-09).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway.config import Settings
from gateway.dicom.transcode import transcode_instance
from gateway.services.errors import GatewayError, NotAcceptable
from gateway.services.qido_query import validate_uid
from gateway.services.retrieve import InstanceData, Retriever, Target
from gateway.services.workers import Workers
from gateway.web.multipart import closing, content_type, new_boundary, part_header
from gateway.web.qido_routes import pacs_for
from gateway.web.urls import service_base_url
from gateway.web.wado_accept import AS_STORED, negotiate_instance_syntaxes

log = logging.getLogger(__name__)

_SMALL_CHUNK = 16 * 1024
"""A first chunk up to this size (File Meta) is sent with its part's header."""


def target_of(request: Request) -> Target:
    params = request.path_params
    study = validate_uid("StudyInstanceUID", params["study"])
    series = params.get("series")
    sop = params.get("instance")
    return Target(
        study,
        validate_uid("SeriesInstanceUID", series) if series else None,
        validate_uid("SOPInstanceUID", sop) if sop else None,
    )


async def part10_in_syntax(
    workers: Workers, instance: InstanceData, syntaxes: tuple[str, ...]
) -> tuple[str, bytes]:
    """The instance as a Part 10 file in the first of ``syntaxes`` it can be sent in."""
    data = await read_instance(instance)
    reasons = []
    for syntax in syntaxes:
        if syntax in (AS_STORED, instance.transfer_syntax):
            return instance.transfer_syntax, data
        try:
            return syntax, await workers.run(transcode_instance, data, syntax)
        except ValueError as exc:  # TranscodeError, CodecError: this syntax is not possible
            reasons.append(f"{syntax}: {exc}")
    raise NotAcceptable(
        f"instance {instance.sop_instance_uid} ({instance.transfer_syntax}) cannot be sent "
        "in any acceptable transfer syntax (" + "; ".join(reasons) + ")"
    )


async def read_instance(instance: InstanceData) -> bytes:
    """The Part 10 bytes; big cached files are read off the event loop."""
    if instance.part10 is not None or instance.path is None:
        return instance.read()
    if instance.path.stat().st_size > 4 << 20:
        return await asyncio.to_thread(instance.read)
    return instance.read()


def _content_location(base_url: str, instance: InstanceData) -> str:
    return (
        f"{base_url}/studies/{instance.study_uid}/series/{instance.series_uid}"
        f"/instances/{instance.sop_instance_uid}"
    )


async def retrieve_instances(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    workers: Workers = request.app.state.workers
    target = target_of(request)
    syntaxes = negotiate_instance_syntaxes(
        request.headers.get("accept"), request.query_params.get("accept")
    )
    base_url = service_base_url(request, settings.public_url)
    retriever: Retriever = request.app.state.retriever
    cached = await retriever.cached(target)
    if cached and all(_as_is(i, syntaxes) for i in cached):
        return _cached_response(cached, base_url, syntaxes)
    instances = retriever.instances(pacs_for(request), target)
    try:
        first = await anext(instances)
        first_part = await _part_chunks(workers, first, syntaxes)
    except BaseException:
        await instances.aclose()
        raise
    boundary = new_boundary()

    async def body() -> AsyncIterator[bytes]:
        # Each yield is one chunk of the chunked response (a frame header and a
        # transport write), so the small pieces travel together: the CRLF that
        # ends a part, the next part's header and a small first chunk (File Meta).
        try:
            instance, (actual, chunks) = first, first_part
            lead = b""
            while True:
                head = lead + part_header(
                    boundary,
                    {
                        "Content-Type": f"application/dicom; transfer-syntax={actual}",
                        "Content-Location": _content_location(base_url, instance),
                    },
                )
                if len(chunks[0]) <= _SMALL_CHUNK:
                    head += chunks[0]
                    chunks = chunks[1:]
                yield head
                for chunk in chunks:
                    yield chunk
                lead = b"\r\n"
                try:
                    instance = await anext(instances)
                except StopAsyncIteration:
                    break
                actual, chunks = await _part_chunks(workers, instance, syntaxes)
            yield lead + closing(boundary)
        except GatewayError as exc:
            # Headers are gone: the only honest signal left is a broken connection.
            # The target's UIDs only at DEBUG: they identify (see log_phi).
            text = exc.log_text(settings.log_phi)
            log.warning("WADO-RS %s retrieve aborted mid-stream: %s", target.level, text)
            log.debug("aborted retrieve: %s", target.describe())
            raise
        finally:
            await _close(instances)

    # The top-level transfer-syntax parameter only when every part will have it.
    params = (
        {"transfer_syntax": syntaxes[0]} if syntaxes[0] != AS_STORED and len(syntaxes) == 1 else {}
    )
    return StreamingResponse(
        body(), headers={"Content-Type": content_type(boundary, "application/dicom", **params)}
    )


async def _part_chunks(
    workers: Workers, instance: InstanceData, syntaxes: tuple[str, ...]
) -> tuple[str, tuple[bytes, ...]]:
    """The instance's Part 10 bytes as chunks for one part: an instance just received
    from the PACS and wanted as stored goes as it came (File Meta, data set), not
    joined into one copy nor read back from the cache."""
    chunks = instance.chunks
    if chunks is not None and _as_is(instance, syntaxes):
        return instance.transfer_syntax, chunks
    actual, data = await part10_in_syntax(workers, instance, syntaxes)
    return actual, (data,)


def _as_is(instance: InstanceData, syntaxes: tuple[str, ...]) -> bool:
    return syntaxes[0] in (AS_STORED, instance.transfer_syntax)


def _cached_response(
    cached: list[InstanceData], base_url: str, syntaxes: tuple[str, ...]
) -> Response:
    """A whole cached series with Content-Length: no chunk framing, two writes a part.

    The sizes are known up front, so h11 passes the bytes through instead of
    copying each one into a chunk, and every part's header travels with the
    CRLF that ends the part before it.
    """
    boundary = new_boundary()
    heads = []
    for n, instance in enumerate(cached):
        head = part_header(
            boundary,
            {
                "Content-Type": f"application/dicom; transfer-syntax={instance.transfer_syntax}",
                "Content-Location": _content_location(base_url, instance),
            },
        )
        heads.append(head if n == 0 else b"\r\n" + head)
    tail = b"\r\n" + closing(boundary)
    sizes = [i.path.stat().st_size if i.path is not None else len(i.read()) for i in cached]
    length = sum(len(h) for h in heads) + sum(sizes) + len(tail)

    async def body() -> AsyncIterator[bytes]:
        for head, instance, size in zip(heads, cached, sizes, strict=True):
            yield head
            data = await read_instance(instance)
            if len(data) != size:  # evicted and rewritten meanwhile: cannot keep the length
                raise RuntimeError("cached instance changed while being sent")
            yield data
        yield tail

    params = {"transfer_syntax": syntaxes[0]} if syntaxes[0] != AS_STORED else {}
    return StreamingResponse(
        body(),
        headers={
            "Content-Type": content_type(boundary, "application/dicom", **params),
            "Content-Length": str(length),
        },
    )


async def _close(instances: AsyncGenerator[InstanceData, None]) -> None:
    """Finish the retrieve (C-CANCEL if unfinished) even when the client is gone."""
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.shield(instances.aclose())


def routes() -> list[BaseRoute]:
    from gateway.web import wado_views_routes as views

    instance = "/studies/{study}/series/{series}/instances/{instance}"
    return [
        Route("/studies/{study}/metadata", views.metadata, methods=["GET"]),
        Route("/studies/{study}/series/{series}/metadata", views.metadata, methods=["GET"]),
        Route(instance + "/metadata", views.metadata, methods=["GET"]),
        Route(instance + "/frames/{frames}", views.frames, methods=["GET"]),
        Route(instance + "/bulk/{path:path}", views.bulkdata, methods=["GET"]),
        Route("/studies/{study}", retrieve_instances, methods=["GET"]),
        Route("/studies/{study}/series/{series}", retrieve_instances, methods=["GET"]),
        Route(
            "/studies/{study}/series/{series}/instances/{instance}",
            retrieve_instances,
            methods=["GET"],
        ),
    ]
