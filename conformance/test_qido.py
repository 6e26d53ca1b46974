"""B. QIDO-RS: attributes, matching keys, matching rules, includefield, paging, media types.

Every search is restricted to the suite's own data (the fixture set's three
StudyInstanceUIDs, or a study/series in the path), so that the expected result
sets are exact on a server that holds other data too.  The series-level
matching keys the fixture set lacks (PerformedProcedureStepStartDate/Time,
RequestAttributesSequence) come from a small study this module stores first
with fresh UIDs.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import requests
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from conformance import multipart
from conformance.conftest import stow_body
from conformance.dataset import CT_IMAGE, MR_IMAGE, SC_IMAGE, FixtureSet, InstanceFixture
from conformance.server import Server, describe, value, values

JSON_ACCEPT = {"Accept": "application/dicom+json"}
XML_ACCEPT = 'multipart/related; type="application/dicom+xml"'

# Characters a client leaves as they are in a query (PS3.18 8.3.4 writes lists with
# "," and wildcards with "*" "?"; RFC 3986 allows ":" and "/" in a query); everything
# else, UTF-8 included, is percent-encoded.
_SAFE = ",*?^:/-."

STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"

Pairs = Sequence[tuple[str, str]]


# --- helpers ---------------------------------------------------------------


def query_string(pairs: Pairs) -> str:
    return urlencode(list(pairs), safe=_SAFE, quote_via=quote)


def qido(
    server: Server, path: str, pairs: Pairs = (), headers: dict[str, Any] | None = None
) -> requests.Response:
    url = path + ("?" + query_string(pairs) if pairs else "")
    return server.get(url, headers=JSON_ACCEPT if headers is None else headers)


def results_of(response: requests.Response) -> list[dict[str, Any]]:
    """The JSON array of a search answer; [] for 204. Fails the test otherwise."""
    if response.status_code == 204:
        return []
    assert response.status_code == 200, f"expected 200 or 204: {describe(response)}"
    try:
        body = json.loads(response.content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AssertionError(f"body is not UTF-8 JSON ({exc}): {describe(response)}") from exc
    assert isinstance(body, list), f"body is not a JSON array: {describe(response)}"
    return body


def search(server: Server, path: str, pairs: Pairs = ()) -> tuple[requests.Response, list[Any]]:
    response = qido(server, path, pairs)
    return response, results_of(response)


def uids_of(results: list[dict[str, Any]], tag: str) -> list[str]:
    return [str(value(r, tag)) for r in results]


def fixture_studies(fx: FixtureSet) -> tuple[str, str]:
    """The query pair that restricts a search to the fixture set's studies."""
    return ("StudyInstanceUID", ",".join(s.uid for s in fx.studies))


def study_labels(fx: FixtureSet) -> dict[str, str]:
    return {fx.ct.uid: "ct", fx.latin1.uid: "latin1", fx.utf8.uid: "utf8"}


def labelled(uids: Sequence[str], labels: dict[str, str]) -> list[str] | str:
    names = sorted(labels.get(u, u) for u in uids)
    if len(names) > 4:
        return f"{len(names)} results ({', '.join(names[:2])}, ...)"
    return names


def pn_group(attr_value: Any, group: str) -> str | None:
    if isinstance(attr_value, dict):
        text = attr_value.get(group)
        return None if text is None else str(text)
    return None


def warnings_of(response: requests.Response) -> str:
    return response.headers.get("Warning", "")


_MORE = re.compile(r"299 \S+ \"?There are (?:(\d+) )?additional results that can be requested")


def more_results(response: requests.Response) -> tuple[bool, int | None]:
    """(whether the 'additional results' warning is there, N if it states one)."""
    match = _MORE.search(warnings_of(response))
    if match is None:
        return False, None
    return True, int(match.group(1)) if match.group(1) else None


def assert_studies(
    response: requests.Response, results: list[dict[str, Any]], fx: FixtureSet, expected: set[str]
) -> None:
    """The results are exactly the fixture studies labelled ``expected`` (ct, latin1, utf8)."""
    labels = study_labels(fx)
    want = {uid for uid, label in labels.items() if label in expected}
    assert_set(response, results, STUDY_UID, want, labels)


def assert_set(
    response: requests.Response,
    results: list[dict[str, Any]],
    tag: str,
    expected: set[str],
    labels: dict[str, str] | None = None,
) -> None:
    got = uids_of(results, tag)
    labels = labels or {}
    assert len(got) == len(set(got)) and set(got) == expected, (
        f"expected {labelled(sorted(expected), labels)}, got {labelled(got, labels)}; "
        f"{describe(response)}"
    )


# --- a study with the series-level keys the fixture set lacks ---------------


@dataclasses.dataclass(frozen=True)
class ExtraStudy:
    uid: str
    series: dict[str, str]  # label ("A", "B") -> SeriesInstanceUID

    @property
    def labels(self) -> dict[str, str]:
        return {uid: label for label, uid in self.series.items()}


EXTRA_SERIES = {
    # label: (SeriesNumber, PPS start date, PPS start time, RequestedProcedureID, SPS ID)
    "A": (1, "20200202", "121212", "DWCRP1", "DWCSPS1"),
    "B": (2, "20200303", "131313", "DWCRP2", "DWCSPS2"),
}


