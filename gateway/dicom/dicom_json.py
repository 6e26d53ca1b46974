"""DICOM JSON Model (PS3.18 Annex F) straight from dataset bytes.

Why: QIDO-RS turns every C-FIND identifier into JSON, and WADO-RS /metadata
does it for hundreds of instances per series. Walking the bytes with
`walker` and building plain dicts for orjson is more than an order of
magnitude faster than `pydicom.dcmread` + `Dataset.to_json_dict`, whose output
we check ourselves against (tests/dicom/test_dicom_json.py).

Output rules (PS3.18 F.2), and where we deliberately differ from pydicom 3:

1. Keys are 8 uppercase hex digits in ascending order; Group Length
   (gggg,0000) elements are dropped (F.2.2). pydicom keeps group lengths.
2. An empty value inside a multi-valued string or PN is ``null`` (F.2.5);
   pydicom gives ``""`` (or ``{"Alphabetic": ""}`` for PN).
3. DS and IS values are JSON numbers (F.2.3). A value that is not a valid
   number (or is NaN/infinite) becomes ``null`` and the rest of the dataset is
   kept; pydicom raises and loses the whole dataset. A single invalid value
   gives ``[null]``, not an empty attribute, so "present but unreadable" stays
   apart from "empty". DS becomes a float, IS an int ("12.0" is accepted as 12).
4. NaN and +/-Infinity never appear: such FL/FD/DS values are ``null``
   (JSON has no literal for them; pydicom emits them and breaks strict parsers).
5. PN values are objects with only the non-empty groups among Alphabetic,
   Ideographic and Phonetic (F.2.2); a PN value with no non-empty group is
   ``null``. pydicom keeps empty groups.
6. AT values are 8-hex-digit strings (F.2.3).
7. SQ values are arrays of objects, an empty item is ``{}``; a sequence with
   no items has no "Value" at all (F.2.5: empty attributes carry only "vr"),
   where pydicom gives ``"Value": []``.
8. The output is UTF-8, so Specific Character Set (0008,0005) is reported as
   "ISO_IR 192" whenever the input had a non-empty one (F.2, JSON-05);
   pydicom copies the input's terms although it has already decoded the text.
9. OB, OD, OF, OL, OV, OW and UN values (and Pixel Data of any VR) are
   BulkDataURI when `bulk_data_uri` is given and the value is longer than
   `bulk_threshold` bytes; Pixel Data ((7FE0,0008), (7FE0,0009) and
   (7FE0,0010)) is always BulkDataURI when `bulk_data_uri` is given. Otherwise
   they are InlineBinary (base64). The threshold counts value bytes; pydicom
   compares the value length with 3/4 of its threshold (a base64 length).
10. InlineBinary of OD, OF, OL, OV and OW from a big endian dataset is byte
   swapped to little endian (F.2.7 applies the PS3.5 byte-ordering rules, and
   a JSON consumer has no transfer syntax to tell it otherwise); pydicom
   base64-encodes the big endian bytes.
11. Private creators and private elements are kept (JSON-04). Private
   elements of implicit VR datasets are UN (their VR is unknown, PS3.5 6.2.2);
   pydicom looks some up in its private dictionary.
12. Padding is removed from each value of a multi-valued string, not only
   from the end of the whole string: CS "DERIVED \\PRIMARY" gives "DERIVED"
   (PS3.5 Table 6.2-1: trailing spaces are padding, and leading spaces too for
   AE and CS). pydicom keeps "DERIVED " for AS, CS, DA, DT, TM and UI.

`bulk_data_uri` receives the path of the element: the tags of the enclosing
sequences, each followed by the 0-based index of the item, then the element's
own tag, e.g. ``(0x00540016, 0, 0x00189701)``; for a top-level element just
``(tag,)``.

Text is decoded by Specific Character Set (see `charset`), per dataset: a
sequence item with its own (0008,0005) uses it, otherwise it inherits.
`charset_hint` only stands in for a missing (0008,0005).
"""

from __future__ import annotations

import binascii
import math
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import orjson

