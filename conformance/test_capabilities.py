"""I. Capabilities (PS3.18 8.9, Annex H) and CORS (the Fetch standard's CORS protocol).

CAP-01 is the Retrieve Capabilities transaction: ``OPTIONS {base}/`` answers
with a Capabilities Description, a WADL document
(``application/vnd.sun.wadl+xml``) listing the resources the server
implements.  PS3.18 makes it mandatory for RESTful services, the checklist
holds it optional (few servers have it).

CORS-01 runs only with ``--allowed-origin`` (an origin the server is
configured to allow): preflights on the resources a browser viewer uses, the
headers an actual response exposes, and a disallowed origin getting nothing.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import requests

from conformance import multipart
from conformance.dataset import FixtureSet
from conformance.server import Server, describe

WADL = "application/vnd.sun.wadl+xml"
WADL_NS = "http://wadl.dev.java.net/2009/02"
EVIL_ORIGIN = "http://evil.example"

# --- CAP-01 ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def capabilities(server: Server) -> requests.Response:
    return server.request("OPTIONS", "/", headers={"Accept": WADL})


def test_CAP_01_options_returns_wadl(capabilities: requests.Response) -> None:
    response = capabilities
    assert response.status_code == 200, describe(response)
    media, _ = multipart.media_params(response.headers.get("Content-Type", ""))
    assert media == WADL, f"Content-Type {media!r}, not {WADL}: {describe(response)}"
    try:
        root = ET.fromstring(response.content)
    except ET.ParseError as exc:
        raise AssertionError(f"not well-formed XML ({exc}): {describe(response)}") from exc
    assert root.tag in (f"{{{WADL_NS}}}application", "application"), (
        f"root element {root.tag!r}, not WADL's application: {describe(response)}"
    )
    resources = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "resources"]
    assert len(resources) == 1, f"{len(resources)} <resources> elements, expected one"
    assert resources[0].get("base"), "<resources> without a base attribute (the service's base URL)"


def _segments(root: ET.Element) -> set[str]:
    """Literal path segments of every <resource path=...>, nested or not."""
    out: set[str] = set()
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == "resource":
            for segment in (element.get("path") or "").split("/"):
                if segment and not segment.startswith("{"):
                    out.add(segment.lower())
    return out


def _methods(root: ET.Element) -> set[str]:
    return {
        (el.get("name") or "").upper()
        for el in root.iter()
        if el.tag.rsplit("}", 1)[-1] == "method"
    }


def test_CAP_01_lists_implemented_resources(capabilities: requests.Response) -> None:
    """The description lists the resources every server of this suite must have
    (search, retrieve, metadata, frames, rendered, store), with GET and POST."""
    if capabilities.status_code != 200:
        pytest.fail(f"no capabilities to look at: {describe(capabilities)}")
    try:
        root = ET.fromstring(capabilities.content)
    except ET.ParseError as exc:
        raise AssertionError(f"not XML: {describe(capabilities)}") from exc
    expected = {"studies", "series", "instances", "metadata", "frames", "rendered"}
    missing = expected - _segments(root)
    assert not missing, f"resources missing from the WADL: {sorted(missing)}"
    assert {"GET", "POST"} <= _methods(root), f"methods listed: {sorted(_methods(root))}"


# --- CORS-01 ----------------------------------------------------------------------


def _origin(server: Server) -> str:
    origin = server.expect.allowed_origin
    if not origin:
        pytest.skip("--allowed-origin not given (an origin the server allows)")
    return origin


def _resources(fx: FixtureSet) -> dict[str, tuple[str, str]]:
    s, r = fx.ct.uid, fx.ct_series.uid
    i = fx.ct_series.instances[0].sop_uid
    instance = f"/studies/{s}/series/{r}/instances/{i}"
    return {
        "search": ("GET", "/studies"),
        "series-retrieve": ("GET", f"/studies/{s}/series/{r}"),
        "metadata": ("GET", f"/studies/{s}/series/{r}/metadata"),
        "frames": ("GET", f"{instance}/frames/1"),
        "rendered": ("GET", f"{instance}/rendered"),
        "store": ("POST", "/studies"),
    }


REQUESTED_HEADERS = ("accept", "content-type", "authorization")


def _tokens(value: str | None) -> set[str]:
    return {t.strip().lower() for t in (value or "").split(",") if t.strip()}


@pytest.mark.parametrize(
    "resource", ["search", "series-retrieve", "metadata", "frames", "rendered", "store"]
)
def test_CORS_01_preflight(server: Server, fixtures: FixtureSet, resource: str) -> None:
    """A preflight (OPTIONS with Origin, Access-Control-Request-Method and -Headers)
    from the allowed origin: 200 or 204, Access-Control-Allow-Origin that origin
    (or ``*``), Allow-Methods with GET, POST and OPTIONS, Allow-Headers covering
    Accept, Content-Type and Authorization (``*`` does not cover Authorization:
    Fetch standard, CORS-preflight fetch step 7)."""
    origin = _origin(server)
    method, path = _resources(fixtures)[resource]
    response = server.request(
        "OPTIONS",
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": ", ".join(REQUESTED_HEADERS),
        },
    )
    assert response.status_code in (200, 204), describe(response)
    allow_origin = response.headers.get("Access-Control-Allow-Origin")
    assert allow_origin in (origin, "*"), (
        f"Access-Control-Allow-Origin {allow_origin!r} for Origin {origin}: {describe(response)}"
    )
    methods = _tokens(response.headers.get("Access-Control-Allow-Methods"))
    if "*" not in methods:
        missing = {"get", "post", "options"} - methods
        assert not missing, (
            f"Access-Control-Allow-Methods {response.headers.get('Access-Control-Allow-Methods')!r}"
            f" lacks {sorted(missing)}"
        )
    allowed = _tokens(response.headers.get("Access-Control-Allow-Headers"))
    missing = {
        h
        for h in REQUESTED_HEADERS
        if h not in allowed and not ("*" in allowed and h != "authorization")
    }
    assert not missing, (
        f"Access-Control-Allow-Headers {response.headers.get('Access-Control-Allow-Headers')!r}"
        f" does not cover {sorted(missing)}"
    )


@pytest.mark.parametrize("resource", ["search", "frames"])
def test_CORS_01_actual_request_exposes_headers(
    server: Server, fixtures: FixtureSet, resource: str
) -> None:
    """A GET with Origin: Access-Control-Allow-Origin, and Access-Control-Expose-Headers
    naming Warning, Content-Location and Content-Type (case-insensitive; ``*``
    exposes all) so that a viewer's script can read them."""
    origin = _origin(server)
    _, path = _resources(fixtures)[resource]
    if resource == "search":
        accept, params = "application/dicom+json", {"PatientID": fixtures.ct.patient_id}
    else:
        accept, params = 'multipart/related; type="application/octet-stream"; transfer-syntax=*', {}
    response = server.get(path, params=params, headers={"Origin": origin, "Accept": accept})
    assert response.status_code == 200, describe(response)
    allow_origin = response.headers.get("Access-Control-Allow-Origin")
    assert allow_origin in (origin, "*"), (
        f"Access-Control-Allow-Origin {allow_origin!r} for Origin {origin}: {describe(response)}"
    )
    exposed = _tokens(response.headers.get("Access-Control-Expose-Headers"))
    if "*" not in exposed:
        missing = {"warning", "content-location", "content-type"} - exposed
        assert not missing, (
            f"Access-Control-Expose-Headers "
            f"{response.headers.get('Access-Control-Expose-Headers')!r} lacks {sorted(missing)}"
        )


@pytest.mark.parametrize("kind", ["preflight", "actual"])
def test_CORS_01_disallowed_origin(server: Server, kind: str) -> None:
    """An origin not on the allow-list gets no Access-Control-Allow-Origin naming it
    (nor ``*``): the browser then keeps the answer from the page."""
    _origin(server)
    if kind == "preflight":
        response = server.request(
            "OPTIONS",
            "/studies",
            headers={
                "Origin": EVIL_ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "accept",
            },
        )
    else:
        response = server.get(
            "/studies",
            params={"PatientID": "DWCONF-CT"},
            headers={"Origin": EVIL_ORIGIN, "Accept": "application/dicom+json"},
        )
    assert response.status_code < 500, describe(response)
    allow_origin = response.headers.get("Access-Control-Allow-Origin")
    assert allow_origin not in (EVIL_ORIGIN, "*"), (
        f"Access-Control-Allow-Origin {allow_origin!r} for Origin {EVIL_ORIGIN}: "
        f"{describe(response)}"
    )
