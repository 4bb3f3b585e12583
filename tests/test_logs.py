from __future__ import annotations

import json
import logging

from prsm.logs import ConsoleFormatter, JSONFormatter, correlation_id


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("prsm.test", logging.INFO, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return record


def test_json_line_has_fields_extras_and_correlation_id() -> None:
    """A JSON line carries level, logger, message, pid, extras and the current id."""
    token = correlation_id.set("cid-77")
    try:
        line = JSONFormatter().format(_record("hello", userId="u1"))
    finally:
        correlation_id.reset(token)
    entry = json.loads(line)
    assert entry["message"] == "hello"
    assert entry["level"] == "info"
    assert entry["correlationId"] == "cid-77"
    assert entry["userId"] == "u1"
    assert isinstance(entry["pid"], int)
    assert entry["ts"].endswith("Z")


def test_json_line_without_a_request_has_no_correlation_id() -> None:
    """Outside a request there is no correlationId key at all."""
    assert "correlationId" not in json.loads(JSONFormatter().format(_record("boot")))


def test_console_line_shows_the_correlation_id() -> None:
    """The console format keeps the id, in brackets."""
    token = correlation_id.set("cid-8")
    try:
        assert ConsoleFormatter().format(_record("hi")).endswith("[cid-8]")
    finally:
        correlation_id.reset(token)
