"""H. Errors: client errors with a short body; a proxy's answers when its PACS fails.

ERR-01 provokes each client error PS3.18 8.5 (Table 8.5-1) lists and a black-box
client can cause: 400, 404, 405, 406, 415.  413 (the limit is the server's own),
501 (no request PS3.18 defines is optional to the point of "not implemented"
for every server) and 503 (load) cannot be provoked against an unknown server;
ERR-03 sees 503 through ``--busy-url``.  Every error answer carries a short
body saying why (the checklist: "a short JSON body with the reason"; any
media type is accepted here, only emptiness and bulk are failures).

ERR-02/ERR-03 need the same server deployed in front of misbehaving PACS (a
DIMSE proxy: our gateway), given as ``--unreachable-url`` ... ``--failing-url``
and ``--pacs-timeout``; each test is skipped when its URL is not given.  The
fault peers fail the C-FIND of a study search; a fault in the middle of a
C-GET (a retrieve that breaks off half-way, or C-GET sub-operation failures
being reported) is not available from these URLs and is not checked here.
"""

from __future__ import annotations

import time

import pytest
import requests

from conformance.dataset import FixtureSet
from conformance.server import Server, describe

#: "Short": a reason, not a stack trace or an HTML page.
MAX_ERROR_BODY = 4096


def assert_short_body(response: requests.Response) -> None:
    body = response.content
    assert body.strip(), f"error answer without a body saying why: {describe(response)}"
    assert len(body) <= MAX_ERROR_BODY, (
        f"error body of {len(body)} bytes (more than {MAX_ERROR_BODY}): {describe(response)}"
    )


# --- ERR-01 ---------------------------------------------------------------------


def _bad_requests(fx: FixtureSet) -> dict[str, str]:
    s, r, i = fx.ct.uid, fx.ct_series.uid, fx.ct_series.instances[0].sop_uid
    return {
        "limit-not-a-number": "/studies?limit=abc",
        "invalid-date": "/studies?StudyDate=2024-13-45",
        "frame-zero": f"/studies/{s}/series/{r}/instances/{i}/frames/0",
    }


@pytest.mark.parametrize("case", ["limit-not-a-number", "invalid-date", "frame-zero"])
def test_ERR_01_bad_request_400(server: Server, fixtures: FixtureSet, case: str) -> None:
    """A known parameter with an invalid value (QIDO-09, QIDO-12, WADO-07): 400."""
    path = _bad_requests(fixtures)[case]
    accept = (
        'multipart/related; type="application/octet-stream"; transfer-syntax=*'
        if "/frames/" in path
        else "application/dicom+json"
    )
    response = server.get(path, headers={"Accept": accept})
    assert response.status_code == 400, describe(response)
    assert_short_body(response)


@pytest.mark.parametrize("case", ["unknown-path", "unknown-study"])
def test_ERR_01_not_found_404(server: Server, fresh_uid: str, case: str) -> None:
    path = "/no-such-resource" if case == "unknown-path" else f"/studies/{fresh_uid}/metadata"
    response = server.get(path, headers={"Accept": "application/dicom+json"})
    assert response.status_code == 404, describe(response)
    assert_short_body(response)


@pytest.mark.parametrize("case", ["search-as-png", "instance-as-mpeg2"])
def test_ERR_01_not_acceptable_406(server: Server, fixtures: FixtureSet, case: str) -> None:
    """Nothing acceptable: a search asked for as image/png (QIDO-11), a CT instance
    asked for only in MPEG2 Main Profile (a transfer syntax no server produces for
    a CT image, WADO-03): 406.  (A single unsupported Accept value on a retrieve is
    left out: PS3.18 editions differ on whether the default is then returned.)"""
    if case == "search-as-png":
        path, accept = f"/studies?StudyInstanceUID={fixtures.ct.uid}", "image/png"
    else:
        inst = fixtures.ct_series.instances[0]
        path = f"/studies/{fixtures.ct.uid}/series/{inst.series_uid}/instances/{inst.sop_uid}"
        accept = (
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.100'
        )
    response = server.get(path, headers={"Accept": accept})
    assert response.status_code == 406, describe(response)
    assert_short_body(response)


def test_ERR_01_unsupported_media_type_415(server: Server) -> None:
    response = server.post(
        "/studies",
        data=b"not DICOM\r\n",
        headers={"Content-Type": "text/plain", "Accept": "application/dicom+json"},
    )
    assert response.status_code == 415, describe(response)
    assert_short_body(response)


