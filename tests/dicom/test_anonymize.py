"""anonymize=yes: identifying attributes gone or replaced, new consistent UIDs, pixels kept."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
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
