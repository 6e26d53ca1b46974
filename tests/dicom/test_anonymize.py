"""anonymize=yes: identifying attributes gone or replaced, new consistent UIDs, pixels kept."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from gateway.dicom.anonymize import anonymize_part10


def _original(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name)
    assert path is not None
    return pydicom.dcmread(path)


def test_basic_profile_on_a_ct() -> None:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    before = _original("CT_small.dcm")
    after = pydicom.dcmread(io.BytesIO(anonymize_part10(Path(path).read_bytes())))
    assert str(after.PatientName) == "ANONYMIZED" != str(before.PatientName)
    assert after.PatientID == "ANONYMIZED"
    assert after.get("PatientBirthDate", "") == ""
    assert "InstitutionName" not in after
    assert not any(elem.tag.is_private for elem in after)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert getattr(after, keyword) != getattr(before, keyword)
    assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID
    assert after.PatientIdentityRemoved == "YES"
    assert after.PixelData == before.PixelData


def test_two_runs_give_different_uids() -> None:
    path = get_testdata_file("MR_small.dcm")
    assert path is not None
    data = Path(path).read_bytes()
    a = pydicom.dcmread(io.BytesIO(anonymize_part10(data)))
    b = pydicom.dcmread(io.BytesIO(anonymize_part10(data)))
    assert a.SOPInstanceUID != b.SOPInstanceUID


# A sample of PS3.15 Table E.1-1 rows (X, Z, D and U actions) that are not in the
# old removal list: the allow-list must drop or replace them all.
_IDENTIFYING = {
    "AcquisitionDateTime": "20240101120000",
    "InstanceCreationDate": "20240101",
    "InstitutionName": "General Hospital",
    "DeviceSerialNumber": "SN-12345",
    "PatientInsurancePlanCodeSequence": None,
    "PerformedProcedureStepDescription": "private story",
    "ScheduledPerformingPhysicianName": "Doe^John",
    "PersonName": "Roe^Richard",
    "ContentCreatorName": "Poe^Edgar",
    "TextValue": "free text naming the patient",
    "SeriesDate": "20240101",
    "AcquisitionDate": "20240101",
    "BodyPartExamined": "CHEST",
}


def test_what_is_not_retained_is_gone_at_every_level() -> None:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    ds = pydicom.dcmread(path)
    for keyword, value in _IDENTIFYING.items():
        if value is not None:
            setattr(ds, keyword, value)
    item = pydicom.Dataset()
    item.PatientName = "Hidden^Inside"
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID  # a reference to itself
    ds.ReferencedImageSequence = [item]
    ds.add_new(0x60003000, "OW", b"\x00\x01" * 8)  # Overlay Data: E.1-1 X
    ds.add_new(0x60000010, "US", 4)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    after = pydicom.dcmread(io.BytesIO(anonymize_part10(out.getvalue())))
    for keyword in _IDENTIFYING:
        assert keyword not in after, keyword
    assert not any(elem.tag.group & 0xFF00 == 0x6000 for elem in after)
    (kept,) = after.ReferencedImageSequence
    assert "PatientName" not in kept
    # the reference follows the object's own new UID; the class UID is kept
    assert kept.ReferencedSOPInstanceUID == after.SOPInstanceUID != ds.SOPInstanceUID
    assert kept.ReferencedSOPClassUID == ds.SOPClassUID
    assert after.FrameOfReferenceUID != ds.FrameOfReferenceUID
    assert after.ImagePositionPatient == ds.ImagePositionPatient
    assert after.StudyDate == "" and after.AccessionNumber == ""


@pytest.mark.parametrize(
    "name", ["MR_small.dcm", "US1_J2KR.dcm", "SC_rgb_rle.dcm", "emri_small.dcm", "JPEG2000.dcm"]
)
def test_pixels_and_their_description_survive(name: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    before = pydicom.dcmread(path)
    after = pydicom.dcmread(io.BytesIO(anonymize_part10(Path(path).read_bytes())))
    assert after.PixelData == before.PixelData
    for keyword in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"):
        assert after.get(keyword) == before.get(keyword), keyword
    assert after.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
    assert after.SOPClassUID == before.SOPClassUID
