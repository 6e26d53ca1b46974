"""QIDO-01/02/07 on studies with several series, behind a real Orthanc and dcmqrscp.

The session PACS hold one series per study and no RequestAttributesSequence, so
this module starts its own pair, seeded with four small studies written here:

* study 1: an MR series of two instances and a CT series of one, each with a
  RequestAttributesSequence item (RP1/SPS1, RP2/SPS2) and its own Performed
  Procedure Step start date and time;
* study 2: three CT instances; study 3: one OT; study 4: one MR.

What it shows: sequence matching (PS3.4 C.2.2.2.6) is re-checked by the gateway
(Orthanc ignores the key but returns the items); ModalitiesInStudy and the
Number Of ... Related counts are right behind dcmqrscp, which keeps none of
them, and ModalitiesInStudy is matched.  dcmqrscp indexes neither
RequestAttributesSequence nor the Performed Procedure Step start date/time (nor
SOPClassUID), so it neither matches nor returns them: with the default PACS
entry the gateway has nothing to check (strict xfail below); with those
attributes named in the entry's ``header_attributes`` the gateway reads them
from the instances and matches them itself (the last section, both PACS).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from tests.peers import DcmqrscpServer, OrthancServer, dcmqrscp_binary, orthanc_binary, seed
from tests.peers.common import need
from tests.peers.dcmtk import dcmtk_available
from tests.peers.gateway import GatewayServer
from tests.web.test_qido_pacs import (
    get,
    matches,
    search,
    tag,
    uids,
    value,
    warnings,
    xfail_on,
)

Pacs = OrthancServer | DcmqrscpServer

ROOT = "1.2.826.0.1.3680043.10.1234.88."
SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "OT": "1.2.840.10008.5.1.4.1.1.7",
}
# study -> [(modality, instances, (RequestedProcedureID, SPS ID, PPS date, PPS time) | None)]
STUDIES: dict[str, list[tuple[str, int, tuple[str, str, str, str] | None]]] = {
    "1": [
        ("MR", 2, ("RP1", "SPS1", "20200202", "121212")),
        ("CT", 1, ("RP2", "SPS2", "20200303", "131313")),
    ],
    "2": [("CT", 3, None)],
    "3": [("OT", 1, None)],
    "4": [("MR", 1, None)],
}
STUDY_UIDS = ",".join(ROOT + s for s in STUDIES)
STUDY_UID, SERIES_UID = "0020000D", "0020000E"

NOT_INDEXED = (
    "dcmqrscp does not index {what}: it ignores the key and does not return the attribute, "
    "so the gateway's check has nothing to see and both series come back"
)


def _write(out: Path) -> list[Path]:
    paths = []
    for study, series in STUDIES.items():
        for number, (modality, count, request) in enumerate(series, start=1):
            for n in range(1, count + 1):
                ds = Dataset()
                ds.SOPClassUID = SOP_CLASS[modality]
                ds.StudyInstanceUID = ROOT + study
                ds.SeriesInstanceUID = f"{ROOT}{study}.{number}"
                ds.SOPInstanceUID = f"{ROOT}{study}.{number}.{n}"
                ds.PatientName = f"Fill^Study{study}"
                ds.PatientID = f"QIDOFILL-{study}"
                ds.StudyDate, ds.StudyTime = "20240101", "120000"
                ds.AccessionNumber, ds.StudyID = f"QF{study}", study
                ds.StudyDescription = f"Fill-in study {study}"
                ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, number, n
                if request is not None:
                    rp_id, sps_id, date, time = request
                    item = Dataset()
                    item.RequestedProcedureID, item.ScheduledProcedureStepID = rp_id, sps_id
                    ds.RequestAttributesSequence = Sequence([item])
                    ds.PerformedProcedureStepStartDate = date
                    ds.PerformedProcedureStepStartTime = time
                ds.Rows = ds.Columns = 4
                ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
                ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
                ds.PixelData = bytes(16)
                ds.file_meta = FileMetaDataset()
                ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                path = out / f"{study}_{number}_{n}.dcm"
                ds.save_as(path, enforce_file_format=True)
                paths.append(path)
    return paths


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _write(tmp_path_factory.mktemp("qido-fill-data"))


@pytest.fixture(scope="module", params=["orthanc", "dcmqrscp"])
def pacs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, files: list[Path]
) -> Iterator[Pacs]:
    """This module's own PACS (named ``pacs`` so that the ``gateway`` fixture uses it)."""
    tools = dcmtk_available("echoscu", "storescu", "findscu")
    server: Pacs
    if request.param == "orthanc":
        need(orthanc_binary() is not None and tools, "Orthanc or DCMTK", "apt-get install orthanc")
        server = OrthancServer(workdir=tmp_path_factory.mktemp("fill-orthanc"))
    else:
        need(dcmqrscp_binary() is not None and tools, "DCMTK", "apt-get install dcmtk")
        server = DcmqrscpServer(workdir=tmp_path_factory.mktemp("fill-dcmqrscp"))
    server.start()
    try:
        report = seed(server, files)
        assert not report.refused, report.refused
        yield server
    finally:
        server.stop(graceful=False)


