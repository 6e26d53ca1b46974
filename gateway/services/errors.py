"""Service-level failures, each carrying the HTTP status it stands for.

Services raise these without knowing about HTTP; the web layer maps every
``GatewayError`` to a response in one place by reading ``status`` and ``message``
(PS3.18 8.6 status codes).  A new failure (e.g. the PACS ones: 502, 503, 504) is
one more subclass with its own ``status``; the mapping does not change.
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    """Base of every failure the web layer turns into an error response."""

    status: ClassVar[int] = 500

    def __init__(self, message: str, *, identifying: str = "") -> None:
        """``identifying``: words from elsewhere (a PACS's error comment) that may name a
        patient or a UID; the client gets them, a log line only with ``log_phi``."""
        full = f"{message} ({identifying})" if identifying else message
        super().__init__(full)
        self.message = full
        self._loggable = message + (" (PACS comment left out of the log)" if identifying else "")

    def log_text(self, phi: bool) -> str:
        """The message for a log line (see ``identifying``)."""
        return self.message if phi else self._loggable

    def headers(self) -> dict[str, str]:
        """Extra response headers (e.g. Retry-After); none by default."""
        return {}


class InvalidParameter(GatewayError):
    """A request parameter is present but its value cannot be used (PS3.18 8.6.1.2)."""

    status: ClassVar[int] = 400

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason


class NotAcceptable(GatewayError):
    """None of the media types the client accepts can be produced."""

    status: ClassVar[int] = 406


class NotFound(GatewayError):
    """The target resource (study, series, instance, frame) does not exist."""

    status: ClassVar[int] = 404


class PacsFailed(GatewayError):
    """The PACS could not be reached, refused us, aborted, or answered a failure (ERR-02/03)."""

    status: ClassVar[int] = 502

    def __init__(self, message: str, *, status: int | None = None, identifying: str = "") -> None:
        super().__init__(message, identifying=identifying)
        self.dimse_status = status


class PacsBusy(GatewayError):
    """The PACS is out of resources or refused for now; worth retrying later."""

    status: ClassVar[int] = 503

    def __init__(
        self,
        message: str,
        *,
        retry_after: float = 2.0,
        identifying: str = "",
        status: int | None = None,
    ) -> None:
        super().__init__(message, identifying=identifying)
        self.retry_after = retry_after
        #: The DIMSE status (A7xx) when the PACS answered one, None for our own pool.
        self.dimse_status = status

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class PacsTimeout(GatewayError):
    """The PACS did not answer within the configured timeout."""

    status: ClassVar[int] = 504


class NoPacs(GatewayError):
    """The request names a PACS (AE title) the gateway does not know."""

    status: ClassVar[int] = 404
