"""Common lifecycle of a PACS that runs as an external process (Orthanc, dcmqrscp).

Each server owns a work directory (config, data, logs), is started in its own
session so that :meth:`stop` can end the server *and* the children it forked
(dcmqrscp forks one per association) by process-group id, and is considered up
only when it answers a real C-ECHO -- a listening socket alone is not enough,
Orthanc opens its DICOM port before its database is ready.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from gateway.config import PacsConfig

from .common import pacs_config
from .dcmtk import dcmtk_env, echo_ok
from .ports import port_is_open


class PeerStartError(RuntimeError):
    """A PACS did not come up; the message includes the tail of its log."""


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal the process group we created with start_new_session (if any is left)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class ProcessServer:
    """Base class: start/stop/restart an external DICOM server on fixed ports.

    Subclasses write their config in :meth:`_write_config` and return the
    command line from :meth:`_command`. Ports are chosen once in ``__init__``
    and kept across :meth:`restart`, so a client configured before a restart
    reconnects to the same address (the pool-recovery tests rely on this).
    """

    #: Human-readable kind, used in error messages.
    kind = "server"

    def __init__(
        self,
        *,
        aet: str,
        port: int,
        workdir: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.aet = aet
        self.host = "127.0.0.1"
        self.port = port
        self.start_timeout = start_timeout
        self._own_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix=f"{self.kind}-")) if workdir is None else workdir
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        #: Seconds the last start() took until the server answered C-ECHO.
        self.startup_seconds: float | None = None
        #: What the test fixtures seeded (``SampleManifest``), None if nothing.
        self.manifest: Any = None
        #: The pydicom charset files seeded (``list[CharsetFile]``).
        self.charset_files: list[Any] = []
        #: Every Study Instance UID seeded (demo data plus charset files).
        self.study_uids: set[str] = set()

    # -- to be provided by subclasses -------------------------------------------

    def _write_config(self) -> None:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        """The server's own log file (what the error message shows)."""
        return self.workdir / "stdout.log"

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, plus its stdout if that is a different file."""
        out = f"--- {self.log_path}\n{tail(self.log_path, lines)}"
        stdout = self.workdir / "stdout.log"
        if stdout != self.log_path:
            out += f"\n--- {stdout}\n{tail(stdout, lines)}"
        return out

    def _extra_ready(self) -> bool:
        """Additional readiness check (Orthanc: the HTTP API answers)."""
        return True

    # -- lifecycle ---------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> Self:
        """Write the config, launch the process, wait until C-ECHO succeeds."""
        if self.running:
            return self
        self._write_config()
        self._stdout = (self.workdir / "stdout.log").open("ab")
        t0 = time.monotonic()
        self.process = subprocess.Popen(
            self._command(),
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dcmtk_env(),
            cwd=self.workdir,
            start_new_session=True,
        )
        deadline = t0 + self.start_timeout
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self._close_stdout()
                self.process = None
                raise PeerStartError(
                    f"{self.kind} exited with code {code} during startup "
                    f"(AET {self.aet}, port {self.port}):\n{self.log_tail()}"
                )
            # A cheap TCP probe first: spawning echoscu against a closed port
            # every 50 ms would only slow the loop down.
            if (
                port_is_open(self.host, self.port)
                and self._extra_ready()
                and echo_ok(self.host, self.port, self.aet, timeout=2)
            ):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise PeerStartError(
                    f"{self.kind} did not answer C-ECHO on {self.host}:{self.port} "
                    f"(AET {self.aet}) within {self.start_timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self, timeout: float = 10.0, *, graceful: bool = True) -> None:
        """Terminate the server (and its forked children), kill after ``timeout``.

        ``graceful=False`` sends SIGKILL at once: fine when the data is about to
        be deleted anyway, and it saves Orthanc's ~2 s HTTP-server shutdown.
        """
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # Forked children (dcmqrscp: one per association) may outlive the parent;
        # they share its process group, which only our own processes are in.
        _signal_group(proc.pid, signal.SIGKILL)
        self.process = None
        self._close_stdout()
        self._wait_port_closed()

    def _wait_port_closed(self, timeout: float = 5.0) -> None:
        """Wait until nothing accepts on our port, so a restart can bind it again."""
        deadline = time.monotonic() + timeout
        while port_is_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> Self:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop (hard) and remove the work directory if the harness created it."""
        self.stop(graceful=not self._own_workdir)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _close_stdout(self) -> None:
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # -- helpers -----------------------------------------------------------------

    def pacs_config(self, name: str | None = None, **overrides: Any) -> PacsConfig:
        """A :class:`gateway.config.PacsConfig` pointing at this server."""
        return pacs_config(self, name, **overrides)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.aet}@{self.host}:{self.port} {state}>"