def restamped(source: InstanceFixture, study: str, series: str, sop: str, **attrs: Any) -> bytes:
    """A copy of a fixture instance under new UIDs (and other attributes), as Part 10."""
    ds = source.dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    for keyword, attr_value in attrs.items():
        setattr(ds, keyword, attr_value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def fresh() -> str:
    return "2.25." + str(uuid.uuid4().int)


@pytest.fixture(scope="module")
def extra(server: Server, fixtures: FixtureSet) -> ExtraStudy:
    """Two MR series with PPS start date/time and a RequestAttributesSequence each."""
    study = ExtraStudy(fresh(), {label: fresh() for label in EXTRA_SERIES})
    source = fixtures.latin1.series[0].instances[0]
    stamped = []
    for label, (number, date, tm, rp_id, sps_id) in EXTRA_SERIES.items():
        item = Dataset()
        item.RequestedProcedureID = rp_id
        item.ScheduledProcedureStepID = sps_id
        sop = fresh()
        part10 = restamped(
            source,
            study.uid,
            study.series[label],
            sop,
            PatientID="DWCQIDO",
            PatientName="Conformance^Qido",
            AccessionNumber="DWCQIDO",
            SeriesNumber=number,
            PerformedProcedureStepStartDate=date,
            PerformedProcedureStepStartTime=tm,
            RequestAttributesSequence=DicomSequence([item]),
        )
        stamped.append(
            dataclasses.replace(
                source,
                study_uid=study.uid,
                series_uid=study.series[label],
                sop_uid=sop,
                part10=part10,
            )
        )
    body, content_type = stow_body(stamped)
    response = server.post(
        "/studies",
        data=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
    )
    if response.status_code not in (200, 202):
        pytest.fail(f"storing the QIDO test study failed: {describe(response)}")
    return study


def extra_series(
    server: Server, extra: ExtraStudy, pairs: Pairs, expected: set[str]
) -> tuple[requests.Response, list[Any]]:
    """Search the extra study's series; the results must be the series labelled ``expected``."""
    response, results = search(server, f"/studies/{extra.uid}/series", pairs)
    assert_set(response, results, SERIES_UID, {extra.series[x] for x in expected}, extra.labels)
    return response, results


# --- QIDO-01: attribute IDs ------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "tag", "match", "expected"),
    [
        ("PatientID", "00100020", "DWCONF-L1", {"latin1"}),
        ("AccessionNumber", "00080050", "DWCACC003", {"utf8"}),
        ("StudyDate", "00080020", "20240115", {"ct"}),
        ("ModalitiesInStudy", "00080061", "MR", {"latin1"}),
    ],
)
def test_QIDO_01_keyword_and_tag_same_result(
    server: Server, fixtures: FixtureSet, keyword: str, tag: str, match: str, expected: set[str]
) -> None:
    by_keyword = search(server, "/studies", [fixture_studies(fixtures), (keyword, match)])
    by_tag = search(server, "/studies", [("0020000D", fixture_studies(fixtures)[1]), (tag, match)])
    for response, results in (by_keyword, by_tag):
        assert_studies(response, results, fixtures, expected)


def test_QIDO_01_keywords_are_case_sensitive(server: Server, fixtures: FixtureSet) -> None:
    """``patientid`` is no keyword (PS3.6 spells them exactly): it must not filter.

    The server may ignore it as an unknown parameter (all three studies) or
    refuse it (400); matching it like ``PatientID`` is wrong.
    """
    response = qido(server, "/studies", [fixture_studies(fixtures), ("patientid", "DWCONF-L1")])
    if response.status_code == 400:
        return
    results = results_of(response)
    labels = study_labels(fixtures)
    assert_set(response, results, STUDY_UID, set(labels), labels)


@pytest.mark.parametrize(
    ("path_key", "match", "expected"),
    [
        ("RequestAttributesSequence.RequestedProcedureID", "DWCRP2", {"B"}),
        ("00400275.00401001", "DWCRP2", {"B"}),
        ("RequestAttributesSequence.00400009", "DWCSPS1", {"A"}),
        ("00400275.ScheduledProcedureStepID", "DWCSPS1", {"A"}),
    ],
)
def test_QIDO_01_sequence_paths(
    server: Server, extra: ExtraStudy, path_key: str, match: str, expected: set[str]
) -> None:
    extra_series(server, extra, [(path_key, match)], expected)


# --- QIDO-02: required matching keys --------------------------------------


