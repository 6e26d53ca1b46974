"""The server under test, as the tests see it: URLs, an HTTP session, the switches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from conformance import multipart

#: Seconds any single request may take before the suite calls it a hang.
REQUEST_TIMEOUT = 60.0


@dataclass
class Expectations:
    """The configurable items' switches (see ``conformance/conftest.py``)."""

    empty_result: str = "200"  # QIDO-10: "200" (2026 edition) or "204"
    no_accept: str = "default"  # WADO-05: "default" or "406"
    allowed_origin: str = ""  # CORS-01: an origin the server allows; "" = not configured


@dataclass
class FaultUrls:
    """Base URLs of the same server fronting failing PACS (ERR-02/03; proxies only)."""

    unreachable: str = ""  # PACS port closed
    silent: str = ""  # PACS accepts TCP and never answers
    aborting: str = ""  # PACS aborts in the middle of C-FIND
    busy: str = ""  # PACS answers C-FIND with A700
    failing: str = ""  # PACS answers C-FIND with C000
    timeout: float = 30.0  # the configured timeout the answers must come within


@dataclass
class Server:
    base_url: str  # e.g. http://127.0.0.1:8080/dicomweb (no trailing slash)
    wado_uri_url: str  # e.g. http://127.0.0.1:8080/wado
    expect: Expectations = field(default_factory=Expectations)
    faults: FaultUrls = field(default_factory=FaultUrls)
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def origin(self) -> str:
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    def url(self, path: str) -> str:
        """``/studies/...`` -> absolute URL under the base."""
        if path.startswith("http://") or path.startswith("https://"):
            return path
        return self.base_url + path

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", REQUEST_TIMEOUT)
        return self.session.get(self.url(path), **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", REQUEST_TIMEOUT)
        return self.session.post(self.url(path), **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", REQUEST_TIMEOUT)
        return self.session.request(method, self.url(path), **kwargs)

    def search(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """A QIDO search as JSON; [] for 204. Fails the test on any other status."""
        response = self.get(path, params=params, headers={"Accept": "application/dicom+json"})
        if response.status_code == 204:
            return []
        assert response.status_code == 200, describe(response)
        result = response.json()
        assert isinstance(result, list), f"QIDO body is not a JSON array: {result!r:.200}"
        return result

    def parts(self, path: str, accept: str, **kwargs: Any) -> list[multipart.Part]:
        """A multipart retrieve, parsed strictly; fails the test unless 200."""
        response = self.get(path, headers={"Accept": accept}, **kwargs)
        assert response.status_code == 200, describe(response)
        return multipart.parse(response.headers.get("Content-Type", ""), response.content)


def describe(response: requests.Response) -> str:
    """One line for a failure message: method, URL, status and the start of the body."""
    body = response.content[:300]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = repr(body[:120])
    request = response.request
    return (
        f"{request.method} {request.url} -> {response.status_code} "
        f"{response.headers.get('Content-Type', '')}: {text}"
    )


def value(dataset: dict[str, Any], tag: str) -> Any:
    """The first value of a DICOM JSON attribute, or None."""
    attr = dataset.get(tag)
    if not attr:
        return None
    values = attr.get("Value")
    if not values:
        return None
    return values[0]


def values(dataset: dict[str, Any], tag: str) -> list[Any]:
    attr = dataset.get(tag) or {}
    return list(attr.get("Value") or [])
