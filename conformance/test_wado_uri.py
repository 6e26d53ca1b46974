"""E. WADO-URI (PS3.18 9): ``GET {wado}?requestType=WADO&studyUID=&seriesUID=&objectUID=``.

URI-01 the DICOM instance (9.4: Part 10, Explicit VR Little Endian unless a
transferSyntax is asked for, anonymize), URI-02 the rendered instance (9.5:
JPEG by default, frameNumber, rows/columns, region, window, imageQuality),
URI-03 unknown objects.  Images are judged as in ``test_rendered.py``.
"""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import requests
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian

from conformance.dataset import FixtureSet, InstanceFixture
from conformance.server import REQUEST_TIMEOUT, Server, describe
from conformance.test_rendered import (
    EXACT_TOLERANCE,
    JPEG,
    PNG,
    decode_image,
    grey,
    mean_diff,
    query,
    said,
    stored_pixels,
    voi,
)

DICOM = "application/dicom"


def wado(server: Server, inst: InstanceFixture, **params: str) -> requests.Response:
    """A WADO-URI request for ``inst`` with ``params`` after the three UIDs."""
    uids = {
        "requestType": "WADO",
        "studyUID": inst.study_uid,
        "seriesUID": inst.series_uid,
        "objectUID": inst.sop_uid,
    }
    url = f"{server.wado_uri_url}?{query({**uids, **params})}"
    return server.session.get(url, timeout=REQUEST_TIMEOUT)


def _ct(fx: FixtureSet) -> InstanceFixture:
    return fx.ct_series.instances[0]


def _part10(response: requests.Response) -> Dataset:
    """The dataset of a Part 10 response (preamble, "DICM", File Meta)."""
    assert response.status_code == 200, describe(response)
    content_type = response.headers.get("Content-Type", "")
    assert content_type.split(";")[0].strip().lower() == DICOM, (
        f"Content-Type is not {DICOM}: {said(response)}"
    )
    body = response.content
    assert body[128:132] == b"DICM", f"no Part 10 preamble and DICM prefix: {said(response)}"
    try:
        return dcmread(io.BytesIO(body))
    except Exception as exc:  # a file pydicom cannot read is the finding
        pytest.fail(f"pydicom cannot read the file ({exc}): {said(response)}")


# --- URI-01: application/dicom ----------------------------------------------------


@pytest.mark.parametrize("which", ["native", "rle"])
def test_URI_01_part10_explicit_vr_little_endian_by_default(
    server: Server, fixtures: FixtureSet, which: str
) -> None:
    """contentType=application/dicom without transferSyntax: the instance in
    Explicit VR Little Endian (an RLE instance decompressed), same pixels."""
    inst = _ct(fixtures) if which == "native" else fixtures.rle
    response = wado(server, inst, contentType=DICOM)
    ds = _part10(response)
    syntax = ds.file_meta.get("TransferSyntaxUID")
    assert syntax == ExplicitVRLittleEndian, (
        f"transfer syntax {syntax}, expected {ExplicitVRLittleEndian}: {said(response)}"
    )
    assert ds.SOPInstanceUID == inst.sop_uid, f"another instance: {said(response)}"
    assert ds.PixelData == inst.native_frames[0], f"pixel data differ: {said(response)}"


def test_URI_01_explicit_transfer_syntax(server: Server, fixtures: FixtureSet) -> None:
    response = wado(server, _ct(fixtures), contentType=DICOM, transferSyntax=ExplicitVRLittleEndian)
    ds = _part10(response)
    syntax = ds.file_meta.get("TransferSyntaxUID")
    assert syntax == ExplicitVRLittleEndian, f"transfer syntax {syntax}: {said(response)}"


@pytest.mark.parametrize("value", ["abc", "1.2.840.10008.1.2.1x", "1..2"])
def test_URI_01_invalid_transfer_syntax_400(
    server: Server, fixtures: FixtureSet, value: str
) -> None:
    """A transferSyntax that is not a UID: 400."""
    response = wado(server, _ct(fixtures), contentType=DICOM, transferSyntax=value)
    assert response.status_code == 400, describe(response)


def test_URI_01_unsupported_transfer_syntax_406(server: Server, fixtures: FixtureSet) -> None:
    """A well-formed UID that is no transfer syntax the server produces: 406."""
    response = wado(server, _ct(fixtures), contentType=DICOM, transferSyntax="1.2.3.4")
    assert response.status_code == 406, describe(response)


