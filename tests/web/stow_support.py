"""Helpers for the STOW-RS tests (tests/web/test_stow_pacs.py, tests/bench).

Instances are built here with pydicom (fresh UIDs every time, so nothing a test
stores can collide with what another test queries), request bodies are built
by hand (so broken ones can be), and every STOW response is checked against
the PACS itself: each ReferencedSOPInstanceUID must be found there with DCMTK's
findscu at IMAGE level, under the study and series its RetrieveURL names, and
the instances a test expects to be refused must not be there.  Expectations
never come from the gateway's own code.
"""

from __future__ import annotations

import dataclasses
import io
import re
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pydicom
import requests
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom import evt

from tests.peers.dcmtk import findscu, getscu
from tests.peers.faults import ScriptedPeer
from tests.peers.gateway import GatewayServer

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
#: A SOP class no PACS knows (under the demo data's org root): storage refused.
UNKNOWN_SOP_CLASS = "1.2.826.0.1.3680043.10.1234.99.1"

BOUNDARY = "stow-test-boundary-7f3a9c"
DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
NATIVE_NS = "{http://dicom.nema.org/PS3.19/models/NativeDICOM}"

# PS3.18 Table I.2-2 / PS3.4 Table B.2-1 codes the tests expect.
CANNOT_UNDERSTAND = 0xC000
DATASET_MISMATCH = 0xA900
SOP_CLASS_NOT_SUPPORTED = 0x0122
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
COERCION = 0xB000

# DICOM JSON tags of the Store Instances Response (PS3.18 Annex I).
RETRIEVE_URL = "00081190"
FAILED_SEQ = "00081198"
REFERENCED_SEQ = "00081199"
SOP_CLASS = "00081150"
SOP_INSTANCE = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"


# --------------------------------------------------------------------------- instances


@dataclass(frozen=True)
class Inst:
    """One Part 10 file to upload and the identifiers the test expects back."""

    data: bytes
    sop_class: str
    sop_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str

    def part(self) -> bytes:
        return self.data


def new_study() -> tuple[str, str]:
    """A fresh (study, series) UID pair."""
    return generate_uid(), generate_uid()


def new_dataset(
    study_uid: str | None = None,
    series_uid: str | None = None,
    *,
    number: int = 1,
    rows: int = 32,
    cols: int = 32,
    sop_class: str = CT_IMAGE,
    patient_id: str = "STOW-TEST",
) -> Dataset:
    """A small, valid CT-like image (16-bit noise) with fresh SOP Instance UID."""
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = UID(sop_uid)
    ds.StudyInstanceUID = UID(study_uid or generate_uid())
    ds.SeriesInstanceUID = UID(series_uid or generate_uid())
    ds.PatientName = "STOW^Test"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20240314"
    ds.StudyTime = "092653"
    ds.StudyID = "1"
    ds.AccessionNumber = "STOW1"
    ds.ReferringPhysicianName = ""
    ds.Modality = "CT" if sop_class == CT_IMAGE else "OT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(number)
    ds.PixelData = rng.integers(0, 4096, size=(rows, cols), dtype="<u2").tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def encode(ds: Dataset, transfer_syntax: str | None = None) -> bytes:
    """The Part 10 file of ``ds`` (in its File Meta's transfer syntax, or the one given)."""
    if transfer_syntax is not None:
        ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def as_inst(ds: Dataset, data: bytes | None = None) -> Inst:
    return Inst(
        data=encode(ds) if data is None else data,
        sop_class=str(ds.SOPClassUID),
        sop_uid=str(ds.SOPInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
    )


def new_instance(
    study_uid: str | None = None,
    series_uid: str | None = None,
    *,
    transfer_syntax: str = ExplicitVRLittleEndian,
    **kwargs: Any,
) -> Inst:
    ds = new_dataset(study_uid, series_uid, **kwargs)
    return as_inst(ds, encode(ds, transfer_syntax))


def new_series(count: int, study_uid: str | None = None, **kwargs: Any) -> list[Inst]:
    study, series = (study_uid or generate_uid()), generate_uid()
    return [new_instance(study, series, number=n + 1, **kwargs) for n in range(count)]


def without(ds: Dataset, keyword: str) -> Inst:
    """``ds`` as a file lacking one data set attribute (File Meta kept as it was);
    the returned identifiers are those ``ds`` had."""
    inst = as_inst(ds)
    delattr(ds, keyword)
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=False)
    return dataclasses.replace(inst, data=out.getvalue())


