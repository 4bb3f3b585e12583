"""Structured logs: one JSON object a line, each with the correlation id of its request."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

correlation_id: ContextVar[str | None] = ContextVar("prsm_correlation_id", default=None)

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged as a field.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}  # uvicorn's ANSI-coloured duplicate
)


class JSONFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "pid", "correlationId", ...extra}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON object."""
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        cid = correlation_id.get()
        if cid is not None:
            entry["correlationId"] = cid
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    """Readable lines for a person at a terminal, still with the correlation id."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one readable line."""
        cid = correlation_id.get()
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        if cid is not None:
            line += f" [{cid}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Route every logger (ours, uvicorn's) to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Our access log replaces uvicorn's, so that it carries the correlation id.
    logging.getLogger("uvicorn.access").disabled = True
