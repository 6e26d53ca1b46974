"""The PyPI ``dicomweb-client`` against the gateway in front of Orthanc and dcmqrscp.

Every answer the client gives is compared with the files the session PACS were
seeded with (pydicom), or, for STOW, with the instances built here and with
the PACS itself (DCMTK findscu at IMAGE level): SOP Instance UID sets, pixel
bytes, every attribute of the metadata (bulk data fetched through the client),
frame bytes, rendered image sizes.

The client is used as its users use it; the only settings are no HTTP retries
(a failure shows at once) and a response hook that records each exchange, so
a test can say exactly what was sent and answered.  What the client does that
a gateway has to live with:

* it sends ``Host: 127.0.0.1`` without the port (see ``PublicGateway`` in
  interop_support.py: the gateways here have ``public_url`` set);
* ``retrieve_instance_frames`` without ``media_types`` sends
  ``Accept: multipart/related; type="*/*"``;
* ``retrieve_series_rendered`` returns the raw body, so a multipart answer
  has to be split by the caller.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from PIL import Image
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless
from requests_toolbelt.multipart.decoder import MultipartDecoder  # type: ignore[import-untyped]

from tests.interop.interop_support import (
    NATIVE,
    GatewayFactory,
    NewInstance,
    Pacs,
    Source,
    by_series,
    by_study,
    decoded,
    encapsulated_frames,
    find_in_pacs,
    from_testfile,
    metadata_differences,
    native_frames,
    new_series,
    read,
    sources,
    uids,
    value,
)
from tests.peers.gateway import GatewayServer

STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"
PIXEL_DATA = "7FE00010"

#: The demo patients (gateway/demo/sample.py) the searches look for.
CT_PATIENT = "Doe^Jane^Marie"
LATIN1_PATIENT = "Müller^Jürgen"


@dataclass
class Exchange:
    method: str
    url: str
    request_headers: dict[str, str]
    status: int
    response_headers: dict[str, str]


@dataclass
class Recorder:
    """Every HTTP exchange of one client (a requests response hook)."""

    exchanges: list[Exchange] = field(default_factory=list)

    def __call__(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.exchanges.append(
            Exchange(
                str(response.request.method),
                str(response.request.url),
                {k: str(v) for k, v in response.request.headers.items()},
                response.status_code,
                dict(response.headers),
            )
        )

    @property
    def last(self) -> Exchange:
        return self.exchanges[-1]


def make_client(gateway: GatewayServer) -> tuple[DICOMwebClient, Recorder]:
    recorder = Recorder()
    client = DICOMwebClient(gateway.url, callback=recorder)
    client.set_http_retry_params(retry=False)
    return client, recorder


@pytest.fixture
def gateway(pacs: Pacs, interop_gateway: GatewayFactory) -> GatewayServer:
    return interop_gateway(pacs)


@pytest.fixture
def client(gateway: GatewayServer) -> DICOMwebClient:
    return make_client(gateway)[0]


@pytest.fixture
def store_client(store_gateway: GatewayServer) -> DICOMwebClient:
    return make_client(store_gateway)[0]


def bulk_handler(client: DICOMwebClient) -> Any:
    """pydicom's BulkDataURI handler: fetch the value through the client."""

    def fetch(tag: Any, vr: str, uri: str) -> bytes:
        parts = client.retrieve_bulkdata(uri)
        assert len(parts) == 1, (uri, len(parts))
        return bytes(parts[0])  # the client returns a bytearray

    return fetch


def demo_series(pacs: Pacs, modality: str) -> list[Source]:
    """The sources of the first demo series of ``modality``, by InstanceNumber."""
    series = {i.series_uid for i in pacs.manifest.instances if i.modality == modality}
    assert len(series) >= 1, modality
    uid = sorted(series)[0]
    return sorted(by_series(pacs)[uid], key=lambda s: int(s.dataset.InstanceNumber))


def multiframe(pacs: Pacs) -> Source:
    (inst,) = [i for i in pacs.manifest.instances if i.number_of_frames > 1]
    return sources(pacs)[inst.sop_uid]


def rgb(pacs: Pacs) -> Source:
    (src,) = [
        s
        for s in sources(pacs).values()
        if s.dataset.get("PhotometricInterpretation") == "RGB" and "PixelData" in s.dataset
    ]
    return src