@pytest.fixture
def gateway(pacs: Pacs, gateway_for: Any) -> GatewayServer:
    """The gateway with ``qido_fill = all`` (the counts too) in front of this module's PACS."""
    server: GatewayServer = gateway_for(pacs, qido_fill="all")
    return server


def _series(study: str) -> str:
    return f"/studies/{ROOT}{study}/series"


# --------------------------------------------------------------------------- QIDO-01/02 sequences


REQUESTED_PROCEDURE_ID, SPS_ID = "00401001", "00400009"


@pytest.mark.parametrize(
    ("key", "match", "expected"),
    [
        ("RequestAttributesSequence.RequestedProcedureID", "RP2", {2}),
        ("00400275.00401001", "RP2", {2}),
        ("RequestAttributesSequence.00400009", "SPS1", {1}),
        ("00400275.ScheduledProcedureStepID", "SPS1", {1}),
        ("RequestAttributesSequence.RequestedProcedureID", "RP?", {1, 2}),
        ("RequestAttributesSequence.RequestedProcedureID", "RP3", set()),
    ],
)
def test_sequence_matching(
    request: pytest.FixtureRequest,
    pacs: Pacs,
    gateway: GatewayServer,
    key: str,
    match: str,
    expected: set[int],
) -> None:
    if expected != {1, 2}:
        xfail_on(request, pacs, {"dcmqrscp": NOT_INDEXED.format(what="RequestAttributesSequence")})
    got = search(gateway, _series("1"), {key: match})
    assert set(uids(got, SERIES_UID)) == {f"{ROOT}1.{n}" for n in expected}
    if pacs.kind == "orthanc":  # the items come back with the results (QIDO-07)
        for item in got:
            number = int(str(value(item, SERIES_UID)).rsplit(".", 1)[-1])
            (seq_item,) = item[tag("RequestAttributesSequence")]["Value"]
            assert value(seq_item, REQUESTED_PROCEDURE_ID) == f"RP{number}"
            assert value(seq_item, SPS_ID) == f"SPS{number}"


def test_keys_of_one_sequence_must_match_in_one_item(
    request: pytest.FixtureRequest, pacs: Pacs, gateway: GatewayServer
) -> None:
    xfail_on(request, pacs, {"dcmqrscp": NOT_INDEXED.format(what="RequestAttributesSequence")})
    params = {
        "RequestAttributesSequence.RequestedProcedureID": "RP1",
        "RequestAttributesSequence.ScheduledProcedureStepID": "SPS2",
    }
    assert search(gateway, _series("1"), params) == []


@pytest.mark.parametrize(
    ("key", "match", "expected"),
    [
        ("PerformedProcedureStepStartDate", "20200303", 2),
        ("PerformedProcedureStepStartTime", "121212", 1),
    ],
)
def test_performed_procedure_step_start(
    request: pytest.FixtureRequest,
    pacs: Pacs,
    gateway: GatewayServer,
    key: str,
    match: str,
    expected: int,
) -> None:
    xfail_on(request, pacs, {"dcmqrscp": NOT_INDEXED.format(what=key)})
    got = search(gateway, _series("1"), {key: match})
    assert uids(got, SERIES_UID) == [f"{ROOT}1.{expected}"]


# --------------------------------------------------------------------------- QIDO-02/07 fill-in


