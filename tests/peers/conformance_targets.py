"""The servers the conformance suite (``conformance/``) is run against.

* the gateway in front of a real PACS (Orthanc or dcmqrscp), plus the same
  gateway configuration in front of five failing peers for ERR-02/ERR-03;
* Orthanc's own DICOMweb plugin, as the reference to compare with.

Each target is a context manager yielding the suite's command-line arguments;
``tests/conformance/`` runs them in CI and ``python -m tests.conformance_report``
writes ``docs/conformance.md`` from them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from .faults import AbortingFindPeer, ClosedPort, FindStatusPeer, SilentListener
from .gateway import GatewayServer

#: Short PACS timeouts for the fault gateways, so ERR-02 takes seconds, not minutes.
FAULT_SETTINGS: dict[str, Any] = {
    "connect_timeout": 1.0,
    "accept_timeout": 1.0,
    "dimse_timeout": 2.0,
    "pool_backoff_seconds": 0.5,
}

#: Items the gateway does not pass in front of each PACS, and why (exact: CI
#: fails when one of them starts passing, so the list stays true).
KNOWN_GAPS: dict[str, dict[str, str]] = {
    "orthanc": {},
    "dcmqrscp": {},
}

#: What dcmqrscp 3.6.7 does not keep for C-FIND: the gateway reads it from the instances.
DCMQRSCP_UNKEPT = (
    "SOPClassUID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
)

#: The origin the CI gateways allow, for CORS-01.
VIEWER_ORIGIN = "http://viewer.example"


def gateway_settings(kind: str) -> dict[str, Any]:
    """What the gateway needs in front of each PACS (dcmqrscp: one C-STORE at a time)."""
    settings: dict[str, Any] = {}
    if kind == "dcmqrscp":
        settings["stow_concurrency"] = 1
    settings["cors_origins"] = (VIEWER_ORIGIN,)
    return settings


def _supported(settings: dict[str, Any]) -> dict[str, Any]:
    """Drop settings this checkout's gateway does not have yet (CORS lands separately)."""
    from gateway.config import Settings

    fields = set(Settings.__dataclass_fields__)
    return {k: v for k, v in settings.items() if k in fields}


@contextlib.contextmanager
def gateway_target(pacs: Any, kind: str, *, faults: bool = True) -> Iterator[list[str]]:
    """The gateway in front of ``pacs`` (a started OrthancServer or DcmqrscpServer)."""
    settings = _supported(gateway_settings(kind))
    with contextlib.ExitStack() as stack:
        config = pacs.pacs_config()
        if kind == "dcmqrscp":
            config = dataclasses.replace(config, header_attributes=DCMQRSCP_UNKEPT)
        main = GatewayServer(config, **settings).start()
        stack.callback(main.stop)
        args = [
            "--base-url",
            main.url,
            "--wado-uri-url",
            main.root + "/wado",
            "--empty-result",
            "204",  # the gateway's default qido_empty_status
        ]
        if "cors_origins" in settings:
            args += ["--allowed-origin", VIEWER_ORIGIN]
        if faults:
            peers = {
                "unreachable": ClosedPort(),
                "silent": SilentListener(),
                "aborting": AbortingFindPeer(),
                "busy": FindStatusPeer(0xA700),
                "failing": FindStatusPeer(0xC000),
            }
            for name, peer in peers.items():
                peer.start()
                stack.callback(peer.stop)
                gateway = GatewayServer(peer.pacs_config(), **FAULT_SETTINGS).start()
                stack.callback(gateway.stop)
                args += [f"--{name}-url", gateway.url]
            timeout = max(FAULT_SETTINGS["connect_timeout"], FAULT_SETTINGS["dimse_timeout"])
            args += ["--pacs-timeout", str(timeout)]
        yield args


@contextlib.contextmanager
def orthanc_dicomweb_target(orthanc: Any) -> Iterator[list[str]]:
    """Orthanc's DICOMweb plugin (1.7 on Debian 12) as a server under test."""
    yield [
        "--base-url",
        orthanc.dicomweb_url,
        "--wado-uri-url",
        orthanc.http_url + "/wado",
        "--empty-result",
        "200",
    ]
