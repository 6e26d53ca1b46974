"""WADO-RS end to end: the real gateway over HTTP in front of Orthanc and dcmqrscp.

Checklist C (WADO-01..09) and G (DICOM JSON) of /work/shared/PS3.18-CHECKLIST.md,
and the instance cache of issue 3 (item 4).  Expectations come from the files
the PACS were seeded with (``pacs.manifest``, ``pacs.charset_files``) read with
pydicom; compressed pixels are decoded with pydicom's plugins or imagecodecs,
never with the gateway's own codecs.

What the PACS do to the seed files, as seen here: DCMTK-based storage
recomputes Group Length elements (pydicom's chrJapMulti.dcm carries a wrong
one), and storescu sends encapsulated Pixel Data stored as OW as OB; both are
ignored in the dataset comparisons and nothing else is.

Scripted pynetdicom PACS (``RetrievePeer``) drive the failure cases: a C-GET
aborted half-way, and a client hanging up mid-stream.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from pydicom import Dataset
from pydicom.data import get_testdata_file

from gateway.demo.sample import (
    CT_PATIENT,
    JAPANESE_PATIENT,
    LATIN1_PATIENT,
    MR_PATIENT,
    UTF8_PATIENT,
    SampleInstance,
    write_demo_studies,
)
from tests.peers import DcmqrscpServer, OrthancServer, seed
from tests.peers.gateway import GatewayServer
from tests.web.wado_support import (
    EXPLICIT_LE,
    HTJ2K,
    J2K,
    JPEG_BASELINE,
    JPEG_LS,
    RLE,
    GetScript,
    PacsCalls,
    Part,
    RetrievePeer,
    bulk_uris,
    compressed_frames,
    dataset_differences,
    decode_codestream,
    differing_keywords,
    element_at,
    json_differences,
    media_params,
    multipart_parts,
    normalise_oracle,
    pixels,
    raw_get_then_hang_up,
    read_raw_body,
    replace_bulk,
    wait_for,
)

Pacs = OrthancServer | DcmqrscpServer

DICOM = "application/dicom"
OCTET = "application/octet-stream"
DICOM_JSON = "application/dicom+json"
SOP_UID = "00080018"
PIXEL_DATA = "7FE00010"
UNKNOWN_UID = "1.2.826.0.1.3680043.10.1234.999.999"
CORNERSTONE = f"multipart/related; type={OCTET}; transfer-syntax=*"
# What a lossless transcode may rewrite: the pixels and their layout.
PIXEL_LAYOUT = {"PixelData", "PlanarConfiguration", "PhotometricInterpretation"}


def accept_dicom(syntax: str | None = None) -> str:
    ts = f"; transfer-syntax={syntax}" if syntax else ""
    return f'multipart/related; type="application/dicom"{ts}'


def get(url: str, accept: str | None = None, **kwargs: Any) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}))
    if accept is not None:
        headers["Accept"] = accept
    return requests.get(url, headers=headers, timeout=60, **kwargs)


def assert_json_error(r: requests.Response, status: int) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    assert "error" in r.json()


def instance_url(gw: GatewayServer, study: str, series: str, sop: str) -> str:
    return f"{gw.url}/studies/{study}/series/{series}/instances/{sop}"


def url_of(gw: GatewayServer, inst: SampleInstance) -> str:
    return instance_url(gw, inst.study_uid, inst.series_uid, inst.sop_uid)


def qido_sops(gw: GatewayServer, path: str) -> set[str]:
    r = requests.get(f"{gw.url}{path}/instances", timeout=30)
    assert r.status_code == 200, (r.status_code, r.text)
    return {item[SOP_UID]["Value"][0] for item in r.json()}


def metadata(url: str) -> list[dict[str, Any]]:
    r = get(url, DICOM_JSON)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith(DICOM_JSON)
    assert b"NaN" not in r.content and b"Infinity" not in r.content
    body = json.loads(r.content)
    assert isinstance(body, list)
    return body


def series_bodies(gw: GatewayServer, study: str, series: str) -> dict[str, bytes]:
    parts = multipart_parts(get(f"{gw.url}/studies/{study}/series/{series}"), DICOM)
    return {str(p.dataset().SOPInstanceUID): p.content for p in parts}


# --------------------------------------------------------------------------- fixtures


class Seeded:
    """What a session PACS holds, from its seed files."""

    def __init__(self, pacs: Pacs) -> None:
        self.manifest = pacs.manifest
        #: SOP Instance UID -> (file, study UID, series UID)
        self.files: dict[str, tuple[Path, str, str]] = {
            item.sop_uid: (item.path, item.study_uid, item.series_uid)
            for item in [*pacs.manifest.instances, *pacs.charset_files]
        }
        self._read: dict[str, Dataset] = {}

    def dataset(self, sop: str) -> Dataset:
        if sop not in self._read:
            self._read[sop] = pydicom.dcmread(self.files[sop][0])
        return self._read[sop]

    def studies(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for sop, (_, study, _series) in self.files.items():
            out.setdefault(study, set()).add(sop)
        return out

    def series(self) -> dict[tuple[str, str], set[str]]:
        out: dict[tuple[str, str], set[str]] = {}
        for sop, (_, study, series) in self.files.items():
            out.setdefault((study, series), set()).add(sop)
        return out

    def demo(self, patient_id: str) -> list[SampleInstance]:
        """The demo instances of a patient: CT (unsigned, 512x512), MR, the 20-frame
        12-bit cine, the 8-bit RGB capture, the signed 16-bit CT."""
        return [i for i in self.manifest.instances if i.patient_id == patient_id]

    @property
    def ct(self) -> list[SampleInstance]:
        return self.demo(CT_PATIENT.pid)

    @property
    def mr(self) -> list[SampleInstance]:
        return self.demo(MR_PATIENT.pid)

    @property
    def multiframe(self) -> SampleInstance:
        (inst,) = self.demo(LATIN1_PATIENT.pid)
        assert inst.number_of_frames > 1
        return inst

    @property
    def rgb(self) -> SampleInstance:
        (inst,) = self.demo(UTF8_PATIENT.pid)
        return inst

    @property
    def signed_ct(self) -> list[SampleInstance]:
        return self.demo(JAPANESE_PATIENT.pid)


@pytest.fixture
def seeded(pacs: Pacs) -> Seeded:
    return Seeded(pacs)


@pytest.fixture(scope="module")
def _gateways() -> Iterator[dict[str, GatewayServer]]:
    started: dict[str, GatewayServer] = {}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture
def gw(pacs: Pacs, _gateways: dict[str, GatewayServer]) -> GatewayServer:
    """One gateway (default settings, its own temporary cache) per PACS for the module."""
    if pacs.kind not in _gateways:
        _gateways[pacs.kind] = GatewayServer(pacs.pacs_config()).start()
    return _gateways[pacs.kind]


@pytest.fixture
def no_private_dictionary(monkeypatch: pytest.MonkeyPatch) -> None:
    """dicom_json rule 11: private VRs are not looked up, so pydicom must not either
    (it turns explicit-VR UN private elements into their dictionary VR)."""

    def unknown(tag: object, private_creator: str) -> str:
        raise KeyError(tag)

    monkeypatch.setattr(pydicom.hooks, "private_dictionary_VR", unknown)


@pytest.fixture
def mr_files(sample_manifest: Any) -> list[Path]:
    """Five MR slices, for the scripted PACS."""
    return [i.path for i in sample_manifest.instances if i.patient_id == MR_PATIENT.pid][:5]


# --------------------------------------------------------------------------- WADO-01/02/08


def check_instance_parts(
    gw: GatewayServer, seeded: Seeded, parts: list[Part], expected: set[str]
) -> None:
    """WADO-01/02: every part is one expected instance in Explicit VR LE, as stored."""
    assert sorted(p.dataset().SOPInstanceUID for p in parts) == sorted(expected)
    for part in parts:
        assert part.content_type == f"{DICOM}; transfer-syntax={EXPLICIT_LE}"
        ds = part.dataset()
        sop = str(ds.SOPInstanceUID)
        _, study, series = seeded.files[sop]
        assert part.headers["content-location"] == instance_url(gw, study, series, sop)
        assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE
        assert ds.file_meta.MediaStorageSOPInstanceUID == sop
        assert dataset_differences(ds, seeded.dataset(sop)) == []


def test_study_retrieve_sends_every_instance_as_stored(gw: GatewayServer, seeded: Seeded) -> None:
    """WADO-01/02/08 at study level, for every seeded study (demo and charset files);
    each part's Content-Location is an instance retrieve giving the same bytes."""
    for study, sops in seeded.studies().items():
        r = get(f"{gw.url}/studies/{study}")
        assert media_params(r.headers["Content-Type"])[1].get("transfer-syntax") in (
            None,
            EXPLICIT_LE,
        )
        parts = multipart_parts(r, DICOM)
        assert len(parts) == len(qido_sops(gw, f"/studies/{study}")) == len(sops)
        check_instance_parts(gw, seeded, parts, sops)
        for part in parts:
            again = multipart_parts(get(part.headers["content-location"]), DICOM)
            assert [p.content for p in again] == [part.content]
            assert again[0].headers["content-location"] == part.headers["content-location"]


