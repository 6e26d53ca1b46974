"""STOW-RS worker tasks (gateway/services/store.py, ``StowSession``) against a real
Storage SCP: the scripted pynetdicom ``StorePeer`` of stow_support, which is
slow on purpose so that instances overlap and wait.

Most tests drive a ``StowSession`` directly on a ``PacsClient`` (real pooled
associations, real C-STOREs) and hand it parts with ``release`` callbacks, as
the web layer does with its spooled parts.  What they check, with the SCP's own
record as the reference:

* every part's ``release`` is called exactly once: stored, refused by the SCP,
  failed by the check, failed by a gateway bug, and when the request is
  aborted with parts in C-STORE, in the queue and waiting to be queued; and
  never before the SCP has the instance (a released spool is gone);
* at most ``concurrency + 1`` parts are held once ``add`` returned
  (``concurrency`` in C-STORE, one queued) and ``concurrency + 2`` counting the
  one whose ``add`` is waiting, and the SCP really sees ``concurrency`` at once;
* an unexpected exception in one C-STORE (a gateway bug, simulated by
  monkeypatching ``PacsClient.store`` for one SOP Instance UID) fails that
  instance with 0x0110 and an ERROR record, over HTTP through the real gateway,
  and every other instance is stored and in the SCP;
* the result is in request order although the SCP ends the C-STOREs in
  another order;
* a request that fails for another reason (a 500), or is cancelled while
  ``finish`` waits, drops its queued parts: no worker outlives the request;
* a burst of up to ``concurrency`` parts is stored all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
import pytest
import requests
from pydicom.uid import generate_uid

from gateway.config import Settings
from gateway.services.pacs import PacsClient
from gateway.services.store import StowResult as SessionResult
from gateway.services.store import StowSession
from tests.peers.gateway import GatewayServer
from tests.web.stow_support import (
    CANNOT_UNDERSTAND,
    CT_IMAGE,
    DATASET_MISMATCH,
    DICOM_JSON,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    Inst,
    StorePeer,
    StowClient,
    StowResult,
    content_type,
    multipart,
    new_instance,
    new_series,
    parse_stow,
    verify_in_pacs,
)

T = TypeVar("T")

#: Long enough for a hung session (a lost release, a dead worker) to fail the
#: test instead of stalling the suite; every test here ends well within it.
TEST_TIMEOUT = 10.0


def _run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, TEST_TIMEOUT)

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def _stow_session(
    peer: StorePeer, concurrency: int, study_uid: str | None = None
) -> AsyncIterator[StowSession]:
    """A session storing into ``peer`` through its own client, closed afterwards."""
    settings = Settings(pacs=(peer.pacs_config(max_associations=4),))
    client = PacsClient(settings.pacs[0], settings)
    try:
        yield StowSession(
            client, study_uid=study_uid, base_url="http://gw/dicomweb", concurrency=concurrency
        )
    finally:
        await client.close()


def _decoded(result: SessionResult) -> StowResult:
    """The session's result as a client reads it (its DICOM JSON, decoded by the tests)."""
    body = orjson.dumps(result.to_json())
    return parse_stow(result.http_status, {"Content-Type": DICOM_JSON}, body)


def _fail_store_of(monkeypatch: pytest.MonkeyPatch, sop_uid: str) -> None:
    """A gateway bug: ``PacsClient.store`` raises RuntimeError for one instance
    (before anything goes to the PACS); the others go through unchanged."""
    original = PacsClient.store

    async def store(self: PacsClient, sop_class: str, sop_uid_: str, *args: Any, **kw: Any) -> Any:
        if sop_uid_ == sop_uid:
            raise RuntimeError(f"injected gateway bug storing {sop_uid}")
        return await original(self, sop_class, sop_uid_, *args, **kw)

    monkeypatch.setattr(PacsClient, "store", store)


def _received(peer: StorePeer) -> list[str]:
    """The SOP Instance UIDs the SCP received, in the order its C-STOREs ended."""
    with peer.record.lock:
        return [r.sop_uid for r in peer.received]


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


