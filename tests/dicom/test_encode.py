"""The fast identifier encoder must give pydicom's bytes for every QIDO identifier."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from gateway.dicom.encode import encode_dataset, encode_dataset_pydicom
from gateway.services.errors import InvalidParameter
from gateway.services.qido_identifier import build_identifier
from gateway.services.qido_query import parse_qido_query

QUERIES = [
    ("STUDY", [], None, None),
    ("STUDY", [("PatientID", "LAB-1"), ("StudyDate", "20240101-20241231")], None, None),
    ("STUDY", [("includefield", "all"), ("PatientName", "Doe*")], None, None),
    ("STUDY", [("PatientName", "Müller^Jürgen")], None, None),
    ("STUDY", [("PatientName", "山田^太郎")], None, None),
    ("SERIES", [("Modality", "CT"), ("includefield", "all")], "1.2.3", None),
    ("SERIES", [("RequestAttributesSequence.RequestedProcedureID", "RP1")], None, None),
    ("IMAGE", [("InstanceNumber", "3"), ("includefield", "00280010,Columns")], "1.2.3", "1.2.3.4"),
    ("IMAGE", [("SOPInstanceUID", "1.2.3,1.2.4,1.2.55")], None, None),
]


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


@pytest.mark.parametrize("explicit", [True, False], ids=["explicit", "implicit"])
@pytest.mark.parametrize("level,params,study,series", QUERIES)
@pytest.mark.parametrize("charset", ["ISO_IR 192", "ISO_IR 100"])
def test_fast_encoder_equals_pydicom(
    level: str,
    params: list[tuple[str, str]],
    study: str | None,
    series: str | None,
    explicit: bool,
    charset: str,
) -> None:
    query = parse_qido_query(level, params, study_uid=study, series_uid=series, max_limit=100)  # type: ignore[arg-type]
    if charset == "ISO_IR 100" and not all(_latin1(v) for _, v in params):
        # Japanese in Latin-1: build_identifier must refuse it (a 400 upstream).
        with pytest.raises(InvalidParameter):
            build_identifier(query, charset=charset)
        return
    ds = build_identifier(query, charset=charset)
    assert encode_dataset(ds, explicit_vr=explicit) == encode_dataset_pydicom(
        ds, explicit_vr=explicit
    )


def test_binary_and_multivalue_elements() -> None:
    ds = Dataset()
    ds.Rows = 512
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.SliceThickness = "1.25"
    for explicit in (True, False):
        assert encode_dataset(ds, explicit_vr=explicit) == encode_dataset_pydicom(
            ds, explicit_vr=explicit
        )


def test_unsupported_falls_back_to_pydicom() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = "Yamada^Tarou=山田^太郎"
    assert encode_dataset(ds, explicit_vr=True) == encode_dataset_pydicom(ds, explicit_vr=True)
