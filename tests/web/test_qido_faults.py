"""QIDO-RS when the PACS fails: the right status, a JSON body, and within the timeout.

Checklist ERR-02/ERR-03 and issue 2 "Bad input and faults": PACS down or
refusing -> 502 (503 when it says it is busy), PACS silent -> 504, each within
the configured timeout plus one second; the pool recovers by itself when the
PACS comes back; patient data never reaches the logs at the default level.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
import requests

from tests.peers.gateway import GatewayServer

FAST = {
    "connect_timeout": 1.0,
    "accept_timeout": 1.0,
    "dimse_timeout": 1.5,
    "pool_backoff_seconds": 0.5,
}


def _get(url: str, **params: Any) -> tuple[requests.Response, float]:
    start = time.monotonic()
    response = requests.get(url, params=params, timeout=30)
    return response, time.monotonic() - start


def _assert_json_error(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["detail"], body
    return body


def test_closed_port_is_502(closed_port: Any) -> None:
    with GatewayServer(closed_port.pacs_config(), **FAST) as gw:
        response, elapsed = _get(gw.url + "/studies")
    body = _assert_json_error(response, 502)
    assert "cannot connect" in body["detail"]
    assert elapsed < FAST["connect_timeout"] + 1


def test_rejected_association_is_502(rejecting_peer: Any) -> None:
    with GatewayServer(rejecting_peer.pacs_config(), **FAST) as gw:
        response, _ = _get(gw.url + "/studies")
    body = _assert_json_error(response, 502)
    assert "rejected" in body["detail"]


def test_transient_rejection_is_503_with_retry_after(busy_peer: Any) -> None:
    with GatewayServer(busy_peer.pacs_config(), **FAST) as gw:
        response, _ = _get(gw.url + "/studies")
    _assert_json_error(response, 503)
    assert int(response.headers["retry-after"]) >= 1


def test_silent_peer_is_504_within_timeout(silent_peer: Any) -> None:
    with GatewayServer(silent_peer.pacs_config(), **FAST) as gw:
        response, elapsed = _get(gw.url + "/studies")
    _assert_json_error(response, 504)
    assert elapsed < FAST["accept_timeout"] + 1


def test_abort_during_cfind_is_502(aborting_peer: Any) -> None:
    with GatewayServer(aborting_peer.pacs_config(), **FAST) as gw:
        response, elapsed = _get(gw.url + "/studies")
        assert gw.run(_pool_size(gw)) == 0, "an aborted association must not stay pooled"
    body = _assert_json_error(response, 502)
    assert "abort" in body["detail"].lower() or "closed" in body["detail"].lower()
    assert elapsed < FAST["dimse_timeout"] + 1


def test_cfind_failure_status(find_failure_peer: Any) -> None:
    """ERR-03: A700 (out of resources) -> 503; C000 (cannot understand) -> 502."""
    expected = 503 if find_failure_peer.status == 0xA700 else 502
    with GatewayServer(find_failure_peer.pacs_config(), **FAST) as gw:
        response, _ = _get(gw.url + "/studies")
        # A failure status ends the C-FIND cleanly: the association is reusable.
        second, _ = _get(gw.url + "/studies")
    body = _assert_json_error(response, expected)
    assert f"0x{find_failure_peer.status:04X}" in body["detail"]
    assert second.status_code == expected


async def _pool_size(gw: GatewayServer) -> int:
    return int(gw.app.state.pacs.get().pool.size)


def test_pool_recovers_when_orthanc_comes_back(tmp_orthanc: Any) -> None:
    with GatewayServer(tmp_orthanc.pacs_config(), **FAST) as gw:
        first, _ = _get(gw.url + "/studies")
        assert first.status_code == 204, first.text  # empty Orthanc
        tmp_orthanc.stop()
        down, elapsed = _get(gw.url + "/studies")
        assert down.status_code in (502, 503), down.text
        assert elapsed < FAST["connect_timeout"] + 1
        tmp_orthanc.start()
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            status = _get(gw.url + "/studies")[0].status_code
            if status == 204:
                break
            time.sleep(0.2)
        assert status == 204, "the pool did not recover after Orthanc came back"


def test_patient_data_not_logged(closed_port: Any, caplog: pytest.LogCaptureFixture) -> None:
    secret = "SECRETNAME^PATIENT"
    caplog.set_level(logging.INFO)
    with GatewayServer(closed_port.pacs_config(), **FAST) as gw:
        response, _ = _get(gw.url + "/studies", PatientName=secret, PatientID="SECRET-ID-42")
    assert response.status_code == 502
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "502" in logged or "cannot connect" in logged, "expected the failure to be logged"
    assert "SECRET" not in logged
