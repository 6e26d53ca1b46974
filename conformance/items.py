"""The checklist items the suite checks, with the level each is held to.

IDs and wording follow ``PS3.18-CHECKLIST.md`` (the project's reading of
PS3.18).  A test's name starts with its item ID (``test_QIDO_09_...``), which
is how results are grouped; several tests may check one item.

Levels:
  required      what PS3.18 asks of an origin server or a DIMSE proxy;
  optional      what PS3.18 allows a server to leave out (WADO-URI, thumbnails,
                the capabilities resource, CORS);
  configurable  what differs between editions or servers: the expectation is a
                switch of the suite (``--empty-result``, ``--no-accept``,
                ``--allowed-origin``), the current standard by default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Level = Literal["required", "optional", "configurable"]


@dataclass(frozen=True)
class Item:
    id: str
    level: Level
    title: str


_TABLE: tuple[tuple[str, Level, str], ...] = (
    ("URL-01", "required", "Every resource template answers (no 404/500/501 on seeded data)"),
    ("URL-02", "required", "Search at every level a DIMSE proxy must support"),
    ("URL-03", "optional", "WADO-URI request parameters"),
    ("URL-04", "required", "RetrieveURL is absolute and resolves (also behind X-Forwarded-*)"),
    ("QIDO-01", "required", "Attributes by keyword or tag; sequence paths"),
    ("QIDO-02", "required", "Required matching keys at each level"),
    ("QIDO-03", "required", "C-FIND matching rules: single, list, universal, wildcard, range"),
    ("QIDO-04", "required", "StudyDate + StudyTime match as one date-time"),
    ("QIDO-05", "required", "Non-ASCII values, percent-encoded UTF-8"),
    ("QIDO-06", "required", "includefield: list, repeated, all"),
    ("QIDO-07", "required", "Attributes always returned; match keys echoed"),
    ("QIDO-08", "required", "Unsupported fuzzymatching: literal match + Warning 299"),
    ("QIDO-09", "required", "limit/offset and the 'additional results' warning"),
    ("QIDO-10", "configurable", "Empty result: 204 or 200 []"),
    ("QIDO-11", "required", "Media types: JSON default, multipart XML, */*, 406"),
    ("QIDO-12", "required", "Unknown parameters ignored; invalid values 400"),
    ("WADO-01", "required", "multipart/related application/dicom, one part per instance"),
    ("WADO-02", "required", "Explicit VR Little Endian by default"),
    ("WADO-03", "required", "transfer-syntax=*, explicit syntaxes, 406, q-values"),
    ("WADO-04", "required", "Quoted/unquoted type=, case-insensitive matching"),
    ("WADO-05", "configurable", "accept query parameter; no Accept header"),
    ("WADO-06", "required", "Metadata with BulkDataURIs that return the original bytes"),
    ("WADO-07", "required", "Frames: order, media types, 400/404, native length"),
    ("WADO-08", "required", "Well-formed multipart"),
    ("WADO-09", "required", "Unknown or mismatched UIDs: 404"),
    ("REND-01", "required", "Rendered single frame: JPEG default, PNG, GIF"),
    ("REND-02", "required", "Rendered series / multi-frame as multipart"),
    ("REND-03", "required", "viewport: crop, scale, flip, 400"),
    ("REND-04", "required", "window, quality, annotation"),
    ("REND-05", "optional", "Thumbnail"),
    ("URI-01", "optional", "WADO-URI application/dicom, transferSyntax, anonymize"),
    ("URI-02", "optional", "WADO-URI image parameters"),
    ("URI-03", "optional", "WADO-URI unknown UIDs: 404"),
    ("STOW-01", "required", "Accepted media types; 415; broken multipart 400"),
    ("STOW-02", "required", "Instance of another study under /studies/{s}: failed, 409"),
    ("STOW-03", "required", "Status codes 200/202/409/400/415"),
    ("STOW-04", "required", "Response body (Annex I)"),
    ("STOW-05", "required", "C-STORE statuses carried over (warnings/failures)"),
    ("STOW-06", "required", "Large uploads stream; Expect: 100-continue"),
    ("JSON-01", "required", "Array, sorted 8-hex keys, no group lengths, one value kind"),
    ("JSON-02", "required", "Value types per VR"),
    ("JSON-03", "required", "Empty attributes, empty values, empty items"),
    ("JSON-04", "required", "Private creators and elements kept"),
    ("JSON-05", "required", "UTF-8 output from the stored character set"),
    ("ERR-01", "required", "Client errors: status codes and a short body"),
    ("ERR-02", "required", "PACS unreachable or silent: 502/503/504 in time (proxies)"),
    ("ERR-03", "required", "PACS failure statuses mapped (proxies)"),
    ("CAP-01", "optional", "OPTIONS {base}/ capabilities (WADL)"),
    ("CORS-01", "configurable", "CORS preflight and exposed headers"),
    ("OHIF-01", "required", "Replay of a viewer session, frames decode to the source"),
)

ITEMS: dict[str, Item] = {id_: Item(id_, level, title) for id_, level, title in _TABLE}

_NAME = re.compile(r"^test_([A-Z]+)_(\d{2})(?:_|\b|\[)")


def item_of(test_name: str) -> Item | None:
    """The item a test checks, from its name (``test_WADO_07_frame_zero`` -> WADO-07)."""
    match = _NAME.match(test_name)
    if match is None:
        return None
    return ITEMS.get(f"{match.group(1)}-{match.group(2)}")
