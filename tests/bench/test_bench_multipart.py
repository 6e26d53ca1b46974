"""STOW-RS hot path: parsing a 100 x 512 KB multipart/related upload.

Target (issue brief): well under 50 ms of CPU for the whole body.  Printed, never
asserted (timings depend on the machine).  Run with ``pytest -m bench -s
tests/bench/test_bench_multipart.py``.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import AsyncIterator

import pytest

from gateway.web.multipart_reader import iter_parts, read_parts

pytestmark = pytest.mark.bench

BOUNDARY = "dwgw-" + "0123456789abcdef" * 2
PARTS, PART_SIZE = 100, 512 * 1024
ROUNDS = 7


def make_body() -> bytes:
    rng = random.Random(0)
    dash = b"--" + BOUNDARY.encode()
    out = []
    for i in range(PARTS):
        out.append(
            dash + b"\r\nContent-Type: application/dicom\r\n"
            b"Content-Location: /bulk/%d\r\n\r\n" % i + rng.randbytes(PART_SIZE) + b"\r\n"
        )
    out.append(dash + b"--\r\n")
    return b"".join(out)


async def source(chunks: list[bytes]) -> AsyncIterator[bytes]:
    """The body as the server hands it over: chunks already in memory."""
    for chunk in chunks:
        yield chunk


async def spooled(chunks: list[bytes]) -> int:
    total = 0
    async for part in read_parts(source(chunks), BOUNDARY):
        with part:
            total += len(part.view())
    return total


async def streamed(chunks: list[bytes]) -> int:
    total = 0
    async for part in iter_parts(source(chunks), BOUNDARY):
        async for data in part:
            total += len(data)
    return total


@pytest.mark.parametrize("chunk_size", [16 * 1024, 64 * 1024, 1024 * 1024])
@pytest.mark.parametrize("mode", ["read_parts", "iter_parts"])
def test_bench_multipart(mode: str, chunk_size: int) -> None:
    body = make_body()
    chunks = [body[i : i + chunk_size] for i in range(0, len(body), chunk_size)]
    run = spooled if mode == "read_parts" else streamed

    async def rounds() -> tuple[list[float], list[float]]:
        cpu, wall = [], []
        for _ in range(ROUNDS):
            c0, w0 = time.process_time(), time.perf_counter()
            total = await run(chunks)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
            assert total == PARTS * PART_SIZE
        return cpu, wall

    cpu, wall = asyncio.run(rounds())
    best = min(wall)
    print(
        f"\nmultipart {mode}, {PARTS} x {PART_SIZE // 1024} KB in {chunk_size // 1024} KiB chunks:"
        f" best {best * 1000:.1f} ms wall ({len(body) / best / 1e6:.0f} MB/s),"
        f" median {statistics.median(wall) * 1000:.1f} ms wall,"
        f" median {statistics.median(cpu) * 1000:.1f} ms CPU"
        f" ({len(body) / statistics.median(cpu) / 1e6:.0f} MB/s of CPU)"
    )
