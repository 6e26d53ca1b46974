"""Accept header negotiation that takes what viewers actually send (PS3.18 8.7, RFC 9110 12.5.1).

Viewers are loose: Cornerstone sends ``multipart/related;
type=application/octet-stream; transfer-syntax=*`` with the ``type`` value
unquoted although ``/`` makes quoting mandatory, several ranges with q-values
are common, and case varies.  So parsing is forgiving (unquoted values run to the
next ``;`` or ``,``; names and types are compared without case) and one
ill-formed media range is skipped rather than failing the whole header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from gateway.services.errors import InvalidParameter, NotAcceptable

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QVALUE = re.compile(r"(0(\.\d{0,3})?|1(\.0{0,3})?)")
# "+" in a query string becomes a space when form-decoded: application/dicom json.
_DECODED_PLUS = re.compile(r"(?<=[\w.\-])\s+(?=[\w.\-])")


@dataclass(frozen=True)
class MediaRange:
    """One media range of an Accept header: names lower-cased, values unquoted."""

    type: str
    subtype: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def matches(self, offer: Offer) -> bool:
        """Whether this range admits ``offer``.

        Every parameter of the range must be met by the offer, except that
        ``transfer-syntax=*`` admits any syntax (PS3.18 8.7.3.5.2) and a
        ``charset`` the offer does not state is not held against it.
        """
        if self.type not in ("*", offer.type) or self.subtype not in ("*", offer.subtype):
            return False
        for name, value in self.params.items():
            if name == "transfer-syntax" and value == "*":
                continue
            if name == "charset" and name not in offer.params:
                continue
            if offer.params.get(name, "").lower() != value.lower():
                return False
        return True

    @property
    def specificity(self) -> tuple[bool, bool, int]:
        """RFC 9110 12.5.1: the most specific range that matches decides the quality."""
        return (self.type != "*", self.subtype != "*", len(self.params))


@dataclass(frozen=True)
class Offer:
    """A representation the server can produce: ``media_type`` plus its parameters."""

    media_type: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.media_type.split("/", 1)[0].lower()

    @property
    def subtype(self) -> str:
        return self.media_type.split("/", 1)[1].lower()

    def __str__(self) -> str:
        """The Content-Type value, values quoted where RFC 9110 requires it."""
        parts = [self.media_type]
        for name, value in self.params.items():
            parts.append(f"{name}={value}" if _TOKEN.fullmatch(value) else f'{name}="{value}"')
        return "; ".join(parts)


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header; no header (or a blank one) accepts anything.

    Ill-formed ranges are dropped, so a header of nothing but garbage yields an
    empty list, which accepts nothing.
    """
    if header is None or not header.strip():
        return [MediaRange("*", "*")]
    ranges = []
    for element in _split(header, ","):
        media_range = _parse_range(element)
        if media_range is not None:
            ranges.append(media_range)
    return ranges


def parse_accept_parameter(value: str) -> list[MediaRange]:
    """The ``accept`` query parameter (PS3.18 8.3.3.1), which overrides the header.

    It names media types, not ranges: a ``*`` type or subtype, or an ill-formed
    entry, is 400.  A ``+`` that form-decoding turned into a space is restored.
    """
    ranges = []
    for element in _split(_DECODED_PLUS.sub("+", value), ","):
        media_range = _parse_range(element)
        if media_range is None:
            raise InvalidParameter("accept", f"not a media type: {element.strip()!r}")
        if "*" in (media_range.type, media_range.subtype):
            raise InvalidParameter("accept", f"wildcards are not allowed: {element.strip()!r}")
        ranges.append(media_range)
    if not ranges:
        raise InvalidParameter("accept", "no media type given")
    return ranges


def choose(ranges: Sequence[MediaRange], offers: Sequence[Offer]) -> Offer | None:
    """The offer the client prefers most, ties going to the earlier offer; None if none."""
    best: Offer | None = None
    best_q = 0.0
    for offer in offers:
        matching = [r for r in ranges if r.matches(offer)]
        if not matching:
            continue
        q = max(matching, key=lambda r: r.specificity).q
        if q > best_q:
            best, best_q = offer, q
    return best


# PS3.18 10.6.1.3 (QIDO-11): JSON is the default; XML comes one result per part.
QIDO_JSON = Offer("application/dicom+json")
QIDO_XML = Offer("multipart/related", {"type": "application/dicom+xml"})
# Not in PS3.18, but sent by generic HTTP clients; asked for by name, it is the same JSON.
QIDO_PLAIN_JSON = Offer("application/json")
QIDO_OFFERS: tuple[Offer, ...] = (QIDO_JSON, QIDO_XML, QIDO_PLAIN_JSON)

QidoRepresentation = Literal["json", "xml-multipart"]


def choose_qido_representation(accept: str | None) -> QidoRepresentation:
    """The QIDO-RS response format for an Accept header; NotAcceptable (406) if none fits."""
    return qido_representation_of(parse_accept(accept))


def qido_representation_of(ranges: Sequence[MediaRange]) -> QidoRepresentation:
    """As ``choose_qido_representation``, for ranges already parsed (``accept`` parameter)."""
    chosen = choose(ranges, QIDO_OFFERS)
    if chosen is None:
        raise NotAcceptable(
            "search results are available as application/dicom+json or "
            'multipart/related; type="application/dicom+xml"'
        )
    return "xml-multipart" if chosen is QIDO_XML else "json"


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes (RFC 9110 5.6.4 quoted-string)."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return pieces


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _parse_range(element: str) -> MediaRange | None:
    """One media range, or None when it is ill-formed (RFC 9110 12.5.1)."""
    pieces = _split(element, ";")
    type_, _, subtype = pieces[0].strip().lower().partition("/")
    if not _TOKEN.fullmatch(type_) or not _TOKEN.fullmatch(subtype):
        return None
    if type_ == "*" and subtype != "*":
        return None
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        name, eq, value = piece.partition("=")
        name = name.strip().lower()
        if not name and not eq:
            continue  # a stray ";"
        if not eq or not _TOKEN.fullmatch(name):
            return None
        if name == "q":
            # Parameters after the weight are accept-ext, which we do not use.
            if not _QVALUE.fullmatch(value.strip()):
                return None
            q = float(value.strip())
            break
        params[name] = _unquote(value)
    return MediaRange(type_, subtype, params, q)
