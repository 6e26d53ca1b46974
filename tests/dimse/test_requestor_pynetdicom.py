"""The asyncio requestor, C-ECHO and streaming C-FIND against pynetdicom peers."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from typing import Any

import pytest
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID

from gateway.dimse.contexts import QUERY, STUDY_ROOT_FIND, VERIFICATION
from gateway.dimse.echoscu import c_echo
from gateway.dimse.errors import (
    AssociationAborted,
    AssociationRefused,
    DimseTimeout,
    PeerUnreachable,
    StatusError,
)
from gateway.dimse.findscu import FindMatch, FindOperation
from gateway.dimse.requestor import Association, Peer, Timeouts, associate
from gateway.dimse.upper_layer import State
from tests.dimse.dimse_support import (
    CALLING_AET,
    TIMEOUTS,
    QueryScp,
    decoded,
    local_port,
    patient_id,
    peer_of,
    query,
    run,
)


async def connect(server: Any, timeouts: Timeouts = TIMEOUTS) -> Association:
    return await associate(peer_of(server), CALLING_AET, QUERY, timeouts=timeouts)


async def find_all(assoc: Association, script: str) -> list[FindMatch]:
    async with FindOperation(assoc, STUDY_ROOT_FIND, query(script), timeout=10) as op:
        return [m async for m in op]


def test_associate_echo_release(query_scp: QueryScp) -> None:
    async def main() -> int:
        assoc = await connect(query_scp)
        assert assoc.is_established and assoc.is_idle
        assert assoc.has_context(VERIFICATION) and assoc.has_context(STUDY_ROOT_FIND)
        assert assoc.peer_max_pdu == query_scp.ae.maximum_pdu_size
        assert assoc.accept_pdu is not None
        assert assoc.accept_pdu.user_information.implementation_class_uid == (
            PYNETDICOM_IMPLEMENTATION_UID
        )
        for _ in range(3):
            await c_echo(assoc, timeout=10)
        port = local_port(assoc)
        await assoc.release()
        assert assoc.machine.state is State.CLOSED
        assert not assoc.is_established
        return port

    port = run(main())
    assert query_scp.ending_of(port) == "released"


def test_find_yields_every_match_in_order(query_scp: QueryScp) -> None:
    async def main() -> None:
        assoc = await connect(query_scp)
        try:
            matches = await find_all(assoc, "MATCHES-25")
            assert [patient_id(m) for m in matches] == [f"PAT-{i:03d}" for i in range(25)]
            # No matches at all is a plain success.
            assert await find_all(assoc, "MATCHES-0") == []
            assert assoc.is_idle
        finally:
            await assoc.release()

    run(main())


def test_messages_larger_than_a_pdu_both_ways(query_scp: QueryScp) -> None:
    """Our identifier is split at the peer's 16382; its matches at our 4096."""

    async def main() -> None:
        assoc = await associate(
            peer_of(query_scp), CALLING_AET, QUERY, timeouts=TIMEOUTS, max_pdu_length=4096
        )
        try:
            identifier = query("BIG-3", PatientComments="p" * 10_000, ImageComments="i" * 10_000)
            sent = len(identifier(assoc.context_for(STUDY_ROOT_FIND).transfer_syntax))
            assert sent > query_scp.ae.maximum_pdu_size
            async with FindOperation(assoc, STUDY_ROOT_FIND, identifier, timeout=10) as op:
                matches = [decoded(m) async for m in op]
            assert [str(m.PatientID) for m in matches] == ["PAT-000", "PAT-001", "PAT-002"]
            assert all(m.PatientComments == "x" * 10_000 for m in matches)
            assert query_scp.last_identifier_length == sent
        finally:
            await assoc.release()

    run(main())


def test_find_final_status_and_message_ids(query_scp: QueryScp) -> None:
    async def main() -> None:
        assoc = await connect(query_scp)
        try:
            op = FindOperation(assoc, STUDY_ROOT_FIND, query("MATCHES-2"), timeout=10)
            async with op:
                assert len([m async for m in op]) == 2
            assert op.finished and op.final_status == 0x0000
            op2 = FindOperation(assoc, STUDY_ROOT_FIND, query("MATCHES-1"), timeout=10)
            async with op2:
                assert len([m async for m in op2]) == 1
            assert op2.message_id == op.message_id + 1
        finally:
            await assoc.release()

    run(main())


def test_breaking_out_early_sends_c_cancel_and_keeps_the_association(
    query_scp: QueryScp,
) -> None:
    async def main() -> tuple[FindOperation, Association]:
        assoc = await connect(query_scp)
        got: list[str] = []
        op = FindOperation(assoc, STUDY_ROOT_FIND, query("CANCEL-50"), timeout=10)
        async with op:
            async for match in op:
                got.append(patient_id(match))
                break
        assert got == ["PAT-000"]
        assert op.finished
        assert op.final_status == 0xFE00  # the SCP answered our C-CANCEL with Cancel
        # Still usable: C-ECHO and a whole new C-FIND on the same association.
        assert assoc.is_idle
        await c_echo(assoc, timeout=10)
        assert len(await find_all(assoc, "MATCHES-3")) == 3
        await assoc.release()
        return op, assoc

    op, _ = run(main())
    assert query_scp.wait_until(lambda: op.message_id in query_scp.cancelled)


