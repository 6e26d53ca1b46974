"""Issue 3 targets for WADO-RS, side by side in one run (printed as a table, never asserted).

Both PACS (Orthanc and dcmqrscp) hold the 100-slice demo CT series (100 x ~526 KB,
Explicit VR LE); Orthanc also holds a 500-instance series of 64x64 slices and one
JPEG 2000 (lossless) CT slice.

1. cold series by C-GET through the gateway (a fresh gateway process with an empty
   cache per round, warmed up on another series first) vs DCMTK ``getscu`` of the
   same series to tmpfs: time ratio (target <= 1.25x); time to the first part
   (first bytes of the first part's body; target <= 0.2 s);
2. the same by C-MOVE (gateway ``retrieve_method = "move"``) vs ``movescu`` into
   DCMTK ``storescp`` writing to tmpfs (and ``--ignore``): ratio (target <= 1.25x);
   1 and 2 again in one gateway process that keeps running, a not yet cached copy
   of the series per round (``test_cold_series_running_gateway``);
3. the same series warm (from the gateway's cache) vs Orthanc's own WADO-RS:
   throughput ratio (target >= 1.0x);
4. series ``/metadata`` of 500 instances warm vs Orthanc's own: ratio (target: the
   gateway >= 5x faster, i.e. ratio <= 0.20x);
5. a warm native frame (``/frames/1``, 512x512x16) on a kept-alive connection, p50 of
   ``BENCH_WADO_FRAME_REQUESTS`` (200) requests vs Orthanc's ``/frames/1``: ratio
   (target <= 1.0x);
6. peak RSS (VmHWM) of the gateway while it streams a generated ~2.1 GB study
   (4 series x 1000 x 526 KB, seeded into Orthanc: dcmqrscp keeps at most 1 GiB per
   study) cold via C-GET: target < 300 MB; its time against getscu is printed too.
   Slow, so it runs only when the marker expression asks for ``slow``::

       python -m pytest -m "bench and slow" tests/bench/test_bench_wado.py -s -p no:cacheprovider

7. one frame of a cached J2K instance transcoded to Explicit VR LE and to HTJ2K by
   the gateway (ms; the reference is the codec work alone, in this process).

Run (everything but 6)::

    python -m pytest -m bench tests/bench/test_bench_wado.py -s -p no:cacheprovider

The gateway runs as its own process (``python -m gateway serve --config ...``) so the
HTTP client here does not share its GIL. Every HTTP client is ``http.client`` reading
into a 1 MiB buffer that is thrown away, the same for the gateway and Orthanc. Every
DCMTK/Orthanc process runs with ``TCP_NODELAY=1``. Knobs (environment):
``BENCH_WADO_ROUNDS`` (5), ``BENCH_WADO_FRAME_REQUESTS`` (200), ``BENCH_WADO_SHM``
(/dev/shm: where getscu/storescp write and where the gateway caches, so both sides
write to tmpfs), ``BENCH_WADO_PROFILE`` (a directory: each gateway process then runs
under cProfile and writes ``<dir>/gateway-<n>.prof`` when it stops).
"""

from __future__ import annotations

import copy
import http.client
import io
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID

from gateway.demo.sample import UID_ROOT, SampleInstance
from tests.bench.conftest import Report, p50
from tests.peers import DcmqrscpServer, OrthancServer, seed
from tests.peers.dcmtk import dcmtk_env, require_tool
from tests.peers.ports import free_port, port_is_open

pytestmark = pytest.mark.bench

ROUNDS = int(os.environ.get("BENCH_WADO_ROUNDS", "5"))
FRAME_REQUESTS = int(os.environ.get("BENCH_WADO_FRAME_REQUESTS", "200"))
SHM = Path(os.environ.get("BENCH_WADO_SHM", "/dev/shm"))
PROFILE_DIR = os.environ.get("BENCH_WADO_PROFILE", "")

GATEWAY_AET = "GWBENCH"  # the gateway's calling AET = its C-STORE SCP's AET (C-MOVE)
SCP_SHM = "SCPSHM"  # DCMTK storescp writing files to tmpfs
SCP_IGNORE = "SCPIGNORE"  # DCMTK storescp --ignore, largest PDU
CALLING = "BENCH"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
DCMTK_MAX_PDU = "131072"

DICOM_ACCEPT = 'multipart/related; type="application/dicom"'
OCTET_ACCEPT = 'multipart/related; type="application/octet-stream"'
AS_STORED_FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
HTJ2K_ACCEPT = 'multipart/related; type="image/jphc"'

_BUF = memoryview(bytearray(1 << 20))
_gateway_count = itertools.count(1)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class WadoData:
    """What the PACS are seeded with, and the series each measurement uses."""

    demo: tuple[SampleInstance, ...]  # the demo set, incl. the 100-slice CT series
    ct: list[SampleInstance]
    warmup: list[SampleInstance]  # a small series to warm a fresh gateway process up
    meta: list[SampleInstance]  # 500 x 64x64
    j2k: SampleInstance
    #: ROUNDS + 1 copies of the CT series, each in a study of its own: a cold
    #: series per round for one long-running gateway (target 1, second form).
    clones: list[list[SampleInstance]]

    @property
    def ct_bytes(self) -> int:
        return sum(i.path.stat().st_size for i in self.ct)