def from_testfile(name: str, study_uid: str | None = None, series_uid: str | None = None) -> Inst:
    """A pydicom test file with fresh UIDs, its (compressed) Pixel Data untouched."""
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.SOPInstanceUID = UID(generate_uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = UID(study_uid or generate_uid())
    ds.SeriesInstanceUID = UID(series_uid or generate_uid())
    ds.PatientID = "STOW-TEST"
    return as_inst(ds)


# --------------------------------------------------------------------------- bodies


def content_type(part_type: str = DICOM, boundary: str = BOUNDARY) -> str:
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def part_bytes(
    data: bytes, media_type: str = DICOM, headers: Mapping[str, str] | None = None
) -> bytes:
    head = f"Content-Type: {media_type}\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    return f"--{BOUNDARY}\r\n{head}\r\n".encode() + data + b"\r\n"


def multipart(parts: Iterable[bytes | Inst], *, close: bool = True) -> bytes:
    """A ``multipart/related`` body, one ``application/dicom`` part per item."""
    body = b"".join(part_bytes(p.data if isinstance(p, Inst) else p) for p in parts)
    return body + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def chunked(body: bytes, size: int = 64 << 10) -> Iterator[bytes]:
    """``body`` as a generator: requests sends it with chunked transfer coding."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class Ref:
    sop_class: str
    sop_uid: str
    retrieve_url: str
    warning: int | None


@dataclass(frozen=True)
class Fail:
    sop_class: str
    sop_uid: str
    reason: int


@dataclass
class StowResult:
    """A STOW-RS response, decoded (JSON or XML), with what the PACS was asked."""

    status: int
    headers: Mapping[str, str]
    media_type: str
    retrieve_url: str | None = None
    stored: list[Ref] = field(default_factory=list)
    failed: list[Fail] = field(default_factory=list)
    error: dict[str, Any] | None = None

    @property
    def stored_uids(self) -> list[str]:
        return [r.sop_uid for r in self.stored]

    @property
    def failed_uids(self) -> list[str]:
        return [f.sop_uid for f in self.failed]

    @property
    def reasons(self) -> dict[str, int]:
        return {f.sop_uid: f.reason for f in self.failed}

    def normalized(self, base_url: str) -> tuple[Any, ...]:
        """Everything but the gateway's address: to compare two gateways' answers."""

        def strip(url: str | None) -> str | None:
            return None if url is None else url.replace(base_url, "<base>")

        return (
            self.status,
            strip(self.retrieve_url),
            tuple((r.sop_class, r.sop_uid, strip(r.retrieve_url), r.warning) for r in self.stored),
            tuple((f.sop_class, f.sop_uid, f.reason) for f in self.failed),
        )


def _first(item: Mapping[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def parse_json(body: Mapping[str, Any]) -> tuple[str | None, list[Ref], list[Fail]]:
    stored = [
        Ref(
            _first(i, SOP_CLASS) or "",
            _first(i, SOP_INSTANCE) or "",
            _first(i, RETRIEVE_URL) or "",
            _first(i, WARNING_REASON),
        )
        for i in body.get(REFERENCED_SEQ, {}).get("Value", [])
    ]
    failed = [
        Fail(_first(i, SOP_CLASS) or "", _first(i, SOP_INSTANCE) or "", _first(i, FAILURE_REASON))
        for i in body.get(FAILED_SEQ, {}).get("Value", [])
    ]
    return _first(body, RETRIEVE_URL), stored, failed


def xml_to_json(element: ET.Element) -> dict[str, Any]:
    """A NativeDicomModel element (or Item) back into the DICOM JSON model (subset)."""
    out: dict[str, Any] = {}
    for attr in element.findall(f"{NATIVE_NS}DicomAttribute"):
        vr = attr.get("vr", "")
        entry: dict[str, Any] = {"vr": vr}
        if vr == "SQ":
            items = sorted(attr.findall(f"{NATIVE_NS}Item"), key=lambda e: int(e.get("number", 0)))
            entry["Value"] = [xml_to_json(item) for item in items]
        else:
            values = sorted(
                attr.findall(f"{NATIVE_NS}Value"), key=lambda e: int(e.get("number", 0))
            )
            if values:
                conv = int if vr in ("US", "UL", "SS", "SL") else str
                entry["Value"] = [conv(v.text or "") for v in values]
        out[attr.get("tag", "")] = entry
    return out


def parse_response(response: requests.Response) -> StowResult:
    return parse_stow(response.status_code, response.headers, response.content)


def parse_stow(status: int, headers: Mapping[str, str], content: bytes) -> StowResult:
    """A STOW-RS answer (JSON, XML, or the gateway's JSON error) decoded."""
    lower = {k.lower(): v for k, v in headers.items()}
    media = lower.get("content-type", "").split(";")[0].strip()
    result = StowResult(status, lower, media)
    if not content:
        return result
    if media == DICOM_XML:
        root = ET.fromstring(content)
        assert root.tag == f"{NATIVE_NS}NativeDicomModel", root.tag
        body = xml_to_json(root)
    else:
        body = orjson.loads(content)
    if media == "application/json" and "error" in body:
        result.error = body
        return result
    result.retrieve_url, result.stored, result.failed = parse_json(body)
    return result


def split_retrieve_url(url: str) -> tuple[str, str, str, str]:
    """(base, study, series, instance) of ``{base}/studies/s/series/se/instances/i``."""
    m = re.fullmatch(r"(.*)/studies/([0-9.]+)/series/([0-9.]+)/instances/([0-9.]+)", url)
    assert m, f"not an instance RetrieveURL: {url}"
    return m.group(1), m.group(2), m.group(3), m.group(4)


# --------------------------------------------------------------------------- the PACS


class RecordingPacs:
    """What a scripted (pynetdicom) PACS received: the ``find`` the checks use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: SOP Instance UID -> (study, series) of every instance it answered success to.
        self.kept: dict[str, tuple[str, str]] = {}

    def find_instances(self, study_uid: str) -> dict[str, str]:
        with self.lock:
            return {sop: se for sop, (st, se) in self.kept.items() if st == study_uid}


def find_instances(pacs: Any, study_uid: str) -> dict[str, str]:
    """SOP Instance UID -> Series Instance UID of every instance of a study, as the
    PACS answers a C-FIND at IMAGE level (DCMTK findscu; the higher-level unique
    keys present, as dcmqrscp's strict hierarchy wants)."""
    if isinstance(pacs, RecordingPacs):
        return pacs.find_instances(study_uid)
    result = findscu(
        pacs.host,
        pacs.port,
        pacs.aet,
        {"StudyInstanceUID": study_uid, "SeriesInstanceUID": "", "SOPInstanceUID": ""},
        level="IMAGE",
    )
    status = result.final_status_text
    assert result.returncode == 0 and status in ("", "Success"), result.output[-2000:]
    return {str(m.SOPInstanceUID): str(m.SeriesInstanceUID) for m in result.matches}


def verify_in_pacs(
    pacs: Any,
    result: StowResult,
    *,
    absent: Iterable[Inst | tuple[str, str]] = (),
    confirmed: set[str] | None = None,
) -> None:
    """Every ReferencedSOPInstanceUID of ``result`` is in the PACS, under the
    study and series its RetrieveURL names; every ``absent`` instance is not.

    ``confirmed``: SOP Instance UIDs the PACS itself answered C-STORE success
    for (``dcmqrscp_confirmed``); one of those the PACS then lost is the PACS's
    fault, not a false claim of the gateway, and is let through."""
    by_study: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for ref in result.stored:
        _base, study, series, sop = split_retrieve_url(ref.retrieve_url)
        assert sop == ref.sop_uid, ref
        by_study[study].append((sop, series))
    missing: dict[str, list[str]] = defaultdict(list)
    for item in absent:
        study, sop = (item.study_uid, item.sop_uid) if isinstance(item, Inst) else item
        missing[study].append(sop)
    for study in by_study.keys() | missing.keys():
        found = find_instances(pacs, study)
        for sop, series in by_study.get(study, []):
            if sop not in found and confirmed is not None and sop in confirmed:
                continue
            assert sop in found, f"{sop} reported stored but the PACS does not have it"
            assert found[sop] == series, f"{sop}: PACS has series {found[sop]}, not {series}"
        for sop in missing.get(study, []):
            assert sop not in found, f"{sop} is in the PACS but was not expected to be stored"


def dcmqrscp_confirmed(log_path: Path) -> set[str]:
    """SOP Instance UIDs dcmqrscp answered C-STORE with success or a warning, from
    its verbose log (each C-STORE-RSP is logged as an OUTGOING DIMSE MESSAGE)."""
    text = log_path.read_text(encoding="utf-8", errors="replace")
    confirmed = set()
    for block in text.split("OUTGOING DIMSE MESSAGE")[1:]:
        block = block.split("END DIMSE MESSAGE")[0]
        if "C-STORE RSP" not in block:
            continue
        uid = re.search(r"Affected SOP Instance UID\s*:\s*(\S+)", block)
        status = re.search(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", block)
        if uid and status and (int(status.group(1), 16) == 0 or status.group(1)[0] in "bB"):
            confirmed.add(uid.group(1))
    return confirmed


def retrieve(pacs: Any, inst: Inst, out_dir: Path) -> Dataset:
    """One instance back from the PACS with DCMTK getscu (uncompressed syntaxes)."""
    keys = {
        "StudyInstanceUID": inst.study_uid,
        "SeriesInstanceUID": inst.series_uid,
        "SOPInstanceUID": inst.sop_uid,
    }
    proc = getscu(pacs.host, pacs.port, pacs.aet, keys, out_dir, level="IMAGE")
    files = [p for p in out_dir.iterdir() if p.is_file()]
    for path in files:
        ds = pydicom.dcmread(path)
        if ds.SOPInstanceUID == inst.sop_uid:
            return ds
    raise AssertionError(f"getscu did not retrieve {inst.sop_uid}:\n{proc.stdout}{proc.stderr}")


def wait_until(predicate: Any, timeout: float = 10.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


# --------------------------------------------------------------------------- client


@dataclass
class StowClient:
    """Posts STOW-RS requests to one gateway and checks each answer against its PACS."""

    gateway: GatewayServer
    pacs: Any

    def url(self, study: str | None = None) -> str:
        return self.gateway.url + "/studies" + (f"/{study}" if study else "")

    def post(
        self,
        data: Any,
        *,
        study: str | None = None,
        part_type: str = DICOM,
        headers: Mapping[str, str] | None = None,
        absent: Iterable[Inst | tuple[str, str]] = (),
        verify: bool = True,
    ) -> StowResult:
        """POST ``data``; unless ``verify=False`` (the PACS is down), every
        ReferencedSOPInstanceUID is then looked up in the PACS, and every
        ``absent`` instance must not be found there."""
        all_headers = {"Content-Type": content_type(part_type)}
        all_headers.update(headers or {})
        response = requests.post(self.url(study), data=data, headers=all_headers, timeout=120)
        result = parse_response(response)
        if verify:
            verify_in_pacs(self.pacs, result, absent=absent)
        return result


# --------------------------------------------------------------------------- scripted PACS


@dataclass(frozen=True)
class Received:
    sop_uid: str
    abstract_syntax: str
    transfer_syntax: str
    dataset: bytes


class StorePeer(ScriptedPeer):
    """A pynetdicom Storage SCP that answers each instance with a chosen status.

    ``statuses`` maps SOP Instance UID -> C-STORE status (0 for the others);
    ``delay`` seconds are spent in every C-STORE (or, a mapping, in those of the
    SOP Instance UIDs it names), so that instances stored at the same time
    overlap and ``max_in_flight`` shows how many did.
    """

    def __init__(
        self,
        statuses: Mapping[str, int] | None = None,
        *,
        delay: float | Mapping[str, float] = 0.0,
        sop_classes: Sequence[str] = (CT_IMAGE, MR_IMAGE, SC_IMAGE),
        transfer_syntaxes: Sequence[str] | None = None,
    ) -> None:
        super().__init__("STOREPEER", [(evt.EVT_C_STORE, self._on_store)], contexts=[])
        self.statuses = dict(statuses or {})
        self.delay = delay
        self.sop_classes = list(sop_classes)
        self.transfer_syntaxes = list(transfer_syntaxes) if transfer_syntaxes else None
        self.record = RecordingPacs()
        self.received: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def configure(self, ae: Any) -> None:
        for uid in self.sop_classes:
            ae.add_supported_context(uid, self.transfer_syntaxes)
        ae.maximum_associations = 16

    def _on_store(self, event: Any) -> Dataset:
        request = event.request
        sop = str(request.AffectedSOPInstanceUID)
        with self.record.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.delay.get(sop, 0.0) if isinstance(self.delay, Mapping) else self.delay
            if delay:
                time.sleep(delay)
            raw = request.DataSet.getvalue()
            ds = event.dataset
            status = self.statuses.get(sop, 0)
            with self.record.lock:
                self.received.append(
                    Received(
                        sop,
                        str(event.context.abstract_syntax),
                        str(event.context.transfer_syntax),
                        raw,
                    )
                )
                if status == 0 or 0xB000 <= status <= 0xBFFF:
                    self.record.kept[sop] = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
        finally:
            with self.record.lock:
                self.in_flight -= 1
        rsp = Dataset()
        rsp.Status = status
        if status and not 0xB000 <= status <= 0xBFFF:
            rsp.ErrorComment = "injected by StorePeer"
        return rsp


# --------------------------------------------------------------------------- raw HTTP


@dataclass
class RawResponse:
    interim: list[bytes]
    status: int
    headers: dict[str, str]
    body: bytes


def _read_head(stream: Any) -> bytes:
    lines = []
    while True:
        line = stream.readline()
        if not line:
            raise ConnectionError("connection closed inside a response head")
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def _headers(head: bytes) -> dict[str, str]:
    out = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            out[name.strip().lower()] = value.strip()
    return out


def post_expect_continue(
    host: str,
    port: int,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    wait: float = 5.0,
) -> RawResponse:
    """POST with ``Expect: 100-continue`` over a bare socket: the head goes out,
    then nothing until the server answered; the body is sent only after an
    interim 100.  A final status instead of the 100 is returned as it is."""
    sock = socket.create_connection((host, port), timeout=wait)
    try:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        head += f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode("latin-1"))
        stream = sock.makefile("rb")
        first = _read_head(stream)  # a socket timeout here fails the test
        interim: list[bytes] = []
        if _status(first) == 100:
            interim.append(first)
            sock.settimeout(60)
            sock.sendall(body)
            first = _read_head(stream)
        length = int(_headers(first).get("content-length", "0"))
        return RawResponse(interim, _status(first), _headers(first), stream.read(length))
    finally:
        sock.close()
