"""QIDO-RS query parsing (checklist B: QIDO-01..06, 08, 09, 12)."""

from __future__ import annotations

from datetime import datetime

import pytest

from gateway.services.errors import InvalidParameter
from gateway.services.qido_attributes import tag_of
from gateway.services.qido_query import (
    EMPTY_VALUE_WARNING,
    FUZZY_WARNING,
    MULTIPLE_VALUE_WARNING,
    CombinedDateTimeRange,
    MatchKey,
    QidoQuery,
    parse_attribute,
    parse_qido_query,
    validate_uid,
)

STUDY_DATE = tag_of("StudyDate")
STUDY_TIME = tag_of("StudyTime")
PATIENT_NAME = tag_of("PatientName")
PATIENT_ID = tag_of("PatientID")
STUDY_UID = tag_of("StudyInstanceUID")
SERIES_UID = tag_of("SeriesInstanceUID")


def parse(*params: tuple[str, str], level: str = "STUDY", **kw: object) -> QidoQuery:
    kw.setdefault("max_limit", 1000)
    return parse_qido_query(level, list(params), **kw)  # type: ignore[arg-type]


def only_key(query: QidoQuery) -> MatchKey:
    assert len(query.match_keys) == 1, query.match_keys
    return query.match_keys[0]


def refused(*params: tuple[str, str], level: str = "STUDY", **kw: object) -> InvalidParameter:
    with pytest.raises(InvalidParameter) as info:
        parse(*params, level=level, **kw)
    assert info.value.status == 400
    return info.value


# --- QIDO-01 attribute names ----------------------------------------------------


def test_keyword_and_tag_name_the_same_attribute() -> None:
    by_keyword = only_key(parse(("PatientID", "123")))
    assert by_keyword == only_key(parse(("00100020", "123")))
    assert by_keyword == only_key(parse(("00100020".lower(), "123")))
    assert by_keyword == MatchKey((PATIENT_ID,), "LO", "123", "single")


def test_keywords_are_case_sensitive_and_a_wrong_case_is_ignored() -> None:
    query = parse(("patientid", "123"), ("PATIENTID", "123"))
    assert query.match_keys == ()
    assert query.include_fields == frozenset()


@pytest.mark.parametrize(
    "name",
    [
        "OtherPatientIDsSequence.PatientID",
        "00101002.00100020",
        "00101002.PatientID",
        "OtherPatientIDsSequence.00100020",
    ],
)
def test_sequence_paths(name: str) -> None:
    key = only_key(parse((name, "X1")))
    assert key == MatchKey((tag_of("OtherPatientIDsSequence"), PATIENT_ID), "LO", "X1", "single")


def test_a_path_through_a_non_sequence_is_refused() -> None:
    error = refused(("PatientName.PatientID", "X"))
    assert error.parameter == "PatientName.PatientID"
    assert error.reason == "00100010 is not a sequence"


@pytest.mark.parametrize(
    "name",
    ["_", "foo", "PatientNam", "requestType", "0010002", "001000200", "00000900", "00020010", "."],
)
def test_unknown_parameters_are_ignored(name: str) -> None:
    # PS3.18 8.3.4 / QIDO-12; also command and file meta elements, never identifier keys.
    query = parse((name, "1"))
    assert query.match_keys == () and query.include_fields == frozenset()


def test_parse_attribute() -> None:
    assert parse_attribute("RequestAttributesSequence.RequestedProcedureID") == (
        0x00400275,
        0x00401001,
    )
    assert parse_attribute("PatientName") == (PATIENT_NAME,)
    assert parse_attribute("00091001") == (0x00091001,)
    assert parse_attribute("00090100") is None  # private, reserved block range
    assert parse_attribute("PatientName.") is None


def test_parameters_the_gateway_controls_are_ignored() -> None:
    query = parse(("QueryRetrieveLevel", "PATIENT"), ("SpecificCharacterSet", "ISO_IR 100"))
    assert query.match_keys == () and query.include_fields == frozenset()


# --- QIDO-03 matching -----------------------------------------------------------


def test_uid_list_comma_becomes_backslash() -> None:
    key = only_key(parse(("StudyInstanceUID", "1.2.3,1.2.4, 0.5")))
    assert key == MatchKey((STUDY_UID,), "UI", "1.2.3\\1.2.4\\0.5", "uid_list")


def test_a_single_uid_is_single_value_matching() -> None:
    assert only_key(parse(("StudyInstanceUID", "1.2.840.10008"))).matching == "single"


def test_repeated_uid_parameters_form_one_list() -> None:
    key = only_key(parse(("StudyInstanceUID", "1.2"), ("StudyInstanceUID", "1.3,1.4")))
    assert key.value == "1.2\\1.3\\1.4"