def test_series_retrieve_sends_every_instance_of_the_series(
    gw: GatewayServer, seeded: Seeded
) -> None:
    for (study, series), sops in seeded.series().items():
        r = get(f"{gw.url}/studies/{study}/series/{series}", accept_dicom())
        parts = multipart_parts(r, DICOM)
        assert len(parts) == len(qido_sops(gw, f"/studies/{study}/series/{series}")) == len(sops)
        check_instance_parts(gw, seeded, parts, sops)


def test_default_syntax_and_as_stored(gw: GatewayServer, seeded: Seeded) -> None:
    """WADO-02/03/05: no Accept header, */*, no transfer-syntax: Explicit VR LE;
    ``transfer-syntax=*``: what the PACS stores (Explicit VR LE for the demo set)."""
    mr = seeded.mr[0]
    url = url_of(gw, mr)
    bodies = []
    for accept in (None, "*/*", accept_dicom(), accept_dicom("*")):
        r = requests.get(url, headers={"Accept": accept}, timeout=30)
        (part,) = multipart_parts(r, DICOM)
        assert part.transfer_syntax == EXPLICIT_LE, accept
        bodies.append(part.content)
    assert all(b == bodies[0] for b in bodies)
    assert dataset_differences(part.dataset(), seeded.dataset(mr.sop_uid)) == []


# --------------------------------------------------------------------------- WADO-03/04/05


