"""A. Resources: WADO-URI request parameters (URL-03) and RetrieveURL (URL-04)."""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from conformance.conftest import stow_body
from conformance.dataset import FixtureSet, InstanceFixture
from conformance.server import Server, describe, value, values
from conformance.test_qido import fresh, query_string, restamped, results_of

RETRIEVE_URL = "00081190"
DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'

# --- URL-03: WADO-URI parameters (P18 9.1.2, 9.4.2) ------------------------


def _uri_params(inst: InstanceFixture) -> dict[str, str]:
    return {
        "requestType": "WADO",
        "studyUID": inst.study_uid,
        "seriesUID": inst.series_uid,
        "objectUID": inst.sop_uid,
        "contentType": "application/dicom",
    }


def wado_uri(server: Server, pairs: list[tuple[str, str]]) -> requests.Response:
    return server.get(f"{server.wado_uri_url}?{query_string(pairs)}")


@pytest.fixture(scope="module")
def wado_uri_offered(server: Server, fixtures: FixtureSet) -> InstanceFixture:
    """The instance URL-03 asks for; skips when there is no WADO-URI endpoint at all."""
    inst = fixtures.ct_series.instances[0]
    params = _uri_params(inst)
    valid = wado_uri(server, list(params.items()))
    del params["requestType"]
    invalid = wado_uri(server, list(params.items()))
    absent = (404, 405, 501)
    if valid.status_code in absent and invalid.status_code in absent:
        pytest.skip(f"no WADO-URI service at {server.wado_uri_url}: {describe(valid)}")
    return inst


@pytest.mark.parametrize(
    "order",
    [
        ("requestType", "studyUID", "seriesUID", "objectUID", "contentType"),
        ("objectUID", "contentType", "seriesUID", "requestType", "studyUID"),
        ("contentType", "studyUID", "objectUID", "requestType", "seriesUID"),
    ],
    ids=["canonical", "reversed-ish", "shuffled"],
)
def test_URL_03_any_parameter_order(
    server: Server, wado_uri_offered: InstanceFixture, order: tuple[str, ...]
) -> None:
    params = _uri_params(wado_uri_offered)
    response = wado_uri(server, [(name, params[name]) for name in order])
    assert response.status_code == 200, f"expected 200: {describe(response)}"
    body = response.content
    assert body[128:132] == b"DICM" and wado_uri_offered.sop_uid.encode() in body, (
        f"not the requested instance as a Part 10 file: {describe(response)}"
    )


@pytest.mark.parametrize(
    ("change", "name", "replacement"),
    [
        ("missing", "requestType", None),
        ("wrong", "requestType", "WADO-RS"),
        ("wrong", "requestType", "XYZ"),
        ("empty", "requestType", ""),
        ("missing", "studyUID", None),
        ("missing", "seriesUID", None),
        ("missing", "objectUID", None),
    ],
)
def test_URL_03_bad_request_400(
    server: Server,
    wado_uri_offered: InstanceFixture,
    change: str,
    name: str,
    replacement: str | None,
) -> None:
    params = _uri_params(wado_uri_offered)
    if replacement is None:
        del params[name]
    else:
        params[name] = replacement
    response = wado_uri(server, list(params.items()))
    assert response.status_code == 400, f"{change} {name}: {describe(response)}"


# --- URL-04: RetrieveURL is absolute and resolves --------------------------


def _resource(*uids: str) -> str:
    names = ("studies", "series", "instances")
    return "".join(f"/{name}/{uid}" for name, uid in zip(names, uids, strict=False))


def _qido_urls(
    server: Server, fx: FixtureSet, level: str, headers: dict[str, str] | None = None
) -> list[tuple[str | None, str, requests.Response]]:
    """(RetrieveURL, the resource it should name, the response) for each result of a level."""
    accept = {"Accept": "application/dicom+json", **(headers or {})}
    out: list[tuple[str | None, str, requests.Response]] = []

    def collect(path: str, pairs: list[tuple[str, str]], key: Any) -> None:
        url = path + ("?" + query_string(pairs) if pairs else "")
        response = server.get(url, headers=accept)
        for result in results_of(response):
            out.append((value(result, RETRIEVE_URL), key(result), response))

    if level == "study":
        uid_list = ",".join(s.uid for s in fx.studies)
        collect(
            "/studies",
            [("StudyInstanceUID", uid_list)],
            lambda r: _resource(value(r, "0020000D")),
        )
    elif level == "series":
        for study in fx.studies:
            collect(
                f"/studies/{study.uid}/series",
                [],
                lambda r, s=study.uid: _resource(s, value(r, "0020000E")),
            )
    else:
        for study in fx.studies:
            for series in study.series:
                pairs = [("InstanceNumber", "1")] if len(series.instances) > 10 else []
                collect(
                    f"/studies/{study.uid}/series/{series.uid}/instances",
                    pairs,
                    lambda r, s=study.uid, r_=series.uid: _resource(s, r_, value(r, "00080018")),
                )
    return out


