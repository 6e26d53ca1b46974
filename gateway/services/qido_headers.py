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
  is scoped to that series.

Each retrieve is a C-FIND and a C-GET (or C-MOVE), so a search may start at
most ``max_retrieves`` of them; results beyond that keep what the PACS said
(unchecked, as the PACS's own matching left them) and the search says so in a
Warning.  Study-level attributes are not read this way: a study result would
need every series.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from gateway.dicom.dicom_json import dataset_to_json
from gateway.dicom.part10 import read_part10
from gateway.dicom.walker import DicomParseError
from gateway.services.errors import NotFound
from gateway.services.instance_views import LRU
from gateway.services.pacs import PacsClient
from gateway.services.qido_attributes import Level, attribute_level, return_keys
from gateway.services.qido_query import QidoQuery
from gateway.services.retrieve import InstanceData, Retriever, Target, instance_classes

log = logging.getLogger(__name__)

_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_SOP_UID = "00080018"


def _first(item: dict[str, Any], tag: str) -> str | None:
    values = item.get(tag, {}).get("Value")
    if values and isinstance(values[0], str) and values[0]:
        return values[0]
    return None


@functools.lru_cache(maxsize=16)
def configured_tags(keywords: tuple[str, ...]) -> frozenset[int]:
    """The tags of a PACS's ``header_attributes`` that can be read per series or instance."""
    tags = set()
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue  # config validation rejects these; nothing to read here
        if attribute_level(int(tag)) == "STUDY":
            log.warning("header_attributes: %s is a study attribute, not read", keyword)
            continue
        tags.add(int(tag))
    return frozenset(tags)


def _levels_read(level: Level) -> tuple[Level, ...]:
    """The attribute levels a result at ``level`` gets from one instance's header."""
    return ("SERIES", "IMAGE") if level == "IMAGE" else ("SERIES",) if level == "SERIES" else ()


def header_json(data: bytes) -> dict[str, Any]:
    """The DICOM JSON of a Part 10 file, bulk values left out (only small attributes are read)."""
    part = read_part10(data)
    return dataset_to_json(
        part.data,
        offset=part.offset,
        explicit_vr=part.explicit_vr,
        little_endian=part.little_endian,
        bulk_data_uri=lambda _path: "",
        bulk_threshold=256,
    )


class HeaderSource:
    """Header attributes for searches; one per app.

    What was read is remembered (the configured attributes of an instance, and
    of one instance per series: a few hundred bytes each), so a repeated search
    neither asks the PACS for the series' instances nor reads files again.  An
    instance's attributes do not change while its SOP Instance UID stays.
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
    """Reads a PACS's ``header_attributes`` from instance headers for the results of one search."""

    def __init__(self, source: HeaderSource, pacs: PacsClient, query: QidoQuery) -> None:
        self._pacs = pacs
        self._retriever = source.retriever
        self._memo = source.memo
        self._query = query
        self.level = query.level
        self._left = source.max_retrieves
        self.skipped = 0
        self._configured = configured_tags(pacs.config.header_attributes)
        levels = _levels_read(query.level)
        # An attribute our tables do not place (None) is read wherever a header is read.
        self.tags = frozenset(
            t for t in self._configured if levels and attribute_level(t) in (*levels, None)
        )
        self.matched = frozenset(k.path[0] for k in query.match_keys) & self.tags
        keys = return_keys(
            query.level,
            study_scoped=query.study_uid is not None,
            series_scoped=query.series_uid is not None,
            include_all=query.include_all,
        )
        returned = {p[0] for p in keys} | {p[0] for p in query.include_fields}
        self.returned = frozenset(returned) & self.tags

    @property
    def wanted(self) -> bool:
        """Whether the search needs any header attribute at all."""
        return bool(self.matched or self.returned)

    def warning(self) -> str | None:
        if not self.skipped:
            return None
        return (
            f"{self.skipped} result(s) were not checked against attributes the PACS does "
            "not keep (header_attributes): the search needed more retrieves than allowed; "
            "narrow it to a study or series"
        )

    async def fill(self, items: Sequence[dict[str, Any]]) -> list[bool]:
        """Put the header attributes into ``items`` in place; per item, whether it was read.

        An attribute the instance lacks comes back empty (``{"vr": ...}``) so that
        matching knows it is truly absent."""
        if not self.tags or not items:
            return [False] * len(items)
        if self._query.level == "IMAGE":
            await self._load_instances(items)
        headers = [await self._header_of(item) for item in items]
        done = []
        for item, header in zip(items, headers, strict=True):
            if header is None:
                done.append(False)
                continue
            for tag in self.tags:
                key = f"{tag:08X}"
                element = header.get(key)
                if element is not None:
                    item[key] = element
                elif key in item:
                    item[key] = {"vr": item[key].get("vr", "UN")}
                else:
                    item[key] = {"vr": dictionary_VR(tag)}
            done.append(True)
        return done

    def _identity(self, item: dict[str, Any]) -> tuple[str, str] | None:
        study = _first(item, _STUDY_UID) or self._query.study_uid
        series = _first(item, _SERIES_UID) or self._query.series_uid
        return (study, series) if study and series else None

    async def _header_of(self, item: dict[str, Any]) -> dict[str, Any] | None:
        ident = self._identity(item)
        if ident is None:
            return None
        if self._query.level == "IMAGE":
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
                header = header_json(await asyncio.to_thread(instance.read))
            except (OSError, DicomParseError, ValueError) as exc:
                log.warning("could not read an instance's header for a search: %s", exc)
                continue
            wanted = {f"{t:08X}" for t in self._configured}
            kept = {k: v for k, v in header.items() if k in wanted}
            self._memo.put((self._pacs.name, instance.sop_instance_uid), kept)

    async def _collect(self, target: Target) -> list[InstanceData]:
        try:
            return await self._retriever.collect(self._pacs, target)
        except NotFound:
            return []

    async def _load_instances(self, items: Sequence[dict[str, Any]]) -> None:
        """Headers of every instance result (a cached series costs no retrieve).

        A search scoped to one series retrieves that series once, as a viewer
        opening it would.  A search across series retrieves instance by
        instance, each one retrieve of the budget: retrieving every series an
        instance search touches could pull in far more than the search needs.
        """
        by_series: dict[tuple[str, str], list[str]] = {}
        for item in items:
            ident = self._identity(item)
            sop = _first(item, _SOP_UID)
            if ident and sop and not self._known(sop):
                by_series.setdefault(ident, []).append(sop)
        for (study, series), sops in by_series.items():
            cached = await self._retriever.cached(Target(study, series))
            if cached is None:
                whole = self._query.series_uid is not None
                targets = (
                    [Target(study, series)] if whole else [Target(study, series, s) for s in sops]
                )
                cached = []
                for target in targets:
                    if not self._spend():
                        self.skipped += len(sops) if whole else 1
                        continue
                    cached += await self._collect(target)
            wanted = set(sops)
            await self._read([i for i in cached if i.sop_instance_uid in wanted])

    async def _one_of_series(self, study: str, series: str) -> dict[str, Any] | None:
        """The header of any one instance of the series: the series' attributes."""
        cached = await self._retriever.cached(Target(study, series))
        if cached is None:
            if not self._spend():
                self.skipped += 1
                return None
            sops, _classes = await instance_classes(self._pacs, Target(study, series))
            if not sops:
                return None
            cached = await self._collect(Target(study, series, sops[0]))
        if not cached:
            return None
        await self._read(cached[:1])
        return self._memo.get((self._pacs.name, cached[0].sop_instance_uid))
