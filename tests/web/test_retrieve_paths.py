"""WADO-RS retrieve paths of gateway/services/retrieve.py that test_wado_pacs.py does
not reach: a client hanging up while an instance is being written to the cache
(``Retriever._fetch``/``_cancelled``), the STUDY-level SOPClassesInStudy C-FIND
aborted, unreachable or timing out (``ClassFinder._study_classes``), a C-GET that
ends with a failure status after SOPClassesInStudy left a class out, or for
another reason (``Retriever._from_pacs``), and the hourly re-ask of a PACS whose
SOPClassesInStudy was useless (``ClassFinder.RETRY_SECONDS``).

Every PACS here is a scripted pynetdicom peer on 127.0.0.1 (``RetrievePeer`` and
two small subclasses below) in front of the real gateway over HTTP. The only hook
into a cache write is at the file level: the test holds the write lock of the
cache's SQLite index from its own connection (as another replica sharing the
cache directory would), so publishing an instance waits inside the cache write.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import pydicom
import pytest
import requests
from pydicom import Dataset
from pydicom.uid import UID

from gateway.demo.sample import CT_PATIENT, MR_PATIENT
from tests.peers import ClosedPort
from tests.peers.gateway import GatewayServer
from tests.web.wado_support import (
    GetScript,
    RetrievePeer,
    dataset_differences,
    multipart_parts,
    raw_get_then_hang_up,
    read_raw_body,
    wait_for,
)

DICOM = "application/dicom"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def mr_files(sample_manifest: Any) -> list[Path]:
    """Five MR slices (256 x 256, 16 bit) of one series, for the scripted PACS."""
    return [i.path for i in sample_manifest.instances if i.patient_id == MR_PATIENT.pid][:5]


def series_of(files: Sequence[Path]) -> tuple[str, str, list[str]]:
    """(study UID, series UID, the SOP Instance UIDs) of files of one series."""
    datasets = [pydicom.dcmread(f) for f in files]
    sops = sorted(str(ds.SOPInstanceUID) for ds in datasets)
    return str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID), sops


def secondary_capture(source: Path, out: Path, suffix: int) -> Path:
    """A copy of ``source`` turned into a Secondary Capture with its own SOP UID (same
    study and series): an instance of a class the study-level answer can leave out."""
    ds = pydicom.dcmread(source)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(SC_STORAGE)
    sop = UID(f"{ds.SOPInstanceUID}.{suffix}")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
    path = out / f"capture{suffix}.dcm"
    ds.save_as(path)
    return path


def get(url: str) -> requests.Response:
    return requests.get(url, timeout=60)


def sops_of(response: requests.Response) -> list[str]:
    """The SOP Instance UIDs of a complete multipart/related response, sorted (so a
    repeated instance shows up twice)."""
    return sorted(str(p.dataset().SOPInstanceUID) for p in multipart_parts(response, DICOM))


def assert_json_error(r: requests.Response, status: int) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    assert "error" in r.json()


def series_complete(gw: GatewayServer, study: str, series: str) -> bool:
    cache = gw.app.state.retriever.cache
    return gw.run(cache.series_instances(study, series)) is not None


class StudyFindPeer(RetrievePeer):
    """``RetrievePeer`` whose STUDY-level C-FIND (SOPClassesInStudy) aborts the
    association (``"abort"``) or does not answer until the gateway gives up and
    aborts (``"hang"``, at most 10 s); IMAGE-level C-FIND and C-GET as usual."""

    def __init__(
        self,
        files: Sequence[Path],
        scripts: Sequence[GetScript],
        study_find: Literal["abort", "hang"],
    ) -> None:
        super().__init__(files, scripts)
        self.study_find = study_find

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        if str(event.identifier.get("QueryRetrieveLevel", "")) != "STUDY":
            yield from super()._on_find(event)
            return
        with self._lock:
            self.levels.append("STUDY")
        if self.study_find == "abort":
            event.assoc.abort()
        else:
            deadline = time.monotonic() + 10
            while event.assoc.is_established and time.monotonic() < deadline:
                time.sleep(0.05)
        # pynetdicom sends nothing after the association is gone.
        yield 0x0000, None


class FinalStatusPeer(RetrievePeer):
    """``RetrievePeer`` whose n-th C-GET ends with the failure status ``finals[n]``
    (the last repeats; 0: as ``RetrievePeer``) where it would have ended with
    success, or right after sending an instance of class ``give_up_after`` (a PACS
    that stops at the first failed sub-operation: pynetdicom ignores a final status
    yielded after the last sub-operation and sends its own B000 or A702). pynetdicom
    reports every sub-operation not completed, failed or never tried, as failed."""

    def __init__(
        self,
        files: Sequence[Path],
        scripts: Sequence[GetScript],
        finals: Sequence[int],
        study_classes: Sequence[str] | None,
        give_up_after: str | None = None,
    ) -> None:
        super().__init__(files, scripts, study_classes=study_classes)
        self.finals = list(finals)
        self.give_up_after = give_up_after

    def _on_get(self, event: Any) -> Iterator[Any]:
        final = self.finals[min(self.gets, len(self.finals) - 1)]
        inner = cast(Generator[Any, None, None], super()._on_get(event))
        try:
            for item in inner:
                if final and isinstance(item, tuple) and item[0] == 0x0000:
                    break
                yield item
                dataset = item[1] if isinstance(item, tuple) else None
                if (
                    final
                    and isinstance(dataset, Dataset)
                    and dataset.SOPClassUID == self.give_up_after
                ):
                    break
            else:
                return
            yield final, None
        finally:
            inner.close()


def get_then_hang_up_when(
    url: str, read_bytes: int, ready: Callable[[], bool], seconds: float = 3.0
) -> tuple[bytes, bool]:
    """Send a GET, read ``read_bytes`` of the response, wait until ``ready()`` (at
    most ``seconds``), then reset the connection as a killed browser tab would.
    Returns (what was read, whether ``ready()`` held)."""
    held: list[bool] = []
    got = raw_get_then_hang_up(
        url, read_bytes, before_close=lambda: held.append(wait_for(ready, seconds))
    )
    return got, bool(held and held[0])


# --------------------------------------------------------------------------- hang-up


def test_hang_up_during_the_cache_write_aborts_the_c_get(
    make_peer: Any, mr_files: list[Path], tmp_path: Path
) -> None:
    """``_fetch`` hands an instance to the response and then writes it to the cache;
    a client that hangs up while that write runs must stop the C-GET as a cancelled
    retrieve (C-CANCEL and A-ABORT at once), not as an early close that sends
    C-CANCEL and drains the association back into the pool.

    The write is held at the file level: this test holds the write lock of the
    cache's SQLite index (the gateway waits up to its busy_timeout, 5 s), so the
    first instance's publish cannot finish; the client hangs up once that file has
    been renamed into place (the publish then waits for the index). The PACS sends
    an instance every 0.5 s. It must see the A-ABORT while the lock is still held
    (a drain would end with a C-GET-RSP and no abort), before it sent the whole
    series; afterwards no temporary file is left, the series is not marked
    complete, whatever instance file is in the cache is whole, and the next request
    gets the series from the PACS and caches it."""
    peer: RetrievePeer = make_peer(RetrievePeer(mr_files, [GetScript(delay=0.5), GetScript()]))
    study, series, sops = series_of(mr_files)
    cache_dir = tmp_path / "cache"
    data_dir = cache_dir / "data"
    with GatewayServer(peer.pacs_config(), cache_dir=str(cache_dir)) as gw:
        url = f"{gw.url}/studies/{study}/series/{series}"
        lock = sqlite3.connect(cache_dir / "index.sqlite", isolation_level=None, timeout=5)
        try:
            lock.execute("BEGIN IMMEDIATE")
            locked = time.monotonic()
            # Hang up once the first instance's file is in place: its publish is
            # then waiting for the index, inside the cache write.
            head, writing = get_then_hang_up_when(
                url, 2000, lambda: any(data_dir.rglob("*.dcm")) and not peer.aborted.is_set()
            )
            assert head.startswith(b"HTTP/1.1 200"), head[:100]
            assert writing, "the first instance never reached the cache write"
            aborted = wait_for(peer.aborted.is_set, 3.0)
            held = time.monotonic() - locked
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert aborted, (
            f"no A-ABORT while the cache write was held (cancelled={peer.cancelled.is_set()}, "
            f"sent={peer.sent}): the C-GET was closed and drained instead"
        )
        assert held < 4.5, "the lock outlived the gateway's busy_timeout; the test proves nothing"
        assert wait_for(peer.get_finished.is_set, 10), "the PACS's C-GET went on"
        assert peer.sent[0] < len(mr_files), peer.sent
        pool = gw.app.state.pacs.get().pool
        assert wait_for(lambda: pool.in_use == 0, 5), "an association is still lent"
        assert wait_for(lambda: not list(data_dir.rglob(".*.tmp")), 5), "temporary file left"
        assert not series_complete(gw, study, series)
        originals = {str(pydicom.dcmread(f).SOPInstanceUID): f for f in mr_files}
        for path in data_dir.rglob("*.dcm"):
            ds = pydicom.dcmread(path)
            assert dataset_differences(ds, pydicom.dcmread(originals[ds.SOPInstanceUID])) == []
        # The gateway is fine afterwards: the whole series, once, then cached.
        assert sops_of(get(url)) == sops
        assert peer.gets == 2
        assert series_complete(gw, study, series)


# --------------------------------------------------------------------------- SOPClassesInStudy


def test_aborted_study_classes_query_falls_back_to_the_instances_classes(
    make_peer: Any, mr_files: list[Path]
) -> None:
    """A PACS that A-ABORTs the STUDY-level SOPClassesInStudy C-FIND: the retrieve
    asks the instances' classes at the IMAGE level and succeeds. An abort may be a
    glitch, so it is not remembered: the next retrieve asks the STUDY level again."""
    peer = make_peer(StudyFindPeer(mr_files, [GetScript()], "abort"))
    study, series, sops = series_of(mr_files)
    with GatewayServer(peer.pacs_config()) as gw:
        assert sops_of(get(f"{gw.url}/studies/{study}/series/{series}")) == sops
        assert peer.levels == ["STUDY", "IMAGE"]
        assert "SOPClassUID" in peer.image_keys[0]
        assert sops_of(get(f"{gw.url}/studies/{study}")) == sops
        assert peer.levels == ["STUDY", "IMAGE", "STUDY", "IMAGE"]
        assert "SOPClassUID" in peer.image_keys[1]
        assert peer.gets == 2


def test_unreachable_pacs_on_the_study_classes_query_is_502() -> None:
    """Nobody listens: the SOPClassesInStudy C-FIND fails to connect, and that fails
    the request with 502. Swallowing it would send the IMAGE-level query into the
    pool's back-off, a 503 that tells the client to retry a PACS that is down."""
    peer = ClosedPort()
    with GatewayServer(peer.pacs_config()) as gw:
        study, series = "1.2.826.0.1.3680043.10.1234.1", "1.2.826.0.1.3680043.10.1234.2"
        assert_json_error(get(f"{gw.url}/studies/{study}/series/{series}"), 502)


