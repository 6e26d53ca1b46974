"""Helpers for the WADO-RS end-to-end tests (tests/web/test_wado_pacs.py).

Nothing here comes from the gateway's own code: multipart bodies are checked
byte by byte and split with requests_toolbelt, datasets are compared with
pydicom, compressed pixels are decoded with pydicom's plugins or imagecodecs,
and the expected DICOM JSON is pydicom's ``to_json_dict`` with exactly the
corrections that ``gateway/dicom/dicom_json.py`` documents (its rules 1-12).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import math
import re
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import imagecodecs  # type: ignore[import-untyped]
import numpy as np
import pydicom
import requests
from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.encaps import generate_frames
from pydicom.filereader import read_dataset
from pydicom.pixels import get_decoder
from pynetdicom import evt
from requests_toolbelt.multipart.decoder import MultipartDecoder  # type: ignore[import-untyped]

from tests.peers import ScriptedPeer
from tests.peers.gateway import GatewayServer

EXPLICIT_LE = "1.2.840.10008.1.2.1"
RLE = "1.2.840.10008.1.2.5"
J2K = "1.2.840.10008.1.2.4.90"
HTJ2K = "1.2.840.10008.1.2.4.201"
JPEG_LS = "1.2.840.10008.1.2.4.80"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
NATIVE = {EXPLICIT_LE, "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"}

STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"

# RFC 2046 5.1.1: bchars, 1-70 of them, not ending in a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


# --------------------------------------------------------------------------- multipart


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]  # names lower-cased
    content: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def transfer_syntax(self) -> str | None:
        return media_params(self.content_type)[1].get("transfer-syntax")

    def dataset(self) -> Dataset:
        return pydicom.dcmread(io.BytesIO(self.content))


def media_params(value: str) -> tuple[str, dict[str, str]]:
    """(media type lower-cased, parameters with names lower-cased and values unquoted)."""
    pieces = [p.strip() for p in value.split(";")]
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, _, val = piece.partition("=")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        params[name.strip().lower()] = val
    return pieces[0].lower(), params


def multipart_parts(response: requests.Response, part_type: str) -> list[Part]:
    """The parts of a 200 multipart/related response, checking WADO-08 on the way."""
    assert response.status_code == 200, (response.status_code, response.text[:500])
    ctype = response.headers["Content-Type"]
    media, params = media_params(ctype)
    assert media == "multipart/related", ctype
    assert params.get("type", "").lower() == part_type, ctype
    boundary = params.get("boundary", "")
    assert _BOUNDARY.fullmatch(boundary), f"illegal boundary {boundary!r}"
    body = response.content
    delimiter = b"--" + boundary.encode("latin-1")
    assert body.startswith(delimiter + b"\r\n"), body[:100]
    closing = b"\r\n" + delimiter + b"--"
    assert body.endswith((closing, closing + b"\r\n")), f"no close delimiter: {body[-100:]!r}"
    parts = [
        Part(
            {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in p.headers.items()},
            p.content,
        )
        for p in MultipartDecoder(body, ctype).parts
    ]
    # n parts: n-1 inner delimiters and the close delimiter, each after a CRLF.
    assert body.count(b"\r\n" + delimiter) == len(parts), "boundary inside a part"
    for part in parts:
        assert delimiter not in part.content, "boundary inside a part"
        assert media_params(part.content_type)[0] == part_type, part.headers
    return parts


def read_raw_body(url: str, timeout: float = 20) -> tuple[bytes, bool]:
    """(the de-chunked body as far as the server sent it, whether it ended cleanly
    with the last chunk) of a GET that answered 200."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=timeout)
    try:
        conn.request("GET", u.path + (f"?{u.query}" if u.query else ""))
        response = conn.getresponse()
        assert response.status == 200, response.status
        chunks: list[bytes] = []
        try:
            while chunk := response.read1(65536):
                chunks.append(chunk)
        except (http.client.IncompleteRead, ConnectionError) as exc:
            chunks.append(getattr(exc, "partial", b"") or b"")
            return b"".join(chunks), False
        return b"".join(chunks), True
    finally:
        conn.close()