@pytest.mark.parametrize(
    ("key", "match", "expected"),
    [
        ("StudyDate", "20230301", {"latin1"}),
        ("StudyTime", "235959", {"utf8"}),
        ("AccessionNumber", "DWCACC002", {"latin1"}),
        ("ModalitiesInStudy", "MR", {"latin1"}),
        ("ModalitiesInStudy", "OT", {"ct", "latin1"}),
        ("ReferringPhysicianName", "Referrer^Rita", {"ct"}),
        ("PatientName", "Conformance^Ct", {"ct"}),
        ("PatientID", "DWCONF-U8", {"utf8"}),
        ("StudyID", "DWC2", {"latin1"}),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_QIDO_02_study_keys(
    server: Server, fixtures: FixtureSet, key: str, match: str, expected: set[str]
) -> None:
    response, results = search(server, "/studies", [fixture_studies(fixtures), (key, match)])
    assert_studies(response, results, fixtures, expected)


def test_QIDO_02_study_instance_uid(server: Server, fixtures: FixtureSet) -> None:
    response, results = search(server, "/studies", [("StudyInstanceUID", fixtures.latin1.uid)])
    assert_set(response, results, STUDY_UID, {fixtures.latin1.uid}, study_labels(fixtures))


@pytest.mark.parametrize(
    ("study", "key", "match", "expected"),
    [
        ("ct", "Modality", "OT", "Colour capture"),
        ("ct", "Modality", "CT", "Axial 100"),
        ("latin1", "SeriesNumber", "2", "Five frames"),
        ("latin1", "SeriesInstanceUID", "{Five frames}", "Five frames"),
    ],
)
def test_QIDO_02_series_keys(
    server: Server, fixtures: FixtureSet, study: str, key: str, match: str, expected: str
) -> None:
    fx_study = getattr(fixtures, study)
    by_name = {s.description: s.uid for s in fx_study.series}
    if match.startswith("{"):
        match = by_name[match.strip("{}")]
    response, results = search(server, f"/studies/{fx_study.uid}/series", [(key, match)])
    labels = {uid: name for name, uid in by_name.items()}
    assert_set(response, results, SERIES_UID, {by_name[expected]}, labels)


@pytest.mark.parametrize(
    ("key", "match", "expected"),
    [
        ("PerformedProcedureStepStartDate", "20200303", "B"),
        ("PerformedProcedureStepStartTime", "121212", "A"),
        ("RequestAttributesSequence.ScheduledProcedureStepID", "DWCSPS2", "B"),
        ("RequestAttributesSequence.RequestedProcedureID", "DWCRP1", "A"),
    ],
)
def test_QIDO_02_series_keys_pps_and_request_attributes(
    server: Server, extra: ExtraStudy, key: str, match: str, expected: str
) -> None:
    extra_series(server, extra, [(key, match)], {expected})


@pytest.mark.parametrize(
    ("key", "match", "expected"),
    [
        ("InstanceNumber", "42", [41]),
        ("SOPInstanceUID", "{41}", [41]),
        ("SOPClassUID", CT_IMAGE, list(range(100))),
        ("SOPClassUID", MR_IMAGE, []),
    ],
    ids=["InstanceNumber", "SOPInstanceUID", "SOPClassUID-CT", "SOPClassUID-MR"],
)
def test_QIDO_02_instance_keys(
    server: Server, fixtures: FixtureSet, key: str, match: str, expected: list[int]
) -> None:
    series = fixtures.ct_series
    path = f"/studies/{fixtures.ct.uid}/series/{series.uid}/instances"
    if match.startswith("{"):
        match = series.instances[int(match.strip("{}"))].sop_uid
    response, results = search(server, path, [(key, match)])
    assert_set(response, results, SOP_UID, {series.instances[i].sop_uid for i in expected})


def test_QIDO_02_instance_sop_class_in_study(server: Server, fixtures: FixtureSet) -> None:
    color = fixtures.color
    path = f"/studies/{fixtures.ct.uid}/series/{color.series_uid}/instances"
    response, results = search(server, path, [("SOPClassUID", SC_IMAGE)])
    assert_set(response, results, SOP_UID, {color.sop_uid})


# --- QIDO-03: matching rules (PS3.4 C.2.2.2) -------------------------------


@pytest.mark.parametrize(
    ("rule", "key", "match", "expected"),
    [
        ("single-case-sensitive", "AccessionNumber", "dwcacc002", set()),
        ("single-case-sensitive", "PatientID", "dwconf-l1", set()),
        ("universal-empty", "PatientID", "", {"ct", "latin1", "utf8"}),
        ("universal-star", "PatientID", "*", {"ct", "latin1", "utf8"}),
        ("wildcard-star", "PatientName", "Conf*", {"ct"}),
        ("wildcard-star", "PatientID", "*-L1", {"latin1"}),
        ("wildcard-question", "PatientID", "DWCONF-?8", {"utf8"}),
        ("wildcard-question", "AccessionNumber", "DWCACC00?", {"ct", "latin1", "utf8"}),
        ("range-date", "StudyDate", "20230101-20231231", {"latin1"}),
        ("range-date-open-end", "StudyDate", "20230301-", {"ct", "latin1"}),
        ("range-date-open-start", "StudyDate", "-20230301", {"latin1", "utf8"}),
        ("range-time", "StudyTime", "080000-110000", {"ct", "latin1"}),
        ("range-time-open-end", "StudyTime", "230000-", {"utf8"}),
        ("range-time-open-start", "StudyTime", "-090000", {"latin1"}),
    ],
)
def test_QIDO_03_study_matching(
    server: Server, fixtures: FixtureSet, rule: str, key: str, match: str, expected: set[str]
) -> None:
    response, results = search(server, "/studies", [fixture_studies(fixtures), (key, match)])
    assert_studies(response, results, fixtures, expected)


def test_QIDO_03_uid_list_study(server: Server, fixtures: FixtureSet) -> None:
    pairs = [("StudyInstanceUID", f"{fixtures.ct.uid},{fixtures.utf8.uid}")]
    response, results = search(server, "/studies", pairs)
    labels = study_labels(fixtures)
    assert_set(response, results, STUDY_UID, {fixtures.ct.uid, fixtures.utf8.uid}, labels)


def test_QIDO_03_uid_list_series(server: Server, fixtures: FixtureSet) -> None:
    mr, mf = fixtures.latin1.series
    path = f"/studies/{fixtures.latin1.uid}/series"
    response, results = search(server, path, [("SeriesInstanceUID", f"{mf.uid},{fresh()}")])
    assert_set(response, results, SERIES_UID, {mf.uid})
    response, results = search(server, path, [("SeriesInstanceUID", f"{mr.uid},{mf.uid}")])
    assert_set(response, results, SERIES_UID, {mr.uid, mf.uid})


def test_QIDO_03_uid_list_instances(server: Server, fixtures: FixtureSet) -> None:
    series = fixtures.ct_series
    chosen = [series.instances[i].sop_uid for i in (0, 50, 99)]
    path = f"/studies/{fixtures.ct.uid}/series/{series.uid}/instances"
    response, results = search(server, path, [("SOPInstanceUID", ",".join(chosen))])
    assert_set(response, results, SOP_UID, set(chosen))


@pytest.mark.parametrize(
    ("key", "match", "expected"),
    [
        ("RequestAttributesSequence.RequestedProcedureID", "DWCRP*", {"A", "B"}),
        ("RequestAttributesSequence.ScheduledProcedureStepID", "DWCSPS?", {"A", "B"}),
        ("PerformedProcedureStepStartDate", "20200101-20200228", {"A"}),
        ("PerformedProcedureStepStartTime", "130000-", {"B"}),
    ],
)
def test_QIDO_03_series_matching(
    server: Server, extra: ExtraStudy, key: str, match: str, expected: set[str]
) -> None:
    extra_series(server, extra, [(key, match)], expected)


# --- QIDO-04: StudyDate + StudyTime as one date-time -----------------------


@pytest.mark.parametrize(
    ("date", "time_", "expected"),
    [
        # combined: 20221231T100000 .. 20240115T235959 holds all three;
        # matched separately the times would drop latin1 (08:30)
        ("20221231-20240115", "100000-235959", {"ct", "latin1", "utf8"}),
        # combined: from 20221231T230000 on; separately only utf8 (23:59:59)
        ("20221231-", "230000-", {"ct", "latin1", "utf8"}),
        # combined: up to 20240115T090000; separately only latin1 (08:30)
        ("-20240115", "-090000", {"latin1", "utf8"}),
        ("20240115", "100000-110000", {"ct"}),
    ],
)
def test_QIDO_04_combined_date_time(
    server: Server, fixtures: FixtureSet, date: str, time_: str, expected: set[str]
) -> None:
    pairs = [fixture_studies(fixtures), ("StudyDate", date), ("StudyTime", time_)]
    response, results = search(server, "/studies", pairs)
    assert_studies(response, results, fixtures, expected)


# --- QIDO-05: non-ASCII values ---------------------------------------------


def _utf8_charset(response: requests.Response) -> None:
    _, params = multipart.media_params(response.headers.get("Content-Type", ""))
    charset = params.get("charset", "utf-8").lower()
    assert charset in ("utf-8", "utf8"), f"charset {charset!r} is not UTF-8: {describe(response)}"


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("PatientName", "Müller*"),
        ("PatientName", "Müller^Jürgen"),
        ("ReferringPhysicianName", "Référent^Anaïs"),
    ],
)
def test_QIDO_05_latin1_study_found_by_utf8_value(
    server: Server, fixtures: FixtureSet, key: str, match: str
) -> None:
    labels = study_labels(fixtures)
    response, results = search(server, "/studies", [fixture_studies(fixtures), (key, match)])
    assert_set(response, results, STUDY_UID, {fixtures.latin1.uid}, labels)
    _utf8_charset(response)
    name = value(results[0], "00100010")
    assert pn_group(name, "Alphabetic") == "Müller^Jürgen", (
        f"PatientName {name!r}, expected Alphabetic 'Müller^Jürgen'; {describe(response)}"
    )


