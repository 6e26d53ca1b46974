"""Benchmark fixtures: PACS seeded with the bulk studies, and a results table.

Benchmarks run only with ``-m bench`` (``make bench``); they print ratios
against the reference tools measured in the same run and never assert on time.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers import DcmqrscpServer, OrthancServer, seed

BULK_STUDIES = int(os.environ.get("BENCH_BULK_STUDIES", "1000"))
#: dcmqrscp keeps at most 500 studies per storage area (lab pitfall 3).
DCMQRSCP_STUDIES = min(BULK_STUDIES, 450)


def timed(fn: Callable[[], Any], rounds: int) -> list[float]:
    """Wall seconds of each of ``rounds`` calls."""
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def p50(values: list[float]) -> float:
    return statistics.median(values)


class Report:
    """Rows printed as one table at the end of the session (and to BENCH_OUT)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(
        self, what: str, ours: float, reference: float, ref_name: str, unit: str = "ms"
    ) -> None:
        scale = 1000.0 if unit == "ms" else 1.0
        ratio = ours / reference if reference else float("nan")
        self.rows.append(
            (
                what,
                f"{ours * scale:.3f} {unit}",
                f"{reference * scale:.3f} {unit} ({ref_name})",
                f"{ratio:.2f}x",
            )
        )

    def render(self) -> str:
        lines = ["| what | ours | reference | ratio (ours/ref) |", "|---|---:|---:|---:|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.rows]
        return "\n".join(lines)


@pytest.fixture(scope="session")
def report() -> Iterator[Report]:
    rep = Report()
    yield rep
    text = rep.render()
    print("\n\n" + text + "\n")
    out = os.environ.get("BENCH_OUT")
    if out:
        Path(out).write_text(text + "\n")


@pytest.fixture(scope="session")
def bulk_manifest(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from gateway.demo.sample import write_bulk_studies

    return write_bulk_studies(tmp_path_factory.mktemp("bulk"), BULK_STUDIES)


@pytest.fixture(scope="session")
def bulk_orthanc(
    tmp_path_factory: pytest.TempPathFactory, bulk_manifest: Any
) -> Iterator[OrthancServer]:
    server = OrthancServer(workdir=tmp_path_factory.mktemp("bench-orthanc"))
    server.start()
    try:
        seed(server, bulk_manifest.instances)
        yield server
    finally:
        server.stop(graceful=False)


@pytest.fixture(scope="session")
def bulk_dcmqrscp(
    tmp_path_factory: pytest.TempPathFactory, bulk_manifest: Any
) -> Iterator[DcmqrscpServer]:
    server = DcmqrscpServer(workdir=tmp_path_factory.mktemp("bench-dcmqrscp"))
    server.start()
    try:
        seed(server, bulk_manifest.instances[:DCMQRSCP_STUDIES])
        yield server
    finally:
        server.stop(graceful=False)