def test_study_modalities_and_counts(gateway: GatewayServer) -> None:
    got = {
        value(i, STUDY_UID): i
        for i in search(gateway, "/studies", {"StudyInstanceUID": STUDY_UIDS})
    }
    assert sorted(got) == sorted(ROOT + s for s in STUDIES)
    for study, series in STUDIES.items():
        item = got[ROOT + study]
        assert item[tag("ModalitiesInStudy")] == {
            "vr": "CS",
            "Value": sorted({m for m, _, _ in series}),
        }
        assert item[tag("NumberOfStudyRelatedSeries")] == {"vr": "IS", "Value": [len(series)]}
        assert item[tag("NumberOfStudyRelatedInstances")] == {
            "vr": "IS",
            "Value": [sum(n for _, n, _ in series)],
        }


def test_series_counts(gateway: GatewayServer) -> None:
    got = search(gateway, _series("1"))
    counts = {value(i, SERIES_UID): i[tag("NumberOfSeriesRelatedInstances")] for i in got}
    assert counts == {
        f"{ROOT}1.1": {"vr": "IS", "Value": [2]},
        f"{ROOT}1.2": {"vr": "IS", "Value": [1]},
    }


@pytest.mark.parametrize(
    ("match", "expected"),
    [("MR", {"1", "4"}), ("CT", {"1", "2"}), ("CT\\OT", {"1", "2", "3"}), ("US", set())],
)
def test_modalities_in_study_matching(
    gateway: GatewayServer, match: str, expected: set[str]
) -> None:
    params = {"StudyInstanceUID": STUDY_UIDS, "ModalitiesInStudy": match}
    got = search(gateway, "/studies", params)
    assert set(uids(got, STUDY_UID)) == {ROOT + s for s in expected}


def test_modalities_in_study_paging(gateway: GatewayServer) -> None:
    params: dict[str, Any] = {"StudyInstanceUID": STUDY_UIDS, "ModalitiesInStudy": "CT\\MR"}
    everything = uids(search(gateway, "/studies", params), STUDY_UID)
    assert sorted(everything) == sorted(ROOT + s for s in ("1", "2", "4"))
    first = get(gateway.url + "/studies", {**params, "limit": "2"})
    assert uids(matches(first), STUDY_UID) == everything[:2]
    assert "additional results" in first.headers.get("Warning", "")
    last = get(gateway.url + "/studies", {**params, "limit": "2", "offset": "2"})
    assert uids(matches(last), STUDY_UID) == everything[2:]
    assert "Warning" not in last.headers


# --------------------------------------------------------------------------- header_attributes

#: What dcmqrscp does not keep; configured for both PACS, so that Orthanc's answers
#: (which it matches itself) show that reading them from the headers changes nothing.
HEADER_ATTRIBUTES = (
    "SOPClassUID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
)


@pytest.fixture(scope="module")
def header_gateways(pacs: Pacs) -> Iterator[dict[int, GatewayServer]]:
    """Gateways whose PACS entry names HEADER_ATTRIBUTES, by qido_header_retrieves (100, 0)."""
    config = dataclasses.replace(pacs.pacs_config(), header_attributes=HEADER_ATTRIBUTES)
    started = {n: GatewayServer(config, qido_header_retrieves=n).start() for n in (100, 0)}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture
def header_gateway(header_gateways: dict[int, GatewayServer]) -> GatewayServer:
    return header_gateways[100]


def _dimse_count(gateway: GatewayServer, operation: str) -> float:
    text = requests.get(gateway.root + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("dicomweb_dimse_operations_total{") and f'"{operation}"' in line
    )


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"RequestAttributesSequence.RequestedProcedureID": "RP2"}, {2}),
        ({"00400275.ScheduledProcedureStepID": "SPS1"}, {1}),
        ({"RequestAttributesSequence.RequestedProcedureID": "RP?"}, {1, 2}),
        ({"RequestAttributesSequence.RequestedProcedureID": "RP3"}, set()),
        (
            {
                "RequestAttributesSequence.RequestedProcedureID": "RP1",
                "RequestAttributesSequence.ScheduledProcedureStepID": "SPS2",
            },
            set(),
        ),
        ({"PerformedProcedureStepStartDate": "20200303"}, {2}),
        ({"PerformedProcedureStepStartDate": "20200101-20200228"}, {1}),
        ({"PerformedProcedureStepStartTime": "121212"}, {1}),
        ({"PerformedProcedureStepStartTime": "130000-"}, {2}),
    ],
)
def test_header_attributes_are_matched(
    header_gateway: GatewayServer, params: dict[str, str], expected: set[int]
) -> None:
    got = search(header_gateway, _series("1"), params)
    assert set(uids(got, SERIES_UID)) == {f"{ROOT}1.{n}" for n in expected}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"RequestAttributesSequence.RequestedProcedureID": "RP2"}, ["2.1"]),
        ({"PerformedProcedureStepStartDate": "20200202"}, ["1.1", "1.2"]),
    ],
)
def test_series_keys_of_an_instance_search_are_matched_on_the_series(
    header_gateway: GatewayServer, params: dict[str, str], expected: list[str]
) -> None:
    """A relational search: the series key goes to a SERIES-level C-FIND first."""
    got = search(header_gateway, f"/studies/{ROOT}1/instances", params)
    assert sorted(uids(got, tag("SOPInstanceUID"))) == [f"{ROOT}1.{e}" for e in expected]


