"""A path served by several modules answers a wrong method with every method it takes."""

from __future__ import annotations

from typing import Any

import requests
from starlette.routing import Route

from gateway.web.app import dicomweb_routes
from tests.peers.gateway import GatewayServer


def test_one_route_per_path() -> None:
    paths = [r.path for r in dicomweb_routes() if isinstance(r, Route)]
    assert len(paths) == len(set(paths))
    studies = next(r for r in dicomweb_routes() if isinstance(r, Route) and r.path == "/studies")
    assert studies.methods is not None and {"GET", "HEAD", "POST"} <= studies.methods


def test_wrong_method_names_every_method(closed_port: Any) -> None:
    with GatewayServer(closed_port.pacs_config()) as gw:
        for path in ("/studies", "/studies/1.2.3"):
            response = requests.delete(gw.url + path, timeout=10)
            assert response.status_code == 405, response.text
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            assert allowed >= {"GET", "HEAD", "POST"}, (path, allowed)
            assert response.text
        # STOW and QIDO still reach their own endpoints: a bad STOW body is 415, a bad query 400.
        stow = requests.post(gw.url + "/studies", data=b"x", headers={"Content-Type": "text/plain"})
        assert stow.status_code == 415, stow.text
        qido = requests.get(gw.url + "/studies", params={"limit": "-1"}, timeout=10)
        assert qido.status_code == 400, qido.text


def test_options_describes_the_service(closed_port: Any) -> None:
    """CAP-01: OPTIONS {base}/ is a WADL of every route; OPTIONS elsewhere is 204 + Allow."""
    import xml.etree.ElementTree as ET

    with GatewayServer(closed_port.pacs_config()) as gw:
        response = requests.request("OPTIONS", gw.url + "/", timeout=10)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/vnd.sun.wadl+xml")
        root = ET.fromstring(response.content)
        ns = "{http://wadl.dev.java.net/2009/02}"
        (resources,) = root.iter(ns + "resources")
        assert resources.get("base") == gw.url + "/"
        paths = {r.get("path"): r for r in resources.iter(ns + "resource")}
        templates = {
            r.path.lstrip("/").replace("{path:path}", "{path}")
            for r in dicomweb_routes()
            if isinstance(r, Route)
        }
        assert set(paths) == templates - {""}
        studies = {m.get("name") for m in paths["studies"].iter(ns + "method")}
        assert studies == {"GET", "POST"}
        plain = requests.request("OPTIONS", gw.url + "/studies", timeout=10)
        assert plain.status_code == 204
        assert {m.strip() for m in plain.headers["allow"].split(",")} == {
            "GET",
            "HEAD",
            "OPTIONS",
            "POST",
        }


def test_rejected_uploads_close_the_connection_and_say_so(closed_port: Any) -> None:
    """A STOW refused before its body was read: ``Connection: close``, so a client's
    pool does not send the next request on a connection the server is closing."""
    with GatewayServer(closed_port.pacs_config()) as gw, requests.Session() as http:
        big = b"x" * (4 << 20)  # more than the socket buffers: the body is not drained
        for _ in range(5):
            for body, ctype in (
                (big, 'multipart/related; type="image/png"'),
                (b"hi", "text/plain"),
            ):
                r = http.post(
                    gw.url + "/studies", data=body, headers={"Content-Type": ctype}, timeout=30
                )
                assert r.status_code == 415, r.text
                assert r.headers.get("connection", "").lower() == "close"
