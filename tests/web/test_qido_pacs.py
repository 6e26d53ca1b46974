"""QIDO-RS end to end: the real gateway over HTTP in front of Orthanc and dcmqrscp.

Expectations come from the seeded files themselves (read once with pydicom into
``Seeded`` records) or from DCMTK's findscu, never from the gateway's code, so
a bug shared by the gateway's parser and its tests cannot hide.  Checklist
items: QIDO-01..12, JSON-01..05, URL-04 (/work/shared/PS3.18-CHECKLIST.md).

What the two PACS do differently (DCMTK 3.6.7, Orthanc 1.10), as seen here:

* dcmqrscp drops keys it does not index: ModalitiesInStudy,
  NumberOfStudyRelatedSeries/Instances, NumberOfSeriesRelatedInstances and
  SOPClassUID come back missing, and a *matching* key on ModalitiesInStudy or
  SOPClassUID is ignored, so every study / instance matches.  The gateway fills
  in the modalities and counts with SERIES and IMAGE C-FINDs of its own (and
  then matches ModalitiesInStudy itself); SOPClassUID stays ``{"vr": "UI"}``
  and unmatched.  It is strictly hierarchical: it answers C000
  (Failed: UnableToProcess) to a SERIES or IMAGE query whose identifier lacks
  the higher-level unique keys (StudyInstanceUID, SeriesInstanceUID), answers
  normally when they are present and empty, and ignores any other matching key
  above the query level (``/series?PatientID=...`` returns every series).  PN
  matching is case-sensitive; it cannot match a non-ASCII value against a
  record stored in ISO 2022 IR 87 (JIS X 0208).
* Orthanc computes ModalitiesInStudy and the Number Of ... Related counts,
  answers in UTF-8 whatever was stored (garbling the JIS X 0208 groups of
  chrH32.dcm), matches PN case-insensitively, and lets an empty StudyDate
  match an open-start range ``-b``.
* Neither matches ``?`` against one non-ASCII character, nor an exact
  ``Wang^XiaoDong=王^小東`` against chrX1.dcm (findscu sees the same).
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from requests_toolbelt.multipart.decoder import MultipartDecoder  # type: ignore[import-untyped]

from gateway.demo.sample import MR_IMAGE
from tests.peers import DcmqrscpServer, OrthancServer
from tests.peers.dcmtk import findscu
from tests.peers.gateway import GatewayServer

Pacs = OrthancServer | DcmqrscpServer
GatewayFactory = Callable[..., GatewayServer]  # tests/web/conftest.py: gateway_for
Params = Mapping[str, str] | Sequence[tuple[str, str]]

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
RETRIEVE_URL = "00081190"
DICOM_JSON = "application/dicom+json"
XML_ACCEPT = 'multipart/related; type="application/dicom+xml"'
NATIVE = "{http://dicom.nema.org/PS3.19/models/NativeDICOM}"
FUZZY_TEXT = (
    "The fuzzymatching parameter is not supported. Only literal matching has been performed."
)
MORE_RESULTS = re.compile(r"There are (?:(\d+) )?additional results that can be requested")

# The demo studies (gateway.demo.sample): study N is ``UID_ROOT + "1.1.N"``.
DEMO = "1.2.826.0.1.3680043.10.1234.1.1."
S1, S2, S3, S4, S5 = (f"{DEMO}{n}" for n in range(1, 6))


def tag(keyword: str) -> str:
    found = tag_for_keyword(keyword)
    assert found is not None, keyword
    return f"{found:08X}"


def vr_of(tag_: str) -> str:
    return str(dictionary_VR(int(tag_, 16)))


# PS3.18 Tables 10.6.3-3/4/5: always returned.
STUDY_REQUIRED = [
    tag(k)
    for k in (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    )
]
SERIES_REQUIRED = [
    tag(k)
    for k in ("Modality", "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances")
]
INSTANCE_REQUIRED = [tag(k) for k in ("SOPClassUID", "SOPInstanceUID", "InstanceNumber")]

# Required return keys each PACS leaves out of its C-FIND answer (it does not
# index them) and the gateway cannot fill in, so it sends them as {"vr": ...}.
# (dcmqrscp also leaves out ModalitiesInStudy and the Number Of ... Related
# counts: the gateway fills those in from SERIES and IMAGE C-FINDs.)
NOT_RETURNED: dict[str, frozenset[str]] = {
    "orthanc": frozenset(),
    "dcmqrscp": frozenset({tag("SOPClassUID")}),
}


# --------------------------------------------------------------------------- truth


@dataclass(frozen=True)
class Seeded:
    """One seeded instance as the file has it (the independent truth)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    patient_id: str
    patient_name: str
    name_groups: tuple[str, ...]
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    accession: str
    study_id: str
    study_description: str
    patient_age: str
    referring: str
    modality: str
    series_number: int | None
    instance_number: int | None

    @property
    def study_datetime(self) -> datetime | None:
        if not self.study_date:
            return None
        return datetime.strptime(
            self.study_date + (self.study_time or "000000")[:6], "%Y%m%d%H%M%S"
        )


def _read(path: Any) -> Seeded:
    ds = dcmread(path, stop_before_pixels=True)

    def text(keyword: str) -> str:
        return str(ds.get(keyword, "") or "")

    def number(keyword: str) -> int | None:
        value = ds.get(keyword)
        return None if value in (None, "") else int(value)

    return Seeded(
        study_uid=text("StudyInstanceUID"),
        series_uid=text("SeriesInstanceUID"),
        sop_uid=text("SOPInstanceUID"),
        sop_class_uid=text("SOPClassUID"),
        patient_id=text("PatientID"),
        patient_name=text("PatientName"),
        name_groups=tuple(ds.PatientName.components) if "PatientName" in ds else (),
        patient_birth_date=text("PatientBirthDate"),
        patient_sex=text("PatientSex"),
        study_date=text("StudyDate"),
        study_time=text("StudyTime"),
        accession=text("AccessionNumber"),
        study_id=text("StudyID"),
        study_description=text("StudyDescription"),
        patient_age=text("PatientAge"),
        referring=text("ReferringPhysicianName"),
        modality=text("Modality"),
        series_number=number("SeriesNumber"),
        instance_number=number("InstanceNumber"),
    )


@pytest.fixture(scope="module")
def seeded(sample_manifest: Any, charset_instances: Sequence[Any]) -> tuple[Seeded, ...]:
    """Every instance both session PACS were seeded with, read from its file."""
    return tuple(_read(i.path) for i in (*sample_manifest.instances, *charset_instances))


def first(records: Iterable[Seeded], **where: object) -> Seeded:
    for r in records:
        if all(getattr(r, k) == v for k, v in where.items()):
            return r
    raise LookupError(where)


def study_records(seeded: Iterable[Seeded]) -> dict[str, Seeded]:
    """One record per study (study-level attributes are the same in every instance)."""
    out: dict[str, Seeded] = {}
    for r in seeded:
        out.setdefault(r.study_uid, r)
    return out


def pn_json(groups: Sequence[str]) -> dict[str, str]:
    """PS3.18 F.2.2: the non-empty groups of a PN value."""
    names = ("Alphabetic", "Ideographic", "Phonetic")
    return {names[i]: g for i, g in enumerate(groups) if g}


def wildcard(pattern: str) -> re.Pattern[str]:
    """PS3.4 C.2.2.2.4 wild card matching, case-sensitive."""
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    )


# --------------------------------------------------------------------------- HTTP

_http = requests.Session()


