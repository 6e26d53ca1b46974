"""Which media type and transfer syntax the frames of one instance are sent in (WADO-07).

PS3.18 8.7.3.3: uncompressed frames are ``application/octet-stream`` (Explicit
VR Little Endian); compressed frames have their own media types (image/jp2,
image/jls, image/jphc, image/jpeg, image/dicom-rle).  Cornerstone asks
``multipart/related; type=application/octet-stream; transfer-syntax=*``,
which means "as stored, whatever it is, labelled with its transfer syntax".
"""

from __future__ import annotations

from dataclasses import dataclass

import pydicom.uid as U

from gateway.dicom.frames import frame_media_type
from gateway.services.errors import NotAcceptable
from gateway.web.accept import MediaRange, parse_accept, parse_accept_parameter

OCTET = "application/octet-stream"
EXPLICIT_LE = U.ExplicitVRLittleEndian

# PS3.18 Table 8.7.3-5: the default syntax of each compressed frame media type.
MEDIA_DEFAULT_SYNTAX = {
    "image/jpeg": U.JPEGBaseline8Bit,
    "image/jls": U.JPEGLSLossless,
    "image/jp2": U.JPEG2000Lossless,
    "image/jphc": U.HTJ2KLossless,
    "image/dicom-rle": U.RLELossless,
}


# Pre-registration names some clients still send (dicomweb-client's docs list them).
_ALIASES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}


@dataclass(frozen=True)
class FrameRepresentation:
    media_type: str
    transfer_syntax: str


def _inner(media: MediaRange) -> tuple[str, str | None] | None:
    """(frame media type, transfer syntax or None) the range asks for; None for
    a range no frame can satisfy (skipped, so nothing acceptable is a 406)."""
    kind = f"{media.type}/{media.subtype}"
    syntax = media.params.get("transfer-syntax")
    if kind == "multipart/related":
        kind = media.params.get("type", OCTET).strip().lower()
    kind = _ALIASES.get(kind, kind)
    if kind in ("*/*", "multipart/*"):
        kind = OCTET
    if kind not in MEDIA_DEFAULT_SYNTAX and kind not in (OCTET, "image/*"):
        return None
    if syntax and syntax != "*" and kind in MEDIA_DEFAULT_SYNTAX:
        # A compressed media type only carries its own syntaxes (Table 8.7.3-5).
        try:
            if frame_media_type(syntax) != kind:
                return None
        except ValueError:
            return None
    return kind, syntax


def negotiate_frames(
    accept_header: str | None, accept_param: str | None, source_syntax: str
) -> FrameRepresentation:
    """The representation to send frames of an instance stored in ``source_syntax``."""
    ranges = parse_accept_parameter(accept_param) if accept_param else parse_accept(accept_header)
    if not ranges:
        given = accept_param if accept_param else accept_header
        if given and given.strip():
            raise NotAcceptable(f"no usable media range in {given!r}")
        return FrameRepresentation(OCTET, EXPLICIT_LE)
    try:
        source_media = frame_media_type(source_syntax)
    except ValueError:
        source_media = OCTET
    for media in sorted(ranges, key=lambda r: -r.q):
        if media.q <= 0:
            continue
        inner = _inner(media)
        if inner is None:
            continue
        kind, syntax = inner
        if kind == OCTET:
            if syntax == "*":
                return FrameRepresentation(OCTET, source_syntax)
            return FrameRepresentation(OCTET, syntax or EXPLICIT_LE)
        if kind == "image/*":
            if source_media != OCTET:
                return FrameRepresentation(source_media, source_syntax)
            continue
        if syntax == "*" or (syntax is None and kind == source_media):
            if kind == source_media:
                return FrameRepresentation(kind, source_syntax)
            syntax = None
        return FrameRepresentation(kind, syntax or MEDIA_DEFAULT_SYNTAX[kind])
    raise NotAcceptable(
        "frames are sent as application/octet-stream (uncompressed, or transfer-syntax=* "
        f"as stored) or as {source_media} for this instance"
    )
