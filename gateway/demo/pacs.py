"""A throw-away PACS for ``dicomweb-gateway demo``: pynetdicom's bundled qrscp, pre-seeded.

qrscp is a real, separate DIMSE process (C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE over
Patient/Study Root), so the gateway talks to it exactly as it would to a hospital PACS,
but it needs nothing beyond pynetdicom and SQLAlchemy.

qrscp is started through a tiny bootstrap instead of ``python -m pynetdicom qrscp``
because its C-FIND responses never carry (0008,0005) Specific Character Set: it rebuilds
each response from decoded ``str`` values kept in SQLite, so any name outside Latin-1
would be sent as ``?``. The bootstrap declares ISO_IR 192 on every response, which is
correct for any stored value; everything else is the stock application.

Known qrscp limits the gateway has to live with here: C-FIND answers once per stored
*instance* even at STUDY/SERIES level (duplicates), and only returns the 12 keys it
indexes (patient ID/name, study UID/date/time/accession/ID, series UID/modality/number,
SOP instance UID/number): no descriptions, no ModalitiesInStudy, no counts.
The demo's PACS entry therefore names ``DEMO_HEADER_ATTRIBUTES``: the gateway reads
those from the instances (docs/qido.md, header_attributes), so a viewer's series list
has its descriptions and an instance search its SOP classes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from pynetdicom import AE
from pynetdicom.association import Association

from gateway.demo.sample import SampleInstance, SampleManifest, write_demo_studies

__all__ = ["DEMO_HEADER_ATTRIBUTES", "DemoPacs", "echo", "start_demo_pacs", "store_instances"]

#: Series and instance attributes qrscp does not keep that viewers and curl users read.
DEMO_HEADER_ATTRIBUTES = ("SOPClassUID", "SeriesDescription")

VERIFICATION = "1.2.840.10008.1.1"
DEMO_AET = "DEMOPACS"
LOADER_AET = "DEMOLOADER"
# Largest PDU we offer/accept; qrscp is configured unlimited so big slices go in one PDU.
MAX_PDU = 4 * 1024 * 1024

_BOOTSTRAP = """\
import sys
from pynetdicom.apps.qrscp import db, qrscp
_as_identifier = db.Instance.as_identifier
def as_identifier(self, identifier, model):
    ds = _as_identifier(self, identifier, model)
    ds.SpecificCharacterSet = "ISO_IR 192"
    return ds
