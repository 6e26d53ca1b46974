"""The C-FIND identifier of a QIDO-RS search (QIDO-02, 05, 06, 07), and its encoding."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import Dataset
from pydicom.filereader import read_dataset

from gateway.dicom.encode import encode_dataset
from gateway.services.errors import InvalidParameter
from gateway.services.qido_attributes import (
    INCLUDE_ALL,
    INSTANCE_RESULT,
    REQUIRED_MATCHING,
    SERIES_RESULT,
    STUDY_RESULT,
    TagPath,
    result_levels,
    tag_of,
)
from gateway.services.qido_identifier import build_identifier
from gateway.services.qido_query import QidoQuery, parse_qido_query

RETRIEVE_URL = tag_of("RetrieveURL")


def identifier(
    *params: tuple[str, str],
    level: str = "STUDY",
    charset: str = "ISO_IR 192",
    **scope: str,
) -> Dataset:
    query = parse_qido_query(level, list(params), max_limit=1000, **scope)  # type: ignore[arg-type]
    return build_identifier(query, charset=charset)


def top_level(paths: tuple[TagPath, ...]) -> set[int]:
    return {p[0] for p in paths if p[0] != RETRIEVE_URL}


def keys(ds: Dataset) -> set[int]:
    return {int(element.tag) for element in ds}


def test_study_search_asks_for_the_study_result_attributes() -> None:
    ds = identifier()
    assert ds.QueryRetrieveLevel == "STUDY"
    assert keys(ds) == top_level(STUDY_RESULT) | {
        tag_of("QueryRetrieveLevel"),
        tag_of("InstanceAvailability"),
        tag_of("TimezoneOffsetFromUTC"),
    }
    assert all(ds[t].value in (None, "") for t in keys(ds) - {tag_of("QueryRetrieveLevel")})
    assert "SpecificCharacterSet" not in ds
    assert RETRIEVE_URL not in ds  # the gateway fills it in


def test_every_required_matching_key_is_also_a_return_key() -> None:
    # PS3.18 Table 10.6.1-5 keys are always in the identifier, so they are echoed.
    for level, paths in REQUIRED_MATCHING.items():
        ds = identifier(level=level)
        for path in paths:
            assert path[0] in ds, (level, path)


def test_study_series_search() -> None:
    ds = identifier(level="SERIES", study_uid="1.2.3")
    assert ds.QueryRetrieveLevel == "SERIES"
    assert ds.StudyInstanceUID == "1.2.3"
    assert top_level(SERIES_RESULT) <= keys(ds)
    assert "PatientName" not in ds
    request = ds.RequestAttributesSequence
    assert len(request) == 1
    assert keys(request[0]) == {tag_of("ScheduledProcedureStepID"), tag_of("RequestedProcedureID")}


def test_all_series_also_asks_for_study_attributes() -> None:
    ds = identifier(level="SERIES")
    assert top_level(STUDY_RESULT) | top_level(SERIES_RESULT) <= keys(ds)
    assert ds.StudyInstanceUID in (None, "")


def test_study_instances_ask_for_series_attributes() -> None:
    ds = identifier(level="IMAGE", study_uid="1.2.3")
    assert ds.QueryRetrieveLevel == "IMAGE"
    assert ds.StudyInstanceUID == "1.2.3"
    assert top_level(SERIES_RESULT) | top_level(INSTANCE_RESULT) <= keys(ds)
    assert "PatientName" not in ds
    assert ds.SeriesInstanceUID in (None, "")


def test_all_instances_ask_for_study_and_series_attributes() -> None:
    ds = identifier(level="IMAGE")
    assert top_level(STUDY_RESULT + SERIES_RESULT + INSTANCE_RESULT) <= keys(ds)


def test_series_instances() -> None:
    ds = identifier(level="IMAGE", study_uid="1.2.3", series_uid="1.2.3.4")
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID) == ("1.2.3", "1.2.3.4")
    assert top_level(INSTANCE_RESULT) <= keys(ds)
    assert "Modality" not in ds and "PatientName" not in ds
    for attr in ("Rows", "Columns", "BitsAllocated", "NumberOfFrames"):
        assert attr in ds


def test_result_levels() -> None:
    assert result_levels("SERIES", study_scoped=False, series_scoped=False) == ("STUDY", "SERIES")
    assert result_levels("IMAGE", study_scoped=True, series_scoped=False) == ("SERIES", "IMAGE")
    assert result_levels("IMAGE", study_scoped=True, series_scoped=True) == ("IMAGE",)


def test_match_keys_carry_their_values() -> None:
    ds = identifier(
        ("StudyInstanceUID", "1.2,1.3"),
        ("StudyDate", "20240101-"),
        ("PatientName", "Doe*"),
        ("OtherPatientIDsSequence.PatientID", "X1"),
    )
    assert list(ds.StudyInstanceUID) == ["1.2", "1.3"]
    assert ds.StudyDate == "20240101-"
    assert ds.PatientName == "Doe*"
    assert len(ds.OtherPatientIDsSequence) == 1
    assert ds.OtherPatientIDsSequence[0].PatientID == "X1"


def test_binary_match_values() -> None:
    ds = identifier(("Rows", "512"), ("FrameIncrementPointer", "00181063"), level="IMAGE")
    assert ds["Rows"].VR == "US" and ds.Rows == 512
    assert ds.FrameIncrementPointer == 0x00181063


def test_include_fields_are_empty_return_keys() -> None:
    ds = identifier(("includefield", "00081030,00200011"), ("PatientAge", ""), level="SERIES")
    assert ds.StudyDescription in (None, "")  # a study attribute in a series search: fine
    assert ds.SeriesNumber in (None, "")
    assert ds.PatientAge in (None, "")


def test_include_fields_below_the_query_level_stay_out_of_the_find() -> None:
    """OHIF's study search: includefield=00081030,00080060 (StudyDescription, Modality).

    Modality is a series attribute: pynetdicom's qrscp refuses a STUDY C-FIND that
    carries it (A900).  It is replaced by ModalitiesInStudy, which a study search
    asks for anyway; instance attributes are dropped from study and series searches.
    """
    ds = identifier(("includefield", "00081030,00080060"))
    assert ds.StudyDescription in (None, "")
    assert "Modality" not in ds and "ModalitiesInStudy" in ds
    ds = identifier(("includefield", "SOPClassUID,SliceThickness,SeriesDescription,InstanceNumber"))
    assert {"SOPClassUID", "SliceThickness", "SeriesDescription", "InstanceNumber"}.isdisjoint(
        ds.dir()
    )
    assert ds.SOPClassesInStudy in (None, "")
    ds = identifier(("SeriesNumber", ""), ("includefield", "RequestAttributesSequence"))
    assert "SeriesNumber" not in ds and "RequestAttributesSequence" not in ds
    series = identifier(("includefield", "Modality,InstanceNumber,SliceThickness"), level="SERIES")
    assert series.Modality in (None, "")
    assert "InstanceNumber" not in series and "SliceThickness" not in series
    instances = identifier(("includefield", "Modality,SliceThickness"), level="IMAGE")
    assert instances.Modality in (None, "") and instances.SliceThickness in (None, "")


def test_include_fields_our_tables_do_not_place_go_to_the_pacs() -> None:
    ds = identifier(("includefield", "ContrastBolusAgent"))
    assert ds.ContrastBolusAgent in (None, "")


def test_includefield_all_adds_the_curated_list() -> None:
    ds = identifier(("includefield", "all"))
    assert {p[0] for p in INCLUDE_ALL["STUDY"]} <= keys(ds)
    assert "SeriesDate" not in ds
    assert {p[0] for p in INCLUDE_ALL["SERIES"]} <= keys(
        identifier(("includefield", "all"), level="SERIES")
    )


# The image attributes a viewer asks for one by one (QIDO-06): `all` must ask for each.
IMAGE_ATTRIBUTES = (
    "ImageType",
    "SliceThickness",
    "SliceLocation",
    "PixelSpacing",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "SamplesPerPixel",
    "NumberOfFrames",
    "WindowCenter",
    "WindowWidth",
    "RescaleIntercept",
    "RescaleSlope",
    "AcquisitionNumber",
    "ContentDate",
    "ContentTime",
)


@pytest.mark.parametrize(
    "scope", [{}, {"study_uid": "1.2"}, {"study_uid": "1.2", "series_uid": "1.3"}]
)
def test_includefield_all_at_instance_level_has_the_common_image_attributes(
    scope: dict[str, str],
) -> None:
    everything = identifier(("includefield", "all"), level="IMAGE", **scope)
    for keyword in IMAGE_ATTRIBUTES:
        alone = identifier(("includefield", keyword), level="IMAGE", **scope)
        assert keyword in alone, keyword
        assert keyword in everything, keyword


def test_a_whole_sequence_is_asked_for_without_items() -> None:
    ds = identifier(("includefield", "OtherPatientIDsSequence"))
    assert ds["OtherPatientIDsSequence"].VR == "SQ"
    assert len(ds.OtherPatientIDsSequence) == 0


def test_sequence_include_and_match_share_one_item() -> None:
    ds = identifier(
        ("includefield", "OtherPatientIDsSequence"),
        ("includefield", "OtherPatientIDsSequence.IssuerOfPatientID"),
        ("OtherPatientIDsSequence.PatientID", "X1"),
    )
    (item,) = ds.OtherPatientIDsSequence
    assert item.PatientID == "X1"
    assert item.IssuerOfPatientID in (None, "")


def test_combined_date_time_sends_the_date_only() -> None:
    ds = identifier(("StudyDate", "20240101-20240103"), ("StudyTime", "1000-1200"))
    assert ds.StudyDate == "20240101-20240103"
    assert ds.StudyTime in (None, "")


def test_private_elements_go_with_their_creator() -> None:
    ds = identifier(("includefield", "00091001"), ("00090010", "GEMS_IDEN_01"))
    assert ds[0x00090010].value == "GEMS_IDEN_01"
    assert ds[0x00091001].VR == "LO"
    assert ds[0x00091001].value in (None, "")


def test_non_ascii_values_bring_the_character_set() -> None:
    ds = identifier(("PatientName", "Müller^Hans"))
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert "Müller".encode() in encode_dataset(ds, explicit_vr=True)


def test_the_character_set_is_the_configured_one() -> None:
    ds = identifier(("PatientName", "Müller"), charset="ISO_IR 100")
    assert ds.SpecificCharacterSet == "ISO_IR 100"
    encoded = encode_dataset(ds, explicit_vr=False)
    assert "Müller".encode("latin-1") in encoded
    assert "Müller".encode() not in encoded


def test_a_value_the_character_set_cannot_carry_is_refused() -> None:
    with pytest.raises(InvalidParameter) as info:
        identifier(("PatientName", "山田^太郎"), charset="ISO_IR 100")
    assert info.value.parameter == "PatientName"
    assert "ISO_IR 100" in info.value.reason


def test_multi_term_character_sets() -> None:
    ds = identifier(("PatientName", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎"), charset="ISO 2022 IR 13\\ISO 2022 IR 87")
    assert list(ds.SpecificCharacterSet) == ["ISO 2022 IR 13", "ISO 2022 IR 87"]


def test_an_unknown_configured_character_set_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        identifier(("PatientName", "Müller"), charset="UTF-8")


def test_identifier_round_trips_through_both_encodings() -> None:
    ds = identifier(
        ("StudyInstanceUID", "1.2,1.3"),
        ("PatientName", "Müller*"),
        ("includefield", "OtherPatientIDsSequence"),
        level="SERIES",
    )
    for explicit in (True, False):
        decoded = read_dataset(
            BytesIO(encode_dataset(ds, explicit_vr=explicit)),
            is_implicit_VR=not explicit,
            is_little_endian=True,
        )
        assert decoded.QueryRetrieveLevel == "SERIES"
        assert list(decoded.StudyInstanceUID) == ["1.2", "1.3"]
        assert str(decoded.PatientName) == "Müller*"
        assert len(decoded.OtherPatientIDsSequence) == 0


def test_encode_dataset_bytes() -> None:
    ds = Dataset()
    ds.PatientID = "AB"
    ds.Rows = 1
    assert encode_dataset(ds, explicit_vr=True) == (
        b"\x10\x00\x20\x00LO\x02\x00AB" + b"\x28\x00\x10\x00US\x02\x00\x01\x00"
    )
    assert encode_dataset(ds, explicit_vr=False) == (
        b"\x10\x00\x20\x00\x02\x00\x00\x00AB" + b"\x28\x00\x10\x00\x02\x00\x00\x00\x01\x00"
    )


def test_query_object_is_not_changed_by_building() -> None:
    query: QidoQuery = parse_qido_query("STUDY", [("PatientID", "1")], max_limit=10)
    first = build_identifier(query, charset="ISO_IR 192")
    second = build_identifier(query, charset="ISO_IR 192")
    assert first == second
