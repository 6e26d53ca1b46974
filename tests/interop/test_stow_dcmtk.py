"""STOW-RS through the gateway, checked with DCMTK straight against the PACS.

The instances are uploaded by the PyPI dicomweb-client (an independent STOW
client), and what the PACS then holds is read back without the gateway: DCMTK's
findscu at IMAGE level must find exactly the uploaded SOP Instance UIDs under
their series, and getscu must retrieve files whose attributes and pixel data
are what was uploaded.  For Orthanc and dcmqrscp (``store_pacs``: empty PACS
of the interop session, never the seeded ones).

A compressed upload shows what each PACS keeps: Orthanc the RLE codestream as
sent, dcmqrscp (uncompressed syntaxes only) the decompressed copy the gateway
stores instead (warning B000, docs/stow.md) -- in both cases the decoded pixels
equal the upload's.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from tests.interop.interop_support import (
    NATIVE,
    NewInstance,
    Pacs,
    decoded,
    find_in_pacs,
    from_testfile,
    get_from_pacs,
    new_ct,
    new_series,
)
from tests.peers import OrthancServer
from tests.peers.gateway import GatewayServer

COERCION = 0xB000


def _stow(gateway: GatewayServer, instances: list[NewInstance]) -> pydicom.Dataset:
    client = DICOMwebClient(gateway.url)
    client.set_http_retry_params(retry=False)
    response = client.store_instances([pydicom.dcmread(io.BytesIO(i.data)) for i in instances])
    assert "FailedSOPSequence" not in response, response
    stored = [str(i.ReferencedSOPInstanceUID) for i in response.ReferencedSOPSequence]
    assert sorted(stored) == sorted(i.sop_uid for i in instances)
    return response


def test_stow_then_findscu_and_getscu_against_the_pacs(
    store_pacs: Pacs, store_gateway: GatewayServer, tmp_path: Path
) -> None:
    """Two series of one study in one STOW request, native pixels."""
    study = generate_uid()
    first, second = new_series(3, study), new_series(2, study)
    uploaded = first + second
    _stow(store_gateway, uploaded)

    assert find_in_pacs(store_pacs, study) == {i.sop_uid: i.series_uid for i in uploaded}

    retrieved = get_from_pacs(store_pacs, study, tmp_path / "getscu")
    assert set(retrieved) == {i.sop_uid for i in uploaded}
    for inst in uploaded:
        ds, sent = retrieved[inst.sop_uid], inst.dataset
        assert ds.file_meta.TransferSyntaxUID in NATIVE
        assert ds.PixelData == sent.PixelData, inst.sop_uid
        for keyword in (
            "SOPClassUID",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "PatientName",
            "PatientID",
            "InstanceNumber",
            "Rows",
            "Columns",
        ):
            assert ds[keyword].value == sent[keyword].value, keyword


def test_stow_to_an_existing_study_url_then_getscu(
    store_pacs: Pacs, store_gateway: GatewayServer, tmp_path: Path
) -> None:
    """``POST /studies/{study}`` (the client's study_instance_uid argument)."""
    inst = new_ct(generate_uid(), generate_uid(), 1, rows=17, cols=33)
    client = DICOMwebClient(store_gateway.url)
    client.set_http_retry_params(retry=False)
    response = client.store_instances(
        [pydicom.dcmread(io.BytesIO(inst.data))], study_instance_uid=inst.study_uid
    )
    assert [str(i.ReferencedSOPInstanceUID) for i in response.ReferencedSOPSequence] == [
        inst.sop_uid
    ]
    assert find_in_pacs(store_pacs, inst.study_uid) == {inst.sop_uid: inst.series_uid}
    (ds,) = get_from_pacs(store_pacs, inst.study_uid, tmp_path / "getscu").values()
    assert ds.PixelData == inst.dataset.PixelData
    assert (ds.Rows, ds.Columns) == (17, 33)


def test_stow_compressed_then_getscu(
    store_pacs: Pacs, store_gateway: GatewayServer, tmp_path: Path
) -> None:
    inst = from_testfile("MR_small_RLE.dcm")
    assert inst.transfer_syntax == RLELossless
    response = _stow(store_gateway, [inst])
    (ref,) = response.ReferencedSOPSequence
    assert find_in_pacs(store_pacs, inst.study_uid) == {inst.sop_uid: inst.series_uid}
    if isinstance(store_pacs, OrthancServer):
        assert "WarningReason" not in ref
        # Orthanc keeps the RLE codestream (its REST API, inspection only) ...
        assert _orthanc_transfer_syntax(store_pacs, inst.sop_uid) == RLELossless
        # ... and getscu gets it in whatever syntax Orthanc chooses to send
        # (Orthanc 1.10 sent Explicit VR Little Endian to getscu +xr here)
        retrieved = get_from_pacs(
            store_pacs, inst.study_uid, tmp_path / "getscu", accept=[RLELossless]
        )
        ds = retrieved[inst.sop_uid]
        if ds.file_meta.TransferSyntaxUID == RLELossless:
            assert ds.PixelData == inst.dataset.PixelData
    else:
        assert ref.WarningReason == COERCION
        retrieved = get_from_pacs(store_pacs, inst.study_uid, tmp_path / "getscu")
        ds = retrieved[inst.sop_uid]
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(decoded(ds), decoded(inst.dataset))


def _orthanc_transfer_syntax(orthanc: OrthancServer, sop_uid: str) -> str:
    query = {"Level": "Instance", "Query": {"SOPInstanceUID": sop_uid}}
    (instance_id,) = orthanc.rest("POST", "/tools/find", query)
    return str(orthanc.rest("GET", f"/instances/{instance_id}/metadata?expand")["TransferSyntax"])


@pytest.mark.parametrize("count", [12])
def test_stow_many_instances_in_one_request(
    store_pacs: Pacs, store_gateway: GatewayServer, tmp_path: Path, count: int
) -> None:
    """A dozen instances in one request all arrive, each with its own pixels."""
    uploaded = new_series(count)
    study = uploaded[0].study_uid
    _stow(store_gateway, uploaded)
    assert find_in_pacs(store_pacs, study) == {i.sop_uid: i.series_uid for i in uploaded}
    retrieved = get_from_pacs(store_pacs, study, tmp_path / "getscu")
    assert {uid: ds.PixelData for uid, ds in retrieved.items()} == {
        i.sop_uid: i.dataset.PixelData for i in uploaded
    }
