"""WADO-RS retrieve (PS3.18 10.4): instances from the cache, or by C-GET/C-MOVE from the PACS.

A series that was retrieved completely before is served from the disk cache
without touching the PACS.  Otherwise one C-GET runs per series however many
requests ask for it at once (single flight): each instance is written to the
cache as it arrives and handed to every waiting request.  Before a C-GET, one
IMAGE-level C-FIND tells whether the target exists (404 otherwise, also for an
instance that is not in the named series) and which SOP classes it holds, so
the C-GET proposes storage contexts for exactly those.

When the cache cannot take writes (disk full, read-only), requests are served
straight from the PACS, each on its own retrieve.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset

from gateway.cache import CachedInstance, InstanceCache, StreamFlight
from gateway.dicom.dicom_json import dataset_to_json
from gateway.dicom.encode import encode_dataset
from gateway.dicom.file_meta import file_meta
from gateway.dicom.identity import identity_of
from gateway.dimse.getscu import RetrievedInstance
from gateway.services.errors import NotFound
from gateway.services.pacs import PacsClient

log = logging.getLogger(__name__)

_IMPLICIT_LE = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"


@dataclass(frozen=True)
class Target:
    """What a WADO-RS request names: a study, a series or one instance."""

    study_uid: str
    series_uid: str | None = None
    sop_uid: str | None = None

    @property
    def level(self) -> str:
        return "IMAGE" if self.sop_uid else "SERIES" if self.series_uid else "STUDY"

    def describe(self) -> str:
        if self.sop_uid:
            return f"instance {self.sop_uid} of series {self.series_uid} of study {self.study_uid}"
        if self.series_uid:
            return f"series {self.series_uid} of study {self.study_uid}"
        return f"study {self.study_uid}"


@dataclass(frozen=True)
class InstanceData:
    """One instance as a Part 10 file: on disk in the cache, or in memory."""

    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    path: Path | None = None
    part10: bytes | None = None

    def read(self) -> bytes:
        if self.part10 is not None:
            return self.part10
        assert self.path is not None
        return self.path.read_bytes()

    @classmethod
    def from_cache(cls, cached: CachedInstance, sop_class_uid: str = "") -> InstanceData:
        return cls(
            cached.study_uid,
            cached.series_uid,
            sop_class_uid,
            cached.sop_uid,
            cached.transfer_syntax,
            path=cached.path,
        )


def _identifier(target: Target, level: str, extra: tuple[str, ...] = ()) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = target.study_uid
    if target.series_uid or level in ("SERIES", "IMAGE"):
        ds.SeriesInstanceUID = target.series_uid or ""
    if target.sop_uid or level == "IMAGE":
        ds.SOPInstanceUID = target.sop_uid or ""
    for keyword in extra:
        setattr(ds, keyword, "")
    return ds


def _encoder(ds: Dataset) -> Callable[[str], bytes]:
    def encode(transfer_syntax: str) -> bytes:
        return encode_dataset(ds, explicit_vr=transfer_syntax != _IMPLICIT_LE)

    return encode


async def instance_classes(pacs: PacsClient, target: Target) -> tuple[list[str], set[str] | None]:
    """(the target's SOP Instance UIDs, their SOP classes or None if the PACS does not say)."""
    ds = _identifier(target, "IMAGE", ("SOPClassUID",))
    sops: dict[str, None] = {}
    classes: set[str] = set()
    unknown = False
    async with contextlib.aclosing(pacs.find(_encoder(ds))) as matches:
        async for match in matches:
            item = dataset_to_json(match.dataset, explicit_vr=match.explicit_vr)
            sop = (item.get("00080018", {}).get("Value") or [None])[0]
            if not sop or sop in sops:
                continue  # some SCPs repeat a match; a match without UID is useless
            sops[str(sop)] = None
            value = (item.get("00080016", {}).get("Value") or [None])[0]
            if value:
                classes.add(str(value))
            else:
                unknown = True
    return list(sops), None if unknown or not classes else classes


def _identity(instance: RetrievedInstance) -> tuple[str, str]:
    try:
        ident = identity_of(
            instance.dataset,
            explicit_vr=instance.transfer_syntax != _IMPLICIT_LE,
            little_endian=instance.transfer_syntax != _BIG_ENDIAN,
        )
    except ValueError:
        return "", ""
    return ident.study_instance_uid, ident.series_instance_uid


class Retriever:
    """Instances for WADO-RS, through the cache; one per app (created in the lifespan)."""

    def __init__(self, cache: InstanceCache | None) -> None:
        self.cache = cache
        self._flights: StreamFlight[tuple[str, str, str], InstanceData] = StreamFlight()

    async def _from_pacs(
        self, pacs: PacsClient, target: Target, sops: list[str], classes: set[str] | None
    ) -> AsyncGenerator[InstanceData, None]:
        """C-GET the target, caching each instance; mark series complete at the end."""
        identifier = _identifier(target, target.level)
        by_series: dict[tuple[str, str], list[str]] = {}
        cache = self.cache
        if pacs.config.retrieve_method == "move":
            source = pacs.move(
                _encoder(identifier), target.study_uid, target.series_uid, target.sop_uid
            )
        else:
            # Into the cache: acknowledge each instance at once (see getscu).
            eager = cache is not None and cache.writable
            source = pacs.get(_encoder(identifier), classes, eager_ack=eager)
        async with contextlib.aclosing(source) as instances:
            async for instance in instances:
                study, series = _identity(instance)
                study = study or target.study_uid
                series = series or target.series_uid or ""
                meta = file_meta(
                    instance.sop_class_uid, instance.sop_instance_uid, instance.transfer_syntax
                )
                data = None
                if cache is not None and cache.writable:
                    async with cache.open_writer(
                        study, series, instance.sop_instance_uid, instance.transfer_syntax
                    ) as writer:
                        cached = await writer.write_and_commit(meta, instance.dataset)
                    if cached is not None:
                        data = InstanceData.from_cache(cached, instance.sop_class_uid)
                if data is None:
                    data = InstanceData(
                        study,
                        series,
                        instance.sop_class_uid,
                        instance.sop_instance_uid,
                        instance.transfer_syntax,
                        part10=meta + instance.dataset,
                    )
                by_series.setdefault((study, series), []).append(instance.sop_instance_uid)
                yield data
        if cache is not None and target.level != "IMAGE":
            for (study, series), got in by_series.items():
                expected = {s for s in sops} if target.level == "SERIES" else set(got)
                if expected <= set(got):
                    await cache.mark_series_complete(study, series, got)

    async def collect(self, pacs: PacsClient, target: Target) -> list[InstanceData]:
        """All of the target's instances (for metadata, frames, rendering: the files
        are on disk or small, so a list is fine where a stream is not needed)."""
        async with contextlib.aclosing(self.instances(pacs, target)) as items:
            return [item async for item in items]

    async def cached(self, target: Target) -> list[InstanceData] | None:
        """The whole target from the cache, or None (then use ``instances``)."""
        async with contextlib.aclosing(self._cached(target)) as items:
            found = [item async for item in items]
        return found or None

    async def _cached(self, target: Target) -> AsyncGenerator[InstanceData, None]:
        """The target from the cache when the cache can answer it whole, else nothing."""
        cache = self.cache
        if cache is None:
            return
        if target.level == "SERIES":
            assert target.series_uid is not None
            async with cache.reading_series(target.study_uid, target.series_uid) as series:
                for entry in series or ():
                    yield InstanceData.from_cache(entry)
        elif target.level == "IMAGE":
            assert target.sop_uid is not None
            async with cache.reading(target.sop_uid) as hit:
                if (
                    hit is not None
                    and hit.series_uid == target.series_uid
                    and hit.study_uid == target.study_uid
                ):
                    yield InstanceData.from_cache(hit)

    async def instances(
        self, pacs: PacsClient, target: Target
    ) -> AsyncGenerator[InstanceData, None]:
        """The target's instances; NotFound if there are none."""
        cache = self.cache
        hit = await self.cached(target)
        if hit is None:
            sops, classes = await instance_classes(pacs, target)
            if not sops:
                raise NotFound(f"no {target.describe()} in the PACS")
            # Another request may have completed the same retrieve during our C-FIND.
            hit = await self.cached(target)
        if hit is not None:
            for entry in hit:
                yield entry
            return

        def produce() -> AsyncGenerator[InstanceData, None]:
            return self._from_pacs(pacs, target, sops, classes)

        delivered = 0
        if cache is None or not cache.writable:
            async with contextlib.aclosing(produce()) as direct:
                async for item in direct:
                    delivered += 1
                    yield item
        else:
            key = (pacs.name, target.study_uid, target.series_uid or target.sop_uid or "")
            pin = (
                cache.pin_series(target.study_uid, target.series_uid)
                if target.series_uid
                else contextlib.nullcontext()
            )
            async with pin, self._flights.subscribe(key, produce) as shared:
                async for item in shared:
                    delivered += 1
                    yield item
        if delivered == 0:
            raise NotFound(f"the PACS sent no instance of {target.describe()}")
