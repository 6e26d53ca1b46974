"""Tests of the test harness itself, with DCMTK's tools as the independent client.

If the harness were wrong (a PACS not seeded, a fault peer that does not fault),
every gateway test built on it would prove nothing; these tests check each piece
against a client that shares no code with the gateway or pynetdicom.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from gateway.config import PacsConfig
from tests.peers import (
    AbortingFindPeer,
    ClosedPort,
    DcmqrscpServer,
    FindStatusPeer,
    MoveDestination,
    OrthancServer,
    PeerStartError,
    RejectingPeer,
    SilentListener,
    free_port,
    port_is_open,
    seed,
)
from tests.peers.common import need
from tests.peers.dcmqrscp import MAX_STUDIES
from tests.peers.dcmtk import dcmtk_available, dcmtk_tool, echoscu, findscu, getscu, movescu
from tests.peers.seed import CharsetFile

JAPANESE_NAME = "Yamada^Tarou=山田^太郎=やまだ^たろう"
LATIN1_NAME = "Müller^Jürgen"

# Orthanc 1.10.1 transcodes C-FIND answers to its DefaultEncoding (UTF-8 here)
# and garbles the ideographic groups of this ISO 2022 IR 13 + IR 87 name
# (half-width katakana survive, the JIS X 0208 part does not).
ORTHANC_CHARSET_GAPS = {"chrH32.dcm"}


@pytest.fixture(autouse=True)
def _dcmtk_tools() -> None:
    """Every test here uses DCMTK as the client: skip (locally) or fail (CI) without it."""
    need(
        dcmtk_available("echoscu", "findscu", "getscu", "movescu", "storescu"),
        "DCMTK",
        "apt-get install dcmtk",
    )


# --------------------------------------------------------------------------- real PACS


def test_dcmtk_tools_are_native_binaries() -> None:
    """pynetdicom's same-named scripts must never be picked instead of DCMTK."""
    for tool in ("echoscu", "findscu", "getscu", "movescu", "storescu"):
        path = dcmtk_tool(tool)
        assert path is not None, f"{tool} not found"
        assert Path(path).read_bytes()[:4] == b"\x7fELF", path


def test_pacs_answers_echo(pacs: OrthancServer | DcmqrscpServer) -> None:
    proc = echoscu(pacs.host, pacs.port, pacs.aet)
    assert proc.returncode == 0, proc.stderr
    assert pacs.startup_seconds is not None and pacs.startup_seconds < 10


def test_study_find_returns_every_seeded_study(pacs: OrthancServer | DcmqrscpServer) -> None:
    result = findscu(pacs.host, pacs.port, pacs.aet, {"StudyInstanceUID": "", "PatientName": ""})
    assert result.returncode == 0, result.output
    assert result.final_status_text == "Success"
    found = {str(m.StudyInstanceUID) for m in result.matches}
    assert found == pacs.study_uids
    # the demo manifest alone: its studies are all there
    assert set(pacs.manifest.studies()) <= found
    assert len(pacs.manifest.studies()) == 5


def test_series_and_instance_counts_match_manifest(pacs: OrthancServer | DcmqrscpServer) -> None:
    study_uid, instances = next(iter(pacs.manifest.studies().items()))
    result = findscu(
        pacs.host,
        pacs.port,
        pacs.aet,
        {"StudyInstanceUID": study_uid, "SOPInstanceUID": "", "SeriesInstanceUID": ""},
        level="IMAGE",
    )
    assert result.returncode == 0, result.output
    assert {str(m.SOPInstanceUID) for m in result.matches} == {i.sop_uid for i in instances}


@pytest.mark.parametrize("name", [JAPANESE_NAME, LATIN1_NAME])
def test_non_ascii_patient_name_is_returned(
    pacs: OrthancServer | DcmqrscpServer, name: str
) -> None:
    study_uid = pacs.manifest.study_of_patient(name)
    result = findscu(
        pacs.host,
        pacs.port,
        pacs.aet,
        {
            "SpecificCharacterSet": "ISO_IR 192",
            "StudyInstanceUID": study_uid,
            "PatientName": "",
        },
    )
    assert len(result.matches) == 1, result.output
    assert str(result.matches[0].PatientName) == name


def test_charset_files_round_trip(pacs: OrthancServer | DcmqrscpServer) -> None:
    """Every pydicom charset file's name comes back intact (known Orthanc gap aside)."""
    result = findscu(pacs.host, pacs.port, pacs.aet, {"StudyInstanceUID": "", "PatientName": ""})
    names = {str(m.StudyInstanceUID): str(m.PatientName) for m in result.matches}
    wrong: dict[str, str] = {}
    for cf in pacs.charset_files:
        assert isinstance(cf, CharsetFile)
        expected = {c.patient_name for c in pacs.charset_files if c.study_uid == cf.study_uid}
        if names.get(cf.study_uid) not in expected:
            wrong[cf.path.name] = names.get(cf.study_uid, "<missing>")
    gaps = ORTHANC_CHARSET_GAPS if isinstance(pacs, OrthancServer) else set()
    assert set(wrong) == gaps, wrong


