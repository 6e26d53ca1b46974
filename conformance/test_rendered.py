"""D. Rendered and thumbnail resources (PS3.18 8.3.5.1, 8.7.4, 10.4.1.1.3-4).

Every image is decoded with Pillow and judged by what it shows: the expected
picture is computed here from the fixture's stored pixels with the VOI
formulas of PS3.3 C.11.2.1.2 and C.11.2.1.3 (``voi``), then cropped, flipped
and resampled as the viewport asks.  Comparisons use PNG (lossless) and allow
a mean absolute difference of 2 grey levels at native size; scaled images are
compared with the closest of the common resampling filters (PS3.18 leaves the
interpolation to the server) with a looser bound, far below what a wrong
crop or a missing flip gives (40 and more on the CT fixture).

The helpers without a ``test_`` prefix are shared with ``test_wado_uri.py``.
"""

from __future__ import annotations

import io
import re
from urllib.parse import urlencode

import numpy as np
import pytest
import requests
from PIL import Image

from conformance import multipart
from conformance.dataset import FixtureSet, InstanceFixture
from conformance.server import Server, describe

JPEG = "image/jpeg"
PNG = "image/png"
GIF = "image/gif"
MULTIPART_JPEG = 'multipart/related; type="image/jpeg"'
_FORMATS = {JPEG: "JPEG", PNG: "PNG", GIF: "GIF"}
#: Pillow modes with at most 8 bits per channel (PS3.18 8.7.4: rendered media).
_EIGHT_BIT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"}

#: Mean absolute grey-level difference allowed where no resampling happens.
EXACT_TOLERANCE = 2.0
#: ... and for a scaled image against the closest common resampling filter.
SCALED_TOLERANCE = 6.0

#: The CT fixture's own window (WindowCenter 40, WindowWidth 400), passed
#: explicitly so that REND-03 judges the geometry and not the default VOI.
CT_WINDOW = (40.0, 400.0, "linear")
_WARNING_299 = re.compile(r"(?:^|,)\s*299\s")


# --- helpers shared with test_wado_uri.py ----------------------------------


def instance_path(inst: InstanceFixture) -> str:
    return f"/studies/{inst.study_uid}/series/{inst.series_uid}/instances/{inst.sop_uid}"