def assert_same_instances(got: list[Dataset], want: list[Source]) -> None:
    """Same SOP Instance UIDs, and each one's pixel bytes equal to its source's."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in got}
    assert len(by_uid) == len(got), "an instance came twice"
    assert set(by_uid) == {s.sop_uid for s in want}
    for src in want:
        ds, source = by_uid[src.sop_uid], src.dataset
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        if "PixelData" in source:
            assert ds.PixelData == source.PixelData, src.sop_uid
        else:
            assert "PixelData" not in ds
        assert ds.StudyInstanceUID == src.study_uid
        assert ds.SeriesInstanceUID == src.series_uid
        assert ds.PatientName == source.PatientName


# --------------------------------------------------------------------------- QIDO-RS


def test_search_for_studies_finds_every_seeded_study(client: DICOMwebClient, pacs: Pacs) -> None:
    studies = client.search_for_studies()
    assert sorted(uids(studies, STUDY_UID)) == sorted(pacs.study_uids)


def test_search_for_studies_with_filters_and_includefield(
    client: DICOMwebClient, pacs: Pacs
) -> None:
    ct_study = pacs.manifest.study_of_patient(CT_PATIENT)
    found = client.search_for_studies(
        search_filters={"PatientName": "Doe*"}, fields=["StudyDescription"]
    )
    assert uids(found, STUDY_UID) == [ct_study]
    (study,) = found
    source = by_study(pacs)[ct_study][0].dataset
    assert value(study, "00081030") == source.StudyDescription
    assert value(study, "00100010") == {"Alphabetic": CT_PATIENT}
    assert value(study, "00100020") == source.PatientID

    # a date range, a non-ASCII wildcard, a patient ID, an accession number
    by_date = client.search_for_studies(search_filters={"StudyDate": "20240314-20240320"})
    want = {
        i.study_uid
        for i in pacs.manifest.instances
        if "20240314" <= str(read(i.path).StudyDate) <= "20240320"
    }
    assert set(uids(by_date, STUDY_UID)) == want and len(want) == 2
    latin1 = client.search_for_studies(search_filters={"PatientName": "Müller*"})
    assert uids(latin1, STUDY_UID) == [pacs.manifest.study_of_patient(LATIN1_PATIENT)]
    assert value(latin1[0], "00100010") == {"Alphabetic": LATIN1_PATIENT}
    for keyword in ("PatientID", "AccessionNumber"):
        src = by_study(pacs)[pacs.manifest.study_of_patient(LATIN1_PATIENT)][0].dataset
        hits = client.search_for_studies(search_filters={keyword: str(src.get(keyword))})
        assert uids(hits, STUDY_UID) == [src.StudyInstanceUID], keyword


def test_search_for_studies_limit_and_offset(client: DICOMwebClient, pacs: Pacs) -> None:
    every = uids(client.search_for_studies(), STUDY_UID)
    pages = [uids(client.search_for_studies(limit=5, offset=o), STUDY_UID) for o in (0, 5, 10, 15)]
    assert [len(p) for p in pages] == [5, 5, 5, 3]
    assert sorted(uid for page in pages for uid in page) == sorted(every)
    # get_remaining follows the gateway's "more results" Warning page by page
    assert sorted(uids(client.search_for_studies(limit=4, get_remaining=True), STUDY_UID)) == (
        sorted(every)
    )


def test_search_for_series(client: DICOMwebClient, pacs: Pacs) -> None:
    for study_uid, srcs in by_study(pacs).items():
        series = client.search_for_series(study_uid, fields=["SeriesDescription"])
        assert sorted(uids(series, SERIES_UID)) == sorted({s.series_uid for s in srcs})
        for item in series:
            src = next(s for s in srcs if s.series_uid == value(item, SERIES_UID)).dataset
            assert value(item, "00080060") == src.Modality
            # dcmqrscp does not keep SeriesDescription: returned empty (docs/qido.md)
            description = value(item, "0008103E")
            if pacs.kind == "orthanc" or description is not None:
                assert description == src.get("SeriesDescription"), study_uid
    # across studies, with a filter
    mr = client.search_for_series(search_filters={"Modality": "MR"})
    want = {s.series_uid for s in sources(pacs).values() if s.dataset.get("Modality") == "MR"}
    assert set(uids(mr, SERIES_UID)) == want and want


def test_search_for_instances(client: DICOMwebClient, pacs: Pacs) -> None:
    ct = demo_series(pacs, "CT")
    study, series = ct[0].study_uid, ct[0].series_uid
    every = client.search_for_instances(study, series, fields=["InstanceNumber"])
    assert sorted(uids(every, SOP_UID)) == sorted(s.sop_uid for s in ct)
    for item in every:
        src = next(s for s in ct if s.sop_uid == value(item, SOP_UID))
        assert value(item, "00200013") == int(src.dataset.InstanceNumber)
    third = client.search_for_instances(study, series, search_filters={"InstanceNumber": "3"})
    assert uids(third, SOP_UID) == [ct[2].sop_uid]
    # every instance of the PACS, and a study-level search with a patient key
    assert sorted(uids(client.search_for_instances(), SOP_UID)) == sorted(sources(pacs))
    by_patient = client.search_for_instances(search_filters={"PatientName": CT_PATIENT})
    assert sorted(uids(by_patient, SOP_UID)) == sorted(s.sop_uid for s in ct)


# --------------------------------------------------------------------------- WADO-RS


def test_retrieve_study(client: DICOMwebClient, pacs: Pacs) -> None:
    mr = demo_series(pacs, "MR")
    got = client.retrieve_study(mr[0].study_uid)
    assert_same_instances(got, by_study(pacs)[mr[0].study_uid])


def test_retrieve_series(client: DICOMwebClient, pacs: Pacs) -> None:
    ct = demo_series(pacs, "CT")
    got = client.retrieve_series(ct[0].study_uid, ct[0].series_uid)
    assert_same_instances(got, ct)


def test_retrieve_instance(client: DICOMwebClient, pacs: Pacs) -> None:
    """Multi-frame, RGB, signed pixels, and every non-ASCII name of the seed."""
    chosen = [multiframe(pacs), rgb(pacs), *[sources(pacs)[c.sop_uid] for c in pacs.charset_files]]
    chosen += [s for s in sources(pacs).values() if s.dataset.get("PixelRepresentation") == 1]
    for src in chosen:
        ds = client.retrieve_instance(src.study_uid, src.series_uid, src.sop_uid)
        assert_same_instances([ds], [src])


def test_retrieve_series_metadata_matches_the_source_files(
    client: DICOMwebClient, pacs: Pacs
) -> None:
    """Every attribute of every seeded instance, Pixel Data fetched by BulkDataURI."""
    handler = bulk_handler(client)
    problems: dict[str, list[str]] = {}
    for series_uid, srcs in by_series(pacs).items():
        metadata = client.retrieve_series_metadata(srcs[0].study_uid, series_uid)
        assert sorted(uids(metadata, SOP_UID)) == sorted(s.sop_uid for s in srcs)
        for item in metadata:
            src = next(s for s in srcs if s.sop_uid == value(item, SOP_UID))
            if "PixelData" in src.dataset:
                assert "BulkDataURI" in item[PIXEL_DATA], item[PIXEL_DATA]
            got = Dataset.from_json(item, bulk_data_uri_handler=handler)
            diffs = metadata_differences(got, src.path)
            if diffs:
                problems[src.path.name] = diffs
    assert not problems, problems


def test_retrieve_instance_metadata(client: DICOMwebClient, pacs: Pacs) -> None:
    handler = bulk_handler(client)
    for src in [multiframe(pacs), *[sources(pacs)[c.sop_uid] for c in pacs.charset_files]]:
        item = client.retrieve_instance_metadata(src.study_uid, src.series_uid, src.sop_uid)
        got = Dataset.from_json(item, bulk_data_uri_handler=handler)
        assert metadata_differences(got, src.path) == [], src.path.name


def test_retrieve_bulkdata(client: DICOMwebClient, pacs: Pacs) -> None:
    src = multiframe(pacs)
    item = client.retrieve_instance_metadata(src.study_uid, src.series_uid, src.sop_uid)
    (whole,) = client.retrieve_bulkdata(item[PIXEL_DATA]["BulkDataURI"])
    assert bytes(whole) == src.dataset.PixelData


def test_retrieve_bulkdata_byte_range(client: DICOMwebClient, pacs: Pacs) -> None:
    src = multiframe(pacs)
    item = client.retrieve_instance_metadata(src.study_uid, src.series_uid, src.sop_uid)
    (piece,) = client.retrieve_bulkdata(item[PIXEL_DATA]["BulkDataURI"], byte_range=(100, 1123))
    assert bytes(piece) == src.dataset.PixelData[100:1124]


FRAMES = [1, 7, 20]


@pytest.mark.parametrize(
    "media_types",
    [
        (("application/octet-stream", ExplicitVRLittleEndian),),
        (("application/octet-stream", "*"),),
        ("application/octet-stream",),
    ],
    ids=["explicit-le", "transfer-syntax-star", "octet-stream"],
)
def test_retrieve_instance_frames_native(
    client: DICOMwebClient, pacs: Pacs, media_types: tuple[Any, ...]
) -> None:
    src = multiframe(pacs)
    frames = client.retrieve_instance_frames(
        src.study_uid, src.series_uid, src.sop_uid, FRAMES, media_types=media_types
    )
    want = native_frames(src.dataset)
    assert [bytes(f) for f in frames] == [want[n - 1] for n in FRAMES]


def test_retrieve_instance_frames_default_media_type(client: DICOMwebClient, pacs: Pacs) -> None:
    src = multiframe(pacs)
    frames = client.retrieve_instance_frames(src.study_uid, src.series_uid, src.sop_uid, FRAMES)
    want = native_frames(src.dataset)
    assert [bytes(f) for f in frames] == [want[n - 1] for n in FRAMES]


def test_retrieve_instance_rendered_jpeg_and_png(client: DICOMwebClient, pacs: Pacs) -> None:
    for src in (rgb(pacs), demo_series(pacs, "CT")[0]):
        ds = src.dataset
        for media_type, fmt in (("image/jpeg", "JPEG"), ("image/png", "PNG")):
            body = client.retrieve_instance_rendered(
                src.study_uid, src.series_uid, src.sop_uid, media_types=(media_type,)
            )
            image = Image.open(io.BytesIO(body))
            image.load()
            assert image.format == fmt
            assert image.size == (ds.Columns, ds.Rows)
            assert image.mode == ("RGB" if ds.SamplesPerPixel == 3 else "L")


def test_retrieve_series_rendered(pacs: Pacs, gateway: GatewayServer) -> None:
    """The client hands back the raw body; the gateway answers a series render as
    multipart/related (one JPEG per frame), which the caller has to split."""
    client, recorder = make_client(gateway)
    mr = demo_series(pacs, "MR")
    body = client.retrieve_series_rendered(
        mr[0].study_uid, mr[0].series_uid, media_types=("image/jpeg",)
    )
    content_type = recorder.last.response_headers["content-type"]
    assert content_type.startswith("multipart/related"), content_type
    parts = MultipartDecoder(body, content_type).parts
    assert len(parts) == len(mr)
    for part in parts:
        image = Image.open(io.BytesIO(part.content))
        assert image.format == "JPEG"
        assert image.size == (mr[0].dataset.Columns, mr[0].dataset.Rows)


def test_urls_follow_the_host_header_the_client_sends(
    pacs: Pacs, interop_gateway: GatewayFactory
) -> None:
    """Without public_url the gateway builds RetrieveURL/BulkDataURI from Host,
    and this client sends Host without the port (a client bug: RFC 9110 7.2)."""
    gateway = interop_gateway(pacs, public=False)
    client, recorder = make_client(gateway)
    src = multiframe(pacs)
    item = client.retrieve_instance_metadata(src.study_uid, src.series_uid, src.sop_uid)
    host = recorder.last.request_headers["Host"]
    assert item[PIXEL_DATA]["BulkDataURI"].startswith(f"http://{host}/dicomweb/studies/")
    # ... and with an explicit Host (what browsers and the JS client send) they
    # are right without public_url:
    response = requests.get(
        f"{gateway.url}/studies/{src.study_uid}/series/{src.series_uid}"
        f"/instances/{src.sop_uid}/metadata",
        timeout=30,
    )
    uri = response.json()[0][PIXEL_DATA]["BulkDataURI"]
    assert uri.startswith(f"{gateway.url}/studies/"), uri


# --------------------------------------------------------------------------- STOW-RS


def _stored(response: Dataset) -> list[str]:
    return [str(i.ReferencedSOPInstanceUID) for i in response.get("ReferencedSOPSequence", [])]


def _store(client: DICOMwebClient, instances: list[NewInstance]) -> Dataset:
    datasets = [pydicom.dcmread(io.BytesIO(i.data)) for i in instances]
    response = client.store_instances(datasets)
    assert "FailedSOPSequence" not in response, response
    assert sorted(_stored(response)) == sorted(i.sop_uid for i in instances)
    return response


def test_store_instances_then_search_and_retrieve(
    store_client: DICOMwebClient, store_pacs: Pacs
) -> None:
    instances = new_series(3)
    study, series = instances[0].study_uid, instances[0].series_uid
    response = _store(store_client, instances)
    for item in response.ReferencedSOPSequence:
        assert item.RetrieveURL.endswith(
            f"/studies/{study}/series/{series}/instances/{item.ReferencedSOPInstanceUID}"
        )
    # the PACS has them (DCMTK, not the gateway) ...
    assert find_in_pacs(store_pacs, study) == {i.sop_uid: series for i in instances}
    # ... and the client finds and retrieves them through the gateway
    found = store_client.search_for_instances(study)
    assert sorted(uids(found, SOP_UID)) == sorted(i.sop_uid for i in instances)
    assert uids(
        store_client.search_for_studies(search_filters={"StudyInstanceUID": study}), STUDY_UID
    ) == [study]
    for inst in instances:
        ds = store_client.retrieve_instance(study, series, inst.sop_uid)
        assert ds.PixelData == inst.dataset.PixelData
        assert ds.PatientName == inst.dataset.PatientName
    frames = store_client.retrieve_instance_frames(
        study, series, instances[0].sop_uid, [1], media_types=("application/octet-stream",)
    )
    assert [bytes(f) for f in frames] == [instances[0].dataset.PixelData]


@pytest.mark.parametrize(
    ("name", "syntax", "media_type"),
    [
        ("emri_small_jpeg_2k_lossless.dcm", JPEG2000Lossless, "image/jp2"),
        ("SC_rgb_rle_2frame.dcm", RLELossless, "image/dicom-rle"),
    ],
    ids=["j2k-10-frames", "rle-rgb-2-frames"],
)
def test_store_compressed_then_retrieve_frames(
    store_client: DICOMwebClient,
    store_pacs: Pacs,
    name: str,
    syntax: str,
    media_type: str,
) -> None:
    """Compressed frames: the seed has none, so they are stored first.  Orthanc
    keeps them compressed: ``transfer-syntax=*`` and the compressed media type
    give the stored codestreams byte for byte.  dcmqrscp takes only native
    syntaxes: the gateway stores a decompressed copy (warning B000), whose frames
    are the decoded source pixels."""
    inst = from_testfile(name)
    source = inst.dataset
    datasets = [pydicom.dcmread(io.BytesIO(inst.data))]
    response = store_client.store_instances(datasets)
    assert _stored(response) == [inst.sop_uid]
    study, series, sop = inst.study_uid, inst.series_uid, inst.sop_uid
    numbers = list(range(1, int(source.NumberOfFrames) + 1))
    as_stored = store_client.retrieve_instance_frames(
        study, series, sop, numbers, media_types=(("application/octet-stream", "*"),)
    )
    if store_pacs.kind == "orthanc":
        assert [bytes(f) for f in as_stored] == encapsulated_frames(source)
        labelled = store_client.retrieve_instance_frames(
            study, series, sop, numbers, media_types=((media_type, syntax),)
        )
        assert [bytes(f) for f in labelled] == encapsulated_frames(source)
    else:
        ds = store_client.retrieve_instance(study, series, sop)
        assert ds.file_meta.TransferSyntaxUID in NATIVE
        assert (decoded(ds) == decoded(source)).all()
        frame_size = len(ds.PixelData) // len(numbers)
        assert [bytes(f) for f in as_stored] == [
            ds.PixelData[i * frame_size : (i + 1) * frame_size] for i in range(len(numbers))
        ]
    # whatever the PACS keeps, a native request gives the decoded source pixels
    native = store_client.retrieve_instance_frames(
        study, series, sop, [1], media_types=(("application/octet-stream", ExplicitVRLittleEndian),)
    )
    first = decoded(source)[0]
    assert bytes(native[0]) == first.astype(first.dtype.newbyteorder("<")).tobytes()