def test_explicit_cancel_after_the_end_does_nothing(query_scp: QueryScp) -> None:
    async def main() -> None:
        assoc = await connect(query_scp)
        op = FindOperation(assoc, STUDY_ROOT_FIND, query("MATCHES-1"), timeout=10)
        await op.start()
        assert len([m async for m in op]) == 1
        await op.cancel()  # finished: no C-CANCEL, nothing to drain
        assert op.final_status == 0x0000
        await c_echo(assoc, timeout=10)
        await assoc.release()

    run(main())


def test_error_inside_the_find_block_aborts_the_association(query_scp: QueryScp) -> None:
    async def main() -> tuple[Association, int]:
        assoc = await connect(query_scp)
        port = local_port(assoc)
        with pytest.raises(LookupError):
            async with FindOperation(assoc, STUDY_ROOT_FIND, query("MATCHES-5"), timeout=10) as op:
                async for _ in op:
                    raise LookupError("consumer failed")
        return assoc, port

    assoc, port = run(main())
    assert assoc.machine.state is State.CLOSED
    assert query_scp.ending_of(port) == "aborted"


def test_wrong_called_ae_title_is_refused(make_peer: Any) -> None:
    # pynetdicom checks the called AE title (rejecting_peer checks the calling one).
    scp = QueryScp("STRICT")
    scp.ae.require_called_aet = True
    make_peer(scp)

    async def main() -> None:
        wrong = dataclasses.replace(peer_of(scp), aet="NOT-STRICT")
        with pytest.raises(AssociationRefused, match="called AE title not recognized") as err:
            await associate(wrong, CALLING_AET, QUERY, timeouts=TIMEOUTS)
        assert not err.value.transient
        # The same peer accepts its own AE title.
        ok = await connect(scp)
        await ok.release()

    run(main())


def test_rejected_association(rejecting_peer: Any) -> None:
    async def main() -> None:
        with pytest.raises(AssociationRefused, match="calling AE title not recognized") as err:
            await connect(rejecting_peer)
        assert not err.value.transient

    run(main())


def test_busy_peer_rejection_is_transient(busy_peer: Any) -> None:
    async def main() -> None:
        with pytest.raises(AssociationRefused, match="transient") as err:
            await connect(busy_peer)
        assert err.value.transient

    run(main())


def test_nothing_listening_is_peer_unreachable(closed_port: Any) -> None:
    async def main() -> None:
        with pytest.raises(PeerUnreachable, match=str(closed_port.port)):
            await connect(closed_port)

    run(main())


def test_silent_peer_times_out_on_the_accept_timeout(silent_peer: Any) -> None:
    timeouts = Timeouts(connect=5.0, accept=0.5, dimse=10.0, release=1.0)

    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(DimseTimeout, match="did not answer the association request"):
            await connect(silent_peer, timeouts)
        return time.monotonic() - started

    elapsed = run(main())
    assert 0.45 <= elapsed < 0.5 + 0.5


def test_accept_timeout_sends_a_abort_and_closes_the_connection() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    received = bytearray()
    closed_by_us = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            while chunk := conn.recv(65536):
                received.extend(chunk)
        closed_by_us.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    peer = Peer("SILENT", "127.0.0.1", listener.getsockname()[1])
    timeouts = Timeouts(connect=5.0, accept=0.2, dimse=10.0, release=1.0)
    try:
        with pytest.raises(DimseTimeout):
            run(associate(peer, CALLING_AET, QUERY, timeouts=timeouts))
        assert closed_by_us.wait(10)
    finally:
        listener.close()
        thread.join(10)
    # Exactly our A-ASSOCIATE-RQ, then an A-ABORT (PS3.8 9.3.8: user, no reason).
    assert received[:2] == b"\x01\x00"
    rq_length = 6 + int.from_bytes(received[2:6], "big")
    assert bytes(received[rq_length:]) == b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00"


def test_failure_status_raises_status_error(find_failure_peer: Any) -> None:
    async def main() -> None:
        assoc = await connect(find_failure_peer)
        try:
            with pytest.raises(StatusError) as err:
                await find_all(assoc, "ANY")
            assert err.value.status == find_failure_peer.status
            assert err.value.operation == "C-FIND"
            assert err.value.comment == "injected failure"
            assert f"0x{find_failure_peer.status:04X}" in str(err.value)
            # A failure status ends the operation cleanly: the association is fine.
            assert assoc.is_idle
            await c_echo(assoc, timeout=10)
        finally:
            await assoc.release()

    run(main())


def test_peer_abort_mid_find_raises_association_aborted(aborting_peer: Any) -> None:
    async def main() -> Association:
        assoc = await connect(aborting_peer)
        got: list[FindMatch] = []
        with pytest.raises(AssociationAborted):
            async with FindOperation(assoc, STUDY_ROOT_FIND, query("ANY"), timeout=10) as op:
                async for match in op:
                    got.append(match)
        assert len(got) == 1  # the match sent before the A-ABORT still arrives
        return assoc

    assoc = run(main())
    assert not assoc.is_established
    assert assoc.machine.state is State.CLOSED


def test_operations_on_an_aborted_association_fail_at_once(query_scp: QueryScp) -> None:
    async def main() -> None:
        assoc = await connect(query_scp)
        assoc.abort()
        with pytest.raises(AssociationAborted):
            await c_echo(assoc, timeout=10)
        with pytest.raises(AssociationAborted):
            await assoc.receive(timeout=10)
        await assoc.release()  # already closed: a no-op, not an error

    run(main())
