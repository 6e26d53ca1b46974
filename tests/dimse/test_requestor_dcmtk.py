"""Interop with DCMTK: 100 C-ECHOs over one association to ``storescp``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.dimse.contexts import QUERY, STUDY_ROOT_FIND, VERIFICATION
from gateway.dimse.echoscu import c_echo
from gateway.dimse.errors import PeerUnreachable
from gateway.dimse.requestor import Association, Peer, associate
from gateway.dimse.upper_layer import State
from tests.dimse.dimse_support import CALLING_AET, TIMEOUTS, run
from tests.peers.ports import free_port

# The Debian binary: pynetdicom installs a Python ``storescp`` that may shadow it on PATH.
STORESCP = Path("/usr/bin/storescp")


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Peer]:
    if not STORESCP.exists():
        pytest.skip("DCMTK storescp is not installed (apt-get install dcmtk)")
    port = free_port()
    log = (tmp_path / "storescp.log").open("wb")
    proc = subprocess.Popen(
        [str(STORESCP), "--ignore", "-aet", "STORESCP", str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},  # DCMTK leaves Nagle on without it
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        yield Peer("STORESCP", "127.0.0.1", port)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


async def connect_when_listening(peer: Peer, within: float = 10.0) -> Association:
    """storescp needs a moment to bind; retry only while nothing listens."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await associate(peer, CALLING_AET, QUERY, timeouts=TIMEOUTS)
        except PeerUnreachable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


def test_hundred_echoes_over_one_association_to_storescp(storescp: Peer) -> None:
    async def main() -> tuple[Association, float]:
        assoc = await connect_when_listening(storescp)
        assert assoc.has_context(VERIFICATION)
        assert not assoc.has_context(STUDY_ROOT_FIND)  # storescp is no query SCP
        started = time.monotonic()
        for _ in range(100):
            await c_echo(assoc, timeout=10)
        elapsed = time.monotonic() - started
        await assoc.release()
        return assoc, elapsed

    assoc, elapsed = run(main())
    assert assoc.machine.state is State.CLOSED
    # 100 round trips on loopback take milliseconds; a delayed-ACK stall
    # (about 40 ms each, see requestor.py) would take 4 s.
    assert elapsed < 2.0, f"100 C-ECHOs took {elapsed:.2f} s"
