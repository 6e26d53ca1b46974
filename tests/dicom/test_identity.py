"""identity_of reads the four UIDs as pydicom does, in every encoding."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from gateway.dicom.identity import identity_of
from gateway.dicom.part10 import read_part10


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "emri_small.dcm"]
)
def test_identity_matches_pydicom(name: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    part = read_part10(Path(path).read_bytes())
    got = identity_of(
        part.data, part.offset, explicit_vr=part.explicit_vr, little_endian=part.little_endian
    )
    ds = pydicom.dcmread(path)
    assert got.sop_class_uid == ds.SOPClassUID
    assert got.sop_instance_uid == ds.SOPInstanceUID
    assert got.study_instance_uid == ds.StudyInstanceUID
    assert got.series_instance_uid == ds.SeriesInstanceUID


def test_missing_uids_are_empty() -> None:
    ds = pydicom.Dataset()
    ds.PatientName = "X"
    ds.StudyInstanceUID = "1.2.3"
    from gateway.dicom.encode import encode_dataset

    got = identity_of(encode_dataset(ds, explicit_vr=True))
    assert got.study_instance_uid == "1.2.3" and got.sop_instance_uid == ""
