"""WADO-RS by C-MOVE (``retrieve_method = "move"``) through the gateway, against
both session PACS (Orthanc and dcmqrscp): the gateway's own C-STORE SCP receives
what the PACS sends to the move destination registered for it (``move_destination``).

What is checked end to end: a series and a study arrive whole and byte for byte
as stored, a retrieved series is then answered from the cache, unknown or
mismatched UIDs are 404, and a PACS that does not know the gateway as a move
destination gives a 502 with its status. The C-MOVE needs no SOP classes, so the IMAGE-level
C-FIND runs beside it: the 404s here are settled by that listing and by the
received instances' own UIDs, not by a C-FIND in front.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from gateway.demo.sample import CT_PATIENT, MR_PATIENT
from tests.peers import DcmqrscpServer, MoveDestination, OrthancServer
from tests.peers.gateway import GatewayServer
from tests.web.wado_support import multipart_parts

DICOM = "application/dicom"
UNKNOWN_UID = "1.2.826.0.1.3680043.10.4242.1"


@pytest.fixture
def move_gw(
    pacs: OrthancServer | DcmqrscpServer, move_destination: MoveDestination
) -> Iterator[GatewayServer]:
    """A gateway retrieving by C-MOVE, its SCP on the port the PACS moves to (one
    such gateway at a time: they share that port)."""
    gw = GatewayServer(
        pacs.pacs_config(retrieve_method="move"),
        calling_aet=move_destination.aet,
        store_scp_host=move_destination.host,
        store_scp_port=move_destination.port,
    )
    with gw:
        yield gw


def _of(sample_manifest: Any, patient_id: str) -> list[Any]:
    return [i for i in sample_manifest.instances if i.patient_id == patient_id]


def _parts_by_sop(response: requests.Response) -> dict[str, bytes]:
    parts = multipart_parts(response, DICOM)
    return {str(p.dataset().SOPInstanceUID): p.content for p in parts}


def _get(url: str) -> requests.Response:
    return requests.get(url, headers={"Accept": f'multipart/related; type="{DICOM}"'}, timeout=60)


def _assert_404(r: requests.Response) -> None:
    assert r.status_code == 404, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith("application/json")
    assert "error" in r.json()


def test_a_series_by_c_move_arrives_whole_and_is_then_cached(
    move_gw: GatewayServer, sample_manifest: Any
) -> None:
    mr = _of(sample_manifest, MR_PATIENT.pid)
    study, series = mr[0].study_uid, mr[0].series_uid
    expected = {i.sop_uid: i for i in mr if i.series_uid == series}
    url = f"{move_gw.url}/studies/{study}/series/{series}"
    got = _parts_by_sop(_get(url))
    assert set(got) == set(expected)
    for sop, content in got.items():
        # The instance as stored: the same data set after the File Meta.
        stored = expected[sop].path.read_bytes()
        assert content[128:132] == b"DICM"
        assert content.endswith(stored[-4096:])
    cache = move_gw.app.state.retriever.cache
    assert move_gw.run(cache.series_instances(study, series)) is not None
    assert set(_parts_by_sop(_get(url))) == set(expected)


def test_a_study_by_c_move_brings_every_series(
    move_gw: GatewayServer, sample_manifest: Any
) -> None:
    ct = _of(sample_manifest, CT_PATIENT.pid)
    study = ct[0].study_uid
    expected = {i.sop_uid for i in sample_manifest.instances if i.study_uid == study}
    assert set(_parts_by_sop(_get(f"{move_gw.url}/studies/{study}"))) == expected


def test_unknown_and_mismatched_uids_by_c_move_are_404(
    move_gw: GatewayServer, sample_manifest: Any
) -> None:
    mr, ct = _of(sample_manifest, MR_PATIENT.pid)[0], _of(sample_manifest, CT_PATIENT.pid)[0]
    for path in (
        f"/studies/{UNKNOWN_UID}",
        f"/studies/{mr.study_uid}/series/{UNKNOWN_UID}",
        f"/studies/{mr.study_uid}/series/{UNKNOWN_UID}/metadata",
        # both exist, but the series is not in that study
        f"/studies/{ct.study_uid}/series/{mr.series_uid}",
        f"/studies/{ct.study_uid}/series/{mr.series_uid}/metadata",
        # the instance exists, but not in that series
        f"/studies/{mr.study_uid}/series/{mr.series_uid}/instances/{ct.sop_uid}",
    ):
        _assert_404(_get(move_gw.url + path))
    # Whatever the PACS sent for the mismatched requests was not kept.
    cache = move_gw.app.state.retriever.cache
    assert move_gw.run(cache.lookup(mr.sop_uid)) is None


def test_a_move_destination_the_pacs_does_not_know_is_502_with_its_status(
    pacs: OrthancServer | DcmqrscpServer, move_destination: MoveDestination, sample_manifest: Any
) -> None:
    """The gateway's AE title is not registered as a move destination in the PACS:
    the C-MOVE fails (dcmqrscp: A801 "Move Destination unknown"; Orthanc 1.10
    answers its generic C000), and the client gets a 502 that names the operation
    and the PACS's status, not a 404: the series exists (the listing says so)."""
    mr = _of(sample_manifest, MR_PATIENT.pid)[0]
    gw = GatewayServer(
        pacs.pacs_config(retrieve_method="move"),
        calling_aet="UNKNOWN_DEST",
        store_scp_host=move_destination.host,
        store_scp_port=move_destination.port,
    )
    with gw:
        r = _get(f"{gw.url}/studies/{mr.study_uid}/series/{mr.series_uid}")
    assert r.status_code == 502, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith("application/json")
    detail = r.json()["detail"]
    status = "0xC000" if isinstance(pacs, OrthancServer) else "0xA801"
    assert "C-MOVE" in detail and status in detail, detail