def test_QIDO_05_utf8_study_ideographic_name(server: Server, fixtures: FixtureSet) -> None:
    pairs = [fixture_studies(fixtures), ("PatientID", "DWCONF-U8")]
    response, results = search(server, "/studies", pairs)
    assert_set(response, results, STUDY_UID, {fixtures.utf8.uid}, study_labels(fixtures))
    _utf8_charset(response)
    name = value(results[0], "00100010")
    assert pn_group(name, "Alphabetic") == "Yamada^Tarou", f"PatientName {name!r}"
    assert pn_group(name, "Ideographic") == "山田^太郎", (
        f"PatientName {name!r}, expected Ideographic '山田^太郎'; {describe(response)}"
    )


# --- QIDO-06: includefield -------------------------------------------------

DESCRIPTIONS = {
    "ct": "Conformance CT",
    "latin1": "Conformance MR",
    "utf8": "Conformance compressed",
}


@pytest.mark.parametrize(
    "includes",
    [
        [("includefield", "StudyDescription")],
        [("includefield", "00081030")],
        [("includefield", "00100030,StudyDescription")],
        [("includefield", "StudyDescription"), ("includefield", "00100030")],
        [("includefield", "all")],
    ],
    ids=["keyword", "tag", "comma-list", "repeated", "all"],
)
def test_QIDO_06_includefield_study(
    server: Server, fixtures: FixtureSet, includes: list[tuple[str, str]]
) -> None:
    labels = study_labels(fixtures)
    response, results = search(server, "/studies", [fixture_studies(fixtures), *includes])
    assert_set(response, results, STUDY_UID, set(labels), labels)
    for result in results:
        label = labels[str(value(result, STUDY_UID))]
        got = value(result, "00081030")
        assert got == DESCRIPTIONS[label], (
            f"{label}: StudyDescription {got!r}, expected {DESCRIPTIONS[label]!r}; "
            f"{describe(response)}"
        )


INSTANCE_OPTIONAL = {"00080008": "ImageType", "00180050": "SliceThickness"}


def _first_slice(server: Server, fx: FixtureSet, includes: Pairs) -> dict[str, Any]:
    series = fx.ct_series
    path = f"/studies/{fx.ct.uid}/series/{series.uid}/instances"
    response, results = search(server, path, [("InstanceNumber", "1"), *includes])
    assert_set(response, results, SOP_UID, {series.instances[0].sop_uid})
    return {"response": response, "result": results[0]}


@pytest.fixture(scope="module")
def included_alone(server: Server, fixtures: FixtureSet) -> dict[str, Any]:
    """tag -> the attribute as returned when it is the only includefield (if supported)."""
    out = {}
    for tag, keyword in INSTANCE_OPTIONAL.items():
        found = _first_slice(server, fixtures, [("includefield", keyword)])["result"]
        if found.get(tag, {}).get("Value"):
            out[tag] = found[tag]
    return out


@pytest.mark.parametrize(
    "includes",
    [
        [("includefield", "ImageType,00180050")],
        [("includefield", "00080008"), ("includefield", "SliceThickness")],
        [("includefield", "all")],
    ],
    ids=["comma-list", "repeated", "all"],
)
def test_QIDO_06_includefield_instance(
    server: Server,
    fixtures: FixtureSet,
    included_alone: dict[str, Any],
    includes: list[tuple[str, str]],
) -> None:
    """A list, a repeated parameter and ``all`` return what each attribute alone returns.

    PS3.18 10.6.3.3.3 only asks for the optional attributes "supported by the
    origin server": those are the ones it returns when asked for one at a time.
    """
    got = _first_slice(server, fixtures, includes)
    lost = {
        INSTANCE_OPTIONAL[tag]: got["result"].get(tag)
        for tag, alone in included_alone.items()
        if got["result"].get(tag) != alone
    }
    assert not lost, (
        f"returned when asked for alone, not with {query_string(includes)}: {lost}, alone "
        f"{ {INSTANCE_OPTIONAL[t]: a for t, a in included_alone.items()} }; "
        f"{describe(got['response'])}"
    )


