"""QIDO-RS search (PS3.18 10.6) as a C-FIND on the PACS.

The matches are decoded by our own element walker into the DICOM JSON model
as they arrive.  Results are collected up to ``offset + limit + 1``: the one
past the limit tells us that more remain (the Warning header must go out
before the body), and then the C-FIND is cancelled at once (QIDO-09) instead
of waiting for thousands of matches.  The collected list is bounded by the
configured maximum, so holding it is cheap.  Two things read further: a
relational search reads its parents first (qido_plan), and a study search on
ModalitiesInStudy reads all of the PACS's matches when the PACS returns no
ModalitiesInStudy, so that the gateway can fill it in and match it itself.
After the C-FINDs are closed, the returned page gets the ModalitiesInStudy and
Number Of ... Related counts the PACS left out (qido_fill).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR

from gateway.dicom.encode import encode_dataset
from gateway.services.pacs import PacsClient, match_json
from gateway.services.qido_attributes import (
    RESULT_ATTRIBUTES,
    Level,
    result_levels,
    tag_of,
)
from gateway.services.qido_fill import MODALITIES_IN_STUDY, Completer, has_value
from gateway.services.qido_headers import HeaderReader, HeaderSource
from gateway.services.qido_identifier import build_identifier
from gateway.services.qido_plan import merge_parent, scope_to_parent, split_relational
from gateway.services.qido_query import QidoQuery
from gateway.services.qido_verify import matches_query

_IMPLICIT_LE = "1.2.840.10008.1.2"
_RETRIEVE_URL = "00081190"
_QUERY_LEVEL = "00080052"
_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_SOP_UID = "00080018"
_UNIQUE_KEY: dict[Level, str] = {"STUDY": _STUDY_UID, "SERIES": _SERIES_UID, "IMAGE": _SOP_UID}
_MODALITIES_PATH = (tag_of("ModalitiesInStudy"),)


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


@functools.cache
def _required_keys(level: Level, study_scoped: bool, series_scoped: bool) -> list[tuple[str, str]]:
    """(8-hex tag, VR) of the top-level return attributes of a search (QIDO-07).

    All Series also returns the study's attributes, All Instances the study's
    and the series' (PS3.18 10.6.3.3).
    """
    levels = result_levels(level, study_scoped=study_scoped, series_scoped=series_scoped)
    keys = sorted({path[0] for lvl in levels for path in RESULT_ATTRIBUTES[lvl]})
    return [(f"{t:08X}", dictionary_VR(t)) for t in keys]


def finish_match(item: dict[str, Any], query: QidoQuery, base_url: str) -> dict[str, Any]:
    """Add RetrieveURL and the required attributes the PACS left out; drop the Q/R level.

    PS3.18 Table 10.6.3-3..5: an attribute the PACS does not know comes back
    empty (``{"vr": ...}``); dcmqrscp silently drops keys it does not index.
    """
    item.pop(_QUERY_LEVEL, None)
    scoped = (query.study_uid is not None, query.series_uid is not None)
    for tag, vr in _required_keys(query.level, *scoped):
        if tag not in item:
            item[tag] = {"vr": vr}
    url = _retrieve_url(query.level, item, query, base_url)
    if url:
        item[_RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
    return dict(sorted(item.items()))


@functools.lru_cache(maxsize=512)
def _encoded_identifier(query: QidoQuery, charset: str, explicit_vr: bool) -> bytes:
    """Viewers repeat the same searches; building the identifier is most of our cost."""
    return encode_dataset(build_identifier(query, charset=charset), explicit_vr=explicit_vr)


def identifier_encoder(query: QidoQuery, charset: str) -> Callable[[str], bytes]:
    """The identifier for the transfer syntax the PACS accepted (explicit or implicit VR)."""
    _encoded_identifier(query, charset, True)  # InvalidParameter before any association

    def encode(transfer_syntax: str) -> bytes:
        return _encoded_identifier(query, charset, transfer_syntax != _IMPLICIT_LE)

    return encode


async def _pacs_matches(
    pacs: PacsClient, query: QidoQuery, charset: str, *, post_filter: bool = True
) -> AsyncGenerator[dict[str, Any], None]:
    """One C-FIND, decoded and checked; closing early cancels it.

    ``post_filter=False`` leaves the combined date-time check to the caller
    (it needs attributes read from the headers first)."""
    unique: set[str] = set()
    async with contextlib.aclosing(pacs.find(identifier_encoder(query, charset))) as finds:
        async for match in finds:
            item = match_json(pacs.config.aet, match)
            if not matches_query(query, item):
                continue
            if post_filter and query.has_post_filter and not query.post_filter(item):
                continue
            key = _first_value(item, _UNIQUE_KEY[query.level])
            if key is not None:
                # Some SCPs (pynetdicom's qrscp) answer once per instance even at
                # STUDY or SERIES level; a match is one entity, not one response.
                if key in unique:
                    continue
                unique.add(key)
            yield item


def _matches_modalities(query: QidoQuery) -> bool:
    return query.level == "STUDY" and any(k.path == _MODALITIES_PATH for k in query.match_keys)


async def _level_matches(
    pacs: PacsClient,
    query: QidoQuery,
    charset: str,
    completer: Completer,
    headers: HeaderReader | None,
) -> AsyncGenerator[dict[str, Any], None]:
    """One level's C-FIND, with ModalitiesInStudy matched by the gateway when the PACS cannot.

    A study search with a ModalitiesInStudy key on a PACS that returns no
    ModalitiesInStudy (and so, like dcmqrscp, ignores the key) cannot be decided
    from the PACS's answer.  From the first such result on, the rest of the
    PACS's matches are read (at most ``completer.max_pending``) and its C-FIND
    closed; then the studies' modalities
    are filled in (qido_fill) a few studies at a time, in the PACS's order, and
    the studies that match are passed on.  Limit and offset count after this
    filter, and a consumer that has enough stops the fill-in C-FINDs.

    A key on an attribute the PACS does not keep (``header_attributes``) is
    decided the same way, from the instances' headers (qido_headers).
    """
    trusted = headers.matched_by(query) if headers is not None else frozenset[int]()
    by_headers = bool(trusted)
    by_modalities = _matches_modalities(query)
    if not by_modalities and not by_headers:
        async with contextlib.aclosing(_pacs_matches(pacs, query, charset)) as items:
            async for item in items:
                yield item
        return
    pending: list[dict[str, Any]] = []
    found = _pacs_matches(pacs, query, charset, post_filter=not by_headers)
    async with contextlib.aclosing(found) as items:
        async for item in items:
            if pending or by_headers or not has_value(item, MODALITIES_IN_STUDY):
                if len(pending) >= completer.max_pending:
                    completer.truncated = True
                    break  # closes the C-FIND (C-CANCEL); the search warns
                pending.append(item)
            else:
                yield item
    window = 2 * completer.width
    for start in range(0, len(pending), window):
        chunk = pending[start : start + window]
        if by_modalities:
            await completer.complete("STUDY", chunk, modalities_only=True)
        known = [frozenset[int]()] * len(chunk)
        if headers is not None and by_headers:
            read = await headers.fill(query, chunk)
            known = [trusted if r else frozenset() for r in read]
        for item, item_known in zip(chunk, known, strict=True):
            if not matches_query(query, item, item_known):
                continue
            if by_headers and query.has_post_filter and not query.post_filter(item):
                continue
            yield item


async def _matches(
    pacs: PacsClient,
    query: QidoQuery,
    charset: str,
    completer: Completer,
    headers: HeaderReader | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """The query's matches, split into hierarchical C-FINDs when it needs that."""
    split = split_relational(query)
    if split is None:
        level = _level_matches(pacs, query, charset, completer, headers)
        async with contextlib.aclosing(level) as items:
            async for item in items:
                yield item
        return
    parent_query, child_query = split
    # The parents are collected first so that their association is back in the
    # pool before the children's C-FINDs start: nested acquires could exhaust it.
    async with contextlib.aclosing(
        _matches(pacs, parent_query, charset, completer, headers)
    ) as parent_items:
        parents = [p async for p in parent_items]
    for parent in parents:
        scoped = scope_to_parent(child_query, parent)
        if scoped is None:
            continue
        children = _matches(pacs, scoped, charset, completer, headers)
        async with contextlib.aclosing(children) as items:
            async for item in items:
                yield merge_parent(item, parent)