def test_pps_date_and_time_together(header_gateway: GatewayServer) -> None:
    """Date and time are one combined range (QIDO-04), checked after the headers are read."""
    params = {
        "PerformedProcedureStepStartDate": "20200202",
        "PerformedProcedureStepStartTime": "121212",
    }
    assert uids(search(header_gateway, _series("1"), params), SERIES_UID) == [f"{ROOT}1.1"]
    params["PerformedProcedureStepStartTime"] = "1300-"
    assert search(header_gateway, _series("1"), params) == []


def test_header_attributes_absent_from_the_instances_do_not_match(
    header_gateway: GatewayServer,
) -> None:
    """Study 2's series has no PPS date: read from its header, that is an answer, not a gap."""
    got = search(header_gateway, _series("2"), {"PerformedProcedureStepStartDate": "20200101-"})
    assert got == []
    everything = search(header_gateway, _series("2"))
    assert [i[tag("PerformedProcedureStepStartDate")] for i in everything] == [{"vr": "DA"}]


def test_header_attributes_are_returned(header_gateway: GatewayServer) -> None:
    got = {value(i, SERIES_UID): i for i in search(header_gateway, _series("1"))}
    for number, (_, _, request) in enumerate(STUDIES["1"], start=1):
        assert request is not None
        rp_id, sps_id, date, time = request
        item = got[f"{ROOT}1.{number}"]
        assert value(item, tag("PerformedProcedureStepStartDate")) == date
        assert value(item, tag("PerformedProcedureStepStartTime")) == time
        (seq_item,) = item[tag("RequestAttributesSequence")]["Value"]
        assert (value(seq_item, REQUESTED_PROCEDURE_ID), value(seq_item, SPS_ID)) == (rp_id, sps_id)


@pytest.mark.parametrize(("sop_class", "expected"), [("MR", [1, 2]), ("CT", [])])
def test_sop_class_is_matched_and_returned(
    header_gateway: GatewayServer, sop_class: str, expected: list[int]
) -> None:
    path = f"/studies/{ROOT}1/series/{ROOT}1.1/instances"
    got = search(header_gateway, path, {"SOPClassUID": SOP_CLASS[sop_class]})
    sop_uid = tag("SOPInstanceUID")
    assert sorted(uids(got, sop_uid)) == [f"{ROOT}1.1.{n}" for n in expected]
    assert all(value(i, tag("SOPClassUID")) == SOP_CLASS["MR"] for i in got)


def test_a_second_search_reads_no_instance_again(
    pacs: Pacs, fresh_header_gateway: GatewayServer
) -> None:
    gateway = fresh_header_gateway
    params = {"PerformedProcedureStepStartDate": "20200202"}
    first = search(gateway, _series("1"), params)
    assert uids(first, SERIES_UID) == [f"{ROOT}1.1"]
    # One instance of each candidate series: dcmqrscp ignores the key (both series),
    # Orthanc matches it (one).
    retrieves = 2 if pacs.kind == "dcmqrscp" else 1
    assert _dimse_count(gateway, "C-GET") == retrieves
    second = search(gateway, _series("1"), params)
    assert second == first
    assert _dimse_count(gateway, "C-GET") == retrieves


def _cache_hits(gateway: GatewayServer) -> float:
    text = requests.get(gateway.root + "/metrics", timeout=10).text
    lines = [x for x in text.splitlines() if x.startswith("dicomweb_cache_hits_total")]
    return sum(float(x.rsplit(" ", 1)[1]) for x in lines)