def get(
    url: str, params: Params | None = None, headers: Mapping[str, str | None] | None = None
) -> requests.Response:
    # A None value removes the session's header (no Accept at all).
    sent: dict[str, Any] = dict(headers or {})
    return _http.get(url, params=params, headers=sent, timeout=30)


def _no_constants(name: str) -> None:
    raise AssertionError(f"JSON-02: {name} is not JSON")


def parse_json(resp: requests.Response) -> Any:
    """The body as strict UTF-8 JSON (no NaN/Infinity literals)."""
    return json.loads(resp.content.decode("utf-8"), parse_constant=_no_constants)


def matches(resp: requests.Response) -> list[dict[str, Any]]:
    """The results of a search: 204 is none, 200 a DICOM JSON array."""
    if resp.status_code == 204:
        assert resp.content == b""
        return []
    assert resp.status_code == 200, (resp.status_code, resp.text[:500])
    assert resp.headers["Content-Type"].split(";")[0] == DICOM_JSON
    body = parse_json(resp)
    assert isinstance(body, list)
    return body


def search(
    gateway: GatewayServer, path: str, params: Params | None = None, **kw: Any
) -> list[dict[str, Any]]:
    return matches(get(gateway.url + path, params, **kw))


def value(item: Mapping[str, Any], tag_: str) -> Any:
    values = item.get(tag_, {}).get("Value")
    return values[0] if values else None


def uids(items: Iterable[Mapping[str, Any]], tag_: str) -> list[str]:
    return [value(i, tag_) for i in items]


def warnings(resp: requests.Response) -> list[str]:
    return list(resp.raw.headers.getlist("Warning"))


def service(gateway: GatewayServer) -> str:
    return urlsplit(gateway.url).netloc


def xfail_on(request: pytest.FixtureRequest, pacs: Pacs, reasons: Mapping[str, str]) -> None:
    """Expect a failure on the PACS named in ``reasons`` (strict: it must fail)."""
    if pacs.kind in reasons:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reasons[pacs.kind]))