def test_getscu_retrieves_a_study(pacs: OrthancServer | DcmqrscpServer, tmp_path: Path) -> None:
    study_uid = pacs.manifest.study_of_patient(JAPANESE_NAME)
    expected = {i.sop_uid for i in pacs.manifest.studies()[study_uid]}
    proc = getscu(pacs.host, pacs.port, pacs.aet, {"StudyInstanceUID": study_uid}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = {str(dcmread(f).SOPInstanceUID) for f in tmp_path.iterdir()}
    assert got == expected


def test_move_destination_is_configured(
    pacs: OrthancServer | DcmqrscpServer, move_destination: MoveDestination, tmp_path: Path
) -> None:
    """Both PACS accept C-MOVE to the reserved destination (movescu listens there)."""
    study_uid = pacs.manifest.study_of_patient(LATIN1_NAME)
    expected = {i.sop_uid for i in pacs.manifest.studies()[study_uid]}
    proc = movescu(
        pacs.host,
        pacs.port,
        pacs.aet,
        {"StudyInstanceUID": study_uid},
        tmp_path,
        move_aet=move_destination.aet,
        receive_port=move_destination.port,
    )
    assert proc.returncode == 0, proc.stderr
    got = {str(dcmread(f).SOPInstanceUID) for f in tmp_path.iterdir()}
    assert got == expected


def test_orthanc_dicomweb_plugin_serves_the_seeded_studies(orthanc: OrthancServer) -> None:
    with urllib.request.urlopen(f"{orthanc.dicomweb_url}/studies", timeout=10) as resp:
        assert resp.status == 200
        studies = json.loads(resp.read())
    assert {s["0020000D"]["Value"][0] for s in studies} == orthanc.study_uids
    assert orthanc.dicomweb_url == f"http://127.0.0.1:{orthanc.http_port}/dicom-web"


def test_pacs_config_points_at_the_peer(pacs: OrthancServer | DcmqrscpServer) -> None:
    cfg = pacs.pacs_config(retrieve_method="move", max_associations=2)
    assert isinstance(cfg, PacsConfig)
    assert (cfg.aet, cfg.host, cfg.port, cfg.retrieve_method, cfg.max_associations) == (
        pacs.aet,
        "127.0.0.1",
        pacs.port,
        "move",
        2,
    )


def test_orthanc_restart_keeps_ports_and_data(
    tmp_orthanc: OrthancServer, sample_manifest: Any
) -> None:
    report = seed(tmp_orthanc, sample_manifest.instances[:3])
    assert len(report.stored) == 3 and not report.refused
    ports = (tmp_orthanc.port, tmp_orthanc.http_port)
    pid = tmp_orthanc.process.pid if tmp_orthanc.process else None

    tmp_orthanc.stop()
    assert not port_is_open(tmp_orthanc.host, tmp_orthanc.port)
    assert echoscu(tmp_orthanc.host, tmp_orthanc.port, tmp_orthanc.aet, timeout=1).returncode != 0
    tmp_orthanc.start()

    assert tmp_orthanc.process is not None and tmp_orthanc.process.pid != pid
    assert (tmp_orthanc.port, tmp_orthanc.http_port) == ports
    result = findscu(
        tmp_orthanc.host, tmp_orthanc.port, tmp_orthanc.aet, {"SOPInstanceUID": ""}, level="IMAGE"
    )
    assert {str(m.SOPInstanceUID) for m in result.matches} == {
        i.sop_uid for i in sample_manifest.instances[:3]
    }
    assert tmp_orthanc.statistics()["CountInstances"] == 3


def test_dcmqrscp_restart_keeps_data(tmp_path: Path, charset_instances: list[CharsetFile]) -> None:
    with DcmqrscpServer(workdir=tmp_path / "q") as server:
        seed(server, charset_instances[:2])
        port = server.port
        server.restart()
        assert server.port == port
        result = findscu(server.host, server.port, server.aet, {"StudyInstanceUID": ""})
    assert {str(m.StudyInstanceUID) for m in result.matches} == {
        c.study_uid for c in charset_instances[:2]
    }


def test_startup_failure_reports_the_log(tmp_path: Path) -> None:
    """A PACS that cannot start fails fast with its log, not after a silent timeout."""
    need(dcmtk_tool("dcmqrscp") is not None, "dcmqrscp", "apt-get install dcmtk")
    blocker = socket.socket()
    blocker.bind(("", free_port()))
    blocker.listen(1)
    try:
        server = DcmqrscpServer(workdir=tmp_path / "q", start_timeout=5)
        server.port = blocker.getsockname()[1]  # someone else already listens there
        t0 = time.monotonic()
        with pytest.raises(PeerStartError) as info:
            server.start()
        assert time.monotonic() - t0 < 6
    finally:
        blocker.close()
    assert "dcmqrscp" in str(info.value)
    assert "stdout.log" in str(info.value)


def test_dcmqrscp_capacity_is_enforced() -> None:
    DcmqrscpServer.check_capacity(MAX_STUDIES)
    with pytest.raises(ValueError, match="500"):
        DcmqrscpServer.check_capacity(MAX_STUDIES + 1)


# --------------------------------------------------------------------------- fault peers


def test_rejecting_peer_rejects_permanently(rejecting_peer: RejectingPeer) -> None:
    proc = echoscu(rejecting_peer.host, rejecting_peer.port, rejecting_peer.aet)
    assert proc.returncode != 0
    assert "Rejected Permanent" in proc.stderr
    assert "Calling AE Title Not Recognized" in proc.stderr
    assert rejecting_peer.association_requests == 1


def test_busy_peer_rejects_transiently(busy_peer: RejectingPeer) -> None:
    proc = echoscu(busy_peer.host, busy_peer.port, busy_peer.aet)
    assert proc.returncode != 0
    assert "Rejected Transient" in proc.stderr
    assert "Local Limit Exceeded" in proc.stderr


def test_aborting_peer_sends_one_match_then_aborts(aborting_peer: AbortingFindPeer) -> None:
    # C-ECHO still works: only C-FIND is sabotaged
    assert echoscu(aborting_peer.host, aborting_peer.port, aborting_peer.aet).returncode == 0
    result = findscu(aborting_peer.host, aborting_peer.port, aborting_peer.aet, {"PatientName": ""})
    assert len(result.matches) == 1, result.output
    assert result.aborted, result.output
    assert result.final_status_text is None


def test_find_failure_peer_returns_its_status(find_failure_peer: FindStatusPeer) -> None:
    p = find_failure_peer
    result = findscu(p.host, p.port, p.aet, {"PatientName": ""}, debug=True)
    assert result.matches == []
    assert result.statuses == [p.status], result.output
    assert "injected failure" in result.output
    assert not result.aborted


def test_find_status_peer_can_send_pending_first(make_peer: Any) -> None:
    p = make_peer(FindStatusPeer(0xA900, pending=2))
    result = findscu(p.host, p.port, p.aet, {"PatientName": ""}, debug=True)
    assert len(result.matches) == 2
    assert result.statuses == [0xFF00, 0xFF00, 0xA900]


def test_silent_listener_accepts_but_never_answers(silent_peer: SilentListener) -> None:
    with socket.create_connection((silent_peer.host, silent_peer.port), timeout=2) as s:
        s.sendall(b"\x01\x00\x00\x00\x00\x04abcd")  # the start of an A-ASSOCIATE-RQ
        s.settimeout(1.0)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            s.recv(1)
        assert time.monotonic() - t0 >= 0.9
    deadline = time.monotonic() + 2
    while silent_peer.bytes_received < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert silent_peer.connections == 1
    assert silent_peer.bytes_received == 10


def test_silent_listener_times_out_echoscu(silent_peer: SilentListener) -> None:
    t0 = time.monotonic()
    proc = echoscu(silent_peer.host, silent_peer.port, silent_peer.aet, timeout=1)
    assert proc.returncode != 0
    assert "timeout" in proc.stderr.lower()
    assert 0.9 <= time.monotonic() - t0 < 5


def test_closed_port_refuses(closed_port: ClosedPort) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((closed_port.host, closed_port.port), timeout=2).close()
    proc = echoscu(closed_port.host, closed_port.port, closed_port.aet)
    assert proc.returncode != 0
    assert "Connection refused" in proc.stderr


def test_fault_peers_stop_cleanly() -> None:
    """After stop() nothing listens any more: fixtures do not leak servers."""
    peers: list[RejectingPeer | AbortingFindPeer | FindStatusPeer | SilentListener] = [
        RejectingPeer(),
        AbortingFindPeer(),
        FindStatusPeer(0xC000),
        SilentListener(),
    ]
    for peer in peers:
        with peer:
            port = peer.port
            if isinstance(peer, SilentListener):
                assert port_is_open(peer.host, port)
            else:
                # A real association rather than a bare connect: pynetdicom
                # raises in its reactor thread if shut down while a connection
                # that never sent A-ASSOCIATE-RQ is still open.
                echoscu(peer.host, port, peer.aet)
                assert peer.association_requests == 1
        assert not port_is_open(peer.host, port), peer