def _color_instances(fx: FixtureSet) -> str:
    return f"/studies/{fx.ct.uid}/series/{fx.color.series_uid}/instances"


def _private_text(attr: dict[str, Any] | None) -> str | None:
    """(0009,1001) as text: an LO Value, or the raw bytes of a UN (a proxy may not know the VR)."""
    if not attr:
        return None
    if attr.get("Value"):
        return str(attr["Value"][0])
    if attr.get("InlineBinary"):
        raw = base64.b64decode(attr["InlineBinary"])
        return raw.rstrip(b" \0").decode("latin-1")
    return None


def _assert_private(response: requests.Response, results: list[Any], fx: FixtureSet) -> None:
    assert_set(response, results, SOP_UID, {fx.color.sop_uid})
    if "00091001" not in results[0]:
        return  # private elements not supported
    creator, private = value(results[0], "00090010"), _private_text(results[0]["00091001"])
    assert (creator, private) == ("DICOMWEB CONFORMANCE", "private text"), (
        f"(0009,0010) {creator!r}, (0009,1001) {results[0]['00091001']!r}; {describe(response)}"
    )


def test_QIDO_06_includefield_private_with_creator(server: Server, fixtures: FixtureSet) -> None:
    """A private element is asked for with its creator as a match parameter (P18 8.3.4.3).

    The server returns the element with its creator, or, if it does not support
    private elements (P18 10.6.3.3.3 allows that), neither; never one alone.
    """
    pairs = [("00090010", "DICOMWEB CONFORMANCE"), ("includefield", "00091001")]
    response, results = search(server, _color_instances(fixtures), pairs)
    _assert_private(response, results, fixtures)


# --- QIDO-07: attributes always returned -----------------------------------


def _missing(result: dict[str, Any], tags: Sequence[str]) -> list[str]:
    return [t for t in tags if t not in result or "vr" not in result[t]]


# PS3.18 Tables 10.6.3-3/4/5: StudyDate StudyTime AccessionNumber ModalitiesInStudy
# ReferringPhysicianName PatientName PatientID PatientBirthDate PatientSex StudyInstanceUID
# StudyID NumberOfStudyRelatedSeries NumberOfStudyRelatedInstances RetrieveURL; Modality
# SeriesInstanceUID SeriesNumber NumberOfSeriesRelatedInstances RetrieveURL; SOPClassUID
# SOPInstanceUID InstanceNumber RetrieveURL.
STUDY_RETURNED = [
    *("00080020", "00080030", "00080050", "00080061", "00080090", "00100010", "00100020"),
    *("00100030", "00100040", "0020000D", "00200010", "00201206", "00201208", "00081190"),
]
SERIES_RETURNED = ["00080060", "0020000E", "00200011", "00201209", "00081190"]
INSTANCE_RETURNED = ["00080016", "00080018", "00200013", "00081190"]


@pytest.fixture(scope="module")
def study_results(server: Server, fixtures: FixtureSet) -> tuple[requests.Response, list[Any]]:
    return search(server, "/studies", [fixture_studies(fixtures)])


def test_QIDO_07_study_attributes(
    fixtures: FixtureSet, study_results: tuple[requests.Response, list[Any]]
) -> None:
    response, results = study_results
    labels = study_labels(fixtures)
    assert_set(response, results, STUDY_UID, set(labels), labels)
    for result in results:
        study = getattr(fixtures, labels[str(value(result, STUDY_UID))])
        missing = _missing(result, STUDY_RETURNED)
        assert not missing, (
            f"study {study.patient_id}: {missing} not returned; {describe(response)}"
        )
        got = {
            "StudyDate": value(result, "00080020"),
            "StudyTime": str(value(result, "00080030") or "")[:6],
            "AccessionNumber": value(result, "00080050"),
            "ModalitiesInStudy": sorted(values(result, "00080061")),
            "ReferringPhysicianName": pn_group(value(result, "00080090"), "Alphabetic"),
            "PatientName": pn_group(value(result, "00100010"), "Alphabetic"),
            "PatientID": value(result, "00100020"),
            "PatientBirthDate": value(result, "00100030"),
            "PatientSex": value(result, "00100040"),
            "StudyID": value(result, "00200010"),
            "NumberOfStudyRelatedSeries": value(result, "00201206"),
            "NumberOfStudyRelatedInstances": value(result, "00201208"),
        }
        want = {
            "StudyDate": study.date,
            "StudyTime": study.time,
            "AccessionNumber": study.accession,
            "ModalitiesInStudy": sorted(study.modalities),
            "ReferringPhysicianName": study.referring or None,
            "PatientName": study.patient_name.split("=")[0],
            "PatientID": study.patient_id,
            "PatientBirthDate": study.birth_date,
            "PatientSex": study.sex,
            "StudyID": study.study_id,
            "NumberOfStudyRelatedSeries": len(study.series),
            "NumberOfStudyRelatedInstances": sum(1 for _ in study.instances()),
        }
        wrong = {k: v for k, v in got.items() if v != want[k]}
        assert not wrong, (
            f"study {study.patient_id}: {wrong}, expected "
            f"{ {k: want[k] for k in wrong} }; {describe(response)}"
        )


def test_QIDO_07_empty_required_attribute_present(
    fixtures: FixtureSet, study_results: tuple[requests.Response, list[Any]]
) -> None:
    """The UTF-8 study has no ReferringPhysicianName value: it is sent as ``{"vr": "PN"}``."""
    response, results = study_results
    utf8 = [r for r in results if value(r, STUDY_UID) == fixtures.utf8.uid]
    assert utf8, f"UTF-8 study not found; {describe(response)}"
    attr = utf8[0].get("00080090")
    assert attr is not None and attr.get("vr") == "PN" and not attr.get("Value"), (
        f"ReferringPhysicianName (empty) came back as {attr!r}; {describe(response)}"
    )