class Parts:
    """Hands parts to a session and keeps the books on their ``release`` calls.

    Parts are named by their position in the request.  ``max_held``: the most
    parts whose ``add`` had returned and that were not released yet, at any
    moment; ``max_held_in_add`` also counts a part whose ``add`` is waiting.
    Both are taken at every change (each ``add`` and ``release``), so they are
    exact maxima, not samples.
    """

    def __init__(self, peer: StorePeer) -> None:
        self.peer = peer
        self.released: Counter[int] = Counter()
        self.entered: set[int] = set()
        self.returned: set[int] = set()
        #: Parts released before the SCP had them, though they were sent to it.
        self.early: list[int] = []
        self.sent_uid: dict[int, str] = {}
        self.max_held = 0
        self.max_held_in_add = 0

    def _sample(self) -> None:
        self.max_held = max(self.max_held, len(self.returned - self.released.keys()))
        self.max_held_in_add = max(self.max_held_in_add, len(self.entered - self.released.keys()))

    def _release(self, n: int) -> None:
        self._sample()
        self.released[n] += 1
        uid = self.sent_uid.get(n)
        if uid is not None and uid not in _received(self.peer):
            self.early.append(n)

    async def add(self, session: StowSession, data: bytes, sent_uid: str | None = None) -> int:
        """``session.add`` one part; ``sent_uid``: its SOP Instance UID if it is to
        reach the SCP (then it must not be released before the SCP has it)."""
        n = len(self.entered)
        if sent_uid is not None:
            self.sent_uid[n] = sent_uid
        self.entered.add(n)
        self._sample()
        await session.add(data, release=lambda: self._release(n))
        self.returned.add(n)
        self._sample()
        return n


# --------------------------------------------------------------------------- release