def _uid(*parts: int) -> str:
    return UID_ROOT + ".".join(str(p) for p in parts)


def _clone_series(
    out: Path,
    template: Dataset,
    pixels: bytes,
    study_uid: str,
    series_uids: Sequence[str],
    per_series: int,
) -> list[SampleInstance]:
    """``per_series`` copies of ``template`` in each series, written fast.

    pydicom encodes the template once, with fixed-width placeholders for the Series
    and SOP Instance UIDs and the Instance Number; each file is that header with the
    placeholders replaced (same lengths, so no length field changes) followed by one
    shared Pixel Data element. ~526 KB files go out at disk speed.
    """
    out.mkdir(parents=True, exist_ok=True)
    width = len(str(per_series))
    base = 10**width  # SOP UIDs <series>.<base + i>: all of one length, no leading zero
    series_len = {len(s) for s in series_uids}
    assert len(series_len) == 1, "series UIDs must have one length"
    sop_len = series_len.pop() + 1 + width + 1
    series_ph, sop_ph, number_ph = "8" * len(series_uids[0]), "7" * sop_len, "6" * width
    ds = copy.deepcopy(template)
    if "PixelData" in ds:
        del ds.PixelData
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_ph
    ds.SOPInstanceUID = sop_ph
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_ph)
    ds.InstanceNumber = number_ph
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    header = buf.getvalue()
    for ph, count in ((series_ph, 1), (sop_ph, 2), (number_ph, 1)):
        assert header.count(ph.encode()) == count, ph
    pixel_element = (
        b"\xe0\x7f\x10\x00OW\x00\x00" + len(pixels).to_bytes(4, "little") + bytes(pixels)
    )
    sop_class = str(template.SOPClassUID)
    ts = str(template.file_meta.TransferSyntaxUID)
    result = []
    for series_uid in series_uids:
        head = header.replace(series_ph.encode(), series_uid.encode())
        for i in range(per_series):
            sop = f"{series_uid}.{base + i}"
            number = f"{i + 1:0{width}d}".encode()
            data = head.replace(number_ph.encode(), number).replace(sop_ph.encode(), sop.encode())
            path = out / f"{sop}.dcm"
            with path.open("wb") as f:
                f.write(data)
                f.write(pixel_element)
            result.append(SampleInstance(path, study_uid, series_uid, sop, sop_class, ts))
    return result


def _j2k_instance(out: Path, source: SampleInstance) -> SampleInstance:
    """One demo CT slice, with UIDs of its own, compressed to JPEG 2000 lossless."""
    from gateway.dicom.transcode import transcode_instance

    ds = pydicom.dcmread(source.path)
    study, series, sop = _uid(79), _uid(79, 1), _uid(79, 1, 1)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    path = out / "j2k.dcm"
    path.write_bytes(transcode_instance(buf.getvalue(), J2K_LOSSLESS))
    return SampleInstance(path, study, series, sop, str(ds.SOPClassUID), J2K_LOSSLESS)


@pytest.fixture(scope="module")
def wado_data(tmp_path_factory: pytest.TempPathFactory) -> WadoData:
    from gateway.demo.sample import write_demo_studies

    root = tmp_path_factory.mktemp("wado-data")
    demo = write_demo_studies(root / "demo", ct_slices=100)
    series = demo.series()
    ct = max(series.values(), key=len)
    warmup = next(s for s in series.values() if s[0].modality == "MR")
    template = pydicom.dcmread(ct[0].path)
    template.Rows = template.Columns = 64
    pixels = np.random.default_rng(78).integers(0, 4096, (64, 64), dtype="<u2").tobytes()
    meta = _clone_series(root / "meta", template, pixels, _uid(78), [_uid(78, 1)], 500)
    j2k = _j2k_instance(root, ct[0])
    ct_template = pydicom.dcmread(ct[0].path)
    clones = [
        _clone_series(
            root / f"clone-{r}",
            ct_template,
            ct_template.PixelData,
            _uid(77, r),
            [_uid(77, r, 1)],
            100,
        )
        for r in range(ROUNDS + 1)
    ]
    return WadoData(demo.instances, ct, warmup, meta, j2k, clones)


# --------------------------------------------------------------------------- peers


@pytest.fixture(scope="module")
def scp_ports() -> dict[str, int]:
    return {GATEWAY_AET: free_port(), SCP_SHM: free_port(), SCP_IGNORE: free_port()}


def _destinations(ports: dict[str, int]) -> dict[str, tuple[str, int]]:
    return {aet: ("127.0.0.1", port) for aet, port in ports.items()}


@pytest.fixture(scope="module")
def wado_orthanc(
    tmp_path_factory: pytest.TempPathFactory, wado_data: WadoData, scp_ports: dict[str, int]
) -> Iterator[OrthancServer]:
    server = OrthancServer(
        workdir=tmp_path_factory.mktemp("wado-orthanc"),
        move_destinations=_destinations(scp_ports),
    )
    server.start()
    try:
        clones = [i for series in wado_data.clones for i in series]
        report = seed(server, [*wado_data.demo, *wado_data.meta, wado_data.j2k, *clones])
        assert not report.refused, report.refused
        yield server
    finally:
        server.stop(graceful=False)