def test_headers_from_a_cached_series_are_no_wado_cache_hit(
    fresh_header_gateway: GatewayServer,
) -> None:
    """The metric counts WADO requests answered from the cache; a search is none."""
    gateway = fresh_header_gateway
    series = f"/studies/{ROOT}1/series/{ROOT}1.1"
    assert requests.get(gateway.url + series, timeout=30).status_code == 200  # cached whole
    got = search(gateway, series + "/instances", {"SOPClassUID": SOP_CLASS["MR"]})
    assert len(got) == 2
    assert _dimse_count(gateway, "C-GET") == 1  # the headers came from the cache
    assert _cache_hits(gateway) == 0
    assert requests.get(gateway.url + series, timeout=30).status_code == 200
    assert _cache_hits(gateway) == 1  # a WADO request answered from the cache is one


def test_a_relational_instance_search_does_not_retrieve_whole_series(
    fresh_header_gateway: GatewayServer,
) -> None:
    """Modality sends the search to the SERIES level first, which scopes the instance
    searches to a series; still only the URL's own series would be retrieved whole."""
    gateway = fresh_header_gateway
    params = {"Modality": "MR", "SOPClassUID": SOP_CLASS["MR"]}
    got = search(gateway, f"/studies/{ROOT}1/instances", params)
    assert sorted(uids(got, tag("SOPInstanceUID"))) == [f"{ROOT}1.1.{n}" for n in (1, 2)]
    assert _dimse_count(gateway, "C-GET") == 2  # instance by instance


def test_a_search_beyond_its_retrieves_says_what_it_did_not_check(
    pacs: Pacs, header_gateways: dict[int, GatewayServer]
) -> None:
    gateway = header_gateways[0]
    response = get(gateway.url + _series("3"), {"PerformedProcedureStepStartDate": "20200202"})
    got = matches(response)
    if pacs.kind == "orthanc":
        # Orthanc matches the key itself: no candidate is left to read, nothing to say.
        assert (got, warnings(response)) == ([], [])
        return
    # dcmqrscp ignores the key: its one candidate is returned unchecked, and said to be.
    assert uids(got, SERIES_UID) == [f"{ROOT}3.1"]
    assert any("1 result(s) were not checked" in w for w in warnings(response)), warnings(response)


@pytest.fixture
def fresh_header_gateway(pacs: Pacs) -> Iterator[GatewayServer]:
    """A header_attributes gateway that has read nothing yet (empty cache and memory)."""
    config = dataclasses.replace(pacs.pacs_config(), header_attributes=HEADER_ATTRIBUTES)
    server = GatewayServer(config).start()
    yield server
    server.stop()


def test_a_series_the_cache_cannot_keep_is_retrieved_once(pacs: Pacs) -> None:
    """One window of results at a time (max_associations=1: two), a cache too small for
    the series: its instances' headers are remembered from the one retrieve."""
    config = dataclasses.replace(
        pacs.pacs_config(), header_attributes=HEADER_ATTRIBUTES, max_associations=1
    )
    with GatewayServer(config, cache_budget_bytes=600) as gateway:
        path = f"/studies/{ROOT}2/series/{ROOT}2.1/instances"
        got = search(gateway, path, {"SOPClassUID": SOP_CLASS["CT"]})
        assert sorted(uids(got, tag("SOPInstanceUID"))) == [f"{ROOT}2.1.{n}" for n in (1, 2, 3)]
        assert _dimse_count(gateway, "C-GET") == 1


def test_an_instance_search_across_series_retrieves_instance_by_instance(
    fresh_header_gateway: GatewayServer,
) -> None:
    """Study 2's three CT instances: three one-instance retrieves, not the series (bounded)."""
    gateway = fresh_header_gateway
    before = _dimse_count(gateway, "C-GET")
    got = search(gateway, f"/studies/{ROOT}2/instances", {"SOPClassUID": SOP_CLASS["CT"]})
    assert sorted(uids(got, tag("SOPInstanceUID"))) == [f"{ROOT}2.1.{n}" for n in (1, 2, 3)]
    assert _dimse_count(gateway, "C-GET") - before == 3
    assert search(gateway, f"/studies/{ROOT}2/instances", {"SOPClassUID": SOP_CLASS["MR"]}) == []
    assert _dimse_count(gateway, "C-GET") - before == 3  # remembered: no retrieve again
