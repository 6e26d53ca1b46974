"""Checking a PACS's matches against the query (PS3.4 C.2.2.2), in the gateway.

PACS differ in what they really match: dcmqrscp drops matching keys it does
not index and returns every entity; Orthanc 1.10 lets an empty StudyDate match
a date range.  A match that visibly contradicts a key of the query is dropped
here.  The check is conservative: when the PACS did not return the attribute
at all, nothing can be said and the match is kept; person names are not
checked, because their matching is implementation-defined (PS3.4 C.2.2.2.1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from gateway.services.qido_query import MatchKey, QidoQuery

# VRs whose values compare as plain strings, case-sensitively (PS3.4 C.2.2.2.1).
_STRING_VRS = frozenset({"AE", "CS", "LO", "SH", "UC", "UI", "DA", "AS"})
_NUMBER_VRS = frozenset({"IS", "US", "SS", "UL", "SL", "UV", "SV"})


@lru_cache(maxsize=256)
def _wildcard(pattern: str) -> re.Pattern[str]:
    out = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(out, re.DOTALL)


def _values(item: Mapping[str, Any], tag: int) -> list[Any] | None:
    """The result's values of ``tag``; None when the PACS did not return it."""
    attr = item.get(f"{tag:08X}")
    if attr is None:
        return None
    values = attr.get("Value")
    return [v for v in values if v is not None] if values else []


def _key_matches(key: MatchKey, values: list[Any]) -> bool:
    vr = key.vr
    value = key.value
    if vr == "DA" and isinstance(value, str):
        if not values:
            return False  # an empty date lies in no range (PS3.4 C.2.2.2.5)
        low, _, high = value.partition("-") if key.matching == "range" else (value, "", value)
        return any((not low or str(v) >= low) and (not high or str(v) <= high) for v in values)
    if not values:
        return True  # empty in the result: the PACS may simply not keep it
    if vr == "UI" and isinstance(value, str):
        wanted = set(value.split("\\"))
        return any(str(v) in wanted for v in values)
    if vr in _STRING_VRS and isinstance(value, str):
        if key.matching == "wildcard":
            pattern = _wildcard(value)
            return any(pattern.fullmatch(str(v)) for v in values)
        # A backslash in the key is a multi-valued key: any of them matches.
        return any(str(v) in value.split("\\") for v in values)
    if vr in _NUMBER_VRS and key.matching == "single":
        try:
            wanted_number = int(value)
        except (TypeError, ValueError):
            return True
        return any(v == wanted_number for v in values)
    return True


def matches_query(query: QidoQuery, item: Mapping[str, Any]) -> bool:
    """Whether a result agrees with every top-level match key it lets us check."""
    for key in query.match_keys:
        if len(key.path) != 1 or key.vr not in _STRING_VRS | _NUMBER_VRS:
            continue
        values = _values(item, key.path[0])
        if values is not None and not _key_matches(key, values):
            return False
    return True
