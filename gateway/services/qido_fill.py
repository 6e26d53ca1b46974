"""ModalitiesInStudy and the Number Of ... Related counts, when the PACS leaves them out.

PS3.18 Tables 10.6.3-3/4 make ModalitiesInStudy, NumberOfStudyRelatedSeries,
NumberOfStudyRelatedInstances and NumberOfSeriesRelatedInstances return
attributes of every study and series search, and ModalitiesInStudy is a required
matching key (Table 10.6.1-5).  Orthanc computes them.  dcmqrscp and pynetdicom's
qrscp do not keep them: they leave them out (or empty), and ignore a
ModalitiesInStudy matching key.  OHIF 3 reads ``ModalitiesInStudy.Value.length``
without checking that there is a Value.

So for a study result that lacks any of them, the gateway asks the PACS itself:

1. one SERIES-level C-FIND of that study (StudyInstanceUID, SeriesInstanceUID,
   Modality, NumberOfSeriesRelatedInstances): its modalities, its number of
   series, and its number of instances when every series states its own;
2. only if the instance count is still unknown, one IMAGE-level C-FIND of the
   study (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID), counted by series.

A series result without NumberOfSeriesRelatedInstances gets step 2 for its study.
A result that has the attributes costs nothing, so behind Orthanc no C-FIND is
added.  The C-FINDs of one search run concurrently, at most the PACS's
``max_associations`` at a time, and after the search's own C-FIND is closed, so
one request never holds two pooled associations while waiting for a third.  A
PACS that answers a fill-in C-FIND with a failure status leaves the attributes
empty (logged); other PACS errors fail the search as any C-FIND's would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset

from gateway.dicom.encode import encode_dataset
from gateway.services.errors import PacsFailed
from gateway.services.pacs import PacsClient, match_json
from gateway.services.qido_attributes import Level

log = logging.getLogger(__name__)

_IMPLICIT_LE = "1.2.840.10008.1.2"
STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"
MODALITY = "00080060"
MODALITIES_IN_STUDY = "00080061"
STUDY_SERIES = "00201206"
STUDY_INSTANCES = "00201208"
SERIES_INSTANCES = "00201209"
_STUDY_FILLED = (MODALITIES_IN_STUDY, STUDY_SERIES, STUDY_INSTANCES)


def has_value(item: dict[str, Any], tag: str) -> bool:
    """Whether the result carries at least one non-null value of ``tag``."""
    values = item.get(tag, {}).get("Value")
    return bool(values) and any(v is not None for v in values)


def _first(item: dict[str, Any], tag: str) -> str | None:
    values = item.get(tag, {}).get("Value")
    if values and isinstance(values[0], str) and values[0]:
        return values[0]
    return None


def _count(item: dict[str, Any], tag: str) -> int | None:
    values = item.get(tag, {}).get("Value")
    if values and isinstance(values[0], int) and not isinstance(values[0], bool):
        return values[0]
    return None


def study_lacks(item: dict[str, Any]) -> bool:
    """Whether a study result misses a value the gateway can fill in."""
    return not all(has_value(item, t) for t in _STUDY_FILLED)


@dataclass(frozen=True)
class _Series:
    modality: str | None
    instances: int | None


class Completer:
    """Fills in the attributes for the results of one search, asking each study once."""

    def __init__(self, pacs: PacsClient, mode: str = "all") -> None:
        """``mode`` is the qido_fill setting: off, series (step 1) or all (steps 1 and 2)."""
        self._pacs = pacs
        self.mode = mode
        self.width = max(1, pacs.config.max_associations)
        self._gate = asyncio.Semaphore(self.width)
        self._series: dict[str, dict[str, _Series]] = {}
        #: Candidates a search may read ahead to match keys itself (set by the search).
        self.max_pending = 10_000
        self.truncated = False
        self._instances: dict[str, dict[str, int]] = {}

    async def complete(
        self,
        level: Level,
        items: Sequence[dict[str, Any]],
        *,
        study_uid: str | None = None,
        modalities_only: bool = False,
    ) -> None:
        """Fill in, in place, what ``items`` (results at ``level``) lack.

        ``study_uid`` is the study of a search scoped to one (for series results
        that do not carry their StudyInstanceUID).  ``modalities_only`` stops
        after step 1: enough to match ModalitiesInStudy.
        """
        if self.mode == "off":
            return
        if level == "STUDY":
            await self._complete_studies(items, modalities_only or self.mode != "all")
        elif level == "SERIES" and not modalities_only and self.mode == "all":
            await self._complete_series(items, study_uid)

    async def _complete_studies(
        self, items: Sequence[dict[str, Any]], modalities_only: bool
    ) -> None:
        todo = [
            (uid, item) for item in items if study_lacks(item) and (uid := _first(item, STUDY_UID))
        ]
        if not todo:
            return
        await self._each({uid for uid, _ in todo}, self._series, self._find_series)
        if not modalities_only:
            counted = {
                uid
                for uid, item in todo
                if not has_value(item, STUDY_INSTANCES)
                and self._series[uid]
                and any(s.instances is None for s in self._series[uid].values())
            }
            await self._each(counted, self._instances, self._find_instances)
        for uid, item in todo:
            self._fill_study(item, uid)

    def _fill_study(self, item: dict[str, Any], uid: str) -> None:
        series = self._series.get(uid)
        if not series:
            return  # the PACS named no series: nothing to say, the result stays as it was
        if not has_value(item, MODALITIES_IN_STUDY):
            modalities = sorted({s.modality for s in series.values() if s.modality})
            if modalities:
                item[MODALITIES_IN_STUDY] = {"vr": "CS", "Value": modalities}
        if not has_value(item, STUDY_SERIES):
            item[STUDY_SERIES] = {"vr": "IS", "Value": [len(series)]}
        if not has_value(item, STUDY_INSTANCES):
            counts = [s.instances for s in series.values()]
            if all(c is not None for c in counts):
                total: int | None = sum(c for c in counts if c is not None)
            elif self._instances.get(uid):  # empty: refused, or no instance to count
                total = sum(self._instances[uid].values())
            else:
                total = None
            if total is not None:
                item[STUDY_INSTANCES] = {"vr": "IS", "Value": [total]}

    async def _complete_series(
        self, items: Sequence[dict[str, Any]], study_uid: str | None
    ) -> None:
        todo = []
        for item in items:
            series = _first(item, SERIES_UID)
            study = _first(item, STUDY_UID) or study_uid
            if series and study and not has_value(item, SERIES_INSTANCES):
                todo.append((study, series, item))
        if not todo:
            return
        await self._each({study for study, _, _ in todo}, self._instances, self._find_instances)
        for study, series, item in todo:
            count = self._instances[study].get(series)
            if count is not None:
                item[SERIES_INSTANCES] = {"vr": "IS", "Value": [count]}

    async def _each(
        self,
        studies: Iterable[str],
        cache: dict[str, Any],
        find: Callable[[str], Awaitable[Any]],
    ) -> None:
        """Run ``find`` for each study not in ``cache`` yet, concurrently within the gate."""
        missing = sorted(s for s in studies if s not in cache)
        if not missing:
            return

        async def one(study: str) -> None:
            async with self._gate:
                cache[study] = await find(study)

        try:
            async with asyncio.TaskGroup() as group:
                for study in missing:
                    group.create_task(one(study))
        except BaseExceptionGroup as failed:
            # The first failure is the search's failure (a 502, 503 or 504), as it
            # would be for the search's own C-FIND; the others were cancelled with it.
            raise failed.exceptions[0] from None

    async def _find_series(self, study: str) -> dict[str, _Series]:
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = ""
        ds.Modality = ""
        ds.NumberOfSeriesRelatedInstances = ""
        out: dict[str, _Series] = {}
        for item in await self._find(ds):
            uid = _first(item, SERIES_UID)
            if uid is not None and uid not in out:  # qrscp answers once per instance
                out[uid] = _Series(_first(item, MODALITY), _count(item, SERIES_INSTANCES))
        return out

    async def _find_instances(self, study: str) -> dict[str, int]:
        ds = Dataset()
        ds.QueryRetrieveLevel = "IMAGE"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = ""
        ds.SOPInstanceUID = ""
        sops: dict[str, set[str]] = {}
        for item in await self._find(ds):
            series, sop = _first(item, SERIES_UID), _first(item, SOP_UID)
            if series is not None and sop is not None:
                sops.setdefault(series, set()).add(sop)
        return {series: len(uids) for series, uids in sops.items()}

    async def _find(self, ds: Dataset) -> list[dict[str, Any]]:
        """One C-FIND, decoded; [] when the PACS refuses it with a failure status."""
        encoded = {explicit: encode_dataset(ds, explicit_vr=explicit) for explicit in (True, False)}

        def identifier(transfer_syntax: str) -> bytes:
            return encoded[transfer_syntax != _IMPLICIT_LE]

        out: list[dict[str, Any]] = []
        try:
            async with contextlib.aclosing(self._pacs.find(identifier)) as finds:
                async for match in finds:
                    out.append(match_json(self._pacs.config.aet, match))
        except PacsFailed as exc:
            if exc.dimse_status is None:
                raise
            log.warning(
                "PACS %s refused a %s-level C-FIND that fills in a study's counts and "
                "modalities (status %04X): they stay empty",
                self._pacs.config.aet,
                ds.QueryRetrieveLevel,
                exc.dimse_status,
            )
            return []
        return out
