"""service_base_url: absolute URLs behind proxies (URL-04), without a server."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from gateway.web.urls import service_base_url


def _request(headers: dict[str, str], root_path: str = "/dicomweb") -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "server": ("127.0.0.1", 8080),
        "path": root_path + "/studies",
        "root_path": root_path,
        "app_root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("headers", "want"),
    [
        ({"Host": "127.0.0.1:8080"}, "http://127.0.0.1:8080/dicomweb"),
        (
            {"Host": "gw:8080", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "a.example"},
            "https://a.example/dicomweb",
        ),
        (
            {
                "Host": "gw:8080",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "a.example",
                "X-Forwarded-Port": "8443",
            },
            "https://a.example:8443/dicomweb",
        ),
        (
            {"Host": "gw:8080", "X-Forwarded-Proto": "https", "X-Forwarded-Port": "443"},
            "https://gw/dicomweb",
        ),
        (
            {"Host": "gw:8080", "X-Forwarded-Host": "a.example:9", "X-Forwarded-Port": "81"},
            "http://a.example:81/dicomweb",
        ),
        ({"Host": "[::1]:8080", "X-Forwarded-Port": "9000"}, "http://[::1]:9000/dicomweb"),
        ({"Host": "gw", "X-Forwarded-Port": "junk"}, "http://gw/dicomweb"),
    ],
)
def test_forwarded_headers(headers: dict[str, str], want: str) -> None:
    assert service_base_url(_request(headers)) == want


def test_public_url_unless_forwarded() -> None:
    assert (
        service_base_url(_request({"Host": "gw:8080"}), "https://pacs.example/x/")
        == "https://pacs.example/x/dicomweb"
    )
    forwarded = _request({"Host": "gw:8080", "X-Forwarded-Port": "8443"})
    assert service_base_url(forwarded, "https://pacs.example") == "http://gw:8443/dicomweb"
