"""Relational searches split into hierarchical ones, and the gateway's check of matches."""

from __future__ import annotations

from typing import Any

from gateway.services.qido_attributes import tag_of
from gateway.services.qido_plan import merge_parent, scope_to_parent, split_relational
from gateway.services.qido_query import parse_qido_query
from gateway.services.qido_verify import matches_query


def _q(level: str, params: list[tuple[str, str]], **scope: str) -> Any:
    return parse_qido_query(level, params, max_limit=100, **scope)  # type: ignore[arg-type]


def _keys(query: Any) -> set[int]:
    return {k.path[0] for k in query.match_keys}


def test_study_and_plain_searches_are_not_split() -> None:
    assert split_relational(_q("STUDY", [("PatientID", "X")])) is None
    assert split_relational(_q("SERIES", [("Modality", "CT")])) is None
    assert split_relational(_q("IMAGE", [("InstanceNumber", "1")], study_uid="1.2")) is None


def test_all_series_with_study_keys_asks_the_studies_first() -> None:
    query = _q("SERIES", [("PatientID", "X"), ("Modality", "CT"), ("limit", "5")])
    split = split_relational(query)
    assert split is not None
    parent, child = split
    assert parent.level == "STUDY" and _keys(parent) == {tag_of("PatientID")}
    assert parent.limit is None and parent.offset == 0
    assert child.level == "SERIES" and _keys(child) == {tag_of("Modality")}
    scoped = scope_to_parent(child, {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}})
    assert scoped is not None and scoped.study_uid == "1.2.3"


def test_instances_with_series_keys_ask_the_series_with_the_study_scope() -> None:
    query = _q("IMAGE", [("Modality", "MR")], study_uid="1.2")
    parent, child = split_relational(query) or (None, None)
    assert parent is not None and child is not None
    assert parent.level == "SERIES" and parent.study_uid == "1.2"
    parent_item = {
        "0020000D": {"vr": "UI", "Value": ["1.2"]},
        "0020000E": {"vr": "UI", "Value": ["1.2.9"]},
    }
    scoped = scope_to_parent(child, parent_item)
    assert scoped is not None and (scoped.study_uid, scoped.series_uid) == ("1.2", "1.2.9")
    assert scope_to_parent(child, {"0020000D": {"vr": "UI", "Value": ["1.2"]}}) is None


def test_a_series_scoped_instance_search_stays_in_its_series() -> None:
    """/studies/1.2/series/1.2.9/instances?Modality=MR: the parent series search
    names every MR series of the study; only the URL's own may be searched."""
    query = _q("IMAGE", [("Modality", "MR")], study_uid="1.2", series_uid="1.2.9")
    parent, child = split_relational(query) or (None, None)
    assert parent is not None and child is not None

    def series(uid: str) -> dict[str, Any]:
        return {
            "0020000D": {"vr": "UI", "Value": ["1.2"]},
            "0020000E": {"vr": "UI", "Value": [uid]},
        }

    assert scope_to_parent(child, series("1.2.8")) is None
    scoped = scope_to_parent(child, series("1.2.9"))
    assert scoped is not None and scoped.series_uid == "1.2.9"


def test_merge_fills_only_what_the_child_lacks() -> None:
    child = {"00080060": {"vr": "CS", "Value": ["CT"]}, "00100010": {"vr": "PN"}}
    parent = {
        "00080060": {"vr": "CS", "Value": ["MR"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00080020": {"vr": "DA", "Value": ["20240101"]},
    }
    merged = merge_parent(child, parent)
    assert merged["00080060"]["Value"] == ["CT"]
    assert merged["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]
    assert merged["00080020"]["Value"] == ["20240101"]


def test_verify_drops_contradicting_matches_and_keeps_unknowns() -> None:
    query = _q("STUDY", [("StudyDate", "-20240317"), ("AccessionNumber", "A*1")])
    ok = {
        "00080020": {"vr": "DA", "Value": ["20240301"]},
        "00080050": {"vr": "SH", "Value": ["AB1"]},
    }
    assert matches_query(query, ok)
    assert not matches_query(query, {**ok, "00080020": {"vr": "DA"}})  # empty date: no range
    assert not matches_query(query, {**ok, "00080020": {"vr": "DA", "Value": ["20240318"]}})
    assert not matches_query(query, {**ok, "00080050": {"vr": "SH", "Value": ["AB2"]}})
    # Not returned at all: nothing to check.
    assert matches_query(query, {"00080050": {"vr": "SH", "Value": ["AB1"]}})


def test_verify_uid_lists_numbers_and_multivalued_attributes() -> None:
    query = _q("STUDY", [("StudyInstanceUID", "1.2,1.3"), ("ModalitiesInStudy", "MR")])
    good = {
        "0020000D": {"vr": "UI", "Value": ["1.3"]},
        "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
    }
    assert matches_query(query, good)
    assert not matches_query(query, {**good, "0020000D": {"vr": "UI", "Value": ["1.4"]}})
    assert not matches_query(query, {**good, "00080061": {"vr": "CS", "Value": ["CT"]}})
    numbers = _q("IMAGE", [("InstanceNumber", "5")], study_uid="1.2", series_uid="1.2.3")
    assert matches_query(numbers, {"00200013": {"vr": "IS", "Value": [5]}})
    assert not matches_query(numbers, {"00200013": {"vr": "IS", "Value": [6]}})