@pytest.mark.parametrize("syntax", [RLE, J2K, HTJ2K, JPEG_LS], ids=["rle", "j2k", "htj2k", "jls"])
def test_lossless_targets_decode_to_the_original_pixels(
    gw: GatewayServer, seeded: Seeded, syntax: str
) -> None:
    """WADO-03: the signed 16-bit CT (a series of 2), the 12-bit 20-frame cine and
    the 8-bit RGB capture, transcoded, decode to exactly the original pixels; all
    other attributes are kept."""
    signed = seeded.signed_ct[0]
    for url in (
        f"{gw.url}/studies/{signed.study_uid}/series/{signed.series_uid}",
        url_of(gw, seeded.multiframe),
        url_of(gw, seeded.rgb),
    ):
        r = get(url, accept_dicom(syntax))
        assert media_params(r.headers.get("Content-Type", ""))[1].get("transfer-syntax") == syntax
        parts = multipart_parts(r, DICOM)
        assert parts
        for part in parts:
            assert part.content_type == f"{DICOM}; transfer-syntax={syntax}"
            ds = part.dataset()
            assert ds.file_meta.TransferSyntaxUID == syntax
            original = seeded.dataset(str(ds.SOPInstanceUID))
            assert differing_keywords(ds, original) <= PIXEL_LAYOUT
            assert ds.get("LossyImageCompression", "00") != "01"
            got, want = pixels(ds), pixels(original)
            assert (got.shape, got.dtype) == (want.shape, want.dtype)
            assert np.array_equal(got, want), f"{url} in {syntax}: pixels differ"


def test_jpeg_baseline(gw: GatewayServer, seeded: Seeded) -> None:
    """WADO-03: JPEG Baseline of a 16-bit CT is 406 (series and instance); of the
    8-bit RGB capture it is lossy, close, and marked Lossy Image Compression 01."""
    ct = seeded.ct[0]
    series_url = f"{gw.url}/studies/{ct.study_uid}/series/{ct.series_uid}"
    assert_json_error(get(series_url, accept_dicom(JPEG_BASELINE)), 406)
    assert_json_error(get(url_of(gw, ct), accept_dicom(JPEG_BASELINE)), 406)
    (part,) = multipart_parts(get(url_of(gw, seeded.rgb), accept_dicom(JPEG_BASELINE)), DICOM)
    assert part.transfer_syntax == JPEG_BASELINE
    ds = part.dataset()
    assert ds.LossyImageCompression == "01"
    got = pixels(ds).astype(np.int16)
    want = pixels(seeded.dataset(seeded.rgb.sop_uid)).astype(np.int16)
    assert got.shape == want.shape
    assert float(np.abs(got - want).mean()) < 8


ACCEPTS = [
    # (Accept header, ?accept= parameter, transfer syntax of the answer)
    (accept_dicom(RLE), None, RLE),
    (f"multipart/related; type=application/dicom; transfer-syntax={RLE}", None, RLE),
    (f'MULTIPART/Related; TYPE="Application/DICOM"; Transfer-Syntax={RLE}', None, RLE),
    ("Multipart/Related; Type=Application/Dicom", None, EXPLICIT_LE),
    (f'multipart/related; type="application/dicom"; transfer-syntax="{J2K}"', None, J2K),
    (f"{accept_dicom(RLE)}; q=0.5, {accept_dicom(J2K)}; q=0.9", None, J2K),
    (f"{accept_dicom(J2K)}; q=0.4, {accept_dicom(RLE)}", None, RLE),
    (f"{accept_dicom(RLE)}; q=0, {accept_dicom()}; q=0.2", None, EXPLICIT_LE),
    (f"text/html, {accept_dicom(JPEG_LS)}; q=0.3", None, JPEG_LS),
    ("text/html", accept_dicom(RLE), RLE),
    (accept_dicom(J2K), accept_dicom(HTJ2K), HTJ2K),
    (accept_dicom(J2K), accept_dicom(), EXPLICIT_LE),
    (None, accept_dicom("*"), EXPLICIT_LE),
]


def test_accept_negotiation(gw: GatewayServer, seeded: Seeded) -> None:
    """WADO-03/04/05: quoting, case, q-values, and the ``accept`` parameter
    overriding the header; every answer decodes to the original pixels."""
    signed = seeded.signed_ct[0]
    want = pixels(seeded.dataset(signed.sop_uid))
    for header, param, syntax in ACCEPTS:
        params = {"accept": param} if param else None
        r = requests.get(url_of(gw, signed), headers={"Accept": header}, params=params, timeout=30)
        (part,) = multipart_parts(r, DICOM)
        assert part.transfer_syntax == syntax, (header, param)
        assert np.array_equal(pixels(part.dataset()), want), (header, param)


@pytest.mark.parametrize(
    ("header", "param", "status"),
    [
        ("text/html", None, 406),
        ("application/dicom+json", None, 406),
        (accept_dicom("1.2.3.4.5"), None, 406),
        (f"{accept_dicom(RLE)}; q=0", None, 406),
        ('multipart/related; type="image/jpeg"', None, 406),
        (None, f"{accept_dicom()},image/jpeg", 400),
        (None, "multipart/*", 400),
    ],
    ids=["html", "json", "unknown-ts", "q0", "rendered-type", "mixed-param", "wild-param"],
)
def test_unacceptable_accept(
    gw: GatewayServer, seeded: Seeded, header: str | None, param: str | None, status: int
) -> None:
    """WADO-03/05: nothing acceptable: 406 (JSON); a bad ``accept`` parameter: 400."""
    params = {"accept": param} if param else None
    r = requests.get(
        url_of(gw, seeded.mr[0]), headers={"Accept": header}, params=params, timeout=30
    )
    assert_json_error(r, status)


