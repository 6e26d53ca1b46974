"""CORS and cross-origin isolation, over real HTTP against the gateway in front of
Orthanc: preflights on every kind of path, allowed and refused origins, ``*``,
headers on streamed and error responses, and the COOP/COEP/CORP switch."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.config import ConfigError, load_settings
from tests.peers import OrthancServer
from tests.peers.gateway import GatewayServer
from tests.web.conftest import GatewayFactory

VIEWER = "https://viewer.example.org"
OTHER = "https://elsewhere.example.com"
DICOM = 'multipart/related; type="application/dicom"'
EXPOSED = {
    "warning",
    "content-location",
    "content-type",
    "content-length",
    "content-range",
    "retry-after",
    "x-request-id",
}


def _tokens(value: str | None) -> set[str]:
    return {t.strip().lower() for t in (value or "").split(",") if t.strip()}


def _preflight(
    url: str, origin: str, method: str = "GET", headers: str | None = None
) -> requests.Response:
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        h["Access-Control-Request-Headers"] = headers
    return requests.options(url, headers=h, timeout=30)


@pytest.fixture
def ct(orthanc: OrthancServer) -> Any:
    """The first CT instance of the demo data (SampleInstance)."""
    return next(i for i in orthanc.manifest.instances if i.modality == "CT")


@pytest.fixture
def cors_gw(orthanc: OrthancServer, gateway_for: GatewayFactory) -> GatewayServer:
    return gateway_for(orthanc, cors_origins=(VIEWER,))


def _paths(gw: GatewayServer, ct: Any) -> list[str]:
    s, se, i = ct.study_uid, ct.series_uid, ct.sop_uid
    base = gw.url
    return [
        f"{base}/studies",
        f"{base}/studies/{s}/series",
        f"{base}/studies/{s}/series/{se}",
        f"{base}/studies/{s}/series/{se}/metadata",
        f"{base}/studies/{s}/series/{se}/instances/{i}/frames/1",
        f"{base}/studies/{s}/series/{se}/instances/{i}/frames/1/rendered",
        f"{gw.root}/aets/ORTHANC/dicomweb/studies/{s}/series",
        f"{base}/no/such/dicomweb/resource",
        f"{gw.root}/wado",
        f"{gw.root}/healthz",
        f"{gw.root}/metrics",
    ]


def test_preflight_is_answered_on_every_path(cors_gw: GatewayServer, ct: Any) -> None:
    for url in _paths(cors_gw, ct):
        r = _preflight(url, VIEWER)
        assert r.status_code == 204, (url, r.status_code, r.text)
        assert r.content == b""
        assert r.headers["access-control-allow-origin"] == VIEWER, url
        assert "origin" in _tokens(r.headers.get("vary"))
        assert _tokens(r.headers["access-control-allow-methods"]) == {"get", "post", "options"}
        assert _tokens(r.headers["access-control-allow-headers"]) >= {
            "accept",
            "content-type",
            "authorization",
            "range",
            "x-request-id",
        }
        assert r.headers["access-control-max-age"] == "600"
        assert r.headers["x-request-id"]


def test_stow_preflight_echoes_the_requested_headers(
    orthanc: OrthancServer, gateway_for: GatewayFactory
) -> None:
    gw = gateway_for(orthanc, cors_origins=(VIEWER, "http://localhost:3000"), cors_max_age=30)
    asked = "content-type, authorization, x-custom-thing"
    for url in (f"{gw.url}/studies", f"{gw.url}/studies/1.2.3"):
        r = _preflight(url, "http://localhost:3000", "POST", asked)
        assert r.status_code == 204, r.text
        assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert r.headers["access-control-allow-headers"] == asked
        assert "post" in _tokens(r.headers["access-control-allow-methods"])
        assert r.headers["access-control-max-age"] == "30"


def test_preflight_from_another_origin_is_403_json(cors_gw: GatewayServer, ct: Any) -> None:
    for url in (f"{cors_gw.url}/studies", f"{cors_gw.root}/healthz"):
        r = _preflight(url, OTHER)
        assert r.status_code == 403, r.text
        assert r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert body["error"] == "Forbidden"
        assert OTHER in body["detail"]
        assert "access-control-allow-origin" not in r.headers
        assert "origin" in _tokens(r.headers.get("vary"))
    # An origin that only starts like an allowed one is another origin.
    r = _preflight(f"{cors_gw.url}/studies", VIEWER + ".evil.example")
    assert r.status_code == 403


def test_plain_options_keeps_its_behaviour(
    cors_gw: GatewayServer, orthanc: OrthancServer, gateway_for: GatewayFactory
) -> None:
    """Without preflight headers OPTIONS is not CORS's: the router answers it as it
    does with CORS off (whatever that is); from an allowed origin it gets the CORS
    headers on top."""
    plain = gateway_for(orthanc)
    for path in ("/dicomweb/studies", "/dicomweb/studies/1.2.3/series", "/healthz"):
        before = requests.options(plain.root + path, timeout=30)
        for headers in ({}, {"Origin": VIEWER}):
            after = requests.options(cors_gw.root + path, headers=headers, timeout=30)
            assert after.status_code == before.status_code, (path, headers)
            assert after.content == before.content, (path, headers)
            assert after.headers.get("allow") == before.headers.get("allow")
            assert after.headers.get("content-type") == before.headers.get("content-type")
            if headers:
                assert after.headers["access-control-allow-origin"] == VIEWER
            else:
                assert "access-control-allow-origin" not in after.headers


def test_cors_off_by_default(orthanc: OrthancServer, gateway_for: GatewayFactory) -> None:
    gw = gateway_for(orthanc)
    for url in (f"{gw.url}/studies", f"{gw.root}/healthz"):
        r = _preflight(url, VIEWER)
        assert "access-control-allow-origin" not in r.headers
        assert "access-control-allow-methods" not in r.headers
        assert r.status_code == requests.options(url, timeout=30).status_code
    r = requests.get(f"{gw.url}/studies", headers={"Origin": VIEWER}, timeout=30)
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    assert "cross-origin-opener-policy" not in r.headers


def test_actual_request_from_allowed_and_other_origin(cors_gw: GatewayServer) -> None:
    r = requests.get(f"{cors_gw.url}/studies", headers={"Origin": VIEWER}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == VIEWER
    assert "origin" in _tokens(r.headers["vary"])
    assert _tokens(r.headers["access-control-expose-headers"]) == EXPOSED
    other = requests.get(f"{cors_gw.url}/studies", headers={"Origin": OTHER}, timeout=30)
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-expose-headers" not in other.headers
    assert "origin" in _tokens(other.headers["vary"])  # a cache must keep them apart
    no_origin = requests.get(f"{cors_gw.url}/studies", timeout=30)
    assert "access-control-allow-origin" not in no_origin.headers
    assert "origin" in _tokens(no_origin.headers["vary"])


def test_streamed_wado_response_carries_the_headers(cors_gw: GatewayServer, ct: Any) -> None:
    url = f"{cors_gw.url}/studies/{ct.study_uid}/series/{ct.series_uid}"
    with requests.get(
        url, headers={"Origin": VIEWER, "Accept": DICOM}, stream=True, timeout=60
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("multipart/related")
        assert r.headers["access-control-allow-origin"] == VIEWER
        assert _tokens(r.headers["access-control-expose-headers"]) == EXPOSED
        body = b"".join(r.iter_content(1 << 16))
    assert body.count(b"Content-Type: application/dicom") >= 1


def test_error_responses_carry_the_headers(cors_gw: GatewayServer, ct: Any) -> None:
    for url, accept, status in (
        (f"{cors_gw.url}/studies/{ct.study_uid}/series/1.2.3.999", DICOM, 404),
        (f"{cors_gw.url}/studies?limit=nonsense", "application/dicom+json", 400),
        (f"{cors_gw.url}/studies", "image/gif", 406),
        (f"{cors_gw.url}/not/a/resource", "*/*", 404),
    ):
        r = requests.get(url, headers={"Origin": VIEWER, "Accept": accept}, timeout=30)
        assert r.status_code == status, (url, r.text)
        assert r.headers["access-control-allow-origin"] == VIEWER
        assert _tokens(r.headers["access-control-expose-headers"]) == EXPOSED
        assert r.json()["error"]


def test_pacs_failure_502_carries_the_headers(closed_port: Any) -> None:
    with GatewayServer(
        closed_port.pacs_config(), cors_origins=(VIEWER,), connect_timeout=1.0
    ) as gw:
        r = requests.get(f"{gw.url}/studies", headers={"Origin": VIEWER}, timeout=30)
    assert r.status_code == 502
    assert r.headers["access-control-allow-origin"] == VIEWER
    assert r.headers["x-request-id"]


def test_wildcard_origin(orthanc: OrthancServer, gateway_for: GatewayFactory) -> None:
    gw = gateway_for(orthanc, cors_origins=("*",))
    for origin in (VIEWER, OTHER, "null"):
        r = _preflight(f"{gw.url}/studies", origin)
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "*"
        got = requests.get(f"{gw.url}/studies", headers={"Origin": origin}, timeout=30)
        assert got.headers["access-control-allow-origin"] == "*"


def test_cross_origin_isolation_switch(orthanc: OrthancServer, gateway_for: GatewayFactory) -> None:
    isolated = {
        "cross-origin-opener-policy": "same-origin",
        "cross-origin-embedder-policy": "require-corp",
        "cross-origin-resource-policy": "cross-origin",
    }
    alone = gateway_for(orthanc, cross_origin_isolation=True)
    both = gateway_for(orthanc, cross_origin_isolation=True, cors_origins=(VIEWER,))
    for response in (
        requests.get(f"{alone.root}/healthz", timeout=30),
        requests.get(f"{alone.url}/studies/1.2.3/series/4.5.6", timeout=30),  # 404
        requests.get(f"{both.url}/studies", headers={"Origin": VIEWER}, timeout=30),
        _preflight(f"{both.url}/studies", VIEWER),
        _preflight(f"{both.url}/studies", OTHER),
    ):
        for name, value in isolated.items():
            assert response.headers.get(name) == value, (response.url, name)
    # Isolation alone does not turn CORS on.
    assert "access-control-allow-origin" not in _preflight(f"{alone.url}/studies", VIEWER).headers
    off = requests.get(f"{gateway_for(orthanc).root}/healthz", timeout=30)
    assert not set(isolated) & {k.lower() for k in off.headers}


def test_origins_from_environment_and_validation() -> None:
    s = load_settings(
        env={"DICOMWEB_GATEWAY_CORS_ORIGINS": f"{VIEWER}, http://localhost:3000 ,"},
    )
    assert s.cors_origins == (VIEWER, "http://localhost:3000")
    assert load_settings(env={"DICOMWEB_GATEWAY_CORS_ORIGINS": "*"}).cors_origins == ("*",)
    assert load_settings(env={}).cors_origins == ()
    for bad in (VIEWER + "/", "viewer.example.org", "https://Viewer.example.org"):
        with pytest.raises(ConfigError, match="cors_origins"):
            load_settings(env={"DICOMWEB_GATEWAY_CORS_ORIGINS": bad})


def test_unhandled_error_500_carries_the_headers(closed_port: Any) -> None:
    """The middlewares sit outside Starlette's ServerErrorMiddleware, so the 500 it
    writes for a bug is a response like any other."""

    async def bug(request: Request) -> Response:
        raise RuntimeError("a bug")

    gw = GatewayServer(closed_port.pacs_config(), cors_origins=(VIEWER,))
    gw.app.router.routes.insert(0, Route("/bug", bug))
    with gw:
        r = requests.get(
            gw.root + "/bug", headers={"Origin": VIEWER, "X-Request-ID": "b-1"}, timeout=30
        )
        metrics = requests.get(gw.root + "/metrics", timeout=30).text
    assert r.status_code == 500
    assert r.json()["error"] == "Internal Server Error"
    assert r.headers["access-control-allow-origin"] == VIEWER
    assert r.headers["x-request-id"] == "b-1"
    assert 'dicomweb_http_requests_total{route="/bug",method="GET",status="500"} 1' in metrics