def test_every_part_released_once_after_its_c_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stored, refused by the SCP (A700), failed by the check (not DICOM,
    truncated, another study than the URL's) and failed by a gateway bug: each
    part's ``release`` is called exactly once: one that fails its check before
    its ``add`` returns, one sent to the SCP only once the SCP has it."""
    study = generate_uid()
    good = new_series(5, study)
    refused, buggy = new_instance(study), new_instance(study)
    other_study = new_instance()
    _fail_store_of(monkeypatch, buggy.sop_uid)
    with StorePeer({refused.sop_uid: OUT_OF_RESOURCES}, delay=0.03) as peer:
        parts = Parts(peer)

        async def main() -> SessionResult:
            async with _stow_session(peer, 2, study) as session:
                await parts.add(session, good[0].data, good[0].sop_uid)
                for bad in (b"not DICOM", good[1].data[:-200], other_study.data):
                    n = await parts.add(session, bad)
                    assert parts.released[n] == 1, "a part failing its check is released at once"
                await parts.add(session, refused.data, refused.sop_uid)
                await parts.add(session, buggy.data)
                for inst in good[1:]:
                    await parts.add(session, inst.data, inst.sop_uid)
                return await session.finish()

        result = _decoded(_run(main()))
    assert parts.released == Counter(range(len(parts.entered)))  # each exactly once
    assert parts.early == []
    assert result.stored_uids == [i.sop_uid for i in good]
    assert [(f.sop_uid, f.reason) for f in result.failed] == [
        ("", CANNOT_UNDERSTAND),
        (good[1].sop_uid, CANNOT_UNDERSTAND),
        (other_study.sop_uid, DATASET_MISMATCH),
        (refused.sop_uid, OUT_OF_RESOURCES),
        (buggy.sop_uid, PROCESSING_FAILURE),
    ]
    verify_in_pacs(peer.record, result, absent=[refused, buggy, other_study])


def _busy_then(
    insts: list[Inst],
    concurrency: int,
    scenario: Callable[[StowSession, Parts], Awaitable[None]],
    delay: float = 0.4,
) -> list[str]:
    """Add ``insts`` to a session until ``concurrency`` C-STOREs are at the
    (slow) SCP, run ``scenario``, wait until the C-STOREs that were in flight
    have ended at the SCP; what the SCP received."""
    with StorePeer(delay=delay) as peer:
        parts = Parts(peer)

        async def main() -> None:
            async with _stow_session(peer, concurrency) as session:
                for inst in insts:
                    await parts.add(session, inst.data)
                await _until(lambda: peer.in_flight == concurrency)
                await scenario(session, parts)
                await asyncio.sleep(delay + 0.2)  # a worker left running would store more

        _run(main())
        return _received(peer)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_abort_releases_parts_in_c_store_queued_and_waiting(concurrency: int) -> None:
    """The client goes away while ``concurrency`` parts are in C-STORE, one is
    queued and the ``add`` of one more is waiting (and is cancelled): after
    ``abort`` every one of them was released exactly once, and the queued and
    the waiting part never reach the SCP."""
    insts = new_series(concurrency + 2)

    async def scenario(session: StowSession, parts: Parts) -> None:
        waiting = asyncio.create_task(parts.add(session, insts[-1].data))
        await asyncio.sleep(0.05)
        assert not waiting.done(), "the queue of one should be full"
        assert sum(parts.released.values()) == 0
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await session.abort()
        assert parts.released == Counter(range(len(insts)))

    received = _busy_then(insts[:-1], concurrency, scenario)
    never_sent = {i.sop_uid for i in insts[concurrency:]}
    assert never_sent.isdisjoint(received)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_finish_cancelled_ends_its_workers(concurrency: int) -> None:
    """The request is cancelled while ``finish`` waits for the last C-STOREs
    (e.g. the server shutting down): the workers end with it, the part still
    queued never reaches the SCP, and every part is released exactly once."""
    insts = new_series(concurrency + 1)

    async def scenario(session: StowSession, parts: Parts) -> None:
        finishing = asyncio.create_task(session.finish())
        await asyncio.sleep(0.05)
        finishing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await finishing
        await asyncio.sleep(0)
        assert all(w.done() for w in session._workers)
        assert parts.released == Counter(range(len(insts)))

    assert insts[-1].sop_uid not in _busy_then(insts, concurrency, scenario)


# --------------------------------------------------------------------------- memory bound


@pytest.mark.parametrize("concurrency", [1, 3])
def test_at_most_concurrency_plus_one_parts_held(concurrency: int) -> None:
    """Ten parts into a slow SCP: once ``add`` returned, at most ``concurrency``
    parts are in C-STORE and one is queued, never more (and that much is used:
    the SCP sees ``concurrency`` C-STOREs at once).  With the part whose ``add``
    waits for the queue, ``concurrency + 2`` (docs/stow.md: ``concurrency`` in
    C-STORE, one waiting, and the one the web layer has just read)."""
    insts = new_series(10)
    with StorePeer(delay=0.08) as peer:
        parts = Parts(peer)

        async def main() -> SessionResult:
            async with _stow_session(peer, concurrency) as session:
                for inst in insts:
                    await parts.add(session, inst.data, inst.sop_uid)
                return await session.finish()

        result = _decoded(_run(main()))
    assert result.stored_uids == [i.sop_uid for i in insts]
    verify_in_pacs(peer.record, result)
    assert parts.released == Counter(range(len(insts)))
    assert parts.early == []
    assert peer.max_in_flight == concurrency
    assert parts.max_held == concurrency + 1
    assert parts.max_held_in_add == concurrency + 2


def test_as_many_at_once_as_parts_up_to_concurrency() -> None:
    """Three parts with ``concurrency`` 3: all three in C-STORE at once (not two,
    with the third waiting for a whole C-STORE)."""
    insts = new_series(3)
    with StorePeer(delay=0.2) as peer:

        async def main() -> None:
            async with _stow_session(peer, 3) as session:
                for inst in insts:
                    await session.add(inst.data)
                await session.finish()

        _run(main())
    assert sorted(_received(peer)) == sorted(i.sop_uid for i in insts)
    assert peer.max_in_flight == 3


# --------------------------------------------------------------------------- a gateway bug


def _post(gateway: GatewayServer, peer: StorePeer, insts: list[Inst]) -> requests.Response:
    return requests.post(
        StowClient(gateway, peer.record).url(),
        data=multipart(insts),
        headers={"Content-Type": content_type()},
        timeout=5,
    )


@pytest.mark.parametrize("concurrency", [1, 3])
def test_unexpected_error_fails_only_that_instance(
    concurrency: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Over HTTP through the gateway: ``PacsClient.store`` raising RuntimeError
    for the third of six instances gives that one FailureReason 0x0110 (202,
    not a 500), an ERROR record with the traceback, and the five others are
    stored, in request order, and really in the SCP (also the ones the same
    worker takes after the error, with ``concurrency`` 1)."""
    insts = new_series(6)
    buggy = insts[2]
    _fail_store_of(monkeypatch, buggy.sop_uid)
    caplog.set_level(logging.ERROR, logger="gateway.services.store")
    with StorePeer(delay=0.03) as peer:
        gateway = GatewayServer(peer.pacs_config(), stow_concurrency=concurrency).start()
        try:
            response = _post(gateway, peer, insts)
        except requests.Timeout:
            pytest.fail("the gateway did not answer: the request hangs", pytrace=False)
        finally:
            gateway.stop()
        result = parse_stow(response.status_code, response.headers, response.content)
        verify_in_pacs(peer.record, result, absent=[buggy])
        others = [i.sop_uid for i in insts if i is not buggy]
        assert sorted(_received(peer)) == sorted(others)
    assert result.status == 202
    assert result.stored_uids == others
    assert [(f.sop_class, f.sop_uid, f.reason) for f in result.failed] == [
        (CT_IMAGE, buggy.sop_uid, PROCESSING_FAILURE)
    ]
    errors = [r for r in caplog.records if r.name == "gateway.services.store"]
    assert [r.levelno for r in errors] == [logging.ERROR]
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], RuntimeError)
    assert buggy.sop_uid in str(errors[0].exc_info[1])