def test_garbage_accept_header_is_406(gw: GatewayServer, seeded: Seeded) -> None:
    assert_json_error(get(url_of(gw, seeded.mr[0]), "garbage;;;"), 406)


def test_q_values_fall_back_to_a_producible_syntax(gw: GatewayServer, seeded: Seeded) -> None:
    accept = f"{accept_dicom(JPEG_BASELINE)}, {accept_dicom(EXPLICIT_LE)}; q=0.5"
    (part,) = multipart_parts(get(url_of(gw, seeded.ct[0]), accept), DICOM)
    assert part.transfer_syntax == EXPLICIT_LE


# --------------------------------------------------------------------------- WADO-06


def check_metadata(gw: GatewayServer, seeded: Seeded, objects: list[dict[str, Any]]) -> int:
    """Each object equals pydicom's to_json_dict of the source file (with the
    corrections dicom_json.py documents); every BulkDataURI gives the exact
    original bytes. Returns how many bulk data URIs were followed."""
    followed = 0
    for obj in objects:
        sop = obj[SOP_UID]["Value"][0]
        path, study, series = seeded.files[sop]
        original = pydicom.dcmread(path)  # fresh: read under no_private_dictionary
        base = instance_url(gw, study, series, sop) + "/bulk/"
        for where, uri in bulk_uris(obj):
            assert uri.startswith(base), (where, uri)
            raw = element_at(original, uri[len(base) :]).value
            assert isinstance(raw, bytes), (where, uri)
            (part,) = multipart_parts(get(uri), OCTET)
            assert part.content == raw, f"{uri}: {len(part.content)} bytes, want {len(raw)}"
            followed += 1
        if "PixelData" in original:
            assert "BulkDataURI" in obj[PIXEL_DATA]
        oracle = normalise_oracle(original.to_json_dict(bulk_data_threshold=1 << 40))
        found = list(json_differences(obj, replace_bulk(obj, oracle)))
        assert not found, f"{sop}:\n" + "\n".join(found[:20])
    return followed


def test_metadata_study_series_instance(
    gw: GatewayServer, seeded: Seeded, no_private_dictionary: None
) -> None:
    """WADO-06, JSON-01..05: one object per instance at study, series and instance
    level, for every seeded instance (charset files included)."""
    followed = 0
    for study, sops in seeded.studies().items():
        objects = metadata(f"{gw.url}/studies/{study}/metadata")
        assert sorted(o[SOP_UID]["Value"][0] for o in objects) == sorted(sops)
        followed += check_metadata(gw, seeded, objects)
    for (study, series), sops in seeded.series().items():
        objects = metadata(f"{gw.url}/studies/{study}/series/{series}/metadata")
        assert sorted(o[SOP_UID]["Value"][0] for o in objects) == sorted(sops)
        sop = sorted(sops)[0]
        (one,) = metadata(instance_url(gw, study, series, sop) + "/metadata")
        assert one == next(o for o in objects if o[SOP_UID]["Value"][0] == sop)
    with_pixels = [sop for sop in seeded.files if "PixelData" in seeded.dataset(sop)]
    assert followed >= len(with_pixels)


def test_bulk_data_ranges(gw: GatewayServer, seeded: Seeded) -> None:
    """Pixel Data as a single octet-stream, whole and by byte range (206 / 416)."""
    raw = seeded.dataset(seeded.multiframe.sop_uid).PixelData
    size = len(raw)
    url = url_of(gw, seeded.multiframe) + f"/bulk/{PIXEL_DATA}"
    whole = get(url, OCTET)
    assert whole.status_code == 200 and whole.content == raw
    for header, start, end in [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, size - 1),
        ("bytes=-10", size - 10, size - 1),
        (f"bytes=5-{size + 100}", 5, size - 1),
    ]:
        r = get(url, OCTET, headers={"Range": header})
        assert r.status_code == 206, (header, r.status_code)
        assert r.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert r.content == raw[start : end + 1]
    for header in (f"bytes={size}-", "bytes=9-3", "pages=0-1"):
        r = get(url, OCTET, headers={"Range": header})
        assert r.status_code == 416, (header, r.status_code)
        assert r.headers["Content-Range"] == f"bytes */{size}"
    # A multipart Accept (dicomweb-client's retrieve_bulkdata) keeps multipart: one part, 206.
    r = get(url, f'multipart/related; type="{OCTET}"', headers={"Range": "bytes=100-1123"})
    assert r.status_code == 206, r.status_code
    assert r.headers["Content-Type"].startswith("multipart/related"), r.headers
    head, _, rest = r.content.partition(b"\r\n\r\n")
    assert b"Content-Range: bytes 100-1123/" + str(size).encode() in head, head
    assert rest.startswith(raw[100:1124]) and rest[1024:1026] == b"\r\n"


# --------------------------------------------------------------------------- WADO-07


