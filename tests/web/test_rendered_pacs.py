"""/rendered and /thumbnail through the gateway in front of a real PACS (REND-01..05)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from requests_toolbelt.multipart.decoder import MultipartDecoder

from tests.peers.gateway import GatewayServer


@pytest.fixture(scope="module")
def gw(orthanc: Any) -> Iterator[GatewayServer]:
    with GatewayServer(orthanc.pacs_config()) as server:
        yield server


def _ct(orthanc: Any) -> Any:
    return next(i for i in orthanc.manifest.instances if i.sop_class_uid.endswith(".1.1.2"))


def _multiframe(orthanc: Any) -> Any:
    return next(i for i in orthanc.manifest.instances if (i.number_of_frames or 1) > 1)


def _url(gw: GatewayServer, inst: Any) -> str:
    return f"{gw.url}/studies/{inst.study_uid}/series/{inst.series_uid}/instances/{inst.sop_uid}"


def _reference(inst: Any, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 linear window on the modality values, numpy only."""
    ds = pydicom.dcmread(inst.path)
    values = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    c, w = center - 0.5, width - 1
    out = ((values - c) / w + 0.5) * 255
    out[values <= c - w / 2] = 0
    out[values > c + w / 2] = 255
    return np.clip(out, 0, 255)


def test_instance_rendered_png_matches_reference_window(gw: GatewayServer, orthanc: Any) -> None:
    inst = _ct(orthanc)
    r = requests.get(
        _url(gw, inst) + "/rendered",
        params={"window": "40,400,linear"},
        headers={"Accept": "image/png"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    got = np.asarray(Image.open(io.BytesIO(r.content)), dtype=np.float64)
    assert np.abs(got - _reference(inst, 40, 400)).mean() <= 1.0


def test_default_is_jpeg_from_the_instance_window(gw: GatewayServer, orthanc: Any) -> None:
    inst = _ct(orthanc)
    r = requests.get(_url(gw, inst) + "/rendered", timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    ds = pydicom.dcmread(inst.path)
    img = Image.open(io.BytesIO(r.content))
    assert img.size == (ds.Columns, ds.Rows) and img.mode == "L"


def test_viewport_and_thumbnail_size(gw: GatewayServer, orthanc: Any) -> None:
    inst = _ct(orthanc)
    r = requests.get(_url(gw, inst) + "/rendered", params={"viewport": "128,64"}, timeout=60)
    assert r.status_code == 200
    assert max(Image.open(io.BytesIO(r.content)).size) <= 128
    t = requests.get(
        f"{gw.url}/studies/{inst.study_uid}/series/{inst.series_uid}/thumbnail",
        params={"viewport": "64,64"},
        timeout=60,
    )
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(t.content)).size) == 64


def test_series_and_multiframe_are_multipart(gw: GatewayServer, orthanc: Any) -> None:
    inst = _ct(orthanc)
    series = [i for i in orthanc.manifest.instances if i.series_uid == inst.series_uid]
    r = requests.get(
        f"{gw.url}/studies/{inst.study_uid}/series/{inst.series_uid}/rendered", timeout=60
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith('multipart/related; type="image/jpeg"')
    assert len(MultipartDecoder(r.content, r.headers["content-type"]).parts) == len(series)
    mf = _multiframe(orthanc)
    frames = requests.get(_url(gw, mf) + "/frames/1,2/rendered", timeout=60)
    assert frames.status_code == 200
    assert len(MultipartDecoder(frames.content, frames.headers["content-type"]).parts) == 2
    one = requests.get(_url(gw, mf) + "/frames/2/rendered", timeout=60)
    assert one.status_code == 200 and one.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"window": "40,400"}, "window"),
        ({"window": "40,0,linear"}, "window"),
        ({"window": "40,400,cubic"}, "window"),
        ({"viewport": "abc"}, "viewport"),
        ({"quality": "0"}, "quality"),
        ({"quality": "101"}, "quality"),
    ],
)
def test_bad_parameters_are_400_naming_them(
    gw: GatewayServer, orthanc: Any, params: dict[str, str], name: str
) -> None:
    r = requests.get(_url(gw, _ct(orthanc)) + "/rendered", params=params, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith(name)


def test_unacceptable_and_missing(gw: GatewayServer, orthanc: Any) -> None:
    url = _url(gw, _ct(orthanc))
    assert (
        requests.get(url + "/rendered", headers={"Accept": "image/webp"}, timeout=60).status_code
        == 406
    )
    assert requests.get(url + "/frames/2/rendered", timeout=60).status_code == 404
    assert requests.get(url + "/frames/0/rendered", timeout=60).status_code == 400


def test_annotation_is_a_warning(gw: GatewayServer, orthanc: Any) -> None:
    r = requests.get(
        _url(gw, _ct(orthanc)) + "/rendered", params={"annotation": "patient"}, timeout=60
    )
    assert r.status_code == 200
    assert "annotation parameter is not supported" in r.headers["warning"]


def test_rendered_frame_is_cached_beside_the_instance(gw: GatewayServer, orthanc: Any) -> None:
    from gateway.dicom.render import RenderParams, Viewport
    from gateway.services.rendering import render_key

    inst = _ct(orthanc)
    url = _url(gw, inst) + "/rendered"
    first = requests.get(url, params={"viewport": "96,96"}, timeout=60)
    assert first.status_code == 200
    cache = gw.app.state.retriever.cache
    key = render_key(0, RenderParams(viewport=Viewport(96, 96), media_type="image/jpeg"))
    stored = gw.run(cache.get_derived(inst.sop_uid, key))
    assert stored == first.content
    again = requests.get(url, params={"viewport": "96,96"}, timeout=60)
    assert again.content == first.content