def test_QIDO_07_series_attributes(server: Server, fixtures: FixtureSet) -> None:
    for study in fixtures.studies:
        response, results = search(server, f"/studies/{study.uid}/series")
        assert_set(response, results, SERIES_UID, {s.uid for s in study.series})
        for result in results:
            series = next(s for s in study.series if s.uid == value(result, SERIES_UID))
            missing = _missing(result, SERIES_RETURNED)
            assert not missing, f"series {series.description!r}: {missing} not returned"
            got = (
                value(result, "00080060"),
                value(result, "00200011"),
                value(result, "00201209"),
            )
            want = (series.modality, series.number, len(series.instances))
            assert got == want, (
                f"series {series.description!r}: (Modality, SeriesNumber, "
                f"NumberOfSeriesRelatedInstances) {got}, expected {want}; {describe(response)}"
            )
            description = value(result, "0008103E")
            assert description in (None, series.description), (
                f"SeriesDescription {description!r}, expected {series.description!r}"
            )


def test_QIDO_07_instance_attributes(server: Server, fixtures: FixtureSet) -> None:
    for inst in (fixtures.multiframe, fixtures.color, fixtures.rle):
        path = f"/studies/{inst.study_uid}/series/{inst.series_uid}/instances"
        response, results = search(server, path, [("SOPInstanceUID", inst.sop_uid)])
        assert_set(response, results, SOP_UID, {inst.sop_uid})
        result = results[0]
        missing = _missing(result, INSTANCE_RETURNED)
        assert not missing, f"instance {inst.sop_uid}: {missing} not returned; {describe(response)}"
        got = (value(result, "00080016"), value(result, "00200013"))
        assert got == (inst.sop_class_uid, inst.number), (
            f"(SOPClassUID, InstanceNumber) {got}; {describe(response)}"
        )
        # Returned "if known": when they are there they must be right.
        known = {
            "00280010": inst.rows,
            "00280011": inst.columns,
            "00280100": inst.bits_allocated,
            "00280008": inst.number_of_frames,
        }
        for tag, want in known.items():
            got_value = value(result, tag)
            if got_value is not None:
                assert int(got_value) == want, f"({tag}) {got_value!r}, expected {want}"


def test_QIDO_07_match_keys_echoed(server: Server, extra: ExtraStudy) -> None:
    pairs = [
        ("PerformedProcedureStepStartDate", "20200202"),
        ("RequestAttributesSequence.RequestedProcedureID", "DWCRP1"),
    ]
    response, results = extra_series(server, extra, pairs, {"A"})
    items = values(results[0], "00400275")
    echoed = (
        value(results[0], "00400244"),
        value(items[0], "00401001") if items and isinstance(items[0], dict) else None,
    )
    assert echoed == ("20200202", "DWCRP1"), (
        f"(PPS start date, RequestAttributesSequence>RequestedProcedureID) echoed as "
        f"{echoed}; {describe(response)}"
    )


STUDY_IN_SERIES = ["00080020", "00080030", "00080050", "00100010", "00100020", "0020000D"]


def test_QIDO_07_all_series_carry_study_attributes(server: Server, fixtures: FixtureSet) -> None:
    study = fixtures.latin1
    response, results = search(server, "/series", [("StudyInstanceUID", study.uid)])
    assert_set(response, results, SERIES_UID, {s.uid for s in study.series})
    for result in results:
        missing = _missing(result, STUDY_IN_SERIES + SERIES_RETURNED)
        assert not missing, f"{missing} not returned by All Series; {describe(response)}"
        assert (value(result, "00100020"), value(result, "00080050")) == (
            study.patient_id,
            study.accession,
        ), f"study attributes wrong in {result!r:.300}"


def test_QIDO_07_all_instances_carry_study_and_series_attributes(
    server: Server, fixtures: FixtureSet
) -> None:
    study = fixtures.latin1
    response, results = search(server, "/instances", [("StudyInstanceUID", study.uid)])
    assert_set(response, results, SOP_UID, {i.sop_uid for i in study.instances()})
    series_of = {i.sop_uid: s for s in study.series for i in s.instances}
    for result in results:
        missing = _missing(
            result, [*STUDY_IN_SERIES, "00080060", "0020000E", "00200011", *INSTANCE_RETURNED]
        )
        assert not missing, f"{missing} not returned by All Instances; {describe(response)}"
        series = series_of[str(value(result, SOP_UID))]
        got = (value(result, "00100020"), value(result, "0020000E"), value(result, "00080060"))
        assert got == (study.patient_id, series.uid, series.modality), (
            f"(PatientID, SeriesInstanceUID, Modality) {got}; {describe(response)}"
        )


# --- QIDO-08: fuzzymatching / emptyvaluematching ---------------------------


def _not_supported(response: requests.Response, parameter: str) -> bool:
    pattern = (
        rf'299 \S+ "?The {parameter} parameter is not supported\. '
        r"Only literal matching has been performed\.?"
    )
    return re.search(pattern, warnings_of(response)) is not None


def test_QIDO_08_fuzzymatching(server: Server, fixtures: FixtureSet) -> None:
    labels = study_labels(fixtures)
    pairs = [
        fixture_studies(fixtures),
        ("PatientName", "Conformance^Ct"),
        ("fuzzymatching", "true"),
    ]
    response, results = search(server, "/studies", pairs)
    got = uids_of(results, STUDY_UID)
    assert fixtures.ct.uid in got, (
        f"literal match missing: {labelled(got, labels)}; {describe(response)}"
    )
    if "fuzzymatching" in warnings_of(response):
        # Literal matching only: it must say so, in PS3.18's words. (Without the
        # warning the server claims fuzzy matching, which must still find ct.)
        assert set(got) == {fixtures.ct.uid} and _not_supported(response, "fuzzymatching"), (
            f"got {labelled(got, labels)}, Warning {warnings_of(response)!r}; expected a literal "
            f"match with 'Warning: 299 {{service}}: The fuzzymatching parameter is not supported. "
            f"Only literal matching has been performed.'; {describe(response)}"
        )