def test_frames_of_the_multiframe_instance(gw: GatewayServer, seeded: Seeded) -> None:
    """WADO-07: native frames in the requested order, each Rows*Columns*Samples*Bits/8
    bytes; frame 0 or junk: 400; beyond NumberOfFrames: 404."""
    mf = seeded.multiframe
    ds = seeded.dataset(mf.sop_uid)
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    frames = [ds.PixelData[i * size : (i + 1) * size] for i in range(mf.number_of_frames)]
    base = url_of(gw, mf) + "/frames/"
    octet_accepts = (None, f"multipart/related; type={OCTET}", f'multipart/related; type="{OCTET}"')
    for spec in ("1", "1,3,5", "5,3,1", f"{mf.number_of_frames},2,2"):
        numbers = [int(n) for n in spec.split(",")]
        for accept in octet_accepts:
            parts = multipart_parts(get(base + spec, accept), OCTET)
            assert [p.content for p in parts] == [frames[n - 1] for n in numbers], (spec, accept)
            for p in parts:
                assert len(p.content) == size
                assert p.content_type == f"{OCTET}; transfer-syntax={EXPLICIT_LE}"
    # Cornerstone's Accept on a native instance: as stored, i.e. uncompressed.
    (part,) = multipart_parts(get(base + "2", CORNERSTONE), OCTET)
    assert (part.content, part.transfer_syntax) == (frames[1], EXPLICIT_LE)
    # the accept parameter overrides the header
    r = get(base + "3", 'multipart/related; type="image/jp2"', params={"accept": octet_accepts[2]})
    assert [p.content for p in multipart_parts(r, OCTET)] == [frames[2]]
    for bad in ("0", "abc", "1,0", "1,,2", "-1"):
        assert_json_error(get(base + bad), 400)
    assert_json_error(get(base + str(mf.number_of_frames + 1)), 404)
    assert_json_error(get(base + f"1,{mf.number_of_frames + 1}"), 404)