def test_a_request_that_fails_takes_its_queued_parts_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A part the web layer cannot hand over (an OSError mapping a spooled part,
    simulated for the third part) ends the request with a 500; the part that was
    waiting in the queue is dropped with it, not stored later by a worker that
    outlived the request."""
    from gateway.web import multipart_reader

    insts = new_series(4)
    original = multipart_reader.SpooledPart.view
    calls = {"n": 0}

    def view(self: multipart_reader.SpooledPart) -> memoryview:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("simulated: cannot map the spool file")
        return original(self)

    monkeypatch.setattr(multipart_reader.SpooledPart, "view", view)
    with StorePeer(delay=0.5) as peer:
        gateway = GatewayServer(peer.pacs_config(), stow_concurrency=1).start()
        try:
            response = _post(gateway, peer, insts)
            time.sleep(1.5)  # time for a worker that outlived the request to store part 2
        finally:
            gateway.stop()
        received = _received(peer)
    assert response.status_code == 500
    assert insts[1].sop_uid not in received  # the queued part
    assert set(received) <= {insts[0].sop_uid}  # at most the one already in C-STORE


# --------------------------------------------------------------------------- order


def test_results_in_request_order_when_the_scp_answers_out_of_order() -> None:
    """With 3 at once and the SCP slowest on the first instances, the C-STOREs
    end in another order than the request's; ReferencedSOPSequence and
    FailedSOPSequence are still in request order (check failures, an SCP
    refusal and another study's instance among them)."""
    study = generate_uid()
    insts = new_series(6, study)
    other_study = new_instance()
    delays = {insts[0].sop_uid: 0.3, insts[1].sop_uid: 0.2, insts[2].sop_uid: 0.1}
    statuses = {insts[1].sop_uid: OUT_OF_RESOURCES}
    request: list[bytes | Inst] = [
        insts[0],
        b"not DICOM",
        insts[1],
        other_study,
        insts[2],
        insts[3],
        insts[4],
        insts[5],
    ]
    with StorePeer(statuses, delay=delays) as peer:
        parts = Parts(peer)

        async def main() -> SessionResult:
            async with _stow_session(peer, 3, study) as session:
                for part in request:
                    await parts.add(session, part.data if isinstance(part, Inst) else part)
                return await session.finish()

        session_result = _run(main())
        result = _decoded(session_result)
        verify_in_pacs(peer.record, result, absent=[insts[1], other_study])
        done = _received(peer)
    sent = [i.sop_uid for i in insts]
    assert sorted(done) == sorted(sent)
    assert done != sent, "the SCP was meant to end the C-STOREs out of order"
    assert done.index(insts[0].sop_uid) > done.index(insts[3].sop_uid)
    assert result.status == 202
    assert result.stored_uids == [i.sop_uid for i in (insts[0], *insts[2:])]
    assert [r.retrieve_url.rsplit("/", 1)[1] for r in result.stored] == result.stored_uids
    assert [(f.sop_uid, f.reason) for f in result.failed] == [
        ("", CANNOT_UNDERSTAND),
        (insts[1].sop_uid, OUT_OF_RESOURCES),
        (other_study.sop_uid, DATASET_MISMATCH),
    ]