@pytest.mark.parametrize("method", ["DELETE", "PUT"])
def test_ERR_01_wrong_method_405_with_allow(server: Server, method: str) -> None:
    """DELETE or PUT on /studies, which PS3.18 defines for GET (search) and POST
    (store) only: 405 with an Allow header listing the methods the resource does
    support (RFC 9110 15.5.6: MUST), GET and POST among them.  501 is also
    accepted: RFC 9110 15.6.2 for a server that implements the method nowhere."""
    response = server.request(
        method,
        "/studies",
        data=b"x" if method == "PUT" else None,
        headers={"Accept": "application/dicom+json"},
    )
    assert response.status_code in (405, 501), describe(response)
    assert_short_body(response)
    if response.status_code == 405:
        allow = response.headers.get("Allow")
        assert allow is not None, f"405 without an Allow header: {describe(response)}"
        methods = {m.strip().upper() for m in allow.split(",") if m.strip()}
        assert {"GET", "POST"} <= methods, (
            f"Allow: {allow!r} on /studies, which supports GET (search) and POST (store): "
            f"{describe(response)}"
        )
        assert method not in methods, f"Allow: {allow!r} lists the method refused"


# --- ERR-02 / ERR-03: a proxy whose PACS fails -------------------------------------

#: fault -> (acceptable statuses, whether Retry-After is required)
FAULTS: dict[str, tuple[tuple[int, ...], bool]] = {
    "unreachable": ((502, 503), False),  # connection refused: bad gateway or unavailable
    "silent": ((504, 502), False),  # accepts TCP, never answers: gateway timeout
    "aborting": ((502,), False),  # A-ABORT in the middle of the C-FIND
    "busy": ((503,), True),  # C-FIND status A700: out of resources
    "failing": ((502,), False),  # C-FIND status C000: unable to process
}


def _fault_search(server: Server, fault: str) -> tuple[requests.Response, float]:
    url = getattr(server.faults, fault)
    if not url:
        pytest.skip(f"--{fault}-url not given (a DIMSE proxy in front of a failing PACS)")
    limit = server.faults.timeout + 2.0
    started = time.monotonic()
    try:
        response = server.session.get(
            f"{url}/studies",
            params={"PatientID": "DWCONF-CT"},
            headers={"Accept": "application/dicom+json"},
            timeout=limit + 30.0,
        )
    except requests.RequestException as exc:
        pytest.fail(f"GET {url}/studies: no HTTP answer ({exc!r})")
    return response, time.monotonic() - started


def _check_fault(server: Server, fault: str) -> None:
    response, elapsed = _fault_search(server, fault)
    statuses, retry_after = FAULTS[fault]
    limit = server.faults.timeout + 2.0
    assert response.status_code in statuses, (
        f"PACS {fault}: expected {' or '.join(map(str, statuses))}: {describe(response)}"
    )
    assert elapsed <= limit, (
        f"PACS {fault}: answered after {elapsed:.1f} s, more than the configured "
        f"{server.faults.timeout:g} s + 2 s: {describe(response)}"
    )
    assert_short_body(response)
    if retry_after:
        value = response.headers.get("Retry-After", "").strip()
        assert value, f"PACS {fault}: 503 without Retry-After: {describe(response)}"
        assert value.isdigit() or "GMT" in value, (
            f"Retry-After {value!r} is neither seconds nor an HTTP date"
        )


@pytest.mark.parametrize("fault", ["unreachable", "silent", "aborting"])
def test_ERR_02_pacs_unreachable_or_silent(server: Server, fault: str) -> None:
    """A study search through a proxy whose PACS is unreachable (closed port: 502
    or 503), silent (accepts TCP, never answers: 504, or 502) or aborts the
    association in the middle of the C-FIND (502, not a partial 200): answered
    within the configured PACS timeout + 2 s, with a short body."""
    _check_fault(server, fault)


@pytest.mark.parametrize("fault", ["busy", "failing"])
def test_ERR_03_pacs_failure_status(server: Server, fault: str) -> None:
    """C-FIND answered with A700 (out of resources): 503 with Retry-After; with
    C000 (unable to process): 502.  Sub-operation failures of C-GET/C-MOVE are
    documented behaviour a black-box client cannot provoke with these peers."""
    _check_fault(server, fault)