def error(resp: requests.Response, status: int) -> str:
    """The ``detail`` of a JSON error response with ``status``."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["Content-Type"].split(";")[0] == "application/json"
    body = parse_json(resp)
    assert set(body) == {"error", "detail"}
    return str(body["detail"])


# --------------------------------------------------------------------------- harness sanity


def test_seeded_truth_matches_the_harness(pacs: Pacs, seeded: tuple[Seeded, ...]) -> None:
    assert set(study_records(seeded)) == pacs.study_uids
    assert len(pacs.study_uids) == 18 and len(seeded) == 35


# --------------------------------------------------------------------------- the six resources


def test_every_search_resource_returns_the_seeded_entities(
    gateway: GatewayServer, seeded: tuple[Seeded, ...]
) -> None:
    studies = {r.study_uid for r in seeded}
    series = {r.series_uid for r in seeded}
    sops = {r.sop_uid for r in seeded}

    for path, key, expected in (
        ("/studies", STUDY_UID, studies),
        ("/series", SERIES_UID, series),
        ("/instances", SOP_UID, sops),
    ):
        got = uids(search(gateway, path), key)
        assert len(got) == len(expected), path  # no duplicates
        assert set(got) == expected, path

    for study in sorted(studies):
        in_study = [r for r in seeded if r.study_uid == study]
        got = uids(search(gateway, f"/studies/{study}/series"), SERIES_UID)
        assert sorted(got) == sorted({r.series_uid for r in in_study})
        got = uids(search(gateway, f"/studies/{study}/instances"), SOP_UID)
        assert sorted(got) == sorted(r.sop_uid for r in in_study)
        for se in {r.series_uid for r in in_study}:
            got = uids(search(gateway, f"/studies/{study}/series/{se}/instances"), SOP_UID)
            assert sorted(got) == sorted(r.sop_uid for r in in_study if r.series_uid == se)


def test_all_series_and_all_instances_without_higher_keys_in_the_find(
    pacs: Pacs, gateway: GatewayServer, seeded: tuple[Seeded, ...]
) -> None:
    """dcmqrscp refuses SERIES/IMAGE finds lacking the higher unique keys; the gateway has them."""
    assert len(search(gateway, "/series")) == len({r.series_uid for r in seeded})
    assert len(search(gateway, "/instances")) == len(seeded)
    for level, keys in (
        ("SERIES", {"SeriesInstanceUID": ""}),
        ("IMAGE", {"StudyInstanceUID": "", "SOPInstanceUID": ""}),
    ):
        bare = findscu(pacs.host, pacs.port, pacs.aet, keys, level=level, debug=True)
        if pacs.kind == "dcmqrscp":
            assert bare.statuses == [0xC000], bare.output  # Failed: UnableToProcess
            assert bare.matches == []
        else:
            assert bare.statuses[-1] == 0x0000, bare.output
            assert len(bare.matches) == (18 if level == "SERIES" else 35)


def test_aets_path_selects_the_configured_pacs(pacs: Pacs, gateway: GatewayServer) -> None:
    root = gateway.root
    direct = search(gateway, "/studies")
    via_aet = matches(get(f"{root}/aets/{pacs.aet}/dicomweb/studies"))
    assert sorted(uids(via_aet, STUDY_UID)) == sorted(uids(direct, STUDY_UID))
    url = value(next(i for i in via_aet if value(i, STUDY_UID) == S1), RETRIEVE_URL)
    assert url == f"{root}/aets/{pacs.aet}/dicomweb/studies/{S1}"

    detail = error(get(f"{root}/aets/NOSUCHAE/dicomweb/studies"), 404)
    assert "NOSUCHAE" in detail


# --------------------------------------------------------------------------- QIDO-01


@pytest.mark.parametrize(
    ("path", "keyword", "value_"),
    [
        ("/studies", "PatientID", "DEMO-0002"),
        ("/series", "Modality", "MR"),
        ("/instances", "InstanceNumber", "2"),
    ],
)
def test_keyword_and_tag_give_the_same_result(
    gateway: GatewayServer, path: str, keyword: str, value_: str
) -> None:
    by_keyword = get(gateway.url + path, {keyword: value_})
    by_tag = get(gateway.url + path, {tag(keyword): value_})
    by_lower_hex = get(gateway.url + path, {tag(keyword).lower(): value_})
    assert by_keyword.status_code == 200
    assert by_keyword.content == by_tag.content == by_lower_hex.content
    expected = int(value_) if value_.isdigit() else value_
    items = matches(by_keyword)
    assert items and all(value(i, tag(keyword)) == expected for i in items)


def test_keywords_are_case_sensitive_and_a_wrong_case_is_ignored(
    gateway: GatewayServer, seeded: tuple[Seeded, ...]
) -> None:
    everything = sorted(study_records(seeded))
    assert sorted(uids(search(gateway, "/studies", {"PatientID": "DEMO-0002"}), STUDY_UID)) == [S2]
    for name in ("patientid", "PATIENTID", "patientID"):
        assert (
            sorted(uids(search(gateway, "/studies", {name: "DEMO-0002"}), STUDY_UID)) == everything
        )


# --------------------------------------------------------------------------- QIDO-02/03

_DCMQRSCP_IGNORES = (
    "dcmqrscp does not index {key}: it drops the matching key, returns every {what} and "
    "never returns the attribute, so the gateway's check of the results cannot see it either"
)


@dataclass(frozen=True)
class Case:
    path: str
    params: dict[str, str]
    expect: Callable[[Seeded], bool]
    xfail: Mapping[str, str]

    @property
    def key(self) -> str:
        return {"studies": STUDY_UID, "series": SERIES_UID, "instances": SOP_UID}[
            self.path.rsplit("/", 1)[-1]
        ]

    def attribute(self, r: Seeded) -> str:
        return {STUDY_UID: r.study_uid, SERIES_UID: r.series_uid, SOP_UID: r.sop_uid}[self.key]


MATCHING: dict[str, Case] = {
    "PatientID": Case(
        "/studies", {"PatientID": "DEMO-0002"}, lambda r: r.patient_id == "DEMO-0002", {}
    ),
    "PatientName-single": Case(
        "/studies", {"PatientName": "Smith^John"}, lambda r: r.patient_name == "Smith^John", {}
    ),
    "PatientName-star": Case(
        "/studies",
        {"PatientName": "Doe*"},
        lambda r: bool(wildcard("Doe*").fullmatch(r.patient_name)),
        {},
    ),
    "PatientName-question": Case(
        "/studies",
        {"PatientName": "Sm?th^J*n"},
        lambda r: bool(wildcard("Sm?th^J*n").fullmatch(r.patient_name)),
        {},
    ),
    "StudyInstanceUID-list": Case(
        "/studies", {"StudyInstanceUID": f"{S1},{S4}"}, lambda r: r.study_uid in (S1, S4), {}
    ),
    "AccessionNumber": Case(
        "/studies", {"AccessionNumber": "DEMO0010004"}, lambda r: r.accession == "DEMO0010004", {}
    ),
    "StudyID": Case("/studies", {"StudyID": "3"}, lambda r: r.study_id == "3", {}),
    "StudyDate-single": Case(
        "/studies", {"StudyDate": "20240326"}, lambda r: r.study_date == "20240326", {}
    ),
    "StudyDate-range": Case(
        "/studies",
        {"StudyDate": "20240317-20240423"},
        lambda r: bool(r.study_date) and "20240317" <= r.study_date <= "20240423",
        {},
    ),
    "StudyDate-from": Case(
        "/studies",
        {"StudyDate": "20240326-"},
        lambda r: bool(r.study_date) and r.study_date >= "20240326",
        {},
    ),
    "StudyDate-until": Case(
        "/studies",
        {"StudyDate": "-20240317"},
        lambda r: bool(r.study_date) and r.study_date <= "20240317",
        {},
    ),
    # dcmqrscp ignores this key and returns no ModalitiesInStudy: the gateway
    # fills it in from a SERIES C-FIND per study and matches it itself.
    "ModalitiesInStudy": Case(
        "/studies", {"ModalitiesInStudy": "MR"}, lambda r: r.modality == "MR", {}
    ),
    "ModalitiesInStudy-list": Case(
        "/studies",
        {"ModalitiesInStudy": "CR\\MR"},
        lambda r: r.modality in ("CR", "MR"),
        {},
    ),
    "all-series-by-ModalitiesInStudy": Case(
        "/series", {"ModalitiesInStudy": "CT"}, lambda r: r.modality == "CT", {}
    ),
    "Modality": Case("/series", {"Modality": "CT"}, lambda r: r.modality == "CT", {}),
    "SeriesInstanceUID": Case(
        "/series", {"SeriesInstanceUID": f"{S2}.1"}, lambda r: r.series_uid == f"{S2}.1", {}
    ),
    "SOPInstanceUID": Case(
        "/instances", {"SOPInstanceUID": f"{S2}.1.3"}, lambda r: r.sop_uid == f"{S2}.1.3", {}
    ),
    "InstanceNumber": Case(
        "/instances", {"InstanceNumber": "2"}, lambda r: r.instance_number == 2, {}
    ),
    "SOPClassUID": Case(
        "/instances",
        {"SOPClassUID": MR_IMAGE},
        lambda r: r.sop_class_uid == MR_IMAGE,
        {
            "dcmqrscp": _DCMQRSCP_IGNORES.format(
                key="SOPClassUID", what="instance (35 instead of 10)"
            )
        },
    ),
    "InstanceNumber-in-series": Case(
        f"/studies/{S1}/series/{S1}.1/instances",
        {"InstanceNumber": "5"},
        lambda r: r.study_uid == S1 and r.instance_number == 5,
        {},
    ),
    # All Series / All Instances / Study's Instances with keys of a higher level.
    "all-series-by-PatientID": Case(
        "/series",
        {"PatientID": "DEMO-0002"},
        lambda r: r.patient_id == "DEMO-0002",
        {},
    ),
    "all-series-by-StudyDate": Case(
        "/series",
        {"StudyDate": "20240317-20240326"},
        lambda r: "20240317" <= r.study_date <= "20240326",
        {},
    ),
    "all-instances-by-PatientName": Case(
        "/instances",
        {"PatientName": "Smith*"},
        lambda r: r.patient_name.startswith("Smith"),
        {},
    ),
    "all-instances-by-Modality": Case(
        "/instances",
        {"Modality": "CR"},
        lambda r: r.modality == "CR",
        {},
    ),
    "study-instances-by-Modality": Case(
        f"/studies/{S1}/instances",
        {"Modality": "MR"},
        lambda r: r.modality == "MR",
        {},
    ),
}

UNIVERSAL: dict[str, tuple[str, dict[str, str]]] = {
    "empty-PatientID": ("/studies", {"PatientID": ""}),
    "star-PatientName": ("/studies", {"PatientName": "*"}),
    "empty-StudyDate": ("/studies", {"StudyDate": ""}),
    "empty-Modality": ("/series", {"Modality": ""}),
    "empty-InstanceNumber": ("/instances", {"InstanceNumber": ""}),
}


@pytest.mark.parametrize("case", list(MATCHING.values()), ids=list(MATCHING))
def test_matching(
    request: pytest.FixtureRequest,
    pacs: Pacs,
    gateway: GatewayServer,
    seeded: tuple[Seeded, ...],
    case: Case,
) -> None:
    parts = case.path.split("/")  # ["", "studies", study, "series", series, "instances"]
    scope = [
        r
        for r in seeded
        if (len(parts) < 3 or r.study_uid == parts[2])
        and (len(parts) < 5 or r.series_uid == parts[4])
    ]
    expected = sorted({case.attribute(r) for r in scope if case.expect(r)})
    assert set(expected) != {case.attribute(r) for r in scope}, "a case must be able to fail"
    xfail_on(request, pacs, case.xfail)
    got = uids(search(gateway, case.path, case.params), case.key)
    assert sorted(got) == expected


@pytest.mark.parametrize(("path", "params"), list(UNIVERSAL.values()), ids=list(UNIVERSAL))
def test_universal_matching_returns_everything_and_the_attribute(
    gateway: GatewayServer, seeded: tuple[Seeded, ...], path: str, params: dict[str, str]
) -> None:
    key = {"/studies": STUDY_UID, "/series": SERIES_UID, "/instances": SOP_UID}[path]
    plain = search(gateway, path)
    got = search(gateway, path, params)
    assert sorted(uids(got, key)) == sorted(uids(plain, key))
    assert len(got) == {STUDY_UID: 18, SERIES_UID: 18, SOP_UID: 35}[key]
    (name,) = params
    assert all(tag(name) in item for item in got)


# --------------------------------------------------------------------------- QIDO-04


@pytest.mark.parametrize(
    ("date", "time", "lower", "upper"),
    [
        # S1 (0314 10:03) is in the date range but before 0314 11:00; S2
        # (0317 10:40) is outside 11:00-11:30 yet inside the combined range,
        # so two independent ranges would give S3 alone.
        (
            "20240314-20240326",
            "1100-1130",
            datetime(2024, 3, 14, 11),
            datetime(2024, 3, 26, 11, 30, 59),
        ),
        # S2 (0317 10:40) is on the first date but before 11:00.
        ("20240317-", "1100-", datetime(2024, 3, 17, 11), None),
        # S4 (0423 11:54) is on the last date but after 11:00.
        ("-20240423", "-1100", None, datetime(2024, 4, 23, 11, 0, 59)),
    ],
    ids=["closed", "open-end", "open-start"],
)
def test_study_date_and_time_match_as_one_datetime(
    gateway: GatewayServer,
    seeded: tuple[Seeded, ...],
    date: str,
    time: str,
    lower: datetime | None,
    upper: datetime | None,
) -> None:
    studies = study_records(seeded).values()

    def inside(r: Seeded) -> bool:
        when = r.study_datetime
        return (
            when is not None
            and (lower is None or when >= lower)
            and (upper is None or when <= upper)
        )

    expected = sorted(r.study_uid for r in studies if inside(r))
    by_date = set(uids(search(gateway, "/studies", {"StudyDate": date}), STUDY_UID))
    # The case is only a case if date-only matching would let a study in that
    # the combined range keeps out.
    assert set(expected) < by_date - {r.study_uid for r in studies if not r.study_date}
    got = search(gateway, "/studies", {"StudyDate": date, "StudyTime": time})
    assert sorted(uids(got, STUDY_UID)) == expected
    assert all(value(i, tag("StudyTime")) for i in got)  # the time is returned to check


# --------------------------------------------------------------------------- QIDO-05

_DCMQRSCP_ISO2022 = (
    "dcmqrscp cannot convert records stored in ISO 2022 IR 87 to the query's ISO_IR 192 "
    "(log: \"'ISO 2022 IR 87' is not supported by ... iconv\", then it compares bytes of "
    "incompatible character sets), so {what} is missing"
)

NON_ASCII_QUERIES: dict[str, tuple[str, Mapping[str, str]]] = {
    "latin1-demo": ("Müller^Jürgen", {}),
    "utf8-demo": ("Çelik^Ayşe", {}),
    "utf8-wildcard": ("Çelik*", {}),
    "japanese-3-groups": (
        "Yamada^Tarou=山田^太郎=やまだ^たろう",
        {"dcmqrscp": _DCMQRSCP_ISO2022.format(what="chrH31.dcm (H31EXAMPLE)")},
    ),
    "japanese-ideographic-wildcard": (
        "*山田*",
        {
            "orthanc": "Orthanc 1.10 keeps chrH32.dcm's JIS X 0208 groups garbled "
            "(';3ED^B@O:' for 山田^太郎), so H32EXAMPLE is missing",
            "dcmqrscp": _DCMQRSCP_ISO2022.format(what="chrH31.dcm/chrH32.dcm (H31/H32EXAMPLE)"),
        },
    ),
    "japanese-iso2022": (
        "やまだ^たろう",
        {"dcmqrscp": _DCMQRSCP_ISO2022.format(what="chrJapMulti.dcm (2008-4), so 204")},
    ),
    "korean-iso2022": ("김희중", {}),
    "korean-3-groups": ("Hong^Gildong=洪^吉洞=홍^길동", {}),
    "chinese-wildcard": ("Wang^XiaoDong=王^小東*", {}),
    "greek": ("Διονυσιος", {}),
    "cyrillic": ("Люкceмбypг", {}),
    "question-mark-on-non-ascii": (
        "M?ller^J?rgen",
        {
            "orthanc": "Orthanc 1.10 does not match '?' against one non-ASCII character "
            "('M?ller^J?rgen' finds no Müller^Jürgen; neither does findscu)",
            "dcmqrscp": "dcmqrscp matches '?' against one byte of the UTF-8 form of the "
            "record ('M??ller*' would match); 'M?ller^J?rgen' finds nothing",
        },
    ),
}


@pytest.mark.parametrize(
    "name_xfail", list(NON_ASCII_QUERIES.values()), ids=list(NON_ASCII_QUERIES)
)
def test_non_ascii_patient_name_query(
    request: pytest.FixtureRequest,
    pacs: Pacs,
    gateway: GatewayServer,
    seeded: tuple[Seeded, ...],
    name_xfail: tuple[str, Mapping[str, str]],
) -> None:
    name, reasons = name_xfail
    pattern = wildcard(name)
    expected = sorted(
        r.study_uid for r in study_records(seeded).values() if pattern.fullmatch(r.patient_name)
    )
    assert expected
    url = f"{gateway.url}/studies?PatientName={quote(name, safe='^=*?')}"
    assert name.isascii() or "%" in url  # percent-encoded UTF-8 (PS3.18 8.3.4.1)
    xfail_on(request, pacs, reasons)
    resp = _http.get(url, timeout=30)
    got = matches(resp)
    assert sorted(uids(got, STUDY_UID)) == expected
    for item in got:
        record = study_records(seeded)[value(item, STUDY_UID)]
        assert item[tag("PatientName")]["Value"] == [pn_json(record.name_groups)]


# PatientID -> what is special about the name.
NON_ASCII_PATIENTS = {
    "DEMO-0003": "Latin-1 (ISO_IR 100)",
    "DEMO-0004": "UTF-8 (ISO_IR 192)",
    "DEMO-0005": "UTF-8, three groups",
    "SCSFREN": "chrFren ISO_IR 100",
    "SCSGERM": "chrGerm ISO_IR 100",
    "SCSGREEK": "chrGreek ISO_IR 126",
    "SCSRUSS": "chrRuss ISO_IR 144",
    "SCSARAB": "chrArab ISO_IR 127",
    "SCSHBRW": "chrHbrw ISO_IR 138",
    "H31EXAMPLE": "chrH31 ISO 2022 IR 87",
    "H32EXAMPLE": "chrH32 ISO 2022 IR 13 + IR 87",
    "2008-4": "chrJapMulti ISO 2022 IR 87",
    "I2EXAMPLE": "chrI2 ISO 2022 IR 149",
    "2008-3": "chrKoreanMulti ISO 2022 IR 149",
    "X1EXAMPLE": "chrX1 ISO_IR 192",
    "X2EXAMPLE": "chrX2 GB18030",
}


@pytest.mark.parametrize("patient_id", list(NON_ASCII_PATIENTS))
def test_results_decode_to_utf8(
    request: pytest.FixtureRequest,
    pacs: Pacs,
    gateway: GatewayServer,
    seeded: tuple[Seeded, ...],
    patient_id: str,
) -> None:
    record = first(seeded, patient_id=patient_id)
    assert not record.patient_name.isascii()
    if patient_id == "H32EXAMPLE":
        xfail_on(
            request,
            pacs,
            {
                "orthanc": "Orthanc 1.10 transcodes its C-FIND answer to UTF-8 and garbles the "
                "JIS X 0208 groups of chrH32.dcm (';3ED^B@O:' for 山田^太郎; findscu sees the same)"
            },
        )
    # Each level's own unique key: dcmqrscp ignores a PatientID key below STUDY level.
    for path, params in (
        ("/studies", {"PatientID": patient_id}),
        ("/series", {"SeriesInstanceUID": record.series_uid}),
        ("/instances", {"SOPInstanceUID": record.sop_uid}),
    ):
        resp = get(gateway.url + path, params)
        resp.content.decode("utf-8")  # JSON-05: strict UTF-8
        (item,) = matches(resp)
        assert item[tag("PatientID")]["Value"] == [patient_id]
        assert item[tag("PatientName")] == {
            "vr": "PN",
            "Value": [pn_json(record.name_groups)],
        }, path
        if tag("SpecificCharacterSet") in item:  # the JSON is UTF-8, whatever the PACS sent
            assert item[tag("SpecificCharacterSet")]["Value"] == ["ISO_IR 192"]


def test_names_are_decoded_as_dcmtk_decodes_them(pacs: Pacs, gateway: GatewayServer) -> None:
    """Whatever character set each PACS answers in, the gateway's text equals pydicom's reading
    of the same answer received by findscu (Orthanc's chrH32 garbling included)."""
    found = findscu(pacs.host, pacs.port, pacs.aet, {"StudyInstanceUID": "", "PatientName": ""})
    assert found.final_status_text == "Success"
    dcmtk = {str(m.StudyInstanceUID): pn_json(m.PatientName.components) for m in found.matches}
    ours = {value(i, STUDY_UID): value(i, tag("PatientName")) for i in search(gateway, "/studies")}
    assert ours == dcmtk


# --------------------------------------------------------------------------- QIDO-06


@pytest.mark.parametrize(
    ("params", "included"),
    [
        ([("includefield", "StudyDescription")], {"StudyDescription"}),
        ([("includefield", "00081030")], {"StudyDescription"}),
        (
            [("includefield", "StudyDescription"), ("includefield", "PatientAge")],
            {"StudyDescription", "PatientAge"},
        ),
        ([("includefield", "StudyDescription,00101010")], {"StudyDescription", "PatientAge"}),
        ([("includefield", "all")], {"StudyDescription", "PatientAge", "IssuerOfPatientID"}),
        (
            [("includefield", "PatientAge"), ("includefield", "all")],
            {"StudyDescription", "PatientAge", "IssuerOfPatientID"},
        ),
    ],
    ids=["keyword", "tag", "repeated", "comma-list", "all", "all-with-others"],
)
def test_includefield(
    gateway: GatewayServer,
    seeded: tuple[Seeded, ...],
    params: list[tuple[str, str]],
    included: set[str],
) -> None:
    record = first(seeded, study_uid=S1)
    truth = {
        "StudyDescription": record.study_description,
        "PatientAge": record.patient_age,
        "IssuerOfPatientID": "DEMO",
    }
    (plain,) = search(gateway, "/studies", {"StudyInstanceUID": S1})
    for keyword in truth:
        assert tag(keyword) not in plain, keyword
    (item,) = search(gateway, "/studies", [("StudyInstanceUID", S1), *params])
    for keyword in included:
        assert item[tag(keyword)] == {"vr": vr_of(tag(keyword)), "Value": [truth[keyword]]}
    for keyword in set(truth) - included:
        assert tag(keyword) not in item, keyword
    assert set(plain) <= set(item)


def test_unknown_includefield_is_400(gateway: GatewayServer) -> None:
    detail = error(get(gateway.url + "/studies", {"includefield": "NoSuchKeyword"}), 400)
    assert detail.startswith("includefield") and "NoSuchKeyword" in detail


def test_ohif_study_search_with_a_series_level_includefield(
    gateway: GatewayServer, seeded: tuple[Seeded, ...]
) -> None:
    """OHIF's study list asks ``includefield=00081030,00080060`` (StudyDescription, Modality).

    Modality is a series attribute: it stays out of the STUDY C-FIND (qrscp
    refuses it with A900, see test_qido_demo_pacs.py) and out of the results;
    ModalitiesInStudy, always returned, carries the study's modalities.
    """
    studies = study_records(seeded)
    params = {"includefield": "00081030,00080060", "limit": "101", "offset": "0"}
    got = search(gateway, "/studies", params)
    assert sorted(uids(got, STUDY_UID)) == sorted(studies)
    for item in got:
        study = item[STUDY_UID]["Value"][0]
        rows = [r for r in seeded if r.study_uid == study]
        description = studies[study].study_description
        if description:
            assert item[tag("StudyDescription")] == {"vr": "LO", "Value": [description]}
        assert tag("Modality") not in item
        assert item[tag("ModalitiesInStudy")] == {
            "vr": "CS",
            "Value": sorted({r.modality for r in rows}),
        }


# Image attributes a viewer may ask for one at a time; `all` must return each of them
# as it comes back alone (QIDO-06).  dcmqrscp returns none of them, Orthanc all.
IMAGE_INCLUDES = (
    "ImageType",
    "SliceThickness",
    "SliceLocation",
    "PixelSpacing",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "WindowCenter",
    "WindowWidth",
    "RescaleIntercept",
    "RescaleSlope",
    "PhotometricInterpretation",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "Rows",
    "Columns",
    "BitsAllocated",
)


def test_includefield_all_returns_what_each_image_attribute_returns_alone(
    pacs: Pacs, gateway: GatewayServer
) -> None:
    path = f"/studies/{S1}/series/{S1}.1/instances"
    (everything,) = search(gateway, path, {"InstanceNumber": "2", "includefield": "all"})
    returned = 0
    for keyword in IMAGE_INCLUDES:
        (alone,) = search(gateway, path, {"InstanceNumber": "2", "includefield": keyword})
        assert everything.get(tag(keyword)) == alone.get(tag(keyword)), keyword
        returned += "Value" in alone.get(tag(keyword), {})
    if pacs.kind == "orthanc":
        assert returned == len(IMAGE_INCLUDES)


# --------------------------------------------------------------------------- QIDO-07 / URL-04


def _check_required(
    item: Mapping[str, Any], tags: Iterable[str], truth: Mapping[str, Any], pacs: Pacs
) -> None:
    for t in tags:
        assert t in item, t
        vr = vr_of(t)
        if t in NOT_RETURNED[pacs.kind]:
            assert item[t] == {"vr": vr}, t
        else:
            assert item[t] == {"vr": vr, "Value": truth[t]}, t


def _study_truth(seeded: Sequence[Seeded], study: str) -> dict[str, Any]:
    rows = [r for r in seeded if r.study_uid == study]
    r = rows[0]
    return {
        tag("StudyDate"): [r.study_date],
        tag("StudyTime"): [r.study_time],
        tag("AccessionNumber"): [r.accession],
        tag("ModalitiesInStudy"): sorted({x.modality for x in rows}),
        tag("ReferringPhysicianName"): [{"Alphabetic": r.referring}],
        tag("PatientName"): [pn_json(r.name_groups)],
        tag("PatientID"): [r.patient_id],
        tag("PatientBirthDate"): [r.patient_birth_date],
        tag("PatientSex"): [r.patient_sex],
        tag("StudyInstanceUID"): [study],
        tag("StudyID"): [r.study_id],
        tag("NumberOfStudyRelatedSeries"): [len({x.series_uid for x in rows})],
        tag("NumberOfStudyRelatedInstances"): [len(rows)],
    }


def _series_truth(seeded: Sequence[Seeded], series: str) -> dict[str, Any]:
    rows = [r for r in seeded if r.series_uid == series]
    return {
        tag("Modality"): [rows[0].modality],
        tag("SeriesInstanceUID"): [series],
        tag("SeriesNumber"): [rows[0].series_number],
        tag("NumberOfSeriesRelatedInstances"): [len(rows)],
    }


def _instance_truth(r: Seeded) -> dict[str, Any]:
    return {
        tag("SOPClassUID"): [r.sop_class_uid],
        tag("SOPInstanceUID"): [r.sop_uid],
        tag("InstanceNumber"): [r.instance_number],
    }


def test_study_required_attributes(
    pacs: Pacs, gateway: GatewayServer, seeded: tuple[Seeded, ...]
) -> None:
    (item,) = search(gateway, "/studies", {"PatientID": "DEMO-0001"})
    _check_required(item, STUDY_REQUIRED, _study_truth(seeded, S1), pacs)
    assert value(item, RETRIEVE_URL) == f"{gateway.url}/studies/{S1}"


def test_series_required_attributes(
    pacs: Pacs, gateway: GatewayServer, seeded: tuple[Seeded, ...]
) -> None:
    (item,) = search(gateway, f"/studies/{S1}/series")
    _check_required(item, SERIES_REQUIRED, _series_truth(seeded, f"{S1}.1"), pacs)
    assert value(item, RETRIEVE_URL) == f"{gateway.url}/studies/{S1}/series/{S1}.1"


def test_instance_required_attributes(
    pacs: Pacs, gateway: GatewayServer, seeded: tuple[Seeded, ...]
) -> None:
    record = first(seeded, study_uid=S1, instance_number=2)
    (item,) = search(gateway, f"/studies/{S1}/series/{S1}.1/instances", {"InstanceNumber": "2"})
    _check_required(item, INSTANCE_REQUIRED, _instance_truth(record), pacs)
    assert value(item, RETRIEVE_URL) == (
        f"{gateway.url}/studies/{S1}/series/{S1}.1/instances/{record.sop_uid}"
    )


def test_all_series_and_all_instances_return_the_higher_levels_attributes(
    pacs: Pacs, gateway: GatewayServer, seeded: tuple[Seeded, ...]
) -> None:
    record = first(seeded, study_uid=S2, instance_number=3)
    study, series = _study_truth(seeded, S2), _series_truth(seeded, record.series_uid)
    (item,) = search(gateway, "/series", {"SeriesInstanceUID": record.series_uid})
    for t in STUDY_REQUIRED:
        assert t in item, f"All Series result lacks {t}"
    _check_required(item, SERIES_REQUIRED, series, pacs)
    (item,) = search(gateway, "/instances", {"SOPInstanceUID": record.sop_uid})
    for t in (*STUDY_REQUIRED, *SERIES_REQUIRED):
        assert t in item, f"All Instances result lacks {t}"
    _check_required(item, INSTANCE_REQUIRED, _instance_truth(record), pacs)
    # the values the PACS does return are right
    for t, expected in {**study, **series}.items():
        if "Value" in item[t]:
            assert item[t]["Value"] == expected, t


def test_retrieve_urls_are_absolute_and_resolve_through_the_gateway(
    gateway: GatewayServer, seeded: tuple[Seeded, ...]
) -> None:
    record = first(seeded, study_uid=S2, instance_number=4)
    base = urlsplit(gateway.url)
    (study,) = search(gateway, "/studies", {"StudyInstanceUID": S2})
    study_url = value(study, RETRIEVE_URL)
    (series,) = search(gateway, "/series", {"SeriesInstanceUID": record.series_uid})
    series_url = value(series, RETRIEVE_URL)
    (instance,) = search(gateway, "/instances", {"SOPInstanceUID": record.sop_uid})
    instance_url = value(instance, RETRIEVE_URL)
    assert study_url == f"{gateway.url}/studies/{S2}"
    assert series_url == f"{study_url}/series/{record.series_uid}"
    assert instance_url == f"{series_url}/instances/{record.sop_uid}"
    assert study[RETRIEVE_URL]["vr"] == series[RETRIEVE_URL]["vr"] == "UR"
    for url in (study_url, series_url, instance_url):
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == (base.scheme, base.netloc)
    # The URLs are resources of this gateway: the searches below them answer.
    assert uids(matches(get(study_url + "/series")), SERIES_UID) == [record.series_uid]
    assert record.sop_uid in uids(matches(get(series_url + "/instances")), SOP_UID)
    # Scoped and unscoped searches give the same URL.
    (scoped,) = search(
        gateway,
        f"/studies/{S2}/series/{record.series_uid}/instances",
        {"SOPInstanceUID": record.sop_uid},
    )
    assert value(scoped, RETRIEVE_URL) == instance_url


@pytest.mark.parametrize(
    ("headers", "prefix"),
    [
        (
            {
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "pacs.example.org",
                "X-Forwarded-Prefix": "/gw",
            },
            "https://pacs.example.org/gw/dicomweb",
        ),
        (
            {
                "X-Forwarded-Proto": "https, http",
                "X-Forwarded-Host": "edge.example.org:8443, inner:80",
            },
            "https://edge.example.org:8443/dicomweb",
        ),
        ({"X-Forwarded-Prefix": "/proxied/"}, "http://{netloc}/proxied/dicomweb"),
    ],
    ids=["all-three", "proxy-chain", "prefix-only"],
)
def test_forwarded_headers_change_retrieve_url(
    gateway: GatewayServer, headers: dict[str, str], prefix: str
) -> None:
    prefix = prefix.format(netloc=service(gateway))
    (study,) = search(gateway, "/studies", {"StudyInstanceUID": S1}, headers=headers)
    assert value(study, RETRIEVE_URL) == f"{prefix}/studies/{S1}"
    (series,) = search(gateway, f"/studies/{S1}/series", headers=headers)
    assert value(series, RETRIEVE_URL) == f"{prefix}/studies/{S1}/series/{S1}.1"


# --------------------------------------------------------------------------- QIDO-08


def test_fuzzymatching_warning(gateway: GatewayServer) -> None:
    resp = get(gateway.url + "/studies", {"PatientName": "Smith^John", "fuzzymatching": "true"})
    assert uids(matches(resp), STUDY_UID) == [S2]  # literal matching
    assert warnings(resp) == [f"299 {service(gateway)}: {FUZZY_TEXT}"]
    literal_only = get(
        gateway.url + "/studies", {"PatientName": "Smith^Jon", "fuzzymatching": "true"}
    )
    assert literal_only.status_code == 204
    assert warnings(literal_only) == [f"299 {service(gateway)}: {FUZZY_TEXT}"]
    off = get(gateway.url + "/studies", {"PatientName": "Smith^John", "fuzzymatching": "false"})
    assert warnings(off) == []


# --------------------------------------------------------------------------- QIDO-09


def _more_warning(resp: requests.Response, gateway: GatewayServer, remaining: int) -> None:
    texts = warnings(resp)
    if remaining == 0:
        assert texts == []
        return
    (text,) = texts
    assert text.startswith(f"299 {service(gateway)}: "), text
    m = MORE_RESULTS.fullmatch(text.split(": ", 1)[1])
    assert m is not None, text
    if m.group(1) is not None:
        assert int(m.group(1)) == remaining


def test_limit_and_offset_page_through_all_matches(
    gateway: GatewayServer, seeded: tuple[Seeded, ...]
) -> None:
    everything = uids(search(gateway, "/instances"), SOP_UID)
    assert sorted(everything) == sorted(r.sop_uid for r in seeded)
    pages: list[list[str]] = []
    for offset in range(0, 40, 10):
        resp = get(gateway.url + "/instances", {"limit": "10", "offset": str(offset)})
        page = uids(matches(resp), SOP_UID)
        assert len(page) == min(10, 35 - offset)
        _more_warning(resp, gateway, max(0, 35 - offset - 10))
        pages.append(page)
    flat = [u for p in pages for u in p]
    assert len(set(flat)) == len(flat) == 35  # no overlap, nothing lost
    assert flat == everything  # the same order every time


@pytest.mark.parametrize("limit", [1, 3, 5])
def test_limit_and_offset_count_after_the_modalities_in_study_match(
    gateway: GatewayServer, seeded: tuple[Seeded, ...], limit: int
) -> None:
    """dcmqrscp ignores ModalitiesInStudy; the gateway filters, and pages count after that."""
    everything = uids(search(gateway, "/studies", {"ModalitiesInStudy": "OT"}), STUDY_UID)
    truth = {r.study_uid for r in seeded if r.modality == "OT"}
    assert sorted(everything) == sorted(truth) and len(truth) > 5
    pages: list[str] = []
    for offset in range(0, len(truth), limit):
        params = {"ModalitiesInStudy": "OT", "limit": str(limit), "offset": str(offset)}
        resp = get(gateway.url + "/studies", params)
        page = uids(matches(resp), STUDY_UID)
        assert len(page) == min(limit, len(truth) - offset)
        _more_warning(resp, gateway, len(truth) - offset - len(page))
        pages += page
    assert pages == everything


def _c_finds(gateway: GatewayServer) -> int:
    text = get(gateway.root + "/metrics").text
    found = re.findall(
        r'^dicomweb_dimse_operations_total\{[^}]*operation="C-FIND"[^}]*\} ([0-9.e+]+)$',
        text,
        re.MULTILINE,
    )
    return int(sum(float(n) for n in found))


def test_the_fill_in_costs_c_finds_only_where_the_pacs_lacks_the_attributes(
    pacs: Pacs, gateway: GatewayServer
) -> None:
    """Orthanc computes ModalitiesInStudy and the counts: one C-FIND per search.

    dcmqrscp does not: a SERIES and an IMAGE C-FIND per returned study, an
    IMAGE C-FIND per study of the returned series; nothing for the matches
    skipped by offset or beyond the limit.
    """
    before = _c_finds(gateway)
    got = search(gateway, "/studies", {"limit": "3", "offset": "2"})
    assert len(got) == 3 and all(value(i, tag("NumberOfStudyRelatedInstances")) for i in got)
    studies = _c_finds(gateway) - before
    before = _c_finds(gateway)
    got = search(gateway, f"/studies/{S2}/series")
    assert value(got[0], tag("NumberOfSeriesRelatedInstances")) == 10
    series = _c_finds(gateway) - before
    if pacs.kind == "orthanc":
        assert (studies, series) == (1, 1)
    else:
        assert (studies, series) == (1 + 3 * 2, 1 + 1)


def test_same_request_same_order(gateway: GatewayServer) -> None:
    first_ = uids(search(gateway, "/studies", {"limit": "7", "offset": "3"}), STUDY_UID)
    second = uids(search(gateway, "/studies", {"limit": "7", "offset": "3"}), STUDY_UID)
    assert len(first_) == 7 and first_ == second


@pytest.mark.parametrize(
    ("limit", "offset", "count", "remaining"),
    [
        ("18", "0", 18, 0),
        ("17", "0", 17, 1),
        ("5", "13", 5, 0),
        ("5", "12", 5, 1),
        ("100", "15", 3, 0),
    ],
)
def test_limit_offset_boundaries(
    gateway: GatewayServer, limit: str, offset: str, count: int, remaining: int
) -> None:
    resp = get(gateway.url + "/studies", {"limit": limit, "offset": offset})
    assert len(matches(resp)) == count
    _more_warning(resp, gateway, remaining)


def test_offset_past_the_end_is_empty(gateway: GatewayServer) -> None:
    resp = get(gateway.url + "/studies", {"offset": "18"})
    assert resp.status_code == 204 and resp.content == b""


@pytest.mark.parametrize(
    ("name", "bad"),
    [("limit", "-1"), ("limit", "abc"), ("limit", "1.5"), ("offset", "-1"), ("offset", "x")],
)
def test_limit_and_offset_must_be_unsigned_integers(
    gateway: GatewayServer, name: str, bad: str
) -> None:
    detail = error(get(gateway.url + "/studies", {name: bad}), 400)
    assert detail.startswith(f"{name}:") and repr(bad) in detail


def test_server_maximum_caps_the_results(pacs: Pacs, gateway_for: GatewayFactory) -> None:
    small = gateway_for(pacs, qido_max_results=5)
    for params in ({}, {"limit": "10"}):
        resp = get(small.url + "/studies", params)
        assert len(matches(resp)) == 5
        _more_warning(resp, small, 13)


# --------------------------------------------------------------------------- QIDO-10


def test_empty_result_is_204_without_body(gateway: GatewayServer) -> None:
    resp = get(gateway.url + "/studies", {"PatientID": "NO-SUCH-PATIENT"})
    assert resp.status_code == 204
    assert resp.content == b""
    assert resp.headers.get("Content-Length", "0") == "0"


def test_empty_result_can_be_200_with_an_empty_array(
    pacs: Pacs, gateway_for: GatewayFactory
) -> None:
    gateway = gateway_for(pacs, qido_empty_status=200)
    for path, params in (
        ("/studies", {"PatientID": "NO-SUCH-PATIENT"}),
        (f"/studies/{S1}/series", {"Modality": "MR"}),
        ("/instances", {"SOPInstanceUID": "1.2.3.4"}),
    ):
        resp = get(gateway.url + path, params)
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].split(";")[0] == DICOM_JSON
        assert parse_json(resp) == []
    # and non-empty results are unchanged
    assert len(matches(get(gateway.url + "/studies", {"PatientID": "DEMO-0001"}))) == 1
    # A multipart body cannot have zero parts (RFC 2046 5.1.1): XML stays 204.
    xml = requests.get(
        gateway.url + "/studies",
        params={"PatientID": "NO-SUCH-PATIENT"},
        headers={"Accept": 'multipart/related; type="application/dicom+xml"'},
        timeout=30,
    )
    assert xml.status_code == 204 and xml.content == b""


