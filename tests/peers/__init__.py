"""Test harness helpers (not tests): real PACS processes and fault peers.

* :mod:`.orthanc` / :mod:`.dcmqrscp` -- private Orthanc and DCMTK dcmqrscp
  instances on free loopback ports, each with its own temp dir;
* :mod:`.dcmtk` -- DCMTK's echoscu/findscu/getscu/storescu as an independent
  client (always with ``TCP_NODELAY=1``);
* :mod:`.seed` -- load files into a peer with storescu, pydicom's charset files;
* :mod:`.faults` -- pynetdicom/socket peers that reject, abort, fail or hang;
* :mod:`.ports` -- free TCP ports.
"""

from .common import MoveDestination, Peer, pacs_config
from .dcmqrscp import DcmqrscpServer, dcmqrscp_binary
from .faults import (
    AbortingFindPeer,
    ClosedPort,
    FindStatusPeer,
    RejectingPeer,
    ScriptedPeer,
    SilentListener,
)
from .orthanc import OrthancServer, orthanc_binary
from .ports import free_port, port_is_open
from .process import PeerStartError, ProcessServer
from .seed import CharsetFile, SeedReport, charset_files, seed

__all__ = [
    "AbortingFindPeer",
    "CharsetFile",
    "ClosedPort",
    "DcmqrscpServer",
    "FindStatusPeer",
    "MoveDestination",
    "OrthancServer",
    "Peer",
    "PeerStartError",
    "ProcessServer",
    "RejectingPeer",
    "ScriptedPeer",
    "SeedReport",
    "SilentListener",
    "charset_files",
    "dcmqrscp_binary",
    "free_port",
    "orthanc_binary",
    "pacs_config",
    "port_is_open",
    "seed",
]
