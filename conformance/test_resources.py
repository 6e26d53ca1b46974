"""A. Resources: every template answers; the levels a proxy must search; RetrieveURL."""

from __future__ import annotations

import pytest

from conformance.dataset import FixtureSet
from conformance.server import Server, describe


def _templates(fx: FixtureSet) -> list[tuple[str, str, str]]:
    ct = fx.ct
    series = fx.ct_series
    inst = series.instances[0]
    s, r, i = ct.uid, series.uid, inst.sop_uid
    dicom = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    jpeg = "image/jpeg"
    return [
        ("GET", "/studies", "application/dicom+json"),
        ("GET", f"/studies/{s}/series", "application/dicom+json"),
        ("GET", f"/studies/{s}/series/{r}/instances", "application/dicom+json"),
        ("GET", f"/studies/{s}", dicom),
        ("GET", f"/studies/{s}/metadata", "application/dicom+json"),
        ("GET", f"/studies/{s}/rendered", 'multipart/related; type="image/jpeg"'),
        ("GET", f"/studies/{s}/thumbnail", jpeg),
        ("GET", f"/studies/{s}/series/{r}", dicom),
        ("GET", f"/studies/{s}/series/{r}/metadata", "application/dicom+json"),
        ("GET", f"/studies/{s}/series/{r}/rendered", 'multipart/related; type="image/jpeg"'),
        ("GET", f"/studies/{s}/series/{r}/thumbnail", jpeg),
        ("GET", f"/studies/{s}/series/{r}/instances/{i}", dicom),
        ("GET", f"/studies/{s}/series/{r}/instances/{i}/metadata", "application/dicom+json"),
        ("GET", f"/studies/{s}/series/{r}/instances/{i}/rendered", jpeg),
        ("GET", f"/studies/{s}/series/{r}/instances/{i}/thumbnail", jpeg),
        (
            "GET",
            f"/studies/{s}/series/{r}/instances/{i}/frames/1",
            'multipart/related; type="application/octet-stream"; transfer-syntax=*',
        ),
        ("GET", f"/studies/{s}/series/{r}/instances/{i}/frames/1/rendered", jpeg),
        ("GET", f"/studies/{s}/series/{r}/instances/{i}/frames/1/thumbnail", jpeg),
    ]


@pytest.mark.parametrize("index", range(18))
def test_URL_01_every_template_answers(server: Server, fixtures: FixtureSet, index: int) -> None:
    method, path, accept = _templates(fixtures)[index]
    response = server.request(method, path, headers={"Accept": accept})
    assert response.status_code not in (404, 500, 501), describe(response)
    assert response.status_code < 500, describe(response)


@pytest.mark.parametrize(
    "level", ["/studies", "/studies/{s}/series", "/studies/{s}/series/{r}/instances"]
)
def test_URL_02_required_search_levels(server: Server, fixtures: FixtureSet, level: str) -> None:
    path = level.format(s=fixtures.ct.uid, r=fixtures.ct_series.uid)
    params = {"PatientID": fixtures.ct.patient_id} if level == "/studies" else {}
    results = server.search(path, **params)
    expected = {"/studies": 1, "/studies/{s}/series": 2}.get(level, 100)
    assert len(results) == expected, f"{path}: {len(results)} results, expected {expected}"
