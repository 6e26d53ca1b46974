"""STOW-RS throughput and memory, side by side with DCMTK (``-m bench``; printed, never asserted).

- Time: 100 generated CT instances of 512 KB (the demo CT series at 100
  slices, about 52 MB) uploaded in one STOW-RS request (requests with
  requests-toolbelt's MultipartEncoder streaming the files, in 1 MB blocks, no
  ``Expect``) to the gateway running as its own process (``python -m gateway
  serve``), into Orthanc and into dcmqrscp; and the same body sent by ``curl``
  from one prepared file (``-T``; untimed to build, as storescu's files are), a
  client that costs little CPU on the cores the gateway and the PACS share;
  reference: DCMTK ``storescu`` of the
  same files into the same PACS (one association); and both into DCMTK
  ``storescp --ignore``, which keeps nothing, to show the gateway's own cost
  without a PACS's.  Every round stores into a fresh PACS, the gateway round and
  the storescu round alternate, 3 rounds each; the table has the medians.  The
  gateway is started before its round and stopped after it (its start is not
  timed; its first associations are).  dcmqrscp is timed with the default
  ``stow_concurrency`` (4) and with 1: with several associations dcmqrscp 3.6.7
  now and then garbles or loses an instance (tests/web/test_stow_pacs.py,
  ``start_gateway``), so failures are counted and printed.
- Memory: the gateway process's peak RSS (``VmHWM``) after a ~1 GB STOW-RS
  (2,000 instances of 512 KB, generated while they are sent: the client never
  holds more than one) into DCMTK ``storescp --fork --ignore`` (accepts and
  drops everything: the cheapest sink).

``BENCH_STOW_ROUNDS``, ``BENCH_STOW_BIG`` (instances of the memory run) and
``BENCH_STOW_BLOCK`` (the client's block size) change the sizes.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from requests.adapters import HTTPAdapter
from requests_toolbelt import MultipartEncoder  # type: ignore[import-untyped]

from tests.bench.conftest import Report
from tests.peers import DcmqrscpServer, OrthancServer
from tests.peers.dcmtk import dcmtk_env, findscu, require_tool, run_tool
from tests.peers.ports import free_port, port_is_open

pytestmark = pytest.mark.bench

ROUNDS = int(os.environ.get("BENCH_STOW_ROUNDS", "3"))
BIG_COUNT = int(os.environ.get("BENCH_STOW_BIG", "2000"))
BLOCK = int(os.environ.get("BENCH_STOW_BLOCK", str(1 << 20)))
ROOT = Path(__file__).resolve().parents[2]
DICOM = "application/dicom"


# --------------------------------------------------------------------------- helpers


class GatewayProcess:
    """``python -m gateway serve`` in front of one PACS, on a free port."""

    def __init__(self, pacs: Any, workdir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/dicomweb"
        self.log = workdir / f"gateway-{self.port}.log"
        environment = dict(
            os.environ, **{f"DICOMWEB_GATEWAY_{k.upper()}": v for k, v in env.items()}
        )
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "serve",
                    "--pacs",
                    f"{pacs.aet}@{pacs.host}:{pacs.port}",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "WARNING",
                ],
                cwd=ROOT,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).ok:
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway did not start:\n{self.log.read_text()[-3000:]}")

    def status(self) -> dict[str, str]:
        """/proc/<pid>/status as a dict (VmRSS, VmHWM ...)."""
        out = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            out[key] = value.strip()
        return out

    def peak_rss_mb(self) -> float:
        return int(self.status()["VmHWM"].split()[0]) / 1024

    def rss_mb(self) -> float:
        return int(self.status()["VmRSS"].split()[0]) / 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class _LargeBlocks(HTTPAdapter):
    """urllib3 reads a streamed body in 16 KB blocks, which costs the client
    more CPU than the gateway needs for the same bytes; 1 MB blocks, like
    curl's buffers, keep the client out of the measurement."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["blocksize"] = BLOCK
        super().init_poolmanager(*args, **kwargs)


def session() -> requests.Session:
    s = requests.Session()
    s.mount("http://", _LargeBlocks())
    return s


def stow_files(url: str, files: list[Path]) -> requests.Response:
    """One STOW-RS request, the files streamed by MultipartEncoder."""
    with ExitStack() as stack, session() as http:
        fields = [
            (f"f{n}", (path.name, stack.enter_context(path.open("rb")), DICOM))
            for n, path in enumerate(files)
        ]
        encoder = MultipartEncoder(fields=fields)
        headers = {
            "Content-Type": f'multipart/related; type="{DICOM}"; boundary={encoder.boundary_value}',
            "Accept": "application/dicom+json",
        }
        return http.post(f"{url}/studies", data=encoder, headers=headers, timeout=600)


