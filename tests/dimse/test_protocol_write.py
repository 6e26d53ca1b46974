"""DimseProtocol's scatter-gather write: every byte arrives, in order, whatever
the socket takes at once (real sockets on 127.0.0.1, a slow reader)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys

import pytest

from gateway.dimse.errors import AssociationAborted
from gateway.dimse.requestor import DimseProtocol


def _pieces(seed: int, count: int, size: int) -> list[bytes | memoryview]:
    """Headers and memoryview slices like the P-DATA path gives: mixed types and sizes."""
    blob = os.urandom(size * count)
    view = memoryview(blob)
    out: list[bytes | memoryview] = []
    for i in range(count):
        out.append(bytes([seed, i % 256]) * 6)
        out.append(view[i * size : (i + 1) * size])
    return out


async def _connected() -> tuple[DimseProtocol, socket.socket]:
    loop = asyncio.get_running_loop()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    received: list[bytes] = []
    _, protocol = await loop.create_connection(
        lambda: DimseProtocol(received.append, lambda: None), *server.getsockname()
    )
    peer, _ = await loop.sock_accept(server)
    server.close()
    # A small receive buffer on the reader, so the writer's socket fills up.
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    return protocol, peer


async def _read_all(peer: socket.socket, size: int, delay: float) -> bytes:
    loop = asyncio.get_running_loop()
    got = bytearray()
    while len(got) < size:
        chunk = await loop.sock_recv(peer, 65536)
        if not chunk:
            break
        got += chunk
        if delay:
            await asyncio.sleep(delay)
    return bytes(got)


@pytest.mark.parametrize("delay", [0.0, 0.001])
def test_writes_arrive_whole_and_in_order_through_a_full_socket(delay: float) -> None:
    async def main() -> None:
        protocol, peer = await _connected()
        batches = [_pieces(n, 40, 16378) for n in range(12)]  # ~7.9 MB, far over the buffers
        expected = b"".join(b"".join(bytes(p) for p in batch) + b"<between>" for batch in batches)
        reader = asyncio.create_task(_read_all(peer, len(expected), delay))
        assert protocol.transport is not None
        queued = 0
        for batch in batches:
            protocol.write(batch)
            protocol.write(b"<between>")  # a plain bytes write between lists keeps its place
            queued = max(queued, protocol.transport.get_write_buffer_size())
        assert queued  # the socket did not take everything: the transport's part was used
        await protocol.drain()
        got = await asyncio.wait_for(reader, 60)
        assert len(got) == len(expected)
        assert got == expected
        assert protocol.transport is not None
        protocol.transport.close()
        peer.close()

    asyncio.run(main())


def test_a_list_written_while_the_transport_still_holds_data_queues_behind_it() -> None:
    """The socket has room again, but the transport has not yet sent what it
    holds (its writer runs later in the loop): a new list must go behind that
    data, not straight to the socket."""

    async def main() -> None:
        protocol, peer = await _connected()
        assert protocol.transport is not None
        if sys.version_info < (3, 12):
            assert protocol._raw is not None  # the sendmsg path is the one tested
        first = [p for n in range(12) for p in _pieces(n, 40, 16378)]
        second = _pieces(99, 4, 100)
        expected = b"".join(bytes(p) for p in [*first, *second])
        protocol.write(first)
        assert protocol.transport.get_write_buffer_size() > 0
        got = bytearray()
        with contextlib.suppress(BlockingIOError):
            while True:  # empty the socket now, before the transport's writer runs
                chunk = peer.recv(1 << 20)
                if not chunk:
                    break
                got += chunk
        protocol.write(second)
        await protocol.drain()
        got += await asyncio.wait_for(_read_all(peer, len(expected) - len(got), 0.0), 30)
        assert bytes(got) == expected
        protocol.transport.close()
        peer.close()

    asyncio.run(main())


def test_more_pieces_than_one_sendmsg_takes() -> None:
    async def main() -> None:
        protocol, peer = await _connected()
        batch = _pieces(7, 1500, 10)  # 3,000 pieces: over IOV_MAX (1,024)
        expected = b"".join(bytes(p) for p in batch)
        reader = asyncio.create_task(_read_all(peer, len(expected), 0.0))
        protocol.write(batch)
        await protocol.drain()
        assert await asyncio.wait_for(reader, 30) == expected
        assert protocol.transport is not None
        protocol.transport.close()
        peer.close()

    asyncio.run(main())


def test_writing_after_the_peer_closed_raises_aborted() -> None:
    async def main() -> None:
        protocol, peer = await _connected()
        peer.close()
        assert protocol.transport is not None
        protocol.transport.close()
        with pytest.raises(AssociationAborted):
            protocol.write(_pieces(1, 2, 10))

    asyncio.run(main())
