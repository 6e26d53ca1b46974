"""A strict multipart/related reader: the suite's own, so that it judges WADO-08.

Lenient readers (requests-toolbelt's, most clients') accept bodies that a
strict viewer would refuse; this one raises ``MultipartError`` saying what is
wrong instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BCHARS = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")


class MultipartError(ValueError):
    pass


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def media_params(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype; a=b; c="d"`` -> ("type/subtype", {"a": "b", "c": "d"}), names lower-cased."""
    pieces = _split_params(value)
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, sep, val = piece.partition("=")
        if not sep:
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        params[name.strip().lower()] = val
    return pieces[0].strip().lower(), params


def _split_params(value: str) -> list[str]:
    out, current, quoted = [], [], False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(char)
    out.append("".join(current))
    return out


def boundary_of(content_type: str) -> str:
    media, params = media_params(content_type)
    if media != "multipart/related":
        raise MultipartError(f"not multipart/related: {content_type!r}")
    boundary = params.get("boundary")
    if not boundary:
        raise MultipartError(f"no boundary parameter: {content_type!r}")
    if not _BCHARS.match(boundary):
        raise MultipartError(f"illegal boundary {boundary!r} (RFC 2046: 1-70 bchars)")
    return boundary


def parse(content_type: str, body: bytes) -> list[Part]:
    """The parts of a multipart/related body; raises ``MultipartError`` if ill-formed."""
    boundary = boundary_of(content_type).encode()
    delimiter = b"--" + boundary
    if not body.startswith(delimiter):
        # A preamble is legal but no DICOMweb server sends one; still allow it.
        start = body.find(b"\r\n" + delimiter)
        if start < 0:
            raise MultipartError("no opening boundary")
        body = body[start + 2 :]
    parts: list[Part] = []
    position = len(delimiter)
    while True:
        if body[position : position + 2] == b"--":
            return parts  # close delimiter; an epilogue is ignored
        if body[position : position + 2] != b"\r\n":
            raise MultipartError(f"boundary at {position} not followed by CRLF or '--'")
        position += 2
        end = body.find(b"\r\n" + delimiter, position)
        if end < 0:
            raise MultipartError("part not terminated by a boundary (truncated body?)")
        raw = body[position:end]
        head, sep, content = raw.partition(b"\r\n\r\n")
        if not sep:
            if raw.startswith(b"\r\n"):
                head, content = b"", raw[2:]
            else:
                raise MultipartError("part headers not ended by an empty line")
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n"):
            if not line:
                continue
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon:
                raise MultipartError(f"malformed part header {line!r}")
            headers[name.strip().lower()] = value.strip()
        parts.append(Part(headers, content))
        position = end + 2 + len(delimiter)
        if position > len(body):
            raise MultipartError("body ends inside a boundary")