def write_body(files: list[Path], out: Path) -> str:
    """The multipart body of ``files`` in one file (for curl), and its boundary."""
    boundary = "stow-bench-" + os.urandom(12).hex()
    with out.open("wb") as body:
        for path in files:
            body.write(f"--{boundary}\r\nContent-Type: {DICOM}\r\n\r\n".encode())
            body.write(path.read_bytes())
            body.write(b"\r\n")
        body.write(f"--{boundary}--\r\n".encode())
    return boundary


def stow_curl(url: str, body: Path, boundary: str) -> tuple[int, dict[str, Any]]:
    """One STOW-RS request by curl streaming ``body`` from its file (``-T``): the
    HTTP counterpart of storescu sending its files, with a client that costs
    little CPU on the shared cores."""
    proc = subprocess.run(
        [
            "curl", "-s", "-X", "POST", "-T", str(body), "-H", "Expect:",
            "-H", f'Content-Type: multipart/related; type="{DICOM}"; boundary={boundary}',
            "-H", "Accept: application/dicom+json", "-w", "\n%{http_code}", f"{url}/studies",
        ],
        capture_output=True,
        check=True,
        timeout=600,
    )  # fmt: skip
    text, _, code = proc.stdout.decode().rpartition("\n")
    return int(code), json.loads(text) if text.strip() else {}


def outcome(response: requests.Response) -> tuple[int, int]:
    """(instances stored, instances failed) of a STOW-RS response."""
    return outcome_of(response.json() if response.content else {})


def outcome_of(body: dict[str, Any]) -> tuple[int, int]:
    """(instances stored, instances failed) of a STOW-RS response body."""
    stored = len(body.get("00081199", {}).get("Value", []))
    failed = len(body.get("00081198", {}).get("Value", []))
    return stored, failed


def count_in_pacs(pacs: Any, study_uid: str) -> int:
    """Instances of the study the PACS answers a findscu at IMAGE level with."""
    result = findscu(
        pacs.host,
        pacs.port,
        pacs.aet,
        {"StudyInstanceUID": study_uid, "SeriesInstanceUID": "", "SOPInstanceUID": ""},
        level="IMAGE",
        timeout=120,
    )
    return len(result.matches)


def storescu_files(pacs: Any, files: list[Path]) -> None:
    run_tool(
        "storescu",
        ["-aec", pacs.aet, "-to", "30", "-td", "60", pacs.host, str(pacs.port), *map(str, files)],
        timeout=600,
        check=True,
    )


def new_pacs(kind: str, workdir: Path) -> Any:
    if kind == "sink":
        return Sink()
    server: Any = (
        OrthancServer(workdir=workdir) if kind == "orthanc" else DcmqrscpServer(workdir=workdir)
    )
    return server.start()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Path]]:
    """The demo CT series at 100 slices of 512 x 512 x 16 bit (about 513 KB each)."""
    from gateway.demo.sample import write_demo_studies

    manifest = write_demo_studies(tmp_path_factory.mktemp("stow-ct"), ct_slices=100)
    study = manifest.instances[0].study_uid
    files = [i.path for i in manifest.instances if i.study_uid == study]
    assert len(files) == 100
    return study, files


# --------------------------------------------------------------------------- time


@pytest.mark.parametrize(
    ("kind", "settings"),
    [
        ("orthanc", {}),
        ("dcmqrscp", {}),
        ("dcmqrscp", {"stow_concurrency": "1"}),
        ("sink", {}),
    ],
    ids=["orthanc", "dcmqrscp", "dcmqrscp-concurrency-1", "storescp-ignore"],
)
def test_bench_stow_vs_storescu(
    kind: str,
    settings: dict[str, str],
    ct_series: tuple[str, list[Path]],
    tmp_path: Path,
    report: Report,
) -> None:
    study, files = ct_series
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    body = tmp_path / "body.multipart"
    boundary = write_body(files, body)
    ours: list[float] = []
    by_curl: list[float] = []
    theirs: list[float] = []
    notes: list[str] = []

    def gateway_round(n: int, client: str) -> None:
        pacs = new_pacs(kind, tmp_path / f"{kind}-gw-{client}-{n}")
        gateway = GatewayProcess(pacs, tmp_path, **settings)
        try:
            start = time.perf_counter()
            if client == "curl":
                status, answer = stow_curl(gateway.url, body, boundary)
                by_curl.append(time.perf_counter() - start)
            else:
                response = stow_files(gateway.url, files)
                ours.append(time.perf_counter() - start)
                status, answer = response.status_code, response.json() if response.content else {}
            stored, failed = outcome_of(answer)
            kept = stored if kind == "sink" else count_in_pacs(pacs, study)
            if status != 200 or kept != 100:
                notes.append(
                    f"round {n} ({client}): HTTP {status}, {stored} stored, "
                    f"{failed} failed, {kept} in the PACS"
                )
        finally:
            gateway.stop()
            pacs.stop(graceful=False)

    def storescu_round(n: int) -> None:
        pacs = new_pacs(kind, tmp_path / f"{kind}-scu-{n}")
        try:
            start = time.perf_counter()
            storescu_files(pacs, files)
            theirs.append(time.perf_counter() - start)
            kept = 100 if kind == "sink" else count_in_pacs(pacs, study)
            if kept != 100:
                notes.append(f"storescu round {n}: {kept} in the PACS")
        finally:
            pacs.stop(graceful=False)

    rounds: list[Callable[[int], None]] = [
        lambda n: gateway_round(n, "requests"),
        storescu_round,
        lambda n: gateway_round(n, "curl"),
    ]
    for n in range(ROUNDS):
        for run in rounds if n % 2 == 0 else reversed(rounds):
            run(n)

    target = "storescp --ignore" if kind == "sink" else kind
    label = f"STOW-RS 100 x 512 KB into {target}" + (
        f" (stow_concurrency={settings['stow_concurrency']})" if settings else ""
    )
    report.add(label, statistics.median(ours), statistics.median(theirs), "storescu", unit="s")
    report.add(
        f"{label}, curl as the client",
        statistics.median(by_curl),
        statistics.median(theirs),
        "storescu",
        unit="s",
    )
    print(
        f"\n{label}: gateway {[f'{t:.3f}' for t in ours]} s, storescu "
        f"{[f'{t:.3f}' for t in theirs]} s; medians {statistics.median(ours):.3f} s "
        f"({megabytes / statistics.median(ours):.0f} MB/s) vs {statistics.median(theirs):.3f} s "
        f"({megabytes / statistics.median(theirs):.0f} MB/s), ratio "
        f"{statistics.median(ours) / statistics.median(theirs):.2f}x; curl as the client "
        f"{[f'{t:.3f}' for t in by_curl]} s, ratio "
        f"{statistics.median(by_curl) / statistics.median(theirs):.2f}x"
    )
    for note in notes:
        print("  " + note)