def test_URI_01_anonymize(server: Server, fixtures: FixtureSet) -> None:
    """anonymize=yes (PS3.18 9.4.2.3): the file has neither the patient's name
    nor ID and, not having been de-identified before, a new SOP Instance UID.
    A server unable or refusing to anonymize may answer an error instead (not
    400: the request is well-formed; not 404: the object exists)."""
    inst = _ct(fixtures)
    response = wado(server, inst, contentType=DICOM, anonymize="yes")
    if response.status_code != 200:
        assert response.status_code not in (400, 404, 500), describe(response)
        return
    ds = _part10(response)
    study = fixtures.ct
    kept = [
        f"{keyword} {source!r}"
        for keyword, source in (
            ("PatientName", study.patient_name),
            ("PatientID", study.patient_id),
            ("SOPInstanceUID", inst.sop_uid),
        )
        if str(ds.get(keyword, "")) == source
    ]
    assert not kept, f"kept {', '.join(kept)}: {said(response)}"


@pytest.mark.parametrize("value", ["no", "true"])
def test_URI_01_anonymize_other_value_400(server: Server, fixtures: FixtureSet, value: str) -> None:
    """The only value of anonymize is "yes"."""
    response = wado(server, _ct(fixtures), contentType=DICOM, anonymize=value)
    assert response.status_code == 400, describe(response)


# --- URI-02: rendered images ------------------------------------------------------


@pytest.mark.parametrize(("content_type", "media"), [(None, JPEG), (PNG, PNG)])
def test_URI_02_rendered_media_type(
    server: Server, fixtures: FixtureSet, content_type: str | None, media: str
) -> None:
    """No contentType: image/jpeg; image/png on request; native size."""
    inst = _ct(fixtures)
    params = {"contentType": content_type} if content_type else {}
    response = wado(server, inst, **params)
    assert response.status_code == 200, describe(response)
    image = decode_image(response, media)
    assert image.size == (inst.columns, inst.rows), (
        f"size {image.size}, expected {inst.columns}x{inst.rows}: {said(response)}"
    )


def test_URI_02_frame_number_selects_frame(server: Server, fixtures: FixtureSet) -> None:
    """frameNumber=3 renders the third frame (the frames differ by level: a
    fixed window tells them apart)."""
    mf = fixtures.multiframe
    response = wado(
        server, mf, contentType=PNG, frameNumber="3", windowCenter="2048", windowWidth="4096"
    )
    assert response.status_code == 200, describe(response)
    actual = grey(decode_image(response, PNG))
    diffs = [
        mean_diff(actual, voi(stored_pixels(mf, f), 2048, 4096, "linear"))
        for f in range(mf.number_of_frames)
    ]
    looks_like = int(np.argmin(diffs)) + 1
    assert looks_like == 3 and diffs[2] <= EXACT_TOLERANCE, (
        f"looks like frame {looks_like} (differences {np.round(diffs, 1)}): {said(response)}"
    )


@pytest.mark.parametrize("value", ["0", "-1", "abc", "6"])
def test_URI_02_bad_frame_number_400(server: Server, fixtures: FixtureSet, value: str) -> None:
    """frameNumber is a positive integer up to NumberOfFrames (5)."""
    response = wado(server, fixtures.multiframe, frameNumber=value)
    assert response.status_code == 400, describe(response)


@pytest.mark.parametrize(
    ("params", "size"),
    [
        ({"rows": "24"}, (32, 24)),
        ({"columns": "32"}, (32, 24)),
        ({"rows": "24", "columns": "16"}, (16, 12)),
        ({"rows": "12", "columns": "64"}, (16, 12)),
    ],
    ids=["rows", "columns", "both-columns-limit", "both-rows-limit"],
)
def test_URI_02_rows_columns_are_maxima(
    server: Server, fixtures: FixtureSet, params: dict[str, str], size: tuple[int, int]
) -> None:
    """rows and columns are maxima; the 64x48 colour image keeps its 4:3 aspect."""
    response = wado(server, fixtures.color, **params)
    assert response.status_code == 200, describe(response)
    w, h = decode_image(response, JPEG).size
    assert abs(w - size[0]) <= 1 and abs(h - size[1]) <= 1, (
        f"size {w}x{h}, expected {size[0]}x{size[1]}: {said(response)}"
    )


