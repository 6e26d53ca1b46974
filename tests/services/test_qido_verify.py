"""The gateway's re-check of the PACS's matches (qido_verify): sequence matching (QIDO-01/02).

PS3.4 C.2.2.2.6: a sequence key matches when any one item of the result's
sequence matches every key of that sequence.  Orthanc ignores keys inside
RequestAttributesSequence but returns the items, so the gateway must decide.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.services.qido_query import QidoQuery, parse_qido_query
from gateway.services.qido_verify import matches_query

REQUEST_ATTRIBUTES = "00400275"
REQUESTED_PROCEDURE_ID = "00401001"
SPS_ID = "00400009"


def _series_query(*params: tuple[str, str]) -> QidoQuery:
    return parse_qido_query("SERIES", list(params), study_uid="1.2", max_limit=100)


def _item(rp_id: str | None = None, sps_id: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rp_id is not None:
        out[REQUESTED_PROCEDURE_ID] = {"vr": "SH", "Value": [rp_id]}
    if sps_id is not None:
        out[SPS_ID] = {"vr": "SH", "Value": [sps_id]}
    return out


def _series(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "0020000E": {"vr": "UI", "Value": ["1.2.3"]},
        REQUEST_ATTRIBUTES: {"vr": "SQ", "Value": list(items)},
    }


@pytest.mark.parametrize(
    "path",
    [
        "RequestAttributesSequence.RequestedProcedureID",
        "00400275.00401001",
        "RequestAttributesSequence.00401001",
        "00400275.RequestedProcedureID",
    ],
)
def test_a_sequence_key_drops_a_result_whose_items_contradict_it(path: str) -> None:
    query = _series_query((path, "RP2"))
    assert matches_query(query, _series(_item("RP2", "SPS2")))
    assert not matches_query(query, _series(_item("RP1", "SPS1")))


def test_any_one_item_may_match() -> None:
    query = _series_query(("RequestAttributesSequence.ScheduledProcedureStepID", "SPS2"))
    assert matches_query(query, _series(_item("RP1", "SPS1"), _item("RP2", "SPS2")))
    assert not matches_query(query, _series(_item("RP1", "SPS1"), _item("RP3", "SPS3")))


def test_all_keys_of_a_sequence_must_match_in_the_same_item() -> None:
    query = _series_query(
        ("RequestAttributesSequence.RequestedProcedureID", "RP1"),
        ("RequestAttributesSequence.ScheduledProcedureStepID", "SPS2"),
    )
    # RP1 is in one item and SPS2 in another: no single item matches both.
    assert not matches_query(query, _series(_item("RP1", "SPS1"), _item("RP2", "SPS2")))
    assert matches_query(query, _series(_item("RP2", "SPS2"), _item("RP1", "SPS2")))


def test_wildcards_inside_a_sequence() -> None:
    query = _series_query(("RequestAttributesSequence.RequestedProcedureID", "RP?"))
    assert matches_query(query, _series(_item("RP7")))
    assert not matches_query(query, _series(_item("XRP7")))


def test_a_sequence_the_pacs_did_not_return_is_trusted() -> None:
    """No sequence, no items, or items without the attribute: the PACS's match stands."""
    query = _series_query(("RequestAttributesSequence.RequestedProcedureID", "RP1"))
    assert matches_query(query, {"0020000E": {"vr": "UI", "Value": ["1.2.3"]}})
    assert matches_query(query, {REQUEST_ATTRIBUTES: {"vr": "SQ"}})
    assert matches_query(query, _series())
    assert matches_query(query, _series(_item(sps_id="SPS1")))


def test_sequence_and_top_level_keys_together() -> None:
    query = _series_query(
        ("Modality", "MR"), ("RequestAttributesSequence.RequestedProcedureID", "RP1")
    )
    good = {**_series(_item("RP1")), "00080060": {"vr": "CS", "Value": ["MR"]}}
    assert matches_query(query, good)
    assert not matches_query(query, {**good, "00080060": {"vr": "CS", "Value": ["CT"]}})
    assert not matches_query(query, {**good, **_series(_item("RP2"))})


def test_nested_sequences() -> None:
    path = "RequestAttributesSequence.ReferencedStudySequence.ReferencedSOPInstanceUID"
    query = _series_query((path, "1.2.840.1"))

    def result(uid: str) -> dict[str, Any]:
        ref = {"00081155": {"vr": "UI", "Value": [uid]}}
        inner = {"00081110": {"vr": "SQ", "Value": [ref]}}
        return {REQUEST_ATTRIBUTES: {"vr": "SQ", "Value": [inner]}}

    assert matches_query(query, result("1.2.840.1"))
    assert not matches_query(query, result("1.2.840.2"))


# --- attributes read from the instances' headers (qido_headers): absence is an answer

PPS_DATE, PPS_TIME = 0x00400244, 0x00400245
KNOWN = frozenset({0x00400275, PPS_DATE, PPS_TIME})


def test_a_known_sequence_without_a_matching_item_does_not_match() -> None:
    query = _series_query(("RequestAttributesSequence.RequestedProcedureID", "RP1"))
    uid_only = {"0020000E": {"vr": "UI", "Value": ["1.2.3"]}}
    for item in (uid_only, {REQUEST_ATTRIBUTES: {"vr": "SQ"}}, _series(_item(sps_id="SPS1"))):
        assert matches_query(query, item)  # what a PACS left out is trusted ...
        assert not matches_query(query, item, KNOWN)  # ... what the instance lacks is not
    assert matches_query(query, _series(_item("RP1")), KNOWN)


@pytest.mark.parametrize(
    ("key", "match", "value", "expected"),
    [
        ("PerformedProcedureStepStartDate", "20200202", None, False),
        ("PerformedProcedureStepStartDate", "20200202", "20200202", True),
        ("PerformedProcedureStepStartTime", "121212", "121212", True),
        ("PerformedProcedureStepStartTime", "121212", "121212.5", True),
        ("PerformedProcedureStepStartTime", "121212", "131313", False),
        ("PerformedProcedureStepStartTime", "130000-", "131313", True),
        ("PerformedProcedureStepStartTime", "130000-", "121212", False),
        ("PerformedProcedureStepStartTime", "-130000", "121212", True),
        ("PerformedProcedureStepStartTime", "121212", None, False),
        ("PerformedProcedureStepStartTime", "1030", "103015", True),
        ("PerformedProcedureStepStartTime", "1030", "103115", False),
        ("PerformedProcedureStepStartTime", "103000-", "1030", True),
        ("PerformedProcedureStepStartTime", "103000.5", "103000.500", True),
        ("PerformedProcedureStepStartTime", "-1030", "103059.9", True),
        ("PerformedProcedureStepStartTime", "-1030", "1031", False),
        ("PerformedProcedureStepStartTime", "1030", "10:30:15", True),
        ("PerformedProcedureStepStartTime", "1030", "not-a-time", False),
    ],
)
def test_known_dates_and_times(key: str, match: str, value: str | None, expected: bool) -> None:
    query = _series_query((key, match))
    tag = PPS_DATE if key.endswith("Date") else PPS_TIME
    vr = "DA" if tag == PPS_DATE else "TM"
    item = {f"{tag:08X}": {"vr": vr, "Value": [value]} if value else {"vr": vr}}
    assert matches_query(query, item, KNOWN) is expected


def test_times_are_not_checked_unless_known() -> None:
    """A PACS's TM matching stands (formats vary); only header values are checked."""
    query = _series_query(("PerformedProcedureStepStartTime", "121212"))
    assert matches_query(query, {f"{PPS_TIME:08X}": {"vr": "TM", "Value": ["131313"]}})
