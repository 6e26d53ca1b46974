"""A QIDO-RS request read into the C-FIND it stands for (PS3.18 8.3.4, PS3.4 C.2.2.2).

Everything a client can get wrong is caught here, before any association is
opened, so a bad request costs no PACS round trip and always answers 400 with
the parameter and the reason.  Choices where the standard leaves room:

- Attributes are keywords (case-sensitive) or 8 hex digits, joined by ``.`` for
  sequence paths.  A query parameter whose name is not such an attribute (a
  cache-buster, ``patientname``, a retired spelling) is ignored (PS3.18 8.3.4:
  unknown parameters are ignored).  Inside ``includefield`` the same name is an
  invalid value of a known parameter, hence 400.
- DA, TM and DT values are accepted in the DICOM form only (``20240102``,
  ``1030``, ``20240102103000+0100``), as PS3.18 8.3.4.1 defines them by PS3.5;
  ``2024-01-02`` would read as a range and is refused rather than guessed.
- Only UI attributes take a list (comma in the URL, backslash in the C-FIND);
  repeating any other match attribute is 400, because which value would win is
  not said anywhere.  Backslashes in string values are passed through as a
  multi-valued key, the way a C-FIND SCU would send them.
- An empty value, or a value of only ``*``, is universal matching (PS3.4
  C.2.2.2.3, C.2.2.2.4): the attribute becomes a return key.
- Ranges must run forwards (PS3.4 C.2.2.2.5: ``<date1>`` less or equal to
  ``<date2>``); a backwards one is 400 rather than an empty result.
- The level of a matching key is not policed: a series attribute in a study
  search goes to the PACS as asked, which decides (the full PS3.4 information
  model is not a table we keep).  An include field below the query level is
  left out of the C-FIND by the identifier builder (``include_keys``).
"""

from __future__ import annotations

import calendar
import contextlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Literal, TypeVar

from pydicom.datadict import dictionary_VR, private_dictionary_VR, tag_for_keyword

from gateway.services.errors import InvalidParameter
from gateway.services.qido_attributes import (
    DATE_TIME_PAIRS,
    GATEWAY_COMPUTED,
    IDENTIFIER_CONTROLLED,
    LEVELS,
    Level,
    TagPath,
    tag_of,
)

MatchValue = str | int | float
Matching = Literal["single", "uid_list", "wildcard", "range"]

# PS3.18 8.3.4.2, 8.3.4.5, 8.3.4.6: texts of the 299 Warning when an optional
# matching mode is asked for but only literal matching is done.
FUZZY_WARNING = (
    "The fuzzymatching parameter is not supported. Only literal matching has been performed."
)
EMPTY_VALUE_WARNING = (
    "The emptyvaluematching parameter is not supported. Only literal matching has been performed."
)
MULTIPLE_VALUE_WARNING = (
    "The multiplevaluematching parameter is not supported. "
    "Only literal matching has been performed."
)

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")  # PS3.5 9.1
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_KEYWORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_DA = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TM = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?")
_DT = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?"
)
_IS = re.compile(r"[+-]?\d{1,12}")
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_AS = re.compile(r"\d{3}[DWMY]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")  # PS3.5 6.1.3: CR LF FF TAB allowed

# Groups that are not attributes of a C-FIND identifier: command, file meta,
# directory, and item/padding elements.
_NOT_IDENTIFIER_GROUPS = frozenset({0x0000, 0x0002, 0x0004, 0xFFFC, 0xFFFE})

