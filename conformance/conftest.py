"""Options, the server under test and its seeding.

    pytest -c conformance/pytest.ini conformance --base-url http://host:port/dicomweb

The fixture set (``conformance/dataset.py``) is uploaded once per run with
STOW-RS (``--seed=stow``, the default) or is expected to be there already
(``--seed=none``).  Either way the run starts by checking with QIDO that every
instance is found, so a failure to seed is reported once, not as a hundred
unrelated failures.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from conformance import reporting
from conformance.dataset import FixtureSet, InstanceFixture, fixture_set
from conformance.items import item_of
from conformance.server import REQUEST_TIMEOUT, Expectations, FaultUrls, Server, describe


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "the DICOMweb server under test")
    group.addoption(
        "--base-url",
        default=os.environ.get("DICOMWEB_BASE_URL", ""),
        help="DICOMweb root, e.g. http://127.0.0.1:8080/dicomweb (env DICOMWEB_BASE_URL)",
    )
    group.addoption(
        "--wado-uri-url",
        default="",
        help="WADO-URI endpoint (default: /wado at the base URL's host)",
    )
    group.addoption(
        "--seed",
        choices=("stow", "none"),
        default="stow",
        help="stow: upload the fixture set first; none: it is already there",
    )
    group.addoption(
        "--empty-result",
        choices=("200", "204"),
        default="200",
        help="QIDO-10: what an empty search returns (200 [] per the 2026 edition)",
    )
    group.addoption(
        "--no-accept",
        choices=("default", "406"),
        default="default",
        help="WADO-05: what a retrieve without Accept gets",
    )
    group.addoption("--allowed-origin", default="", help="CORS-01: an origin the server allows")
    for name, what in (
        ("unreachable", "a PACS whose port is closed"),
        ("silent", "a PACS that accepts TCP and never answers"),
        ("aborting", "a PACS that aborts in the middle of a C-FIND"),
        ("busy", "a PACS that answers C-FIND with A700"),
        ("failing", "a PACS that answers C-FIND with C000"),
    ):
        group.addoption(
            f"--{name}-url", default="", help=f"ERR-02/03: the same server in front of {what}"
        )
    group.addoption(
        "--pacs-timeout",
        type=float,
        default=30.0,
        help="ERR-02: the server's configured PACS timeout in seconds",
    )
    reporting.addoption(parser)


def pytest_configure(config: pytest.Config) -> None:
    reporting.configure(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its item's level; a test without an item is a suite bug."""
    for test in items:
        name = getattr(test, "originalname", None) or test.name
        item = item_of(name)
        if item is None:
            raise pytest.UsageError(f"{test.nodeid}: test name does not start with an item ID")
        test.add_marker(getattr(pytest.mark, item.level.replace("-", "_")))
        test.user_properties.append(("item", item.id))


@pytest.fixture(scope="session")
def server(pytestconfig: pytest.Config) -> Server:
    base = str(pytestconfig.getoption("--base-url")).rstrip("/")
    if not base:
        raise pytest.UsageError("give --base-url (or DICOMWEB_BASE_URL)")
    parts = urlsplit(base)
    wado_uri = str(pytestconfig.getoption("--wado-uri-url")) or (
        f"{parts.scheme}://{parts.netloc}/wado"
    )
    opt = pytestconfig.getoption
    return Server(
        base_url=base,
        wado_uri_url=wado_uri,
        expect=Expectations(
            empty_result=str(opt("--empty-result")),
            no_accept=str(opt("--no-accept")),
            allowed_origin=str(opt("--allowed-origin")),
        ),
        faults=FaultUrls(
            unreachable=str(opt("--unreachable-url")).rstrip("/"),
            silent=str(opt("--silent-url")).rstrip("/"),
            aborting=str(opt("--aborting-url")).rstrip("/"),
            busy=str(opt("--busy-url")).rstrip("/"),
            failing=str(opt("--failing-url")).rstrip("/"),
            timeout=float(opt("--pacs-timeout")),
        ),
    )


def stow_body(instances: list[InstanceFixture]) -> tuple[bytes, str]:
    """A STOW-RS body of Part 10 instances and its Content-Type."""
    boundary = f"conformance-{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for inst in instances:
        chunks.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        chunks.append(inst.part10)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return b"".join(chunks), content_type


def _missing(server: Server, fx: FixtureSet) -> list[str]:
    missing = []
    for study in fx.studies:
        found = server.search(f"/studies/{study.uid}/instances")
        uids = {(r.get("00080018") or {}).get("Value", [None])[0] for r in found}
        for series in study.series:
            absent = [i for i in series.instances if i.sop_uid not in uids]
            if absent:
                missing.append(f"{len(absent)} of series {series.description!r}")
    return missing


@pytest.fixture(scope="session")
def fixtures(server: Server, pytestconfig: pytest.Config) -> FixtureSet:
    """The fixture set, present on the server (uploaded now unless --seed=none)."""
    fx = fixture_set()
    if pytestconfig.getoption("--seed") == "stow":
        for study in fx.studies:
            for series in study.series:
                body, content_type = stow_body(list(series.instances))
                response = server.session.post(
                    server.url("/studies"),
                    data=body,
                    headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
                    timeout=REQUEST_TIMEOUT * 4,
                )
                # 202 is fine: a second run stores duplicates, which some servers warn about.
                if response.status_code not in (200, 202):
                    pytest.fail(f"seeding by STOW-RS failed: {describe(response)}")
    missing = _missing(server, fx)
    if missing:
        pytest.fail(f"fixture instances not found by QIDO after seeding: {', '.join(missing)}")
    return fx


@pytest.fixture
def fresh_uid() -> Iterator[str]:
    """A UID no other test or run uses (for tests that store new instances)."""
    yield "2.25." + str(uuid.uuid4().int)
