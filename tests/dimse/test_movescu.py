"""C-MOVE: the mediator's matching rules, the operation's two sources, then real PACS.

The first part needs no network: C-STORE commands and data sets (from the
demo files) go straight into ``MoveMediator.handle_store`` and scripted
C-MOVE-RSPs into a stand-in association, so orderings a real PACS produces
only by chance (final response before the last instance, silence while
instances flow) are replayed exactly.  The second part moves demo series
from the session Orthanc and dcmqrscp into a ``StoreSCP`` on the port both
know as the move destination.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dsutils import encode

from gateway.dicom.part10 import read_part10
from gateway.dimse import messages as M
from gateway.dimse.echoscu import c_echo
from gateway.dimse.errors import AssociationAborted, DimseTimeout, StatusError
from gateway.dimse.getscu import RetrievedInstance
from gateway.dimse.move_mediator import NOT_AUTHORIZED, MoveMediator, dataset_uids
from gateway.dimse.movescu import RETRIEVE_BY_MOVE, MoveOperation
from gateway.dimse.pdu import PresentationContextAC
from gateway.dimse.requestor import Association, associate
from gateway.dimse.storescp import StoreSCP
from tests.dimse.dimse_support import CALLING_AET, TIMEOUTS, peer_of, run
from tests.peers import MoveDestination

# --------------------------------------------------------------------------- helpers


def dataset_of(path: Path) -> bytes:
    part10 = read_part10(path.read_bytes())
    return bytes(part10.data[part10.offset :])


def series_by_modality(manifest: Any, modality: str) -> list[Any]:
    """The first series of ``modality`` in the demo set (CT: 8 slices, MR: 10)."""
    for instances in manifest.series().values():
        if instances[0].modality == modality:
            return list(instances)
    raise KeyError(modality)


def store_rq(
    inst: Any, originator: tuple[str, int] | None = None, message_id: int = 1
) -> M.Command:
    return M.c_store_rq(message_id, inst.sop_class_uid, inst.sop_uid, move_originator=originator)


async def store(
    mediator: MoveMediator, inst: Any, originator: tuple[str, int] | None = None
) -> int:
    """What our Storage SCP would do with this instance arriving from the PACS."""
    return await mediator.handle_store(
        "PACS", store_rq(inst, originator), ExplicitVRLittleEndian, dataset_of(inst.path)
    )


def move_identifier(
    study: str, series: str | None = None, sop: str | None = None
) -> Callable[[str], bytes]:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE" if sop else "SERIES" if series else "STUDY"
    ds.StudyInstanceUID = study
    if series:
        ds.SeriesInstanceUID = series
    if sop:
        ds.SOPInstanceUID = sop

    def encoded(transfer_syntax: str) -> bytes:
        data = encode(ds, transfer_syntax == ImplicitVRLittleEndian, True)
        assert data is not None
        return bytes(data)

    return encoded


class StubAssociation:
    """Stands in for ``requestor.Association``: records sends, replays C-MOVE-RSPs."""

    calling_aet = CALLING_AET
    accept_pdu = None

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[M.Message] = asyncio.Queue()
        self.sent: list[M.Command] = []
        self.aborted = False

    def context_for(self, abstract_syntax: str) -> PresentationContextAC:
        return PresentationContextAC(3, 0, ExplicitVRLittleEndian)

    async def send(self, context_id: int, command: M.Command, dataset: Any = None) -> None:
        self.sent.append(command)

    async def receive(self, timeout: float) -> M.Message:
        try:
            return await asyncio.wait_for(self.inbox.get(), timeout)
        except TimeoutError:
            raise DimseTimeout("scripted silence") from None

    def abort(self) -> None:
        self.aborted = True

    def respond(self, op: MoveOperation, status: int, **counts: int) -> None:
        fields = {
            "CommandField": M.C_MOVE_RSP,
            "MessageIDBeingRespondedTo": op.message_id,
            "CommandDataSetType": M.NO_DATASET,
            "Status": status,
            **{f"NumberOf{k.title()}Suboperations": v for k, v in counts.items()},
        }
        self.inbox.put_nowait(M.Message(3, M.Command(fields)))


def stub_operation(
    assoc: StubAssociation, mediator: MoveMediator, series: list[Any], timeout: float = 2.0
) -> MoveOperation:
    first = series[0]
    return MoveOperation(
        assoc,  # type: ignore[arg-type]
        move_identifier(first.study_uid, first.series_uid),
        "GATEWAY",
        mediator,
        timeout=timeout,
        study_uid=first.study_uid,
        series_uid=first.series_uid,
    )


def sops(instances: list[RetrievedInstance]) -> list[str]:
    return [i.sop_instance_uid for i in instances]


# --------------------------------------------------------------------------- mediator rules


def test_dataset_uids_reads_only_the_header(sample_manifest: Any) -> None:
    inst = series_by_modality(sample_manifest, "CT")[0]
    data = dataset_of(inst.path)
    assert dataset_uids(data, ExplicitVRLittleEndian) == (
        inst.study_uid,
        inst.series_uid,
        inst.sop_uid,
    )
    # Everything from (0020,000F) on may be garbage: it is never walked.
    header = data.index(b"\x20\x00\x0e\x00UI")  # (0020,000E), explicit VR LE
    cut = header + 8 + int.from_bytes(data[header + 6 : header + 8], "little")
    assert dataset_uids(data[:cut] + b"\xff" * 64, ExplicitVRLittleEndian)[1] == inst.series_uid


def test_message_id_decides_even_when_uids_overlap(sample_manifest: Any) -> None:
    ct = series_by_modality(sample_manifest, "CT")

    async def main() -> None:
        mediator = MoveMediator(queue_size=16)
        first = mediator.expect(CALLING_AET, 1, ct[0].study_uid, ct[0].series_uid)
        second = mediator.expect(CALLING_AET, 2, ct[0].study_uid, ct[0].series_uid)
        assert [await store(mediator, i, (CALLING_AET, 2)) for i in ct[:3]] == [0, 0, 0]
        # Blank originator AE: the message ID alone is unambiguous (unique per mediator).
        assert await store(mediator, ct[3], ("", 2)) == 0
        assert (first.delivered, second.delivered) == (0, 4)
        # An originator ID no waiter has is refused, never re-routed by UID.
        assert await store(mediator, ct[4], (CALLING_AET, 3)) == NOT_AUTHORIZED
        assert await store(mediator, ct[4], ("OTHERGW", 1)) == NOT_AUTHORIZED
        assert (first.delivered, second.delivered) == (0, 4)
        with pytest.raises(ValueError):
            mediator.expect(CALLING_AET, 2, ct[0].study_uid)

    run(main())


def test_uid_fallback_gives_each_overlapping_move_every_instance_once(
    sample_manifest: Any,
) -> None:
    ct = series_by_modality(sample_manifest, "CT")
    mr = series_by_modality(sample_manifest, "MR")

    async def main() -> None:
        mediator = MoveMediator(queue_size=32)
        older = mediator.expect(CALLING_AET, 1, ct[0].study_uid, ct[0].series_uid)
        study = mediator.expect(CALLING_AET, 2, ct[0].study_uid)  # the whole CT study
        one = mediator.expect(CALLING_AET, 3, ct[0].study_uid, ct[0].series_uid, ct[5].sop_uid)
        # A PACS that leaves the Move Originator fields empty sends each move's
        # copy: the oldest waiter that has not had the instance gets it.
        for inst in ct:
            assert await store(mediator, inst) == 0
        assert (older.delivered, study.delivered, one.delivered) == (8, 0, 0)
        for inst in ct:
            assert await store(mediator, inst) == 0
        assert (older.delivered, study.delivered, one.delivered) == (8, 8, 0)
        assert await store(mediator, ct[5]) == 0
        assert (older.delivered, study.delivered, one.delivered) == (8, 8, 1)
        # A fourth copy nobody wants, and another patient's series: refused.
        assert await store(mediator, ct[5]) == NOT_AUTHORIZED
        assert await store(mediator, mr[0]) == NOT_AUTHORIZED
        older.finish()
        assert sops([i async for i in older]) == [i.sop_uid for i in ct]

    run(main())


def test_full_queue_holds_the_store_response_back(sample_manifest: Any) -> None:
    ct = series_by_modality(sample_manifest, "CT")

    async def main() -> None:
        mediator = MoveMediator(queue_size=1)
        waiter = mediator.expect(CALLING_AET, 7, ct[0].study_uid, ct[0].series_uid)
        assert await store(mediator, ct[0], (CALLING_AET, 7)) == 0
        blocked = asyncio.ensure_future(store(mediator, ct[1], (CALLING_AET, 7)))
        await asyncio.sleep(0.05)
        assert not blocked.done()  # the PACS is still waiting for this C-STORE-RSP
        assert (await anext(waiter)).sop_instance_uid == ct[0].sop_uid
        assert await asyncio.wait_for(blocked, 1) == 0
        # After a C-CANCEL: discarded but answered Success, so the PACS winds down.
        waiter.drain()
        assert await store(mediator, ct[2], (CALLING_AET, 7)) == 0
        assert (waiter.delivered, waiter.discarded) == (2, 2)
        # Closed: nobody waits any more.
        waiter.close()
        assert await store(mediator, ct[3], (CALLING_AET, 7)) == NOT_AUTHORIZED
        assert mediator.waiters == []

    run(main())


def test_message_ids_are_unique_across_live_waiters() -> None:
    async def main() -> None:
        mediator = MoveMediator()
        ids = [mediator.allocate_message_id() for _ in range(3)]
        waiters = [mediator.expect(CALLING_AET, i, "1.2.3") for i in ids]
        mediator._last_id = 0xFFFE  # wrap around: 65535, then skip the live ones
        assert mediator.allocate_message_id() == 0xFFFF
        assert mediator.allocate_message_id() not in ids
        waiters[0].close()
        mediator._last_id = 0
        assert mediator.allocate_message_id() == ids[0]

    run(main())


# --------------------------------------------------------------------------- operation logic


def test_final_response_before_the_queue_is_consumed_loses_nothing(sample_manifest: Any) -> None:
    ct = series_by_modality(sample_manifest, "CT")

    async def main() -> None:
        assoc, mediator = StubAssociation(), MoveMediator(queue_size=8)
        async with stub_operation(assoc, mediator, ct) as op:
            (rq,) = assoc.sent
            assert rq.command_field == M.C_MOVE_RQ
            assert (rq["MessageID"], rq["MoveDestination"]) == (op.message_id, "GATEWAY")
            for inst in ct:
                assert await store(mediator, inst, (CALLING_AET, op.message_id)) == 0
            assoc.respond(op, 0xFF00, remaining=1, completed=7, failed=0, warning=0)
            assoc.respond(op, 0x0000, completed=8, failed=0, warning=0)
            await asyncio.sleep(0.05)
            assert op.finished  # the final response is in, eight instances are not out yet
            got = [i async for i in op]
        assert sops(got) == [i.sop_uid for i in ct]
        assert got[0].dataset == dataset_of(ct[0].path)
        assert (op.counts.completed, op.counts.remaining, op.final_status) == (8, 0, 0)
        assert not assoc.aborted and mediator.waiters == []

    run(main())


def test_instances_counted_by_the_final_response_are_waited_for(sample_manifest: Any) -> None:
    ct = series_by_modality(sample_manifest, "CT")[:2]

    async def main() -> list[RetrievedInstance]:
        assoc, mediator = StubAssociation(), MoveMediator()
        async with stub_operation(assoc, mediator, ct) as op:
            await store(mediator, ct[0], (CALLING_AET, op.message_id))
            assoc.respond(op, 0x0000, completed=2)  # the PACS answered before our last RSP

            async def late() -> None:
                await asyncio.sleep(0.2)
                await store(mediator, ct[1], (CALLING_AET, op.message_id))

            task = asyncio.ensure_future(late())
            got = [i async for i in op]
            await task
            return got

    assert sops(run(main())) == [i.sop_uid for i in ct]


def test_failure_status_is_raised_after_the_instances_that_arrived(sample_manifest: Any) -> None:
    ct = series_by_modality(sample_manifest, "CT")

    async def main() -> tuple[list[str], MoveOperation, StubAssociation]:
        assoc, mediator = StubAssociation(), MoveMediator()
        got: list[str] = []
        op = stub_operation(assoc, mediator, ct)
        with pytest.raises(StatusError) as failed:
            async with op:
                await store(mediator, ct[0], (CALLING_AET, op.message_id))
                assoc.respond(op, 0xA702, completed=1, failed=7, remaining=0)
                async for inst in op:
                    got.append(inst.sop_instance_uid)
        assert (failed.value.operation, failed.value.status) == ("C-MOVE", 0xA702)
        return got, op, assoc

    got, op, assoc = run(main())
    assert got == [ct[0].sop_uid]
    assert (op.counts.completed, op.counts.failed) == (1, 7)
    assert not assoc.aborted  # the final response came: the association is reusable


def test_instances_arriving_keep_a_silent_move_alive(sample_manifest: Any) -> None:
    ct = series_by_modality(sample_manifest, "CT")

    async def main() -> int:
        assoc, mediator = StubAssociation(), MoveMediator(queue_size=16)
        async with stub_operation(assoc, mediator, ct, timeout=0.4) as op:
            # No pending responses at all, an instance every 0.1 s for 0.8 s:
            # twice the DIMSE timeout, yet the PACS is plainly not silent.
            for inst in ct:
                await asyncio.sleep(0.1)
                await store(mediator, inst, (CALLING_AET, op.message_id))
            assoc.respond(op, 0x0000, completed=8)
            return len([i async for i in op])

    assert run(main()) == 8


def test_silence_times_out_and_aborts(sample_manifest: Any) -> None:
    ct = series_by_modality(sample_manifest, "CT")

    async def main() -> StubAssociation:
        assoc, mediator = StubAssociation(), MoveMediator()
        with pytest.raises(DimseTimeout):
            async with stub_operation(assoc, mediator, ct, timeout=0.2) as op:
                [i async for i in op]
        assert mediator.waiters == []
        return assoc

    assert run(main()).aborted


def test_unexpected_message_aborts(sample_manifest: Any) -> None:
    ct = series_by_modality(sample_manifest, "CT")

    async def main() -> StubAssociation:
        assoc, mediator = StubAssociation(), MoveMediator()
        with pytest.raises(AssociationAborted):
            async with stub_operation(assoc, mediator, ct) as op:
                assoc.inbox.put_nowait(M.Message(3, M.response_to(M.c_echo_rq(1), 0x8030, 0)))
                [i async for i in op]
        return assoc

    assert run(main()).aborted


def test_cancel_sends_c_cancel_and_drains(sample_manifest: Any) -> None:
    ct = series_by_modality(sample_manifest, "CT")

    async def main() -> None:
        assoc, mediator = StubAssociation(), MoveMediator(queue_size=1)
        async with stub_operation(assoc, mediator, ct) as op:
            mid = op.message_id
            await store(mediator, ct[0], (CALLING_AET, mid))
            blocked = asyncio.ensure_future(store(mediator, ct[1], (CALLING_AET, mid)))
            first = await anext(op)
            await asyncio.sleep(0.01)
            cancelling = asyncio.ensure_future(op.cancel())
            await asyncio.sleep(0.05)
            assert [c.command_field for c in assoc.sent] == [M.C_MOVE_RQ, M.C_CANCEL_RQ]
            assert assoc.sent[1]["MessageIDBeingRespondedTo"] == mid
            assert await blocked == 0  # queued, then discarded by the cancel
            assert await store(mediator, ct[2], (CALLING_AET, mid)) == 0  # still in flight
            assoc.respond(op, M.CANCEL, completed=3, remaining=5)
            await asyncio.wait_for(cancelling, 2)
        assert first.sop_instance_uid == ct[0].sop_uid
        assert (op.final_status, op.counts.remaining) == (M.CANCEL, 5)
        assert not assoc.aborted and mediator.waiters == []
        assert await store(mediator, ct[3], (CALLING_AET, mid)) == NOT_AUTHORIZED

    run(main())


# --------------------------------------------------------------------------- real PACS


@contextlib.asynccontextmanager
async def destination(
    dest: MoveDestination, queue_size: int = 4
) -> AsyncIterator[tuple[StoreSCP, MoveMediator]]:
    """Our Storage SCP on the address the session PACS know as the move destination."""
    mediator = MoveMediator(queue_size=queue_size)
    async with StoreSCP(dest.aet, dest.host, dest.port, mediator.handle_store) as scp:
        try:
            yield scp, mediator
        finally:
            mediator.close()


async def connect(pacs: Any) -> Association:
    return await associate(peer_of(pacs), CALLING_AET, RETRIEVE_BY_MOVE, timeouts=TIMEOUTS)


def move_series(
    assoc: Association,
    series: list[Any],
    mediator: MoveMediator,
    destination_aet: str,
) -> MoveOperation:
    first = series[0]
    return MoveOperation(
        assoc,
        move_identifier(first.study_uid, first.series_uid),
        destination_aet,
        mediator,
        timeout=10,
        study_uid=first.study_uid,
        series_uid=first.series_uid,
    )


async def collect(op: MoveOperation) -> list[RetrievedInstance]:
    async with op:
        return [i async for i in op]


def assert_intact(got: list[RetrievedInstance], series: list[Any]) -> None:
    assert sorted(sops(got)) == sorted(i.sop_uid for i in series)
    by_uid = {i.sop_uid: i for i in series}
    for inst in got:
        expected = by_uid[inst.sop_instance_uid]
        assert inst.sop_class_uid == expected.sop_class_uid
        assert inst.transfer_syntax == expected.transfer_syntax
        assert inst.dataset == dataset_of(expected.path)


def test_move_series_arrives_intact(pacs: Any, move_destination: MoveDestination) -> None:
    ct = series_by_modality(pacs.manifest, "CT")

    async def main() -> tuple[list[RetrievedInstance], MoveOperation, Association]:
        async with destination(move_destination) as (_, mediator):
            assoc = await connect(pacs)
            try:
                op = move_series(assoc, ct, mediator, move_destination.aet)
                got = await collect(op)
                assert assoc.is_idle
                await c_echo(assoc, timeout=5)
            finally:
                await assoc.release()
            assert mediator.waiters == []
            return got, op, assoc

    got, op, _ = run(main())
    assert_intact(got, ct)
    assert op.final_status == M.SUCCESS
    assert (op.counts.completed, op.counts.failed, op.counts.remaining) == (len(ct), 0, 0)


def test_concurrent_moves_are_not_mixed_up(pacs: Any, move_destination: MoveDestination) -> None:
    ct = series_by_modality(pacs.manifest, "CT")
    mr = series_by_modality(pacs.manifest, "MR")
    plan = [ct, mr, ct]  # two moves of the same series too: each must get it once

    async def main() -> list[list[RetrievedInstance]]:
        async with destination(move_destination, queue_size=2) as (_, mediator):
            assocs = [await connect(pacs) for _ in plan]
            try:
                ops = [
                    move_series(a, s, mediator, move_destination.aet)
                    for a, s in zip(assocs, plan, strict=True)
                ]
                return list(await asyncio.gather(*(collect(op) for op in ops)))
            finally:
                await asyncio.gather(*(a.release() for a in assocs))

    for got, series in zip(run(main()), plan, strict=True):
        assert_intact(got, series)
        assert len(got) == len(series)


def test_unknown_destination_is_a_status_error(
    pacs: Any, move_destination: MoveDestination
) -> None:
    ct = series_by_modality(pacs.manifest, "CT")

    async def main() -> tuple[StatusError, bool]:
        async with destination(move_destination) as (_, mediator):
            assoc = await connect(pacs)
            try:
                with pytest.raises(StatusError) as failed:
                    await collect(move_series(assoc, ct, mediator, "NOSUCHDEST"))
                return failed.value, assoc.is_idle
            finally:
                await assoc.release()

    error, idle = run(main())
    assert error.operation == "C-MOVE"
    # PS3.4 C.4.2.1.5: 0xA801 "Move Destination unknown" (dcmqrscp); Orthanc
    # 1.10 answers its generic 0xC000 for a modality it does not know.
    assert error.status == (0xC000 if pacs.kind == "orthanc" else 0xA801)
    assert idle  # a failure status is an answer: the association stays usable


def test_cancel_mid_move(pacs: Any, move_destination: MoveDestination) -> None:
    ct = series_by_modality(pacs.manifest, "CT")

    async def main() -> tuple[list[str], MoveOperation]:
        async with destination(move_destination, queue_size=1) as (_, mediator):
            assoc = await connect(pacs)
            try:
                op = move_series(assoc, ct, mediator, move_destination.aet)
                got: list[str] = []
                async with op:
                    async for inst in op:
                        got.append(inst.sop_instance_uid)
                        if len(got) == 2:
                            break  # leaving the block early cancels the move
                assert assoc.is_idle
                await c_echo(assoc, timeout=5)
                assert mediator.waiters == []
            finally:
                await assoc.release()
            return got, op

    got, op = run(main())
    assert len(set(got)) == 2 and set(got) <= {i.sop_uid for i in ct}
    assert op.final_status == M.CANCEL
    assert op.counts.completed < len(ct)


def _pynetdicom_store(port: int, aet: str, inst: Any, originator: tuple[str, int] | None) -> int:
    ae = AE("INTRUDER")
    ae.add_requested_context(inst.sop_class_uid, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    assert assoc.is_established
    try:
        kwargs: dict[str, Any] = {}
        if originator:
            kwargs = {"originator_aet": originator[0], "originator_id": originator[1]}
        return int(assoc.send_c_store(inst.path, **kwargs).Status)
    finally:
        assoc.release()


def test_store_from_an_unexpected_sender_is_refused(
    sample_manifest: Any, move_destination: MoveDestination
) -> None:
    ct = series_by_modality(sample_manifest, "CT")
    mr = series_by_modality(sample_manifest, "MR")

    async def main() -> list[int]:
        async with destination(move_destination) as (scp, mediator):

            async def send(inst: Any, originator: tuple[str, int] | None = None) -> int:
                return await asyncio.to_thread(
                    _pynetdicom_store, scp.port, scp.aet, inst, originator
                )

            nobody_waits = await send(ct[0])
            waiter = mediator.expect(CALLING_AET, 41, ct[0].study_uid, ct[0].series_uid)
            other_series = await send(mr[0])
            unknown_move = await send(ct[0], (CALLING_AET, 40))
            assert waiter.delivered == 0
            # The same instance without Move Originator fields matches by UID.
            by_uid = await send(ct[0])
            assert waiter.delivered == 1
            return [nobody_waits, other_series, unknown_move, by_uid]

    assert run(main()) == [NOT_AUTHORIZED, NOT_AUTHORIZED, NOT_AUTHORIZED, 0]
