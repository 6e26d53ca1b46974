"""Run DCMTK command-line tools as an independent DICOM client in tests.

The gateway is tested against real PACS software, and the harness itself is
checked with DCMTK's tools rather than with pynetdicom, so that a bug shared by
the gateway and pynetdicom cannot make both sides agree.

Two traps are handled here:

* pynetdicom installs Python console scripts called ``echoscu``, ``findscu``,
  ``getscu``, ``storescu`` ... that shadow DCMTK's binaries on ``PATH`` (in a
  virtualenv or a pyenv shim directory). :func:`dcmtk_tool` therefore looks for
  the native executable and ignores scripts.
* Debian's DCMTK 3.6.7 leaves Nagle's algorithm on unless ``TCP_NODELAY=1`` is
  in the environment; every small DIMSE exchange then stalls ~40 ms on delayed
  ACKs. :func:`dcmtk_env` always sets it.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset, dcmread

#: Directories searched first; DCMTK's Debian package installs to /usr/bin.
_PREFERRED_DIRS = ("/usr/bin", "/usr/local/bin")

#: Default calling AE title of the DCMTK tools in tests.
CALLING_AET = "DCMTKSCU"


class DicomToolError(RuntimeError):
    """A DCMTK tool failed; the message carries its command line and output."""


def _is_native_executable(path: Path) -> bool:
    """True for an ELF binary, False for a script (pynetdicom's entry points)."""
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def dcmtk_tool(name: str) -> str | None:
    """Absolute path of DCMTK's ``name`` (e.g. ``echoscu``), or None if missing.

    ``$DCMTK_BIN`` (a directory) wins, then /usr/bin and /usr/local/bin, then
    ``PATH`` -- always skipping non-ELF files, which are pynetdicom's scripts of
    the same name.
    """
    dirs: list[str] = []
    if os.environ.get("DCMTK_BIN"):
        dirs.append(os.environ["DCMTK_BIN"])
    dirs.extend(_PREFERRED_DIRS)
    dirs.extend(os.environ.get("PATH", "").split(os.pathsep))
    for d in dirs:
        if not d:
            continue
        candidate = Path(d) / name
        if (
            candidate.is_file()
            and os.access(candidate, os.X_OK)
            and _is_native_executable(candidate)
        ):
            return str(candidate)
    return None


def require_tool(name: str) -> str:
    """Like :func:`dcmtk_tool` but raise a clear error when the tool is missing."""
    path = dcmtk_tool(name)
    if path is None:
        raise DicomToolError(f"DCMTK tool {name!r} not found (apt-get install dcmtk)")
    return path


def dcmtk_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for every DCMTK/Orthanc process: ours plus TCP_NODELAY=1."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    if extra:
        env.update(extra)
    return env


def run_tool(
    name: str,
    args: Sequence[str],
    *,
    timeout: float = 60.0,
    check: bool = False,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run DCMTK tool ``name`` with ``args`` and return its completed process.

    Output is decoded leniently (DCMTK prints patient names in whatever
    character set the dataset used). With ``check=True`` a non-zero exit raises
    :class:`DicomToolError` with the output, so a failing test shows why.
    """
    cmd = [require_tool(name), *args]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            env=dcmtk_env(),
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DicomToolError(f"{' '.join(cmd)} timed out after {timeout} s") from exc
    if check and proc.returncode != 0:
        raise DicomToolError(
            f"{' '.join(cmd)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        )
    return proc


def echoscu(
    host: str,
    port: int,
    aet: str,
    *,
    calling_aet: str = CALLING_AET,
    timeout: float = 5.0,
) -> subprocess.CompletedProcess[str]:
    """One C-ECHO with DCMTK's echoscu; returncode 0 means the peer answered."""
    t = str(max(1, round(timeout)))
    return run_tool(
        "echoscu",
        ["-aet", calling_aet, "-aec", aet, "-to", t, "-ta", t, "-td", t, host, str(port)],
        timeout=timeout + 5,
    )


def echo_ok(host: str, port: int, aet: str, *, timeout: float = 5.0) -> bool:
    """True if a C-ECHO to the peer succeeds (used for readiness polling)."""
    try:
        return echoscu(host, port, aet, timeout=timeout).returncode == 0
    except DicomToolError:
        return False


_MODELS = {"study": "-S", "patient": "-P", "worklist": "-W"}


def _key_args(keys: Mapping[str, str] | Iterable[str]) -> list[str]:
    """``{"PatientName": "", "StudyDate": "2024*"}`` -> ``-k PatientName= -k ...``."""
    items = keys.items() if isinstance(keys, Mapping) else (k.split("=", 1) for k in keys)
    out: list[str] = []
    for item in items:
        k, v = (item[0], item[1]) if len(item) == 2 else (item[0], "")
        out += ["-k", f"{k}={v}"]
    return out


@dataclass
class FindResult:
    """The outcome of one findscu run: exit code, output, and the matches."""

    returncode: int
    stdout: str
    stderr: str
    matches: list[Dataset] = field(default_factory=list)

    @property
    def output(self) -> str:
        """stdout and stderr together (DCMTK logs to stderr)."""
        return self.stdout + self.stderr

    @property
    def final_status_text(self) -> str | None:
        """findscu's text for the final response, e.g. ``Success`` or
        ``Refused: OutOfResources``; None if no final response arrived."""
        m = re.search(r"Received Final Find Response(?: \((.*)\))?", self.output)
        if m is None:
            return None
        return m.group(1) or ""

    @property
    def statuses(self) -> list[int]:
        """Every DIMSE status received, in order (only with ``debug=True``)."""
        return [
            int(h, 16) for h in re.findall(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", self.output)
        ]

    @property
    def aborted(self) -> bool:
        """True if the peer aborted the association (A-ABORT or connection drop)."""
        return "Peer aborted Association" in self.output


def findscu(
    host: str,
    port: int,
    aet: str,
    keys: Mapping[str, str] | Iterable[str],
    *,
    level: str = "STUDY",
    model: str = "study",
    calling_aet: str = CALLING_AET,
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
    debug: bool = False,
) -> FindResult:
    """A C-FIND with DCMTK's findscu; the matches are read back with pydicom.

    ``-X`` makes findscu write each pending identifier to ``rspNNNN.dcm``, so
    the test sees exactly what the PACS sent (including Specific Character Set)
    instead of parsing log text. ``-v`` (or ``-d`` with ``debug=True``, which
    adds the numeric statuses) makes the final status visible in the output,
    because findscu exits 0 even when the PACS answers with a failure status.
    """
    with tempfile.TemporaryDirectory(prefix="findscu-") as tmp:
        t = str(max(1, round(timeout)))
        args = [
            "-d" if debug else "-v",
            _MODELS[model],
            "-aet",
            calling_aet,
            "-aec",
            aet,
            "-to",
            t,
            "-ta",
            t,
            "-td",
            t,
            "-X",
            "-od",
            tmp,
            "-k",
            f"QueryRetrieveLevel={level}",
            *_key_args(keys),
            *extra_args,
            host,
            str(port),
        ]
        proc = run_tool("findscu", args, timeout=timeout + 10)
        files = sorted(Path(tmp).glob("rsp*.dcm"))
        matches: list[Dataset] = [dcmread(f) for f in files]
    return FindResult(proc.returncode, proc.stdout, proc.stderr, matches)


def getscu(
    host: str,
    port: int,
    aet: str,
    keys: Mapping[str, str] | Iterable[str],
    out_dir: Path,
    *,
    level: str = "STUDY",
    calling_aet: str = CALLING_AET,
    timeout: float = 60.0,
    prefer: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """A C-GET with DCMTK's getscu (study root) writing instances to ``out_dir``.

    ``prefer``: a compressed transfer syntax getscu's storage SCP also accepts
    (and prefers); without it only uncompressed ones."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t = str(max(1, round(timeout)))
    accept = ["+" + transfer_syntax_flag(prefer)[1:]] if prefer else []
    args = [
        "-S",
        *accept,
        "-aet",
        calling_aet,
        "-aec",
        aet,
        "-to",
        t,
        "-td",
        t,
        "-od",
        str(out_dir),
        "-k",
        f"QueryRetrieveLevel={level}",
        *_key_args(keys),
        host,
        str(port),
    ]
    return run_tool("getscu", args, timeout=timeout + 10)


def movescu(
    host: str,
    port: int,
    aet: str,
    keys: Mapping[str, str] | Iterable[str],
    out_dir: Path,
    *,
    move_aet: str,
    receive_port: int,
    level: str = "STUDY",
    calling_aet: str = CALLING_AET,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """A C-MOVE with movescu, which also runs the destination store SCP itself.

    The PACS must know ``move_aet`` at ``receive_port`` (its C-MOVE
    destination table); movescu listens there and writes to ``out_dir``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    t = str(max(1, round(timeout)))
    args = [
        "-S",
        "-aet",
        calling_aet,
        "-aec",
        aet,
        "-aem",
        move_aet,
        "+P",
        str(receive_port),
        "+xa",
        "-to",
        t,
        "-td",
        t,
        "-od",
        str(out_dir),
        "-k",
        f"QueryRetrieveLevel={level}",
        *_key_args(keys),
        host,
        str(port),
    ]
    return run_tool("movescu", args, timeout=timeout + 10)


def transfer_syntax_flag(ts_uid: str) -> str:
    """storescu's proposal flag for files in transfer syntax ``ts_uid``.

    storescu 3.6.7 never proposes a compressed syntax on its own: without the
    matching flag a JPEG/J2K/RLE file fails and the association is aborted.
    """
    flags = {
        "1.2.840.10008.1.2.4.90": "-xv",  # JPEG 2000 lossless
        "1.2.840.10008.1.2.4.91": "-xw",  # JPEG 2000
        "1.2.840.10008.1.2.5": "-xr",  # RLE lossless
        "1.2.840.10008.1.2.4.50": "-xy",  # JPEG baseline
        "1.2.840.10008.1.2.4.51": "-xx",  # JPEG extended
        "1.2.840.10008.1.2.4.57": "-xs",  # JPEG lossless (non-hierarchical)
        "1.2.840.10008.1.2.4.70": "-xs",  # JPEG lossless SV1
        "1.2.840.10008.1.2.4.80": "-xt",  # JPEG-LS lossless
        "1.2.840.10008.1.2.4.81": "-xu",  # JPEG-LS lossy
        "1.2.840.10008.1.2.1.99": "-xd",  # deflated explicit LE
    }
    return flags.get(ts_uid, "-x=")


@dataclass
class StoreOutcome:
    """Per-file result of a storescu run, parsed from its verbose log."""

    stored: list[Path] = field(default_factory=list)
    refused: dict[Path, str] = field(default_factory=dict)
    output: str = ""


def _parse_store_log(files: Sequence[Path], log: str) -> StoreOutcome:
    """Match storescu's ``-v`` log back to files: which were stored, which not.

    storescu logs ``Sending file: <path>`` then either ``Received Store
    Response (Success)`` / ``(Warning...)``, or an error such as ``No
    presentation context`` / ``Store Failed``. Files storescu never reached
    (it stops at the first file it cannot handle) count as refused.
    """
    outcome = StoreOutcome(output=log)
    current: Path | None = None
    reason: list[str] = []
    by_name = {str(f): f for f in files}
    done: set[Path] = set()

    def finish(ok: bool) -> None:
        nonlocal current
        if current is not None and current not in done:
            done.add(current)
            if ok:
                outcome.stored.append(current)
            else:
                outcome.refused[current] = "; ".join(reason) or "no response"
        current = None

    for line in log.splitlines():
        text = line.split(": ", 1)[1] if line[:2] in ("I:", "E:", "W:", "F:") else line
        if text.startswith("Sending file: "):
            finish(False)
            reason = []
            current = by_name.get(text[len("Sending file: ") :].strip())
        elif text.startswith("Received Store Response"):
            ok = "(Success" in text or "(Warning" in text
            if not ok:
                reason.append(text)
            finish(ok)
        elif line.startswith(("E:", "F:")) and current is not None:
            reason.append(text)
    finish(False)
    for f in files:
        if f not in done:
            outcome.refused[f] = "not sent (storescu stopped earlier)"
    return outcome


def storescu(
    host: str,
    port: int,
    aet: str,
    files: Sequence[Path],
    *,
    transfer_syntax: str = "",
    calling_aet: str = CALLING_AET,
    timeout: float = 120.0,
) -> StoreOutcome:
    """Send ``files`` (all in one transfer syntax) with storescu on one association.

    ``-R`` proposes only the SOP classes of the files (so odd SOP classes can be
    proposed at all) and ``-nh`` keeps going after a refused file, so each
    file's fate is reported from the verbose log instead of the first refusal
    hiding the rest.
    """
    if not files:
        return StoreOutcome()
    args = [
        "-v",
        "-R",
        "-nh",
        transfer_syntax_flag(transfer_syntax),
        "-aet",
        calling_aet,
        "-aec",
        aet,
        "-to",
        "30",
        "-td",
        "30",
        host,
        str(port),
        *(str(f) for f in files),
    ]
    proc = run_tool("storescu", args, timeout=timeout)
    return _parse_store_log(files, proc.stdout + proc.stderr)


def dcmtk_available(*names: str) -> bool:
    """True if every named DCMTK tool is installed (for skip decisions)."""
    return all(dcmtk_tool(n) is not None for n in names)


__all__ = [
    "CALLING_AET",
    "DicomToolError",
    "FindResult",
    "StoreOutcome",
    "dcmtk_available",
    "dcmtk_env",
    "dcmtk_tool",
    "echo_ok",
    "echoscu",
    "findscu",
    "getscu",
    "movescu",
    "require_tool",
    "run_tool",
    "storescu",
    "transfer_syntax_flag",
]
