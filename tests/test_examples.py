"""The examples work: each Python example and every curl recipe of examples/curl.md runs
against a real gateway in front of the session's Orthanc, and their output is checked.

The Python examples run as subprocesses (as a user would run them). The curl recipes
are the ```sh blocks of curl.md: the first block sets the variables (the demo's base URL
and UIDs); the test checks those UIDs are the demo data's, puts the test gateway's URL
in their place, and runs each later block with bash, curl wrapped so that any HTTP
error fails the block and every request's status is reported.

What is stored (STOW-RS) is always an instance Orthanc already has: the session's
Orthanc replaces it with an identical copy, and other tests see no change.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from gateway.config import Settings
from tests.peers import OrthancServer
from tests.peers.common import need
from tests.peers.gateway import GatewayServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CURL_MD = EXAMPLES / "curl.md"
SH_BLOCK = re.compile(r"^## ([^\n]+)$|^```sh\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    """(id, code) of every ```sh block, the id from the section it is in."""
    out, section = [], "setup"
    for m in SH_BLOCK.finditer(CURL_MD.read_text()):
        if m.group(1):
            section = re.sub(r"\W+", "-", m.group(1).split("(")[0].strip()).strip("-")
        else:
            out.append((f"{len(out):02d}-{section}", m.group(2)))
    return out


BLOCK_IDS, BLOCKS = zip(*_blocks(), strict=True)
# Every curl prints its status and URL to stderr; --fail-with-body turns >= 400 into an error.
CURL_WRAPPER = (
    "set -euo pipefail\n"
    "curl() { command curl --fail-with-body "
    "-w '%{stderr}HTTP %{http_code} %{method} %{url_effective}\\n' \"$@\"; }\n"
)


@pytest.fixture(scope="module")
def gateway(orthanc: OrthancServer) -> Iterator[GatewayServer]:
    with GatewayServer(orthanc.pacs_config()) as gw:
        yield gw


@pytest.fixture(scope="module")
def uids(orthanc: OrthancServer) -> dict[str, str]:
    """The UIDs curl.md names, from the seeded demo data (CT study, 20-frame instance)."""
    manifest = orthanc.manifest
    ct = sorted(
        (i for i in manifest.instances if i.patient_name == "Doe^Jane^Marie"),
        key=lambda i: [int(p) for p in i.sop_uid.split(".")],
    )[0]
    mf = next(i for i in manifest.instances if i.number_of_frames == 20)
    return {
        "STUDY": ct.study_uid,
        "SERIES": ct.series_uid,
        "INSTANCE": ct.sop_uid,
        "MF_STUDY": mf.study_uid,
        "MF_SERIES": mf.series_uid,
        "MF_INSTANCE": mf.sop_uid,
    }


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


# --------------------------------------------------------------------------- Python


def test_requests_client(gateway: GatewayServer, orthanc: OrthancServer, tmp_path: Path) -> None:
    mr = [i for i in orthanc.manifest.instances if i.patient_name == "Smith^John"]
    upload = tmp_path / "upload"
    upload.mkdir()
    for inst in mr:
        shutil.copy(inst.path, upload / inst.path.name)
    (upload / "notes.txt").write_text("not DICOM: skipped\n")
    out = tmp_path / "out"

    result = _run(
        EXAMPLES / "requests_client.py",
        gateway.url,
        "--upload",
        upload,
        "--patient",
        "Smith*",
        "--out",
        out,
        cwd=tmp_path,
    )
    lines = result.stdout.splitlines()
    assert f"STOW-RS: HTTP 200, {len(mr)} of {len(mr)} stored, 0 failed" in lines
    assert "QIDO-RS: 1 studies" in lines
    study = mr[0].study_uid
    assert any(line.split()[:2] == [study, "Smith^John"] for line in lines), lines
    assert f"WADO-RS: study {study}: wrote {len(mr)} instances to {out}" in lines
    written = {p.stem: pydicom.dcmread(p) for p in out.glob("*.dcm")}
    assert set(written) == {i.sop_uid for i in mr}
    for sop, ds in written.items():
        assert ds.SOPInstanceUID == sop and ds.StudyInstanceUID == study
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)


def test_dicomweb_client_usage_multiframe(gateway: GatewayServer, tmp_path: Path) -> None:
    result = _run(
        EXAMPLES / "dicomweb_client_usage.py",
        gateway.url,
        "--patient-id",
        "DEMO-0003",
        "--out",
        tmp_path / "out",
        cwd=tmp_path,
    )
    lines = result.stdout.splitlines()
    for expected in (
        "search_for_studies: 1 studies",
        "search_for_series: 1 series",
        "retrieve_series_metadata: 1 instances",
        "retrieve_series: 1 datasets",
        "retrieve_instance_frames [1, 2]: 2 frames (32768 bytes, 32768 bytes)",
        "store_instances: 1 stored, 0 failed",
    ):
        assert expected in lines, result.stdout
    (dcm,) = (tmp_path / "out").glob("*.dcm")
    assert int(pydicom.dcmread(dcm).NumberOfFrames) == 20
    assert (tmp_path / "out" / "frame1.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_dicomweb_client_usage_ct(gateway: GatewayServer, tmp_path: Path) -> None:
    result = _run(
        EXAMPLES / "dicomweb_client_usage.py",
        gateway.url,
        "--patient-id",
        "DEMO-0001",
        "--out",
        tmp_path / "out",
        "--no-store",
        cwd=tmp_path,
    )
    assert "retrieve_instance_frames [1]: 1 frames (524288 bytes)" in result.stdout
    assert "store_instances" not in result.stdout
    jpeg = (tmp_path / "out" / "instance.jpg").read_bytes()
    assert jpeg.startswith(b"\xff\xd8") and "retrieve_instance_rendered: JPEG" in result.stdout


def test_stow_upload(gateway: GatewayServer, orthanc: OrthancServer, tmp_path: Path) -> None:
    ct = [i for i in orthanc.manifest.instances if i.patient_name == "Doe^Jane^Marie"][:3]
    for inst in ct:
        shutil.copy(inst.path, tmp_path / inst.path.name)
    result = _run(EXAMPLES / "stow_upload.py", gateway.url, tmp_path, "--batch", "2", cwd=tmp_path)
    assert result.stdout.splitlines() == ["200: 2 of 2 stored", "200: 1 of 1 stored"]


def test_python_examples_take_the_base_url() -> None:
    for example in EXAMPLES.glob("*.py"):
        text = example.read_text()
        assert "def main(argv: list[str] | None = None) -> int:" in text, example.name
        assert "argparse" in text and '"base_url"' in text, example.name


# --------------------------------------------------------------------------- curl.md


def _variables() -> dict[str, str]:
    out = {}
    for line in BLOCKS[0].splitlines():
        m = re.match(r"^([A-Z_]+)=(\S+)", line)
        assert m, f"the first block of curl.md sets variables only: {line!r}"
        out[m.group(1)] = m.group(2)
    return out


def test_curl_md_variables_are_the_demo() -> None:
    """Copied as they are, the recipes work against `dicomweb-gateway demo`."""
    variables = _variables()
    defaults = Settings()
    root = f"http://{defaults.host}:{defaults.port}"
    assert variables["ROOT"] == root
    assert variables["DICOMWEB"] == root + defaults.base_path
    assert set(variables) == {"DICOMWEB", "ROOT", "STUDY", "SERIES", "INSTANCE"} | {
        "MF_STUDY",
        "MF_SERIES",
        "MF_INSTANCE",
    }


def test_curl_md_uids_are_the_seeded_ones(uids: dict[str, str]) -> None:
    # The demo and the test data come from the same deterministic generator (seed 1).
    variables = _variables()
    assert {k: variables[k] for k in uids} == uids


@pytest.mark.parametrize("index", range(1, len(BLOCKS)), ids=BLOCK_IDS[1:])
def test_curl_recipe(
    index: int, gateway: GatewayServer, uids: dict[str, str], tmp_path: Path
) -> None:
    need(shutil.which("curl") is not None, "curl", "apt-get install curl")
    values = {"DICOMWEB": gateway.url, "ROOT": gateway.root, **uids}
    block = BLOCKS[index]
    result = _run_block(block, values, tmp_path)
    assert result.returncode == 0, f"{block}\n--- stdout\n{result.stdout[-3000:]}\n" + (
        f"--- stderr\n{result.stderr[-3000:]}"
    )
    statuses = re.findall(r"^HTTP (\d{3}) (\S+) (\S+)$", result.stderr, re.M)
    invocations = len(re.findall(r"^\s*curl\s", block, re.M))
    assert invocations >= 1 and len(statuses) == invocations, result.stderr
    for code, method, url in statuses:
        assert 200 <= int(code) < 300, (code, method, url)
        assert url.startswith(gateway.root), url


def _run_block(block: str, values: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    variables = "".join(f"{k}={v}\n" for k, v in values.items())
    return subprocess.run(
        ["bash", "-c", CURL_WRAPPER + variables + block],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_curl_harness_catches_http_errors(
    gateway: GatewayServer, uids: dict[str, str], tmp_path: Path
) -> None:
    """A recipe whose request fails (here a 404) fails its test."""
    values = {"DICOMWEB": gateway.url, "ROOT": gateway.root, **uids}
    broken = BLOCKS[4].replace("$STUDY", "$STUDY.999")  # WADO-RS of a study that is not there
    assert broken != BLOCKS[4]
    result = _run_block(broken, values, tmp_path)
    assert result.returncode != 0
    assert re.search(r"^HTTP 404 GET ", result.stderr, re.M), result.stderr


def test_curl_md_covers_every_service() -> None:
    text = "\n".join(BLOCKS)
    for needle in (
        "/studies?",
        "/series?",
        "/instances?",
        "/studies/$STUDY/series?",
        "/studies/$STUDY/instances?",
        "/series/$SERIES/instances?",
        "includefield",
        "limit=",
        "transfer-syntax=",
        "/metadata",
        "/frames/",
        "/bulk/",
        "/rendered",
        "/thumbnail",
        "window=",
        "viewport=",
        "-F 'file=@",
        "/wado?requestType=WADO",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert needle in text, needle


# --------------------------------------------------------------------------- OHIF


def test_ohif_app_config() -> None:
    node = shutil.which("node")
    need(node is not None, "Node.js", "apt-get install nodejs")
    assert node is not None
    script = (
        "globalThis.window = {};"
        f"require({json.dumps(str(EXAMPLES / 'ohif' / 'app-config.js'))});"
        "process.stdout.write(JSON.stringify(window.config));"
    )
    result = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    (source,) = config["dataSources"]
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    assert config["defaultDataSourceName"] == source["sourceName"]
    c = source["configuration"]
    defaults = Settings()
    root = f"http://{defaults.host}:{defaults.port}"
    assert c["qidoRoot"] == c["wadoRoot"] == root + defaults.base_path
    assert c["wadoUriRoot"] == root + "/wado"
    expected = {
        "qidoSupportsIncludeField": True,
        "imageRendering": "wadors",
        "thumbnailRendering": "wadors",
        "enableStudyLazyLoad": True,
        "supportsFuzzyMatching": False,
        "supportsWildcard": True,
        "omitQuotationForMultipartRequest": True,
    }
    assert {k: c[k] for k in expected} == expected
    assert c["bulkDataURI"]["enabled"] is True
    text = (EXAMPLES / "ohif" / "app-config.js").read_text()
    assert "DICOMWEB_GATEWAY_CORS_ORIGINS" in text and "cors_origins" in text
