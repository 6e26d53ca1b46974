"""QIDO-RS search (PS3.18 10.6) as a C-FIND on the PACS.

The matches are decoded by our own element walker into the DICOM JSON model
as they arrive.  Results are collected up to ``offset + limit + 1``: the one
past the limit tells us that more remain (the Warning header must go out
before the body), and then the C-FIND is cancelled at once (QIDO-09) instead
of waiting for thousands of matches.  The collected list is bounded by the
configured maximum, so holding it is cheap; nothing else in a search buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.dicom.dicom_json import dataset_to_json
from gateway.dicom.encode import encode_dataset
from gateway.dicom.walker import DicomParseError
from gateway.services.errors import PacsFailed
from gateway.services.pacs import PacsClient
from gateway.services.qido_attributes import RESULT_ATTRIBUTES, Level
from gateway.services.qido_identifier import build_identifier
from gateway.services.qido_query import QidoQuery

_IMPLICIT_LE = "1.2.840.10008.1.2"
_RETRIEVE_URL = "00081190"
_QUERY_LEVEL = "00080052"
_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_SOP_UID = "00080018"
_UNIQUE_KEY: dict[Level, str] = {"STUDY": _STUDY_UID, "SERIES": _SERIES_UID, "IMAGE": _SOP_UID}


@dataclass
class SearchResult:
    """What a search found, and the Warning header texts to send with it."""

    matches: list[dict[str, Any]]
    warnings: list[str]
    more_available: bool


def _first_value(item: dict[str, Any], tag: str) -> str | None:
    values = item.get(tag, {}).get("Value")
    if values and isinstance(values[0], str):
        return values[0]
    return None


def _retrieve_url(
    level: Level, item: dict[str, Any], query: QidoQuery, base_url: str
) -> str | None:
    study = _first_value(item, _STUDY_UID) or query.study_uid
    if not study:
        return None
    url = f"{base_url}/studies/{study}"
    if level == "STUDY":
        return url
    series = _first_value(item, _SERIES_UID) or query.series_uid
    if not series:
        return None
    url += f"/series/{series}"
    if level == "SERIES":
        return url
    sop = _first_value(item, _SOP_UID)
    return f"{url}/instances/{sop}" if sop else None


_RESULT_VRS: dict[Level, list[tuple[str, str]]] = {}


def _required_keys(level: Level) -> list[tuple[str, str]]:
    """(8-hex tag, VR) of the top-level return attributes of a level (QIDO-07)."""
    if level not in _RESULT_VRS:
        from pydicom.datadict import dictionary_VR

        keys = sorted({path[0] for path in RESULT_ATTRIBUTES[level]})
        _RESULT_VRS[level] = [(f"{t:08X}", dictionary_VR(t)) for t in keys]
    return _RESULT_VRS[level]


def finish_match(item: dict[str, Any], query: QidoQuery, base_url: str) -> dict[str, Any]:
    """Add RetrieveURL and the required attributes the PACS left out; drop the Q/R level.

    PS3.18 Table 10.6.3-3..5: an attribute the PACS does not know comes back
    empty (``{"vr": ...}``); dcmqrscp silently drops keys it does not index.
    """
    item.pop(_QUERY_LEVEL, None)
    for tag, vr in _required_keys(query.level):
        if tag not in item:
            item[tag] = {"vr": vr}
    url = _retrieve_url(query.level, item, query, base_url)
    if url:
        item[_RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
    return dict(sorted(item.items()))


def identifier_encoder(query: QidoQuery, charset: str) -> Callable[[str], bytes]:
    dataset = build_identifier(query, charset=charset)

    def encode(transfer_syntax: str) -> bytes:
        return encode_dataset(dataset, explicit_vr=transfer_syntax != _IMPLICIT_LE)

    return encode


async def search(
    pacs: PacsClient, query: QidoQuery, *, base_url: str, charset: str, max_results: int
) -> SearchResult:
    """Run the C-FIND and return at most ``limit`` matches after ``offset``."""
    limit = max_results if query.limit is None else min(query.limit, max_results)
    wanted = query.offset + limit
    matches: list[dict[str, Any]] = []
    seen = 0
    more = False
    unique: set[str] = set()
    finds = pacs.find(identifier_encoder(query, charset))
    try:
        async for match in finds:
            try:
                item = dataset_to_json(match.dataset, explicit_vr=match.explicit_vr)
            except DicomParseError as exc:
                raise PacsFailed(
                    f"PACS {pacs.config.aet} sent a C-FIND identifier we cannot parse: {exc}"
                ) from exc
            if query.has_post_filter and not query.post_filter(item):
                continue
            key = _first_value(item, _UNIQUE_KEY[query.level])
            if key is not None:
                # Some SCPs (pynetdicom's qrscp) answer once per instance even at
                # STUDY or SERIES level; a match is one entity, not one response.
                if key in unique:
                    continue
                unique.add(key)
            seen += 1
            if seen <= query.offset:
                continue
            if seen > wanted:
                more = True
                break
            matches.append(finish_match(item, query, base_url))
    finally:
        await finds.aclose()  # cancels the C-FIND if we stopped early
    warnings = list(query.warnings)
    if more:
        # PS3.18 8.3.4.4: the count is unknown because the query was cancelled
        # as soon as one more match than needed had arrived (docs/qido.md).
        warnings.append("There are additional results that can be requested")
    return SearchResult(matches, warnings, more)
