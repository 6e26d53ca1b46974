"""Decode DICOM text values by Specific Character Set (PS3.5 6.1, PS3.3 C.12.1.1.2).

Why: the JSON we emit is UTF-8 (PS3.18 F.2, JSON-05), whatever character set
the PACS used. Most datasets use one stateless character set (none, ISO_IR 100,
ISO_IR 192, GB18030 ...), which Python's codecs decode directly; only ISO 2022
code extensions (escape sequences, e.g. Japanese and Korean) need pydicom's
escape-aware decoder, and only when a value actually holds an escape.
Undecodable bytes become U+FFFD rather than failing the dataset, as pydicom
does when it is not in strict mode.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pydicom.charset import convert_encodings, decode_bytes

__all__ = [
    "DEFAULT_CHARSET",
    "Charset",
    "charset_from_terms",
    "charset_from_value",
    "decode_person_name",
    "decode_text",
    "split_person_name",
]

_ESC: Final = 0x1B
# PS3.5 6.1.2.5.3: after these the initial character set is active again.
_TEXT_DELIMITERS: Final = {0x0A, 0x0C, 0x0D, 0x09, 0x5C}
_PN_DELIMITERS: Final = {0x5E, 0x3D, 0x5C}  # ^ = and the value delimiter
_PN_GROUPS: Final = ("Alphabetic", "Ideographic", "Phonetic")


@dataclass(frozen=True, slots=True)
class Charset:
    """A Specific Character Set, ready to decode.

    `codecs` are Python codec names, one per value of (0008,0005) (pydicom's
    mapping); `code_extensions` is true when ISO 2022 escape sequences may
    switch between them (PS3.5 6.1.2.5).
    """

    codecs: tuple[str, ...]
    code_extensions: bool


# PS3.5 6.1.2.2: without (0008,0005) the repertoire is ISO-IR 6 (ASCII). We
# decode it as Latin-1 so that undeclared 8-bit bytes survive, like pydicom.
DEFAULT_CHARSET: Final = Charset(("latin_1",), False)

_BY_VALUE: dict[bytes, Charset] = {}


def charset_from_terms(terms: str | Sequence[str] | None) -> Charset:
    """Build a `Charset` from the Defined Terms of (0008,0005), e.g.
    ``["", "ISO 2022 IR 87"]``. Unknown terms fall back as pydicom does."""
    if terms is None:
        return DEFAULT_CHARSET
    if isinstance(terms, str):
        terms = terms.split("\\")
    cleaned = [term.strip() for term in terms]
    if not any(cleaned):
        return DEFAULT_CHARSET
    names = convert_encodings(cleaned)
    # Normalised names make str.decode skip its alias lookup on every value.
    normalised = tuple(codecs.lookup(name).name for name in names)
    extensions = len(normalised) > 1 or any(term.startswith("ISO 2022") for term in cleaned)
    # pydicom's decoder wants its own names (it compares them with its tables).
    return Charset(tuple(names) if extensions else normalised, extensions)


def charset_from_value(raw: bytes) -> Charset:
    """Build (and cache) the `Charset` for the raw value of (0008,0005)."""
    charset = _BY_VALUE.get(raw)
    if charset is None:
        charset = charset_from_terms(raw.decode("latin_1").rstrip(" \0"))
        if len(_BY_VALUE) < 256:
            _BY_VALUE[raw] = charset
    return charset


def decode_text(raw: bytes, charset: Charset) -> str:
    """Decode the value of a text VR (SH, LO, ST, LT, UC, UT) to str.

    Multi-valued VRs are split by the caller after decoding: in multi-byte
    character sets the byte 0x5C can be part of a character.
    """
    if not charset.code_extensions or _ESC not in raw:
        return raw.decode(charset.codecs[0], "replace")
    return decode_bytes(raw, charset.codecs, _TEXT_DELIMITERS)


def decode_person_name(raw: bytes, charset: Charset) -> str:
    """Decode a PN value to str (PS3.5 6.2.1, 6.1.2.5.3).

    The whole value is decoded at once, with "^", "=" and "\\" resetting the
    character set: splitting the bytes first would cut two-byte characters of
    ISO 2022 IR 87 whose bytes look like "=".
    """
    if not charset.code_extensions or _ESC not in raw:
        return raw.decode(charset.codecs[0], "replace")
    return decode_bytes(raw, charset.codecs, _PN_DELIMITERS)


def split_person_name(value: str) -> dict[str, str] | None:
    """Split one decoded PN value into its component groups (PS3.5 6.2.1.1).

    Returns the PS3.18 F.2.2 object with only the non-empty groups, or None
    when every group is empty.
    """
    groups = value.split("=", 2)
    if len(groups) == 1:
        return {"Alphabetic": value} if value else None
    name = {key: group for key, group in zip(_PN_GROUPS, groups, strict=False) if group}
    return name or None
