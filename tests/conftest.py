"""Session-wide fixtures: real PACS (Orthanc, dcmqrscp) and fault-injection peers.

The gateway is only as good as its behaviour against real DIMSE implementations,
so the suite starts private instances of Orthanc and DCMTK's dcmqrscp on free
loopback ports, seeds them once per session with the synthetic demo data plus
pydicom's character-set files, and tears them down at the end. Fixtures:

* ``orthanc`` / ``dcmqrscp`` (session): seeded servers with ``aet``, ``host``,
  ``port``, ``manifest``, ``charset_files``, ``study_uids``, ``pacs_config()``;
  Orthanc also ``http_port``, ``http_url``, ``dicomweb_url``.
* ``pacs`` (parametrized over both): the same test runs against each.
* ``tmp_orthanc`` (function): a fresh, empty Orthanc a test may stop, restart
  or store into.
* ``move_destination``: the AE title/port both PACS accept as C-MOVE target.
* fault peers: ``rejecting_peer``, ``busy_peer``, ``aborting_peer``,
  ``find_failure_peer`` (A700 and C000), ``silent_peer``, ``closed_port``, and
  ``make_peer`` to start any other scripted peer for one test.

A missing Orthanc/DCMTK skips the tests that need it on a developer machine but
fails them in CI (``CI=true``), where a silent skip would hide the whole
integration suite.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) from anywhere
    sys.path.insert(0, str(_ROOT))

from tests.peers import (  # noqa: E402
    AbortingFindPeer,
    CharsetFile,
    ClosedPort,
    DcmqrscpServer,
    FindStatusPeer,
    MoveDestination,
    OrthancServer,
    RejectingPeer,
    SilentListener,
    charset_files,
    dcmqrscp_binary,
    free_port,
    orthanc_binary,
    seed,
)
from tests.peers.common import need  # noqa: E402
from tests.peers.dcmtk import dcmtk_available  # noqa: E402

#: DCMTK tools the harness itself needs (readiness checks and seeding).
_HARNESS_TOOLS = ("echoscu", "storescu", "findscu")

P = TypeVar("P")


def _need_orthanc() -> None:
    need(
        orthanc_binary() is not None and dcmtk_available(*_HARNESS_TOOLS),
        "Orthanc or DCMTK",
        "apt-get install orthanc orthanc-dicomweb dcmtk",
    )


def _need_dcmqrscp() -> None:
    need(
        dcmqrscp_binary() is not None and dcmtk_available(*_HARNESS_TOOLS),
        "DCMTK (dcmqrscp, echoscu, storescu, findscu)",
        "apt-get install dcmtk",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by the PACS they use, so ``-m 'not dcmqrscp'`` works."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        pacs_param = callspec.params.get("pacs") if callspec is not None else None
        if names & {"orthanc", "tmp_orthanc"} or pacs_param == "orthanc":
            item.add_marker(pytest.mark.orthanc)
        if "dcmqrscp" in names or pacs_param == "dcmqrscp":
            item.add_marker(pytest.mark.dcmqrscp)


# --------------------------------------------------------------------------- data


@pytest.fixture(scope="session")
def sample_manifest(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The demo studies (small: 8 CT slices), written once per session.

    Returns ``gateway.demo.sample.SampleManifest``.
    """
    from gateway.demo.sample import write_demo_studies

    return write_demo_studies(tmp_path_factory.mktemp("demo-data"), ct_slices=8)


@pytest.fixture(scope="session")
def charset_instances() -> list[CharsetFile]:
    """pydicom's storable ``chr*.dcm`` files (Japanese, Korean, Chinese, Latin-1 ...)."""
    return charset_files()


@pytest.fixture(scope="session")
def move_destination() -> MoveDestination:
    """AE title and reserved port registered as C-MOVE destination in every PACS.

    PACS only move to destinations configured in advance (Orthanc's
    DicomModalities, dcmqrscp's HostTable), and the session PACS start before any
    test, so the port is reserved here and a move test binds its SCP to it.
    """
    return MoveDestination("GATEWAY", "127.0.0.1", free_port())


def _destinations(dest: MoveDestination) -> dict[str, tuple[str, int]]:
    return {dest.aet: (dest.host, dest.port)}


