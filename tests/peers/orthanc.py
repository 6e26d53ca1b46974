"""A private Orthanc (with its DICOMweb plugin) for the test suite.

Orthanc is the reference PACS here: it speaks C-FIND/C-GET/C-MOVE/C-STORE, and
its DICOMweb plugin gives an independent DICOMweb server whose answers the
gateway's can be compared with. Each instance has its own config, database and
log in a temporary directory, listens on free ports, and never touches the
system service or the well-known ports 4242/8042.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .ports import free_port
from .process import ProcessServer

#: Where Debian's orthanc-dicomweb package puts the plugin.
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def orthanc_binary() -> str | None:
    """Path of the Orthanc executable (Debian: /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("Orthanc")
    if found:
        return found
    for candidate in ("/usr/sbin/Orthanc", "/usr/local/sbin/Orthanc", "/usr/bin/Orthanc"):
        if Path(candidate).is_file():
            return candidate
    return None


class OrthancServer(ProcessServer):
    """Orthanc 1.10 on 127.0.0.1 with a DICOM port, an HTTP port and DICOMweb.

    ``move_destinations`` maps AE title -> (host, port) of C-MOVE destinations;
    Orthanc only moves to modalities it knows. :meth:`add_modality` adds one at
    run time (kept across :meth:`restart`).

    ``default_encoding`` is Orthanc's ``DefaultEncoding``, which is also the
    character set of *every* C-FIND answer, whatever the query asked for. The
    harness uses ``Utf8`` so that Japanese/Korean/Greek names survive a C-FIND;
    with Orthanc's own default (``Latin1``) they come back as ``^`` or garbage.
    """

    kind = "orthanc"

    def __init__(
        self,
        *,
        aet: str = "ORTHANC",
        move_destinations: Mapping[str, tuple[str, int]] | None = None,
        workdir: Path | None = None,
        default_encoding: str = "Utf8",
        extra_config: Mapping[str, Any] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(aet=aet, port=free_port(), workdir=workdir, start_timeout=start_timeout)
        self.http_port = free_port()
        self.move_destinations: dict[str, tuple[str, int]] = dict(move_destinations or {})
        self.default_encoding = default_encoding
        self.extra_config: dict[str, Any] = dict(extra_config or {})

    @property
    def http_url(self) -> str:
        """Base URL of Orthanc's REST API (no trailing slash)."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """Base URL of the DICOMweb plugin (no trailing slash), e.g. ``.../dicom-web``."""
        return f"{self.http_url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    @property
    def config_path(self) -> Path:
        """The JSON config file written for this instance."""
        return self.workdir / "orthanc.json"

    def config(self) -> dict[str, Any]:
        """The Orthanc configuration as a dict (what :meth:`start` writes)."""
        db = self.workdir / "db"
        cfg: dict[str, Any] = {
            "Name": f"test-{self.aet}",
            "StorageDirectory": str(db),
            "IndexDirectory": str(db),
            "StorageCompression": False,
            "ConcurrentJobs": 2,
            # Jobs from a previous run must not be resumed after restart().
            "SaveJobs": False,
            # HTTP. 1.10.1 cannot bind one interface: it listens on 0.0.0.0;
            # RemoteAccessAllowed=false makes it refuse non-loopback clients.
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpCompressionEnabled": False,
            "KeepAlive": True,
            "TcpNoDelay": True,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            # DICOM
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.port,
            "DicomCheckCalledAet": False,
            "DicomThreadsCount": 4,
            "DicomScpTimeout": 30,
            "DicomScuTimeout": 10,
            "DefaultEncoding": self.default_encoding,
            # Re-storing the seed data (or a test's STOW) must replace, not be a no-op.
            "OverwriteInstances": True,
            # Accept odd SOP classes (the charset test files use old ones).
            "UnknownSopClassAccepted": True,
            # Any calling AET may echo/find/get/move/store: the gateway's and the
            # DCMTK tools' AETs are not registered.
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomCheckModalityHost": False,
            "DicomModalities": {
                name: [name, host, port] for name, (host, port) in self.move_destinations.items()
            },
            # Studies become "stable" quickly, so tests that wait on it do not stall.
            "StableAge": 1,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            "CheckRevisions": False,
        }
        if DICOMWEB_PLUGIN.exists():
            cfg["Plugins"] = [str(DICOMWEB_PLUGIN)]
            cfg["DicomWeb"] = {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": True,
                "WadoRoot": "/wado",
                "Ssl": False,
                "StudiesMetadata": "Full",
                "SeriesMetadata": "Full",
            }
        cfg.update(self.extra_config)
        return cfg

    def _write_config(self) -> None:
        (self.workdir / "db").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2))

    def _command(self) -> list[str]:
        binary = orthanc_binary()
        if binary is None:
            raise FileNotFoundError("Orthanc not found (apt-get install orthanc)")
        return [binary, str(self.config_path), f"--logfile={self.log_path}"]

    def _extra_ready(self) -> bool:
        try:
            self.rest("GET", "/system", timeout=1)
        except (OSError, urllib.error.URLError):
            return False
        return True

    # -- REST helpers ------------------------------------------------------------

    def rest(self, method: str, path: str, body: Any = None, *, timeout: float = 30.0) -> Any:
        """Call Orthanc's REST API; JSON in, JSON (or None) out.

        Used for setup and inspection only (counting instances, adding a C-MOVE
        destination); the tests' assertions about DICOMweb go through the
        gateway or the plugin with a real HTTP client.
        """
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.http_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def statistics(self) -> dict[str, Any]:
        """Orthanc's ``/statistics`` (CountPatients, CountStudies, CountInstances ...)."""
        result: dict[str, Any] = self.rest("GET", "/statistics")
        return result

    def add_modality(self, aet: str, host: str, port: int) -> None:
        """Register a C-MOVE destination now, without a restart (kept on restart)."""
        self.move_destinations[aet] = (host, port)
        if self.running:
            self.rest("PUT", f"/modalities/{aet}", {"AET": aet, "Host": host, "Port": port})

    def delete_all(self) -> None:
        """Delete every patient (a quick reset for tests that store data)."""
        for pid in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{pid}")

    def wait_stable(self, timeout: float = 10.0) -> None:
        """Wait until Orthanc reports every study stable (``StableAge`` passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            studies = self.rest("GET", "/studies?expand")
            if all(s.get("IsStable") for s in studies):
                return
            time.sleep(0.2)
        raise TimeoutError("Orthanc studies did not become stable")


__all__ = ["DICOMWEB_PLUGIN", "OrthancServer", "orthanc_binary"]
