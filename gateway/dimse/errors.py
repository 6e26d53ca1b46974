"""One exception type per way a DIMSE exchange can fail.

The services layer maps them to HTTP statuses (502/503/504) in one place;
the pool uses them to decide whether an association may be reused (never after
any of these) and whether to back off (refused, unreachable).
"""

from __future__ import annotations


class DimseError(Exception):
    """Base of every failure talking to a DIMSE peer."""


class AssociationRefused(DimseError):
    """The peer answered A-ASSOCIATE-RJ, or accepted none of the contexts we need."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class NoAcceptableContext(AssociationRefused):
    """The peer accepted the association but none of the presentation contexts.

    For C-STORE this means the PACS does not take that SOP class (or syntax):
    a failure of one instance, not of the PACS, so the pool does not back off.
    """


class PeerUnreachable(DimseError):
    """The TCP connection could not be made (refused, no route, DNS)."""


class DimseTimeout(DimseError):
    """The peer did not answer in time (connect, accept, response or idle network)."""


class AssociationAborted(DimseError):
    """The association ended under us: A-ABORT, closed socket or protocol error."""


class StatusError(DimseError):
    """A DIMSE operation ended with a failure status (PS3.7 Annex C)."""

    def __init__(self, operation: str, status: int, comment: str = "") -> None:
        detail = f" ({comment})" if comment else ""
        super().__init__(f"{operation} failed with status 0x{status:04X}{detail}")
        self.operation = operation
        self.status = status
        self.comment = comment


class PoolExhausted(DimseError):
    """Every association the pool may open is busy, and none came free in time."""
