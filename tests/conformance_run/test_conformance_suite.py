"""The conformance suite (``conformance/``) against the gateway, in CI (issue 6).

Each PACS is a fresh one (the suite stores its fixture set by STOW-RS and must
not disturb the session PACS other tests count on).  Every item must pass but
those listed in ``KNOWN_GAPS`` (tests/peers/conformance_targets.py) with the
reason, which are all limitations of the PACS; the list is exact both ways, so
a fix that makes one pass shows up as a failure here until the list is updated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance_report import run_suite
from tests.peers.common import need
from tests.peers.conformance_targets import KNOWN_GAPS, gateway_target
from tests.peers.dcmqrscp import DcmqrscpServer, dcmqrscp_binary
from tests.peers.orthanc import OrthancServer, orthanc_binary


@contextlib.contextmanager
def _fresh(kind: str, workdir: Path) -> Iterator[Any]:
    server: Any = (
        OrthancServer(workdir=workdir) if kind == "orthanc" else DcmqrscpServer(workdir=workdir)
    )
    server.start()
    try:
        yield server
    finally:
        server.stop(graceful=False)


@pytest.mark.parametrize("kind", ["orthanc", "dcmqrscp"])
def test_gateway_passes_the_conformance_suite(kind: str, tmp_path: Path) -> None:
    # Fails (rather than skips) in CI when the PACS is missing, like the session fixtures.
    binary = orthanc_binary() if kind == "orthanc" else dcmqrscp_binary()
    need(binary is not None, kind, "apt-get install orthanc orthanc-dicomweb dcmtk")
    with _fresh(kind, tmp_path / kind) as pacs, gateway_target(pacs, kind) as args:
        report = run_suite(args, tmp_path / "report.json", f"gateway + {kind}")
    rows = {row["item"]: row for row in report["items"]}
    summary = "\n".join(f"{r['item']} {r['result']}: {r['detail']}" for r in rows.values())

    untested = [item for item, row in rows.items() if row["result"] == "no test"]
    assert not untested, f"checklist items without a test: {untested}"
    gaps = {item for item, row in rows.items() if row["result"] != "pass"}
    assert gaps == set(KNOWN_GAPS[kind]), (
        f"items not passed: {sorted(gaps)}, known PACS limitations: "
        f"{sorted(KNOWN_GAPS[kind])}\n{summary}"
    )