db.Instance.as_identifier = as_identifier
qrscp.main(sys.argv[1:])
"""


@dataclass
class DemoPacs:
    """A running qrscp subprocess and what was stored in it; ``stop`` tears it all down."""

    aet: str
    host: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    manifest: SampleManifest
    owns_workdir: bool = field(default=False, repr=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / "qrscp.log"

    def store(self, instances: Iterable[SampleInstance]) -> int:
        """Add more data (e.g. a bulk set); qrscp overwrites on a repeated SOP Instance UID."""
        return store_instances(self.host, self.port, self.aet, instances)

    def echo(self, timeout: float = 5.0) -> bool:
        return echo(self.host, self.port, self.aet, timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DemoPacs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _new_ae(timeout: float) -> AE:
    ae = AE(ae_title=LOADER_AET)
    ae.maximum_pdu_size = MAX_PDU
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    return ae


def _set_nodelay(assoc: Association) -> None:
    # pynetdicom leaves Nagle on; each C-STORE is a small command PDU then the dataset, so
    # Nagle + delayed ACK costs ~40 ms per instance (measured 63 -> 17 ms per 8x8 C-STORE).
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def echo(host: str, port: int, aet: str, *, timeout: float = 5.0) -> bool:
    """True when the peer completes a C-ECHO: a listening socket alone proves little."""
    ae = _new_ae(timeout)
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate(host, port, ae_title=aet)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and status.Status == 0x0000
    finally:
        assoc.release()


def store_instances(
    host: str, port: int, aet: str, instances: Iterable[SampleInstance], *, timeout: float = 30.0
) -> int:
    """C-STORE files over as few associations as the 128-context limit allows.

    One presentation context per (SOP class, transfer syntax) so the SCP cannot pick a
    transfer syntax the file is not in. Raises on the first non-success status.
    """
    by_context: dict[tuple[str, str], list[SampleInstance]] = defaultdict(list)
    for inst in instances:
        by_context[inst.sop_class_uid, inst.transfer_syntax].append(inst)
    keys = list(by_context)
    sent = 0
    for start in range(0, len(keys), 128):
        ae = _new_ae(timeout)
        for sop_class, ts in keys[start : start + 128]:
            ae.add_requested_context(sop_class, [ts])
        assoc = ae.associate(host, port, ae_title=aet, max_pdu=MAX_PDU)
        if not assoc.is_established:
            raise ConnectionError(f"{aet}@{host}:{port} refused the storage association")
        _set_nodelay(assoc)
        try:
            for key in keys[start : start + 128]:
                for inst in by_context[key]:
                    status = assoc.send_c_store(inst.path)
                    if not status or status.Status != 0x0000:
                        code = f"0x{status.Status:04X}" if status else "no response"
                        raise RuntimeError(f"C-STORE of {inst.path} failed: {code}")
                    sent += 1
        finally:
            assoc.release()
    return sent


def _free_port(host: str) -> int:
    # Racy by nature (the port is free now, not necessarily at bind time), but qrscp has
    # no "port 0 and tell me" mode, and a collision shows up as an early exit below.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _write_config(
    workdir: Path, host: str, port: int, gateway_aet: str, gateway_port: int | None
) -> Path:
    lines = [
        "[DEFAULT]",
        f"ae_title: {DEMO_AET}",
        f"port: {port}",
        "max_pdu: 0",
        "acse_timeout: 30",
        "dimse_timeout: 30",
        "network_timeout: 60",
        f"bind_address: {host}",
        # qrscp joins these onto its own package directory; absolute paths win that join.
        f"instance_location: {(workdir / 'instances').resolve()}",
        f"database_location: {(workdir / 'qrscp.sqlite').resolve()}",
        "log_identifier: False",
    ]
    if gateway_port is not None:
        # Each section is a C-MOVE destination: AE title -> address and port.
        lines += ["", f"[{gateway_aet}]", "address: 127.0.0.1", f"port: {gateway_port}"]
    path = workdir / "qrscp.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def _wait_ready(pacs: DemoPacs, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pacs.process.poll() is not None:
            log = pacs.log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"qrscp exited with {pacs.process.returncode}:\n{log}")
        # Cheap TCP probe first so pynetdicom does not log a failed association per poll.
        with contextlib.suppress(OSError), socket.create_connection((pacs.host, pacs.port), 0.2):
            if pacs.echo(timeout=2.0):
                return
        time.sleep(0.05)
    raise TimeoutError(f"qrscp did not answer C-ECHO on {pacs.host}:{pacs.port} in {timeout}s")


def start_demo_pacs(
    workdir: Path | None = None,
    *,
    port: int = 0,
    seed: int = 1,
    ct_slices: int = 40,
    gateway_aet: str = "DICOMWEB",
    gateway_port: int | None = None,
    host: str = "127.0.0.1",
    startup_timeout: float = 30.0,
) -> DemoPacs:
    """Start qrscp, wait for C-ECHO, C-STORE the demo sample into it, return the handle.

    With ``workdir=None`` everything (config, SQLite database, stored instances, the sample
    files, the log) lives in a temporary directory that ``stop`` removes. A given workdir
    is kept, and re-seeding it is idempotent because the sample UIDs depend only on seed.
    ``gateway_aet``/``gateway_port`` become qrscp's only C-MOVE destination; qrscp reads
    destinations at startup, so the gateway's port must be known before this is called.
    """
    if importlib.util.find_spec("sqlalchemy") is None:
        raise RuntimeError(
            "the demo PACS (pynetdicom qrscp) needs SQLAlchemy: pip install sqlalchemy"
        )
    owns = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="demo-pacs-")) if workdir is None else Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        port = port or _free_port(host)
        config = _write_config(workdir, host, port, gateway_aet, gateway_port)
        with (workdir / "qrscp.log").open("ab") as log:  # the child keeps its own fd
            process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, "-c", str(config), "-ll", "info"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
    except BaseException:
        if owns:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    pacs = DemoPacs(DEMO_AET, host, port, workdir, process, SampleManifest(workdir, ()), owns)
    try:
        # Generate while qrscp is still importing (~1 s): the two overlap almost fully.
        pacs.manifest = write_demo_studies(workdir / "sample", seed=seed, ct_slices=ct_slices)
        _wait_ready(pacs, startup_timeout)
        pacs.store(pacs.manifest)
    except BaseException:
        pacs.stop()
        raise
    return pacs
