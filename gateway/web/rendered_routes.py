"""Rendered images and thumbnails (PS3.18 8.3.5.1, 10.4.1.1.3, 10.4.1.1.4).

The instances come through the retriever (so the cache), the pixels are
decoded and rendered in the worker pool, and one image answers a single
frame while several images are ``multipart/related; type="image/jpeg"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.dicom.render import (
    RenderParams,
    Viewport,
    parse_quality,
    parse_viewport,
    parse_window,
)
from gateway.services.errors import InvalidParameter, NotAcceptable, NotFound
from gateway.services.instance_views import InstanceViews
from gateway.services.rendering import cached_render, rendered_frame
from gateway.services.retrieve import Retriever
from gateway.services.workers import Workers
from gateway.web.accept import parse_accept, parse_accept_parameter
from gateway.web.multipart import closing, content_type, new_boundary, part_header
from gateway.web.wado_routes import read_instance, target_of
from gateway.web.wado_views_routes import frame_numbers, instances_of

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif")


def _media_type(request: Request) -> str:
    """REND-01: image/jpeg by default; png and gif on request; anything else 406."""
    param = request.query_params.get("accept")
    ranges = parse_accept_parameter(param) if param else parse_accept(request.headers.get("accept"))
    if not ranges:
        return "image/jpeg"
    for media in sorted(ranges, key=lambda r: -r.q):
        if media.q <= 0:
            continue
        kind = f"{media.type}/{media.subtype}"
        if kind == "multipart/related":
            kind = media.params.get("type", "image/jpeg").lower()
        if kind in ("*/*", "image/*"):
            return "image/jpeg"
        if kind in IMAGE_TYPES:
            return kind
    raise NotAcceptable("rendered images are image/jpeg, image/png or image/gif")


_T = TypeVar("_T")


def _parse(request: Request, name: str, parser: Callable[[str], _T]) -> _T | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return parser(value)
    except ValueError as exc:
        raise InvalidParameter(name, str(exc)) from None


def render_params(request: Request, *, thumbnail: bool = False) -> RenderParams:
    """REND-03/04 (REND-05: a thumbnail takes only a viewport)."""
    viewport = _parse(request, "viewport", parse_viewport)
    if thumbnail:
        # PS3.18 8.3.5.1.3 gives thumbnails only vw,vh: a source region is ignored
        # (not refused), like every other parameter a thumbnail does not take.
        if viewport is not None:
            viewport = Viewport(viewport.vw, viewport.vh)
        return RenderParams(viewport=viewport, media_type=_media_type(request))
    window = _parse(request, "window", parse_window)
    quality = _parse(request, "quality", parse_quality)
    return RenderParams(
        window=window,
        viewport=viewport,
        quality=quality if quality is not None else 90,
        media_type=_media_type(request),
    )


async def _images(
    request: Request, params: RenderParams, frames: list[int] | None, only_one: bool
) -> list[bytes]:
    views: InstanceViews = request.app.state.views
    workers: Workers = request.app.state.workers
    instances = await instances_of(request, target_of(request))
    if only_one:
        instances = [instances[len(instances) // 2]]  # a representative: the middle one
    images: list[bytes] = []
    retriever: Retriever = request.app.state.retriever
    for instance in instances:
        if frames is not None or only_one:
            # Rendered before? Then the instance need not even be read.
            wanted = frames if frames is not None else [1]
            hits = [await cached_render(retriever, instance, n - 1, params) for n in wanted]
            if all(hit is not None for hit in hits):
                images.extend(hit for hit in hits if hit is not None)
                continue
        data = await read_instance(instance)
        parsed = views.parsed(instance, data)
        if parsed.pixels is None:
            if frames is not None or only_one:
                raise NotFound(f"instance {instance.sop_instance_uid} has no pixel data")
            continue  # a study's SR or PDF has no image to render
        count = parsed.pixels.number_of_frames
        numbers = frames if frames is not None else ([1] if only_one else range(1, count + 1))
        for number in numbers:
            if number > count:
                raise NotFound(f"frame {number}: the instance has {count} frame(s)")
            images.append(
                await rendered_frame(retriever, workers, instance, data, number - 1, params)
            )
    if not images:
        raise NotFound("nothing to render: no instance with pixel data")
    return images


def _respond(images: list[bytes], media_type: str, single: bool) -> Response:
    if single:
        return Response(images[0], media_type=media_type)
    boundary = new_boundary()
    body = b"".join(
        part_header(boundary, {"Content-Type": media_type}) + image + b"\r\n" for image in images
    ) + closing(boundary)
    return Response(body, headers={"Content-Type": content_type(boundary, media_type)})


async def rendered(request: Request) -> Response:
    params = render_params(request)
    frames_text = request.path_params.get("frames")
    frames = frame_numbers(frames_text) if frames_text else None
    images = await _images(request, params, frames, only_one=False)
    single = "instance" in request.path_params and len(images) == 1
    response = _respond(images, params.media_type, single)
    if "annotation" in request.query_params:
        # REND-04: burned-in annotation is not supported; say so instead of failing.
        host = request.headers.get("host", "dicomweb-gateway")
        text = "The annotation parameter is not supported; no annotation was rendered."
        response.headers.append("Warning", f"299 {host}: {text}")
    return response


async def thumbnail(request: Request) -> Response:
    params = render_params(request, thumbnail=True)
    frames_text = request.path_params.get("frames")
    frames = frame_numbers(frames_text)[:1] if frames_text else None
    images = await _images(request, params, frames, only_one=frames is None)
    return _respond(images[:1], params.media_type, True)


def routes() -> list[BaseRoute]:
    instance = "/studies/{study}/series/{series}/instances/{instance}"
    out: list[BaseRoute] = []
    for base in ("/studies/{study}", "/studies/{study}/series/{series}", instance):
        out.append(Route(base + "/rendered", rendered, methods=["GET"]))
        out.append(Route(base + "/thumbnail", thumbnail, methods=["GET"]))
    out.append(Route(instance + "/frames/{frames}/rendered", rendered, methods=["GET"]))
    out.append(Route(instance + "/frames/{frames}/thumbnail", thumbnail, methods=["GET"]))
    return out