# PS3.4 C.2.2.2.4: the VRs on which "*" and "?" are wild cards.
_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_TEXT_VRS = frozenset({"LT", "ST", "UT"})
_INT_RANGES: Mapping[str, tuple[int, int]] = {
    "US": (0, 0xFFFF),
    "SS": (-0x8000, 0x7FFF),
    "UL": (0, 0xFFFFFFFF),
    "SL": (-0x80000000, 0x7FFFFFFF),
    "SV": (-(2**63), 2**63 - 1),
    "UV": (0, 2**64 - 1),
}
_NOT_MATCHABLE_VRS = frozenset({"SQ", "OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_CONTROL_PARAMETERS = frozenset(
    {"limit", "offset", "fuzzymatching", "emptyvaluematching", "multiplevaluematching"}
)
_STUDY_UID = (tag_of("StudyInstanceUID"),)
_SERIES_UID = (tag_of("SeriesInstanceUID"),)


@dataclass(frozen=True)
class MatchKey:
    """One matching key of the C-FIND identifier.

    ``value`` is what the identifier element gets: a string for string VRs
    (a UID list joined by backslashes, a range as ``a-b``), an int for binary
    integers and AT, a float for FL/FD.
    """

    path: TagPath
    vr: str
    value: MatchValue
    matching: Matching


@dataclass(frozen=True)
class CombinedDateTimeRange:
    """A date and its paired time matched as one DT (PS3.4 C.2.2.2.5).

    The PACS is asked for the date alone (no extended negotiation of combined
    date-time matching is assumed); this range is then checked on each result.
    ``lower``/``upper`` of None are open ends.  Timezone Offset From UTC is not
    applied: both sides are taken in the PACS's local time.
    """

    date_tag: int
    time_tag: int
    lower: datetime | None
    upper: datetime | None

    def matches(self, result: Mapping[str, Any]) -> bool:
        """Whether a DICOM JSON result (keys of 8 hex digits) falls in the range.

        A result without a time is kept when any moment of its day is in range;
        one whose date the gateway cannot read is kept, since the PACS already
        matched that date and dropping data we cannot judge would hide it.
        """
        raw_date = _first_json_value(result, self.date_tag)
        if raw_date is None:
            return False
        try:
            day = _da_bounds(raw_date.strip())[0]
        except ValueError:
            return True
        start, end = datetime.combine(day, time.min), datetime.combine(day, time.max)
        raw_time = _first_json_value(result, self.time_tag)
        if raw_time is not None:
            with contextlib.suppress(ValueError):
                start = end = datetime.combine(day, tm_bounds(raw_time.strip())[0])
        return (self.upper is None or start <= self.upper) and (
            self.lower is None or end >= self.lower
        )


@dataclass(frozen=True)
class QidoQuery:
    """A validated QIDO-RS search, ready to become a C-FIND identifier.

    ``include_fields`` are the return keys the client asked for (includefield
    and universal-matching attributes); the level's own return keys are added
    by the identifier builder.  ``limit`` None means the client set none (the
    server maximum still applies downstream).  ``warnings`` are the texts of the
    ``Warning: 299`` header fields; the web layer adds the code and agent.
    """

    level: Level
    study_uid: str | None
    series_uid: str | None
    match_keys: tuple[MatchKey, ...]
    include_fields: frozenset[TagPath]
    include_all: bool
    limit: int | None
    offset: int
    fuzzymatching: bool
    emptyvaluematching: bool
    multiplevaluematching: bool
    warnings: tuple[str, ...]
    combined_datetime: tuple[CombinedDateTimeRange, ...] = ()

    @property
    def has_non_ascii(self) -> bool:
        """Whether the identifier needs a Specific Character Set (PS3.18 8.3.4.1, QIDO-05)."""
        return any(isinstance(k.value, str) and not k.value.isascii() for k in self.match_keys)

    @property
    def has_post_filter(self) -> bool:
        """Whether results must pass ``post_filter``: limit and offset then count after it."""
        return bool(self.combined_datetime)

    def post_filter(self, result: Mapping[str, Any]) -> bool:
        """Whether a DICOM JSON result matches what the PACS was not asked to check."""
        return all(r.matches(result) for r in self.combined_datetime)

    def vr_of(self, path: TagPath) -> str:
        """The VR to encode that element with; UN when neither dictionary knows it."""
        return _vr_of(path, _creators(self.match_keys)) or "UN"


def parse_qido_query(
    level: Level,
    params: Sequence[tuple[str, str]],
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    max_limit: int,
) -> QidoQuery:
    """Read the query parameters of a search at ``level`` within the path's scope.

    ``params`` are the decoded query pairs in request order, keys repeated as
    sent.  Raises InvalidParameter (400) for any value that cannot be used.
    """
    _check_scope(level, study_uid, series_uid)
    controls: dict[str, str] = {}
    include_all = False
    includes: list[tuple[str, TagPath]] = []
    given: list[tuple[str, TagPath, str]] = []
    for name, value in params:
        lname = name.lower()
        if lname in _CONTROL_PARAMETERS:
            if controls.get(lname, value) != value:
                raise InvalidParameter(name, "given more than once with different values")
            controls[lname] = value
        elif lname == "includefield":
            # PS3.18 8.3.4.3: comma list, repeatable; "all" wins over the others.
            for item in (i.strip() for i in value.split(",")):
                if item.lower() == "all":
                    include_all = True
                elif item:
                    path = parse_attribute(item)
                    if path is None:
                        raise InvalidParameter("includefield", f"not a DICOM attribute: {item!r}")
                    if path not in IDENTIFIER_CONTROLLED:
                        includes.append(("includefield", path))
        else:
            path = parse_attribute(name)
            if path is not None and path not in IDENTIFIER_CONTROLLED:
                given.append((name, path, value))
            # else: PS3.18 8.3.4 - unknown query parameters are ignored (QIDO-12).

    creators = {p: v.strip() for _, p, v in given if _is_private_creator(p[-1]) and v.strip()}
    match_keys: list[MatchKey] = []
    bounds: dict[TagPath, tuple[Any, Any]] = {}
    for name, path, raw in _merge_repeated(given, creators):
        vr = _check_path(name, path, creators)
        if path in GATEWAY_COMPUTED and raw.strip():
            raise InvalidParameter(name, "is computed by the gateway and cannot be matched")
        parsed = _match_value(name, path, vr, raw)
        if parsed is None:
            includes.append((name, path))
            continue
        key, key_bounds = parsed
        if not _in_scope(key, study_uid, series_uid):
            continue
        match_keys.append(key)
        if key_bounds is not None:
            bounds[path] = key_bounds
    for name, path in includes:
        _check_path(name, path, creators)

    include_fields = {p for _, p in includes}
    combined = _combine_date_time(match_keys, bounds, include_fields)
    fuzzy = _boolean(controls, "fuzzymatching")
    empty = _boolean(controls, "emptyvaluematching")
    multiple = _boolean(controls, "multiplevaluematching")
    warnings = tuple(
        text
        for asked, text in (
            (fuzzy, FUZZY_WARNING),
            (empty, EMPTY_VALUE_WARNING),
            (multiple, MULTIPLE_VALUE_WARNING),
        )
        if asked
    )
    limit = _uint(controls, "limit")
    return QidoQuery(
        level=level,
        study_uid=study_uid,
        series_uid=series_uid,
        match_keys=tuple(match_keys),
        include_fields=frozenset(include_fields),
        include_all=include_all,
        limit=None if limit is None else min(limit, max_limit),
        offset=_uint(controls, "offset") or 0,
        fuzzymatching=fuzzy,
        emptyvaluematching=empty,
        multiplevaluematching=multiple,
        warnings=warnings,
        combined_datetime=combined,
    )


def parse_attribute(name: str) -> TagPath | None:
    """The tag path a QIDO ``attribute`` names (PS3.18 8.3.4.1), or None if it names none.

    Each component is a PS3.6 keyword (case-sensitive) or 8 hex digits; the two
    forms may be mixed.  Elements that cannot be in an identifier (command and
    file meta groups, item delimiters, private reserved ranges) name nothing.
    """
    path: list[int] = []
    for part in name.split("."):
        if _HEX_TAG.fullmatch(part):
            tag = int(part, 16)
        elif _KEYWORD.fullmatch(part):
            found = tag_for_keyword(part)
            if found is None:
                return None
            tag = int(found)
        else:
            return None
        group, element = tag >> 16, tag & 0xFFFF
        if group in _NOT_IDENTIFIER_GROUPS or element == 0:
            return None
        if _is_private(tag) and not (0x10 <= element <= 0xFF or element >= 0x1000):
            return None
        path.append(tag)
    return tuple(path)


def is_uid(value: str) -> bool:
    """Whether ``value`` is a well-formed UID (PS3.5 9.1)."""
    return len(value) <= 64 and _UID.fullmatch(value) is not None


def validate_uid(parameter: str, value: str) -> str:
    """Return ``value`` if it is a well-formed UID (PS3.5 9.1), else raise InvalidParameter."""
    if not is_uid(value):
        raise InvalidParameter(parameter, f"not a valid UID: {value!r}")
    return value


# --- scope and paths ---------------------------------------------------------


def _check_scope(level: str, study_uid: str | None, series_uid: str | None) -> None:
    # PS3.18 Table 10.6.1-1: the six search resources.  A wrong combination is a
    # bug in the caller (the routes), not something a client can send.
    if level not in LEVELS:
        raise ValueError(f"not a query level: {level!r}")
    if level == "STUDY" and (study_uid is not None or series_uid is not None):
        raise ValueError("a study search has no study or series in its path")
    if series_uid is not None and (level != "IMAGE" or study_uid is None):
        raise ValueError("a series in the path needs an instance search within a study")
    if study_uid is not None:
        validate_uid("StudyInstanceUID", study_uid)
    if series_uid is not None:
        validate_uid("SeriesInstanceUID", series_uid)


def _in_scope(key: MatchKey, study_uid: str | None, series_uid: str | None) -> bool:
    """False for a key the path already fixes to the same UID; 400 if it contradicts it."""
    for scope_path, uid in ((_STUDY_UID, study_uid), (_SERIES_UID, series_uid)):
        if uid is not None and key.path == scope_path:
            if key.value != uid:
                name = "StudyInstanceUID" if scope_path == _STUDY_UID else "SeriesInstanceUID"
                raise InvalidParameter(name, f"contradicts the UID in the path: {key.value!r}")
            return False
    return True


def _is_private(tag: int) -> bool:
    group = tag >> 16
    return bool(group & 1) and group > 0x0008 and group != 0xFFFF


def _is_private_creator(tag: int) -> bool:
    return _is_private(tag) and 0x10 <= (tag & 0xFFFF) <= 0xFF


def _creator_path(path: TagPath) -> TagPath:
    """Where the Private Creator of a private data element sits (PS3.5 7.8.1)."""
    tag = path[-1]
    return (*path[:-1], (tag & 0xFFFF0000) | ((tag & 0xFF00) >> 8))


def _creators(keys: Sequence[MatchKey]) -> dict[TagPath, str]:
    return {k.path: str(k.value) for k in keys if _is_private_creator(k.path[-1])}


def _vr_of(path: TagPath, creators: Mapping[TagPath, str]) -> str | None:
    tag = path[-1]
    if _is_private_creator(tag):
        return "LO"
    try:
        if _is_private(tag):
            creator = creators.get(_creator_path(path))
            vr = str(private_dictionary_VR(tag, creator)) if creator else None
        else:
            vr = str(dictionary_VR(tag))
    except KeyError:
        return None
    # "US or SS", "OB or OW": the first is what an empty return key is sent as.
    return vr.split(" or ")[0] if vr else None


def _check_path(name: str, path: TagPath, creators: Mapping[TagPath, str]) -> str | None:
    """The VR of the path's last element, after checking the path can be built."""
    for depth, tag in enumerate(path):
        here = path[: depth + 1]
        if (
            _is_private(tag)
            and not _is_private_creator(tag)
            and _creator_path(here) not in creators
        ):
            # PS3.18 8.3.4.3: a private element needs its Private Creator as a match parameter.
            creator = "".join(f"{t:08X}." for t in here[:-1]) + f"{_creator_path(here)[-1]:08X}"
            raise InvalidParameter(name, f"private element needs its creator {creator}")
        if depth < len(path) - 1:
            vr = _vr_of(here, creators)
            if vr not in (None, "SQ"):
                raise InvalidParameter(name, f"{tag:08X} is not a sequence")
    return _vr_of(path, creators)


def _merge_repeated(
    given: Sequence[tuple[str, TagPath, str]], creators: Mapping[TagPath, str]
) -> list[tuple[str, TagPath, str]]:
    """One entry per path: UID lists are joined, any other repetition is refused."""
    merged: dict[TagPath, tuple[str, str]] = {}
    for name, path, value in given:
        if path not in merged or not merged[path][1].strip():
            merged[path] = (name, value)
        elif value.strip():
            if _vr_of(path, creators) != "UI":
                raise InvalidParameter(name, "given more than once")
            merged[path] = (name, f"{merged[path][1]},{value}")
    return [(name, path, value) for path, (name, value) in merged.items()]


# --- values --------------------------------------------------------------------


def _match_value(
    name: str, path: TagPath, vr: str | None, raw: str
) -> tuple[MatchKey, tuple[Any, Any] | None] | None:
    """The match key for one attribute, or None for universal matching (PS3.4 C.2.2.2)."""
    value = raw.rstrip() if vr in _TEXT_VRS else raw.strip()
    if not value:
        return None  # PS3.4 C.2.2.2.3 universal matching
    if vr is None:
        raise InvalidParameter(name, "VR unknown, so the element can only be a return key")
    if vr in _NOT_MATCHABLE_VRS:
        raise InvalidParameter(name, f"matching is not supported on VR {vr}")
    wild = "*" in value or "?" in value
    if wild and vr not in _WILDCARD_VRS:
        raise InvalidParameter(name, f"wildcards are not allowed on VR {vr}: {value!r}")
    if vr == "UI":
        uids = [validate_uid(name, u.strip()) for u in value.split(",")]
        kind: Matching = "uid_list" if len(uids) > 1 else "single"
        return MatchKey(path, vr, "\\".join(uids), kind), None
    if vr in ("DA", "TM", "DT"):
        return _range_key(name, path, vr, value)
    if vr in _WILDCARD_VRS:
        if (_TEXT_CONTROL if vr in _TEXT_VRS else _CONTROL).search(value):
            raise InvalidParameter(name, f"control characters are not allowed: {value!r}")
        if not value.strip("*"):
            return None  # PS3.4 C.2.2.2.4: "*" alone is universal matching
        return MatchKey(path, vr, value, "wildcard" if wild else "single"), None
    return MatchKey(path, vr, _scalar(name, vr, value), "single"), None


def _scalar(name: str, vr: str, value: str) -> MatchValue:
    """A single numeric, AT or AS value, checked against its VR (PS3.5 6.2)."""
    bad = InvalidParameter(name, f"not a valid {vr} value: {value!r}")
    if vr == "IS":
        if not _IS.fullmatch(value) or abs(int(value)) > 2**31 - 1:
            raise bad
        return value
    if vr == "DS":
        if len(value) > 16 or not _DECIMAL.fullmatch(value):
            raise bad
        return value
    if vr in ("FL", "FD"):
        number = float(value) if _DECIMAL.fullmatch(value) else math.nan
        if not math.isfinite(number) or (vr == "FL" and abs(number) > 3.4028234663852886e38):
            raise bad
        return number
    if vr in _INT_RANGES:
        low, high = _INT_RANGES[vr]
        if not re.fullmatch(r"[+-]?\d+", value) or not low <= int(value) <= high:
            raise bad
        return int(value)
    if vr == "AT":
        if not _HEX_TAG.fullmatch(value):
            raise bad
        return int(value, 16)
    if vr == "AS":
        if not _AS.fullmatch(value):
            raise bad
        return value
    raise bad


_T = TypeVar("_T", date, time, datetime)


def _range_key(name: str, path: TagPath, vr: str, value: str) -> tuple[MatchKey, tuple[Any, Any]]:
    """A DA/TM/DT single value or range (PS3.4 C.2.2.2.1, C.2.2.2.5), with its bounds."""
    parse: Callable[[str], tuple[Any, Any]] = {
        "DA": _da_bounds,
        "TM": tm_bounds,
        "DT": _dt_bounds,
    }[vr]
    try:
        low, high, is_range = _range_bounds(value, parse, split_anywhere=vr == "DT")
    except ValueError:
        what = "range" if "-" in value else "value"
        raise InvalidParameter(name, f"not a valid {vr} {what}: {value!r}") from None
    text = value.replace(" ", "")
    return MatchKey(path, vr, text, "range" if is_range else "single"), (low, high)


def _range_bounds(
    value: str, parse: Callable[[str], tuple[_T, _T]], *, split_anywhere: bool
) -> tuple[_T | None, _T | None, bool]:
    """(lower, upper, is_range) of ``v``, ``a-b``, ``a-`` or ``-b``; open ends are None."""
    if "-" not in value or split_anywhere:
        try:
            low, high = parse(value)
            return low, high, False
        except ValueError:
            if "-" not in value:
                raise
    cuts = [i for i, c in enumerate(value) if c == "-"]
    if not split_anywhere and len(cuts) != 1:
        raise ValueError(value)
    for cut in cuts:
        left, right = value[:cut].strip(), value[cut + 1 :].strip()
        if not left and not right:
            continue
        try:
            low_pair = parse(left) if left else None
            high_pair = parse(right) if right else None
        except ValueError:
            continue
        if low_pair and high_pair and _after(low_pair[0], high_pair[0]):
            continue  # PS3.4 C.2.2.2.5: <date1> shall not be after <date2>
        return (
            low_pair[0] if low_pair else None,
            high_pair[1] if high_pair else None,
            True,
        )
    raise ValueError(value)


def _after(a: date | time | datetime, b: date | time | datetime) -> bool:
    if (
        isinstance(a, datetime)
        and isinstance(b, datetime)
        and (a.tzinfo is None) != (b.tzinfo is None)
    ):
        return a.replace(tzinfo=None) > b.replace(tzinfo=None)
    return a > b  # type: ignore[operator]


def _da_bounds(text: str) -> tuple[date, date]:
    """PS3.5 DA: YYYYMMDD, a real calendar date."""
    m = _DA.fullmatch(text)
    if not m:
        raise ValueError(text)
    day = date(int(m[1]), int(m[2]), int(m[3]))
    return day, day


def tm_bounds(text: str) -> tuple[time, time]:
    """PS3.5 TM: HH[MM[SS[.F{1,6}]]]; a partial time covers its whole precision."""
    m = _TM.fullmatch(text)
    if not m:
        raise ValueError(text)
    hour, minute, second = int(m[1]), int(m[2] or 0), min(int(m[3] or 0), 59)  # 60: leap second
    if hour > 23 or minute > 59 or (m[3] and int(m[3]) > 60):
        raise ValueError(text)
    low = time(hour, minute, second, int((m[4] or "").ljust(6, "0")))
    if m[4]:
        high = time(hour, minute, second, low.microsecond + 10 ** (6 - len(m[4])) - 1)
    elif m[3]:
        high = time(hour, minute, second, 999999)
    elif m[2]:
        high = time(hour, minute, 59, 999999)
    else:
        high = time(hour, 59, 59, 999999)
    return low, high


def _dt_bounds(text: str) -> tuple[datetime, datetime]:
    """PS3.5 DT: YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]; partial values cover their precision."""
    m = _DT.fullmatch(text)
    if not m:
        raise ValueError(text)
    year = int(m[1])
    first_month, last_month = (int(m[2]), int(m[2])) if m[2] else (1, 12)
    if year < 1 or not 1 <= last_month <= 12:
        raise ValueError(text)
    first_day = int(m[3]) if m[3] else 1
    last_day = int(m[3]) if m[3] else calendar.monthrange(year, last_month)[1]
    low_day, high_day = date(year, first_month, first_day), date(year, last_month, last_day)
    low_time, high_time = tm_bounds(m[4]) if m[4] else (time.min, time.max)
    tz = None
    if m[5]:
        hours, minutes = int(m[5][1:3]), int(m[5][3:5])
        if hours > 14 or minutes > 59:
            raise ValueError(text)
        sign = -1 if m[5][0] == "-" else 1
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    return (
        datetime.combine(low_day, low_time, tz),
        datetime.combine(high_day, high_time, tz),
    )


def _combine_date_time(
    keys: list[MatchKey], bounds: Mapping[TagPath, tuple[Any, Any]], includes: set[TagPath]
) -> tuple[CombinedDateTimeRange, ...]:
    """PS3.18 8.3.4.1 / QIDO-04: ask the PACS for the date; keep the time for ``post_filter``.

    The time key leaves the identifier's matching keys and becomes a return key,
    so each result carries the time the gateway checks.
    """
    combined: list[CombinedDateTimeRange] = []
    for date_tag, time_tag in DATE_TIME_PAIRS:
        date_path, time_path = (date_tag,), (time_tag,)
        if date_path not in bounds or time_path not in bounds:
            continue
        (first_day, last_day), (first_time, last_time) = bounds[date_path], bounds[time_path]
        lower = None if first_day is None else datetime.combine(first_day, first_time or time.min)
        upper = None if last_day is None else datetime.combine(last_day, last_time or time.max)
        combined.append(CombinedDateTimeRange(date_tag, time_tag, lower, upper))
        keys[:] = [k for k in keys if k.path != time_path]
        includes.add(time_path)
    return tuple(combined)


def _boolean(controls: Mapping[str, str], name: str) -> bool:
    """PS3.18 8.3.4.2: "true" / "false" (ABNF literals, so in any case)."""
    value = controls.get(name)
    if value is None:
        return False
    if value.lower() not in ("true", "false"):
        raise InvalidParameter(name, f"must be true or false, not {value!r}")
    return value.lower() == "true"


def _uint(controls: Mapping[str, str], name: str) -> int | None:
    """PS3.18 8.3.4.4: limit and offset are unsigned integers (digits only)."""
    value = controls.get(name)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit():
        raise InvalidParameter(name, f"must be an unsigned integer, not {value!r}")
    return int(value)


def _first_json_value(result: Mapping[str, Any], tag: int) -> str | None:
    element = result.get(f"{tag:08X}")
    if not isinstance(element, Mapping):
        return None
    values = element.get("Value")
    if not values or not isinstance(values[0], str):
        return None
    return values[0]
