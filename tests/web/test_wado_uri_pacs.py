"""WADO-URI (URI-01..03) through the gateway in front of a real PACS."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
import requests
from PIL import Image

from tests.peers.gateway import GatewayServer


@pytest.fixture(scope="module")
def gw(orthanc: Any) -> Iterator[GatewayServer]:
    with GatewayServer(orthanc.pacs_config()) as server:
        yield server


def _ct(orthanc: Any) -> Any:
    return next(i for i in orthanc.manifest.instances if i.sop_class_uid.endswith(".1.1.2"))


def _get(gw: GatewayServer, inst: Any, **params: str) -> requests.Response:
    query = {
        "requestType": "WADO",
        "studyUID": inst.study_uid,
        "seriesUID": inst.series_uid,
        "objectUID": inst.sop_uid,
        **params,
    }
    return requests.get(gw.root + "/wado", params=query, timeout=60)


def test_dicom_object_is_the_instance(gw: GatewayServer, orthanc: Any) -> None:
    inst = _ct(orthanc)
    r = _get(gw, inst, contentType="application/dicom")
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
    got = pydicom.dcmread(io.BytesIO(r.content))
    original = pydicom.dcmread(inst.path)
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert got.SOPInstanceUID == original.SOPInstanceUID
    assert got.PixelData == original.PixelData


def test_anonymized_object(gw: GatewayServer, orthanc: Any) -> None:
    inst = _ct(orthanc)
    r = _get(gw, inst, contentType="application/dicom", anonymize="yes")
    assert r.status_code == 200
    got = pydicom.dcmread(io.BytesIO(r.content))
    original = pydicom.dcmread(inst.path)
    assert str(got.PatientName) != str(original.PatientName)
    assert got.SOPInstanceUID != original.SOPInstanceUID
    assert got.file_meta.MediaStorageSOPInstanceUID == got.SOPInstanceUID


def test_default_is_jpeg_and_rows_columns_are_maxima(gw: GatewayServer, orthanc: Any) -> None:
    inst = _ct(orthanc)
    r = _get(gw, inst)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    small = _get(gw, inst, contentType="image/png", rows="100", columns="50")
    assert small.status_code == 200 and small.headers["content-type"] == "image/png"
    width, height = Image.open(io.BytesIO(small.content)).size
    assert width <= 50 and height <= 100 and max(width, height) >= 49
    region = _get(gw, inst, contentType="image/png", region="0,0,0.5,0.25")
    assert Image.open(io.BytesIO(region.content)).size == (256, 128)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"requestType": "XYZ"}, "requestType"),
        ({"frameNumber": "0"}, "frameNumber"),
        ({"frameNumber": "2"}, "frameNumber"),
        ({"windowCenter": "40"}, "windowWidth"),
        ({"imageQuality": "101"}, "imageQuality"),
        ({"region": "0.5,0,0.2,1"}, "region"),
        ({"rows": "abc"}, "rows"),
        ({"contentType": "application/dicom", "transferSyntax": "1.2.abc"}, "transferSyntax"),
        ({"anonymize": "no", "contentType": "application/dicom"}, "anonymize"),
    ],
)
def test_bad_parameters_are_400(
    gw: GatewayServer, orthanc: Any, params: dict[str, str], name: str
) -> None:
    r = _get(gw, _ct(orthanc), **params)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith(name)


def test_missing_uid_unknown_object_and_media(gw: GatewayServer, orthanc: Any) -> None:
    inst = _ct(orthanc)
    r = requests.get(
        gw.root + "/wado", params={"requestType": "WADO", "studyUID": inst.study_uid}, timeout=60
    )
    assert r.status_code == 400 and r.json()["detail"].startswith("seriesUID")
    unknown = requests.get(
        gw.root + "/wado",
        params={
            "requestType": "WADO",
            "studyUID": "1.2.3",
            "seriesUID": "1.2.3.4",
            "objectUID": "1.2.3.4.5",
        },
        timeout=60,
    )
    assert unknown.status_code == 404
    assert _get(gw, inst, contentType="video/mpeg").status_code == 406