def test_study_classes_query_timing_out_is_504(make_peer: Any, mr_files: list[Path]) -> None:
    """A PACS that does not answer the SOPClassesInStudy C-FIND within the DIMSE
    timeout (1 s here): the request fails with 504, with no IMAGE-level query and
    no C-GET (a silent fallback would have served the series with a 200)."""
    peer = make_peer(StudyFindPeer(mr_files, [GetScript()], "hang"))
    study, series, _sops = series_of(mr_files)
    with GatewayServer(peer.pacs_config(), dimse_timeout=1.0) as gw:
        assert_json_error(get(f"{gw.url}/studies/{study}/series/{series}"), 504)
        assert peer.levels == ["STUDY"]
        assert peer.gets == 0


def test_useless_study_classes_are_asked_again_after_retry_seconds(
    make_peer: Any, mr_files: list[Path]
) -> None:
    """A PACS that answers SOPClassesInStudy empty is not asked again, until
    ``RETRY_SECONDS`` have passed since (set on the app's finder here instead of
    waiting an hour); still empty, it is then not asked again for another while."""
    peer: RetrievePeer = make_peer(RetrievePeer(mr_files, [GetScript()], study_classes=None))
    study, _series, sops = series_of(mr_files)
    with GatewayServer(peer.pacs_config()) as gw:
        url = f"{gw.url}/studies/{study}"  # a study is not cached as such: PACS each time
        finder = gw.app.state.retriever._finder
        assert sops_of(get(url)) == sops
        assert peer.levels == ["STUDY", "IMAGE"]
        assert sops_of(get(url)) == sops
        assert peer.levels == ["STUDY", "IMAGE", "IMAGE"]
        finder.RETRY_SECONDS = 0.0
        assert sops_of(get(url)) == sops
        assert peer.levels == ["STUDY", "IMAGE", "IMAGE", "STUDY", "IMAGE"]
        finder.RETRY_SECONDS = 3600.0
        assert sops_of(get(url)) == sops
        assert peer.levels == ["STUDY", "IMAGE", "IMAGE", "STUDY", "IMAGE", "IMAGE"]
        assert peer.gets == 4


