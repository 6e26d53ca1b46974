"""The demo PACS is a real qrscp process; check it holds exactly the sample and serves it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.events import Event

from gateway.demo.pacs import DemoPacs, start_demo_pacs
from gateway.demo.sample import (
    JAPANESE_PATIENT,
    LATIN1_PATIENT,
    MF_GRAY_WORD_SC,
    MR_PATIENT,
    UTF8_PATIENT,
)

FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Q/R FIND
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
GET = "1.2.840.10008.5.1.4.1.2.2.3"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
PENDING = (0xFF00, 0xFF01)
CT_SLICES = 4


class Receiver:
    """In-process Storage SCP standing in for the gateway as a C-MOVE destination."""

    def __init__(self) -> None:
        self.received: list[Dataset] = []
        ae = AE(ae_title="DICOMWEB")
        ae.maximum_pdu_size = 0
        for sop in (MF_GRAY_WORD_SC, "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.2"):
            ae.add_supported_context(sop, [EXPLICIT_LE])
        self.server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        self.port: int = self.server.server_address[1]

    def _on_store(self, event: Event) -> int:
        self.received.append(event.dataset)
        return 0x0000


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def pacs(receiver: Receiver) -> Iterator[DemoPacs]:
    p = start_demo_pacs(ct_slices=CT_SLICES, gateway_port=receiver.port)
    yield p
    p.stop()


def _find(pacs: DemoPacs, level: str, **keys: str) -> list[Dataset]:
    ae = AE()
    ae.maximum_pdu_size = 0
    ae.add_requested_context(FIND)
    assoc = ae.associate(pacs.host, pacs.port, ae_title=pacs.aet)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = level
    for kw in ("StudyInstanceUID", "PatientName", "PatientID"):
        setattr(query, kw, keys.get(kw, ""))
    if level in ("SERIES", "IMAGE"):
        query.SeriesInstanceUID = keys.get("SeriesInstanceUID", "")
    if level == "IMAGE":
        query.SOPInstanceUID = ""
    try:
        return [ds for status, ds in assoc.send_c_find(query, FIND) if status.Status in PENDING]
    finally:
        assoc.release()


def test_echo(pacs: DemoPacs) -> None:
    assert pacs.aet == "DEMOPACS"
    assert pacs.echo()


def test_study_level_find_matches_manifest(pacs: DemoPacs) -> None:
    answers = _find(pacs, "STUDY")
    studies = pacs.manifest.studies()
    assert {ds.StudyInstanceUID for ds in answers} == set(studies)
    # qrscp answers per stored instance even at STUDY level (no de-duplication); the
    # gateway must cope. Accept either so a fixed qrscp does not break this test.
    assert len(answers) in (len(studies), len(pacs.manifest))


def test_instance_counts_per_study(pacs: DemoPacs) -> None:
    for study_uid, instances in pacs.manifest.studies().items():
        answers = _find(pacs, "IMAGE", StudyInstanceUID=study_uid)
        assert sorted(ds.SOPInstanceUID for ds in answers) == sorted(i.sop_uid for i in instances)


@pytest.mark.parametrize(
    "name", [LATIN1_PATIENT.name, UTF8_PATIENT.name, JAPANESE_PATIENT.name, MR_PATIENT.name]
)
def test_patient_names_round_trip(pacs: DemoPacs, name: str) -> None:
    study_uid = pacs.manifest.study_of_patient(name)
    (answer, *_) = _find(pacs, "STUDY", StudyInstanceUID=study_uid)
    assert str(answer.PatientName) == name


def test_c_get_every_study(pacs: DemoPacs) -> None:
    """C-GET must deliver every generated SOP class, multi-frame included, unchanged."""
    manifest = pacs.manifest
    received: dict[str, Dataset] = {}

    def on_store(event: Event) -> int:
        received[event.dataset.SOPInstanceUID] = event.dataset
        return 0x0000

    ae = AE()
    ae.maximum_pdu_size = 0
    ae.add_requested_context(GET)
    classes = sorted(manifest.sop_class_uids())
    for sop in classes:
        ae.add_requested_context(sop, [EXPLICIT_LE])
    assoc = ae.associate(
        pacs.host,
        pacs.port,
        ae_title=pacs.aet,
        ext_neg=[build_role(sop, scp_role=True) for sop in classes],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        for study_uid in manifest.studies():
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = study_uid
            statuses = [s.Status for s, _ in assoc.send_c_get(query, GET)]
            assert statuses[-1] == 0x0000
    finally:
        assoc.release()
    assert set(received) == {i.sop_uid for i in manifest}
    (mf,) = [i for i in manifest if i.sop_class_uid == MF_GRAY_WORD_SC]
    got = received[mf.sop_uid]
    assert got.NumberOfFrames == 20
    from pydicom import dcmread

    assert got.PixelData == dcmread(mf.path).PixelData


def test_c_move_to_registered_gateway(pacs: DemoPacs, receiver: Receiver) -> None:
    study_uid = pacs.manifest.study_of_patient(MR_PATIENT.name)
    ae = AE(ae_title="DICOMWEB")
    ae.add_requested_context(MOVE)
    assoc = ae.associate(pacs.host, pacs.port, ae_title=pacs.aet)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    try:
        statuses = [s.Status for s, _ in assoc.send_c_move(query, "DICOMWEB", MOVE)]
    finally:
        assoc.release()
    assert statuses[-1] == 0x0000
    assert {ds.SOPInstanceUID for ds in receiver.received} == {
        i.sop_uid for i in pacs.manifest.studies()[study_uid]
    }


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_stop_leaves_nothing_behind() -> None:
    p = start_demo_pacs(ct_slices=1)
    workdir, port = p.workdir, p.port
    assert p.process.poll() is None and workdir.is_dir() and _port_open(port)
    p.stop()
    assert p.process.poll() is not None
    assert not workdir.exists()
    assert not _port_open(port)
    p.stop()  # idempotent


def test_given_workdir_is_kept_and_reusable(tmp_path: Path) -> None:
    with start_demo_pacs(tmp_path, ct_slices=1) as p:
        first = {ds.StudyInstanceUID for ds in _find(p, "STUDY")}
    assert (tmp_path / "qrscp.sqlite").is_file() and (tmp_path / "qrscp.log").is_file()
    with start_demo_pacs(tmp_path, ct_slices=1) as p:
        assert len(_find(p, "IMAGE")) == len(p.manifest)  # re-seeding overwrote, no dupes
        assert {ds.StudyInstanceUID for ds in _find(p, "STUDY")} == first


def test_port_in_use_fails_cleanly(tmp_path: Path) -> None:
    # Bound, not listening: qrscp's bind fails, and probes are refused rather than hanging.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match="qrscp exited"):
            start_demo_pacs(tmp_path, port=port, ct_slices=1)
    assert "Address already in use" in (tmp_path / "qrscp.log").read_text()
