"""The JavaScript ``dicomweb-client`` (npm, the client OHIF uses) against the gateway.

tests/interop/js/client.mjs runs one client operation in Node (XMLHttpRequest
from the pinned ``xhr2``) and prints JSON: search results and metadata as the
client returned them, binary results as length + sha256 (+ base64 when asked),
and the requests it sent with their Accept headers.  Everything is compared
with the seeded source files here; frames by sha256 of each source frame.

Frames are asked three ways: the client's default (``multipart/related;
type="application/octet-stream"``), the client with ``transferSyntaxUID: '*'``
(``...; type="application/octet-stream"; transfer-syntax=*``), and what
Cornerstone's WADO-RS image loader sends (its own request, not this client:
``multipart/related; type=application/octet-stream; transfer-syntax=*``, the
type unquoted), which client.mjs substitutes for the client's Accept header.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLSLossless

from tests.interop.interop_support import (
    GatewayFactory,
    NodeClient,
    Pacs,
    Source,
    by_series,
    by_study,
    find_in_pacs,
    native_frames,
    new_series,
    sha256,
    sources,
    uids,
    value,
)
from tests.peers.gateway import GatewayServer

STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"
PIXEL_DATA = "7FE00010"

CORNERSTONE_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@pytest.fixture
def gateway(pacs: Pacs, interop_gateway: GatewayFactory) -> GatewayServer:
    return interop_gateway(pacs)


@pytest.fixture
def js(node_client: NodeClient, gateway: GatewayServer) -> Any:
    """``js(operation, **options)``: the JS client's full report against ``gateway``."""

    def run(operation: str, **options: Any) -> dict[str, Any]:
        return node_client.run(gateway.url, operation, **options)

    return run


