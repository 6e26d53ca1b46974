"""I. OHIF-01: the requests a browser viewer (OHIF v3 + Cornerstone's WADO-RS image
loader) makes to open the CT study, replayed in the same order and form.

1. the study list: ``GET /studies?limit=101&offset=0&fuzzymatching=false&
   includefield=00081030,00080060`` with the comma percent-encoded (``%2C``), as
   dicomweb-client's ``encodeURIComponent`` sends it (paged on when the server
   holds more than 101 studies and the CT study is not on the first page);
2. the study's series: ``GET /studies/{ct}/series``;
3. the series metadata: ``GET /studies/{ct}/series/{axial}/metadata``;
4. every frame, by URLs built from that metadata (Cornerstone's
   ``wadors:`` image ids), six requests at a time as a browser does per host,
   ``Accept: multipart/related; type=application/octet-stream;
   transfer-syntax=*`` (unquoted, as Cornerstone sends it).

Each frame must decode to exactly the fixture's pixel values: a native frame
(application/octet-stream, Explicit VR Little Endian) byte for byte; a frame
the server chose to send compressed is decoded first (pydicom's pixel
handlers) and compared value for value, so a lossy answer fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import requests
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from conformance import multipart
from conformance.dataset import FixtureSet, InstanceFixture
from conformance.server import REQUEST_TIMEOUT, Server, describe, value

JSON = {"Accept": "application/dicom+json"}
FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
STUDY_LIST = {
    "limit": "101",
    "offset": "0",
    "fuzzymatching": "false",
    "includefield": "00081030,00080060",
}
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"

#: Transfer syntax of a compressed frame media type without a transfer-syntax
#: parameter (PS3.18 Table 8.7.3-5's defaults).
DEFAULT_SYNTAX = {
    "image/jpeg": "1.2.840.10008.1.2.4.70",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/x-jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jphc": "1.2.840.10008.1.2.4.201",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "image/x-dicom-rle": "1.2.840.10008.1.2.5",
}


def _json(response: requests.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, describe(response)
    body = response.json()
    assert isinstance(body, list), f"not a JSON array: {describe(response)}"
    return body


# --- 1-3: the study list, the series, the metadata ---------------------------------


@pytest.fixture(scope="module")
def study_list(server: Server, fixtures: FixtureSet) -> dict[str, Any]:
    """The CT study's entry in the study list, paging on if it is not on page one."""
    offset, pages = 0, 0
    while True:
        params = {**STUDY_LIST, "offset": str(offset)}
        response = server.get("/studies", params=params, headers=JSON)
        results = [] if response.status_code == 204 else _json(response)
        for study in results:
            if value(study, "0020000D") == fixtures.ct.uid:
                return study
        pages += 1
        if len(results) < 101 or pages >= 20:
            pytest.fail(
                f"CT study {fixtures.ct.uid} not in the study list ({offset + len(results)} "
                f"studies seen): {describe(response)}"
            )
        offset += len(results)


def test_OHIF_01_study_list(study_list: dict[str, Any], fixtures: FixtureSet) -> None:
    """The list has the CT study with the StudyDescription OHIF asked for by
    includefield.  (The attributes every study result carries are QIDO-07's.)"""
    ct = fixtures.ct
    assert value(study_list, "00081030") == ct.description, (
        f"StudyDescription (includefield=00081030) is {value(study_list, '00081030')!r}"
    )
    assert value(study_list, "00100020") == ct.patient_id, "PatientID"


@pytest.fixture(scope="module")
def series_list(server: Server, fixtures: FixtureSet, study_list: dict[str, Any]) -> list[Any]:
    return _json(server.get(f"/studies/{fixtures.ct.uid}/series", headers=JSON))


def test_OHIF_01_series_list(series_list: list[Any], fixtures: FixtureSet) -> None:
    by_uid = {value(s, "0020000E"): s for s in series_list}
    axial = by_uid.get(fixtures.ct_series.uid)
    assert axial is not None, f"axial series not among {sorted(map(str, by_uid))}"
    assert value(axial, "00080060") == "CT", f"Modality {value(axial, '00080060')!r}"


@pytest.fixture(scope="module")
def series_metadata(
    server: Server, fixtures: FixtureSet, series_list: list[Any]
) -> list[dict[str, Any]]:
    path = f"/studies/{fixtures.ct.uid}/series/{fixtures.ct_series.uid}/metadata"
    return _json(server.get(path, headers=JSON))