@pytest.mark.parametrize(
    "value",
    ["1.02.3", "1..2", "1.2.", ".1", "1.2,,1.3", "1.2,", "1.2a", "1.2\\1.3", "1." + "2" * 63],
)
def test_invalid_uids_are_refused(value: str) -> None:
    error = refused(("StudyInstanceUID", value))
    assert error.parameter == "StudyInstanceUID"
    assert error.reason.startswith("not a valid UID")


def test_uid_of_64_characters_is_accepted() -> None:
    uid = "1." + "2" * 62
    assert validate_uid("x", uid) == uid


def test_repeating_a_non_uid_attribute_is_refused() -> None:
    error = refused(("PatientID", "1"), ("PatientID", "2"))
    assert str(error) == "PatientID: given more than once"


def test_an_empty_repetition_does_not_count() -> None:
    assert only_key(parse(("PatientID", ""), ("PatientID", "2"))).value == "2"


@pytest.mark.parametrize(
    ("name", "value", "vr"),
    [
        ("PatientName", "Doe*", "PN"),
        ("Modality", "C?", "CS"),
        ("StudyDescription", "*chest*", "LO"),
    ],
)
def test_wildcards_on_string_vrs(name: str, value: str, vr: str) -> None:
    key = only_key(parse((name, value)))
    assert (key.vr, key.value, key.matching) == (vr, value, "wildcard")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("StudyDate", "2024*"),
        ("StudyTime", "10?0"),
        ("StudyInstanceUID", "1.2.*"),
        ("NumberOfStudyRelatedSeries", "1*"),
        ("Rows", "5?"),
    ],
)
def test_wildcards_elsewhere_are_refused(name: str, value: str) -> None:
    assert refused((name, value)).reason.startswith("wildcards are not allowed on VR")


@pytest.mark.parametrize("value", ["", "*", "**", "  "])
def test_universal_matching_makes_a_return_key(value: str) -> None:
    query = parse(("PatientName", value))
    assert query.match_keys == ()
    assert query.include_fields == frozenset({(PATIENT_NAME,)})


def test_string_values_are_trimmed_and_backslash_is_a_multi_value_key() -> None:
    assert only_key(parse(("ModalitiesInStudy", " CT\\MR "))).value == "CT\\MR"


def test_control_characters_are_refused() -> None:
    assert refused(("PatientID", "a\x00b")).reason.startswith("control characters")


@pytest.mark.parametrize(
    ("value", "matching"),
    [
        ("20240102", "single"),
        ("20240101-20240131", "range"),
        ("20240101-", "range"),
        ("-20240131", "range"),
        ("20240101-20240101", "range"),
        ("20240229", "single"),
    ],
)
def test_valid_dates(value: str, matching: str) -> None:
    assert only_key(parse(("PatientBirthDate", value))) == MatchKey(
        (tag_of("PatientBirthDate"),), "DA", value, matching
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2024-13-45", "not a valid DA range: '2024-13-45'"),
        ("2024-01-02", "not a valid DA range: '2024-01-02'"),
        ("20241345", "not a valid DA value: '20241345'"),
        ("20230229", "not a valid DA value: '20230229'"),
        ("2024010", "not a valid DA value: '2024010'"),
        ("2024.01.02", "not a valid DA value: '2024.01.02'"),
        ("-", "not a valid DA range: '-'"),
        ("20240131-20240101", "not a valid DA range: '20240131-20240101'"),
    ],
)
def test_invalid_dates(value: str, reason: str) -> None:
    error = refused(("StudyDate", value))
    assert str(error) == f"StudyDate: {reason}"


@pytest.mark.parametrize(
    ("value", "matching"),
    [
        ("10", "single"),
        ("1030", "single"),
        ("103000", "single"),
        ("103000.123456", "single"),
        ("235960", "single"),  # leap second
        ("0800-1200", "range"),
        ("0800-", "range"),
        ("-120000.5", "range"),
    ],
)
def test_valid_times(value: str, matching: str) -> None:
    key = only_key(parse(("SeriesTime", value), level="SERIES"))
    assert (key.vr, key.value, key.matching) == ("TM", value, matching)


@pytest.mark.parametrize(
    "value", ["24", "1060", "106061", "10:30", "1030.5", "103000.1234567", "1200-0800", "1-2-3"]
)
def test_invalid_times(value: str) -> None:
    assert refused(("SeriesTime", value), level="SERIES").reason.startswith("not a valid TM")