# --------------------------------------------------------------------------- QIDO-11


@pytest.mark.parametrize(
    "accept",
    [None, "*/*", "application/dicom+json", "application/*", "application/dicom+json, */*;q=0.1"],
    ids=["no-accept", "any", "dicom-json", "application-any", "weighted"],
)
def test_json_is_the_default_representation(gateway: GatewayServer, accept: str | None) -> None:
    resp = get(gateway.url + "/studies", {"PatientID": "DEMO-000*"}, headers={"Accept": accept})
    body = matches(resp)  # checks application/dicom+json and one JSON array
    assert sorted(uids(body, STUDY_UID)) == [S1, S2, S3, S4, S5]


def test_xml_multipart_has_one_part_per_result(
    gateway: GatewayServer, seeded: tuple[Seeded, ...]
) -> None:
    json_items = search(gateway, "/studies", {"PatientID": "DEMO-000*"})
    resp = get(gateway.url + "/studies", {"PatientID": "DEMO-000*"}, headers={"Accept": XML_ACCEPT})
    assert resp.status_code == 200
    content_type = resp.headers["Content-Type"]
    assert content_type.split(";")[0] == "multipart/related"
    assert 'type="application/dicom+xml"' in content_type and "boundary=" in content_type
    parts = MultipartDecoder.from_response(resp).parts
    assert len(parts) == len(json_items) == 5
    by_study: dict[str, ET.Element] = {}
    for part in parts:
        assert part.headers[b"Content-Type"] == b"application/dicom+xml"
        root = ET.fromstring(part.content)
        assert root.tag == f"{NATIVE}NativeDicomModel"
        attrs = {str(a.get("tag")): a for a in root.findall(f"{NATIVE}DicomAttribute")}
        study = attrs[STUDY_UID].findtext(f"{NATIVE}Value")
        assert study is not None
        by_study[study] = root
        # same attributes as the JSON of that study
        (match,) = (i for i in json_items if value(i, STUDY_UID) == study)
        assert sorted(attrs) == sorted(match)
        assert attrs[RETRIEVE_URL].findtext(f"{NATIVE}Value") == value(match, RETRIEVE_URL)
    assert sorted(by_study) == [S1, S2, S3, S4, S5]
    muller = by_study[S3].find(
        f"{NATIVE}DicomAttribute[@tag='00100010']/{NATIVE}PersonName/{NATIVE}Alphabetic"
    )
    assert muller is not None
    assert muller.findtext(f"{NATIVE}FamilyName") == "Müller"
    assert muller.findtext(f"{NATIVE}GivenName") == "Jürgen"
    japanese = by_study[S5].find(f"{NATIVE}DicomAttribute[@tag='00100010']/{NATIVE}PersonName")
    assert japanese is not None
    assert japanese.findtext(f"{NATIVE}Ideographic/{NATIVE}FamilyName") == "山田"
    assert japanese.findtext(f"{NATIVE}Phonetic/{NATIVE}GivenName") == "たろう"


