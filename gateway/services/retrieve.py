"""WADO-RS retrieve (PS3.18 10.4) as C-GET: instances streamed as they arrive.

Before the C-GET, one IMAGE-level C-FIND tells whether the study, series or
instance exists (404 otherwise, and for an instance that is not in the named
series) and which SOP classes it holds, so the C-GET proposes storage
contexts for exactly those (PACS that do not return SOPClassUID get the
common ones).  The caller receives the first instance before anything is sent
to the HTTP client, so a failure before it is still a clean error status.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from pydicom import Dataset

from gateway.dicom.dicom_json import dataset_to_json
from gateway.dicom.encode import encode_dataset
from gateway.dimse.getscu import RetrievedInstance
from gateway.services.errors import NotFound
from gateway.services.pacs import PacsClient

_IMPLICIT_LE = "1.2.840.10008.1.2"


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


async def instance_classes(pacs: PacsClient, target: Target) -> tuple[int, set[str] | None]:
    """(number of instances, their SOP classes or None if the PACS does not say)."""
    ds = _identifier(target, "IMAGE", ("SOPClassUID",))
    count = 0
    classes: set[str] = set()
    unknown = False
    seen: set[str] = set()
    async with contextlib.aclosing(pacs.find(_encoder(ds))) as matches:
        async for match in matches:
            item = dataset_to_json(match.dataset, explicit_vr=match.explicit_vr)
            sop = (item.get("00080018", {}).get("Value") or [None])[0]
            if sop in seen:
                continue  # qrscp answers once per instance already; others may repeat
            seen.add(sop)
            count += 1
            value = (item.get("00080016", {}).get("Value") or [None])[0]
            if value:
                classes.add(str(value))
            else:
                unknown = True
    return count, None if unknown or not classes else classes


async def retrieve(pacs: PacsClient, target: Target) -> AsyncGenerator[RetrievedInstance, None]:
    """The target's instances, each as soon as the PACS sent it; NotFound if none exist."""
    count, classes = await instance_classes(pacs, target)
    if count == 0:
        raise NotFound(f"no {target.describe()} in the PACS")
    identifier = _identifier(target, target.level)
    delivered = 0
    async with contextlib.aclosing(pacs.get(_encoder(identifier), classes)) as instances:
        async for instance in instances:
            delivered += 1
            yield instance
    if delivered == 0:
        raise NotFound(f"the PACS sent no instance of {target.describe()}")