def stored_pixels(inst: InstanceFixture, frame: int = 0) -> np.ndarray:
    """Frame ``frame`` (0-based) of the fixture as stored values, rows x columns (x samples)."""
    signed = int(inst.dataset().PixelRepresentation) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{inst.bits_allocated // 8}")
    shape: tuple[int, ...] = (inst.rows, inst.columns)
    if inst.samples_per_pixel > 1:
        shape += (inst.samples_per_pixel,)
    return np.frombuffer(inst.native_frames[frame], dtype).reshape(shape)


def voi(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT) and C.11.2.1.3.1
    (SIGMOID) with ymin 0 and ymax 255: the expected grey levels, as floats."""
    x = values.astype(np.float64)
    c, w = center, width
    if function == "linear":
        y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
        y = np.where(x <= c - 0.5 - (w - 1) / 2, 0.0, np.where(x > c - 0.5 + (w - 1) / 2, 255, y))
    elif function == "linear-exact":
        y = ((x - c) / w + 0.5) * 255
        y = np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 255, y))
    elif function == "sigmoid":
        y = 255 / (1 + np.exp(-4 * (x - c) / w))
    else:
        raise ValueError(function)
    return np.clip(y, 0, 255)


def said(response: requests.Response) -> str:
    """``describe`` without the body: for findings about an image or a file."""
    request = response.request
    content_type = response.headers.get("Content-Type", "")
    return f"{request.method} {request.url} -> {response.status_code} {content_type}"


def open_image(data: bytes, media: str, where: str) -> Image.Image:
    """Decode ``data`` as ``media``; fail unless it is one at most 8 bits per channel."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # any decoder error is the finding
        pytest.fail(f"not a decodable {media} image ({exc}): {where}")
    assert image.format == _FORMATS[media], f"the body is {image.format}, not {media}: {where}"
    assert image.mode in _EIGHT_BIT_MODES, (
        f"a {image.mode} image, more than 8 bits per channel (PS3.18 8.7.4): {where}"
    )
    if media == PNG:
        depth = data[24]  # IHDR bit depth; Pillow reads 16-bit RGB as 8-bit "RGB"
        assert depth <= 8, f"a {depth}-bit PNG, more than 8 bits per channel: {where}"
    return image


def decode_image(response: requests.Response, media: str) -> Image.Image:
    """A single rendered image: Content-Type ``media`` without transfer-syntax, decodable."""
    content_type = response.headers.get("Content-Type", "")
    got, params = multipart.media_params(content_type)
    assert got == media, f"Content-Type {content_type!r}, expected {media}: {describe(response)}"
    assert "transfer-syntax" not in params, (
        f"a rendered image has no transfer-syntax parameter: {said(response)}"
    )
    return open_image(response.content, media, said(response))


def grey(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float64)


def mean_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    assert actual.shape == expected.shape, f"image is {actual.shape}, expected {expected.shape}"
    return float(np.abs(actual - expected).mean())


def scaled_diff(actual: np.ndarray, region: np.ndarray) -> float:
    """The mean difference between ``actual`` and ``region`` resampled to its size by
    the closest of the usual filters (PS3.18 does not say how a server scales)."""
    source = Image.fromarray(np.round(region).astype(np.uint8))
    size = (actual.shape[1], actual.shape[0])
    filters = (
        Image.Resampling.NEAREST,
        Image.Resampling.BOX,
        Image.Resampling.BILINEAR,
        Image.Resampling.HAMMING,
        Image.Resampling.BICUBIC,
        Image.Resampling.LANCZOS,
    )
    candidates = [np.asarray(source.resize(size, f), dtype=np.float64) for f in filters]
    ys = np.arange(size[1]) * region.shape[0] // size[1]  # nearest from the top-left corner
    xs = np.arange(size[0]) * region.shape[1] // size[0]
    candidates.append(np.round(region[np.ix_(ys, xs)]))
    return min(mean_diff(actual, candidate) for candidate in candidates)


def has_warning_299(response: requests.Response) -> bool:
    return bool(_WARNING_299.search(response.headers.get("Warning", "")))


def query(params: dict[str, str]) -> str:
    """A query string with literal commas and slashes, as PS3.18 writes the
    values (``viewport=64,64``, ``contentType=application/dicom``): RFC 3986
    allows both in a query and does not make their %-encoding equivalent."""
    return urlencode(params, safe=",/")


def _render(
    server: Server, path: str, accept: str | None, params: dict[str, str] | None = None
) -> requests.Response:
    # An Accept of None drops the session's default "*/*": no Accept header at all.
    return server.get(path, headers={"Accept": accept}, params=query(params or {}))


def _window(center: float, width: float, function: str) -> str:
    return f"{center:g},{width:g},{function}"


def _ct(fx: FixtureSet) -> InstanceFixture:
    return fx.ct_series.instances[0]


@pytest.fixture(scope="module")
def ct_expected(fixtures: FixtureSet) -> np.ndarray:
    """The first CT slice through its own window: what a native-size render shows."""
    return voi(stored_pixels(_ct(fixtures)), *CT_WINDOW)


# --- REND-01: single frame media types ---------------------------------------


@pytest.mark.parametrize(
    ("accept", "media"),
    [(None, JPEG), (JPEG, JPEG), (PNG, PNG), (GIF, GIF)],
    ids=["no-accept", "jpeg", "png", "gif"],
)
def test_REND_01_single_frame_media_types(
    server: Server, fixtures: FixtureSet, accept: str | None, media: str
) -> None:
    """JPEG by default, PNG and GIF on request: PS3.18 Table 8.7.4-1 makes all
    three required for a single-frame image (so a 406 for GIF fails)."""
    inst = _ct(fixtures)
    response = _render(server, instance_path(inst) + "/rendered", accept)
    assert response.status_code == 200, describe(response)
    image = decode_image(response, media)
    assert image.size == (inst.columns, inst.rows), (
        f"size {image.size}, expected the native {inst.columns}x{inst.rows}: {said(response)}"
    )


def _single_frames(fx: FixtureSet) -> dict[str, tuple[InstanceFixture, str]]:
    return {
        "mr": (fx.latin1.series[0].instances[0], ""),
        "rle": (fx.rle, ""),
        "jpeg2000": (fx.j2k, ""),
        "multiframe-frame-2": (fx.multiframe, "/frames/2"),
    }


@pytest.mark.parametrize("which", ["mr", "rle", "jpeg2000", "multiframe-frame-2"])
def test_REND_01_every_encoding_renders(server: Server, fixtures: FixtureSet, which: str) -> None:
    """Native, RLE and JPEG 2000 pixel data and one frame of a multi-frame
    instance render as one PNG at native size."""
    inst, frame = _single_frames(fixtures)[which]
    response = _render(server, instance_path(inst) + frame + "/rendered", PNG)
    assert response.status_code == 200, describe(response)
    image = decode_image(response, PNG)
    assert image.size == (inst.columns, inst.rows), (
        f"size {image.size}, expected {inst.columns}x{inst.rows}: {said(response)}"
    )


def test_REND_01_colour_is_kept(server: Server, fixtures: FixtureSet) -> None:
    """An RGB image renders in colour, with its own pixel values."""
    inst = fixtures.color
    response = _render(server, instance_path(inst) + "/rendered", PNG)
    assert response.status_code == 200, describe(response)
    image = decode_image(response, PNG)
    assert image.size == (inst.columns, inst.rows), (
        f"size {image.size}, expected {inst.columns}x{inst.rows}: {said(response)}"
    )
    assert image.mode not in ("L", "1", "LA"), f"rendered as {image.mode}: {said(response)}"
    actual = np.asarray(image.convert("RGB"), dtype=np.float64)
    diff = mean_diff(actual, stored_pixels(inst).astype(np.float64))
    assert diff <= EXACT_TOLERANCE, f"mean difference {diff:.1f} per channel: {said(response)}"


# --- REND-02: several images as multipart ---------------------------------


def _multi_targets(fx: FixtureSet) -> dict[str, tuple[str, list[tuple[int, int]]]]:
    """Path and the (width, height) of each expected part, in any order."""
    mf = fx.multiframe
    mr = fx.latin1.series[0].instances
    utf8 = fx.utf8.series[0]
    return {
        "multiframe-series": (
            f"/studies/{mf.study_uid}/series/{mf.series_uid}",
            [(mf.columns, mf.rows)] * mf.number_of_frames,
        ),
        "multiframe-instance": (instance_path(mf), [(mf.columns, mf.rows)] * mf.number_of_frames),
        "compressed-series": (
            f"/studies/{utf8.instances[0].study_uid}/series/{utf8.uid}",
            [(i.columns, i.rows) for i in utf8.instances],
        ),
        "study": (
            f"/studies/{fx.latin1.uid}",
            [(i.columns, i.rows) for i in mr] + [(mf.columns, mf.rows)] * mf.number_of_frames,
        ),
    }


def _jpeg_parts(response: requests.Response) -> list[Image.Image]:
    """The images of a ``multipart/related; type="image/jpeg"`` response."""
    assert response.status_code == 200, describe(response)
    content_type = response.headers.get("Content-Type", "")
    media, params = multipart.media_params(content_type)
    assert media == "multipart/related", f"not multipart/related: {said(response)}"
    assert params.get("type", "").lower() == JPEG, f"type= is not image/jpeg: {content_type!r}"
    try:
        parts = multipart.parse(content_type, response.content)
    except multipart.MultipartError as exc:
        pytest.fail(f"ill-formed multipart ({exc}): {said(response)}")
    images = []
    for index, part in enumerate(parts, 1):
        media, _ = multipart.media_params(part.content_type)
        assert media == JPEG, f"part {index} has Content-Type {part.content_type!r}"
        images.append(open_image(part.body, JPEG, f"part {index} of {said(response)}"))
    return images


@pytest.mark.parametrize(
    "target", ["multiframe-series", "multiframe-instance", "compressed-series", "study"]
)
def test_REND_02_one_part_per_image(server: Server, fixtures: FixtureSet, target: str) -> None:
    """A series, a multi-frame instance or a study renders as one JPEG part per
    frame of every image (5 frames; RLE + JPEG 2000; 3 MR slices + 5 frames)."""
    path, sizes = _multi_targets(fixtures)[target]
    response = _render(server, path + "/rendered", MULTIPART_JPEG)
    images = _jpeg_parts(response)
    assert len(images) == len(sizes), (
        f"{len(images)} parts, expected {len(sizes)}: {said(response)}"
    )
    assert sorted(i.size for i in images) == sorted(sizes), (
        f"part sizes {[i.size for i in images]}, expected {sizes}"
    )


def test_REND_02_frames_in_order(server: Server, fixtures: FixtureSet) -> None:
    """The parts of a multi-frame render follow the frame order.  The five
    frames differ by their level only, so a fixed window tells them apart."""
    mf = fixtures.multiframe
    window = (2048.0, 4096.0, "linear")
    response = _render(
        server, instance_path(mf) + "/rendered", MULTIPART_JPEG, {"window": _window(*window)}
    )
    images = _jpeg_parts(response)
    assert len(images) == mf.number_of_frames, f"{len(images)} parts: {said(response)}"
    expected = [voi(stored_pixels(mf, f), *window) for f in range(mf.number_of_frames)]
    order = []
    for image in images:
        actual = grey(image)
        order.append(int(np.argmin([mean_diff(actual, e) for e in expected])) + 1)
    assert order == list(range(1, mf.number_of_frames + 1)), (
        f"parts look like frames {order} (window {_window(*window)})"
    )


# --- REND-03: viewport ---------------------------------------------------------


def _ct_png(server: Server, fx: FixtureSet, viewport: str | None) -> requests.Response:
    params = {"window": _window(*CT_WINDOW)}
    if viewport is not None:
        params["viewport"] = viewport
    return _render(server, instance_path(_ct(fx)) + "/rendered", PNG, params)


def _fitted(response: requests.Response, vw: int, vh: int, region: np.ndarray) -> np.ndarray:
    """The rendered picture of ``region`` scaled to fit vw x vh, aspect kept: the
    whole image, or its centre if the server letterboxed it to exactly vw x vh."""
    image = grey(decode_image(response, PNG))
    rh, rw = region.shape
    scale = min(vw / rw, vh / rh)
    fw, fh = round(rw * scale), round(rh * scale)
    h, w = image.shape
    if abs(w - fw) <= 1 and abs(h - fh) <= 1:
        return image
    if (w, h) == (vw, vh):
        x0, y0 = (vw - fw) // 2, (vh - fh) // 2
        return image[y0 : y0 + fh, x0 : x0 + fw]
    pytest.fail(
        f"{w}x{h}, expected the {rw}x{rh} region fitted into "
        f"{vw}x{vh} with its aspect kept ({fw}x{fh}, or {vw}x{vh} letterboxed): {said(response)}"
    )


def test_REND_03_no_viewport_native_size(
    server: Server, fixtures: FixtureSet, ct_expected: np.ndarray
) -> None:
    response = _ct_png(server, fixtures, None)
    assert response.status_code == 200, describe(response)
    actual = grey(decode_image(response, PNG))
    assert actual.shape == ct_expected.shape, (
        f"size {actual.shape[::-1]}, expected {ct_expected.shape[::-1]}: {said(response)}"
    )
    diff = mean_diff(actual, ct_expected)
    assert diff <= EXACT_TOLERANCE, (
        f"mean difference {diff:.1f} from the window "
        f"{_window(*CT_WINDOW)} of PS3.3 C.11.2.1.2.1: {said(response)}"
    )


@pytest.mark.parametrize(
    ("viewport", "region"),
    [
        ("64,64", (0, 0, 128, 128)),  # the whole image, halved
        ("64,32", (0, 0, 128, 128)),  # the aspect is kept: 32x32 (or letterboxed)
        ("64,32,0,0,128,64", (0, 0, 128, 64)),  # the top half, halved
        ("128,128,32,16,32,32", (32, 16, 32, 32)),  # a 32x32 region, enlarged 4x
    ],
)
def test_REND_03_viewport_scales_to_fit(
    server: Server,
    fixtures: FixtureSet,
    ct_expected: np.ndarray,
    viewport: str,
    region: tuple[int, int, int, int],
) -> None:
    """The region (sx, sy, sw, sh; the whole image by default) scaled to fit
    vw x vh with its aspect ratio kept."""
    response = _ct_png(server, fixtures, viewport)
    assert response.status_code == 200, describe(response)
    sx, sy, sw, sh = region
    source = ct_expected[sy : sy + sh, sx : sx + sw]
    vw, vh = (int(v) for v in viewport.split(",")[:2])
    actual = _fitted(response, vw, vh, source)
    diff = scaled_diff(actual, source)
    assert diff <= SCALED_TOLERANCE, (
        f"mean difference {diff:.1f} from region {region} scaled: {said(response)}"
    )


@pytest.mark.parametrize(
    ("viewport", "region"),
    [("64,64,0,0,64,64", (0, 0, 64, 64)), ("64,64,32,16,64,64", (32, 16, 64, 64))],
)
def test_REND_03_viewport_crops(
    server: Server,
    fixtures: FixtureSet,
    ct_expected: np.ndarray,
    viewport: str,
    region: tuple[int, int, int, int],
) -> None:
    """sx, sy are the offset of the region's top-left corner, sw, sh its size;
    a region of the viewport's size is returned pixel for pixel."""
    response = _ct_png(server, fixtures, viewport)
    assert response.status_code == 200, describe(response)
    sx, sy, sw, sh = region
    actual = grey(decode_image(response, PNG))
    expected = ct_expected[sy : sy + sh, sx : sx + sw]
    assert actual.shape == expected.shape, (
        f"size {actual.shape[::-1]}, expected {expected.shape[::-1]}: {said(response)}"
    )
    diff = mean_diff(actual, expected)
    whole = scaled_diff(actual, ct_expected)
    assert diff <= EXACT_TOLERANCE, (
        f"mean difference {diff:.1f} from region {region} "
        f"({whole:.1f} from the whole image scaled): {said(response)}"
    )


@pytest.mark.parametrize("axis", ["sw", "sh"])
def test_REND_03_negative_size_flips(
    server: Server, fixtures: FixtureSet, ct_expected: np.ndarray, axis: str
) -> None:
    """A negative sw flips horizontally, a negative sh vertically.  The region
    is taken as starting at sx (sy) or as ending there: implementations read
    the offset of a negative size both ways, and both are accepted."""
    if axis == "sw":
        viewport, flip = "64,128,64,0,-64,128", np.fliplr
        regions = [ct_expected[:, 64:128], ct_expected[:, 0:64]]
    else:
        viewport, flip = "128,64,0,64,128,-64", np.flipud
        regions = [ct_expected[64:128, :], ct_expected[0:64, :]]
    response = _ct_png(server, fixtures, viewport)
    assert response.status_code == 200, describe(response)
    actual = grey(decode_image(response, PNG))
    assert actual.shape == regions[0].shape, (
        f"size {actual.shape[::-1]}, expected {regions[0].shape[::-1]}: {said(response)}"
    )
    flipped = min(mean_diff(actual, flip(r)) for r in regions)
    unflipped = min(mean_diff(actual, r) for r in regions)
    assert flipped <= EXACT_TOLERANCE, (
        f"mean difference {flipped:.1f} from the flipped region "
        f"({unflipped:.1f} from the region not flipped): {said(response)}"
    )


@pytest.mark.parametrize(
    "viewport", ["abc", "1", "0,0", "64,-64", "64,64,x,0,64,64", "64,64,0,0,64"]
)
def test_REND_03_ill_formed_viewport_400(
    server: Server, fixtures: FixtureSet, viewport: str
) -> None:
    response = _ct_png(server, fixtures, viewport)
    assert response.status_code == 400, describe(response)


# --- REND-04: window, quality, annotation -------------------------------------

#: A narrow window, where LINEAR, LINEAR_EXACT and SIGMOID give different levels.
_NARROW = (40.0, 10.0)


@pytest.mark.parametrize("function", ["linear", "linear-exact", "sigmoid"])
def test_REND_04_window_function(server: Server, fixtures: FixtureSet, function: str) -> None:
    """window=center,width,function follows the PS3.3 formulas (C.11.2.1.2.1,
    C.11.2.1.3.1-2), judged on the pixels where the three functions differ."""
    inst = _ct(fixtures)
    stored = stored_pixels(inst)
    window = (*_NARROW, function)
    response = _render(server, instance_path(inst) + "/rendered", PNG, {"window": _window(*window)})
    assert response.status_code == 200, describe(response)
    actual = grey(decode_image(response, PNG))
    expected = voi(stored, *window)
    results = [voi(stored, *_NARROW, f) for f in ("linear", "linear-exact", "sigmoid")]
    telling = (np.max(results, axis=0) - np.min(results, axis=0)) > 3
    diff = np.abs(actual - expected)
    overall, inside = float(diff.mean()), float(diff[telling].mean())
    worst = np.argsort(diff[telling])[-3:]
    samples = ", ".join(
        f"{stored[telling][i]} -> {actual[telling][i]:.0f} (not {expected[telling][i]:.0f})"
        for i in worst
    )
    assert overall <= EXACT_TOLERANCE and inside <= EXACT_TOLERANCE, (
        f"mean difference {inside:.1f} from {function} "
        f"on {int(telling.sum())} pixels; e.g. {samples}: {said(response)}"
    )


@pytest.mark.parametrize(
    "value", ["40,400", "40,400,linear,1", "40,400,cubic", "abc,400,linear", "40,0,linear"]
)
def test_REND_04_ill_formed_window_400(server: Server, fixtures: FixtureSet, value: str) -> None:
    """All three of center, width (>= 1 for LINEAR) and a known function, or 400."""
    response = _render(server, instance_path(_ct(fixtures)) + "/rendered", JPEG, {"window": value})
    assert response.status_code == 400, describe(response)


def test_REND_04_quality(server: Server, fixtures: FixtureSet) -> None:
    """quality=1 gives a smaller JPEG than quality=100."""
    path = instance_path(_ct(fixtures)) + "/rendered"
    sizes = {}
    for quality in ("1", "100"):
        response = _render(server, path, JPEG, {"quality": quality})
        assert response.status_code == 200, describe(response)
        decode_image(response, JPEG)
        sizes[quality] = len(response.content)
    assert sizes["1"] < sizes["100"], f"JPEG sizes by quality: {sizes}"


@pytest.mark.parametrize("value", ["0", "101", "abc"])
def test_REND_04_quality_out_of_range_400(server: Server, fixtures: FixtureSet, value: str) -> None:
    response = _render(server, instance_path(_ct(fixtures)) + "/rendered", JPEG, {"quality": value})
    assert response.status_code == 400, describe(response)


@pytest.fixture(scope="module")
def plain_png(server: Server, fixtures: FixtureSet) -> np.ndarray:
    response = _render(server, instance_path(_ct(fixtures)) + "/rendered", PNG)
    assert response.status_code == 200, describe(response)
    return grey(decode_image(response, PNG))


def test_REND_04_annotation_or_warning(
    server: Server, fixtures: FixtureSet, plain_png: np.ndarray
) -> None:
    """annotation=patient,technique is accepted; a server that renders no
    annotation says so with Warning: 299."""
    response = _render(
        server,
        instance_path(_ct(fixtures)) + "/rendered",
        PNG,
        {"annotation": "patient,technique"},
    )
    assert response.status_code == 200, describe(response)
    actual = grey(decode_image(response, PNG))
    annotated = actual.shape != plain_png.shape or bool(np.any(actual != plain_png))
    assert annotated or has_warning_299(response), (
        f"the image is the one without annotation and there is no "
        f"Warning: 299 (Warning: {response.headers.get('Warning')!r}): {said(response)}"
    )


def test_REND_04_unknown_annotation_keyword(server: Server, fixtures: FixtureSet) -> None:
    """An annotation keyword the server does not know: 400, or the image with
    Warning: 299."""
    response = _render(
        server, instance_path(_ct(fixtures)) + "/rendered", PNG, {"annotation": "patient,bogus"}
    )
    if response.status_code == 400:
        return
    assert response.status_code == 200, describe(response)
    decode_image(response, PNG)
    assert has_warning_299(response), (
        f"no Warning: 299 for the unknown keyword "
        f"(Warning: {response.headers.get('Warning')!r}): {said(response)}"
    )


# --- REND-05: thumbnails ----------------------------------------------------------

#: A thumbnail larger than this in either direction is no thumbnail.
_THUMBNAIL_MAX = 1024


def _thumbnail_paths(fx: FixtureSet) -> dict[str, str]:
    ct = _ct(fx)
    return {
        "study": f"/studies/{ct.study_uid}",
        "series": f"/studies/{ct.study_uid}/series/{ct.series_uid}",
        "instance": instance_path(ct),
        "frame": instance_path(fx.multiframe) + "/frames/2",
    }


@pytest.mark.parametrize("level", ["study", "series", "instance", "frame"])
def test_REND_05_thumbnail_is_one_image(server: Server, fixtures: FixtureSet, level: str) -> None:
    """One decodable image of a sane size at every level (after any redirect)."""
    response = _render(server, _thumbnail_paths(fixtures)[level] + "/thumbnail", JPEG)
    assert response.status_code == 200, describe(response)
    image = decode_image(response, JPEG)
    assert max(image.size) <= _THUMBNAIL_MAX, f"a {image.size} thumbnail: {said(response)}"


@pytest.mark.parametrize("level", ["study", "instance"])
def test_REND_05_thumbnail_viewport(server: Server, fixtures: FixtureSet, level: str) -> None:
    """viewport=vw,vh: the thumbnail fits 64x64."""
    path = _thumbnail_paths(fixtures)[level] + "/thumbnail"
    response = _render(server, path, JPEG, {"viewport": "64,64"})
    assert response.status_code == 200, describe(response)
    w, h = decode_image(response, JPEG).size
    assert w <= 64 and h <= 64 and max(w, h) >= 63, (
        f"{w}x{h}, expected to fit 64x64: {said(response)}"
    )


def test_REND_05_thumbnail_viewport_region_not_honoured(
    server: Server, fixtures: FixtureSet
) -> None:
    """A thumbnail takes only vw,vh: a source region is refused (400) or
    ignored, giving the same picture as viewport=64,64."""
    path = _thumbnail_paths(fixtures)["instance"] + "/thumbnail"
    response = _render(server, path, JPEG, {"viewport": "64,64,0,0,32,32"})
    if response.status_code == 400:
        return
    assert response.status_code == 200, describe(response)
    actual = grey(decode_image(response, JPEG))
    plain = _render(server, path, JPEG, {"viewport": "64,64"})
    assert plain.status_code == 200, describe(plain)
    expected = grey(decode_image(plain, JPEG))
    assert actual.shape == expected.shape, (
        f"size {actual.shape[::-1]}, viewport=64,64 gave {expected.shape[::-1]}: {said(response)}"
    )
    diff = mean_diff(actual, expected)
    assert diff <= EXACT_TOLERANCE, (
        f"differs from viewport=64,64 by {diff:.1f} (the region was applied): {said(response)}"
    )