@pytest.mark.parametrize("accept", ["image/png", "application/dicom", "text/html, image/*"])
def test_nothing_acceptable_is_406_json(gateway: GatewayServer, accept: str) -> None:
    detail = error(get(gateway.url + "/studies", headers={"Accept": accept}), 406)
    assert "application/dicom+json" in detail


# --------------------------------------------------------------------------- QIDO-12


def test_unknown_parameters_are_ignored(gateway: GatewayServer) -> None:
    plain = get(gateway.url + "/studies", {"PatientID": "DEMO-0004"})
    noisy = get(
        gateway.url + "/studies",
        [("PatientID", "DEMO-0004"), ("_", "1714560000"), ("NoSuchKeyword", "x"), ("foo.bar", "1")],
    )
    assert noisy.status_code == plain.status_code == 200
    assert noisy.content == plain.content
    assert uids(matches(noisy), STUDY_UID) == [S4]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"StudyDate": "2024-13-45"}, "StudyDate"),
        ({"StudyDate": "20241345"}, "StudyDate"),
        ({"StudyDate": "20240401-20240301"}, "StudyDate"),
        ({"StudyTime": "2561"}, "StudyTime"),
        ({"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID"),
        ({"InstanceNumber": "two"}, "InstanceNumber"),
        ({"StudyDate": "2024*"}, "StudyDate"),
        ({"fuzzymatching": "yes"}, "fuzzymatching"),
    ],
    ids=[
        "dashed-date",
        "month-13",
        "backwards-range",
        "hour-25",
        "bad-uid",
        "bad-IS",
        "wildcard-on-DA",
        "bad-bool",
    ],
)
def test_invalid_values_are_400_naming_the_parameter(
    gateway: GatewayServer, params: dict[str, str], parameter: str
) -> None:
    detail = error(get(gateway.url + "/studies", params), 400)
    assert detail.startswith(f"{parameter}:"), detail


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ("/studies/1.2.abc/series", "1.2.abc"),
        ("/studies/1.2.abc/instances", "1.2.abc"),
        (f"/studies/{S1}/series/1..2/instances", "1..2"),
        ("/studies/01.2/series", "01.2"),
    ],
)
def test_malformed_uid_in_the_path_is_400(gateway: GatewayServer, path: str, bad: str) -> None:
    detail = error(get(gateway.url + path), 400)
    assert "InstanceUID" in detail.split(":")[0] and repr(bad) in detail