@pytest.fixture(scope="module")
def wado_dcmqrscp(
    tmp_path_factory: pytest.TempPathFactory, wado_data: WadoData, scp_ports: dict[str, int]
) -> Iterator[DcmqrscpServer]:
    server = DcmqrscpServer(
        workdir=tmp_path_factory.mktemp("wado-dcmqrscp"),
        move_destinations=_destinations(scp_ports),
    )
    server.start()
    try:
        report = seed(server, [*wado_data.demo, *(i for c in wado_data.clones for i in c)])
        assert not report.refused, report.refused
        yield server
    finally:
        server.stop(graceful=False)


@pytest.fixture(params=["orthanc", "dcmqrscp"])
def cold_pacs(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"wado_{request.param}")


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 10
    while not port_is_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def storescps(scp_ports: dict[str, int]) -> Iterator[Path]:
    """Two DCMTK storescp: files to tmpfs (default PDU), and --ignore (128 KB PDU).

    Yields the tmpfs directory the first one writes to (emptied after each round).
    """
    out = SHM / f"wado-bench-storescp-{uuid.uuid4().hex[:8]}"
    out.mkdir(parents=True)
    tool = require_tool("storescp")
    procs = [
        subprocess.Popen(
            [tool, "-aet", SCP_SHM, "-od", str(out), str(scp_ports[SCP_SHM])],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [
                *(tool, "--ignore", "--max-pdu", DCMTK_MAX_PDU),
                *("-aet", SCP_IGNORE, str(scp_ports[SCP_IGNORE])),
            ],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        _wait_port(scp_ports[SCP_SHM], procs[0], "storescp")
        _wait_port(scp_ports[SCP_IGNORE], procs[1], "storescp --ignore")
        yield out
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(out, ignore_errors=True)


# --------------------------------------------------------------------------- gateway


class GatewayProcess:
    """``python -m gateway serve --config <toml>`` with one PACS, on a free port."""

    def __init__(
        self,
        workdir: Path,
        pacs: Any,
        *,
        method: str = "get",
        store_scp_port: int = 0,
        cache_dir: Path | None = None,
        cache_budget: int = 2 << 30,
    ) -> None:
        self.n = next(_gateway_count)
        self.workdir = workdir / f"gateway-{self.n}"
        self.workdir.mkdir(parents=True)
        self.port = free_port()
        self.cache_dir = cache_dir or SHM / f"wado-bench-cache-{uuid.uuid4().hex[:12]}"
        lines = [
            'host = "127.0.0.1"',
            f"port = {self.port}",
            f'calling_aet = "{GATEWAY_AET}"',
            'log_level = "WARNING"',
            f'cache_dir = "{self.cache_dir}"',
            f"cache_budget_bytes = {cache_budget}",
            f"store_scp_port = {store_scp_port or free_port()}",
            "",
            "[[pacs]]",
            'name = "bench"',
            f'aet = "{pacs.aet}"',
            f'host = "{pacs.host}"',
            f"port = {pacs.port}",
            f'retrieve_method = "{method}"',
        ]
        self.config = self.workdir / "gateway.toml"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = self.workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return "/dicomweb"

    def start(self) -> GatewayProcess:
        cmd = [sys.executable]
        if PROFILE_DIR:
            Path(PROFILE_DIR).mkdir(parents=True, exist_ok=True)
            cmd += ["-m", "cProfile", "-o", f"{PROFILE_DIR}/gateway-{self.n}.prof"]
        cmd += ["-m", "gateway", "serve", "--config", str(self.config)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_GATEWAY_")}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited at start:\n{self.log.read_text()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gateway did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def status_kb(self, field: str) -> int:
        """A ``/proc/<pid>/status`` figure in kB (VmHWM, VmRSS)."""
        assert self.proc is not None
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
        assert m, field
        return int(m.group(1))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        shutil.rmtree(self.cache_dir, ignore_errors=True)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="module")
def warm_gateway(
    tmp_path_factory: pytest.TempPathFactory, wado_orthanc: OrthancServer
) -> Iterator[GatewayProcess]:
    """One long-lived gateway (C-GET) in front of Orthanc, for the warm measurements."""
    with GatewayProcess(tmp_path_factory.mktemp("warm-gateway"), wado_orthanc) as gw:
        yield gw


# --------------------------------------------------------------------------- HTTP client


@dataclass
class Fetch:
    seconds: float
    first_part: float | None  # first bytes of the first part's body
    nbytes: int
    tail: bytes  # the last bytes of the body (the closing delimiter)


def fetch(
    port: int, path: str, accept: str, *, conn: http.client.HTTPConnection | None = None
) -> Fetch:
    """GET ``path``, reading the body into a 1 MiB buffer that is thrown away.

    Without ``conn`` a new connection is opened (and its setup timed). The first
    part's body is taken to start after the first blank line of the body (the end of
    the first part's headers).
    """
    start = time.perf_counter()
    own = conn is None
    if conn is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("GET", path, headers={"Accept": accept})
        resp = conn.getresponse()
        if resp.status != 200:
            raise AssertionError(f"GET {path}: HTTP {resp.status} {resp.read()[:500]!r}")
        n = 0
        first = None
        head = b""
        while first is None:
            chunk = resp.read1(65536)
            if not chunk:
                break
            n += len(chunk)
            head += chunk
            end = head.find(b"\r\n\r\n")
            if end >= 0 and len(head) > end + 4:
                first = time.perf_counter() - start
        tail = head[-64:]
        while k := resp.readinto(_BUF):
            n += k
            tail = (tail + bytes(_BUF[max(k - 64, 0) : k]))[-64:]
        return Fetch(time.perf_counter() - start, first, n, tail)
    finally:
        if own:
            conn.close()


def read_parts(port: int, path: str, accept: str) -> tuple[str, list[tuple[dict[str, str], bytes]]]:
    """The whole multipart response, split into (headers, body) parts (checks only)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("GET", path, headers={"Accept": accept})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (path, resp.status, body[:500])
        ctype = resp.getheader("Content-Type") or ""
    finally:
        conn.close()
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    assert m, ctype
    delimiter = b"--" + m.group(1).encode()
    parts = []
    for raw in body.split(delimiter)[1:]:
        if raw.startswith(b"--"):
            break
        head, _, content = raw[2:].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        parts.append((headers, content[:-2] if content.endswith(b"\r\n") else content))
    return ctype, parts


def _series_path(base: str, inst: SampleInstance) -> str:
    return f"{base}/studies/{inst.study_uid}/series/{inst.series_uid}"


def _instance_path(base: str, inst: SampleInstance) -> str:
    return f"{_series_path(base, inst)}/instances/{inst.sop_uid}"


def _check_series(port: int, path: str, series: list[SampleInstance], who: str) -> None:
    """One untimed full read: every instance once, as DICOM Part 10."""
    _, parts = read_parts(port, path, DICOM_ACCEPT)
    assert len(parts) == len(series), (who, len(parts))
    assert all(body[128:132] == b"DICM" for _, body in parts), who
    syntaxes = sorted({h.get("content-type", "") for h, _ in parts})
    print(f"\n{who}: {len(parts)} parts, {sum(len(b) for _, b in parts)} B, {syntaxes}")


# --------------------------------------------------------------------------- DCMTK


def _series_keys(inst: SampleInstance) -> list[str]:
    return [
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"StudyInstanceUID={inst.study_uid}",
        "-k",
        f"SeriesInstanceUID={inst.series_uid}",
    ]


def _run_dcmtk(args: list[str], success: str | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=dcmtk_env(), check=False)
    elapsed = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or (success and success not in output):
        raise RuntimeError(f"{' '.join(args[:3])} failed:\n{output[-2000:]}")
    return elapsed


def _getscu(pacs: Any, keys: list[str], out: Path, pdu: str | None = None) -> float:
    """getscu (a process) writing the instances to ``out``; the directory is removed."""
    out.mkdir(parents=True)
    try:
        args = [require_tool("getscu"), "-S", "-aet", CALLING, "-aec", pacs.aet]
        args += ["-pdu", pdu] if pdu else []
        args += ["-od", str(out), *keys, pacs.host, str(pacs.port)]
        elapsed = _run_dcmtk(args)
        return elapsed
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _movescu(pacs: Any, keys: list[str], dest: str) -> float:
    args = [require_tool("movescu"), "-v", "-S", "-aet", CALLING, "-aec", pacs.aet]
    args += ["-aem", dest, *keys, pacs.host, str(pacs.port)]
    return _run_dcmtk(args, "Final Move Response (Success)")


def _empty(directory: Path) -> int:
    n = 0
    for f in directory.iterdir():
        f.unlink()
        n += 1
    return n


# --------------------------------------------------------------------------- 1 + 2: cold


def _spread(values: list[float], scale: float = 1000.0) -> str:
    return f"{p50(values) * scale:.1f} ({min(values) * scale:.1f}-{max(values) * scale:.1f})"


def test_cold_series(
    cold_pacs: Any,
    wado_data: WadoData,
    storescps: Path,
    scp_ports: dict[str, int],
    tmp_path: Path,
    report: Report,
) -> None:
    """Targets 1 and 2: a fresh gateway process (empty cache) per round and method."""
    ct, warm = wado_data.ct[0], wado_data.warmup[0]
    keys = _series_keys(ct)
    shm_out = SHM / f"wado-bench-getscu-{uuid.uuid4().hex[:8]}"
    times: dict[str, list[float]] = {}
    firsts: dict[str, list[float]] = {}

    def gateway_round(method: str, check: bool) -> None:
        with GatewayProcess(
            tmp_path, cold_pacs, method=method, store_scp_port=scp_ports[GATEWAY_AET]
        ) as gw:
            # Warm the process up (imports, pooled C-FIND association) on another series.
            fetch(gw.port, _series_path(gw.base, warm), DICOM_ACCEPT)
            got = fetch(gw.port, _series_path(gw.base, ct), DICOM_ACCEPT)
            assert got.nbytes >= wado_data.ct_bytes and got.first_part is not None
            assert got.tail.endswith(b"--\r\n"), got.tail
            if check:
                _check_series(gw.port, _series_path(gw.base, ct), wado_data.ct, f"gateway {method}")
        times.setdefault(f"gw-{method}", []).append(got.seconds)
        firsts.setdefault(f"gw-{method}", []).append(got.first_part)

    for r in range(ROUNDS + 1):  # round 0 warms the PACS up and checks; not counted
        timed_round: dict[str, float] = {}
        gateway_round("get", check=r == 0)
        timed_round["getscu"] = _getscu(cold_pacs, keys, shm_out)
        timed_round["getscu-128k"] = _getscu(cold_pacs, keys, shm_out, DCMTK_MAX_PDU)
        gateway_round("move", check=r == 0)
        timed_round["movescu-shm"] = _movescu(cold_pacs, keys, SCP_SHM)
        written = _empty(storescps)
        timed_round["movescu-ignore"] = _movescu(cold_pacs, keys, SCP_IGNORE)
        assert written == len(wado_data.ct), written
        if r == 0:
            for key in times:
                times[key].clear()
                firsts[key].clear()
            continue
        for key, value in timed_round.items():
            times.setdefault(key, []).append(value)

    mb = wado_data.ct_bytes / 1e6
    kind = cold_pacs.kind
    n = len(wado_data.ct)
    label = f"{kind}: cold series {n} x {wado_data.ct_bytes / n / 1000:.0f} KB"
    print(f"\n{label} ({mb:.1f} MB), ms median (min-max) over {ROUNDS} rounds:")
    for key, values in times.items():
        print(f"  {key:16s} {_spread(values)} ms  {mb / p50(values):.0f} MB/s")
    for key, values in firsts.items():
        print(f"  {key:16s} first part {_spread(values)} ms")
    get, move = p50(times["gw-get"]), p50(times["gw-move"])
    report.add(f"{label} C-GET (target <= 1.25x)", get, p50(times["getscu"]), "getscu -> tmpfs")
    report.add(f"{label} C-GET", get, p50(times["getscu-128k"]), "getscu -pdu 131072 -> tmpfs")
    report.add(
        f"{label} C-GET time to first part (target <= 200 ms)", p50(firsts["gw-get"]), 0.2, "target"
    )
    report.add(
        f"{label} C-MOVE (target <= 1.25x)",
        move,
        p50(times["movescu-shm"]),
        "movescu -> storescp -> tmpfs",
    )
    report.add(
        f"{label} C-MOVE",
        move,
        p50(times["movescu-ignore"]),
        "movescu -> storescp --ignore, 128 KB PDU",
    )
    report.add(f"{label} C-MOVE time to first part", p50(firsts["gw-move"]), 0.2, "target of C-GET")


def _reference(
    method: str, pacs: Any, series: list[SampleInstance], storescps: Path, shm_out: Path
) -> float:
    """getscu, or movescu into storescp writing to tmpfs, of ``series``."""
    keys = _series_keys(series[0])
    if method == "get":
        return _getscu(pacs, keys, shm_out)
    elapsed = _movescu(pacs, keys, SCP_SHM)
    assert _empty(storescps) == len(series)
    return elapsed


def test_cold_series_running_gateway(
    cold_pacs: Any,
    wado_data: WadoData,
    storescps: Path,
    scp_ports: dict[str, int],
    tmp_path: Path,
    report: Report,
) -> None:
    """Targets 1 and 2 in a gateway that keeps running: each round retrieves a series
    it has not cached yet (a copy of the CT series in a study of its own).

    A fresh process per round (``test_cold_series``) also pays what a running server
    paid once: heap growth, worker threads, SQLite's page cache, and the first runs
    of every code path. Both are printed. The reference runs while the gateway is
    up and idle, before the gateway's retrieve in odd rounds and after it in even
    ones (the PACS's file cache then favours neither).
    """
    shm_out = SHM / f"wado-bench-getscu-{uuid.uuid4().hex[:8]}"
    times: dict[str, list[float]] = {}
    for method in ("get", "move"):
        with GatewayProcess(
            tmp_path, cold_pacs, method=method, store_scp_port=scp_ports[GATEWAY_AET]
        ) as gw:
            fetch(gw.port, _series_path(gw.base, wado_data.warmup[0]), DICOM_ACCEPT)
            fetch(gw.port, _series_path(gw.base, wado_data.clones[0][0]), DICOM_ACCEPT)
            for r in range(1, ROUNDS + 1):
                series = wado_data.clones[r]
                ref = _reference(method, cold_pacs, series, storescps, shm_out) if r % 2 else None
                got = fetch(gw.port, _series_path(gw.base, series[0]), DICOM_ACCEPT)
                assert got.nbytes >= wado_data.ct_bytes and got.tail.endswith(b"--\r\n")
                if ref is None:
                    ref = _reference(method, cold_pacs, series, storescps, shm_out)
                times.setdefault(f"gw-{method}", []).append(got.seconds)
                times.setdefault("getscu" if method == "get" else "movescu-shm", []).append(ref)
    kind, n = cold_pacs.kind, len(wado_data.ct)
    label = f"{kind}: cold series {n} x {wado_data.ct_bytes / n / 1000:.0f} KB, running gateway"
    print(f"\n{label}, ms median (min-max) over {ROUNDS} rounds:")
    for key, values in times.items():
        print(f"  {key:16s} {_spread(values)} ms")
    report.add(
        f"{label} C-GET (target <= 1.25x)",
        p50(times["gw-get"]),
        p50(times["getscu"]),
        "getscu -> tmpfs",
    )
    report.add(
        f"{label} C-MOVE (target <= 1.25x)",
        p50(times["gw-move"]),
        p50(times["movescu-shm"]),
        "movescu -> storescp -> tmpfs",
    )


# --------------------------------------------------------------------------- 3: warm series


def test_warm_series(
    warm_gateway: GatewayProcess, wado_orthanc: OrthancServer, wado_data: WadoData, report: Report
) -> None:
    gw, orthanc = warm_gateway, wado_orthanc
    ours_path = _series_path(gw.base, wado_data.ct[0])
    theirs_path = _series_path("/dicom-web", wado_data.ct[0])
    fetch(gw.port, ours_path, DICOM_ACCEPT)  # fills the cache if an earlier test did not
    _check_series(gw.port, ours_path, wado_data.ct, "gateway warm")
    _check_series(orthanc.http_port, theirs_path, wado_data.ct, "orthanc WADO-RS")
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(4 * ROUNDS):
        ours.append(fetch(gw.port, ours_path, DICOM_ACCEPT).seconds)
        theirs.append(fetch(orthanc.http_port, theirs_path, DICOM_ACCEPT).seconds)
    mb = wado_data.ct_bytes / 1e6
    print(f"\nwarm series ms: gateway {_spread(ours)}, Orthanc {_spread(theirs)}")
    report.add(
        f"warm series {len(wado_data.ct)} inst. {mb:.1f} MB (target >= 1.0x)",
        mb / p50(ours),
        mb / p50(theirs),
        "Orthanc WADO-RS",
        unit="MB/s",
    )


# --------------------------------------------------------------------------- 4: metadata


def _timed_get(conn: http.client.HTTPConnection, path: str, accept: str) -> tuple[float, bytes]:
    start = time.perf_counter()
    conn.request("GET", path, headers={"Accept": accept})
    resp = conn.getresponse()
    body = resp.read()
    elapsed = time.perf_counter() - start
    assert resp.status == 200, (path, resp.status, body[:300])
    return elapsed, body


def test_series_metadata(
    warm_gateway: GatewayProcess, wado_orthanc: OrthancServer, wado_data: WadoData, report: Report
) -> None:
    gw, orthanc = warm_gateway, wado_orthanc
    inst = wado_data.meta[0]
    ours_path = _series_path(gw.base, inst) + "/metadata"
    theirs_path = _series_path("/dicom-web", inst) + "/metadata"
    accept = "application/dicom+json"
    ours_conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=300)
    theirs_conn = http.client.HTTPConnection("127.0.0.1", orthanc.http_port, timeout=300)
    cold, body = _timed_get(ours_conn, ours_path, accept)
    assert len(json.loads(body)) == len(wado_data.meta)
    _, body = _timed_get(theirs_conn, theirs_path, accept)
    assert len(json.loads(body)) == len(wado_data.meta)
    ours: list[float] = []
    theirs: list[float] = []
    sizes = set()
    for _ in range(2 * ROUNDS):
        t, body = _timed_get(ours_conn, ours_path, accept)
        ours.append(t)
        sizes.add(("gateway", len(body)))
        t, body = _timed_get(theirs_conn, theirs_path, accept)
        theirs.append(t)
        sizes.add(("orthanc", len(body)))
    ours_conn.close()
    theirs_conn.close()
    print(
        f"\nseries /metadata {len(wado_data.meta)} instances: gateway cold (C-GET) "
        f"{cold * 1000:.0f} ms; warm ms gateway {_spread(ours)}, Orthanc {_spread(theirs)}; "
        f"bytes {sorted(sizes)}"
    )
    report.add(
        f"series /metadata {len(wado_data.meta)} inst. warm (target <= 0.20x)",
        p50(ours),
        p50(theirs),
        "Orthanc /metadata",
    )


# --------------------------------------------------------------------------- 5: native frame


def _frame_p50(port: int, path: str, accept: str, n: int) -> tuple[float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        _, body = _timed_get(conn, path, accept)  # warm-up (and connection set-up)
        times = [fetch(port, path, accept, conn=conn).seconds for _ in range(n)]
    finally:
        conn.close()
    return p50(times), len(body)


def test_native_frame(
    warm_gateway: GatewayProcess, wado_orthanc: OrthancServer, wado_data: WadoData, report: Report
) -> None:
    gw, orthanc = warm_gateway, wado_orthanc
    inst = wado_data.ct[len(wado_data.ct) // 2]
    ours_path = _instance_path(gw.base, inst) + "/frames/1"
    theirs_path = _instance_path("/dicom-web", inst) + "/frames/1"
    for path, port, who in (
        (ours_path, gw.port, "gateway"),
        (theirs_path, orthanc.http_port, "orthanc"),
    ):
        ctype, parts = read_parts(port, path, OCTET_ACCEPT)
        assert len(parts) == 1 and len(parts[0][1]) == 512 * 512 * 2, (who, ctype)
        print(f"\n{who} frame: {ctype} / {parts[0][0].get('content-type')}")
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(2):  # two interleaved halves
        ours.append(_frame_p50(gw.port, ours_path, OCTET_ACCEPT, FRAME_REQUESTS // 2)[0])
        theirs.append(
            _frame_p50(orthanc.http_port, theirs_path, OCTET_ACCEPT, FRAME_REQUESTS // 2)[0]
        )
    print(f"\nnative frame p50 per half (ms): gateway {ours}, Orthanc {theirs}")
    report.add(
        f"warm native frame 512x512x16, p50 of {FRAME_REQUESTS} (target <= 1.0x)",
        statistics.mean(ours),
        statistics.mean(theirs),
        "Orthanc /frames/1",
    )


# --------------------------------------------------------------------------- 7: J2K frame


def test_j2k_frame_transcode(
    warm_gateway: GatewayProcess, wado_orthanc: OrthancServer, wado_data: WadoData, report: Report
) -> None:
    from gateway.dicom.frames import frame_bytes, pixel_info
    from gateway.dicom.part10 import read_part10
    from gateway.dicom.transcode import transcode_frame

    gw, orthanc = warm_gateway, wado_orthanc
    inst = wado_data.j2k
    ours_path = _instance_path(gw.base, inst) + "/frames/1"
    theirs_path = _instance_path("/dicom-web", inst) + "/frames/1"
    ctype, parts = read_parts(gw.port, ours_path, AS_STORED_FRAME_ACCEPT)  # fills the cache
    print(f"\ngateway J2K frame as stored: {ctype}, {len(parts[0][1])} B")
    n = max(FRAME_REQUESTS // 10, 5)
    cases = {
        "as stored": AS_STORED_FRAME_ACCEPT,
        "-> Explicit VR LE": OCTET_ACCEPT,
        "-> HTJ2K": HTJ2K_ACCEPT,
    }
    ours = {}
    for what, accept in cases.items():
        ctype, parts = read_parts(gw.port, ours_path, accept)
        assert len(parts) == 1, what
        ours[what], _ = _frame_p50(gw.port, ours_path, accept, n)
        print(f"  {what}: {ctype} {len(parts[0][1])} B, p50 {ours[what] * 1000:.2f} ms")
    theirs, _ = _frame_p50(orthanc.http_port, theirs_path, AS_STORED_FRAME_ACCEPT, n)

    part10 = read_part10(inst.path.read_bytes())
    info = pixel_info(part10)
    frame = bytes(frame_bytes(part10.data, info, 0))
    codec = {}
    for what, ts in (
        ("-> Explicit VR LE", "1.2.840.10008.1.2.1"),
        ("-> HTJ2K", "1.2.840.10008.1.2.4.201"),
    ):
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            transcode_frame(frame, info, ts)
            samples.append(time.perf_counter() - start)
        codec[what] = p50(samples)
    report.add(
        f"J2K frame as stored, p50 of {n}", ours["as stored"], theirs, "Orthanc transfer-syntax=*"
    )
    for what in ("-> Explicit VR LE", "-> HTJ2K"):
        report.add(
            f"J2K frame {what} (cached instance), p50 of {n}",
            ours[what],
            codec[what],
            "codec alone, in-process",
        )


# --------------------------------------------------------------------------- 6: peak RSS


def _slow_requested(config: pytest.Config) -> bool:
    """True when the ``-m`` expression asks for ``slow`` (not merely ``bench``)."""
    expr = str(config.getoption("markexpr", "") or "")
    return re.search(r"(?<!not )\bslow\b", expr) is not None


@dataclass(frozen=True)
class BigStudy:
    pacs: OrthancServer
    study_uid: str
    instances: int
    nbytes: int


@pytest.fixture(scope="module")
def big_study(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BigStudy]:
    from gateway.demo.sample import write_demo_studies

    if not _slow_requested(request.config):
        pytest.skip('slow: run with -m "bench and slow"')
    root = tmp_path_factory.mktemp("wado-big")
    demo = write_demo_studies(root / "template", ct_slices=1)
    template = pydicom.dcmread(demo.instances[0].path)
    assert template.Rows == template.Columns == 512
    pixels = template.PixelData
    study = _uid(77, 1)
    t0 = time.perf_counter()
    files = _clone_series(
        root / "files", template, pixels, study, [_uid(77, 1, s) for s in range(1, 5)], 1000
    )
    nbytes = sum(f.path.stat().st_size for f in files)
    t1 = time.perf_counter()
    check = pydicom.dcmread(files[-1].path)
    assert check.SOPInstanceUID == files[-1].sop_uid and check.InstanceNumber == 1000
    # Orthanc, not dcmqrscp: dcmqrscp caps a study at 1 GiB whatever its quota says
    # (DB_UpperMaxBytesPerStudy) and silently deletes the oldest images beyond it.
    server = OrthancServer(workdir=root / "orthanc")
    server.start()
    try:
        outcome = seed(server, files)
        t2 = time.perf_counter()
        assert not outcome.refused, list(outcome.refused.items())[:3]
        print(
            f"\n2 GB study: generated {len(files)} files, {nbytes / 1e9:.2f} GB in "
            f"{t1 - t0:.1f} s; stored into Orthanc in {t2 - t1:.1f} s"
        )
        shutil.rmtree(root / "files", ignore_errors=True)
        yield BigStudy(server, study, len(files), nbytes)
    finally:
        server.stop(graceful=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_peak_rss_big_study(big_study: BigStudy, tmp_path: Path, report: Report) -> None:
    """Target 6: VmHWM of the gateway streaming a ~2.1 GB study cold by C-GET.

    Run with ``python -m pytest -m "bench and slow" tests/bench/test_bench_wado.py
    -s -p no:cacheprovider`` (``-m bench`` alone skips it).
    """
    pacs = big_study.pacs
    cache = tmp_path / "cache"  # on disk: 2 GB more in tmpfs would only cost RAM
    path = f"/dicomweb/studies/{big_study.study_uid}"
    samples: list[int] = []
    with GatewayProcess(tmp_path, pacs, cache_dir=cache, cache_budget=8 << 30) as gw:
        before = gw.status_kb("VmHWM")
        done = threading.Event()

        def sample() -> None:  # VmRSS over time: a plateau, or growth with the study?
            while not done.wait(0.5):
                samples.append(gw.status_kb("VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            got = fetch(gw.port, path, DICOM_ACCEPT)
        finally:
            done.set()
            sampler.join()
        peak = gw.status_kb("VmHWM")
        rss_after = gw.status_kb("VmRSS")
    assert got.nbytes >= big_study.nbytes and got.tail.endswith(b"--\r\n"), got
    quarters = [samples[min(len(samples) - 1, len(samples) * q // 4)] // 1024 for q in (1, 2, 3)]
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={big_study.study_uid}"]
    ref = _getscu(pacs, keys, SHM / f"wado-bench-big-{uuid.uuid4().hex[:8]}", DCMTK_MAX_PDU)
    gb = big_study.nbytes / 1e9
    print(
        f"\n2 GB study ({big_study.instances} instances, {gb:.2f} GB) cold C-GET: "
        f"{got.seconds:.1f} s ({gb * 1000 / got.seconds:.0f} MB/s), first part "
        f"{(got.first_part or 0) * 1000:.0f} ms; VmHWM {before / 1024:.0f} MB after start, "
        f"{peak / 1024:.0f} MB after the study (VmRSS then {rss_after / 1024:.0f} MB; "
        f"at 1/4, 1/2, 3/4 of the stream {quarters} MB, max sampled "
        f"{max(samples) // 1024} MB); "
        f"getscu -pdu {DCMTK_MAX_PDU} -> tmpfs {ref:.1f} s"
    )
    report.add(
        f"peak RSS streaming a {gb:.1f} GB study cold (target < 300 MB)",
        peak / 1024,
        300.0,
        "target",
        unit="MB",
    )
    report.add(
        f"{gb:.1f} GB study cold C-GET", got.seconds, ref, "getscu -pdu 131072 -> tmpfs", unit="s"
    )


# --------------------------------------------------------------------------- issue 5: rendered


def test_rendered_jpeg_p50(
    warm_gateway: GatewayProcess, wado_orthanc: OrthancServer, wado_data: WadoData, report: Report
) -> None:
    """Issue 5: a rendered JPEG of a cached 512x512 CT frame, p50, next to Orthanc."""
    gw, orthanc = warm_gateway, wado_orthanc
    inst = wado_data.ct[len(wado_data.ct) // 2]
    ours = _instance_path(gw.base, inst) + "/rendered"
    theirs = _instance_path("/dicom-web", inst) + "/rendered"
    _frame_p50(gw.port, _instance_path(gw.base, inst) + "/frames/1", "*/*", 1)  # fill the cache
    first, size_ours = _frame_p50(gw.port, ours, "image/jpeg", 1)  # rendered once, then kept
    ours_p50, _ = _frame_p50(gw.port, ours, "image/jpeg", 100)
    theirs_p50, size_theirs = _frame_p50(orthanc.http_port, theirs, "image/jpeg", 100)
    print(f"\nrendered JPEG: gateway {size_ours} B, Orthanc {size_theirs} B")
    print(f"gateway render before its rendered cache: {first * 1000:.1f} ms")
    report.add(
        "rendered JPEG, cached 512x512 CT frame, p50", ours_p50, theirs_p50, "Orthanc /rendered"
    )


def test_series_thumbnails(
    warm_gateway: GatewayProcess, wado_orthanc: OrthancServer, wado_data: WadoData, report: Report
) -> None:
    """Issue 5: thumbnails of every instance of the 100-slice series (3 passes: the first
    renders, the next come from the rendered cache) vs Orthanc /rendered of each."""
    gw, orthanc = warm_gateway, wado_orthanc

    def all_instances(port: int, base: str, suffix: str) -> float:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            start = time.perf_counter()
            for inst in wado_data.ct:
                _timed_get(conn, _instance_path(base, inst) + suffix, "image/jpeg")
            return time.perf_counter() - start
        finally:
            conn.close()

    ours = [all_instances(gw.port, gw.base, "/thumbnail?viewport=64,64") for _ in range(3)]
    theirs = [all_instances(orthanc.http_port, "/dicom-web", "/rendered") for _ in range(3)]
    print(f"\nthumbnails of {len(wado_data.ct)} instances (s): gateway {ours}, Orthanc {theirs}")
    report.add(
        f"thumbnails of {len(wado_data.ct)} instances, first pass (C-GET each + render)",
        ours[0],
        theirs[0],
        "Orthanc /rendered of each",
    )
    report.add(
        f"thumbnails of {len(wado_data.ct)} instances, later passes (cached)",
        p50(ours[1:]),
        p50(theirs[1:]),
        "Orthanc /rendered of each",
    )