@pytest.fixture
def js_batch(node_client: NodeClient, gateway: GatewayServer) -> Any:
    """``js_batch([(operation, options), ...])``: their reports, from one Node process."""

    def run(calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        return node_client.batch(gateway.url, calls)

    return run


def multiframe(pacs: Pacs) -> Source:
    (inst,) = [i for i in pacs.manifest.instances if i.number_of_frames > 1]
    return sources(pacs)[inst.sop_uid]


def demo_series(pacs: Pacs, modality: str) -> list[Source]:
    """The sources of the first demo series of ``modality``, by InstanceNumber."""
    uid = min(i.series_uid for i in pacs.manifest.instances if i.modality == modality)
    return sorted(by_series(pacs)[uid], key=lambda s: int(s.dataset.InstanceNumber))


def ids(src: Source) -> dict[str, str]:
    return {
        "studyInstanceUID": src.study_uid,
        "seriesInstanceUID": src.series_uid,
        "sopInstanceUID": src.sop_uid,
    }


def person_name(pn: Any) -> str:
    """A DICOM JSON PN value back to its DICOM string form (groups joined by '=')."""
    groups = [pn.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
    return "=".join(groups).rstrip("=")


# --------------------------------------------------------------------------- QIDO-RS


def test_search_for_studies(js_batch: Any, pacs: Pacs) -> None:
    ct_study = pacs.manifest.study_of_patient("Doe^Jane^Marie")
    every, found, latin1 = js_batch(
        [
            ("searchForStudies", {}),
            (
                "searchForStudies",
                {"queryParams": {"PatientName": "Doe*", "includefield": "StudyDescription"}},
            ),
            ("searchForStudies", {"queryParams": {"PatientName": "Müller*"}}),
        ]
    )
    (request,) = every["requests"]
    assert request["headers"]["Accept"] == "application/dicom+json"
    assert sorted(uids(every["result"], STUDY_UID)) == sorted(pacs.study_uids)

    assert uids(found["result"], STUDY_UID) == [ct_study]
    source = by_study(pacs)[ct_study][0].dataset
    assert value(found["result"][0], "00081030") == source.StudyDescription
    # a non-ASCII key goes out percent-encoded UTF-8 (encodeURIComponent)
    assert "M%C3%BCller" in latin1["requests"][0]["url"]
    names = [person_name(value(s, "00100010")) for s in latin1["result"]]
    assert names == ["Müller^Jürgen"]


def test_search_for_series(js_batch: Any, pacs: Pacs) -> None:
    studies = by_study(pacs)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("searchForSeries", {"studyInstanceUID": uid}) for uid in studies
    ]
    calls.append(("searchForSeries", {"queryParams": {"Modality": "MR"}}))
    *per_study, mr = js_batch(calls)
    for (study_uid, srcs), report in zip(studies.items(), per_study, strict=True):
        got = uids(report["result"], SERIES_UID)
        assert sorted(got) == sorted({s.series_uid for s in srcs}), study_uid
    want = {s.series_uid for s in sources(pacs).values() if s.dataset.get("Modality") == "MR"}
    assert set(uids(mr["result"], SERIES_UID)) == want


def test_search_for_instances(js_batch: Any, pacs: Pacs) -> None:
    ct = demo_series(pacs, "CT")
    series, limited = js_batch(
        [
            (
                "searchForInstances",
                {"studyInstanceUID": ct[0].study_uid, "seriesInstanceUID": ct[0].series_uid},
            ),
            ("searchForInstances", {"queryParams": {"limit": "3", "offset": "1"}}),
        ]
    )
    assert sorted(uids(series["result"], SOP_UID)) == sorted(s.sop_uid for s in ct)
    assert len(limited["result"]) == 3
    assert set(uids(limited["result"], SOP_UID)) <= set(sources(pacs))


# --------------------------------------------------------------------------- WADO-RS metadata


def _check_metadata(item: dict[str, Any], src: Source) -> None:
    ds = src.dataset
    assert value(item, SOP_UID) == src.sop_uid
    assert value(item, STUDY_UID) == src.study_uid
    assert value(item, SERIES_UID) == src.series_uid
    assert person_name(value(item, "00100010")) == str(ds.PatientName)
    assert value(item, "00080016") == ds.SOPClassUID
    for tag, keyword in (
        ("00280010", "Rows"),
        ("00280011", "Columns"),
        ("00200013", "InstanceNumber"),
    ):
        if keyword in ds:
            assert value(item, tag) == int(ds[keyword].value), keyword
    if "NumberOfFrames" in ds:
        assert value(item, "00280008") == int(ds.NumberOfFrames)
    if "SeriesDescription" in ds:
        assert value(item, "0008103E") == ds.SeriesDescription
    if "PixelData" in ds:
        assert set(item[PIXEL_DATA]) == {"vr", "BulkDataURI"}


def test_retrieve_series_metadata(js_batch: Any, pacs: Pacs) -> None:
    """Every seeded series: SOP Instance UIDs and a few attributes per instance."""
    series = by_series(pacs)
    reports = js_batch(
        [
            (
                "retrieveSeriesMetadata",
                {"studyInstanceUID": srcs[0].study_uid, "seriesInstanceUID": uid},
            )
            for uid, srcs in series.items()
        ]
    )
    for srcs, report in zip(series.values(), reports, strict=True):
        metadata = report["result"]
        assert sorted(uids(metadata, SOP_UID)) == sorted(s.sop_uid for s in srcs)
        for item in metadata:
            _check_metadata(item, next(s for s in srcs if s.sop_uid == value(item, SOP_UID)))


def test_retrieve_instance_metadata_and_bulk_data(js: Any, js_batch: Any, pacs: Pacs) -> None:
    src = multiframe(pacs)
    (item,) = js("retrieveInstanceMetadata", **ids(src))["result"]
    _check_metadata(item, src)
    uri = item[PIXEL_DATA]["BulkDataURI"]
    whole, ranged = js_batch(
        [
            ("retrieveBulkData", {"BulkDataURI": uri}),
            ("retrieveBulkData", {"BulkDataURI": uri, "byteRange": [100, 1123]}),
        ]
    )
    assert whole["requests"][0]["headers"]["Accept"] == (
        'multipart/related; type="application/octet-stream"'
    )
    assert [p["sha256"] for p in whole["result"]] == [sha256(src.dataset.PixelData)]
    # a byte range: this client also takes the gateway's single-part 206 answer
    assert ranged["requests"][0]["headers"]["Range"] == "bytes=100-1123"
    assert ranged["requests"][0]["status"] == 206
    assert [p["sha256"] for p in ranged["result"]] == [sha256(src.dataset.PixelData[100:1124])]


# --------------------------------------------------------------------------- frames

FRAMES = [1, 2, 11, 20]

#: (name, client.mjs options, the Accept header that goes out)
FRAME_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("client default", {}, 'multipart/related; type="application/octet-stream"'),
    (
        "client, transferSyntaxUID '*'",
        {"mediaTypes": [{"mediaType": "application/octet-stream", "transferSyntaxUID": "*"}]},
        'multipart/related; type="application/octet-stream"; transfer-syntax=*',
    ),
    ("Cornerstone", {"accept": CORNERSTONE_ACCEPT}, CORNERSTONE_ACCEPT),
]