# --------------------------------------------------------------------------- JSON-01..05


def _check_dataset(ds: Mapping[str, Any], where: str) -> None:
    keys = list(ds)
    assert keys == sorted(keys), f"{where}: keys not ascending"
    for key, attribute in ds.items():
        at = f"{where}/{key}"
        assert re.fullmatch(r"[0-9A-F]{8}", key), at
        assert not key.endswith("0000"), f"{at}: group length"
        vr = attribute["vr"]
        assert re.fullmatch(r"[A-Z]{2}", vr), at
        assert set(attribute) <= {"vr", "Value", "BulkDataURI", "InlineBinary"}, at
        assert len(set(attribute) - {"vr"}) <= 1, at
        if int(key[:4], 16) % 2 == 0:  # public: the VR of the data dictionary
            assert vr in vr_of(key), f"{at}: {vr}"
        if "Value" not in attribute:
            continue
        values = attribute["Value"]
        assert isinstance(values, list) and values, at
        for v in values:
            if v is None:
                continue
            if vr == "PN":
                assert isinstance(v, dict) and v, at
                assert set(v) <= {"Alphabetic", "Ideographic", "Phonetic"}, at
                assert all(isinstance(g, str) and g for g in v.values()), at
            elif vr in ("IS", "US", "SS", "UL", "SL", "SV", "UV"):
                assert isinstance(v, int) and not isinstance(v, bool), at
            elif vr in ("DS", "FL", "FD"):
                assert (
                    isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                ), at
            elif vr == "SQ":
                assert isinstance(v, dict), at
                _check_dataset(v, at)
            else:
                assert isinstance(v, str), at
                if vr == "AT":
                    assert re.fullmatch(r"[0-9A-F]{8}", v), at


