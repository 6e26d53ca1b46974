"""Helpers for the interoperability tests: the gateway as the clients see it, the
Node runner of the JavaScript client, the seeded source files, new instances to
store, and DCMTK's view of a PACS.

Expectations come from the files the session PACS were seeded with (read with
pydicom), from instances built here, or from the PACS itself through DCMTK's
findscu/getscu -- never from the gateway's code.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from gateway.web.app import create_app
from tests.peers import DcmqrscpServer, OrthancServer
from tests.peers.dcmtk import findscu, getscu
from tests.peers.gateway import GatewayServer
from tests.web.stow_support import new_dataset

Pacs = OrthancServer | DcmqrscpServer
GatewayFactory = Callable[..., GatewayServer]

#: tests/interop/js: the Node project that drives the JavaScript dicomweb-client.
JS_DIR = Path(__file__).resolve().parent / "js"

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Transfer syntaxes whose Pixel Data is stored natively (not encapsulated).
NATIVE = {ExplicitVRLittleEndian, "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"}


# --------------------------------------------------------------------------- gateway


class PublicGateway(GatewayServer):
    """A :class:`GatewayServer` whose ``public_url`` is its own address.

    The PyPI dicomweb-client (0.61) sends ``Host: 127.0.0.1`` without the port
    on every GET and on small POSTs (it copies the host name of its base URL
    into the header; RFC 9110 7.2 wants the port when it is not the default).
    The gateway builds RetrieveURL and BulkDataURI from the Host header when no
    ``public_url`` is configured (docs/qido.md), so without this those URLs
    point at port 80.  A deployment on a non-default port sets ``public_url``;
    the tests do the same.  ``test_urls_follow_the_host_header_the_client_sends``
    shows the behaviour without it.
    """

    def __init__(self, pacs: Any, **settings: Any) -> None:
        super().__init__(pacs, **settings)
        if not self.settings.public_url:
            self.settings = dataclasses.replace(self.settings, public_url=self.root)
            self.app = create_app(self.settings)


# --------------------------------------------------------------------------- Node


class NodeClientError(AssertionError):
    """A client operation failed; carries its report (status, body, requests sent)."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report
        super().__init__(f"JS dicomweb-client failed: {json.dumps(report)[:3000]}")


