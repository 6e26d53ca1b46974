"""A private DCMTK dcmqrscp for the test suite.

dcmqrscp is the second, stricter PACS: a different C-FIND implementation
(it silently drops keys it does not index, such as ModalitiesInStudy), a small
PDU size and no DICOMweb at all, so the gateway's DIMSE side is exercised
against more than one vendor.

Limits to keep in mind (DCMTK 3.6.7):

* one storage area holds at most 500 studies; beyond that dcmqrscp evicts old
  studies (and crashed doing so in the lab), so :meth:`DcmqrscpServer.check_capacity`
  refuses to seed more;
* it accepts only uncompressed transfer syntaxes (plus one compressed syntax
  chosen with a ``+x?`` flag, not used here);
* a ``UserName``/``GroupName`` line would make it switch user when started as
  root, so the generated config has none.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from .ports import free_port
from .process import ProcessServer

#: dcmqrscp's hard cap on studies per storage area.
MAX_STUDIES = 500


def dcmqrscp_binary() -> str | None:
    """Path of DCMTK's dcmqrscp (pynetdicom has no script of that name)."""
    found = shutil.which("dcmqrscp")
    if found:
        return found
    return "/usr/bin/dcmqrscp" if Path("/usr/bin/dcmqrscp").is_file() else None


class DcmqrscpServer(ProcessServer):
    """dcmqrscp on 127.0.0.1 with one read/write storage area in its work dir.

    ``move_destinations`` (AE title -> (host, port)) become HostTable entries:
    dcmqrscp only moves to AE titles listed there. Changing them needs a
    :meth:`restart` (the config is rewritten on every start).
    """

    kind = "dcmqrscp"

    def __init__(
        self,
        *,
        aet: str = "DCMQRSCP",
        move_destinations: Mapping[str, tuple[str, int]] | None = None,
        workdir: Path | None = None,
        max_pdu: int = 16384,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(aet=aet, port=free_port(), workdir=workdir, start_timeout=start_timeout)
        self.move_destinations: dict[str, tuple[str, int]] = dict(move_destinations or {})
        self.max_pdu = max_pdu

    @property
    def storage_dir(self) -> Path:
        """The storage area (files plus dcmqrscp's ``index.dat``)."""
        return self.workdir / "storage" / self.aet

    @property
    def config_path(self) -> Path:
        """The dcmqrscp config file written for this instance."""
        return self.workdir / "dcmqrscp.cfg"

    def config_text(self) -> str:
        """The dcmqrscp configuration file (what :meth:`start` writes)."""
        hosts = "\n".join(
            f"dest{i} = ({aet}, {host}, {port})"
            for i, (aet, (host, port)) in enumerate(sorted(self.move_destinations.items()))
        )
        return (
            "# written by tests/peers/dcmqrscp.py -- no UserName/GroupName on purpose\n"
            f"NetworkTCPPort  = {self.port}\n"
            f"MaxPDUSize      = {self.max_pdu}\n"
            "MaxAssociations = 16\n"
            "\n"
            "HostTable BEGIN\n"
            f"{hosts}\n"
            "HostTable END\n"
            "\n"
            "VendorTable BEGIN\n"
            "VendorTable END\n"
            "\n"
            "AETable BEGIN\n"
            f"{self.aet}  {self.storage_dir}  RW  ({MAX_STUDIES}, 1024mb)  ANY\n"
            "AETable END\n"
        )

    def _write_config(self) -> None:
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())

    def _command(self) -> list[str]:
        binary = dcmqrscp_binary()
        if binary is None:
            raise FileNotFoundError("dcmqrscp not found (apt-get install dcmtk)")
        # Default mode: one forked child per association (like a real archive,
        # and the children are ended with the process group on stop()).
        return [binary, "-v", "-c", str(self.config_path)]

    def add_modality(self, aet: str, host: str, port: int) -> None:
        """Register a C-MOVE destination; restarts the server if it is running."""
        self.move_destinations[aet] = (host, port)
        if self.running:
            self.restart()

    @staticmethod
    def check_capacity(study_count: int) -> None:
        """Refuse to seed more studies than dcmqrscp keeps without evicting."""
        if study_count > MAX_STUDIES:
            raise ValueError(
                f"dcmqrscp keeps at most {MAX_STUDIES} studies per storage area "
                f"(got {study_count}); it would silently evict old ones"
            )


__all__ = ["MAX_STUDIES", "DcmqrscpServer", "dcmqrscp_binary"]