def test_retrieve_instance_frames(js_batch: Any, pacs: Pacs) -> None:
    """Four frames of the multi-frame instance, asked the three ways."""
    src = multiframe(pacs)
    want = native_frames(src.dataset)
    reports = js_batch(
        [
            ("retrieveInstanceFrames", {**ids(src), "frameNumbers": FRAMES, **options})
            for _, options, _ in FRAME_REQUESTS
        ]
    )
    for (name, _, accept), report in zip(FRAME_REQUESTS, reports, strict=True):
        (request,) = report["requests"]
        assert request["headers"]["Accept"] == accept, name
        assert request["url"].endswith("/frames/" + ",".join(map(str, FRAMES)))
        got = [f["sha256"] for f in report["result"]]
        assert got == [sha256(want[n - 1]) for n in FRAMES], name
        for frame in report["result"]:
            assert frame["contentType"] == "application/octet-stream", name
            assert frame["transferSyntaxUID"] == "1.2.840.10008.1.2.1", name


def test_retrieve_instance_frames_of_a_stack(js_batch: Any, pacs: Pacs) -> None:
    """Frame 1 of every instance of the CT series, Cornerstone's way (how OHIF
    loads a stack): the sha256 of each equals its source's Pixel Data."""
    ct = demo_series(pacs, "CT")
    reports = js_batch(
        [
            (
                "retrieveInstanceFrames",
                {**ids(src), "frameNumbers": [1], "accept": CORNERSTONE_ACCEPT},
            )
            for src in ct
        ]
    )
    got = [[f["sha256"] for f in r["result"]] for r in reports]
    assert got == [[sha256(src.dataset.PixelData)] for src in ct]


def test_retrieve_instance_frames_transcoded_to_jpeg_ls(js_batch: Any, pacs: Pacs) -> None:
    """The client's two names for JPEG-LS, with the transfer syntax: the gateway
    transcodes, and the codestream decodes (imagecodecs) to the source frame."""
    src = multiframe(pacs)
    names = ["image/jls", "image/x-jls"]
    reports = js_batch(
        [
            (
                "retrieveInstanceFrames",
                {
                    **ids(src),
                    "frameNumbers": [3],
                    "mediaTypes": [{"mediaType": name, "transferSyntaxUID": JPEGLSLossless}],
                    "base64": True,
                },
            )
            for name in names
        ]
    )
    ds = src.dataset
    want = np.frombuffer(native_frames(ds)[2], dtype="<u2").reshape(ds.Rows, ds.Columns)
    for name, report in zip(names, reports, strict=True):
        assert report["requests"][0]["headers"]["Accept"] == (
            f'multipart/related; type="{name}"; transfer-syntax={JPEGLSLossless}'
        )
        (frame,) = report["result"]
        assert frame["transferSyntaxUID"] == JPEGLSLossless, name
        pixels = imagecodecs.jpegls_decode(base64.b64decode(frame["base64"]))
        assert np.array_equal(pixels, want), name