def _seed_all(server: Any, manifest: Any, charsets: list[CharsetFile]) -> None:
    """Seed demo data + charset files; any refusal is a harness error, not a skip."""
    report = seed(server, [*manifest.instances, *charsets])
    if report.refused:
        details = "\n".join(f"  {p}: {why}" for p, why in report.refused.items())
        raise RuntimeError(f"{server!r} refused seed files:\n{details}\n{server.log_tail()}")
    server.manifest = manifest
    server.charset_files = charsets
    server.study_uids = {i.study_uid for i in manifest.instances} | {c.study_uid for c in charsets}


# --------------------------------------------------------------------------- real PACS


def _seeded(server: P, manifest: Any, charsets: list[CharsetFile]) -> Iterator[P]:
    """Start, seed, lend for the session, kill (not a graceful stop: nothing to keep)."""
    server.start()  # type: ignore[attr-defined]
    try:
        _seed_all(server, manifest, charsets)
        yield server
    finally:
        server.stop(graceful=False)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def orthanc(
    tmp_path_factory: pytest.TempPathFactory,
    sample_manifest: Any,
    charset_instances: list[CharsetFile],
    move_destination: MoveDestination,
) -> Iterator[OrthancServer]:
    """A seeded Orthanc (with DICOMweb) shared by the whole session. Do not stop it."""
    _need_orthanc()
    server = OrthancServer(
        workdir=tmp_path_factory.mktemp("orthanc"),
        move_destinations=_destinations(move_destination),
    )
    yield from _seeded(server, sample_manifest, charset_instances)


@pytest.fixture(scope="session")
def dcmqrscp(
    tmp_path_factory: pytest.TempPathFactory,
    sample_manifest: Any,
    charset_instances: list[CharsetFile],
    move_destination: MoveDestination,
) -> Iterator[DcmqrscpServer]:
    """A seeded dcmqrscp shared by the whole session. Do not stop it."""
    _need_dcmqrscp()
    server = DcmqrscpServer(
        workdir=tmp_path_factory.mktemp("dcmqrscp"),
        move_destinations=_destinations(move_destination),
    )
    yield from _seeded(server, sample_manifest, charset_instances)


@pytest.fixture(params=["orthanc", "dcmqrscp"])
def pacs(request: pytest.FixtureRequest) -> OrthancServer | DcmqrscpServer:
    """Each seeded session PACS in turn: write a QIDO test once, run it on both."""
    server: OrthancServer | DcmqrscpServer = request.getfixturevalue(request.param)
    return server


@pytest.fixture
def tmp_orthanc(tmp_path: Path, move_destination: MoveDestination) -> Iterator[OrthancServer]:
    """A fresh, empty Orthanc for one test (stop/restart/store freely)."""
    _need_orthanc()
    server = OrthancServer(
        workdir=tmp_path / "orthanc",
        move_destinations=_destinations(move_destination),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop(graceful=False)


# --------------------------------------------------------------------------- fault peers


@pytest.fixture
def make_peer() -> Iterator[Callable[[P], P]]:
    """Start any peer (e.g. ``FindStatusPeer(0xA900, pending=3)``) for one test."""
    started: list[Any] = []

    def start(peer: P) -> P:
        started.append(peer)
        peer.start()  # type: ignore[attr-defined]
        return peer

    yield start
    for peer in reversed(started):
        peer.stop()


@pytest.fixture
def rejecting_peer() -> Iterator[RejectingPeer]:
    """Rejects every association: permanent, calling AE title not recognized."""
    with RejectingPeer() as peer:
        yield peer


@pytest.fixture
def busy_peer() -> Iterator[RejectingPeer]:
    """Rejects every association: transient, local limit exceeded."""
    with RejectingPeer("BUSY", mode="busy") as peer:
        yield peer


@pytest.fixture
def aborting_peer() -> Iterator[AbortingFindPeer]:
    """Answers C-FIND with one pending match, then sends A-ABORT."""
    with AbortingFindPeer() as peer:
        yield peer


@pytest.fixture(params=[0xA700, 0xC000], ids=["A700", "C000"])
def find_failure_peer(request: pytest.FixtureRequest) -> Iterator[FindStatusPeer]:
    """Answers C-FIND with a failure status (``.status``: 0xA700, then 0xC000)."""
    with FindStatusPeer(request.param) as peer:
        yield peer


@pytest.fixture
def silent_peer() -> Iterator[SilentListener]:
    """Accepts TCP connections and never sends a byte."""
    with SilentListener() as peer:
        yield peer


@pytest.fixture
def closed_port() -> ClosedPort:
    """An address where nothing listens: connection refused."""
    return ClosedPort()