def test_OHIF_01_series_metadata(
    series_metadata: list[dict[str, Any]], fixtures: FixtureSet
) -> None:
    """One object per slice, with what Cornerstone needs to build and decode the
    frame URLs: the UIDs, Rows, Columns, BitsAllocated, PixelRepresentation."""
    series = fixtures.ct_series
    sops = {str(value(m, "00080018")) for m in series_metadata}
    expected = {i.sop_uid for i in series.instances}
    assert sops == expected, (
        f"{len(series_metadata)} objects; missing {len(expected - sops)}, "
        f"extra {len(sops - expected)}"
    )
    for meta in series_metadata:
        sop = value(meta, "00080018")
        assert value(meta, "0020000D") == fixtures.ct.uid, f"{sop}: StudyInstanceUID"
        assert value(meta, "0020000E") == series.uid, f"{sop}: SeriesInstanceUID"
        for tag, want in (("00280010", 128), ("00280011", 128), ("00280100", 16), ("00280103", 1)):
            assert value(meta, tag) == want, f"{sop}: ({tag[:4]},{tag[4:]}) is {value(meta, tag)!r}"


# --- 4: the frames ------------------------------------------------------------------


def _decode(part: multipart.Part, inst: InstanceFixture) -> bytes:
    """The part's frame as little-endian pixel values, like ``native_frames``."""
    media, params = multipart.media_params(part.content_type or "application/octet-stream")
    syntax = params.get("transfer-syntax", "")
    if media == "application/octet-stream":
        assert syntax in ("", EXPLICIT_LE, IMPLICIT_LE), (
            f"octet-stream frame in transfer syntax {syntax!r}, not little endian"
        )
        return part.body
    syntax = syntax or DEFAULT_SYNTAX.get(media, "")
    assert syntax, f"frame part of media type {part.content_type!r}: not a frame media type"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.Rows, ds.Columns = inst.rows, inst.columns
    ds.SamplesPerPixel = inst.samples_per_pixel
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = inst.bits_allocated
    ds.HighBit = inst.bits_allocated - 1
    ds.PixelRepresentation = 1
    ds.PixelData = encapsulate([part.body])
    ds["PixelData"].VR = "OB"
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # any decoder failure is the server's frame's fault
        raise AssertionError(f"cannot decode a {part.content_type!r} frame: {exc}") from exc
    return np.ascontiguousarray(pixels, dtype="<i2").tobytes()


def _fetcher(server: Server) -> Callable[[str], requests.Response]:
    local = threading.local()

    def fetch(path: str) -> requests.Response:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        return session.get(
            server.url(path), headers={"Accept": FRAME_ACCEPT}, timeout=REQUEST_TIMEOUT
        )

    return fetch


def test_OHIF_01_every_frame_decodes_to_the_source(
    server: Server, fixtures: FixtureSet, series_metadata: list[dict[str, Any]]
) -> None:
    """All 100 frames, six at a time, at the URLs built from the metadata."""
    paths = {}
    for meta in series_metadata:
        study, series, sop = (value(meta, t) for t in ("0020000D", "0020000E", "00080018"))
        paths[str(sop)] = f"/studies/{study}/series/{series}/instances/{sop}/frames/1"
    assert len(paths) == len(fixtures.ct_series.instances), "metadata does not list every slice"
    sops = sorted(paths)
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(_fetcher(server), [paths[s] for s in sops]))
    problems: list[str] = []
    for sop, response in zip(sops, responses, strict=True):
        inst = fixtures.instance(sop)
        try:
            assert response.status_code == 200, describe(response)
            parts = multipart.parse(response.headers.get("Content-Type", ""), response.content)
            assert len(parts) == 1, f"{len(parts)} parts for one frame"
            got = _decode(parts[0], inst)
            want = inst.native_frames[0]
            if got != want:
                diff = (
                    np.count_nonzero(np.frombuffer(got, "<i2") != np.frombuffer(want, "<i2"))
                    if len(got) == len(want)
                    else None
                )
                raise AssertionError(
                    f"{parts[0].content_type!r}: {len(got)} bytes, expected {len(want)}"
                    + (f"; {diff} pixel values differ" if diff is not None else "")
                )
        except (AssertionError, multipart.MultipartError) as exc:
            problems.append(f"slice {inst.number} ({paths[sop]}): {exc}")
    assert not problems, f"{len(problems)} of {len(sops)} frames wrong; first: {problems[0]}"