from gateway.dicom.charset import (
    DEFAULT_CHARSET,
    Charset,
    charset_from_terms,
    charset_from_value,
    decode_person_name,
    decode_text,
    split_person_name,
)
from gateway.dicom.walker import Element, walk_dataset

__all__ = ["BulkDataURIFactory", "dataset_to_json", "datasets_to_json_bytes", "elements_to_json"]

BulkDataURIFactory = Callable[[tuple[int, ...]], str]

SPECIFIC_CHARACTER_SET: Final = 0x00080005
# Float Pixel Data, Double Float Pixel Data, Pixel Data (PS3.6).
PIXEL_DATA_TAGS: Final = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})

# How each VR is turned into JSON (PS3.18 Table F.2.3-1).
_DEFAULT_TEXT, _CHARSET_TEXT, _SINGLE_TEXT, _PERSON_NAME = 0, 1, 2, 3
_DECIMAL, _INTEGER, _BINARY_NUMBER, _FLOAT, _TAG, _BULK, _SEQUENCE = 4, 5, 6, 7, 8, 9, 10
_KIND: Final[dict[str, int]] = {
    # PS3.5 6.1.2.2: these VRs use the default repertoire whatever (0008,0005) says.
    **dict.fromkeys(("AE", "AS", "CS", "DA", "DT", "TM", "UI"), _DEFAULT_TEXT),
    **dict.fromkeys(("SH", "LO", "UC"), _CHARSET_TEXT),
    # Single-valued: a backslash is part of the text (PS3.5 6.2).
    **dict.fromkeys(("ST", "LT", "UT", "UR"), _SINGLE_TEXT),
    "PN": _PERSON_NAME,
    "DS": _DECIMAL,
    "IS": _INTEGER,
    **dict.fromkeys(("US", "SS", "UL", "SL", "UV", "SV"), _BINARY_NUMBER),
    **dict.fromkeys(("FL", "FD"), _FLOAT),
    "AT": _TAG,
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW", "UN"), _BULK),
    "SQ": _SEQUENCE,
}
# PS3.5 Table 6.2-1: leading spaces are not significant either.
_STRIP_BOTH: Final = frozenset({"AE", "CS"})
# PS3.5 7.3: words of these VRs are byte swapped in big endian.
_SWAPPED_BINARY: Final[dict[str, int]] = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_NUMBER_FORMAT: Final[dict[str, tuple[str, int]]] = {
    "US": ("H", 2),
    "SS": ("h", 2),
    "UL": ("L", 4),
    "SL": ("l", 4),
    "UV": ("Q", 8),
    "SV": ("q", 8),
    "FL": ("f", 4),
    "FD": ("d", 8),
}
_ONE_NUMBER_LE: Final = {
    vr: struct.Struct("<" + code).unpack_from for vr, (code, _) in _NUMBER_FORMAT.items()
}
_ONE_NUMBER_BE: Final = {
    vr: struct.Struct(">" + code).unpack_from for vr, (code, _) in _NUMBER_FORMAT.items()
}
_PADDING: Final = " \0"

_KEYS: dict[int, str] = {}


