"""Series and instance attributes the PACS does not keep, read from the instances.

Some PACS index only a fixed set of attributes for C-FIND: dcmqrscp 3.6.7
keeps no SOPClassUID, PerformedProcedureStepStartDate/Time or
RequestAttributesSequence, yet PS3.18 Table 10.6.1-5 makes them required
matching keys and Tables 10.6.3-4/5 return attributes.  The PACS ignores a key
on them and returns nothing, so the gateway can neither check nor fill them.

A PACS entry may name such attributes (``header_attributes``).  When a search
matches on one of them, or returns one, the gateway reads them from the
instances themselves, retrieved through the instance cache (so a viewer that
opens the series next finds it there, and a second search costs no retrieve):

- a series result: one instance of the series (the series' attributes are the
  same in each of its instances);
- an instance result: that instance, or its whole series once when the search
  is scoped to that series (and the cache can hold it).

Each retrieve is a C-FIND and a C-GET (or C-MOVE), so a search may start at
most ``max_retrieves`` of them; results beyond that keep what the PACS said
(unchecked, as the PACS's own matching left them) and the search says so in a
Warning.  Study-level attributes are not read this way: a study result would
need every series.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Sequence
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from gateway.config import ConfigError, PacsConfig
from gateway.dicom.dicom_json import elements_to_json
from gateway.dicom.part10 import read_part10
from gateway.dicom.walker import DicomParseError, walk_dataset
from gateway.services.errors import NotFound
from gateway.services.instance_views import LRU
from gateway.services.pacs import PacsClient
from gateway.services.qido_attributes import Level, attribute_level, return_keys
from gateway.services.qido_plan import split_relational
from gateway.services.qido_query import QidoQuery
from gateway.services.retrieve import InstanceData, Retriever, Target, instance_uids

log = logging.getLogger(__name__)

_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_SOP_UID = "00080018"
_PIXEL_DATA = 0x7FE00010
# Headers end well before this in nearly every file; a longer one is read whole.
_HEADER_PREFIX = 64 << 10


def _first(item: dict[str, Any], tag: str) -> str | None:
    values = item.get(tag, {}).get("Value")
    if values and isinstance(values[0], str) and values[0]:
        return values[0]
    return None


def check_header_attributes(pacs: PacsConfig) -> None:
    """Refuse study attributes (gateway/config.py has checked keyword and VR): a
    study result would need a header from every one of its series."""
    for keyword in pacs.header_attributes:
        tag = tag_for_keyword(keyword)
        if tag is not None and attribute_level(int(tag)) == "STUDY":
            raise ConfigError(
                f"pacs {pacs.name}: header_attributes: {keyword} is a study attribute; "
                "only series and instance attributes can be read from the instances"
            )


@functools.lru_cache(maxsize=16)
def configured_tags(keywords: tuple[str, ...]) -> frozenset[int]:
    """The tags of a PACS's ``header_attributes`` (checked at start-up)."""
    tags = (tag_for_keyword(k) for k in keywords)
    return frozenset(int(t) for t in tags if t is not None and attribute_level(int(t)) != "STUDY")


def _levels_read(level: Level) -> tuple[Level, ...]:
    """The attribute levels a result at ``level`` gets from one instance's header."""
    return ("SERIES", "IMAGE") if level == "IMAGE" else ("SERIES",) if level == "SERIES" else ()


class _Truncated(ValueError):
    """The bytes read end before the header does: read the whole file."""


def header_json(
    data: bytes | memoryview, wanted: frozenset[int], *, whole: bool = True
) -> dict[str, Any]:
    """The ``wanted`` top-level attributes of a Part 10 file, or of its first bytes.

    The walk stops before Pixel Data.  With ``whole=False`` the bytes are only the
    start of the file, and a walk that simply runs out of bytes at an element
    boundary would look complete: so the header counts only up to a Pixel Data
    tag found in them (a walk that does not end exactly there raises), and
    without one the caller must read the whole file (``_Truncated``)."""
    part = read_part10(data)
    end = None
    if not whole:
        marker = b"\xe0\x7f\x10\x00" if part.little_endian else b"\x7f\xe0\x00\x10"
        found_at = bytes(part.data).find(marker, part.offset)
        if found_at < 0:
            raise _Truncated("no Pixel Data within the bytes read")
        end = found_at  # an icon's or a value's bytes there make the walk fail: whole file
    elements = walk_dataset(
        part.data,
        part.offset,
        end,
        explicit_vr=part.explicit_vr,
        little_endian=part.little_endian,
        stop_before=_PIXEL_DATA,
    )
    # Specific Character Set stays, so that text values decode as the file says.
    kept = [e for e in elements if e[0] in wanted or e[0] == 0x00080005]
    found = elements_to_json(part.data, kept, little_endian=part.little_endian)
    found.pop("00080005", None)
    return found


