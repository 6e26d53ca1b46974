"""Relational QIDO searches as hierarchical C-FINDs (PS3.4 C.4.1.2.2, PS3.18 10.6.1).

``/series?PatientID=X`` or ``/studies/{s}/instances?Modality=MR`` match on an
attribute above the query level.  That is a relational query, an optional
extended negotiation that many PACS lack: dcmqrscp ignores such keys and
returns every series.  So the gateway asks the level above first (the studies
of patient X) and then each parent's children, scoped by its UID, the way
a hierarchical SCU must (PS3.18 Table 10.6.1-1 makes All Series and All
Instances optional for a DIMSE proxy for this reason).  Parents' attributes
are merged into the children, so All Series results carry the study
attributes PS3.18 10.6.3.3 asks for even from a PACS that does not return them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway.services.qido_attributes import Level, attribute_level
from gateway.services.qido_query import QidoQuery

_ORDER: dict[Level, int] = {"STUDY": 0, "SERIES": 1, "IMAGE": 2}
_PARENT: dict[Level, Level] = {"SERIES": "STUDY", "IMAGE": "SERIES"}
_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"


def _above(tag: int, level: Level) -> bool:
    owner = attribute_level(tag)
    return owner is not None and _ORDER[owner] < _ORDER[level]


def split_relational(query: QidoQuery) -> tuple[QidoQuery, QidoQuery] | None:
    """(parent search, child search) for a query with keys above its level, else None."""
    if query.level == "STUDY":
        return None
    upper = tuple(k for k in query.match_keys if _above(k.path[0], query.level))
    if not upper:
        return None
    rest = tuple(k for k in query.match_keys if k not in upper)
    upper_dt = tuple(r for r in query.combined_datetime if _above(r.date_tag, query.level))
    rest_dt = tuple(r for r in query.combined_datetime if r not in upper_dt)
    parent = dataclasses.replace(
        query,
        level=_PARENT[query.level],
        series_uid=None,
        match_keys=upper,
        combined_datetime=upper_dt,
        limit=None,
        offset=0,
        warnings=(),
    )
    child = dataclasses.replace(
        query, match_keys=rest, combined_datetime=rest_dt, limit=None, offset=0, warnings=()
    )
    return parent, child


def _uid(item: dict[str, Any], tag: str) -> str | None:
    values = item.get(tag, {}).get("Value")
    return str(values[0]) if values else None


def scope_to_parent(child: QidoQuery, parent: dict[str, Any]) -> QidoQuery | None:
    """The child search limited to one parent's UIDs; None if the parent has none."""
    study = _uid(parent, _STUDY_UID) or child.study_uid
    if study is None:
        return None
    if child.level == "SERIES":
        return dataclasses.replace(child, study_uid=study)
    series = _uid(parent, _SERIES_UID)
    if series is None:
        return None
    if child.series_uid is not None and series != child.series_uid:
        # The parent search cannot carry the URL's series (a series-level search is
        # not scoped to a series), so it names the study's other series too.
        return None
    return dataclasses.replace(child, study_uid=study, series_uid=series)


def merge_parent(item: dict[str, Any], parent: dict[str, Any]) -> dict[str, Any]:
    """The child's attributes, completed with the parent's where the child has no value."""
    for tag, attr in parent.items():
        mine = item.get(tag)
        if mine is None or ("Value" not in mine and "Value" in attr):
            item[tag] = attr
    return item