@pytest.mark.parametrize(
    ("value", "matching"),
    [
        ("2024", "single"),
        ("20240102103000.5+0100", "single"),
        ("20240101-0500", "single"),  # a date with a UTC offset, not a range
        ("2024-2025", "range"),
        ("20240101-20240102", "range"),
        ("20240101120000-0500-20240102120000-0500", "range"),
        ("-202401", "range"),
    ],
)
def test_datetimes(value: str, matching: str) -> None:
    key = only_key(parse(("AcquisitionDateTime", value), level="IMAGE"))
    assert (key.vr, key.value, key.matching) == ("DT", value, matching)


@pytest.mark.parametrize(
    "value", ["202413", "20240132", "2024010125", "20240101+1500", "2025-2024"]
)
def test_invalid_datetimes(value: str) -> None:
    refused(("AcquisitionDateTime", value), level="IMAGE")


@pytest.mark.parametrize(
    ("name", "value", "vr", "expected"),
    [
        ("NumberOfStudyRelatedSeries", "12", "IS", "12"),
        ("NumberOfStudyRelatedSeries", "+12", "IS", "+12"),
        ("PatientSize", "1.75", "DS", "1.75"),
        ("PatientSize", "-1e3", "DS", "-1e3"),
        ("Rows", "512", "US", 512),
        ("DiffusionBValue", "1000.5", "FD", 1000.5),
        ("FrameIncrementPointer", "00181063", "AT", 0x00181063),
        ("PatientAge", "045Y", "AS", "045Y"),
    ],
)
def test_numeric_values(name: str, value: str, vr: str, expected: object) -> None:
    key = only_key(parse((name, value)))
    assert (key.vr, key.value, key.matching) == (vr, expected, "single")
    assert type(key.value) is type(expected)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NumberOfStudyRelatedSeries", "1.5"),
        ("NumberOfStudyRelatedSeries", "abc"),
        ("NumberOfStudyRelatedSeries", "3000000000"),
        ("PatientSize", "1,75"),
        ("PatientSize", "12345678901234567"),
        ("Rows", "-1"),
        ("Rows", "70000"),
        ("Rows", "5\\6"),
        ("DiffusionBValue", "nan"),
        ("DiffusionBValue", "1e400"),
        ("FrameIncrementPointer", "0018106"),
        ("PatientAge", "45Y"),
    ],
)
def test_invalid_numeric_values(name: str, value: str) -> None:
    assert refused((name, value)).reason.startswith("not a valid")


@pytest.mark.parametrize("name", ["OtherPatientIDsSequence", "PixelData"])
def test_matching_on_sequence_or_bulk_values_is_refused(name: str) -> None:
    assert refused((name, "x")).reason.startswith("matching is not supported on VR")


def test_retrieve_url_cannot_be_matched_but_can_be_included() -> None:
    refused(("RetrieveURL", "http://x"))
    assert parse(("includefield", "RetrieveURL")).include_fields == {(tag_of("RetrieveURL"),)}


# --- QIDO-04 combined date and time ------------------------------------------------


def test_date_and_time_become_one_range_checked_by_the_gateway() -> None:
    query = parse(("StudyDate", "20240101-20240103"), ("StudyTime", "1000-1200"))
    assert only_key(query) == MatchKey((STUDY_DATE,), "DA", "20240101-20240103", "range")
    assert (STUDY_TIME,) in query.include_fields
    assert query.combined_datetime == (
        CombinedDateTimeRange(
            STUDY_DATE,
            STUDY_TIME,
            datetime(2024, 1, 1, 10, 0),
            datetime(2024, 1, 3, 12, 0, 59, 999999),
        ),
    )
    assert query.has_post_filter


def result(day: str | None, time: str | None) -> dict[str, object]:
    item: dict[str, object] = {"0020000D": {"vr": "UI", "Value": ["1.2"]}}
    item["00080020"] = {"vr": "DA", "Value": [day]} if day else {"vr": "DA"}
    item["00080030"] = {"vr": "TM", "Value": [time]} if time else {"vr": "TM"}
    return item


@pytest.mark.parametrize(
    ("day", "time", "kept"),
    [
        ("20240101", "0959", False),  # first day, before the start time
        ("20240101", "1000", True),
        ("20240101", "2300", True),  # combined: not 10-12 on every day
        ("20240102", "0100", True),
        ("20240103", "1200", True),
        ("20240103", "120059.9", True),
        ("20240103", "1201", False),
        ("20240103", None, True),  # no time: part of the day is in range
        ("20240104", None, False),
        (None, "1100", False),
        ("garbage", "1100", True),  # the PACS matched a date we cannot read
        ("20240102", "10:00", True),  # unreadable time: judged by the day
    ],
)
def test_post_filter(day: str | None, time: str | None, kept: bool) -> None:
    query = parse(("StudyDate", "20240101-20240103"), ("StudyTime", "1000-1200"))
    assert query.post_filter(result(day, time)) is kept