async def search(
    pacs: PacsClient,
    query: QidoQuery,
    *,
    base_url: str,
    charset: str,
    max_results: int,
    fill: str = "all",
    header_source: HeaderSource | None = None,
) -> SearchResult:
    """Run the C-FIND(s) and return at most ``limit`` matches after ``offset``.

    ``fill`` is the qido_fill setting (what the gateway asks for itself when
    the PACS leaves ModalitiesInStudy and the counts out: qido_fill.py);
    ``header_source`` reads the PACS's ``header_attributes`` from the
    instances (qido_headers.py)."""
    limit = max_results if query.limit is None else min(query.limit, max_results)
    wanted = query.offset + limit
    found: list[dict[str, Any]] = []
    seen = 0
    more = False
    completer = Completer(pacs, fill)
    # What a search reads ahead of its page to decide keys itself (qido_fill, qido_headers).
    completer.max_pending = max(max_results, wanted + 1)
    headers = header_source.reader(pacs, query) if header_source is not None else None
    async with contextlib.aclosing(_matches(pacs, query, charset, completer, headers)) as items:
        async for item in items:
            seen += 1
            if seen <= query.offset:
                continue
            if seen > wanted:
                more = True
                break  # leaving the block closes the generators: C-CANCEL
            found.append(item)
    # Only the returned page is completed, after every C-FIND of the search is closed.
    await completer.complete(query.level, found, study_uid=query.study_uid)
    if headers is not None and headers.returned:
        await headers.fill(query, found)
    matches = [finish_match(item, query, base_url) for item in found]
    warnings = list(query.warnings)
    if headers is not None and (skipped := headers.warning()):
        warnings.append(skipped)
    if completer.truncated:
        warnings.append(
            f"Only the first {completer.max_pending} candidates of the PACS were examined "
            "for keys the gateway matches itself; there may be additional results"
        )
    if more:
        # PS3.18 8.3.4.4: the count is unknown because the query was cancelled
        # as soon as one more match than needed had arrived (docs/qido.md).
        warnings.append("There are additional results that can be requested")
    return SearchResult(matches, warnings, more)