# --------------------------------------------------------------------------- failed C-GET


@pytest.mark.parametrize(
    "final",
    [0xC000, 0xA702],
    ids=["C000", "A702"],
)
def test_c_get_failing_on_a_missed_class_is_repeated_with_the_instances_classes(
    make_peer: Any, mr_files: list[Path], tmp_path: Path, final: int
) -> None:
    """SOPClassesInStudy names MR only; the series also holds a Secondary Capture,
    which the first C-GET cannot send (no context), and that C-GET ends with a
    failure status instead of B000. The gateway asks the instances' classes, gets
    the series once more with them, and the client receives every instance exactly
    once with a complete 200; the PACS is not asked SOPClassesInStudy again."""
    files = [*mr_files[:2], secondary_capture(mr_files[0], tmp_path, 7), *mr_files[2:]]
    peer = make_peer(
        FinalStatusPeer(files, [GetScript()], [final, 0], [MR_STORAGE], give_up_after=SC_STORAGE)
    )
    study, series, sops = series_of(files)
    with GatewayServer(peer.pacs_config()) as gw:
        assert sops_of(get(f"{gw.url}/studies/{study}/series/{series}")) == sops
        assert peer.gets == 2
        assert peer.levels == ["STUDY", "IMAGE", "IMAGE"]
        assert "SOPClassUID" in peer.image_keys[1]
        assert series_complete(gw, study, series)
        assert sops_of(get(f"{gw.url}/studies/{study}")) == sops
        assert peer.levels == ["STUDY", "IMAGE", "IMAGE", "IMAGE"]
        assert peer.gets == 3


