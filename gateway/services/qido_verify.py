"""Checking a PACS's matches against the query (PS3.4 C.2.2.2), in the gateway.

PACS differ in what they really match: dcmqrscp drops matching keys it does
not index and returns every entity; Orthanc 1.10 lets an empty StudyDate match
a date range and ignores keys inside a sequence (it returns the items, though).
A match that visibly contradicts a key of the query is dropped here.  The check
is conservative: when the PACS did not return the attribute at all, nothing can
be said and the match is kept; person names are not checked, because their
matching is implementation-defined (PS3.4 C.2.2.2.1).

Keys inside a sequence (``RequestAttributesSequence.RequestedProcedureID``) are
sequence matching (PS3.4 C.2.2.2.6): the result matches when any one item of
the sequence matches all the query's keys of that sequence together.  A result
whose sequence is absent or has no items is kept, like any attribute the PACS
did not return.

Attributes the gateway read from the instances' own headers (``known``,
qido_headers.py) are not given that benefit of the doubt: there an absent or
empty value is the instance's real value, so it fails a key that is not
universal, as the PACS would have done had it kept the attribute.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import time
from functools import lru_cache
from typing import Any

from gateway.services.qido_query import MatchKey, QidoQuery, tm_bounds

# VRs whose values compare as plain strings, case-sensitively (PS3.4 C.2.2.2.1).
_STRING_VRS = frozenset({"AE", "CS", "LO", "SH", "UC", "UI", "DA", "AS"})
_NUMBER_VRS = frozenset({"IS", "US", "SS", "UL", "SL", "UV", "SV"})
_CHECKED_VRS = _STRING_VRS | _NUMBER_VRS


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


def _time_matches(key: MatchKey, value: str) -> bool:
    """TM single value or range (PS3.4 C.2.2.2.5): a partial time covers its precision
    (``1030`` is 10:30:00-10:30:59.999999), so the key and the value match when their
    spans overlap.  Used only on values read from the headers (see ``known``)."""
    wanted = str(key.value).replace(":", "")
    try:
        low_v, high_v = tm_bounds(value.replace(":", "").strip())
        if key.matching == "range":
            low_text, _, high_text = wanted.partition("-")
            low = tm_bounds(low_text)[0] if low_text else time.min
            high = tm_bounds(high_text)[1] if high_text else time.max
        else:
            low, high = tm_bounds(wanted)
    except ValueError:
        return False  # not a time: it cannot be said to lie in the key's span
    return low_v <= high and high_v >= low


def _key_matches(key: MatchKey, values: list[Any], known: bool = False) -> bool:
    vr = key.vr
    value = key.value
    if vr == "DA" and isinstance(value, str):
        if not values:
            return False  # an empty date lies in no range (PS3.4 C.2.2.2.5)
        low, _, high = value.partition("-") if key.matching == "range" else (value, "", value)
        return any((not low or str(v) >= low) and (not high or str(v) <= high) for v in values)
    if not values:
        return not known  # empty in the result: the PACS may simply not keep it
    if vr == "TM" and isinstance(value, str):
        return any(_time_matches(key, str(v)) for v in values)
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


def matches_query(
    query: QidoQuery, item: Mapping[str, Any], known: frozenset[int] = frozenset()
) -> bool:
    """Whether a result agrees with every match key it lets us check, in sequences too.

    ``known``: top-level tags whose presence and values in ``item`` are the truth
    (read from the instance), not what a PACS chose to return.
    """
    return _matches_keys(query.match_keys, item, 0, known)


def _matches_keys(
    keys: Sequence[MatchKey],
    item: Mapping[str, Any],
    depth: int,
    known: frozenset[int] = frozenset(),
    inside_known: bool = False,
) -> bool:
    """Whether ``item`` (a result, or a sequence item at ``depth``) matches ``keys``.

    ``keys`` are paths from the top level; ``path[depth]`` is the element in
    ``item``.  Keys that go deeper are grouped by their sequence, so that all the
    keys of one sequence must match within the same item (PS3.4 C.2.2.2.6).
    """
    nested: dict[int, list[MatchKey]] = {}
    for key in keys:
        tag = key.path[depth]
        if len(key.path) > depth + 1:
            nested.setdefault(tag, []).append(key)
            continue
        is_known = inside_known or (depth == 0 and tag in known)
        if key.vr not in _CHECKED_VRS and not (is_known and key.vr == "TM"):
            if is_known and not _values(item, tag):
                return False  # the instance has no value: only universal matching would match
            continue
        values = _values(item, tag)
        if values is None and is_known:
            values = []
        if values is not None and not _key_matches(key, values, is_known):
            return False
    for tag, inner in nested.items():
        items = _values(item, tag)
        sequence_known = inside_known or (depth == 0 and tag in known)
        if not items:
            if sequence_known:
                return False  # the instances have no such sequence (or no item)
            continue  # sequence not returned, or returned without items: trust the PACS
        if not any(
            isinstance(child, Mapping)
            and _matches_keys(inner, child, depth + 1, known, sequence_known)
            for child in items
        ):
            return False
    return True
