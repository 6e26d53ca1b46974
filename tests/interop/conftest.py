"""Fixtures for the interoperability tests: independent DICOMweb clients against the gateway.

The clients are other people's code -- the PyPI ``dicomweb-client``, the npm
``dicomweb-client`` that OHIF uses (driven by Node), and DCMTK's findscu/getscu
straight against the PACS -- and every expectation comes from the seeded source
files or from the PACS itself, never from the gateway's code.

* ``interop_gateway(pacs, **settings)`` (module): one started gateway per PACS
  and settings, shared by the tests of a module, stopped at its end.  Its
  ``public_url`` is set to its own address (see ``PublicGateway`` in
  interop_support.py).
* ``store_pacs`` (parametrized: Orthanc, dcmqrscp): an empty PACS of the
  interop session that STOW tests store into, so the seeded session PACS keep
  exactly the seeded studies (tests/test_harness.py and the QIDO tests count
  them).  Every test stores instances with fresh UIDs, so tests sharing it
  cannot see each other's instances unless they look for them.
* ``store_gateway``: the gateway in front of ``store_pacs`` (in front of
  dcmqrscp with ``stow_concurrency=1``: dcmqrscp 3.6.7 loses or garbles
  instances stored on concurrent associations, see tests/web/test_stow_pacs.py).
* ``node_client`` (session): runs tests/interop/js/client.mjs; installs its
  pinned npm packages with ``npm ci`` when node_modules is missing or stale.
  Without Node/npm the JS tests are skipped on a developer machine and fail in
  CI (``CI=true``), like a missing Orthanc.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.interop.interop_support import (
    JS_DIR,
    GatewayFactory,
    NodeClient,
    Pacs,
    PublicGateway,
)
from tests.peers import DcmqrscpServer, OrthancServer, orthanc_binary
from tests.peers.common import need
from tests.peers.dcmqrscp import dcmqrscp_binary
from tests.peers.dcmtk import dcmtk_available
from tests.peers.gateway import GatewayServer

#: Orthanc serves associations with DicomThreadsCount threads (4 by default); the
#: gateway keeps idle store associations pooled, which would starve the DCMTK
#: checks of the STOW tests (see ORTHANC_THREADS in tests/web/test_stow_pacs.py).
_STORE_ORTHANC_CONFIG = {"DicomThreadsCount": 32}


def _gateway_factory() -> Iterator[GatewayFactory]:
    started: dict[tuple[Any, ...], GatewayServer] = {}

    def get(pacs: Pacs, *, public: bool = True, **settings: Any) -> GatewayServer:
        if isinstance(pacs, DcmqrscpServer):
            settings.setdefault("stow_concurrency", 1)
        key = (pacs.kind, pacs.port, public, tuple(sorted(settings.items())))
        if key not in started:
            cls = PublicGateway if public else GatewayServer
            started[key] = cls(pacs.pacs_config(), **settings).start()
        return started[key]

    yield get
    for server in started.values():
        server.stop()


@pytest.fixture(scope="module")
def interop_gateway() -> Iterator[GatewayFactory]:
    """``interop_gateway(pacs, public=True, **settings)``: one gateway per PACS and
    settings for the whole module (``public=False``: no ``public_url``)."""
    yield from _gateway_factory()


# --------------------------------------------------------------------------- store PACS


def _need_dcmtk() -> None:
    need(
        dcmqrscp_binary() is not None
        and dcmtk_available("echoscu", "findscu", "getscu", "storescu"),
        "DCMTK (dcmqrscp, echoscu, findscu, getscu, storescu)",
        "apt-get install dcmtk",
    )


@pytest.fixture(scope="session")
def store_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """An empty Orthanc for the interop STOW tests (session)."""
    _need_dcmtk()
    need(orthanc_binary() is not None, "Orthanc", "apt-get install orthanc orthanc-dicomweb")
    server = OrthancServer(
        workdir=tmp_path_factory.mktemp("interop-orthanc"), extra_config=_STORE_ORTHANC_CONFIG
    )
    server.start()
    try:
        yield server
    finally:
        server.stop(graceful=False)


@pytest.fixture(scope="session")
def store_dcmqrscp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DcmqrscpServer]:
    """An empty dcmqrscp for the interop STOW tests (session)."""
    _need_dcmtk()
    server = DcmqrscpServer(workdir=tmp_path_factory.mktemp("interop-dcmqrscp"))
    server.start()
    try:
        yield server
    finally:
        server.stop(graceful=False)


@pytest.fixture(
    params=[
        pytest.param("orthanc", marks=pytest.mark.orthanc),
        pytest.param("dcmqrscp", marks=pytest.mark.dcmqrscp),
    ]
)
def store_pacs(request: pytest.FixtureRequest) -> Pacs:
    """Each empty interop PACS in turn (Orthanc, dcmqrscp) for STOW tests."""
    server: Pacs = request.getfixturevalue(f"store_{request.param}")
    return server


@pytest.fixture
def store_gateway(store_pacs: Pacs, interop_gateway: GatewayFactory) -> GatewayServer:
    """The module's gateway in front of ``store_pacs``."""
    return interop_gateway(store_pacs)


# --------------------------------------------------------------------------- Node


def _installed_matches_lock() -> bool:
    """True if node_modules holds exactly the versions package-lock.json pins."""
    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    for path, entry in lock.get("packages", {}).items():
        if not path.startswith("node_modules/"):
            continue
        manifest = JS_DIR / path / "package.json"
        if not manifest.is_file():
            return False
        if json.loads(manifest.read_text()).get("version") != entry.get("version"):
            return False
    return True


@pytest.fixture(scope="session")
def node_client() -> NodeClient:
    """The JS dicomweb-client runner; ``npm ci`` first when node_modules is
    missing or does not match package-lock.json."""
    node, npm = shutil.which("node"), shutil.which("npm")
    need(
        node is not None and npm is not None,
        "Node.js and npm (for the JavaScript dicomweb-client)",
        "apt-get install nodejs npm",
    )
    assert node is not None and npm is not None
    if not _installed_matches_lock():
        env = dict(os.environ, npm_config_audit="false", npm_config_fund="false")
        proc = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
        if proc.returncode != 0 or not _installed_matches_lock():
            raise RuntimeError(
                f"npm ci in {JS_DIR} failed ({proc.returncode}):\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            )
    return NodeClient(node)
