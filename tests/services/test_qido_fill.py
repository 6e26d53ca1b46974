"""ModalitiesInStudy and the Number Of ... Related counts filled in by the gateway (QIDO-02/07).

A scripted PACS stands in for the real ones here, so that what the gateway asks
(and how many C-FINDs, how many at once) can be counted exactly: ``dcmqrscp``
mode leaves the attributes out and ignores a ModalitiesInStudy key, like DCMTK's
dcmqrscp; ``orthanc`` mode computes them and matches the key, like Orthanc.
The real PACS are in tests/web/test_qido_fill_pacs.py and test_qido_demo_pacs.py.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from io import BytesIO
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pydicom import Dataset
from pydicom.filereader import read_dataset

from gateway.dicom.encode import encode_dataset
from gateway.dimse.findscu import FindMatch
from gateway.services import qido
from gateway.services.errors import PacsFailed
from gateway.services.pacs import PacsClient
from gateway.services.qido_query import parse_qido_query

EXPLICIT_LE = "1.2.840.10008.1.2.1"
MODALITIES, STUDY_SERIES, STUDY_INSTANCES = "00080061", "00201206", "00201208"
SERIES_INSTANCES = "00201209"
STUDY_UID, SERIES_UID = "0020000D", "0020000E"

# study -> [(modality, instances)] per series; series N of study S is "S.N".
STUDIES: dict[str, list[tuple[str, int]]] = {
    "1.1": [("MR", 2), ("CT", 1)],
    "1.2": [("CT", 3)],
    "1.3": [("OT", 1)],
    "1.4": [("MR", 1)],
    "1.5": [("MR", 4), ("SR", 1)],
}


@dataclass
class ScriptedPacs:
    """A C-FIND SCP in memory: records each identifier and how many run at once."""

    mode: str = "dcmqrscp"
    series_counts: bool = False  # dcmqrscp mode, but NumberOfSeriesRelatedInstances given
    refuse: frozenset[str] = frozenset()  # levels answered with a failure status
    max_associations: int = 2
    queries: list[Dataset] = field(default_factory=list)
    active: int = 0
    peak: int = 0
    closed_early: int = 0

    @property
    def config(self) -> Any:
        return SimpleNamespace(aet="SCRIPTED", max_associations=self.max_associations)

    def levels(self) -> list[str]:
        return [str(q.QueryRetrieveLevel) for q in self.queries]

    async def find(
        self, identifier: Callable[[str], bytes], *, patient_root: bool = False
    ) -> AsyncGenerator[FindMatch, None]:
        query = read_dataset(BytesIO(identifier(EXPLICIT_LE)), False, True)
        self.queries.append(query)
        level = str(query.QueryRetrieveLevel)
        self.active += 1
        self.peak = max(self.peak, self.active)
        finished = False
        try:
            await asyncio.sleep(0.01)
            if level in self.refuse:
                raise PacsFailed("C-FIND failed", status=0xC000)
            for answer in self._answers(query):
                yield FindMatch(encode_dataset(answer, explicit_vr=True), True)
                await asyncio.sleep(0)
            finished = True
        finally:
            self.active -= 1
            if not finished:
                self.closed_early += 1

    def _answers(self, query: Dataset) -> list[Dataset]:
        wanted_study = str(query.get("StudyInstanceUID", "") or "")
        wanted = set(wanted_study.split("\\")) if wanted_study else None
        out = []
        for study, series in STUDIES.items():
            if wanted is not None and study not in wanted:
                continue
            modalities = sorted({m for m, _ in series})
            if query.QueryRetrieveLevel == "STUDY":
                key = query.get("ModalitiesInStudy")
                keys = [] if not key else [key] if isinstance(key, str) else list(key)
                if (
                    self.mode == "orthanc"
                    and keys
                    and not any(fnmatch.fnmatchcase(m, k) for m in modalities for k in keys)
                ):
                    continue
                ds = Dataset()
                ds.StudyInstanceUID = study
                ds.PatientID = f"P{study}"
                if self.mode == "orthanc":
                    ds.ModalitiesInStudy = modalities
                    ds.NumberOfStudyRelatedSeries = len(series)
                    ds.NumberOfStudyRelatedInstances = sum(n for _, n in series)
                out.append(ds)
                continue
            for number, (modality, count) in enumerate(series, start=1):
                if query.QueryRetrieveLevel == "SERIES":
                    ds = Dataset()
                    ds.StudyInstanceUID = study
                    ds.SeriesInstanceUID = f"{study}.{number}"
                    ds.Modality = modality
                    if self.mode == "orthanc" or self.series_counts:
                        ds.NumberOfSeriesRelatedInstances = count
                    out.append(ds)
                    continue
                for n in range(1, count + 1):
                    ds = Dataset()
                    ds.StudyInstanceUID = study
                    ds.SeriesInstanceUID = f"{study}.{number}"
                    ds.SOPInstanceUID = f"{study}.{number}.{n}"
                    out.append(ds)
        return out


def run_search(
    pacs: ScriptedPacs,
    level: str,
    params: list[tuple[str, str]],
    fill: str = "all",
    **scope: str,
) -> qido.SearchResult:
    query = parse_qido_query(level, params, max_limit=100, **scope)  # type: ignore[arg-type]
    client = cast(PacsClient, pacs)
    return asyncio.run(
        qido.search(
            client,
            query,
            base_url="http://gw",
            charset="ISO_IR 192",
            max_results=100,
            fill=fill,
        )
    )


def values(item: dict[str, Any], tag: str) -> list[Any] | None:
    attr = item.get(tag)
    return None if attr is None else attr.get("Value")


def studies_of(result: qido.SearchResult) -> list[str]:
    return [str(values(m, STUDY_UID)[0]) for m in result.matches]  # type: ignore[index]


def test_nothing_is_asked_when_the_pacs_returns_them() -> None:
    pacs = ScriptedPacs(mode="orthanc")
    result = run_search(pacs, "STUDY", [])
    assert pacs.levels() == ["STUDY"]
    first = result.matches[0]
    assert values(first, MODALITIES) == ["CT", "MR"]
    assert values(first, STUDY_SERIES) == [2] and values(first, STUDY_INSTANCES) == [3]


def test_missing_modalities_and_counts_are_filled_in() -> None:
    pacs = ScriptedPacs()
    result = run_search(pacs, "STUDY", [])
    assert studies_of(result) == list(STUDIES)
    for match in result.matches:
        study = str(values(match, STUDY_UID)[0])  # type: ignore[index]
        series = STUDIES[study]
        assert match[MODALITIES] == {"vr": "CS", "Value": sorted({m for m, _ in series})}
        assert match[STUDY_SERIES] == {"vr": "IS", "Value": [len(series)]}
        assert match[STUDY_INSTANCES] == {"vr": "IS", "Value": [sum(n for _, n in series)]}
    # one SERIES and one IMAGE C-FIND per study, each study asked once
    assert pacs.levels().count("SERIES") == len(STUDIES)
    assert pacs.levels().count("IMAGE") == len(STUDIES)
    asked = [str(q.StudyInstanceUID) for q in pacs.queries if q.QueryRetrieveLevel != "STUDY"]
    assert sorted(asked) == sorted([*STUDIES, *STUDIES])


@pytest.mark.parametrize("fill", ["series", "off"])
def test_the_fill_setting_limits_the_extra_finds(fill: str) -> None:
    """qido_fill=series: one SERIES C-FIND per study, no IMAGE count; off: nothing asked."""
    pacs = ScriptedPacs()
    result = run_search(pacs, "STUDY", [], fill=fill)
    assert studies_of(result) == list(STUDIES)
    assert pacs.levels().count("IMAGE") == 0
    assert pacs.levels().count("SERIES") == (len(STUDIES) if fill == "series" else 0)
    for match in result.matches:
        series = STUDIES[str(values(match, STUDY_UID)[0])]  # type: ignore[index]
        if fill == "series":
            assert match[MODALITIES] == {"vr": "CS", "Value": sorted({m for m, _ in series})}
            assert match[STUDY_SERIES] == {"vr": "IS", "Value": [len(series)]}
        else:
            assert not values(match, MODALITIES)
    series_result = run_search(ScriptedPacs(), "SERIES", [], fill=fill)
    assert series_result.matches


def test_the_fill_in_finds_carry_only_keys_every_scp_takes() -> None:
    """Hierarchical keys only (qrscp refuses keys below the level; dcmqrscp needs the UIDs)."""
    pacs = ScriptedPacs()
    run_search(pacs, "STUDY", [("StudyInstanceUID", "1.1")])
    series, image = pacs.queries[1], pacs.queries[2]
    assert set(series.dir()) == {
        "QueryRetrieveLevel",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Modality",
        "NumberOfSeriesRelatedInstances",
    }
    assert series.StudyInstanceUID == "1.1" and series.SeriesInstanceUID in ("", None)
    assert set(image.dir()) == {
        "QueryRetrieveLevel",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
    }


def test_only_the_returned_page_is_filled_in() -> None:
    pacs = ScriptedPacs()
    result = run_search(pacs, "STUDY", [("limit", "2"), ("offset", "1")])
    assert studies_of(result) == ["1.2", "1.3"]
    assert result.more_available
    asked = {str(q.StudyInstanceUID) for q in pacs.queries if q.QueryRetrieveLevel != "STUDY"}
    assert asked == {"1.2", "1.3"}
    assert pacs.levels().count("SERIES") == 2 and pacs.levels().count("IMAGE") == 2


def test_series_counts_make_the_image_find_unnecessary() -> None:
    pacs = ScriptedPacs(series_counts=True)
    result = run_search(pacs, "STUDY", [("StudyInstanceUID", "1.5")])
    assert pacs.levels() == ["STUDY", "SERIES"]
    assert values(result.matches[0], STUDY_INSTANCES) == [5]


def test_series_results_get_their_instance_count() -> None:
    pacs = ScriptedPacs()
    result = run_search(pacs, "SERIES", [], study_uid="1.5")
    counts = {str(values(m, SERIES_UID)[0]): m[SERIES_INSTANCES] for m in result.matches}  # type: ignore[index]
    assert counts == {
        "1.5.1": {"vr": "IS", "Value": [4]},
        "1.5.2": {"vr": "IS", "Value": [1]},
    }
    assert pacs.levels() == ["SERIES", "IMAGE"]  # one IMAGE C-FIND for the study


def test_all_series_count_by_study() -> None:
    pacs = ScriptedPacs()
    result = run_search(pacs, "SERIES", [("Modality", "MR")])
    counts = {str(values(m, SERIES_UID)[0]): values(m, SERIES_INSTANCES) for m in result.matches}  # type: ignore[index]
    assert counts == {"1.1.1": [2], "1.4.1": [1], "1.5.1": [4]}
    # one IMAGE C-FIND for each study with a series in the results
    assert sorted(str(q.StudyInstanceUID) for q in pacs.queries[1:]) == ["1.1", "1.4", "1.5"]


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
@pytest.mark.parametrize("mode", ["dcmqrscp", "orthanc"])
@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("MR", ["1.1", "1.4", "1.5"]),
        ("CT", ["1.1", "1.2"]),
        ("SR", ["1.5"]),
        ("US", []),
        ("CT\\OT", ["1.1", "1.2", "1.3"]),
        ("M?", ["1.1", "1.4", "1.5"]),
    ],
)
def test_modalities_in_study_is_matched(mode: str, key: str, expected: list[str]) -> None:
    pacs = ScriptedPacs(mode=mode)
    result = run_search(pacs, "STUDY", [("ModalitiesInStudy", key)])
    assert studies_of(result) == expected
    for match in result.matches:
        assert values(match, MODALITIES)  # never {"vr": "CS"} without a Value
    if mode == "orthanc":
        assert pacs.levels() == ["STUDY"]


@pytest.mark.parametrize(
    ("limit", "offset", "expected", "more"),
    [
        (1, 0, ["1.1"], True),
        (1, 1, ["1.4"], True),
        (2, 1, ["1.4", "1.5"], False),
        (1, 2, ["1.5"], False),
        (5, 3, [], False),
    ],
)
def test_limit_and_offset_count_after_the_modalities_filter(
    limit: int, offset: int, expected: list[str], more: bool
) -> None:
    pacs = ScriptedPacs()
    params = [("ModalitiesInStudy", "MR"), ("limit", str(limit)), ("offset", str(offset))]
    result = run_search(pacs, "STUDY", params)
    assert studies_of(result) == expected
    assert result.more_available is more
    warned = any("additional results" in w for w in result.warnings)
    assert warned is more


def test_the_modalities_filter_stops_once_it_has_enough() -> None:
    pacs = ScriptedPacs(max_associations=1)  # windows of two studies
    result = run_search(pacs, "STUDY", [("ModalitiesInStudy", "MR"), ("limit", "1")])
    assert studies_of(result) == ["1.1"]
    # 1.1 matches and 1.4 is the "one more": studies 1.1..1.4, never 1.5
    asked = {str(q.StudyInstanceUID) for q in pacs.queries if q.QueryRetrieveLevel == "SERIES"}
    assert asked == {"1.1", "1.2", "1.3", "1.4"}


def test_a_relational_search_on_modalities_in_study() -> None:
    pacs = ScriptedPacs()
    result = run_search(pacs, "SERIES", [("ModalitiesInStudy", "SR")])
    assert sorted(str(values(m, SERIES_UID)[0]) for m in result.matches) == ["1.5.1", "1.5.2"]  # type: ignore[index]


def test_fill_in_finds_run_concurrently_within_max_associations() -> None:
    pacs = ScriptedPacs(max_associations=2)
    run_search(pacs, "STUDY", [])
    assert pacs.peak == 2
    pacs = ScriptedPacs(max_associations=3)
    run_search(pacs, "STUDY", [("ModalitiesInStudy", "MR")])
    assert pacs.peak == 3


def test_a_refused_fill_in_leaves_the_attributes_empty() -> None:
    pacs = ScriptedPacs(refuse=frozenset({"SERIES", "IMAGE"}))
    result = run_search(pacs, "STUDY", [("StudyInstanceUID", "1.1")])
    (match,) = result.matches
    assert match[MODALITIES] == {"vr": "CS"}
    assert match[STUDY_INSTANCES] == {"vr": "IS"}
    pacs = ScriptedPacs(refuse=frozenset({"IMAGE"}))
    (match,) = run_search(pacs, "STUDY", [("StudyInstanceUID", "1.1")]).matches
    assert values(match, MODALITIES) == ["CT", "MR"] and values(match, STUDY_SERIES) == [2]
    assert match[STUDY_INSTANCES] == {"vr": "IS"}


def test_other_pacs_errors_fail_the_search() -> None:
    class Broken(ScriptedPacs):
        async def find(
            self, identifier: Callable[[str], bytes], *, patient_root: bool = False
        ) -> AsyncGenerator[FindMatch, None]:
            query = read_dataset(BytesIO(identifier(EXPLICIT_LE)), False, True)
            if query.QueryRetrieveLevel == "SERIES":
                raise PacsFailed("association aborted")
            async for match in super().find(identifier):
                yield match

    with pytest.raises(PacsFailed):
        run_search(Broken(), "STUDY", [])