def test_single_date_and_open_time_range() -> None:
    query = parse(("StudyDate", "20240102"), ("StudyTime", "1000-"))
    assert query.combined_datetime[0].lower == datetime(2024, 1, 2, 10, 0)
    assert query.combined_datetime[0].upper == datetime(2024, 1, 2, 23, 59, 59, 999999)
    assert not query.post_filter(result("20240102", "0959"))
    assert query.post_filter(result("20240102", "235959"))


def test_open_date_range_leaves_that_end_open() -> None:
    query = parse(("StudyDate", "-20240102"), ("StudyTime", "1000-1200"))
    assert query.combined_datetime[0].lower is None
    assert query.post_filter(result("19990101", "0000"))
    assert not query.post_filter(result("20240102", "1300"))


def test_time_alone_goes_to_the_pacs() -> None:
    query = parse(("StudyTime", "1000-1200"))
    assert only_key(query) == MatchKey((STUDY_TIME,), "TM", "1000-1200", "range")
    assert not query.has_post_filter
    assert query.post_filter({})


def test_series_date_and_time_are_combined_too() -> None:
    query = parse(("SeriesDate", "20240101"), ("SeriesTime", "10"), level="SERIES")
    assert [k.path for k in query.match_keys] == [(tag_of("SeriesDate"),)]
    assert len(query.combined_datetime) == 1


# --- QIDO-05 non-ASCII ---------------------------------------------------------------


def test_non_ascii_values_are_flagged() -> None:
    assert parse(("PatientName", "Müller^Hans")).has_non_ascii
    assert parse(("PatientName", "山田^太郎")).has_non_ascii
    assert not parse(("PatientName", "Muller^Hans")).has_non_ascii
    assert not parse().has_non_ascii


# --- QIDO-06 includefield -----------------------------------------------------------


def test_includefield_comma_list_repeated() -> None:
    query = parse(
        ("includefield", "00081030, 00080060,"),
        ("includefield", "PatientAge"),
        ("includefield", "RequestAttributesSequence.RequestedProcedureID"),
    )
    assert query.include_fields == {
        (tag_of("StudyDescription"),),
        (tag_of("Modality"),),
        (tag_of("PatientAge"),),
        (tag_of("RequestAttributesSequence"), tag_of("RequestedProcedureID")),
    }
    assert not query.include_all


def test_includefield_all() -> None:
    query = parse(("includefield", "all"), ("includefield", "PatientAge"))
    assert query.include_all
    assert parse(("includefield", "ALL")).include_all


@pytest.mark.parametrize("value", ["patientage", "Foo", "0010", "PatientName.PatientID"])
def test_includefield_with_an_unknown_attribute_is_refused(value: str) -> None:
    assert refused(("includefield", value)).parameter == "includefield"


def test_private_include_needs_its_creator() -> None:
    error = refused(("includefield", "00091001"))
    assert error.reason == "private element needs its creator 00090010"
    query = parse(("includefield", "00091001"), ("00090010", "GEMS_IDEN_01"))
    assert query.include_fields == {(0x00091001,)}
    assert query.vr_of((0x00091001,)) == "LO"  # from pydicom's private dictionary
    assert only_key(query) == MatchKey((0x00090010,), "LO", "GEMS_IDEN_01", "single")


def test_private_element_of_unknown_creator_is_a_return_key_only() -> None:
    query = parse(("includefield", "00091001"), ("00090010", "ACME 1.0"))
    assert query.vr_of((0x00091001,)) == "UN"
    refused(("00091001", "x"), ("00090010", "ACME 1.0"))


def test_unknown_public_tag_is_a_return_key_of_vr_un() -> None:
    query = parse(("includefield", "00121234"))
    assert query.vr_of((0x00121234,)) == "UN"


# --- QIDO-08 fuzzymatching and friends ------------------------------------------------


def test_fuzzymatching_true_warns() -> None:
    query = parse(("fuzzymatching", "true"), ("PatientName", "Doe"))
    assert query.fuzzymatching
    assert query.warnings == (
        "The fuzzymatching parameter is not supported. Only literal matching has been performed.",
    )
    assert query.warnings == (FUZZY_WARNING,)


def test_fuzzymatching_false_and_absent_do_not_warn() -> None:
    assert parse(("fuzzymatching", "false")).warnings == ()
    assert parse(("fuzzymatching", "FALSE")).fuzzymatching is False
    assert parse().warnings == ()


