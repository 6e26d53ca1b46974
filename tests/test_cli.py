"""The command line: help text, echo against a real PACS, and configuration errors."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from gateway.cli import build_parser, main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


def test_help_explains_each_command_and_option() -> None:
    top = _run("--help")
    assert top.returncode == 0
    for command in ("serve", "echo", "demo"):
        assert command in top.stdout
    serve_help = build_parser().parse_known_args(["serve"])[0]
    assert serve_help.command == "serve"
    sub = _run("serve", "--help")
    for option in ("--pacs", "--calling-aet", "--host", "--port", "--base-path", "--config"):
        assert option in sub.stdout
    assert "AE title the gateway uses" in sub.stdout


def test_echo_real_pacs(orthanc: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["echo", "--pacs", f"{orthanc.aet}@{orthanc.host}:{orthanc.port}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "answered C-ECHO" in out


def test_echo_unreachable_exits_1(closed_port: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["echo", "--pacs", f"{closed_port.aet}@{closed_port.host}:{closed_port.port}"])
    assert code == 1
    assert "FAILED" in capsys.readouterr().out


def test_no_pacs_and_bad_config_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DICOMWEB_GATEWAY_PACS", raising=False)
    assert main(["echo"]) == 2
    assert main(["echo", "--pacs", "not-a-pacs"]) == 2


def test_hypercorn_reads_request_bodies_a_mebibyte_at_a_time() -> None:
    """``serve`` raises Hypercorn's read size (a module constant, no setting): if a
    Hypercorn upgrade renames or changes it, this says so instead of the gain
    vanishing silently (docs/benchmarks.md, issue 4)."""
    import hypercorn.asyncio.tcp_server as tcp_server

    from gateway.cli import read_larger_chunks

    read_larger_chunks()
    assert tcp_server.MAX_RECV == 1 << 20