def test_frames_as_j2k_decode_to_the_original(gw: GatewayServer, seeded: Seeded) -> None:
    """WADO-07: ``type=image/jp2`` of a native instance: one J2K codestream per frame."""
    mf = seeded.multiframe
    ds = seeded.dataset(mf.sop_uid)
    r = get(url_of(gw, mf) + "/frames/2,7", 'multipart/related; type="image/jp2"')
    parts = multipart_parts(r, "image/jp2")
    want = pixels(ds)
    for part, n in zip(parts, (2, 7), strict=True):
        assert part.transfer_syntax == J2K
        assert part.content[:4] in (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0c"), part.content[:12]
        assert np.array_equal(decode_codestream(part.content, J2K, ds), want[n - 1])


# --------------------------------------------------------------------------- WADO-09


def test_unknown_or_mismatched_uids(gw: GatewayServer, seeded: Seeded) -> None:
    """WADO-09: 404 (JSON) for what does not exist there; 400 for a malformed UID."""
    mr, ct = seeded.mr[0], seeded.ct[0]
    in_mr = f"/studies/{mr.study_uid}/series/{mr.series_uid}/instances"
    for path in (
        f"/studies/{UNKNOWN_UID}",
        f"/studies/{UNKNOWN_UID}/metadata",
        f"/studies/{mr.study_uid}/series/{UNKNOWN_UID}",
        f"/studies/{mr.study_uid}/series/{UNKNOWN_UID}/metadata",
        f"{in_mr}/{UNKNOWN_UID}",
        f"{in_mr}/{UNKNOWN_UID}/metadata",
        f"{in_mr}/{UNKNOWN_UID}/frames/1",
        f"{in_mr}/{UNKNOWN_UID}/bulk/{PIXEL_DATA}",
        # exists, but not in that series / that study
        f"{in_mr}/{ct.sop_uid}",
        f"{in_mr}/{ct.sop_uid}/metadata",
        f"{in_mr}/{ct.sop_uid}/frames/1",
        f"/studies/{ct.study_uid}/series/{mr.series_uid}",
        f"/studies/{ct.study_uid}/series/{mr.series_uid}/metadata",
    ):
        assert_json_error(get(gw.url + path), 404)
    for path in (
        "/studies/1.2.abc",
        f"/studies/{mr.study_uid}/series/1..2",
        f"{in_mr}/{'1' * 65}",
        f"{in_mr}/1.02.3/metadata",
    ):
        assert_json_error(get(gw.url + path), 400)


def test_cached_instance_under_another_study_is_404(pacs: Pacs, seeded: Seeded) -> None:
    mr, ct = seeded.mr[0], seeded.ct[0]
    with GatewayServer(pacs.pacs_config()) as gw:
        wrong = url_of(gw, mr).replace(f"/studies/{mr.study_uid}/", f"/studies/{ct.study_uid}/")
        assert_json_error(get(wrong), 404)  # cold: the C-FIND finds nothing
        multipart_parts(get(url_of(gw, mr)), DICOM)  # now cached
        assert_json_error(get(wrong), 404)


def test_pacs_abort_mid_stream_cuts_the_response(make_peer: Any, mr_files: list[Path]) -> None:
    """WADO-09: a C-GET aborted after two instances ends the HTTP response without
    the close delimiter (seen raw, and by requests), the series is not marked
    complete, and the next request goes to the PACS again and gets everything."""
    scripts = [GetScript(send=2, abort=True), GetScript(send=1, abort=True), GetScript()]
    peer: RetrievePeer = make_peer(RetrievePeer(mr_files, scripts))
    first = pydicom.dcmread(mr_files[0])
    study, series = first.StudyInstanceUID, first.SeriesInstanceUID
    with GatewayServer(peer.pacs_config()) as gw:
        url = f"{gw.url}/studies/{study}/series/{series}"
        body, complete = read_raw_body(url)
        assert not complete, "the chunked body was ended as if complete"
        boundary = body[2 : body.index(b"\r\n")]
        assert body.count(b"--" + boundary + b"\r\n") >= 1
        assert b"--" + boundary + b"--" not in body, "closed as if complete"
        assert peer.sent == [2]
        cache = gw.app.state.retriever.cache
        assert gw.run(cache.series_instances(study, series)) is None
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(url, timeout=30).content  # noqa: B018 - reading raises
        assert peer.sent == [2, 1]
        assert gw.run(cache.series_instances(study, series)) is None
        complete = series_bodies(gw, study, series)
        assert peer.sent == [2, 1, len(mr_files)]
        assert len(complete) == len(mr_files)
        assert gw.run(cache.series_instances(study, series)) is not None
        assert series_bodies(gw, study, series) == complete
        assert peer.gets == 3  # now from the cache


# --------------------------------------------------------------------------- client gone


def hang_up_mid_series(make_peer: Any, mr_files: list[Path]) -> dict[str, Any]:
    """A client reads the start of a series (instances come every 0.5 s) and hangs
    up; what the scripted PACS saw once its C-GET handler ended."""
    peer: RetrievePeer = make_peer(RetrievePeer(mr_files, [GetScript(delay=0.5)]))
    first = pydicom.dcmread(mr_files[0])
    with GatewayServer(peer.pacs_config()) as gw:
        url = f"{gw.url}/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}"
        assert raw_get_then_hang_up(url, 2000).startswith(b"HTTP/1.1 200")
        assert wait_for(peer.get_finished.is_set, 8), "the C-GET went on"
        wait_for(lambda: peer.cancelled.is_set() or peer.aborted.is_set(), 2)
        seen = {
            "sent": peer.sent[0],
            "cancelled": peer.cancelled.is_set(),
            "aborted": peer.aborted.is_set(),
        }
        pool = gw.app.state.pacs.get().pool
        assert wait_for(lambda: pool.in_use == 0, 5), "an association is still lent"
    return seen


def test_client_hang_up_stops_the_retrieve(make_peer: Any, mr_files: list[Path]) -> None:
    """A client that disconnects mid-stream: the C-GET ends early (C-CANCEL or
    A-ABORT, see the next test) and no pooled association stays in use."""
    seen = hang_up_mid_series(make_peer, mr_files)
    assert seen["sent"] < len(mr_files)
    assert seen["cancelled"] or seen["aborted"]


@pytest.mark.xfail(
    strict=True,
    reason="by design: when the client hangs up, the C-GET's task is cancelled and the "
    "gateway sends C-CANCEL and then A-ABORT at once instead of draining (a PACS that "
    "ignores C-CANCEL would hold the association; pynetdicom only notices the abort)",
)
def test_client_hang_up_sends_c_cancel(make_peer: Any, mr_files: list[Path]) -> None:
    seen = hang_up_mid_series(make_peer, mr_files)
    assert seen["cancelled"] and not seen["aborted"]


# --------------------------------------------------------------------------- cache


def test_concurrent_cold_series_is_one_c_get_and_then_cached(pacs: Pacs, seeded: Seeded) -> None:
    """Issue 3 item 4: 5 clients asking at once for a cold series cause one C-GET;
    afterwards the series, its instances, frames and metadata need no PACS at all."""
    ct = seeded.ct[0]
    sops = {i.sop_uid for i in seeded.ct}
    with GatewayServer(pacs.pacs_config()) as gw:
        # Every request's C-FIND ends before the C-GET may start: all five are
        # then certainly waiting for the series at once (the race after a late
        # C-FIND is test_late_c_find_does_not_repeat_the_c_get).
        calls = PacsCalls.install(gw, hold_get_until_finds=5)
        barrier = threading.Barrier(5)

        def fetch(_: int) -> dict[str, bytes]:
            barrier.wait(10)
            return series_bodies(gw, ct.study_uid, ct.series_uid)

        with ThreadPoolExecutor(5) as pool:
            results = list(pool.map(fetch, range(5)))
        assert calls.get == 1, f"{calls.get} C-GETs for 5 concurrent requests"
        assert all(r == results[0] for r in results)
        assert set(results[0]) == sops
        before = (calls.find, calls.get)
        assert series_bodies(gw, ct.study_uid, ct.series_uid) == results[0]
        for inst in seeded.ct[:3]:
            url = url_of(gw, inst)
            (part,) = multipart_parts(get(url), DICOM)
            assert part.content == results[0][inst.sop_uid]
            (frame,) = multipart_parts(get(url + "/frames/1"), OCTET)
            assert frame.content == seeded.dataset(inst.sop_uid).PixelData
            (obj,) = metadata(url + "/metadata")
            assert obj[SOP_UID]["Value"] == [inst.sop_uid]
        series_meta = metadata(f"{gw.url}/studies/{ct.study_uid}/series/{ct.series_uid}/metadata")
        assert len(series_meta) == len(sops)
        assert (calls.find, calls.get) == before, "a cached series went to the PACS"
        cache = gw.app.state.retriever.cache
        cached = gw.run(cache.series_instances(ct.study_uid, ct.series_uid))
        assert cached is not None and {c.sop_uid for c in cached} == sops


def test_cached_series_survives_a_stopped_pacs(tmp_orthanc: OrthancServer, tmp_path: Path) -> None:
    """Issue 3 item 4, the hard way: after one series retrieve the PACS is stopped,
    and the series, an instance, its frames and metadata are still served."""
    manifest = write_demo_studies(tmp_path / "demo", ct_slices=1)
    mr = [i for i in manifest.instances if i.patient_id == MR_PATIENT.pid]
    assert not seed(tmp_orthanc, mr).refused
    study, series = mr[0].study_uid, mr[0].series_uid
    with GatewayServer(tmp_orthanc.pacs_config()) as gw:
        first = series_bodies(gw, study, series)
        assert set(first) == {i.sop_uid for i in mr}
        tmp_orthanc.stop(graceful=False)
        assert series_bodies(gw, study, series) == first
        series_meta = metadata(f"{gw.url}/studies/{study}/series/{series}/metadata")
        assert sorted(o[SOP_UID]["Value"][0] for o in series_meta) == sorted(first)
        inst = mr[3]
        (part,) = multipart_parts(get(url_of(gw, inst)), DICOM)
        assert part.content == first[inst.sop_uid]
        (frame,) = multipart_parts(get(url_of(gw, inst) + "/frames/1"), OCTET)
        assert frame.content == pydicom.dcmread(inst.path).PixelData
        assert metadata(url_of(gw, inst) + "/metadata") == [
            o for o in series_meta if o[SOP_UID]["Value"] == [inst.sop_uid]
        ]
        # The PACS really is gone: what is not cached fails.
        r = get(f"{gw.url}/studies/{study}")
        assert r.status_code in (502, 503, 504), r.status_code


def test_late_c_find_does_not_repeat_the_c_get(make_peer: Any, mr_files: list[Path]) -> None:
    """Two concurrent requests for a cold series; the second one's C-FIND is slow
    (1.5 s) and ends after the first one's C-GET: still one C-GET."""
    peer: RetrievePeer = make_peer(RetrievePeer(mr_files, [GetScript()], find_delays=[0, 1.5]))
    first = pydicom.dcmread(mr_files[0])
    study, series = first.StudyInstanceUID, first.SeriesInstanceUID
    with GatewayServer(peer.pacs_config()) as gw:
        barrier = threading.Barrier(2)

        def fetch(_: int) -> dict[str, bytes]:
            barrier.wait(10)
            return series_bodies(gw, study, series)

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(fetch, range(2)))
        assert results[0] == results[1] and len(results[0]) == len(mr_files)
        assert peer.finds == 2
        assert peer.gets == 1, f"{peer.gets} C-GETs of one series for 2 concurrent requests"


