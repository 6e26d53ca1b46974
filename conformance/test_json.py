"""G. DICOM JSON (P18 Annex F) in QIDO and metadata responses.

The responses are fetched once per module and read with a strict JSON parser
(no NaN/Infinity, no duplicate keys); every check walks all objects, sequence
items included, and reports the first offending attributes by path.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from conformance import multipart
from conformance.dataset import PRIVATE_CREATOR, FixtureSet
from conformance.server import Server, describe

VRS = frozenset(
    {
        "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD",
        "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI",
        "UL", "UN", "UR", "US", "UT", "UV",
    }
)  # fmt: skip
NUMBERS = frozenset({"FL", "FD", "SL", "SS", "UL", "US"})
INTEGERS = frozenset({"SL", "SS", "UL", "US"})
DECIMALS = frozenset({"DS", "IS", "SV", "UV"})  # Number, or a String (P18 F.2.3, 2024 note)
BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
ATTRIBUTE_KEYS = frozenset({"vr", "Value", "BulkDataURI", "InlineBinary"})
TAG = re.compile(r"^[0-9A-F]{8}$")
DS_STRING = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
IS_STRING = re.compile(r"^\s*[+-]?\d+\s*$")

#: name -> (path, query, expected number of results or None for "at least one").
RESPONSES: dict[str, Callable[[FixtureSet], tuple[str, dict[str, str], int | None]]] = {
    "qido-study-ct": lambda fx: ("/studies", {"PatientID": fx.ct.patient_id}, 1),
    "qido-study-latin1": lambda fx: ("/studies", {"PatientID": fx.latin1.patient_id}, 1),
    "qido-study-utf8": lambda fx: ("/studies", {"PatientID": fx.utf8.patient_id}, 1),
    "qido-series-ct": lambda fx: (f"/studies/{fx.ct.uid}/series", {}, 2),
    "qido-series-latin1": lambda fx: (f"/studies/{fx.latin1.uid}/series", {}, 2),
    "qido-instances-ct": lambda fx: (
        f"/studies/{fx.ct.uid}/series/{fx.ct_series.uid}/instances",
        {},
        100,
    ),
    "qido-instances-utf8": lambda fx: (
        f"/studies/{fx.utf8.uid}/series/{fx.rle.series_uid}/instances",
        {},
        2,
    ),
    "metadata-series-ct": lambda fx: (
        f"/studies/{fx.ct.uid}/series/{fx.ct_series.uid}/metadata",
        {},
        100,
    ),
    "metadata-series-color": lambda fx: (
        f"/studies/{fx.ct.uid}/series/{fx.color.series_uid}/metadata",
        {},
        1,
    ),
    "metadata-study-latin1": lambda fx: (f"/studies/{fx.latin1.uid}/metadata", {}, 4),
    "metadata-study-utf8": lambda fx: (f"/studies/{fx.utf8.uid}/metadata", {}, 2),
}
NAMES = list(RESPONSES)


class NotStrictJson(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise NotStrictJson(f"{name} is not JSON (RFC 8259)")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise NotStrictJson(f"duplicate key {key!r}")
        result[key] = value
    return result


def strict_json(response: requests.Response) -> Any:
    """The body parsed as RFC 8259 JSON in UTF-8: no NaN/Infinity, no duplicate keys."""
    text = response.content.decode("utf-8")
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)


def lenient_json(response: requests.Response) -> Any:
    """The body as JSON, as forgiving as possible (so one defect fails one test)."""
    return json.loads(response.content.decode("utf-8", errors="replace"))


@pytest.fixture(scope="module")
def responses(server: Server, fixtures: FixtureSet) -> dict[str, requests.Response]:
    out = {}
    for name, target in RESPONSES.items():
        path, query, _ = target(fixtures)
        out[name] = server.get(
            path, params=query or None, headers={"Accept": "application/dicom+json"}
        )
    return out


def body_of(responses: dict[str, requests.Response], name: str) -> tuple[requests.Response, Any]:
    response = responses[name]
    assert response.status_code == 200, describe(response)
    try:
        return response, lenient_json(response)
    except ValueError as exc:
        pytest.fail(f"body is not JSON ({exc}): {describe(response)}")


def objects(value: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every DICOM JSON dataset in ``value`` (top-level array and sequence items)."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from objects(item, f"{path}[{index}]")
        return
    if not isinstance(value, dict):
        return
    yield path or "/", value
    for key, attr in value.items():
        if isinstance(attr, dict) and attr.get("vr") == "SQ":
            for index, item in enumerate(attr.get("Value") or []):
                yield from objects(item, f"{path}.{key}[{index}]")


def attributes(body: Any) -> Iterator[tuple[str, str, Any]]:
    for path, obj in objects(body):
        for key, attr in obj.items():
            yield f"{path}.{key}", key, attr


def first(problems: list[str], response: requests.Response) -> str:
    shown = "; ".join(problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return f"{len(problems)} problems: {shown}{more}: {describe(response)}"


# --- JSON-01 array, keys, group lengths, one kind of value ------------------


@pytest.mark.parametrize("name", NAMES)
def test_JSON_01_one_top_level_array(
    fixtures: FixtureSet, responses: dict[str, requests.Response], name: str
) -> None:
    response, body = body_of(responses, name)
    media, _ = multipart.media_params(response.headers.get("Content-Type", ""))
    assert media == "application/dicom+json", f"Content-Type {media!r}: {describe(response)}"
    assert isinstance(body, list), f"top level is {type(body).__name__}: {describe(response)}"
    assert all(isinstance(item, dict) for item in body), f"non-object items: {describe(response)}"
    expected = RESPONSES[name](fixtures)[2]
    assert expected is None or len(body) == expected, (
        f"{len(body)} objects in the array, expected {expected}: {describe(response)}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_JSON_01_keys_are_sorted_uppercase_tags(
    responses: dict[str, requests.Response], name: str
) -> None:
    response, body = body_of(responses, name)
    problems = []
    for path, obj in objects(body):
        keys = list(obj)
        bad = [k for k in keys if not TAG.match(k)]
        if bad:
            problems.append(f"{path}: keys {bad[:3]} are not 8 uppercase hex digits")
        if keys != sorted(keys):
            wrong = next(b for a, b in itertools.pairwise(keys) if b < a)
            problems.append(f"{path}: keys not in ascending order ({wrong} out of place)")
    assert not problems, first(problems, response)


@pytest.mark.parametrize("name", NAMES)
def test_JSON_01_no_group_length(responses: dict[str, requests.Response], name: str) -> None:
    response, body = body_of(responses, name)
    problems = [path for path, key, _ in attributes(body) if key.endswith("0000")]
    assert not problems, first([f"group length {p}" for p in problems], response)


@pytest.mark.parametrize("name", NAMES)
def test_JSON_01_attribute_has_vr_and_one_kind_of_value(
    responses: dict[str, requests.Response], name: str
) -> None:
    response, body = body_of(responses, name)
    problems = []
    for path, _, attr in attributes(body):
        if not isinstance(attr, dict):
            problems.append(f"{path} is {type(attr).__name__}, not an object")
            continue
        if attr.get("vr") not in VRS:
            problems.append(f"{path} vr={attr.get('vr')!r}")
        kinds = [k for k in ("Value", "BulkDataURI", "InlineBinary") if k in attr]
        if len(kinds) > 1:
            problems.append(f"{path} has {' and '.join(kinds)}")
        extra = set(attr) - ATTRIBUTE_KEYS
        if extra:
            problems.append(f"{path} has keys {sorted(extra)} outside the model (P18 F.2.2)")
        if "Value" in attr and not isinstance(attr["Value"], list):
            problems.append(f"{path} Value is {type(attr['Value']).__name__}, not an array")
    assert not problems, first(problems, response)


# --- JSON-02 value types per VR ---------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _value_problem(vr: str, value: Any) -> str | None:
    """Why ``value`` (one entry of a Value array) is wrong for ``vr``, or None."""
    if value is None:
        return None  # an empty value inside a multi-value (JSON-03)
    if vr in NUMBERS:
        if not _is_number(value):
            return f"{value!r} is not a JSON number"
        if vr in INTEGERS and isinstance(value, float) and not value.is_integer():
            return f"{value!r} is not an integer"
        return None
    if vr in DECIMALS:
        if _is_number(value):
            if vr != "DS" and isinstance(value, float) and not value.is_integer():
                return f"{value!r} is not an integer"
            return None
        pattern = DS_STRING if vr == "DS" else IS_STRING
        if isinstance(value, str) and pattern.match(value):
            return None
        return f"{value!r} is neither a number nor a {vr} string"
    if vr == "AT":
        return None if isinstance(value, str) and TAG.match(value) else f"{value!r} not 8-hex"
    if vr == "PN":
        if not isinstance(value, dict):
            return f"{value!r} is not a Person Name object"
        bad = [k for k in value if k not in PN_GROUPS]
        if bad:
            return f"PN groups {bad} (only {', '.join(PN_GROUPS)})"
        empty = [k for k, v in value.items() if not isinstance(v, str) or not v]
        if empty:
            return f"PN groups {empty} are empty or not strings (only non-empty groups are sent)"
        return None
    if vr == "SQ":
        return None if isinstance(value, dict) else f"item {value!r:.40} is not an object"
    if vr in BINARY:
        return "binary VR with a Value (O* and UN are InlineBinary or BulkDataURI)"
    return None if isinstance(value, str) else f"{value!r} is not a string"


@pytest.mark.parametrize("name", NAMES)
def test_JSON_02_value_types_per_vr(responses: dict[str, requests.Response], name: str) -> None:
    response, body = body_of(responses, name)
    problems = []
    for path, _, attr in attributes(body):
        if not isinstance(attr, dict):
            continue
        vr = str(attr.get("vr"))
        if "InlineBinary" in attr:
            try:
                base64.b64decode(str(attr["InlineBinary"]), validate=True)
            except (binascii.Error, ValueError):
                problems.append(f"{path} InlineBinary is not base64")
            if vr not in BINARY:
                problems.append(f"{path} ({vr}) as InlineBinary")
        if "BulkDataURI" in attr and not isinstance(attr["BulkDataURI"], str):
            problems.append(f"{path} BulkDataURI is not a string")
        for index, value in enumerate(attr.get("Value") or []):
            problem = _value_problem(vr, value)
            if problem:
                problems.append(f"{path} ({vr}) Value[{index}]: {problem}")
    assert not problems, first(problems, response)


@pytest.mark.parametrize("name", NAMES)
def test_JSON_02_strict_json_no_nan_or_infinity(
    responses: dict[str, requests.Response], name: str
) -> None:
    response = responses[name]
    assert response.status_code == 200, describe(response)
    try:
        body = strict_json(response)
    except (NotStrictJson, ValueError) as exc:
        pytest.fail(f"not strict JSON: {exc}: {describe(response)}")
    floats = [
        path
        for path, _, attr in attributes(body)
        for value in (attr.get("Value") or [] if isinstance(attr, dict) else [])
        if isinstance(value, float) and not math.isfinite(value)
    ]
    assert not floats, first([f"{p} not finite" for p in floats], response)


# --- JSON-03 empty attributes, empty values, empty items --------------------


def color_metadata(responses: dict[str, requests.Response]) -> tuple[requests.Response, Any]:
    response, body = body_of(responses, "metadata-series-color")
    assert isinstance(body, list) and len(body) == 1, f"expected one object: {describe(response)}"
    return response, body[0]


def test_JSON_03_empty_attribute_has_only_vr(responses: dict[str, requests.Response]) -> None:
    response, obj = color_metadata(responses)
    assert obj.get("00181030") == {"vr": "LO"}, (
        f'empty ProtocolName (0018,1030) is {obj.get("00181030")!r}, expected {{"vr": "LO"}} '
        f"(P18 F.2.5): {describe(response)}"
    )


def test_JSON_03_empty_value_in_multi_value_is_null(
    responses: dict[str, requests.Response],
) -> None:
    response, obj = color_metadata(responses)
    expected = {"vr": "CS", "Value": ["DERIVED", None, "SECONDARY"]}
    assert obj.get("00080008") == expected, (
        f"ImageType DERIVED\\\\SECONDARY is {obj.get('00080008')!r}, expected {expected!r} "
        f"(P18 F.2.5: an empty value is null): {describe(response)}"
    )


def test_JSON_03_empty_sequence_item_is_empty_object(
    responses: dict[str, requests.Response],
) -> None:
    response, obj = color_metadata(responses)
    expected = {"vr": "SQ", "Value": [{}]}
    assert obj.get("00081140") == expected, (
        f"ReferencedImageSequence with one empty item is {obj.get('00081140')!r}, expected "
        f"{expected!r}: {describe(response)}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_JSON_03_no_empty_value_array(responses: dict[str, requests.Response], name: str) -> None:
    response, body = body_of(responses, name)
    problems = [
        f"{path} has Value [] (an empty attribute has no Value, P18 F.2.5)"
        for path, _, attr in attributes(body)
        if isinstance(attr, dict) and attr.get("Value") == []
    ]
    assert not problems, first(problems, response)


# --- JSON-04 private creators and elements ------------------------------------


def test_JSON_04_private_creator(responses: dict[str, requests.Response]) -> None:
    response, obj = color_metadata(responses)
    expected = {"vr": "LO", "Value": [PRIVATE_CREATOR]}
    assert obj.get("00090010") == expected, (
        f"private creator (0009,0010) is {obj.get('00090010')!r}, expected {expected!r}: "
        f"{describe(response)}"
    )


def test_JSON_04_private_text_element(responses: dict[str, requests.Response]) -> None:
    response, obj = color_metadata(responses)
    expected = {"vr": "LO", "Value": ["private text"]}
    assert obj.get("00091001") == expected, (
        f"(0009,1001) is {obj.get('00091001')!r}, expected {expected!r}: {describe(response)}"
    )


def test_JSON_04_private_binary_element(responses: dict[str, requests.Response]) -> None:
    response, obj = color_metadata(responses)
    attr = obj.get("00091002")
    assert isinstance(attr, dict) and attr.get("vr") == "OB", (
        f"(0009,1002) is {attr!r:.200}, expected vr OB: {describe(response)}"
    )
    if "InlineBinary" in attr:
        value = base64.b64decode(attr["InlineBinary"])
        assert value == bytes(range(256)) * 16, "(0009,1002) InlineBinary is not the stored value"
    else:
        assert isinstance(attr.get("BulkDataURI"), str), (
            f"(0009,1002) has neither InlineBinary nor BulkDataURI: {attr!r:.200}"
        )


def test_JSON_04_private_sequence(responses: dict[str, requests.Response]) -> None:
    response, obj = color_metadata(responses)
    expected = {
        "vr": "SQ",
        "Value": [
            {
                "00080100": {"vr": "SH", "Value": ["T-D0050"]},
                "00080102": {"vr": "SH", "Value": ["SRT"]},
                "00080104": {"vr": "LO", "Value": ["Tissue"]},
            }
        ],
    }
    assert obj.get("00091003") == expected, (
        f"private sequence (0009,1003) is {obj.get('00091003')!r:.300}: {describe(response)}"
    )


# --- JSON-05 UTF-8 output from the stored character set -----------------------


@pytest.mark.parametrize("name", NAMES)
def test_JSON_05_body_is_utf8(responses: dict[str, requests.Response], name: str) -> None:
    response = responses[name]
    assert response.status_code == 200, describe(response)
    try:
        response.content.decode("utf-8")
    except UnicodeDecodeError as exc:
        pytest.fail(f"body is not UTF-8 ({exc}): {describe(response)}")
    _, params = multipart.media_params(response.headers.get("Content-Type", ""))
    charset = params.get("charset", "utf-8").lower()
    assert charset in ("utf-8", "utf8"), f"Content-Type charset={charset}: {describe(response)}"


def person_names(body: Any, tag: str) -> list[Any]:
    return [(obj.get(tag) or {}).get("Value", [None])[0] for obj in body if isinstance(obj, dict)]


@pytest.mark.parametrize("name", ["qido-study-latin1", "metadata-study-latin1"])
def test_JSON_05_latin1_names_decoded(responses: dict[str, requests.Response], name: str) -> None:
    response, body = body_of(responses, name)
    for tag, expected in (("00100010", "Müller^Jürgen"), ("00080090", "Référent^Anaïs")):
        got = person_names(body, tag)
        assert got and all(v == {"Alphabetic": expected} for v in got), (
            f"ISO_IR 100 {tag} reads {got[:2]!r}, expected {{'Alphabetic': {expected!r}}}: "
            f"{describe(response)}"
        )


@pytest.mark.parametrize("name", ["qido-study-utf8", "metadata-study-utf8"])
def test_JSON_05_ideographic_group(responses: dict[str, requests.Response], name: str) -> None:
    response, body = body_of(responses, name)
    expected = {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}
    got = person_names(body, "00100010")
    assert got and all(v == expected for v in got), (
        f"PatientName 'Yamada^Tarou=山田^太郎' reads {got[:2]!r}, expected {expected!r} "
        f"(groups split on '='): {describe(response)}"
    )