def test_json_model_of_actual_results(
    pacs: Pacs, gateway: GatewayServer, seeded: tuple[Seeded, ...]
) -> None:
    seen_vrs: set[str] = set()
    for path in ("/studies", "/series", "/instances"):
        resp = get(gateway.url + path, {"includefield": "all"})
        body = matches(resp)
        assert len(body) > 1
        for item in body:
            _check_dataset(item, path)
            seen_vrs |= {a["vr"] for a in item.values()}
    assert {"PN", "IS", "DA", "TM", "UI", "UR"} <= seen_vrs

    # Numbers as numbers, with the file's values (JSON-02).
    record = first(seeded, study_uid=S1, instance_number=2)
    numeric = "SliceThickness,ImagePositionPatient,PixelSpacing,WindowCenter,Rows"
    (item,) = search(
        gateway,
        f"/studies/{S1}/series/{S1}.1/instances",
        {"InstanceNumber": "2", "includefield": numeric},
    )
    _check_dataset(item, "instance")
    ds = dcmread(pacs.manifest.instance(record.sop_uid).path, stop_before_pixels=True)
    assert item[tag("InstanceNumber")]["Value"] == [2]
    truth = {
        "SliceThickness": [float(ds.SliceThickness)],
        "ImagePositionPatient": [float(x) for x in ds.ImagePositionPatient],
        "PixelSpacing": [float(x) for x in ds.PixelSpacing],
        "WindowCenter": [float(ds.WindowCenter)],
        "Rows": [int(ds.Rows)],
    }
    for keyword, expected in truth.items():
        # dcmqrscp drops keys it does not index; Orthanc must return them all
        if pacs.kind == "orthanc" or "Value" in item.get(tag(keyword), {}):
            assert item[tag(keyword)]["Value"] == expected, keyword
    if pacs.kind == "orthanc":
        (study,) = search(gateway, "/studies", {"StudyInstanceUID": S1})
        assert study[tag("NumberOfStudyRelatedInstances")]["Value"] == [8]