def test_c_get_of_only_missed_classes_is_repeated_with_the_instances_classes(
    make_peer: Any, mr_files: list[Path], tmp_path: Path
) -> None:
    """SOPClassesInStudy names MR only and the series holds two Secondary Captures:
    every sub-operation of the first C-GET fails, and pynetdicom (like DCMTK) ends it
    with A702. The ``_from_pacs`` docstring promises the repeat with the instances'
    classes: the client should get both instances with a 200."""
    files = [secondary_capture(f, tmp_path, 7 + n) for n, f in enumerate(mr_files[:2])]
    peer = make_peer(RetrievePeer(files, [GetScript()], study_classes=[MR_STORAGE]))
    study, series, sops = series_of(files)
    with GatewayServer(peer.pacs_config()) as gw:
        r = get(f"{gw.url}/studies/{study}/series/{series}")
        assert r.status_code == 200, (r.status_code, r.text[:300], peer.gets, peer.levels)
        assert sops_of(r) == sops, (sops_of(r), sops, peer.gets, peer.levels)
        assert peer.gets == 2


@pytest.mark.parametrize("send", [0, 2], ids=["nothing-sent", "two-sent"])
def test_c_get_failing_for_another_reason_fails_the_request(
    make_peer: Any, mr_files: list[Path], send: int
) -> None:
    """SOPClassesInStudy is right (MR), but the C-GET ends with C000 after ``send``
    instances. The instances' classes are asked, name nothing new, so there is no
    second C-GET and the PACS's failure stands: a 502 if nothing was sent yet, else
    the response is cut (no close delimiter, no clean end of the chunked body). The
    series is not marked complete, the PACS is still trusted with SOPClassesInStudy,
    and the next retrieve (the PACS well again) gets everything."""
    peer = make_peer(
        FinalStatusPeer(mr_files, [GetScript(send=send), GetScript()], [0xC000, 0], [MR_STORAGE])
    )
    study, series, sops = series_of(mr_files)
    with GatewayServer(peer.pacs_config()) as gw:
        url = f"{gw.url}/studies/{study}/series/{series}"
        if send == 0:
            assert_json_error(get(url), 502)
        else:
            body, complete = read_raw_body(url)
            assert not complete, "the chunked body was ended as if complete"
            boundary = body[2 : body.index(b"\r\n")]
            assert body.count(b"--" + boundary + b"\r\n") == send
            assert b"--" + boundary + b"--" not in body, "closed as if complete"
        assert peer.gets == 1, "repeated a C-GET that no missed class explains"
        assert peer.levels == ["STUDY", "IMAGE", "IMAGE"]
        assert "SOPClassUID" in peer.image_keys[1]
        assert not series_complete(gw, study, series)
        assert sops_of(get(url)) == sops
        assert peer.levels == ["STUDY", "IMAGE", "IMAGE", "STUDY", "IMAGE"]
        assert peer.gets == 2


