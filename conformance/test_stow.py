"""F. STOW-RS: media types, target study, status codes, the response body, large uploads.

Every test stores NEW instances: copies of fixture instances with fresh Study,
Series and SOP Instance UIDs and a patient of their own (``DWCONF-STOW``), so
the seeded fixture set and the searches other items make on it stay as they
were.  After a store the tests look for the instances with QIDO: a server that
says "stored" must find them, one that says "failed" must not.

PS3.18 sources: 10.5.1 (request: Part 10 parts, or a JSON array of metadata
plus bulk data parts), 10.5.3 Table 10.5.3-1 (status codes), Annex I (the Store
Instances Response Module, Table I.1-1; Failure Reason values, Table I.2-2).
"""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import select
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from pydicom import Dataset, dcmread

from conformance import multipart
from conformance.dataset import FixtureSet, InstanceFixture
from conformance.server import REQUEST_TIMEOUT, Server, describe, value, values

JSON = "application/dicom+json"

RETRIEVE_URL = "00081190"
FAILED_SEQ = "00081198"
REFERENCED_SEQ = "00081199"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
REF_CLASS = "00081150"
REF_INSTANCE = "00081155"

#: Study-level values of every instance these tests store (none of the fixture set's).
STOW_PATIENT = {
    "PatientName": "Conformance^Stow",
    "PatientID": "DWCONF-STOW",
    "PatientBirthDate": "19000101",
    "PatientSex": "O",
    "AccessionNumber": "DWCSTOW",
    "StudyID": "DWCS",
    "StudyDate": "19990101",
    "StudyTime": "000000",
    "ReferringPhysicianName": "",
    "StudyDescription": "Conformance STOW",
    "SeriesDescription": "Conformance STOW",
}


# --- building instances and bodies ----------------------------------------


def new_uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


@dataclasses.dataclass(frozen=True)
class NewInstance:
    study: str
    series: str
    sop: str
    sop_class: str
    part10: bytes
    dataset: Dataset


def new_instance(
    source: InstanceFixture,
    study: str,
    series: str | None = None,
    *,
    sop_class: str | None = None,
    pixels: np.ndarray | None = None,
) -> NewInstance:
    """A copy of ``source`` with fresh UIDs (Study ``study``) and the STOW patient."""
    ds = source.dataset()
    for keyword, val in STOW_PATIENT.items():
        setattr(ds, keyword, val)
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series or new_uid()
    ds.SOPInstanceUID = new_uid()
    if sop_class is not None:
        ds.SOPClassUID = sop_class
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return NewInstance(
        study, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID, out.getvalue(), ds
    )


