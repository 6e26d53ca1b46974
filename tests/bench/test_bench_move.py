"""C-MOVE throughput of the 40-slice demo CT series (about 21 MB), side by side:

- ours: ``MoveOperation`` on a fresh association into our ``StoreSCP`` +
  ``MoveMediator``, the consumer counting bytes (association setup included);
- reference: DCMTK ``movescu`` (a process per round) moving the same series into
  a running DCMTK ``storescp --ignore`` offering DCMTK's largest PDU (128 KB).

Both destinations are registered in a private Orthanc and dcmqrscp seeded with
the full-size demo set (the session PACS hold only 8 slices).  Printed, never
asserted (``-m bench``).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom.dsutils import encode

from gateway.dicom.part10 import read_part10
from gateway.dimse.move_mediator import MoveMediator
from gateway.dimse.movescu import RETRIEVE_BY_MOVE, MoveOperation
from gateway.dimse.requestor import Peer, Timeouts, associate
from gateway.dimse.storescp import StoreSCP
from tests.bench.conftest import Report
from tests.peers import DcmqrscpServer, OrthancServer, seed
from tests.peers.dcmtk import dcmtk_env, require_tool
from tests.peers.ports import free_port, port_is_open

pytestmark = pytest.mark.bench

ROUNDS = int(os.environ.get("BENCH_MOVE_ROUNDS", "7"))
OURS = "GATEWAY"
THEIRS = "DCMTKSCP"
CALLING = "BENCH"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from gateway.demo.sample import write_demo_studies

    return write_demo_studies(tmp_path_factory.mktemp("move-demo"), ct_slices=40)


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {OURS: free_port(), THEIRS: free_port()}


@pytest.fixture(scope="module", params=["orthanc", "dcmqrscp"])
def move_pacs(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    demo: Any,
    ports: dict[str, int],
) -> Iterator[OrthancServer | DcmqrscpServer]:
    destinations = {aet: ("127.0.0.1", port) for aet, port in ports.items()}
    workdir = tmp_path_factory.mktemp(f"move-{request.param}")
    server: OrthancServer | DcmqrscpServer
    if request.param == "orthanc":
        server = OrthancServer(workdir=workdir, move_destinations=destinations)
    else:
        server = DcmqrscpServer(workdir=workdir, move_destinations=destinations)
    server.start()
    try:
        seed(server, demo.instances)
        yield server
    finally:
        server.stop(graceful=False)


@pytest.fixture(scope="module")
def dcmtk_storescp(
    tmp_path_factory: pytest.TempPathFactory, ports: dict[str, int]
) -> Iterator[None]:
    cwd = tmp_path_factory.mktemp("storescp")
    proc = subprocess.Popen(
        [
            require_tool("storescp"),
            "--ignore",
            "--max-pdu",
            "131072",
            "-aet",
            THEIRS,
            str(ports[THEIRS]),
        ],
        env=dcmtk_env(),
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_is_open("127.0.0.1", ports[THEIRS]):
            if time.monotonic() > deadline:
                raise RuntimeError("storescp did not start")
            time.sleep(0.02)
        yield
    finally:
        proc.kill()
        proc.wait(10)


def _ct_series(demo: Any) -> list[Any]:
    return max(demo.series().values(), key=len)


def _identifier(study: str, series: str) -> Any:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series

    def encoded(transfer_syntax: str) -> bytes:
        data = encode(ds, transfer_syntax == ImplicitVRLittleEndian, True)
        assert data is not None
        return bytes(data)

    return encoded


def _movescu(pacs: Any, study: str, series: str) -> float:
    args = [
        require_tool("movescu"),
        "-v",
        "-S",
        "-aet",
        CALLING,
        "-aec",
        pacs.aet,
        "-aem",
        THEIRS,
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"StudyInstanceUID={study}",
        "-k",
        f"SeriesInstanceUID={series}",
        pacs.host,
        str(pacs.port),
    ]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=dcmtk_env(), check=False)
    elapsed = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or "Final Move Response (Success)" not in output:
        raise RuntimeError(f"movescu failed:\n{output[-2000:]}")
    return elapsed


def test_bench_move_ct_series(
    move_pacs: Any, dcmtk_storescp: None, demo: Any, ports: dict[str, int], report: Report
) -> None:
    series = _ct_series(demo)
    study_uid, series_uid = series[0].study_uid, series[0].series_uid
    total = 0
    for inst in series:
        part10 = read_part10(Path(inst.path).read_bytes())
        total += len(part10.data) - part10.offset
    identifier = _identifier(study_uid, series_uid)
    timeouts = Timeouts(connect=5, accept=5, dimse=30)

    async def ours_once(mediator: MoveMediator) -> float:
        start = time.perf_counter()
        assoc = await associate(
            Peer(move_pacs.aet, move_pacs.host, move_pacs.port),
            CALLING,
            RETRIEVE_BY_MOVE,
            timeouts=timeouts,
        )
        received = 0
        op = MoveOperation(
            assoc,
            identifier,
            OURS,
            mediator,
            timeout=30,
            study_uid=study_uid,
            series_uid=series_uid,
        )
        async with op:
            async for inst in op:
                received += len(inst.dataset)
        await assoc.release()
        elapsed = time.perf_counter() - start
        assert received == total and op.counts.completed == len(series)
        return elapsed

    async def main() -> tuple[list[float], list[float]]:
        mediator = MoveMediator()
        ours: list[float] = []
        theirs: list[float] = []
        async with StoreSCP(OURS, "127.0.0.1", ports[OURS], mediator.handle_store):
            await ours_once(mediator)  # warm-up: PACS caches, our imports
            await asyncio.to_thread(_movescu, move_pacs, study_uid, series_uid)
            for _ in range(ROUNDS):  # interleaved, so drift hits both alike
                ours.append(await ours_once(mediator))
                theirs.append(await asyncio.to_thread(_movescu, move_pacs, study_uid, series_uid))
        return ours, theirs

    ours, theirs = asyncio.run(main())
    mb = total / 1e6
    ours_rate = mb / statistics.median(ours)
    theirs_rate = mb / statistics.median(theirs)
    what = f"C-MOVE CT series {len(series)} x {total // len(series) // 1024} KB ({move_pacs.kind})"
    report.add(what, ours_rate, theirs_rate, "movescu -> storescp", unit="MB/s")
    print(
        f"\n{what}: ours {ours_rate:.1f} MB/s (median {statistics.median(ours) * 1000:.1f} ms), "
        f"DCMTK movescu -> storescp {theirs_rate:.1f} MB/s "
        f"(median {statistics.median(theirs) * 1000:.1f} ms), ratio {ours_rate / theirs_rate:.2f}"
    )