# --------------------------------------------------------------------------- SOP classes

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def test_sop_classes_from_the_study_level_where_the_pacs_answers(
    pacs: Pacs, seeded: Seeded
) -> None:
    """Orthanc answers SOPClassesInStudy: every retrieve asks the STUDY level for it
    and the IMAGE level for the UIDs only (Orthanc reads every file for SOPClassUID).
    dcmqrscp does not: asked once, after that only the IMAGE level with SOPClassUID.
    Either way every instance arrives as stored."""
    answers = pacs.kind == "orthanc"
    ct = seeded.ct
    study, series = ct[0].study_uid, ct[0].series_uid
    with GatewayServer(pacs.pacs_config()) as gw:
        calls = PacsCalls.install(gw)
        parts = multipart_parts(get(f"{gw.url}/studies/{study}/series/{series}"), DICOM)
        check_instance_parts(gw, seeded, parts, {i.sop_uid for i in ct})
        assert calls.levels() == ["STUDY", "IMAGE"]
        assert "SOPClassesInStudy" in calls.queries[0]
        assert ("SOPClassUID" in calls.queries[1]) is not answers
        # The whole study is not cached as such: to the PACS again.
        del calls.queries[:]
        parts = multipart_parts(get(f"{gw.url}/studies/{study}"), DICOM)
        check_instance_parts(gw, seeded, parts, seeded.studies()[study])
        assert calls.levels() == (["STUDY", "IMAGE"] if answers else ["IMAGE"])
        assert ("SOPClassUID" in calls.queries[-1]) is not answers
        # One instance: the IMAGE level only (one file is cheap to read for Orthanc).
        del calls.queries[:]
        other = seeded.mr[0]
        multipart_parts(get(url_of(gw, other)), DICOM)
        assert calls.levels() == ["IMAGE"] and "SOPClassUID" in calls.queries[0]
        assert calls.get == 3


def _series_of(files: list[Path]) -> tuple[str, str, set[str]]:
    datasets = [pydicom.dcmread(f) for f in files]
    sops = {str(ds.SOPInstanceUID) for ds in datasets}
    return datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID, sops


TEN_CLASSES = [MR_STORAGE, *(f"1.2.840.10008.5.1.4.1.1.{n}" for n in range(20, 29))]


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize(
    "answer",
    [0xA900, 0xC000, None, [MR_STORAGE, "not-a-uid"], TEN_CLASSES],
    ids=["A900", "C000", "empty", "garbled", "ten-classes"],
)
def test_unusable_study_classes_fall_back_to_the_instances_classes(
    make_peer: Any, mr_files: list[Path], answer: Any
) -> None:
    """A PACS that answers SOPClassesInStudy with a failure status, an empty or a
    garbled value: the retrieve still gets every instance, with the instances'
    own classes, and the next retrieve does not ask the STUDY level again. Ten
    classes would leave each fewer than all stored syntaxes in the 128 contexts:
    the instances' own (one) class is asked too, but that PACS did answer, so it
    is asked again next time."""
    answered = answer is TEN_CLASSES
    peer: RetrievePeer = make_peer(RetrievePeer(mr_files, [GetScript()], study_classes=answer))
    study, series, sops = _series_of(mr_files)
    with GatewayServer(peer.pacs_config()) as gw:
        assert set(series_bodies(gw, study, series)) == sops
        assert peer.levels == ["STUDY", "IMAGE"]
        assert "SOPClassUID" in peer.image_keys[0]
        parts = multipart_parts(get(f"{gw.url}/studies/{study}"), DICOM)
        assert {str(p.dataset().SOPInstanceUID) for p in parts} == sops
        assert peer.levels == ["STUDY", "IMAGE", *(["STUDY"] if answered else []), "IMAGE"]
        assert "SOPClassUID" in peer.image_keys[1]
        assert peer.gets == 2


