"""WADO-RS metadata, frames and bulk data (PS3.18 10.4.1.1.2-10.4.1.1.4, 8.7.3.3).

Each needs the whole instance, so each goes through the retriever (and so the
cache): a viewer's series metadata request fills the cache, and its frame
requests then never touch the PACS.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from gateway.config import Settings
from gateway.dicom.codecs import EXPLICIT_VR_LITTLE_ENDIAN
from gateway.dicom.transcode import TranscodeError, transcode_frame
from gateway.services.errors import InvalidParameter, NotAcceptable
from gateway.services.instance_views import InstanceViews, ParsedInstance, metadata_array
from gateway.services.retrieve import InstanceData, Retriever, Target
from gateway.services.workers import Workers
from gateway.web.frame_accept import negotiate_frames
from gateway.web.multipart import closing, content_type, new_boundary, part_header
from gateway.web.qido_routes import pacs_for
from gateway.web.urls import service_base_url
from gateway.web.wado_routes import read_instance, target_of

_FRAME_LIST = re.compile(r"[0-9]+(,[0-9]+)*")
_PIXEL_DATA = "7FE00010"


async def instances_of(request: Request, target: Target) -> list[InstanceData]:
    """Every instance the target names, through the retriever (and so the cache)."""
    retriever: Retriever = request.app.state.retriever
    return await retriever.collect(pacs_for(request), target)


async def metadata(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    views: InstanceViews = request.app.state.views
    objects = []
    for instance in await instances_of(request, target_of(request)):
        data = await read_instance(instance)
        objects.append(views.metadata(instance, data))
    body = views.with_base(metadata_array(objects), service_base_url(request, settings.public_url))
    return Response(body, media_type="application/dicom+json")


def frame_numbers(text: str) -> list[int]:
    """PS3.18 8.3.1: a comma list of 1-based frame numbers; 0 or junk is 400."""
    if not _FRAME_LIST.fullmatch(text):
        raise InvalidParameter("frames", f"{text!r} is not a comma list of frame numbers")
    numbers = [int(n) for n in text.split(",")]
    if 0 in numbers:
        raise InvalidParameter("frames", "frame numbers start at 1")
    return numbers


async def frames(request: Request) -> Response:
    views: InstanceViews = request.app.state.views
    workers: Workers = request.app.state.workers
    numbers = frame_numbers(request.path_params["frames"])
    (instance,) = await instances_of(request, target_of(request))
    parsed = views.parsed(instance, await read_instance(instance))
    source = instance.transfer_syntax
    rep = negotiate_frames(
        request.headers.get("accept"), request.query_params.get("accept"), source
    )
    boundary = new_boundary()
    chunks: list[bytes | memoryview] = []
    for number in numbers:
        frame = views.frame(parsed, number)
        if rep.transfer_syntax != source:
            assert parsed.pixels is not None
            try:
                frame = await workers.run(
                    transcode_frame, frame, parsed.pixels, rep.transfer_syntax
                )
            except (TranscodeError, ValueError) as exc:
                raise NotAcceptable(
                    f"frame {number} cannot be sent as {rep.transfer_syntax}: {exc}"
                ) from exc
        headers = {"Content-Type": f"{rep.media_type}; transfer-syntax={rep.transfer_syntax}"}
        chunks += [part_header(boundary, headers), frame, b"\r\n"]
    chunks.append(closing(boundary))
    body = b"".join(chunks)
    ctype = content_type(boundary, rep.media_type, transfer_syntax=rep.transfer_syntax)
    return Response(body, headers={"Content-Type": ctype})


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


async def _native_pixels(request: Request, parsed: ParsedInstance) -> memoryview:
    """Encapsulated Pixel Data as bulk data: PS3.18 8.7.3.3 makes bulk data
    Explicit VR Little Endian unless a transfer syntax is asked for, so the
    frames are decoded and sent one after the other (what Orthanc's own plugin
    cannot do for JPEG 2000, and what a fragment-delimited value is not)."""
    views: InstanceViews = request.app.state.views
    workers: Workers = request.app.state.workers
    assert parsed.pixels is not None
    frames: list[bytes | memoryview] = []
    for number in range(1, parsed.pixels.number_of_frames + 1):
        frame = views.frame(parsed, number)
        try:
            frames.append(
                await workers.run(transcode_frame, frame, parsed.pixels, EXPLICIT_VR_LITTLE_ENDIAN)
            )
        except (TranscodeError, ValueError) as exc:
            raise NotAcceptable(f"pixel data cannot be decoded: {exc}") from exc
    return memoryview(b"".join(frames))


async def bulkdata(request: Request) -> Response:
    """The bytes of one element; ``Range`` gives 206 with just that slice."""
    settings: Settings = request.app.state.settings
    views: InstanceViews = request.app.state.views
    (instance,) = await instances_of(request, target_of(request))
    parsed = views.parsed(instance, await read_instance(instance))
    path = request.path_params["path"]
    if path.strip("/").upper() == _PIXEL_DATA and parsed.pixels and parsed.pixels.encapsulated:
        value = await _native_pixels(request, parsed)
    else:
        value = views.bulk(parsed, path)
    accept = (request.headers.get("accept") or "").lower()
    range_header = request.headers.get("range")
    # Multipart is the default; a single body when asked for octet-stream, or for
    # a Range without a multipart Accept (curl, browsers).
    multipart = "multipart" in accept or not (
        range_header or accept.startswith("application/octet-stream")
    )
    span: tuple[int, int] | None = None
    if range_header:
        span = _byte_range(len(value), range_header)
        if span is None:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{len(value)}"})
    if not multipart:
        return _single(value, span)
    # A Range with a multipart Accept (dicomweb-client's retrieve_bulkdata) gets
    # the slice as the one part, 206, with Content-Range on the part.
    boundary = new_boundary()
    # PS3.18 10.4.3.3.5: a bulk data part names its BulkDataURI in Content-Location.
    location = (
        f"{service_base_url(request, settings.public_url)}/studies/{instance.study_uid}"
        f"/series/{instance.series_uid}/instances/{instance.sop_instance_uid}/bulk/{path}"
    )
    headers = {"Content-Type": "application/octet-stream", "Content-Location": location}
    status = 200
    if span is not None:
        headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{len(value)}"
        value, status = value[span[0] : span[1] + 1], 206
    body = b"".join((part_header(boundary, headers), value, b"\r\n", closing(boundary)))
    return Response(
        body,
        status_code=status,
        headers={
            "Content-Type": content_type(boundary, "application/octet-stream"),
            "Accept-Ranges": "bytes",
        },
    )


def _byte_range(size: int, header: str) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``a-`` / ``-n`` as (first, last) within ``size``; None: unsatisfiable."""
    m = _RANGE.fullmatch(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if m.group(1):
        start = int(m.group(1))
        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    else:
        start, end = max(size - int(m.group(2)), 0), size - 1
    if start >= size or start > end:
        return None
    return start, end


def _single(value: memoryview, span: tuple[int, int] | None) -> Response:
    if span is None:
        return Response(
            bytes(value), media_type="application/octet-stream", headers={"Accept-Ranges": "bytes"}
        )
    start, end = span
    return Response(
        bytes(value[start : end + 1]),
        status_code=206,
        media_type="application/octet-stream",
        headers={"Content-Range": f"bytes {start}-{end}/{len(value)}", "Accept-Ranges": "bytes"},
    )
