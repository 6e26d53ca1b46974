"""Web-level fixtures: the real gateway (Hypercorn) in front of each session PACS.

Starting a gateway costs little, but a test module runs hundreds of requests
against the same PACS, so one gateway per (PACS, settings) is started on first
use and kept for the whole session.  ``gateway`` follows the parametrized
``pacs`` fixture; ``gateway_for(pacs, **settings)`` gives one with other
settings (``qido_empty_status=200``, ``qido_max_results=5`` ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.peers import DcmqrscpServer, OrthancServer
from tests.peers.gateway import GatewayServer

GatewayFactory = Callable[..., GatewayServer]


@pytest.fixture(scope="session")
def gateway_for() -> Iterator[GatewayFactory]:
    """``gateway_for(pacs, **settings)``: a started gateway, shared by every caller."""
    started: dict[tuple[str, int, tuple[tuple[str, Any], ...]], GatewayServer] = {}

    def get(pacs: OrthancServer | DcmqrscpServer, **settings: Any) -> GatewayServer:
        key = (pacs.kind, pacs.port, tuple(sorted(settings.items())))
        if key not in started:
            started[key] = GatewayServer(pacs.pacs_config(), **settings).start()
        return started[key]

    yield get
    for server in started.values():
        server.stop()


@pytest.fixture
def gateway(pacs: OrthancServer | DcmqrscpServer, gateway_for: GatewayFactory) -> GatewayServer:
    """The gateway (default settings) in front of the current ``pacs``."""
    return gateway_for(pacs)