def test_incomplete_study_classes_repeat_the_c_get_with_the_instances_classes(
    make_peer: Any, mr_files: list[Path], tmp_path: Path
) -> None:
    """SOPClassesInStudy names MR only, but the series also holds a Secondary
    Capture: the first C-GET cannot send it (no context for its class: a failed
    sub-operation, status B000). The gateway asks the instances' classes and gets
    the series once more with them: the client receives every instance once, the
    series is cached whole, and SOPClassesInStudy is not asked again."""
    capture = pydicom.dcmread(mr_files[0])
    capture.SOPClassUID = capture.file_meta.MediaStorageSOPClassUID = SC_STORAGE
    sop = f"{capture.SOPInstanceUID}.7"
    capture.SOPInstanceUID = capture.file_meta.MediaStorageSOPInstanceUID = sop
    capture.save_as(tmp_path / "capture.dcm")
    files = [*mr_files, tmp_path / "capture.dcm"]
    peer: RetrievePeer = make_peer(RetrievePeer(files, [GetScript()], study_classes=[MR_STORAGE]))
    study, series, sops = _series_of(files)
    with GatewayServer(peer.pacs_config()) as gw:
        response = get(f"{gw.url}/studies/{study}/series/{series}")
        parts = multipart_parts(response, DICOM)
        assert sorted(str(p.dataset().SOPInstanceUID) for p in parts) == sorted(sops)
        assert peer.gets == 2
        assert peer.levels == ["STUDY", "IMAGE", "IMAGE"]
        assert "SOPClassUID" not in peer.image_keys[0]
        assert "SOPClassUID" in peer.image_keys[1]
        cache = gw.app.state.retriever.cache
        cached = gw.run(cache.series_instances(study, series))
        assert cached is not None and {c.sop_uid for c in cached} == sops
        parts = multipart_parts(get(f"{gw.url}/studies/{study}"), DICOM)
        assert sorted(str(p.dataset().SOPInstanceUID) for p in parts) == sorted(sops)
        assert peer.levels == ["STUDY", "IMAGE", "IMAGE", "IMAGE"]
        assert peer.gets == 3


# --------------------------------------------------------------------------- compressed


def test_compressed_instance_uploaded_to_orthanc(tmp_orthanc: OrthancServer) -> None:
    """WADO-02/03/06/07 with pydicom's J2K lossless 10-frame MR stored in Orthanc:
    default retrieve transcodes to Explicit VR LE, ``*`` gives the stored J2K,
    frames come as stored for Cornerstone and image/jp2, decompressed otherwise."""
    path = get_testdata_file("emri_small_jpeg_2k_lossless.dcm")
    assert path is not None
    original = pydicom.dcmread(path)
    assert original.file_meta.TransferSyntaxUID == J2K
    assert not seed(tmp_orthanc, [path]).refused
    study, series = original.StudyInstanceUID, original.SeriesInstanceUID
    want = pixels(original)
    codestreams = compressed_frames(original)
    count = len(codestreams)
    with GatewayServer(tmp_orthanc.pacs_config()) as gw:
        url = instance_url(gw, study, series, original.SOPInstanceUID)
        (part,) = multipart_parts(get(url), DICOM)
        assert part.transfer_syntax == EXPLICIT_LE
        ds = part.dataset()
        assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE
        assert np.array_equal(pixels(ds), want)
        assert differing_keywords(ds, original) <= PIXEL_LAYOUT
        for target in (study, f"{study}/series/{series}"):
            (part,) = multipart_parts(get(f"{gw.url}/studies/{target}", accept_dicom("*")), DICOM)
            assert part.transfer_syntax == J2K
            stored = part.dataset()
            assert stored.file_meta.TransferSyntaxUID == J2K
            assert compressed_frames(stored) == codestreams
            # storescu sent the file's encapsulated OW Pixel Data as OB (PS3.5 A.4)
            assert differing_keywords(stored, original) <= {"PixelData"}
        parts = multipart_parts(get(url + "/frames/1,3,5", CORNERSTONE), OCTET)
        assert [p.transfer_syntax for p in parts] == [J2K] * 3
        assert [p.content for p in parts] == [codestreams[i] for i in (0, 2, 4)]
        r = get(url + "/frames/2", 'multipart/related; type="image/jp2"')
        (part,) = multipart_parts(r, "image/jp2")
        assert part.transfer_syntax == J2K
        assert np.array_equal(decode_codestream(part.content, J2K, original), want[1])
        parts = multipart_parts(get(url + f"/frames/{count},1"), OCTET)
        assert [p.transfer_syntax for p in parts] == [EXPLICIT_LE] * 2
        assert [p.content for p in parts] == [want[count - 1].tobytes(), want[0].tobytes()]
        assert_json_error(get(url + f"/frames/{count + 1}"), 404)
        (obj,) = metadata(url + "/metadata")
        # PS3.18 8.7.3.3: bulk data without a transfer syntax is Explicit VR LE,
        # so encapsulated Pixel Data comes decoded, frame after frame.
        (bulk,) = multipart_parts(get(obj[PIXEL_DATA]["BulkDataURI"]), OCTET)
        assert bulk.content == want.tobytes()