@dataclass
class NodeClient:
    """Runs tests/interop/js/client.mjs: ``node client.mjs <url> <operation> <options>``.

    Node's start-up (0.2-0.6 s) dominates one call, so tests that make many
    calls use :meth:`batch` (one process for a list of operations).
    """

    node: str

    def _node(self, *args: str) -> Any:
        proc = subprocess.run(
            [self.node, str(JS_DIR / "client.mjs"), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=JS_DIR,
            check=False,
        )
        try:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise AssertionError(
                f"client.mjs exited {proc.returncode} without a report\n"
                f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
            ) from None

    @staticmethod
    def _checked(report: dict[str, Any]) -> dict[str, Any]:
        if not report.get("ok"):
            raise NodeClientError(report)
        return report

    def run(self, url: str, operation: str, **options: Any) -> dict[str, Any]:
        """The client's JSON report (``ok``, ``requests``, ``result``); raises
        :class:`NodeClientError` when the operation failed."""
        return self._checked(self._node(url, operation, json.dumps(options)))

    def result(self, url: str, operation: str, **options: Any) -> Any:
        return self.run(url, operation, **options)["result"]

    def batch(
        self, url: str, calls: list[tuple[str, dict[str, Any]]], *, check: bool = True
    ) -> list[dict[str, Any]]:
        """One report per ``(operation, options)``, all run by one Node process."""
        payload = json.dumps([{"operation": op, "options": opts} for op, opts in calls])
        reports: list[dict[str, Any]] = self._node(url, "batch", payload)["reports"]
        assert len(reports) == len(calls)
        return [self._checked(r) for r in reports] if check else reports


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """One file a session PACS was seeded with."""

    path: Path
    study_uid: str
    series_uid: str
    sop_uid: str

    @property
    def dataset(self) -> Dataset:
        return read(self.path)


def sources(pacs: Any) -> dict[str, Source]:
    """SOP Instance UID -> source file of everything the session ``pacs`` was seeded with."""
    out: dict[str, Source] = {}
    for item in [*pacs.manifest.instances, *pacs.charset_files]:
        out[item.sop_uid] = Source(item.path, item.study_uid, item.series_uid, item.sop_uid)
    return out


def by_series(pacs: Any) -> dict[str, list[Source]]:
    out: dict[str, list[Source]] = {}
    for src in sources(pacs).values():
        out.setdefault(src.series_uid, []).append(src)
    return out


def by_study(pacs: Any) -> dict[str, list[Source]]:
    out: dict[str, list[Source]] = {}
    for src in sources(pacs).values():
        out.setdefault(src.study_uid, []).append(src)
    return out


@functools.cache
def read(path: Path) -> Dataset:
    """The source file, read once (callers must not modify it)."""
    return pydicom.dcmread(path)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def frame_count(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def native_frames(ds: Dataset) -> list[bytes]:
    """The frames of native Pixel Data, as they lie in the file."""
    assert ds.file_meta.TransferSyntaxUID in NATIVE, ds.file_meta.TransferSyntaxUID
    n = frame_count(ds)
    size = len(ds.PixelData) // n
    assert size * n == len(ds.PixelData)
    return [ds.PixelData[i * size : (i + 1) * size] for i in range(n)]


def encapsulated_frames(ds: Dataset) -> list[bytes]:
    """The codestream of each frame of encapsulated Pixel Data."""
    return list(generate_frames(ds.PixelData, number_of_frames=frame_count(ds)))


# --------------------------------------------------------------------------- metadata


#: The gateway sends DICOM JSON in UTF-8 whatever the PACS stored (docs/qido.md).
UTF8 = "ISO_IR 192"


def metadata_differences(got: Dataset, source: Path) -> list[str]:
    """How ``got`` (a dataset rebuilt from WADO-RS metadata, bulk data fetched)
    differs from the source file, apart from what PS3.18 Annex F prescribes:

    * group lengths (gggg,0000) are not in DICOM JSON (F.2.3);
    * Specific Character Set becomes ISO_IR 192, the JSON being UTF-8;
    * a private element the gateway had no VR for is UN with its value bytes as
      the PACS sent them (the source file, Implicit VR, has the same bytes).
    """
    want = read(source)
    raw = pydicom.dcmread(source)  # its elements stay raw until they are accessed
    out: list[str] = []
    for elem in want:
        tag = elem.tag
        if tag.element == 0:
            continue
        name = elem.keyword or str(tag)
        if tag not in got:
            out.append(f"{name}: missing")
            continue
        value = got[tag].value
        if tag == 0x00080005:
            if elem.value and value != UTF8:
                out.append(f"SpecificCharacterSet: {value!r}, expected {UTF8!r}")
            continue
        if got[tag].VR == "UN" and elem.VR != "UN":
            original = raw.get_item(tag).value
            if bytes(value or b"") != bytes(original or b""):
                out.append(f"{name} (UN): {value!r:.80} != {original!r:.80}")
            continue
        if isinstance(value, bytearray | memoryview):
            value = bytes(value)
        if value != elem.value:
            out.append(f"{name}: {value!r:.120} != {elem.value!r:.120}")
    for elem in got:
        if elem.tag not in want:
            out.append(f"{elem.keyword or elem.tag}: not in the source")
    return out


# --------------------------------------------------------------------------- new instances


@dataclass(frozen=True)
class NewInstance:
    """An instance built for a STOW test (fresh UIDs) and its Part 10 bytes."""

    dataset: Dataset
    data: bytes

    @property
    def sop_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def study_uid(self) -> str:
        return str(self.dataset.StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        return str(self.dataset.SeriesInstanceUID)

    @property
    def transfer_syntax(self) -> str:
        return str(self.dataset.file_meta.TransferSyntaxUID)


def _part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def new_ct(
    study_uid: str, series_uid: str, number: int, *, rows: int = 64, cols: int = 48
) -> NewInstance:
    """A small CT image (12-bit noise, non-square) with a fresh SOP Instance UID: the
    STOW tests' dataset, with a UTF-8 character set and pixels seeded by its UID."""
    ds = new_dataset(
        study_uid, series_uid, number=number, rows=rows, cols=cols, patient_id="INTEROP"
    )
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Interop^Test"
    ds.StudyDate = "20240601"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "INTEROP1"
    ds.StudyDescription = "interop STOW"
    rng = np.random.default_rng(int(str(ds.SOPInstanceUID).replace(".", "")[-12:]))
    ds.PixelData = rng.integers(0, 4096, size=(rows, cols), dtype="<u2").tobytes()
    return NewInstance(ds, _part10(ds))


def new_series(count: int, study_uid: str | None = None) -> list[NewInstance]:
    study, series = study_uid or generate_uid(), generate_uid()
    return [new_ct(study, series, n + 1) for n in range(count)]


def from_testfile(name: str, study_uid: str | None = None) -> NewInstance:
    """A pydicom test file (compressed Pixel Data untouched) with fresh UIDs."""
    path = get_testdata_file(name)
    assert isinstance(path, str), name
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = UID(generate_uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = UID(study_uid or generate_uid())
    ds.SeriesInstanceUID = UID(generate_uid())
    ds.PatientID = "INTEROP"
    return NewInstance(ds, _part10(ds))


# --------------------------------------------------------------------------- the PACS itself


def find_in_pacs(pacs: Any, study_uid: str) -> dict[str, str]:
    """SOP Instance UID -> Series Instance UID of a study's instances, as the PACS
    answers DCMTK's findscu at IMAGE level (not through the gateway)."""
    result = findscu(
        pacs.host,
        pacs.port,
        pacs.aet,
        {"StudyInstanceUID": study_uid, "SeriesInstanceUID": "", "SOPInstanceUID": ""},
        level="IMAGE",
    )
    assert result.returncode == 0, result.output[-2000:]
    assert result.final_status_text in ("", "Success"), result.output[-2000:]
    return {str(m.SOPInstanceUID): str(m.SeriesInstanceUID) for m in result.matches}


#: getscu's storage SCP flags: accept these compressed syntaxes too (Orthanc sends
#: what it stores, and answers C000 when the C-GET SCU cannot take it).
def get_from_pacs(
    pacs: Any, study_uid: str, out_dir: Path, *, accept: Iterable[str] = ()
) -> dict[str, Dataset]:
    """Every instance of a study as DCMTK's getscu retrieves it from the PACS
    (C-GET, study level), by SOP Instance UID.  ``accept``: compressed transfer
    syntaxes getscu should also accept (one preferred syntax per run)."""
    preferred = list(accept)
    assert len(preferred) <= 1, "getscu prefers one syntax per run"
    proc = getscu(
        pacs.host,
        pacs.port,
        pacs.aet,
        {"StudyInstanceUID": study_uid},
        out_dir,
        prefer=preferred[0] if preferred else None,
    )
    got: dict[str, Dataset] = {}
    for path in out_dir.iterdir():
        if path.is_file():
            ds = pydicom.dcmread(path)
            got[str(ds.SOPInstanceUID)] = ds
    assert got or proc.returncode == 0, proc.stdout + proc.stderr
    return got


def decoded(ds: Dataset) -> np.ndarray[Any, Any]:
    """The pixels of ``ds`` decoded by pydicom (its own or pylibjpeg plugins)."""
    return np.asarray(ds.pixel_array)


def uids(items: Sequence[dict[str, Any]], tag: str) -> list[str]:
    """The first value of ``tag`` of each DICOM JSON object."""
    return [str(i[tag]["Value"][0]) for i in items if i.get(tag, {}).get("Value")]


def value(item: dict[str, Any], tag: str) -> Any:
    """The first value of ``tag`` in a DICOM JSON object, or None."""
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None
