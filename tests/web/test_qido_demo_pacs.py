"""QIDO-RS behind the demo PACS (pynetdicom's qrscp), the way OHIF uses it.

qrscp is the PACS of ``dicomweb-gateway demo``.  It keeps twelve keys and
nothing else: no descriptions, no ModalitiesInStudy, no Number Of ... Related
counts; it answers once per instance even at STUDY and SERIES level; and it
refuses (A900) a C-FIND whose identifier has a key of a level below the query
level.  OHIF's study list asks ``includefield=00081030,00080060``, i.e. the
series-level Modality in a study search, which the gateway used to forward
(502).  OHIF 3 then reads ``ModalitiesInStudy.Value.length``, so an empty
ModalitiesInStudy breaks its study list too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
import requests

from gateway.config import PacsConfig
from gateway.demo.pacs import DEMO_HEADER_ATTRIBUTES, DemoPacs, start_demo_pacs
from tests.peers.gateway import GatewayServer

STUDY_UID, SERIES_UID = "0020000D", "0020000E"
MODALITY, MODALITIES = "00080060", "00080061"
STUDY_SERIES, STUDY_INSTANCES, SERIES_INSTANCES = "00201206", "00201208", "00201209"
SERIES_DESCRIPTION, SOP_UID, SOP_CLASS = "0008103E", "00080018", "00080016"
OHIF_STUDY_SEARCH = {"limit": "101", "offset": "0", "fuzzymatching": "false"}


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoPacs]:
    pacs = start_demo_pacs(ct_slices=4)
    try:
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture(scope="module")
def gateway(demo: DemoPacs) -> Iterator[GatewayServer]:
    config = PacsConfig(
        name="demo",
        aet=demo.aet,
        host=demo.host,
        port=demo.port,
        header_attributes=DEMO_HEADER_ATTRIBUTES,  # as ``dicomweb-gateway demo`` has it
    )
    server = GatewayServer(config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def search(gateway: GatewayServer, path: str, params: Any = None) -> list[dict[str, Any]]:
    resp = requests.get(
        gateway.url + path, params=params, headers={"Accept": "application/dicom+json"}, timeout=60
    )
    assert resp.status_code in (200, 204), (resp.status_code, resp.text[:500])
    return [] if resp.status_code == 204 else list(resp.json())


def value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


def test_ohif_study_list(gateway: GatewayServer, demo: DemoPacs) -> None:
    got = search(gateway, "/studies", {**OHIF_STUDY_SEARCH, "includefield": "00081030,00080060"})
    studies = demo.manifest.studies()
    assert sorted(value(i, STUDY_UID) for i in got) == sorted(studies)
    for item in got:
        instances = studies[value(item, STUDY_UID)]
        assert MODALITY not in item  # a series attribute: not in a study result
        assert item[MODALITIES] == {"vr": "CS", "Value": sorted({i.modality for i in instances})}
        assert item[STUDY_SERIES] == {"vr": "IS", "Value": [len({i.series_uid for i in instances})]}
        assert item[STUDY_INSTANCES] == {"vr": "IS", "Value": [len(instances)]}


@pytest.mark.parametrize("include", ["Modality", "SeriesNumber", "InstanceNumber,SOPClassUID"])
def test_lower_level_includefields_are_not_refused(gateway: GatewayServer, include: str) -> None:
    assert len(search(gateway, "/studies", {"includefield": include})) == 5
    study = value(search(gateway, "/studies", {"limit": "1"})[0], STUDY_UID)
    assert search(gateway, f"/studies/{study}/series", {"includefield": "InstanceNumber"})


def test_series_instance_counts(gateway: GatewayServer, demo: DemoPacs) -> None:
    for study, instances in demo.manifest.studies().items():
        got = search(gateway, f"/studies/{study}/series")
        series = {i.series_uid for i in instances}
        assert sorted(value(i, SERIES_UID) for i in got) == sorted(series)
        for item in got:
            count = sum(1 for i in instances if i.series_uid == value(item, SERIES_UID))
            assert item[SERIES_INSTANCES] == {"vr": "IS", "Value": [count]}


@pytest.mark.parametrize("modality", ["CT", "MR", "OT", "US"])
def test_modalities_in_study_matching(
    gateway: GatewayServer, demo: DemoPacs, modality: str
) -> None:
    expected = {i.study_uid for i in demo.manifest if i.modality == modality}
    got = search(gateway, "/studies", {"ModalitiesInStudy": modality})
    assert {value(i, STUDY_UID) for i in got} == expected
    series = search(gateway, "/series", {"ModalitiesInStudy": modality})
    assert {value(i, SERIES_UID) for i in series} == {
        i.series_uid for i in demo.manifest if i.study_uid in expected
    }


def test_series_descriptions_and_sop_classes_from_the_headers(
    gateway: GatewayServer, demo: DemoPacs
) -> None:
    """qrscp keeps neither; the demo's header_attributes make the gateway read them."""
    for study, instances in demo.manifest.studies().items():
        for item in search(gateway, f"/studies/{study}/series"):
            series_uid = value(item, SERIES_UID)
            first = next(i for i in instances if i.series_uid == series_uid)
            expected = pydicom.dcmread(first.path, stop_before_pixels=True).SeriesDescription
            assert item[SERIES_DESCRIPTION].get("Value", [""])[0] == expected
            classes = {
                value(i, SOP_UID): value(i, SOP_CLASS)
                for i in search(gateway, f"/studies/{study}/series/{series_uid}/instances")
            }
            assert classes == {
                i.sop_uid: i.sop_class_uid for i in instances if i.series_uid == series_uid
            }