def _expected_count(fx: FixtureSet, level: str) -> int:
    series = [r for study in fx.studies for r in study.series]
    if level == "study":
        return len(fx.studies)
    if level == "series":
        return len(series)
    # instance level: every instance, but only the first slice of the 100-slice series
    return sum(1 if len(r.instances) > 10 else len(r.instances) for r in series)


def _check_resolves(server: Server, url: str | None, resource: str, context: str) -> None:
    assert url, f"no RetrieveURL (0008,1190) for {resource}; {context}"
    parts = urlsplit(url)
    assert parts.scheme in ("http", "https") and parts.netloc, (
        f"RetrieveURL {url!r} is not absolute; {context}"
    )
    expected = server.base_url + resource
    assert url == expected, f"RetrieveURL {url!r}, expected {expected!r}; {context}"
    response = server.session.get(url, headers={"Accept": DICOM_ANY}, timeout=60)
    assert response.status_code == 200, f"RetrieveURL does not resolve: {describe(response)}"


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_URL_04_qido_retrieve_urls_resolve(
    server: Server, fixtures: FixtureSet, level: str
) -> None:
    found = _qido_urls(server, fixtures, level)
    assert len(found) == _expected_count(fixtures, level), (
        f"{len(found)} {level} results, expected {_expected_count(fixtures, level)}"
    )
    for url, resource, response in found:
        _check_resolves(server, url, resource, describe(response))


def _stow(
    server: Server, fx: FixtureSet, headers: dict[str, str] | None = None
) -> tuple[requests.Response, InstanceFixture]:
    """Store a copy of the multi-frame instance under fresh UIDs; the response and the copy."""
    source = fx.multiframe
    study, series, sop = fresh(), fresh(), fresh()
    part10 = restamped(source, study, series, sop, PatientID="DWCURL04")
    copy = dataclasses.replace(
        source, study_uid=study, series_uid=series, sop_uid=sop, part10=part10
    )
    body, content_type = stow_body([copy])
    sent = {"Content-Type": content_type, "Accept": "application/dicom+json", **(headers or {})}
    response = server.post("/studies", data=body, headers=sent)
    assert response.status_code in (200, 202), f"STOW-RS of one instance: {describe(response)}"
    return response, copy


def _stow_urls(response: requests.Response, copy: InstanceFixture) -> list[tuple[Any, str]]:
    """(RetrieveURL, the resource it should name): the study's, then each stored instance's."""
    body = response.json()
    assert isinstance(body, dict), f"STOW response is not a JSON object: {describe(response)}"
    out: list[tuple[Any, str]] = [(value(body, RETRIEVE_URL), _resource(copy.study_uid))]
    items = values(body, "00081199")
    assert len(items) == 1, f"ReferencedSOPSequence has {len(items)} items: {describe(response)}"
    resource = _resource(copy.study_uid, copy.series_uid, copy.sop_uid)
    out.append((value(items[0], RETRIEVE_URL), resource))
    return out


def test_URL_04_stow_retrieve_urls_resolve(server: Server, fixtures: FixtureSet) -> None:
    response, copy = _stow(server, fixtures)
    for url, resource in _stow_urls(response, copy):
        _check_resolves(server, url, resource, describe(response))


# Behind a reverse proxy the client's scheme, host and port arrive as X-Forwarded-*.
FORWARDED = {
    "X-Forwarded-Host": "viewer-proxy.example",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Port": "443",
}


def _forwarded_ok(
    server: Server, url: Any, resource: str, netlocs: tuple[str, ...], context: str
) -> None:
    path = urlsplit(server.base_url).path + resource
    allowed = [f"https://{netloc}{path}" for netloc in netlocs]
    assert url in allowed, (
        f"behind X-Forwarded-Host/Proto/Port the RetrieveURL is {url!r}, expected "
        f"{allowed[0]!r}; {context}"
    )


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_URL_04_qido_retrieve_urls_use_x_forwarded(
    server: Server, fixtures: FixtureSet, level: str
) -> None:
    found = _qido_urls(server, fixtures, level, FORWARDED)
    assert found, f"no {level} results"
    netlocs = ("viewer-proxy.example", "viewer-proxy.example:443")
    for url, resource, response in found:
        _forwarded_ok(server, url, resource, netlocs, describe(response))


def test_URL_04_qido_retrieve_urls_use_x_forwarded_port(
    server: Server, fixtures: FixtureSet
) -> None:
    """A proxy on a non-default port: X-Forwarded-Port goes into the URL's authority."""
    headers = {**FORWARDED, "X-Forwarded-Port": "8443"}
    found = _qido_urls(server, fixtures, "study", headers)
    assert found, "no study results"
    for url, resource, response in found:
        _forwarded_ok(server, url, resource, ("viewer-proxy.example:8443",), describe(response))


def test_URL_04_stow_retrieve_urls_use_x_forwarded(server: Server, fixtures: FixtureSet) -> None:
    response, copy = _stow(server, fixtures, FORWARDED)
    netlocs = ("viewer-proxy.example", "viewer-proxy.example:443")
    for url, resource in _stow_urls(response, copy):
        _forwarded_ok(server, url, resource, netlocs, describe(response))