def _read_header(instance: InstanceData, wanted: frozenset[int]) -> dict[str, Any]:
    """Blocking: the header from the file's first bytes, or from all of it if need be."""
    if instance.part10 is not None or instance.chunks is not None or instance.path is None:
        # In memory (just received, its cache write still to come): ``read`` takes the
        # chunks once, and falls back on the file if the event loop dropped them
        # meanwhile (the path is set before they are dropped).
        return header_json(instance.read(), wanted)
    with instance.path.open("rb") as f:
        prefix = f.read(_HEADER_PREFIX)
        if len(prefix) == _HEADER_PREFIX:
            try:
                return header_json(prefix, wanted, whole=False)
            except (DicomParseError, ValueError):
                prefix += f.read()
    return header_json(prefix, wanted)


class HeaderSource:
    """Header attributes for searches; one per app.

    What was read is remembered (the configured attributes of an instance, and
    of one instance per series: a few hundred bytes each), so a repeated search
    neither asks the PACS for the series' instances nor reads files again.  An
    instance's attributes are taken not to change while its SOP Instance UID
    stays (a corrected instance gets a new one); a restart forgets them.
    """

    def __init__(self, retriever: Retriever, max_retrieves: int, remembered: int = 100_000) -> None:
        self.retriever = retriever
        self.max_retrieves = max_retrieves
        self.memo: LRU[tuple[str, ...], dict[str, Any]] = LRU(remembered, lambda _v: 1)

    def reader(self, pacs: PacsClient, query: QidoQuery) -> HeaderReader | None:
        """What one search needs, or None when it needs nothing from the headers."""
        if not pacs.config.header_attributes:
            return None
        reader = HeaderReader(self, pacs, query)
        return reader if reader.wanted else None


