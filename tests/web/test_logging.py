"""Logs: JSON lines, the request id (from X-Request-ID or generated) on every record
of a request, one access line without patient data unless ``log_phi``, progress
lines for long retrieves, and ``log_format`` applied by the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from gateway.demo.sample import MR_PATIENT
from gateway.logging_setup import make_handler
from tests.peers import OrthancServer
from tests.peers.faults import FindStatusPeer
from tests.peers.gateway import GatewayServer
from tests.peers.ports import free_port
from tests.web.wado_support import GetScript, RetrievePeer

ROOT = Path(__file__).resolve().parents[2]
Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def json_logs() -> Iterator[Lines]:
    """Records of every logger, through the gateway's JSON handler, at INFO."""
    stream = io.StringIO()
    handler = make_handler("json", stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def lines() -> list[dict[str, Any]]:
        handler.flush()
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _access(lines: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    found = [x for x in lines if x["logger"] == "gateway.access" and x["request_id"] == request_id]
    assert len(found) == 1, (request_id, lines)
    return found[0]


def test_json_lines_and_request_id_from_the_client(
    orthanc: OrthancServer, json_logs: Lines
) -> None:
    with GatewayServer(orthanc.pacs_config()) as gw:
        r = requests.get(gw.url + "/studies", headers={"X-Request-ID": "trace-42/abc"}, timeout=30)
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "trace-42/abc"
    line = _access(json_logs(), "trace-42/abc")
    assert set(line) >= {"ts", "level", "logger", "msg", "request_id"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    assert line["level"] == "INFO"
    assert line["method"] == "GET"
    assert line["route"] == "/dicomweb/studies"
    assert line["status"] == 200
    assert line["bytes"] == len(r.content)
    assert 0 < line["duration_ms"] < 30_000
    assert line["msg"].startswith("GET /dicomweb/studies 200 ")


def test_request_id_generated_when_missing_or_unusable(
    orthanc: OrthancServer, json_logs: Lines
) -> None:
    with GatewayServer(orthanc.pacs_config()) as gw:
        plain = requests.get(gw.root + "/healthz", timeout=30)
        too_long = requests.get(
            gw.root + "/healthz", headers={"X-Request-ID": "x" * 129}, timeout=30
        )
        longest = requests.get(
            gw.root + "/healthz", headers={"X-Request-ID": "y" * 128}, timeout=30
        )
    ids = [r.headers["x-request-id"] for r in (plain, too_long)]
    for rid in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", rid), rid
    assert ids[0] != ids[1]
    assert longest.headers["x-request-id"] == "y" * 128
    lines = json_logs()
    for rid in [*ids, "y" * 128]:
        assert _access(lines, rid)["route"] == "/healthz"


def test_request_id_reaches_records_logged_below_the_web_layer(
    closed_port: Any, json_logs: Lines
) -> None:
    """The pool (dimse/) and the error mapping log under the request's id."""
    with GatewayServer(closed_port.pacs_config(), connect_timeout=1.0) as gw:
        r = requests.get(gw.url + "/studies", headers={"X-Request-ID": "failing-1"}, timeout=30)
    assert r.status_code == 502
    mine = [x for x in json_logs() if x["request_id"] == "failing-1"]
    loggers = {x["logger"] for x in mine}
    assert {"gateway.dimse.pool", "gateway.web.errors", "gateway.access"} <= loggers, mine
    assert _access(mine, "failing-1")["status"] == 502


def _qido_with_secrets(gw: GatewayServer) -> None:
    r = requests.get(
        gw.url + "/studies",
        params={"PatientName": "Secret*", "PatientID": "SecretID-7"},
        headers={"X-Request-ID": "phi-check"},
        timeout=30,
    )
    assert r.status_code in (200, 204)


def test_no_patient_data_in_logs_by_default(orthanc: OrthancServer, json_logs: Lines) -> None:
    with GatewayServer(orthanc.pacs_config()) as gw:
        _qido_with_secrets(gw)
    lines = json_logs()
    line = _access(lines, "phi-check")
    assert line["route"] == "/dicomweb/studies"
    assert "path" not in line
    assert "Secret" not in json.dumps(lines)


@pytest.mark.parametrize("log_phi", [False, True])
def test_pacs_failures_log_uids_only_with_log_phi(
    closed_port: Any, json_logs: Lines, log_phi: bool
) -> None:
    """A 5xx is logged at WARNING with the route template; the UIDs of the path
    (identifying) only with log_phi."""
    uid = "1.2.826.0.1.3680043.999.4242"
    with GatewayServer(closed_port.pacs_config(), connect_timeout=1.0, log_phi=log_phi) as gw:
        r = requests.get(f"{gw.url}/studies/{uid}/series/{uid}.1", timeout=30)
        assert r.status_code == 502, r.text
    warnings = [line for line in json_logs() if line["level"] == "WARNING"]
    assert any("-> 502" in line["msg"] for line in warnings), warnings
    logged = json.dumps(warnings)
    assert (uid in logged) is log_phi, logged
    if not log_phi:
        assert "/studies/{study}/series/{series}" in logged


@pytest.mark.parametrize("log_phi", [False, True])
def test_a_pacs_error_comment_reaches_the_client_and_the_log_only_with_log_phi(
    json_logs: Lines, log_phi: bool
) -> None:
    """A PACS's ErrorComment may quote a patient: the 502 body carries it (the
    client asked), a WARNING line only with log_phi."""
    comment = "no such patient Secret^Sally"
    with contextlib.ExitStack() as stack:
        peer = stack.enter_context(FindStatusPeer(0xC001, error_comment=comment))
        gw = stack.enter_context(GatewayServer(peer.pacs_config(), log_phi=log_phi))
        r = requests.get(gw.url + "/studies", timeout=30)
    assert r.status_code == 502, r.text
    assert comment in r.json()["detail"] and "0xC001" in r.json()["detail"]
    warnings = [line for line in json_logs() if line["level"] == "WARNING"]
    logged = json.dumps(warnings)
    assert "-> 502" in logged and "0xC001" in logged, warnings
    assert ("Secret^Sally" in logged) is log_phi, logged


def test_log_phi_logs_the_full_path_and_query(orthanc: OrthancServer, json_logs: Lines) -> None:
    with GatewayServer(orthanc.pacs_config(), log_phi=True) as gw:
        _qido_with_secrets(gw)
    line = _access(json_logs(), "phi-check")
    assert line["path"].startswith("/dicomweb/studies?")
    assert "PatientName=Secret" in line["path"]
    assert "Secret" in line["msg"]


def test_text_format_carries_the_request_id(orthanc: OrthancServer) -> None:
    stream = io.StringIO()
    handler = make_handler("text", stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with GatewayServer(orthanc.pacs_config()) as gw:
            requests.get(gw.root + "/healthz", headers={"X-Request-ID": "text-1"}, timeout=30)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = [x for x in stream.getvalue().splitlines() if "[text-1]" in x]
    assert len(lines) == 1, stream.getvalue()
    assert re.search(
        r" INFO gateway\.access \[text-1\]: GET /healthz 200 [\d.]+ ms \d+ B$", lines[0]
    )
    # Records outside any request say so.
    assert all(" [" in x for x in stream.getvalue().splitlines() if " gateway." in x)


# --------------------------------------------------------------------------- progress


@pytest.fixture
def mr_files(sample_manifest: Any) -> list[Path]:
    return [i.path for i in sample_manifest.instances if i.patient_id == MR_PATIENT.pid][:5]


def _slow_series(make_peer: Any, mr_files: list[Path], **settings: Any) -> list[dict[str, Any]]:
    """Retrieve a series from a PACS that sends one instance every 0.3 s; the
    progress records of ``gateway.services.retrieve``."""
    peer = make_peer(RetrievePeer(mr_files, [GetScript(delay=0.3)]))
    first = pydicom.dcmread(mr_files[0])
    study, series = first.StudyInstanceUID, first.SeriesInstanceUID
    stream = io.StringIO()
    handler = make_handler("json", stream)
    logger = logging.getLogger("gateway.services.retrieve")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with GatewayServer(peer.pacs_config(), **settings) as gw:
            r = requests.get(
                f"{gw.url}/studies/{study}/series/{series}",
                headers={"X-Request-ID": "slow-1"},
                timeout=60,
            )
            assert r.status_code == 200
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    records = [json.loads(x) for x in stream.getvalue().splitlines()]
    for record in records:
        assert record["retrieve_level"] == "SERIES"
        if settings.get("log_phi"):
            assert record["study_uid"] == study and record["series_uid"] == series
            assert series in record["msg"]
        else:  # UIDs identify: not logged by default
            assert series not in json.dumps(record) and study not in json.dumps(record)
    return records


@pytest.mark.parametrize("log_phi", [False, True])
def test_progress_lines_while_a_retrieve_runs(
    make_peer: Any, mr_files: list[Path], log_phi: bool
) -> None:
    records = _slow_series(make_peer, mr_files, progress_log_seconds=0.2, log_phi=log_phi)
    running = [x for x in records if not x["done"]]
    done = [x for x in records if x["done"]]
    assert len(running) >= 3, records  # about 1.5 s of retrieve, a line every 0.2 s
    assert [x["received"] for x in running] == sorted(x["received"] for x in running)
    assert all(x["expected"] == len(mr_files) for x in records), records
    assert all(x["request_id"] == "slow-1" for x in records)
    assert "instances" in running[-1]["msg"] and "MB/s" in running[-1]["msg"]
    assert len(done) == 1 and done[0]["received"] == len(mr_files)
    assert done[0]["mbytes"] > 0 and done[0]["mbytes_per_s"] > 0


def test_no_progress_lines_when_off(make_peer: Any, mr_files: list[Path]) -> None:
    assert _slow_series(make_peer, mr_files, progress_log_seconds=0.0) == []


# --------------------------------------------------------------------------- the CLI


def test_cli_serves_with_json_logs(orthanc: OrthancServer) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DICOMWEB_GATEWAY_LOG_FORMAT": "json",
        "DICOMWEB_GATEWAY_PORT": str(port),
        "DICOMWEB_GATEWAY_PACS": f"{orthanc.aet}@{orthanc.host}:{orthanc.port}",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.get(
                    f"http://127.0.0.1:{port}/healthz", headers={"X-Request-ID": "cli-1"}, timeout=2
                )
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.1)
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    lines = [json.loads(x) for x in err.splitlines() if x.strip()]  # every line is JSON
    assert any(x["logger"] == "hypercorn.error" for x in lines), err
    access = [x for x in lines if x["logger"] == "gateway.access"]
    assert [(x["request_id"], x["route"], x["status"]) for x in access][-1] == (
        "cli-1",
        "/healthz",
        200,
    )
