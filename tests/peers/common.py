"""What every peer in the harness has in common: an AE title and an address.

The gateway only needs ``aet``/``host``/``port`` to talk to a peer, so tests can
swap a real PACS for a fault peer without caring which it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from gateway.config import PacsConfig


class Peer(Protocol):
    """Anything the gateway can be pointed at."""

    aet: str
    host: str
    port: int


def in_ci() -> bool:
    """True when running in CI (``CI=true``), where missing PACS binaries are errors."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def need(available: bool, what: str, install: str) -> None:
    """Skip (on a developer machine) or fail (in CI) when software is missing.

    In CI a silent skip would hide the whole integration suite, so there the
    missing binary is reported as a failure.
    """
    if available:
        return
    message = f"{what} is not installed ({install})"
    if in_ci():
        pytest.fail(f"{message}; CI=true, so this is an error, not a skip", pytrace=False)
    pytest.skip(message)


@dataclass(frozen=True)
class MoveDestination:
    """A C-MOVE target the PACS know in advance: a test's store SCP listens here."""

    aet: str
    host: str
    port: int


def pacs_config(peer: Peer, name: str | None = None, **overrides: Any) -> PacsConfig:
    """A :class:`gateway.config.PacsConfig` for ``peer``.

    ``overrides`` are the remaining PacsConfig fields (``retrieve_method``,
    ``max_associations``), so a test states only what it cares about.
    """
    return PacsConfig(
        name=name or peer.aet.lower(),
        aet=peer.aet,
        host=peer.host,
        port=peer.port,
        **overrides,
    )


__all__ = ["MoveDestination", "Peer", "in_ci", "need", "pacs_config"]