# ------------------------------------------------------------- listing beside the retrieve


def test_the_instance_listing_runs_beside_the_c_get(make_peer: Any, mr_files: list[Path]) -> None:
    """SOPClassesInStudy named the classes, so the C-GET does not wait for the
    IMAGE-level C-FIND (answered after 1 s here): it starts before that C-FIND is
    answered, and the series is still marked complete once both are done."""
    peer: RetrievePeer = make_peer(
        RetrievePeer(mr_files, [GetScript()], find_delays=[1.0], study_classes=[MR_STORAGE])
    )
    study, series, sops = series_of(mr_files)
    with GatewayServer(peer.pacs_config()) as gw:
        url = f"{gw.url}/studies/{study}/series/{series}"
        assert sops_of(get(url)) == sops
        assert peer.events == ["get started", "find answered"]
        assert series_complete(gw, study, series)
        assert sops_of(get(url)) == sops
        assert peer.gets == 1  # the second request came from the cache


def test_a_series_under_another_study_is_404_when_the_pacs_goes_by_series_uid(
    make_peer: Any, mr_files: list[Path], sample_manifest: Any
) -> None:
    """A PACS that retrieves a series by its Series Instance UID alone sends it
    under whatever study it was asked, here another study the PACS holds. The
    C-FIND in front used to catch that; beside the C-GET, the received instances'
    own study UID does: 404, nothing cached."""
    ct = next(i for i in sample_manifest.instances if i.patient_id == CT_PATIENT.pid)
    peer: RetrievePeer = make_peer(
        RetrievePeer(
            [*mr_files, ct.path],
            [GetScript(delay=0.3), GetScript()],
            study_classes=[MR_STORAGE],
            get_by_lowest_key=True,
        )
    )
    study, series, sops = series_of(mr_files)
    with GatewayServer(peer.pacs_config()) as gw:
        assert_json_error(get(f"{gw.url}/studies/{ct.study_uid}/series/{series}"), 404)
        assert peer.gets == 1
        wait_for(peer.get_finished.is_set, 10)
        # C-CANCEL and abort at once, as for a client that hangs up.
        assert peer.cancelled.is_set() or peer.aborted.is_set()
        assert peer.sent[0] < len(sops), "the retrieve of the wrong target went on"
        cache = gw.app.state.retriever.cache
        assert all(gw.run(cache.lookup(sop)) is None for sop in sops)
        assert sops_of(get(f"{gw.url}/studies/{study}/series/{series}")) == sops


