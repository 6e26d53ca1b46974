"""Which transfer syntax a WADO-RS instance retrieve should answer in (PS3.18 8.7.3).

Checklist WADO-02..05: no transfer-syntax parameter means Explicit VR Little
Endian; ``transfer-syntax=*`` means as stored; an explicit syntax is honoured
when the gateway can produce it; q-values choose among several ranges; the
``accept`` query parameter overrides the header; nothing acceptable is 406.
"""

from __future__ import annotations

import pydicom.uid as U

from gateway.services.errors import InvalidParameter, NotAcceptable
from gateway.web.accept import MediaRange, parse_accept, parse_accept_parameter

DEFAULT = U.ExplicitVRLittleEndian

#: What the gateway can transcode any suitable source into (issue 3, item 3).
TRANSCODE_TARGETS = frozenset(
    {
        U.ExplicitVRLittleEndian,
        U.RLELossless,
        U.JPEG2000Lossless,
        U.HTJ2KLossless,
        U.JPEGLSLossless,
        U.JPEGBaseline8Bit,
    }
)
AS_STORED = "*"


def _ranges(accept_header: str | None, accept_param: str | None) -> list[MediaRange]:
    if accept_param:
        return parse_accept_parameter(accept_param)
    return parse_accept(accept_header)


def _is_dicom(media: MediaRange) -> bool:
    kind = f"{media.type}/{media.subtype}"
    if kind == "multipart/related":
        return media.params.get("type", "application/dicom").lower() == "application/dicom"
    # Tolerated: a bare application/dicom (some clients), and wildcards.
    return kind in ("application/dicom", "*/*", "multipart/*", "application/*")


def negotiate_instance_syntaxes(
    accept_header: str | None, accept_param: str | None = None
) -> tuple[str, ...]:
    """Transfer syntax UIDs (or ``"*"``: as stored) the client takes, best first.

    Several are kept because whether a syntax can be produced depends on the
    instance (JPEG Baseline needs 8-bit pixels): the caller tries them in order.
    """
    ranges = _ranges(accept_header, accept_param)
    if not ranges:
        given = accept_param if accept_param else accept_header
        if given and given.strip():
            raise NotAcceptable(f"no usable media range in {given!r}")
        return (DEFAULT,)
    rendered = [r for r in ranges if r.type == "image" or r.subtype in ("jpeg", "png", "gif")]
    if accept_param and rendered and any(_is_dicom(r) for r in ranges if r not in rendered):
        raise InvalidParameter("accept", "DICOM and rendered media types cannot be mixed")
    candidates = sorted(
        (r for r in ranges if r.q > 0 and _is_dicom(r)),
        key=lambda r: (-r.q, "transfer-syntax" not in r.params),
    )
    out: list[str] = []
    for media in candidates:
        syntax = media.params.get("transfer-syntax")
        if syntax is None:
            syntax = DEFAULT
        elif syntax != AS_STORED and syntax not in U.AllTransferSyntaxes:
            continue
        if syntax not in out:
            out.append(syntax)
    if not out:
        raise NotAcceptable(
            'acceptable: multipart/related; type="application/dicom" with transfer-syntax '
            "absent (Explicit VR Little Endian), * (as stored) or one of "
            + ", ".join(sorted(TRANSCODE_TARGETS))
        )
    return tuple(out)
