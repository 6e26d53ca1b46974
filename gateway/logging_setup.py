"""Log output: plain text or one JSON object per line, each record stamped with
the id of the HTTP request it was logged under.

The request id lives in a context variable that the web layer sets for each
request (``gateway.web.observability``); tasks started while handling a request
(a streaming body, a shared retrieve) inherit it. ``RequestIdFilter`` copies
it onto every record that reaches a handler made here, whichever module logged
it. A leaf module: any layer may import ``request_id``.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import IO, Any, Literal

import orjson

LogFormat = Literal["text", "json"]

request_id: ContextVar[str | None] = ContextVar("dicomweb_gateway_request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"

#: What every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
}


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` when the record was logged under a request (text
    shows ``-`` otherwise, JSON null)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = request_id.get()
        if current is not None:
            setattr(record, "request_id", current)  # noqa: B010 - not a declared attribute
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, defaults={"request_id": "-"})


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id", ...extra fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()


def make_handler(log_format: LogFormat, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing ``log_format`` lines to ``stream`` (stderr by default)."""
    if log_format not in ("text", "json"):
        raise ValueError(f"log_format must be text or json, not {log_format!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging(level: str, log_format: LogFormat = "text") -> logging.Handler | None:
    """Give the root logger one of our handlers, at ``level`` (the CLI calls this).

    Like ``logging.basicConfig``, it does nothing when the root logger already has
    handlers: whoever installed them (an embedding program, pytest) stays in charge.
    """
    root = logging.getLogger()
    if root.handlers:
        return None
    handler = make_handler(log_format)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return handler


__all__ = [
    "JsonFormatter",
    "LogFormat",
    "RequestIdFilter",
    "TextFormatter",
    "configure_logging",
    "make_handler",
    "request_id",
]