# --------------------------------------------------------------------------- memory


class Sink:
    """DCMTK storescp --fork --ignore: accepts every instance, keeps none."""

    aet = "SINK"
    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                require_tool("storescp"),
                "--fork",
                "--ignore",
                "-aet",
                self.aet,
                "-pdu",
                "131072",
                str(self.port),
            ],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not port_is_open(self.host, self.port):
            if time.monotonic() > deadline:
                raise RuntimeError("storescp did not start")
            time.sleep(0.05)

    def stop(self, graceful: bool = False) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 15)
        self.process.wait(10)


def generated_body(template: bytes, uid: str, count: int, boundary: str) -> Iterator[bytes]:
    """``count`` parts: ``template`` with its SOP Instance UID ``uid`` (whose last
    component is 1000000) replaced by one of the same length per part, made
    while they are sent (the client holds one at a time)."""
    stem = uid.rsplit(".", 1)[0]
    head = f"--{boundary}\r\nContent-Type: {DICOM}\r\n\r\n".encode()
    for n in range(count):
        fresh = f"{stem}.{1_000_000 + n}".encode()
        yield head + template.replace(uid.encode(), fresh) + b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def test_bench_stow_peak_rss(
    ct_series: tuple[str, list[Path]], tmp_path: Path, report: Report
) -> None:
    _study, files = ct_series
    ds = pydicom.dcmread(files[0])
    uid = f"{ds.SOPInstanceUID}.9.1000000"
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    out = tmp_path / "template.dcm"
    ds.save_as(out, enforce_file_format=True)
    template = out.read_bytes()
    boundary = "bench-stow-peak-rss-boundary"

    sink = Sink()
    gateway = GatewayProcess(sink, tmp_path)
    try:
        warm = stow_files(gateway.url, files[:4])
        assert warm.status_code == 200, warm.text[:500]
        before = gateway.peak_rss_mb()
        start = time.perf_counter()
        with session() as http:
            response = http.post(
                f"{gateway.url}/studies",
                data=generated_body(template, uid, BIG_COUNT, boundary),
                headers={
                    "Content-Type": f'multipart/related; type="{DICOM}"; boundary={boundary}',
                    "Accept": "application/dicom+json",
                },
                timeout=1800,
            )
        elapsed = time.perf_counter() - start
        peak = gateway.peak_rss_mb()
        rss_after = gateway.rss_mb()
        stored, failed = outcome(response)
    finally:
        gateway.stop()
        sink.stop()
    total_mb = BIG_COUNT * len(template) / 1e6
    report.add(
        f"gateway peak RSS (VmHWM), STOW-RS of {total_mb / 1000:.2f} GB",
        peak,
        300.0,
        "limit",
        unit="MB",
    )
    print(
        f"\nSTOW-RS of {BIG_COUNT} x {len(template) / 1e3:.0f} KB = {total_mb:.0f} MB into "
        f"storescp --ignore: HTTP {response.status_code}, {stored} stored, {failed} failed, "
        f"{elapsed:.1f} s ({total_mb / elapsed:.0f} MB/s); gateway VmHWM {before:.0f} MB "
        f"before, {peak:.0f} MB after (VmRSS now {rss_after:.0f} MB)"
    )