class HeaderReader:
    """Reads a PACS's ``header_attributes`` for the results of one search.

    A relational search runs C-FINDs at two levels (qido_plan); each asks
    ``matched_by`` with its own query, so a series key of an instance search
    is decided on the series."""

    def __init__(self, source: HeaderSource, pacs: PacsClient, query: QidoQuery) -> None:
        self._pacs = pacs
        self._retriever = source.retriever
        self._memo = source.memo
        # The URL's own series: a relational search scopes its children to series too,
        # but only a search the client scoped to one series retrieves it whole.
        self._url_series = query.series_uid
        self._left = source.max_retrieves
        self._skipped: set[str] = set()
        self._configured = configured_tags(pacs.config.header_attributes)
        self._wanted_keys = frozenset(f"{t:08X}" for t in self._configured)
        keys = return_keys(
            query.level,
            study_scoped=query.study_uid is not None,
            series_scoped=query.series_uid is not None,
            include_all=query.include_all,
        )
        returned = {p[0] for p in keys} | {p[0] for p in query.include_fields}
        self.returned = frozenset(returned) & self.tags_for(query.level)
        self.wanted = bool(self.returned) or any(self.matched_by(q) for q in _levels_of(query))

    def tags_for(self, level: Level) -> frozenset[int]:
        """The configured tags a result at ``level`` can get from a header."""
        levels = _levels_read(level)
        # An attribute our tables do not place (None) is read wherever a header is read.
        return frozenset(
            t for t in self._configured if levels and attribute_level(t) in (*levels, None)
        )

    def matched_by(self, query: QidoQuery) -> frozenset[int]:
        """The header tags ``query`` (one level's C-FIND) matches on, dates and times included."""
        keys = {k.path[0] for k in query.match_keys}
        keys |= {t for r in query.combined_datetime for t in (r.date_tag, r.time_tag)}
        return frozenset(keys) & self.tags_for(query.level)

    def warning(self) -> str | None:
        if not self._skipped:
            return None
        return (
            f"{len(self._skipped)} result(s) were not checked or completed against "
            "attributes the PACS does not keep (header_attributes): the search needed more "
            "retrieves than allowed, or an instance could not be read; narrow it to a study "
            "or series"
        )

    async def fill(self, query: QidoQuery, items: Sequence[dict[str, Any]]) -> list[bool]:
        """Put the header attributes into ``items`` (results of ``query``) in place;
        per item, whether its header was read.

        An attribute the instance lacks comes back empty (``{"vr": ...}``) so that
        matching knows it is truly absent."""
        tags = self.tags_for(query.level)
        if not tags or not items:
            return [False] * len(items)
        if query.level == "IMAGE":
            await self._load_instances(query, items)
        done = []
        for item in items:
            header = await self._header_of(query, item)
            if header is None:
                done.append(False)
                self._skipped.add(self._key_of(query, item))
                continue
            for tag in tags:
                key = f"{tag:08X}"
                element = header.get(key)
                if element is not None:
                    item[key] = element
                else:
                    item[key] = {"vr": item.get(key, {}).get("vr") or dictionary_VR(tag)}
            done.append(True)
        return done

    @staticmethod
    def _key_of(query: QidoQuery, item: dict[str, Any]) -> str:
        unique = _SOP_UID if query.level == "IMAGE" else _SERIES_UID
        return _first(item, unique) or str(id(item))

    @staticmethod
    def _identity(query: QidoQuery, item: dict[str, Any]) -> tuple[str, str] | None:
        study = _first(item, _STUDY_UID) or query.study_uid
        series = _first(item, _SERIES_UID) or query.series_uid
        return (study, series) if study and series else None

    async def _header_of(self, query: QidoQuery, item: dict[str, Any]) -> dict[str, Any] | None:
        ident = self._identity(query, item)
        if ident is None:
            return None
        if query.level == "IMAGE":
            sop = _first(item, _SOP_UID)
            return self._memo.get((self._pacs.name, sop)) if sop else None
        key = (self._pacs.name, *ident)
        found = self._memo.get(key)
        if found is None:
            found = await self._one_of_series(*ident)
            if found is not None:
                self._memo.put(key, found)
        return found

    def _spend(self) -> bool:
        if self._left <= 0:
            return False
        self._left -= 1
        return True

    def _known(self, sop: str) -> bool:
        return self._memo.get((self._pacs.name, sop)) is not None

    async def _read(self, instances: Sequence[InstanceData]) -> None:
        """Remember the configured attributes of each instance (not yet remembered)."""
        for instance in instances:
            if self._known(instance.sop_instance_uid):
                continue
            try:
                header = await asyncio.to_thread(_read_header, instance, self._configured)
            except (OSError, DicomParseError, ValueError) as exc:
                # Not the exception's text: a cache path names the SOP Instance UID.
                reason = exc.strerror if isinstance(exc, OSError) else type(exc).__name__
                log.warning("could not read an instance's header for a search: %s", reason)
                continue
            self._memo.put((self._pacs.name, instance.sop_instance_uid), header)

    async def _retrieve(self, target: Target) -> list[InstanceData]:
        """Retrieve the target and remember its headers as each instance arrives.

        Read while the retrieve holds the series in the cache (pinned): once it
        is over, a small cache may already have evicted the first files."""
        got: list[InstanceData] = []
        try:
            async with contextlib.aclosing(self._retriever.instances(self._pacs, target)) as items:
                async for instance in items:
                    await self._read([instance])
                    got.append(instance)
        except NotFound:
            pass
        return got

    async def _load_instances(self, query: QidoQuery, items: Sequence[dict[str, Any]]) -> None:
        """Headers of every instance result (a cached series or instance costs no retrieve).

        A search scoped to one series retrieves that series once, as a viewer
        opening it would, and remembers every instance of it.  A search across
        series retrieves instance by instance, each one retrieve of the budget:
        retrieving every series an instance search touches could pull in far
        more than the search needs.  So does a search whose series the cache
        cannot hold (it would be collected in memory).
        """
        by_series: dict[tuple[str, str], list[str]] = {}
        for item in items:
            ident = self._identity(query, item)
            sop = _first(item, _SOP_UID)
            if ident and sop and not self._known(sop):
                by_series.setdefault(ident, []).append(sop)
        cache = self._retriever.cache
        whole = self._url_series is not None and cache is not None and cache.writable
        for (study, series), sops in by_series.items():
            cached = await self._retriever.cached(Target(study, series), count=False)
            if cached is not None:
                wanted = set(sops)
                await self._read([i for i in cached if i.sop_instance_uid in wanted])
                continue
            if whole:
                if self._spend():
                    await self._retrieve(Target(study, series))
                continue
            for sop in sops:
                target = Target(study, series, sop)
                hit = await self._retriever.cached(target, count=False)
                if hit is not None:
                    await self._read(hit)
                elif self._spend():
                    await self._retrieve(target)

    async def _one_of_series(self, study: str, series: str) -> dict[str, Any] | None:
        """The header of any one instance of the series: the series' attributes."""
        cached = await self._retriever.cached(Target(study, series), count=False)
        if cached is None:
            if not self._spend():
                return None
            sops = await instance_uids(self._pacs, Target(study, series))
            if not sops:
                return None
            cached = await self._retrieve(Target(study, series, sops[0]))
        else:
            await self._read(cached[:1])
        if not cached:
            return None
        return self._memo.get((self._pacs.name, cached[0].sop_instance_uid))


def _levels_of(query: QidoQuery) -> list[QidoQuery]:
    """The query and, for a relational one, its parent: the C-FINDs that may need headers."""
    split = split_relational(query)
    return [query] if split is None else [*_levels_of(split[0]), split[1]]