@pytest.mark.parametrize(
    ("region", "box"),
    [("0.25,0.25,0.75,0.75", (32, 32, 96, 96)), ("0,0,0.5,1", (0, 0, 64, 128))],
)
def test_URI_02_region_crops(
    server: Server, fixtures: FixtureSet, region: str, box: tuple[int, int, int, int]
) -> None:
    """region=xmin,ymin,xmax,ymax (fractions of the image) returns that part
    of the image at its own size."""
    inst = _ct(fixtures)
    response = wado(
        server, inst, contentType=PNG, region=region, windowCenter="40", windowWidth="400"
    )
    assert response.status_code == 200, describe(response)
    actual = grey(decode_image(response, PNG))
    x0, y0, x1, y1 = box
    expected = voi(stored_pixels(inst), 40, 400, "linear")[y0:y1, x0:x1]
    assert actual.shape == expected.shape, (
        f"size {actual.shape[::-1]}, expected {expected.shape[::-1]}: {said(response)}"
    )
    diff = mean_diff(actual, expected)
    assert diff <= EXACT_TOLERANCE, f"mean difference {diff:.1f}: {said(response)}"


@pytest.mark.parametrize(
    "region",
    ["0.5,0.5,0.25,0.75", "0.25,0.25,0.25,0.75", "0,0,1.5,1", "-0.1,0,1,1", "0,0,1", "a,b,c,d"],
)
def test_URI_02_bad_region_400(server: Server, fixtures: FixtureSet, region: str) -> None:
    """Four fractions from 0 to 1 with min < max, or 400."""
    response = wado(server, _ct(fixtures), region=region)
    assert response.status_code == 400, describe(response)


def test_URI_02_window(server: Server, fixtures: FixtureSet) -> None:
    """windowCenter/windowWidth apply the linear VOI function of PS3.3 C.11.2.1.2.1."""
    inst = _ct(fixtures)
    response = wado(server, inst, contentType=PNG, windowCenter="40", windowWidth="10")
    assert response.status_code == 200, describe(response)
    actual = grey(decode_image(response, PNG))
    stored = stored_pixels(inst)
    expected = voi(stored, 40, 10, "linear")
    ramp = (expected > 0) & (expected < 255)
    diff = np.abs(actual - expected)
    overall, inside = float(diff.mean()), float(diff[ramp].mean())
    assert overall <= EXACT_TOLERANCE and inside <= EXACT_TOLERANCE, (
        f"mean difference {inside:.1f} on the "
        f"{int(ramp.sum())} pixels inside the window: {said(response)}"
    )


@pytest.mark.parametrize(
    "params", [{"windowCenter": "40"}, {"windowWidth": "400"}], ids=["center", "width"]
)
def test_URI_02_window_center_and_width_together(
    server: Server, fixtures: FixtureSet, params: dict[str, str]
) -> None:
    response = wado(server, _ct(fixtures), **params)
    assert response.status_code == 400, describe(response)


def test_URI_02_image_quality(server: Server, fixtures: FixtureSet) -> None:
    sizes = {}
    for quality in ("1", "100"):
        response = wado(server, _ct(fixtures), imageQuality=quality)
        assert response.status_code == 200, describe(response)
        decode_image(response, JPEG)
        sizes[quality] = len(response.content)
    assert sizes["1"] < sizes["100"], f"JPEG sizes by imageQuality: {sizes}"


@pytest.mark.parametrize("value", ["0", "101", "abc"])
def test_URI_02_image_quality_out_of_range_400(
    server: Server, fixtures: FixtureSet, value: str
) -> None:
    response = wado(server, _ct(fixtures), imageQuality=value)
    assert response.status_code == 400, describe(response)


# --- URI-03: unknown objects ------------------------------------------------------


@pytest.mark.parametrize("unknown", ["object", "all"])
@pytest.mark.parametrize("content_type", [JPEG, DICOM])
def test_URI_03_unknown_uids_404(
    server: Server, fixtures: FixtureSet, fresh_uid: str, unknown: str, content_type: str
) -> None:
    """An object that does not exist, in a known series or with every UID unknown: 404."""
    inst = replace(_ct(fixtures), sop_uid=fresh_uid)
    if unknown == "all":
        inst = replace(inst, study_uid=fresh_uid + ".1", series_uid=fresh_uid + ".2")
    response = wado(server, inst, contentType=content_type)
    assert response.status_code == 404, describe(response)
