"""WADO-URI (PS3.18 9): ``GET /wado?requestType=WADO&studyUID=&seriesUID=&objectUID=``.

Older viewers and reporting systems still link to single objects this way.
The object comes through the same retriever (and cache) as WADO-RS; an image
is rendered by the same code as ``/rendered``.  Parameters are checked per
PS3.18 9.4 (URI-01..03); anything ill-formed is 400 naming the parameter.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.dicom.anonymize import anonymize_part10
from gateway.dicom.render import RenderParams, Viewport
from gateway.services.errors import InvalidParameter, NotAcceptable, NotFound
from gateway.services.instance_views import InstanceViews
from gateway.services.qido_query import validate_uid
from gateway.services.rendering import rendered_frame
from gateway.services.retrieve import Retriever, Target
from gateway.services.workers import Workers
from gateway.web.wado_routes import part10_in_syntax, read_instance
from gateway.web.wado_views_routes import instances_of

_DEFAULT_SYNTAX = "1.2.840.10008.1.2.1"


def _number(request: Request, name: str, low: float, high: float | None = None) -> float | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise InvalidParameter(name, f"{value!r} is not a number") from None
    if number < low or (high is not None and number > high):
        raise InvalidParameter(name, f"{value} is out of range")
    return number


def _integer(request: Request, name: str, low: int, high: int | None = None) -> int | None:
    number = _number(request, name, low, high)
    if number is None:
        return None
    if number != int(number):
        raise InvalidParameter(name, "must be a whole number")
    return int(number)


def _region(request: Request) -> tuple[float, float, float, float] | None:
    """``region=xmin,ymin,xmax,ymax`` in 0..1 with min < max (PS3.18 9.4.2.9)."""
    value = request.query_params.get("region")
    if value is None:
        return None
    try:
        parts = [float(p) for p in value.split(",")]
    except ValueError:
        raise InvalidParameter("region", f"{value!r} is not four numbers") from None
    if len(parts) != 4 or not all(0 <= p <= 1 for p in parts):
        raise InvalidParameter("region", "four numbers from 0 to 1 are expected")
    xmin, ymin, xmax, ymax = parts
    if not (xmin < xmax and ymin < ymax):
        raise InvalidParameter("region", "minimum must be below maximum")
    return xmin, ymin, xmax, ymax


def _target(request: Request) -> Target:
    q = request.query_params
    if q.get("requestType") != "WADO":
        raise InvalidParameter("requestType", "must be WADO")
    uids = {}
    for name in ("studyUID", "seriesUID", "objectUID"):
        value = q.get(name)
        if not value:
            raise InvalidParameter(name, "is required")
        uids[name] = validate_uid(name, value)
    return Target(uids["studyUID"], uids["seriesUID"], uids["objectUID"])


def _content_type(request: Request) -> str:
    value = (request.query_params.get("contentType") or "image/jpeg").split(",")[0].strip()
    value = value.split(";")[0].strip().lower()
    if value not in ("application/dicom", "image/jpeg", "image/png", "image/gif"):
        raise NotAcceptable(f"contentType {value!r} is not produced")
    return value


async def wado(request: Request) -> Response:
    target = _target(request)
    media = _content_type(request)
    q = request.query_params
    anonymize = q.get("anonymize")
    if anonymize is not None and anonymize != "yes":
        raise InvalidParameter("anonymize", "only 'yes' is defined")
    workers: Workers = request.app.state.workers
    if media == "application/dicom":
        syntax = q.get("transferSyntax") or _DEFAULT_SYNTAX
        if syntax != _DEFAULT_SYNTAX:
            validate_uid("transferSyntax", syntax)
        for name in ("frameNumber", "rows", "columns", "region", "windowCenter", "windowWidth"):
            if name in q:
                raise InvalidParameter(name, "only applies to rendered images")
        instance = (await instances_of(request, target))[0]
        _actual, data = await part10_in_syntax(workers, instance, (syntax,))
        if anonymize:
            data = await workers.run(anonymize_part10, data)
        return Response(data, media_type="application/dicom")
    if "transferSyntax" in q:
        raise InvalidParameter("transferSyntax", "only applies to contentType=application/dicom")
    if anonymize:
        raise InvalidParameter("anonymize", "only applies to contentType=application/dicom")
    center = _number(request, "windowCenter", float("-inf"))
    width = _number(request, "windowWidth", 1)
    if (center is None) != (width is None):
        raise InvalidParameter("windowCenter" if center is None else "windowWidth", "give both")
    quality = _integer(request, "imageQuality", 1, 100)
    rows = _integer(request, "rows", 1)
    columns = _integer(request, "columns", 1)
    frame = _integer(request, "frameNumber", 1) or 1
    region = _region(request)
    instance = (await instances_of(request, target))[0]
    data = await read_instance(instance)
    views: InstanceViews = request.app.state.views
    parsed = views.parsed(instance, data)
    if parsed.pixels is None:
        raise NotFound("the object has no pixel data to render")
    if frame > parsed.pixels.number_of_frames:
        raise InvalidParameter(
            "frameNumber", f"the object has {parsed.pixels.number_of_frames} frame(s)"
        )
    params = RenderParams(
        window=(center, width, "linear") if center is not None and width is not None else None,
        viewport=_viewport(parsed.pixels.columns, parsed.pixels.rows, region, columns, rows),
        quality=quality or 90,
        media_type=media,
    )
    retriever: Retriever = request.app.state.retriever
    image = await rendered_frame(retriever, workers, instance, data, frame - 1, params)
    return Response(image, media_type=media)


def _viewport(
    width: int,
    height: int,
    region: tuple[float, float, float, float] | None,
    columns: int | None,
    rows: int | None,
) -> Viewport | None:
    """PS3.18 9.4.2.9-11: crop to the region (fractions), then fit within rows x columns."""
    if region is None and columns is None and rows is None:
        return None
    xmin, ymin, xmax, ymax = region or (0.0, 0.0, 1.0, 1.0)
    sx, sy = round(xmin * width), round(ymin * height)
    sw, sh = max(1, round((xmax - xmin) * width)), max(1, round((ymax - ymin) * height))
    scale = min(columns / sw if columns else float("inf"), rows / sh if rows else float("inf"))
    if scale == float("inf"):
        scale = 1.0
    return Viewport(max(1, round(sw * scale)), max(1, round(sh * scale)), sx, sy, sw, sh)


def routes() -> list[BaseRoute]:
    return [Route("/wado", wado, methods=["GET"])]