def test_QIDO_08_emptyvaluematching(server: Server, fixtures: FixtureSet) -> None:
    """ReferringPhysicianName=Referrer^Rita: ct; with empty-value matching also utf8 (empty)."""
    labels = study_labels(fixtures)
    pairs = [
        fixture_studies(fixtures),
        ("ReferringPhysicianName", "Referrer^Rita"),
        ("emptyvaluematching", "true"),
    ]
    response, results = search(server, "/studies", pairs)
    got = set(uids_of(results, STUDY_UID))
    literal = {fixtures.ct.uid}
    applied = {fixtures.ct.uid, fixtures.utf8.uid}
    ok = (got == literal and _not_supported(response, "emptyvaluematching")) or (
        got == applied and not _not_supported(response, "emptyvaluematching")
    )
    assert ok, (
        f"got {labelled(sorted(got), labels)}, Warning {warnings_of(response)!r}; expected "
        f"[ct] with 'Warning: 299 {{service}}: The emptyvaluematching parameter is not "
        f"supported. Only literal matching has been performed.' or [ct, utf8]; {describe(response)}"
    )


# --- QIDO-09: limit and offset ---------------------------------------------


def _ct_instances_path(fx: FixtureSet) -> str:
    return f"/studies/{fx.ct.uid}/series/{fx.ct_series.uid}/instances"


@pytest.fixture(scope="module")
def all_ct(server: Server, fixtures: FixtureSet) -> list[str]:
    """The 100 CT slices in the server's order (paging to the end if it caps results)."""
    path = _ct_instances_path(fixtures)
    found: list[str] = []
    for _ in range(20):  # a server that ignores offset would page forever
        response, results = search(server, path, [("offset", str(len(found)))])
        found += uids_of(results, SOP_UID)
        if not results or not more_results(response)[0]:
            break
    return found


def test_QIDO_09_no_limit_all_or_warning(server: Server, fixtures: FixtureSet) -> None:
    response, results = search(server, _ct_instances_path(fixtures))
    more, count = more_results(response)
    if len(results) < 100:
        assert more and count in (None, 100 - len(results)), (
            f"{len(results)} of 100 matches returned without a correct 'additional results' "
            f"Warning ({warnings_of(response)!r}); {describe(response)}"
        )
    else:
        assert_set(response, results, SOP_UID, {i.sop_uid for i in fixtures.ct_series.instances})
        assert not more, f"all returned yet Warning {warnings_of(response)!r}"


@pytest.mark.parametrize(("limit", "offset"), [(10, 0), (10, 20), (1, 0), (10, 95), (10, 100)])
def test_QIDO_09_limit_offset(
    server: Server, fixtures: FixtureSet, all_ct: list[str], limit: int, offset: int
) -> None:
    assert len(all_ct) == 100, f"paging through the CT series found {len(all_ct)} of 100"
    pairs = [("limit", str(limit)), ("offset", str(offset))]
    response, results = search(server, _ct_instances_path(fixtures), pairs)
    got = uids_of(results, SOP_UID)
    want = all_ct[offset : offset + limit]
    assert got == want, (
        f"limit={limit}&offset={offset}: {len(got)} results, expected {len(want)} "
        f"(positions {offset + 1}..{offset + len(want)} of the unpaged order); {describe(response)}"
    )
    remaining = 100 - offset - len(want)
    more, count = more_results(response)
    if remaining > 0:
        assert more and count in (None, remaining), (
            f"limit={limit}&offset={offset}: {remaining} more remain, Warning "
            f"{warnings_of(response)!r}; expected '299 {{service}}: There are {remaining} "
            f"additional results that can be requested'"
        )
    else:
        assert not more, f"nothing remains, yet Warning {warnings_of(response)!r}"


def test_QIDO_09_pages_cover_everything_once(
    server: Server, fixtures: FixtureSet, all_ct: list[str]
) -> None:
    pages: list[str] = []
    for offset in range(0, 100, 25):
        pairs = [("limit", "25"), ("offset", str(offset))]
        _, results = search(server, _ct_instances_path(fixtures), pairs)
        pages += uids_of(results, SOP_UID)
    assert pages == all_ct, (
        f"four pages of 25: {len(pages)} results, {len(set(pages))} distinct, "
        f"same order as unpaged: {pages == all_ct}"
    )


def test_QIDO_09_same_order_for_same_request(server: Server, fixtures: FixtureSet) -> None:
    pairs = [("limit", "50"), ("offset", "10")]
    first = uids_of(search(server, _ct_instances_path(fixtures), pairs)[1], SOP_UID)
    second = uids_of(search(server, _ct_instances_path(fixtures), pairs)[1], SOP_UID)
    assert first == second, "the same paged request returned a different order"


@pytest.mark.parametrize(
    "pairs",
    [[("limit", "-1")], [("limit", "abc")], [("offset", "abc")], [("limit", "1.5")]],
    ids=["limit=-1", "limit=abc", "offset=abc", "limit=1.5"],
)
def test_QIDO_09_invalid_limit_offset_400(
    server: Server, fixtures: FixtureSet, pairs: list[tuple[str, str]]
) -> None:
    response = qido(server, _ct_instances_path(fixtures), pairs)
    assert response.status_code == 400, f"{query_string(pairs)}: expected 400: {describe(response)}"


def test_QIDO_09_limit_one_is_not_slow(server: Server, fixtures: FixtureSet) -> None:
    """limit=1 must not wait for every match (a proxy cancels the C-FIND).

    Timing is noisy in CI, so the bound is generous: the best of three limit=1
    searches may take at most 1.5 times the best full search plus a second.
    """
    path = _ct_instances_path(fixtures)

    def best_of_three(pairs: Pairs) -> tuple[float, requests.Response]:
        times, last = [], None
        for _ in range(3):
            start = time.perf_counter()
            last = qido(server, path, pairs)
            times.append(time.perf_counter() - start)
            assert last.status_code == 200, describe(last)
        assert last is not None
        return min(times), last

    full, _ = best_of_three([])
    one, response = best_of_three([("limit", "1")])
    assert len(results_of(response)) == 1, f"limit=1: expected one result: {describe(response)}"
    assert one <= full * 1.5 + 1.0, f"limit=1 took {one:.2f} s, the full search {full:.2f} s"


