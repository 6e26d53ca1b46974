"""AssociationPool against a pynetdicom SCP: reuse, bounds, failure, expiry, back-off."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from gateway.dimse.contexts import (
    QUERY,
    STUDY_ROOT_FIND,
    UNCOMPRESSED,
    VERIFICATION,
    ContextProfile,
)
from gateway.dimse.echoscu import c_echo
from gateway.dimse.errors import AssociationRefused, DimseError, PeerUnreachable
from gateway.dimse.findscu import FindOperation
from gateway.dimse.pool import AssociationPool, PoolSettings
from gateway.dimse.requestor import Association, Peer
from gateway.dimse.upper_layer import State
from tests.dimse.dimse_support import (
    CALLING_AET,
    TIMEOUTS,
    QueryScp,
    local_port,
    patient_id,
    peer_of,
    query,
    run,
)
from tests.peers.ports import free_port

ECHO_ONLY = ContextProfile("echo", ((VERIFICATION, UNCOMPRESSED),))


def settings(**overrides: Any) -> PoolSettings:
    return PoolSettings(CALLING_AET, TIMEOUTS, **overrides)


async def echo_through(pool: AssociationPool, profile: ContextProfile = QUERY) -> Association:
    async with pool.acquire(profile) as assoc:
        await c_echo(assoc, timeout=10)
        return assoc


def test_sequential_acquires_reuse_one_association(query_scp: QueryScp) -> None:
    async def main() -> None:
        pool = AssociationPool(peer_of(query_scp), settings())
        requests_before = query_scp.association_requests
        try:
            used = [await echo_through(pool) for _ in range(5)]
            assert len({a.id for a in used}) == 1
            assert pool.size == 1 and pool.in_use == 0
            assert query_scp.association_requests == requests_before + 1
        finally:
            await pool.close()

    run(main())


def test_concurrent_acquires_never_exceed_max_size(query_scp: QueryScp) -> None:
    async def main() -> None:
        pool = AssociationPool(peer_of(query_scp), settings(max_size=2))
        peak = 0
        ids: set[int] = set()

        async def task() -> None:
            nonlocal peak
            async with pool.acquire(QUERY) as assoc:
                peak = max(peak, pool.size)
                ids.add(assoc.id)
                await c_echo(assoc, timeout=10)
                await asyncio.sleep(0)  # let the others run while we hold it
                peak = max(peak, pool.size)

        try:
            await asyncio.gather(*(task() for _ in range(10)))
            assert peak == 2  # bounded, and really concurrent
            assert len(ids) == 2
            assert pool.size == 2 and pool.in_use == 0
        finally:
            await pool.close()

    run(main())


def test_exception_inside_acquire_aborts_and_is_not_reused(query_scp: QueryScp) -> None:
    async def main() -> tuple[Association, int]:
        pool = AssociationPool(peer_of(query_scp), settings())
        try:
            with pytest.raises(RuntimeError):
                async with pool.acquire(QUERY) as broken:
                    await c_echo(broken, timeout=10)
                    port = local_port(broken)
                    raise RuntimeError("operation failed")
            assert broken.machine.state is State.CLOSED
            assert pool.size == 0 and pool.in_use == 0
            fresh = await echo_through(pool)
            assert fresh.id != broken.id
            return broken, port
        finally:
            await pool.close()

    _, port = run(main())
    assert query_scp.ending_of(port) == "aborted"


def test_cancelling_a_task_inside_acquire_aborts_it(query_scp: QueryScp) -> None:
    async def main() -> int:
        pool = AssociationPool(peer_of(query_scp), settings())
        inside = asyncio.Event()
        lent: list[Association] = []

        async def holder() -> None:
            async with pool.acquire(QUERY) as assoc:
                lent.append(assoc)
                inside.set()
                await asyncio.Event().wait()  # until cancelled

        try:
            task = asyncio.create_task(holder())
            await inside.wait()
            port = local_port(lent[0])
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert lent[0].machine.state is State.CLOSED
            assert pool.size == 0 and pool.in_use == 0
            assert (await echo_through(pool)).id != lent[0].id
            return port
        finally:
            await pool.close()

    port = run(main())
    assert query_scp.ending_of(port) == "aborted"


def test_idle_associations_expire(query_scp: QueryScp) -> None:
    async def main() -> int:
        pool = AssociationPool(peer_of(query_scp), settings(idle_seconds=0.1))
        try:
            first = await echo_through(pool)
            port = local_port(first)
            await asyncio.sleep(0.15)  # the idle limit itself is what is tested
            second = await echo_through(pool)
            assert second.id != first.id
            assert pool.size == 1
            return port
        finally:
            await pool.close()

    port = run(main())
    # The expired one was released politely, not aborted.
    assert query_scp.ending_of(port) == "released"


def test_expire_idle_releases_old_ones(query_scp: QueryScp) -> None:
    async def main() -> None:
        pool = AssociationPool(peer_of(query_scp), settings(idle_seconds=0.1))
        try:
            await echo_through(pool)
            assert pool.expire_idle() == 0
            await asyncio.sleep(0.15)
            assert pool.expire_idle() == 1
            assert pool.size == 0
        finally:
            await pool.close()

    run(main())


def test_a_full_pool_evicts_an_idle_association_of_another_profile(query_scp: QueryScp) -> None:
    async def main() -> None:
        pool = AssociationPool(peer_of(query_scp), settings(max_size=1))
        try:
            query_assoc = await echo_through(pool, QUERY)
            echo_assoc = await echo_through(pool, ECHO_ONLY)
            assert echo_assoc.id != query_assoc.id
            assert not echo_assoc.has_context(STUDY_ROOT_FIND)
            assert pool.size == 1
        finally:
            await pool.close()
        assert query_assoc.machine.state is State.CLOSED

    run(main())


def test_backoff_fails_fast_then_recovers(make_peer: Any) -> None:
    port = free_port()
    backoff = 1.0

    async def main() -> None:
        pool = AssociationPool(Peer("QRSCP", "127.0.0.1", port), settings(backoff_seconds=backoff))
        try:
            with pytest.raises(PeerUnreachable):
                await echo_through(pool)
            failed_at = time.monotonic()
            assert pool.size == 0

            started = time.monotonic()
            with pytest.raises(PeerUnreachable, match="backing off"):
                await echo_through(pool)
            assert time.monotonic() - started < 0.05

            # The PACS comes back on its port: within the back-off we still fail
            # fast, without even trying to connect.
            scp = make_peer(QueryScp(port=port))
            if time.monotonic() - failed_at < backoff * 0.8:
                with pytest.raises(PeerUnreachable, match="backing off"):
                    await echo_through(pool)
                assert scp.association_requests == 0

            await asyncio.sleep(max(0.0, failed_at + backoff - time.monotonic()) + 0.05)
            assoc = await echo_through(pool)  # recovered
            assert assoc.is_idle
            assert scp.association_requests == 1
            # ...and the back-off is forgotten: a later failure-free acquire reuses it.
            assert (await echo_through(pool)).id == assoc.id
        finally:
            await pool.close()

    run(main())


def test_rejection_also_backs_off(rejecting_peer: Any) -> None:
    async def main() -> None:
        pool = AssociationPool(peer_of(rejecting_peer), settings(backoff_seconds=30))
        try:
            with pytest.raises(AssociationRefused):
                await echo_through(pool)
            with pytest.raises(AssociationRefused, match="backing off"):
                await echo_through(pool)
            assert pool.size == 0 and pool.in_use == 0
        finally:
            await pool.close()

    run(main())
    assert rejecting_peer.association_requests == 1


def test_close_releases_idle_associations(query_scp: QueryScp) -> None:
    async def main() -> list[int]:
        pool = AssociationPool(peer_of(query_scp), settings(max_size=3))
        async with pool.acquire(QUERY) as a, pool.acquire(QUERY) as b:
            ports = [local_port(a), local_port(b)]
        assert pool.size == 2
        await pool.close()
        assert pool.size == 0
        assert a.machine.state is State.CLOSED and b.machine.state is State.CLOSED
        with pytest.raises(DimseError, match="closed"):
            async with pool.acquire(QUERY):
                pass
        return ports

    for port in run(main()):
        assert query_scp.ending_of(port) == "released"


def test_association_in_use_when_the_pool_closes_is_released_on_return(
    query_scp: QueryScp,
) -> None:
    async def main() -> int:
        pool = AssociationPool(peer_of(query_scp), settings())
        async with pool.acquire(QUERY) as assoc:
            await pool.close()
            await c_echo(assoc, timeout=10)  # the owner finishes its operation
            port = local_port(assoc)
        assert pool.size == 0
        await pool.close()  # waits for the background release
        assert assoc.machine.state is State.CLOSED
        return port

    assert query_scp.ending_of(run(main())) == "released"


def test_async_generator_closed_early_cancels_and_returns_the_association(
    query_scp: QueryScp,
) -> None:
    """The QIDO ``limit`` path: a consumer stops a streamed C-FIND and closes the stream."""

    async def main() -> int:
        pool = AssociationPool(peer_of(query_scp), settings())
        ops: list[FindOperation] = []

        async def matches() -> AsyncGenerator[str, None]:
            async with pool.acquire(QUERY) as assoc:
                op = FindOperation(assoc, STUDY_ROOT_FIND, query("CANCEL-50"), timeout=10)
                ops.append(op)
                async with op:
                    async for match in op:
                        yield patient_id(match)

        try:
            stream = matches()
            assert await anext(stream) == "PAT-000"
            await stream.aclose()
            assert ops[0].final_status == 0xFE00
            assert pool.size == 1 and pool.in_use == 0
            assert (await echo_through(pool)).id == ops[0].assoc.id  # reused
            return ops[0].message_id
        finally:
            await pool.close()

    message_id = run(main())
    assert query_scp.wait_until(lambda: message_id in query_scp.cancelled)