# --------------------------------------------------------------------------- datasets


def dataset_differences(got: Dataset, want: Dataset) -> list[str]:
    """Every element that differs between two datasets (File Meta not included).

    Group Length elements (gggg,0000) are skipped: they are retired, and DCMTK-based
    PACS recompute them on storage (pydicom's chrJapMulti.dcm has a wrong one).
    """
    out = []
    for elem in want:
        if elem.tag.element == 0:
            continue
        if elem.tag not in got:
            out.append(f"{elem.tag} {elem.keyword} missing")
        elif got[elem.tag] != elem:
            out.append(f"{elem.tag} {elem.keyword}: got {got[elem.tag]!r:.120} want {elem!r:.120}")
    out += [f"{e.tag} {e.keyword} extra" for e in got if e.tag not in want and e.tag.element]
    return out


def differing_keywords(got: Dataset, want: Dataset) -> set[str]:
    """The keywords (or tags) of the elements ``dataset_differences`` reports."""
    tags = {e.tag for e in want if e.tag.element} ^ {e.tag for e in got if e.tag.element}
    tags |= {e.tag for e in want if e.tag.element and e.tag in got and got[e.tag] != e}
    return {keyword_for_tag(t) or str(t) for t in tags}


def frame_count(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def compressed_frames(ds: Dataset) -> list[bytes]:
    return list(generate_frames(ds.PixelData, number_of_frames=frame_count(ds)))


def decode_codestream(frame: bytes, syntax: str, ds: Dataset) -> np.ndarray:
    """One compressed frame decoded with imagecodecs, in the dataset's sample type."""
    decoders: dict[str, Callable[[bytes], np.ndarray]] = {
        J2K: imagecodecs.jpeg2k_decode,
        HTJ2K: imagecodecs.htj2k_decode,
        JPEG_LS: imagecodecs.jpegls_decode,
    }
    decoded = np.asarray(decoders[syntax](frame))
    if int(ds.get("PixelRepresentation", 0)) == 1 and decoded.dtype.kind == "u":
        decoded = decoded.view(decoded.dtype.str.replace("u", "i"))
    return decoded


def pixels(ds: Dataset) -> np.ndarray:
    """All frames, decoded: pydicom where it has a decoder, imagecodecs otherwise."""
    syntax = str(ds.file_meta.TransferSyntaxUID)
    if syntax in NATIVE or get_decoder(syntax).is_available:
        return np.asarray(ds.pixel_array)
    frames = [decode_codestream(f, syntax, ds) for f in compressed_frames(ds)]
    return np.stack(frames).reshape(pydicom_shape(ds))


def pydicom_shape(ds: Dataset) -> tuple[int, ...]:
    shape: tuple[int, ...] = (int(ds.Rows), int(ds.Columns))
    if int(ds.SamplesPerPixel) > 1:
        shape += (int(ds.SamplesPerPixel),)
    if frame_count(ds) > 1:
        shape = (frame_count(ds), *shape)
    return shape


# --------------------------------------------------------------------------- DICOM JSON


_MULTI_STRING_VRS = {"AE", "AS", "CS", "DA", "DT", "TM", "UI", "SH", "LO", "UC", "DS", "IS"}


def normalise_oracle(obj: dict[str, Any]) -> dict[str, Any]:
    """pydicom's to_json_dict with the documented corrections of dicom_json.py
    (little endian input, every binary value inline)."""
    out: dict[str, Any] = {}
    for key, attr in obj.items():
        if key.endswith("0000"):  # rule 1
            continue
        attr = dict(attr)
        vr = attr["vr"]
        value = attr.get("Value")
        if key == "00080005" and value and any(value):  # rule 8
            attr["Value"] = ["ISO_IR 192"]
        elif vr == "SQ":  # rule 7
            if value:
                attr["Value"] = [normalise_oracle(i) for i in value]
            else:
                attr.pop("Value", None)
        elif vr == "PN" and value is not None:  # rules 5, 2
            attr["Value"] = [{g: s for g, s in name.items() if s} or None for name in value]
        elif vr in _MULTI_STRING_VRS and value is not None and len(value) > 1:  # 12, 2
            if vr in ("AE", "CS"):
                value = [v.strip(" ") for v in value]
            elif vr in ("AS", "DA", "DT", "TM", "UI"):
                value = [v.rstrip(" \0") for v in value]
            attr["Value"] = [v if v != "" else None for v in value]
        if vr in ("FL", "FD", "DS") and attr.get("Value"):  # rule 4
            attr["Value"] = [v if v is None or math.isfinite(v) else None for v in attr["Value"]]
        out[key] = attr
    return out


def json_differences(ours: Any, oracle: Any, path: str = "") -> Iterator[str]:
    if isinstance(ours, dict) and isinstance(oracle, dict):
        for key in sorted(set(ours) | set(oracle)):
            if ours.get(key) != oracle.get(key):
                yield from json_differences(ours.get(key), oracle.get(key), f"{path}/{key}")
    elif isinstance(ours, list) and isinstance(oracle, list) and len(ours) == len(oracle):
        for i, (a, b) in enumerate(zip(ours, oracle, strict=True)):
            yield from json_differences(a, b, f"{path}[{i}]")
    elif ours != oracle:
        yield f"{path}: gateway {str(ours)[:150]} pydicom {str(oracle)[:150]}"


def element_at(ds: Dataset, path: str) -> Any:
    """The element at a bulk data path ``tag[/item/tag...]`` (hex tags, 0-based items)."""
    steps = path.strip("/").split("/")
    current: Any = ds
    elem: Any = None
    for i, step in enumerate(steps):
        if i % 2 == 0:
            elem = current[int(step, 16)]
        else:
            current = elem.value[int(step)]
    return elem


def bulk_uris(obj: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(JSON path, BulkDataURI) of every bulk value in a DICOM JSON object."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "BulkDataURI":
                yield path, value
            else:
                yield from bulk_uris(value, f"{path}/{key}")
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from bulk_uris(item, f"{path}[{i}]")


def replace_bulk(obj: Any, oracle: Any) -> Any:
    """``oracle`` with InlineBinary swapped for the BulkDataURI wherever ``obj`` has one."""
    if isinstance(obj, dict) and isinstance(oracle, dict):
        if "BulkDataURI" in obj and "InlineBinary" in oracle:
            out = {k: v for k, v in oracle.items() if k != "InlineBinary"}
            out["BulkDataURI"] = obj["BulkDataURI"]
            return out
        return {k: replace_bulk(obj.get(k), v) for k, v in oracle.items()}
    if isinstance(obj, list) and isinstance(oracle, list) and len(obj) == len(oracle):
        return [replace_bulk(a, b) for a, b in zip(obj, oracle, strict=True)]
    return oracle


# --------------------------------------------------------------------------- counting


@dataclass
class PacsCalls:
    """Counts the C-FIND and C-GET operations the gateway starts on its (default)
    PACS, by wrapping ``PacsClient.find``/``get`` on the running app.

    ``hold_get_until_finds``: a C-GET waits (at most 10 s) before it starts until
    that many IMAGE-level C-FINDs (each request's last before its C-GET; a STUDY-level
    one for the SOP classes may come first) have completed, so that requests which are concurrent by
    construction are also concurrent on the wire, whatever the PACS's latency.
    ``queries`` holds each C-FIND's identifier, decoded with pydicom.
    """

    find: int = 0
    finds_done: int = 0
    get: int = 0
    hold_get_until_finds: int = 0
    queries: list[Dataset] = field(default_factory=list)

    def levels(self) -> list[str]:
        return [str(q.QueryRetrieveLevel) for q in self.queries]

    @classmethod
    def install(cls, gw: GatewayServer, hold_get_until_finds: int = 0) -> PacsCalls:
        client = gw.app.state.pacs.get()
        calls = cls(hold_get_until_finds=hold_get_until_finds)
        real_find, real_get = client.find, client.get

        async def find(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            calls.find += 1
            query = read_dataset(io.BytesIO(args[0](EXPLICIT_LE)), False, True)
            calls.queries.append(query)
            async with contextlib.aclosing(real_find(*args, **kwargs)) as matches:
                async for match in matches:
                    yield match
            if query.QueryRetrieveLevel == "IMAGE":
                calls.finds_done += 1

        async def get(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            calls.get += 1
            deadline = time.monotonic() + 10
            while calls.finds_done < calls.hold_get_until_finds and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            async with contextlib.aclosing(real_get(*args, **kwargs)) as instances:
                async for instance in instances:
                    yield instance

        client.find, client.get = find, get
        return calls


# --------------------------------------------------------------------------- scripted PACS


def _match(ds: Dataset, level: str = "IMAGE") -> Dataset:
    out = Dataset()
    out.QueryRetrieveLevel = level
    out.StudyInstanceUID = ds.StudyInstanceUID
    out.SeriesInstanceUID = ds.SeriesInstanceUID
    out.SOPInstanceUID = ds.SOPInstanceUID
    out.SOPClassUID = ds.SOPClassUID
    return out


@dataclass
class GetScript:
    """What the scripted PACS does on its n-th C-GET: send ``send`` instances (None:
    all), then abort the association (``abort``) or finish normally; ``delay``
    seconds before each instance."""

    send: int | None = None
    abort: bool = False
    delay: float = 0.0


class RetrievePeer(ScriptedPeer):
    """A pynetdicom PACS holding ``files`` (one series) that answers C-FIND and
    C-GET; each C-GET follows the next ``GetScript`` (the last repeats), the n-th
    IMAGE-level C-FIND is answered after ``find_delays[n]`` seconds.

    A STUDY-level C-FIND is answered as ``study_classes`` says: None, one match
    with SOPClassesInStudy empty (as dcmqrscp and pynetdicom's qrscp); a list,
    those values (which need not be the instances' classes, nor UIDs); an int,
    that failure status. ``image_find_status``: every IMAGE-level C-FIND (the
    first ``image_find_failing`` ones if given) answers that status and nothing
    else. ``get_by_lowest_key``: a C-GET selects by its level's UID alone, ignoring
    the study (and series) UID it was given.
    It records the C-GETs it saw (``gets``), the instances each one sent (``sent``),
    the level of each C-FIND (``levels``), the number of IMAGE-level ones
    (``finds``) and the keys each of those asked for (``image_keys``), whether a
    C-CANCEL (``cancelled``) or an A-ABORT from either side (``aborted``) was seen,
    and when a C-GET handler has ended (``get_finished``)."""

    def __init__(
        self,
        files: Sequence[Path],
        scripts: Sequence[GetScript],
        *,
        find_delays: Sequence[float] = (),
        study_classes: Sequence[str] | int | None = None,
        image_find_status: int | None = None,
        image_find_failing: int | None = None,
        get_by_lowest_key: bool = False,
    ) -> None:
        self.datasets = [pydicom.dcmread(f) for f in files]
        self.scripts = list(scripts)
        self.find_delays = list(find_delays)
        self.study_classes = study_classes
        self.image_find_status = image_find_status
        self.image_find_failing = image_find_failing
        self.get_by_lowest_key = get_by_lowest_key
        #: "find answered" (an IMAGE-level C-FIND's last response) and "get started",
        #: in the order they happened.
        self.events: list[str] = []
        self.finds = 0
        self.levels: list[str] = []
        self.image_keys: list[set[str]] = []
        self.gets = 0
        self.sent: list[int] = []
        self.cancelled = threading.Event()
        self.aborted = threading.Event()
        self.get_finished = threading.Event()
        super().__init__(
            "RETRIEVER",
            [
                (evt.EVT_C_FIND, self._on_find),
                (evt.EVT_C_GET, self._on_get),
                (evt.EVT_ABORTED, lambda event: self.aborted.set()),
            ],
        )
        self.contexts.append(STUDY_ROOT_GET)
        self.ae.add_supported_context(STUDY_ROOT_GET)

    def configure(self, ae: Any) -> None:
        for uid in {str(ds.SOPClassUID) for ds in self.datasets}:
            ae.add_supported_context(uid, EXPLICIT_LE, scp_role=True, scu_role=False)

    def _selected(self, identifier: Dataset, lowest_key_only: bool = False) -> list[Dataset]:
        keys = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
        if lowest_key_only:  # as a PACS that looks a retrieve up by its level's UID alone
            keys = [k for k in keys if identifier.get(k)][-1:]
        wanted = {key: str(identifier.get(key, "") or "") for key in keys}
        return [
            ds
            for ds in self.datasets
            if all(not v or str(ds.get(k)) == v for k, v in wanted.items())
        ]

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        identifier = event.identifier
        level = str(identifier.get("QueryRetrieveLevel", ""))
        with self._lock:
            self.levels.append(level)
            if level == "STUDY":
                n = -1
            else:
                n, self.finds = self.finds, self.finds + 1
                self.image_keys.append({e.keyword for e in identifier})
        if level == "STUDY":
            yield from self._study_match(identifier)
            return
        if n < len(self.find_delays):
            time.sleep(self.find_delays[n])
        failing = self.image_find_failing
        if self.image_find_status is not None and (failing is None or n < failing):
            self.events.append("find answered")
            yield self.image_find_status, None
            return
        matches = self._selected(identifier)
        for ds in matches[:-1]:
            yield 0xFF00, _match(ds)
        self.events.append("find answered")  # before the last match: pynetdicom sends it now
        for ds in matches[-1:]:
            yield 0xFF00, _match(ds)
        yield 0x0000, None

    def _study_match(self, identifier: Dataset) -> Iterator[tuple[int, Dataset | None]]:
        answer = self.study_classes
        if isinstance(answer, int):
            yield answer, None
            return
        if self._selected(identifier):
            out = Dataset()
            out.QueryRetrieveLevel = "STUDY"
            out.StudyInstanceUID = identifier.StudyInstanceUID
            out.SOPClassesInStudy = list(answer or [])
            yield 0xFF00, out
        yield 0x0000, None

    def _on_get(self, event: Any) -> Iterator[Any]:
        script = self.scripts[min(self.gets, len(self.scripts) - 1)]
        self.gets += 1
        self.events.append("get started")
        self.sent.append(0)
        selected = self._selected(event.identifier, self.get_by_lowest_key)
        yield len(selected)
        try:
            for n, ds in enumerate(selected):
                if script.send is not None and n >= script.send:
                    if script.abort:
                        time.sleep(0.2)  # let the last C-STORE reach the gateway
                        event.assoc.abort()
                        yield 0xFF00, None  # never sent: the association is gone
                        return
                    break
                if script.delay:
                    deadline = time.monotonic() + script.delay
                    while time.monotonic() < deadline and not event.is_cancelled:
                        time.sleep(0.02)
                if event.is_cancelled:
                    self.cancelled.set()
                    yield 0xFE00, None
                    return
                self.sent[-1] += 1
                yield 0xFF00, ds
            yield 0x0000, None
        finally:
            self.get_finished.set()


def raw_get_then_hang_up(
    url: str,
    read_bytes: int,
    timeout: float = 10,
    before_close: Callable[[], object] | None = None,
) -> bytes:
    """Send a GET, read ``read_bytes`` of the response (headers included), close
    (after ``before_close()``, to hang up at a chosen moment)."""
    u = urlsplit(url)
    assert u.hostname is not None and u.port is not None
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as sock:
        request = f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nAccept: */*\r\n\r\n"
        sock.sendall(request.encode())
        got = b""
        while len(got) < read_bytes:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        if before_close is not None:
            before_close()
        # linger 0: close() resets the connection, as a killed browser tab would
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return got


def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds or ``seconds`` pass; its last value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