# --- QIDO-10: empty result --------------------------------------------------


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_QIDO_10_empty_result(server: Server, fixtures: FixtureSet, level: str) -> None:
    if level == "study":
        path, pairs = "/studies", [fixture_studies(fixtures), ("PatientID", "DWCONF-NONE")]
    elif level == "series":
        path, pairs = f"/studies/{fixtures.ct.uid}/series", [("Modality", "US")]
    else:
        path, pairs = _ct_instances_path(fixtures), [("InstanceNumber", "9999")]
    response = qido(server, path, pairs)
    if server.expect.empty_result == "204":
        assert response.status_code == 204 and not response.content, (
            f"expected 204 without a body (--empty-result=204); {describe(response)}"
        )
    else:
        assert response.status_code == 200, (
            f"expected 200 [] (--empty-result=200); {describe(response)}"
        )
        media, _ = multipart.media_params(response.headers.get("Content-Type", ""))
        assert media == "application/dicom+json", f"expected JSON: {describe(response)}"
        assert results_of(response) == [], f"expected []: {describe(response)}"


# --- QIDO-11: media types --------------------------------------------------


@pytest.mark.parametrize(
    "accept",
    [None, "*/*", "application/dicom+json", "text/html, application/dicom+json;q=0.5"],
    ids=["no-accept", "any", "dicom+json", "q-list"],
)
def test_QIDO_11_json(server: Server, fixtures: FixtureSet, accept: str | None) -> None:
    response = qido(server, "/studies", [fixture_studies(fixtures)], headers={"Accept": accept})
    assert response.status_code == 200, f"Accept {accept!r}: expected 200: {describe(response)}"
    media, _ = multipart.media_params(response.headers.get("Content-Type", ""))
    assert media == "application/dicom+json", f"Accept {accept!r}: not JSON: {describe(response)}"
    labels = study_labels(fixtures)
    assert_set(response, results_of(response), STUDY_UID, set(labels), labels)


def _xml_attributes(body: bytes) -> dict[str, list[str]]:
    """tag -> Values of a PS3.19 NativeDicomModel document (namespace ignored)."""
    root = ET.fromstring(body)
    assert root.tag.rsplit("}", 1)[-1] == "NativeDicomModel", f"root element {root.tag!r}"
    out: dict[str, list[str]] = {}
    for attr in root:
        if attr.tag.rsplit("}", 1)[-1] != "DicomAttribute":
            continue
        found = [v.text or "" for v in attr if v.tag.rsplit("}", 1)[-1] == "Value"]
        out[str(attr.get("tag", "")).upper()] = found
    return out


def test_QIDO_11_multipart_xml(server: Server, fixtures: FixtureSet) -> None:
    response = qido(server, "/studies", [fixture_studies(fixtures)], headers={"Accept": XML_ACCEPT})
    assert response.status_code == 200, f"expected 200: {describe(response)}"
    media, params = multipart.media_params(response.headers.get("Content-Type", ""))
    wanted = ("multipart/related", "application/dicom+xml")
    assert (media, params.get("type")) == wanted, (
        f"expected multipart/related; type=application/dicom+xml: {describe(response)}"
    )
    parts = multipart.parse(response.headers["Content-Type"], response.content)
    found = []
    for part in parts:
        part_media, _ = multipart.media_params(part.content_type)
        assert part_media == "application/dicom+xml", f"part Content-Type {part.content_type!r}"
        attributes = _xml_attributes(part.body)
        found += attributes.get(STUDY_UID, [])
        assert attributes.get("00100020"), f"no PatientID in part {part.body[:200]!r}"
    labels = study_labels(fixtures)
    assert sorted(found) == sorted(labels), (
        f"{len(parts)} parts with StudyInstanceUIDs {labelled(found, labels)}, expected one "
        f"part per study; {describe(response)}"
    )


@pytest.mark.parametrize("accept", ["image/png", "application/dicom", "text/html"])
def test_QIDO_11_not_acceptable_406(server: Server, fixtures: FixtureSet, accept: str) -> None:
    response = qido(server, "/studies", [fixture_studies(fixtures)], headers={"Accept": accept})
    assert response.status_code == 406, f"Accept {accept!r}: expected 406: {describe(response)}"


# --- QIDO-12: unknown parameters, invalid values ---------------------------


def test_QIDO_12_unknown_parameters_ignored(server: Server, fixtures: FixtureSet) -> None:
    pairs = [fixture_studies(fixtures), ("foo", "bar"), ("_", "1700000000000")]
    response, results = search(server, "/studies", pairs)
    labels = study_labels(fixtures)
    assert_set(response, results, STUDY_UID, set(labels), labels)


@pytest.mark.parametrize(
    ("level", "key", "bad"),
    [
        ("study", "StudyDate", "2024-13-45"),
        ("study", "StudyDate", "20241345"),
        ("study", "StudyTime", "256000"),
        ("study", "fuzzymatching", "maybe"),
        ("series", "SeriesNumber", "abc"),
        ("instance", "InstanceNumber", "x1"),
    ],
)
def test_QIDO_12_invalid_value_400(
    server: Server, fixtures: FixtureSet, level: str, key: str, bad: str
) -> None:
    path = {
        "study": "/studies",
        "series": f"/studies/{fixtures.ct.uid}/series",
        "instance": _ct_instances_path(fixtures),
    }[level]
    pairs: list[tuple[str, str]] = [(key, bad)]
    if level == "study":
        pairs.insert(0, fixture_studies(fixtures))
    response = qido(server, path, pairs)
    assert response.status_code == 400, f"{key}={bad}: expected 400: {describe(response)}"