def test_emptyvaluematching_and_multiplevaluematching_warn() -> None:
    query = parse(("emptyvaluematching", "true"), ("multiplevaluematching", "True"))
    assert query.emptyvaluematching and query.multiplevaluematching
    assert query.warnings == (EMPTY_VALUE_WARNING, MULTIPLE_VALUE_WARNING)
    assert EMPTY_VALUE_WARNING == (
        "The emptyvaluematching parameter is not supported. "
        "Only literal matching has been performed."
    )


@pytest.mark.parametrize("name", ["fuzzymatching", "emptyvaluematching"])
@pytest.mark.parametrize("value", ["yes", "1", ""])
def test_boolean_parameters_refuse_other_values(name: str, value: str) -> None:
    assert refused((name, value)).parameter == name


# --- QIDO-09 limit and offset ------------------------------------------------------


def test_limit_and_offset() -> None:
    query = parse(("limit", "25"), ("offset", "50"))
    assert (query.limit, query.offset) == (25, 50)
    assert (parse().limit, parse().offset) == (None, 0)
    assert parse(("limit", "0")).limit == 0
    assert parse(("limit", "007")).limit == 7


def test_limit_is_capped_to_the_server_maximum() -> None:
    assert parse(("limit", "5000"), max_limit=100).limit == 100
    assert parse(("limit", "100"), max_limit=100).limit == 100


@pytest.mark.parametrize("name", ["limit", "offset"])
@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "", "+1", " 1", "1e3", "٣"])
def test_limit_and_offset_must_be_unsigned_integers(name: str, value: str) -> None:
    error = refused((name, value))
    assert str(error) == f"{name}: must be an unsigned integer, not {value!r}"


def test_repeated_limit() -> None:
    assert parse(("limit", "5"), ("limit", "5")).limit == 5
    assert refused(("limit", "5"), ("limit", "6")).parameter == "limit"


def test_ohif_study_list_request() -> None:
    # OHIF-01: the study list query a viewer sends first.
    query = parse(
        ("limit", "101"),
        ("offset", "0"),
        ("fuzzymatching", "false"),
        ("includefield", "00081030,00080060"),
    )
    assert query == QidoQuery(
        level="STUDY",
        study_uid=None,
        series_uid=None,
        match_keys=(),
        include_fields=frozenset({(tag_of("StudyDescription"),), (tag_of("Modality"),)}),
        include_all=False,
        limit=101,
        offset=0,
        fuzzymatching=False,
        emptyvaluematching=False,
        multiplevaluematching=False,
        warnings=(),
    )


# --- path scope ------------------------------------------------------------------------


def test_study_uid_in_the_path() -> None:
    query = parse(level="SERIES", study_uid="1.2.3")
    assert (query.level, query.study_uid, query.series_uid) == ("SERIES", "1.2.3", None)


def test_invalid_uid_in_the_path_is_refused() -> None:
    assert refused(level="SERIES", study_uid="1.2.abc").parameter == "StudyInstanceUID"
    error = refused(level="IMAGE", study_uid="1.2", series_uid="01.2")
    assert error.parameter == "SeriesInstanceUID"


def test_a_parameter_repeating_the_path_uid_is_dropped() -> None:
    query = parse(("StudyInstanceUID", "1.2.3"), level="SERIES", study_uid="1.2.3")
    assert query.match_keys == ()


def test_a_parameter_contradicting_the_path_uid_is_refused() -> None:
    error = refused(("StudyInstanceUID", "1.2.4"), level="SERIES", study_uid="1.2.3")
    assert error.reason == "contradicts the UID in the path: '1.2.4'"
    refused(
        ("SeriesInstanceUID", "9.9,1.2.5"), level="IMAGE", study_uid="1.2.3", series_uid="1.2.5"
    )


@pytest.mark.parametrize(
    ("level", "study", "series"),
    [
        ("PATIENT", None, None),
        ("STUDY", "1.2", None),
        ("SERIES", "1.2", "1.3"),
        ("IMAGE", None, "1.3"),
    ],
)
def test_impossible_scopes_are_programming_errors(
    level: str, study: str | None, series: str | None
) -> None:
    with pytest.raises(ValueError):
        parse(level=level, study_uid=study, series_uid=series)


def test_error_message_shape() -> None:
    error = refused(("StudyDate", "2024-13-45"))
    assert (error.parameter, error.reason) == ("StudyDate", "not a valid DA range: '2024-13-45'")
    assert str(error) == error.message == "StudyDate: not a valid DA range: '2024-13-45'"