def test_retrieve_instance_frames_legacy_media_types_are_not_a_server_error(
    node_client: NodeClient, gateway: GatewayServer, pacs: Pacs
) -> None:
    src = multiframe(pacs)
    names = ["image/x-jls", "image/x-dicom-rle"]
    reports = node_client.batch(
        gateway.url,
        [
            (
                "retrieveInstanceFrames",
                {**ids(src), "frameNumbers": [1], "mediaTypes": [{"mediaType": name}]},
            )
            for name in names
        ],
        check=False,
    )
    statuses = [r["requests"][0]["status"] for r in reports]
    assert all(s in (200, 406) for s in statuses), list(zip(names, statuses, strict=True))


# --------------------------------------------------------------------------- instances


def _part10(result: dict[str, Any]) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(base64.b64decode(result["base64"])))


def test_retrieve_instance_and_series(js_batch: Any, pacs: Pacs) -> None:
    mr = demo_series(pacs, "MR")
    chosen = [multiframe(pacs), mr[0]]
    *instances, series = js_batch(
        [
            *[("retrieveInstance", {**ids(src), "base64": True}) for src in chosen],
            (
                "retrieveSeries",
                {
                    "studyInstanceUID": mr[0].study_uid,
                    "seriesInstanceUID": mr[0].series_uid,
                    "base64": True,
                },
            ),
        ]
    )
    for src, report in zip(chosen, instances, strict=True):
        assert report["requests"][0]["headers"]["Accept"] == (
            'multipart/related; type="application/dicom"'
        )
        ds = _part10(report["result"])
        assert ds.SOPInstanceUID == src.sop_uid
        assert ds.PixelData == src.dataset.PixelData
    got = {str(ds.SOPInstanceUID): ds for ds in map(_part10, series["result"])}
    assert set(got) == {s.sop_uid for s in mr}
    for src in mr:
        assert got[src.sop_uid].PixelData == src.dataset.PixelData


# --------------------------------------------------------------------------- STOW-RS


def test_store_instances(
    node_client: NodeClient, store_pacs: Pacs, store_gateway: GatewayServer, tmp_path: Path
) -> None:
    """The client's own multipart encoding (``boundary="..."`` quoted) is accepted;
    the PACS has the instances (DCMTK), and the client retrieves their frames."""
    instances = new_series(2)
    study = instances[0].study_uid
    files = []
    for inst in instances:
        path = tmp_path / f"{inst.sop_uid}.dcm"
        path.write_bytes(inst.data)
        files.append(str(path))
    report = node_client.run(store_gateway.url, "storeInstances", files=files)
    (request,) = report["requests"]
    assert request["headers"]["Content-Type"].startswith(
        'multipart/related; type="application/dicom"; boundary="'
    )
    assert request["status"] == 200
    stored = [value(i, "00081155") for i in report["result"]["00081199"]["Value"]]
    assert sorted(stored) == sorted(i.sop_uid for i in instances)
    assert find_in_pacs(store_pacs, study) == {i.sop_uid: i.series_uid for i in instances}
    frames = node_client.batch(
        store_gateway.url,
        [
            (
                "retrieveInstanceFrames",
                {
                    "studyInstanceUID": study,
                    "seriesInstanceUID": inst.series_uid,
                    "sopInstanceUID": inst.sop_uid,
                    "frameNumbers": [1],
                    "accept": CORNERSTONE_ACCEPT,
                },
            )
            for inst in instances
        ],
    )
    got = [[f["sha256"] for f in r["result"]] for r in frames]
    assert got == [[sha256(inst.dataset.PixelData)] for inst in instances]