def test_a_failed_listing_beside_a_working_c_get_serves_the_series_unmarked(
    make_peer: Any, mr_files: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The IMAGE-level C-FIND beside the C-GET fails (C000) while the C-GET works:
    the client gets the whole series with a 200 (the C-FIND in front would have
    failed it), but without the listing the series cannot be called complete, so
    the next request retrieves it again; one warning says why."""
    peer: RetrievePeer = make_peer(
        RetrievePeer(mr_files, [GetScript()], study_classes=[MR_STORAGE], image_find_status=0xC000)
    )
    study, series, sops = series_of(mr_files)
    with GatewayServer(peer.pacs_config()) as gw:
        url = f"{gw.url}/studies/{study}/series/{series}"
        with caplog.at_level("WARNING", logger="gateway.services.retrieve"):
            assert sops_of(get(url)) == sops
        assert not series_complete(gw, study, series)
        assert any("not marked complete" in r.getMessage() for r in caplog.records)
        assert sops_of(get(url)) == sops
        assert peer.gets == 2


class UnknownFailsPeer(RetrievePeer):
    """``RetrievePeer`` whose C-GET of something it does not hold fails with C000
    before any sub-operation, as Orthanc answers a C-MOVE of an unknown study."""

    def _on_get(self, event: Any) -> Iterator[Any]:
        if self._selected(event.identifier):
            yield from super()._on_get(event)
            return
        self.gets += 1
        yield 1
        yield 0xC000, None


@pytest.mark.parametrize("failing", [False, True], ids=["nothing-sent", "failure-status"])
def test_an_unknown_series_is_404_when_the_listing_runs_beside(
    make_peer: Any, mr_files: list[Path], failing: bool
) -> None:
    """Nothing to retrieve: the C-GET brings nothing, with success or with a failure
    status, and the listing is empty: 404, as when the C-FIND came first (not the
    502 of the failure)."""
    kind = UnknownFailsPeer if failing else RetrievePeer
    peer = make_peer(kind(mr_files, [GetScript()], study_classes=[MR_STORAGE]))
    study, _series, _sops = series_of(mr_files)
    with GatewayServer(peer.pacs_config()) as gw:
        assert_json_error(get(f"{gw.url}/studies/{study}/series/1.2.826.0.1.3680043.10.77"), 404)
        assert peer.gets == 1


def test_a_listing_that_waits_for_the_only_association_still_completes_the_series(
    make_peer: Any, mr_files: list[Path]
) -> None:
    """One association to the PACS, held by a C-GET longer than the DIMSE timeout:
    the listing beside it gives up waiting for the pool and is asked again once the
    C-GET is over, so the series is still marked complete."""
    peer: RetrievePeer = make_peer(
        RetrievePeer(mr_files, [GetScript(delay=0.5)], study_classes=[MR_STORAGE])
    )
    study, series, sops = series_of(mr_files)
    config = peer.pacs_config(max_associations=1)
    with GatewayServer(config, dimse_timeout=1.5) as gw:
        assert sops_of(get(f"{gw.url}/studies/{study}/series/{series}")) == sops
        assert series_complete(gw, study, series)
        assert peer.levels.count("IMAGE") == 1  # the one that timed out never reached it


def test_a_failed_listing_does_not_stop_the_repeat_for_a_missed_class(
    make_peer: Any, mr_files: list[Path], tmp_path: Path
) -> None:
    """SOPClassesInStudy names MR only and the series also holds a Secondary Capture
    (its sub-operation fails), while the listing beside the C-GET fails: the
    instances' classes are asked as when there is no listing, the C-GET is repeated
    with them, and the client gets every instance with a 200. Without the listing
    the series is not marked complete."""
    files = [*mr_files[:2], secondary_capture(mr_files[0], tmp_path, 7), *mr_files[2:]]
    peer: RetrievePeer = make_peer(
        RetrievePeer(
            files,
            [GetScript()],
            study_classes=[MR_STORAGE],
            image_find_status=0xC000,
            image_find_failing=1,
        )
    )
    study, series, sops = series_of(files)
    with GatewayServer(peer.pacs_config()) as gw:
        assert sops_of(get(f"{gw.url}/studies/{study}/series/{series}")) == sops
        assert peer.gets == 2
        assert "SOPClassUID" in peer.image_keys[1]
        assert not series_complete(gw, study, series)