def multipart_body(parts: list[tuple[dict[str, str], bytes]], part_type: str) -> tuple[bytes, str]:
    """A multipart/related body of ``parts`` (headers, content) and its Content-Type."""
    boundary = f"stow-{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for headers, content in parts:
        head = "".join(f"{name}: {val}\r\n" for name, val in headers.items())
        chunks += [f"--{boundary}\r\n{head}\r\n".encode(), content, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="{part_type}"; boundary={boundary}'


def dicom_body(*payloads: bytes) -> tuple[bytes, str]:
    parts = [({"Content-Type": "application/dicom"}, p) for p in payloads]
    return multipart_body(parts, "application/dicom")


def stow(
    server: Server, path: str, body: Any, content_type: str, **headers: str
) -> requests.Response:
    return server.post(
        path,
        data=body,
        headers={"Content-Type": content_type, "Accept": JSON, **headers},
        timeout=REQUEST_TIMEOUT * 2,
    )


def response_json(response: requests.Response) -> dict[str, Any]:
    """The Store Instances Response Module of a STOW answer ({} when there is no body)."""
    if not response.content.strip():
        return {}
    try:
        body = json.loads(response.content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AssertionError(f"STOW response is not JSON ({exc}): {describe(response)}") from exc
    if isinstance(body, list) and len(body) == 1:
        body = body[0]  # one dataset, whether or not inside an array
    assert isinstance(body, dict), f"STOW response is not one JSON dataset: {describe(response)}"
    return body


def items(body: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return [item for item in values(body, tag) if isinstance(item, dict)]


def referenced(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """ReferencedSOPSequence items by ReferencedSOPInstanceUID."""
    return {str(value(i, REF_INSTANCE)): i for i in items(body, REFERENCED_SEQ)}


def failed(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """FailedSOPSequence items by ReferencedSOPInstanceUID."""
    return {str(value(i, REF_INSTANCE)): i for i in items(body, FAILED_SEQ)}


def found_sops(server: Server, study: str) -> set[str]:
    """SOP Instance UIDs QIDO finds in ``study``."""
    return {str(value(r, "00080018")) for r in server.search(f"/studies/{study}/instances")}


def reason_in(code: Any, *ranges: tuple[int, int]) -> bool:
    return isinstance(code, int) and any(lo <= code <= hi for lo, hi in ranges)


# Table I.2-2 Failure Reason values.
A7XX = (0xA700, 0xA7FF)  # refused: out of resources
A9XX = (0xA900, 0xA9FF)  # data set does not match SOP class
CXXX = (0xC000, 0xCFFF)  # cannot understand (C122: transfer syntax not supported)
PROCESSING_FAILURE = (0x0110, 0x0110)
SOP_CLASS_NOT_SUPPORTED = (0x0122, 0x0122)
TABLE_I22 = (A7XX, A9XX, CXXX, PROCESSING_FAILURE, SOP_CLASS_NOT_SUPPORTED)


def truncated(part10: bytes) -> bytes:
    """A Part 10 file cut off inside its Pixel Data (header and UIDs intact)."""
    return part10[: len(part10) - len(part10) // 3]


# --- shared stores -----------------------------------------------------------


@dataclasses.dataclass
class Store:
    response: requests.Response
    body: dict[str, Any]  # {} when the answer has no JSON body
    sent: list[NewInstance]


def _store(server: Server, path: str, sent: list[NewInstance]) -> Store:
    body, content_type = dicom_body(*(i.part10 for i in sent))
    response = stow(server, path, body, content_type)
    try:
        result = response_json(response)
    except AssertionError:
        result = {}  # the tests say what is wrong with the status or the body
    return Store(response, result, sent)


@pytest.fixture(scope="module")
def good_store(server: Server, fixtures: FixtureSet) -> Store:
    """Two new CT instances of one new study, POST /studies/{study}: all stored."""
    study, series = new_uid(), new_uid()
    sent = [new_instance(fixtures.ct_series.instances[i], study, series) for i in (0, 1)]
    return _store(server, f"/studies/{study}", sent)


@pytest.fixture(scope="module")
def mismatch_store(server: Server, fixtures: FixtureSet) -> Store:
    """POST /studies/{A} with one instance of study B only: nothing can be stored."""
    target, other = new_uid(), new_uid()
    sent = [new_instance(fixtures.ct_series.instances[2], other)]
    return _store(server, f"/studies/{target}", sent)


@pytest.fixture(scope="module")
def mixed_store(server: Server, fixtures: FixtureSet) -> Store:
    """POST /studies/{A}: one instance of A (stored) and one of study B (failed)."""
    target, other = new_uid(), new_uid()
    good = new_instance(fixtures.ct_series.instances[3], target)
    bad = new_instance(fixtures.ct_series.instances[4], other)
    return _store(server, f"/studies/{target}", [good, bad])


# --- STOW-01: media types ------------------------------------------------------


def test_STOW_01_application_dicom_parts(server: Server, good_store: Store) -> None:
    """``type="application/dicom"``, one Part 10 instance per part: stored and found."""
    response = good_store.response
    assert response.status_code == 200, describe(response)
    study = good_store.sent[0].study
    missing = {i.sop for i in good_store.sent} - found_sops(server, study)
    assert not missing, f"stored (200) but QIDO does not find {sorted(missing)}"


def test_STOW_01_dicom_json_with_bulk_data(
    server: Server, fixtures: FixtureSet, fresh_uid: str
) -> None:
    """``type="application/dicom+json"``: a JSON array of metadata whose Pixel Data is
    a BulkDataURI, then a bulk data part (application/octet-stream, little endian)
    whose Content-Location is that URI (PS3.18 10.5.1.4, Figure 8.6-1).  The stored
    instance, retrieved by WADO-RS, has exactly the pixel values sent."""
    source = fixtures.ct_series.instances[10]
    inst = new_instance(source, fresh_uid)
    bulk_uri = f"http://conformance.invalid/bulkdata/{uuid.uuid4().hex}"
    metadata = inst.dataset.to_json_dict(
        bulk_data_threshold=1024, bulk_data_element_handler=lambda _elem: bulk_uri
    )
    assert metadata["7FE00010"].get("BulkDataURI") == bulk_uri  # the suite's own premise
    body, content_type = multipart_body(
        [
            ({"Content-Type": JSON}, json.dumps([metadata]).encode()),
            (
                {"Content-Type": "application/octet-stream", "Content-Location": bulk_uri},
                bytes(inst.dataset.PixelData),
            ),
        ],
        JSON,
    )
    response = stow(server, "/studies", body, content_type)
    assert response.status_code == 200, describe(response)
    stored = referenced(response_json(response))
    assert inst.sop in stored, f"instance not in ReferencedSOPSequence: {describe(response)}"

    path = f"/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}"
    parts = server.parts(path, 'multipart/related; type="application/dicom"; transfer-syntax=*')
    assert len(parts) == 1, f"GET {path}: {len(parts)} parts, expected 1"
    retrieved = dcmread(io.BytesIO(parts[0].body))
    assert retrieved.SOPInstanceUID == inst.sop, "retrieved another instance"
    assert retrieved.PatientID == STOW_PATIENT["PatientID"], "metadata not stored as sent"
    got = retrieved.pixel_array
    want = np.frombuffer(source.native_frames[0], dtype="<i2").reshape(source.rows, source.columns)
    assert got.shape == want.shape and np.array_equal(got, want), (
        f"GET {path}: pixel data differs from the bulk data sent "
        f"(shape {got.shape} vs {want.shape})"
    )


@pytest.mark.parametrize(
    "content_type",
    ['multipart/related; type="image/png"', "text/plain"],
    ids=["multipart-image-png", "text-plain"],
)
def test_STOW_01_other_media_type_415(
    server: Server, fixtures: FixtureSet, fresh_uid: str, content_type: str
) -> None:
    inst = new_instance(fixtures.ct_series.instances[11], fresh_uid)
    if content_type.startswith("multipart/"):
        body, real_type = multipart_body(
            [({"Content-Type": "image/png"}, inst.part10)], "image/png"
        )
    else:
        body, real_type = b"this is not a DICOM instance\r\n", content_type
    response = stow(server, "/studies", body, real_type)
    assert response.status_code == 415, describe(response)
    assert inst.sop not in found_sops(server, fresh_uid), "refused (415) but stored anyway"


def _broken_bodies(part10: bytes) -> dict[str, tuple[bytes, str]]:
    boundary = f"broken-{uuid.uuid4().hex}"
    related = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return {
        "garbage": (b"this is not a multipart body at all\r\n" * 4, related),
        "no-closing-boundary": (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part10,
            related,
        ),
    }


@pytest.mark.parametrize("kind", ["garbage", "no-closing-boundary"])
def test_STOW_01_broken_multipart_400(
    server: Server, fixtures: FixtureSet, fresh_uid: str, kind: str
) -> None:
    """A body that is not a well-formed multipart: 400 (bad syntax, Table 10.5.3-1)."""
    inst = new_instance(fixtures.ct_series.instances[12], fresh_uid)
    body, content_type = _broken_bodies(inst.part10)[kind]
    response = stow(server, "/studies", body, content_type)
    assert response.status_code == 400, describe(response)


def test_STOW_01_multipart_without_boundary(
    server: Server, fixtures: FixtureSet, fresh_uid: str
) -> None:
    """``multipart/related`` without its required boundary parameter (RFC 2046):
    the body cannot be split, 400 (or 415 for the ill-formed media type)."""
    inst = new_instance(fixtures.ct_series.instances[13], fresh_uid)
    body, _ = dicom_body(inst.part10)
    response = stow(server, "/studies", body, 'multipart/related; type="application/dicom"')
    assert response.status_code in (400, 415), describe(response)


# --- STOW-02: the target study -----------------------------------------------------


def _mismatch_reason_ok(code: Any) -> bool:
    """The checklist asks for an A9xx code (Microsoft: 0xA901); dcm4chee uses 0xC409,
    in Table I.2-2's Cxxx "cannot understand" range, also accepted.  Not 0x0110
    (a general processing failure hides what is wrong)."""
    return reason_in(code, A9XX, CXXX)


def test_STOW_02_other_study_fails_409(server: Server, mismatch_store: Store) -> None:
    """POST /studies/{A} with an instance of study B: FailedSOPSequence, nothing stored:
    409 (Table 10.5.3-1: "Study Instance UID mismatch")."""
    response, body = mismatch_store.response, mismatch_store.body
    inst = mismatch_store.sent[0]
    assert response.status_code == 409, describe(response)
    item = failed(body).get(inst.sop)
    assert item is not None, f"instance not in FailedSOPSequence: {describe(response)}"
    code = value(item, FAILURE_REASON)
    assert _mismatch_reason_ok(code), (
        f"FailureReason {code!r} ({_hex(code)}) for a Study Instance UID mismatch; "
        f"expected 0xA9xx (or 0xCxxx): {describe(response)}"
    )
    assert inst.sop not in referenced(body), "the instance is both failed and stored"
    assert inst.sop not in found_sops(server, inst.study), "failed, yet QIDO finds it"


def test_STOW_02_mixed_202_with_both_sequences(server: Server, mixed_store: Store) -> None:
    """One instance of the target study and one of another: the first stored, the
    second failed (A9xx), 202."""
    response, body = mixed_store.response, mixed_store.body
    good, bad = mixed_store.sent
    assert response.status_code == 202, describe(response)
    assert good.sop in referenced(body), (
        f"good instance not in ReferencedSOPSequence: {describe(response)}"
    )
    item = failed(body).get(bad.sop)
    assert item is not None, f"other-study instance not in FailedSOPSequence: {describe(response)}"
    code = value(item, FAILURE_REASON)
    assert _mismatch_reason_ok(code), f"FailureReason {code!r} ({_hex(code)}): {describe(response)}"
    assert good.sop in found_sops(server, good.study), "stored, yet QIDO does not find it"
    assert bad.sop not in found_sops(server, bad.study), "failed, yet QIDO finds it"


def _hex(code: Any) -> str:
    return f"0x{code:04X}" if isinstance(code, int) else "not a number"


# --- STOW-03: status codes -------------------------------------------------------


def test_STOW_03_all_stored_200(good_store: Store) -> None:
    assert good_store.response.status_code == 200, describe(good_store.response)


def test_STOW_03_some_stored_202(mixed_store: Store) -> None:
    assert mixed_store.response.status_code == 202, describe(mixed_store.response)


def test_STOW_03_none_stored_409(mismatch_store: Store) -> None:
    assert mismatch_store.response.status_code == 409, describe(mismatch_store.response)


def test_STOW_03_bad_syntax_400(server: Server, fixtures: FixtureSet, fresh_uid: str) -> None:
    inst = new_instance(fixtures.ct_series.instances[14], fresh_uid)
    body, content_type = _broken_bodies(inst.part10)["garbage"]
    response = stow(server, "/studies", body, content_type)
    assert response.status_code == 400, describe(response)


def test_STOW_03_unsupported_media_type_415(server: Server) -> None:
    response = stow(server, "/studies", b"plain text\r\n", "text/plain")
    assert response.status_code == 415, describe(response)


def test_STOW_03_busy_503() -> None:
    pytest.skip(
        "503 (busy, with Retry-After) cannot be provoked black-box without overloading "
        "the server; ERR-03 checks 503 + Retry-After through --busy-url"
    )


# --- STOW-04: the response body (Annex I) --------------------------------------------


def _check_uid_attr(item: dict[str, Any], tag: str, expected: str, where: str) -> None:
    attr = item.get(tag)
    assert isinstance(attr, dict), f"{where}: ({tag[:4]},{tag[4:]}) missing in {item!r:.300}"
    assert attr.get("vr") == "UI", f"{where}: ({tag[:4]},{tag[4:]}) vr {attr.get('vr')!r}, not UI"
    assert value(item, tag) == expected, (
        f"{where}: ({tag[:4]},{tag[4:]}) is {value(item, tag)!r}, not {expected}"
    )


def _check_retrieve_url(item: dict[str, Any], where: str, suffix: str) -> None:
    """RetrieveURL is Type 2 (Table I.1-1): present; if it has a value, an absolute
    URL of the resource (VR UR; UT before 2016, also accepted)."""
    attr = item.get(RETRIEVE_URL)
    assert isinstance(attr, dict), f"{where}: RetrieveURL (0008,1190) missing (Type 2)"
    assert attr.get("vr") in ("UR", "UT"), f"{where}: RetrieveURL vr {attr.get('vr')!r}"
    url = value(item, RETRIEVE_URL)
    if url is None:
        return
    parts = urlsplit(str(url))
    assert parts.scheme in ("http", "https") and parts.netloc, (
        f"{where}: RetrieveURL {url!r} is not absolute"
    )
    assert parts.path.rstrip("/").endswith(suffix), (
        f"{where}: RetrieveURL {url!r} does not end in {suffix}"
    )


def _check_content_type(response: requests.Response) -> None:
    media, _ = multipart.media_params(response.headers.get("Content-Type", ""))
    assert media == JSON, (
        f"Content-Type {response.headers.get('Content-Type')!r}, asked Accept: {JSON}: "
        f"{describe(response)}"
    )


def test_STOW_04_success_body(good_store: Store) -> None:
    """Study RetrieveURL; ReferencedSOPSequence items with ReferencedSOPClassUID,
    ReferencedSOPInstanceUID and RetrieveURL; no FailedSOPSequence items."""
    response, body = good_store.response, good_store.body
    assert response.status_code == 200, describe(response)
    _check_content_type(response)
    study = good_store.sent[0].study
    _check_retrieve_url(body, "top level", f"/studies/{study}")
    seq = body.get(REFERENCED_SEQ)
    assert isinstance(seq, dict) and seq.get("vr") == "SQ", (
        f"ReferencedSOPSequence (0008,1199) missing or not SQ: {describe(response)}"
    )
    by_uid = referenced(body)
    assert len(items(body, REFERENCED_SEQ)) == len(good_store.sent), (
        f"{len(by_uid)} items for {len(good_store.sent)} stored: {describe(response)}"
    )
    for inst in good_store.sent:
        item = by_uid.get(inst.sop)
        assert item is not None, f"{inst.sop} not in ReferencedSOPSequence: {describe(response)}"
        where = f"ReferencedSOPSequence item {inst.sop}"
        _check_uid_attr(item, REF_CLASS, inst.sop_class, where)
        _check_uid_attr(item, REF_INSTANCE, inst.sop, where)
        _check_retrieve_url(
            item, where, f"/studies/{study}/series/{inst.series}/instances/{inst.sop}"
        )
        if WARNING_REASON in item:
            code = value(item, WARNING_REASON)
            assert item[WARNING_REASON].get("vr") == "US" and isinstance(code, int), (
                f"{where}: WarningReason {item[WARNING_REASON]!r} is not a US number"
            )
    assert not items(body, FAILED_SEQ), (
        f"FailedSOPSequence has items though all were stored: {describe(response)}"
    )


def test_STOW_04_failure_body(mixed_store: Store) -> None:
    """FailedSOPSequence items: ReferencedSOPClassUID, ReferencedSOPInstanceUID and
    FailureReason (0008,1197) as a US number; the stored one as in a success."""
    response, body = mixed_store.response, mixed_store.body
    assert response.status_code in (202, 409), describe(response)
    _check_content_type(response)
    good, bad = mixed_store.sent
    _check_retrieve_url(body, "top level", f"/studies/{good.study}")
    item = failed(body).get(bad.sop)
    assert item is not None, f"{bad.sop} not in FailedSOPSequence: {describe(response)}"
    where = f"FailedSOPSequence item {bad.sop}"
    _check_uid_attr(item, REF_CLASS, bad.sop_class, where)
    _check_uid_attr(item, REF_INSTANCE, bad.sop, where)
    reason = item.get(FAILURE_REASON)
    assert isinstance(reason, dict), f"{where}: FailureReason (0008,1197) missing (Type 1)"
    assert reason.get("vr") == "US", f"{where}: FailureReason vr {reason.get('vr')!r}, not US"
    code = value(item, FAILURE_REASON)
    assert isinstance(code, int) and not isinstance(code, bool) and 0 <= code <= 0xFFFF, (
        f"{where}: FailureReason {code!r} is not a US number (JSON-02)"
    )
    if response.status_code == 202:
        stored = referenced(body).get(good.sop)
        assert stored is not None, f"{good.sop} not in ReferencedSOPSequence: {describe(response)}"
        _check_retrieve_url(
            stored,
            "ReferencedSOPSequence item",
            f"/studies/{good.study}/series/{good.series}/instances/{good.sop}",
        )


@pytest.mark.parametrize("case", ["unreadable-instance", "other-study"])
def test_STOW_04_retrieve_url_present_when_nothing_stored(
    server: Server, fixtures: FixtureSet, mismatch_store: Store, fresh_uid: str, case: str
) -> None:
    """Table I.1-1: the top-level RetrieveURL is Type 2, present (empty is fine) in
    every Store Instances Response, also one where nothing was stored: POST
    /studies with one unreadable instance, POST /studies/{A} with an instance of
    study B.  Skipped when the server answers without a Store Instances Response."""
    if case == "other-study":
        response, body = mismatch_store.response, mismatch_store.body
    else:
        inst = new_instance(fixtures.ct_series.instances[15], fresh_uid)
        payload, content_type = dicom_body(truncated(inst.part10))
        response = stow(server, "/studies", payload, content_type)
        try:
            body = response_json(response)
        except AssertionError:
            body = {}
    if not (FAILED_SEQ in body or REFERENCED_SEQ in body):
        pytest.skip(f"no Store Instances Response to look at: {describe(response)}")
    assert RETRIEVE_URL in body, f"RetrieveURL (0008,1190) missing (Type 2): {describe(response)}"


# --- STOW-05: per-instance statuses ------------------------------------------------


@pytest.mark.parametrize("kind", ["truncated", "not-dicom"])
def test_STOW_05_unreadable_instance_fails(
    server: Server, fixtures: FixtureSet, fresh_uid: str, kind: str
) -> None:
    """An instance the server cannot read: a Part 10 file cut off inside its pixel
    data, or a part that is no DICOM at all.  Nothing stored: 409 with a
    FailedSOPSequence item whose FailureReason is one of Table I.2-2 (Cxxx cannot
    understand, A9xx, 0110 processing failure ...), or 400; never 2xx or 5xx.

    The other C-STORE statuses of the checklist (A7xx out of resources, 0122 SOP
    class not supported from a PACS, warnings B000/B006/B007) depend on what the
    storage behind the server does and cannot be provoked black-box."""
    inst = new_instance(fixtures.ct_series.instances[16], fresh_uid)
    payload = truncated(inst.part10) if kind == "truncated" else b"not a DICOM file. " * 64
    body, content_type = dicom_body(payload)
    response = stow(server, "/studies", body, content_type)
    assert response.status_code in (400, 409), describe(response)
    if response.status_code == 409:
        entries = items(response_json(response), FAILED_SEQ)
        assert len(entries) == 1, f"409 without one FailedSOPSequence item: {describe(response)}"
        code = value(entries[0], FAILURE_REASON)
        assert reason_in(code, *TABLE_I22), (
            f"FailureReason {code!r} ({_hex(code)}) not in Table I.2-2: {describe(response)}"
        )
    assert inst.sop not in found_sops(server, fresh_uid), "failed, yet QIDO finds it"


def test_STOW_05_unknown_sop_class(server: Server, fixtures: FixtureSet, fresh_uid: str) -> None:
    """An instance of a SOP class no server knows (a private 2.25 UID): a server
    that accepts any SOP class stores it (200) and QIDO finds it; one that does not
    fails it with a Table I.2-2 reason (0122 SOP class not supported, A9xx ...)
    and 409.  Never a 5xx, never a silent drop (in neither sequence)."""
    inst = new_instance(fixtures.ct_series.instances[17], fresh_uid, sop_class=new_uid())
    body, content_type = dicom_body(inst.part10)
    response = stow(server, "/studies", body, content_type)
    assert response.status_code in (200, 409), describe(response)
    result = response_json(response)
    if response.status_code == 200:
        assert inst.sop in referenced(result), (
            f"200 but not in ReferencedSOPSequence: {describe(response)}"
        )
        assert inst.sop in found_sops(server, fresh_uid), "stored (200), yet QIDO does not find it"
    else:
        item = failed(result).get(inst.sop)
        assert item is not None, f"409 but not in FailedSOPSequence: {describe(response)}"
        code = value(item, FAILURE_REASON)
        assert reason_in(code, *TABLE_I22), (
            f"FailureReason {code!r} ({_hex(code)}) not in Table I.2-2: {describe(response)}"
        )
        assert inst.sop not in found_sops(server, fresh_uid), "failed, yet QIDO finds it"


# --- STOW-06: large uploads -----------------------------------------------------------

LARGE_COUNT = 30  # instances of 1024 x 1024 x 16 bits: 2 MB each, 60 MB in all


def _large_instances(fixtures: FixtureSet, study: str, count: int) -> list[NewInstance]:
    series = new_uid()
    base = np.arange(1024 * 1024, dtype=np.int32).reshape(1024, 1024)
    out = []
    for index in range(count):
        pixels = ((base * 7 + index * 131) % 4000 - 1000).astype(np.int16)
        out.append(new_instance(fixtures.ct_series.instances[index], study, series, pixels=pixels))
    return out


class _FileSocket:
    """Lets http.client.HTTPResponse read from a file object we already read from."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def makefile(self, *_args: Any, **_kwargs: Any) -> Any:
        return self.stream


@dataclasses.dataclass
class ExpectResult:
    interim: str  # the status line the request head got before the body, "" if none
    status: int
    content: bytes


def post_with_expect(
    server: Server, path: str, body: bytes, content_type: str, wait: float
) -> ExpectResult:
    """POST with ``Expect: 100-continue`` over a plain socket, the way curl does it:
    send the head, wait up to ``wait`` seconds for an answer, then send the body
    (RFC 9110 10.1.1: a client need not wait longer).  requests and urllib3 never
    wait for the interim response, hence the socket."""
    url = urlsplit(server.url(path))
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    sock = socket.create_connection((host, port), timeout=REQUEST_TIMEOUT * 2)
    if url.scheme == "https":
        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    try:
        head = (
            f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: {content_type}\r\n"
            f"Accept: {JSON}\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
        )
        sock.sendall(head.encode("latin-1"))
        stream = sock.makefile("rb")
        interim = ""
        readable, _, _ = select.select([sock], [], [], wait)
        if readable:
            interim = stream.readline().decode("latin-1").strip()
            if interim.split(" ")[1:2] != ["100"]:
                # A final answer to the head alone: read it, send nothing.
                answer = http.client.HTTPResponse(_FileSocket(_Prefixed(interim, stream)))  # type: ignore[arg-type]
                answer.begin()
                return ExpectResult(interim, answer.status, answer.read())
            while stream.readline() not in (b"\r\n", b"\n", b""):
                pass  # the interim response's header fields
        view = memoryview(body)
        for start in range(0, len(body), 1 << 20):
            sock.sendall(view[start : start + (1 << 20)])
        answer = http.client.HTTPResponse(_FileSocket(stream), method="POST")  # type: ignore[arg-type]
        answer.begin()  # skips a 100 Continue sent late
        return ExpectResult(interim, answer.status, answer.read())
    finally:
        sock.close()


class _Prefixed(io.RawIOBase):
    """A status line already read, then the rest of the stream."""

    def __init__(self, first_line: str, stream: Any) -> None:
        self.first = (first_line + "\r\n").encode("latin-1")
        self.stream = stream

    def readline(self, size: int | None = -1) -> bytes:
        if self.first:
            line, self.first = self.first, b""
            return line
        return bytes(self.stream.readline(size))

    def read(self, size: int | None = -1) -> bytes:
        return bytes(self.stream.read(size))

    def readable(self) -> bool:
        return True


def test_STOW_06_large_upload_with_expect_60_mb(
    server: Server, fixtures: FixtureSet, fresh_uid: str
) -> None:
    """A 60 MB STOW (30 instances of 2 MB) with ``Expect: 100-continue`` and a
    Content-Length: 200, and QIDO finds all 30.  The client waits 3 s for the
    100 Continue and then sends the body anyway (as curl does after 1 s); the
    interim response itself is checked by the next test.

    Whether the server's memory stays flat while it takes the body (the
    checklist's "streams") cannot be observed from outside."""
    sent = _large_instances(fixtures, fresh_uid, LARGE_COUNT)
    body, content_type = dicom_body(*(i.part10 for i in sent))
    result = post_with_expect(server, f"/studies/{fresh_uid}", body, content_type, wait=3.0)
    assert result.status == 200, (
        f"POST /studies/{fresh_uid} (60 MB, Expect: 100-continue) -> {result.status}"
        f" (interim {result.interim!r}): {result.content[:300]!r}"
    )
    missing = {i.sop for i in sent} - found_sops(server, fresh_uid)
    assert not missing, f"{len(missing)} of {LARGE_COUNT} stored instances not found by QIDO"


def test_STOW_06_100_continue_interim_response(
    server: Server, fixtures: FixtureSet, fresh_uid: str
) -> None:
    """RFC 9110 10.1.1: a server that receives ``Expect: 100-continue`` (and no body
    yet) MUST answer at once, with 100 Continue or, if the head alone decides it,
    a final status.  For a valid STOW head that is 100 Continue; the body follows
    and is stored (200).  10 s of silence counts as no answer."""
    inst = new_instance(fixtures.ct_series.instances[18], fresh_uid)
    body, content_type = dicom_body(inst.part10)
    result = post_with_expect(server, f"/studies/{fresh_uid}", body, content_type, wait=10.0)
    assert result.interim.split(" ")[1:2] == ["100"], (
        f"POST /studies/{fresh_uid} with Expect: 100-continue: the head got "
        f"{result.interim or 'no answer within 10 s'!r}, not 100 Continue "
        f"(final status after sending the body anyway: {result.status})"
    )
    assert result.status == 200, f"final status {result.status}: {result.content[:300]!r}"


def test_STOW_06_chunked_upload_without_length(
    server: Server, fixtures: FixtureSet, fresh_uid: str
) -> None:
    """The same kind of upload as a generator body: chunked transfer coding, no
    Content-Length (PS3.18 10.5.1.3 allows either), with ``Expect: 100-continue``.
    10 instances of 2 MB, produced while they are sent; all stored and found."""
    sent = _large_instances(fixtures, fresh_uid, 10)
    boundary = f"chunked-{uuid.uuid4().hex}"

    def generate() -> Iterator[bytes]:
        for inst in sent:
            yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            for start in range(0, len(inst.part10), 256 * 1024):
                yield inst.part10[start : start + 256 * 1024]
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    started = time.monotonic()
    response = stow(
        server,
        f"/studies/{fresh_uid}",
        generate(),
        f'multipart/related; type="application/dicom"; boundary={boundary}',
        Expect="100-continue",
    )
    assert response.request.headers.get("Transfer-Encoding") == "chunked"  # the premise
    assert response.status_code == 200, (
        f"{describe(response)} after {time.monotonic() - started:.1f} s"
    )
    missing = {i.sop for i in sent} - found_sops(server, fresh_uid)
    assert not missing, f"{len(missing)} of {len(sent)} stored instances not found by QIDO"