def dataset_to_json(
    data: bytes | memoryview,
    *,
    offset: int = 0,
    end: int | None = None,
    explicit_vr: bool = True,
    little_endian: bool = True,
    bulk_data_uri: BulkDataURIFactory | None = None,
    bulk_threshold: int = 1024,
    charset_hint: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Return the DICOM JSON Model object of the dataset in `data[offset:end]`.

    `charset_hint` is the Specific Character Set to assume when the dataset
    has none, e.g. for a PACS known to send ISO_IR 100 without saying so.
    Raises `walker.DicomParseError` when the bytes cannot be walked.
    """
    elements = walk_dataset(data, offset, end, explicit_vr=explicit_vr, little_endian=little_endian)
    return elements_to_json(
        data,
        elements,
        little_endian=little_endian,
        bulk_data_uri=bulk_data_uri,
        bulk_threshold=bulk_threshold,
        charset_hint=charset_hint,
    )


def elements_to_json(
    data: bytes | memoryview,
    elements: list[Element],
    *,
    little_endian: bool = True,
    bulk_data_uri: BulkDataURIFactory | None = None,
    bulk_threshold: int = 1024,
    charset_hint: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """As `dataset_to_json`, for elements the caller has already walked."""
    encoder = _Encoder(data, little_endian, bulk_data_uri, bulk_threshold)
    return encoder.dataset(elements, charset_from_terms(charset_hint), ())


def datasets_to_json_bytes(datasets: Iterable[dict[str, Any]]) -> bytes:
    """Serialise DICOM JSON Model objects as one JSON array (PS3.18 F.2.1)."""
    return orjson.dumps(datasets if isinstance(datasets, list) else list(datasets))


def _key(tag: int) -> str:
    key = _KEYS.get(tag)
    if key is None:
        key = f"{tag:08X}"
        if len(_KEYS) < 65536:
            _KEYS[tag] = key
    return key


class _Encoder:
    """Turns walked elements of one buffer into DICOM JSON objects."""

    __slots__ = ("bulk_data_uri", "bulk_threshold", "data", "little_endian")

    def __init__(
        self,
        data: bytes | memoryview,
        little_endian: bool,
        bulk_data_uri: BulkDataURIFactory | None,
        bulk_threshold: int,
    ) -> None:
        self.data = data
        self.little_endian = little_endian
        self.bulk_data_uri = bulk_data_uri
        self.bulk_threshold = bulk_threshold

    def dataset(
        self, elements: list[Element], charset: Charset, path: tuple[int, ...]
    ) -> dict[str, Any]:
        """One dataset or sequence item (PS3.18 F.2.2)."""
        data = self.data
        kinds = _KIND
        keys = _KEYS
        out: dict[str, Any] = {}
        previous = -1
        ordered = True
        for tag, vr, offset, length, items, fragments in elements:
            if not tag & 0xFFFF:
                continue  # PS3.18 F.2.2: no Group Length attributes
            if tag <= previous:
                ordered = False
            previous = tag
            key = keys.get(tag) or _key(tag)
            if not length:
                out[key] = {"vr": vr}  # PS3.18 F.2.5: empty attribute
                continue
            kind = kinds.get(vr, _BULK)
            if kind <= _PERSON_NAME:
                chunk = data[offset : offset + length]
                raw = chunk if isinstance(chunk, bytes) else bytes(chunk)
                if tag == SPECIFIC_CHARACTER_SET:
                    charset = charset_from_value(raw)
                    value: Any = ["ISO_IR 192"] if charset is not DEFAULT_CHARSET else None
                elif kind == _DEFAULT_TEXT:
                    value = _strings(raw.decode("latin_1"), vr in _STRIP_BOTH)
                elif kind == _CHARSET_TEXT:
                    value = _strings(decode_text(raw, charset), False)
                elif kind == _SINGLE_TEXT:
                    text = decode_text(raw, charset).rstrip(_PADDING if vr != "UR" else " ")
                    value = [text] if text else None
                else:
                    value = _person_names(decode_person_name(raw, charset))
            elif kind <= _INTEGER:
                chunk = data[offset : offset + length]
                raw = chunk if isinstance(chunk, bytes) else bytes(chunk)
                value = _numbers(raw.decode("latin_1"), kind == _DECIMAL)
            elif kind <= _FLOAT:
                value = self._binary_numbers(vr, offset, length)
            elif kind == _SEQUENCE:
                if items:
                    out[key] = {
                        "vr": "SQ",
                        "Value": [
                            self.dataset(item, charset, (*path, tag, index))
                            for index, item in enumerate(items)
                        ],
                    }
                else:
                    out[key] = {"vr": "SQ"}
                continue
            elif kind == _TAG:
                value = self._tags(offset, length)
            else:
                out[key] = self._bulk(vr, tag, offset, length, path, fragments is not None)
                continue
            out[key] = {"vr": vr, "Value": value} if value else {"vr": vr}
        if not ordered:  # PS3.18 F.2.2: ascending; only broken datasets get here
            out = dict(sorted(out.items()))
        return out

    def _binary_numbers(self, vr: str, offset: int, length: int) -> list[Any] | None:
        """US SS UL SL UV SV FL FD (PS3.5 6.2); FL/FD NaN and infinity -> null."""
        code, size = _NUMBER_FORMAT[vr]
        if length == size:  # the common case: one value, precompiled
            single = (_ONE_NUMBER_LE if self.little_endian else _ONE_NUMBER_BE)[vr]
            values: list[Any] = list(single(self.data, offset))
        else:
            count = length // size
            if not count:
                return None
            order = "<" if self.little_endian else ">"
            values = list(struct.unpack_from(f"{order}{count}{code}", self.data, offset))
        if code in "fd":
            isfinite = math.isfinite
            values = [v if isfinite(v) else None for v in values]
        return values

    def _tags(self, offset: int, length: int) -> list[Any] | None:
        """AT as "GGGGEEEE" strings (PS3.18 F.2.3)."""
        count = length // 4
        if not count:
            return None
        order = "<" if self.little_endian else ">"
        words = struct.unpack_from(f"{order}{count * 2}H", self.data, offset)
        return [f"{words[i]:04X}{words[i + 1]:04X}" for i in range(0, len(words), 2)]

    def _bulk(
        self,
        vr: str,
        tag: int,
        offset: int,
        length: int,
        path: tuple[int, ...],
        encapsulated: bool,
    ) -> dict[str, Any]:
        """O* and UN values, and Pixel Data: BulkDataURI or InlineBinary
        (PS3.18 F.2.6, F.2.7)."""
        bulk_data_uri = self.bulk_data_uri
        if bulk_data_uri is not None and (length > self.bulk_threshold or tag in PIXEL_DATA_TAGS):
            return {"vr": vr, "BulkDataURI": bulk_data_uri((*path, tag))}
        raw = self.data[offset : offset + length]
        width = _SWAPPED_BINARY.get(vr)
        if width and not self.little_endian and not encapsulated:
            raw = _to_little_endian(bytes(raw), width)
        return {"vr": vr, "InlineBinary": binascii.b2a_base64(raw, newline=False).decode("ascii")}


def _strings(text: str, strip_leading: bool) -> list[str | None] | None:
    """Split a multi-valued string (PS3.5 6.4) and drop padding; an empty value
    in a multi-valued string is None (PS3.18 F.2.5)."""
    if "\\" not in text:
        text = text.strip(_PADDING) if strip_leading else text.rstrip(_PADDING)
        return [text] if text else None
    if strip_leading:
        return [value.strip(_PADDING) or None for value in text.split("\\")]
    return [value.rstrip(_PADDING) or None for value in text.split("\\")]


def _person_names(text: str) -> list[dict[str, str] | None] | None:
    """PN values as PS3.18 F.2.2 objects."""
    if "\\" not in text:
        name = split_person_name(text.rstrip(_PADDING))
        return [name] if name else None
    return [split_person_name(value.rstrip(_PADDING)) for value in text.split("\\")]


def _numbers(text: str, decimal: bool) -> list[float | int | None] | None:
    """DS or IS values as numbers; invalid ones as None (see rule 3)."""
    values = text.split("\\")
    if len(values) == 1 and not text.strip(_PADDING):
        return None
    parse = _decimal if decimal else _integer
    return [parse(value.strip(_PADDING)) for value in values]


def _decimal(value: str) -> float | None:
    if not value or "_" in value:  # float() accepts "1_0"; DS does not
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _integer(value: str) -> int | None:
    if not value or "_" in value:
        return None
    try:
        number = int(value)
    except ValueError:
        decimal = _decimal(value)
        if decimal is None or not decimal.is_integer():
            return None
        number = int(decimal)
    # orjson cannot write integers beyond 64 bits; such an IS is garbage anyway
    # (PS3.5 Table 6.2-1 allows 32 bits).
    return number if -(2**63) <= number < 2**64 else None


def _to_little_endian(raw: bytes, width: int) -> bytes:
    """Reverse the bytes of each `width`-byte word (PS3.5 7.3)."""
    import numpy  # only big endian datasets, which are rare (retired in PS3.5)

    usable = len(raw) - len(raw) % width
    words = numpy.frombuffer(raw, dtype=f"u{width}", count=usable // width)
    return bytes(words.byteswap().tobytes()) + raw[usable:]
