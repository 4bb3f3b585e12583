"""Correlation ids, access logs and the last-resort error answer, as one pure-ASGI middleware.

The id comes from the request's `X-Correlation-ID` when it is a sane token, else a new one is
made; it goes back on every response, into every log line (a context variable) and to the
handlers (`scope["state"]["correlation_id"]`).
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prsm.contracts import CORRELATION_HEADER
from prsm.edge.errors import as_http_error, send_error_reply
from prsm.logs import correlation_id

access_log = logging.getLogger("prsm.access")
log = logging.getLogger("prsm.server")

HEADER = CORRELATION_HEADER.lower().encode()
"""The correlation id's header as ASGI carries it (lower case, bytes)."""
_ANSWER_HEADERS = "answer_headers"


def add_answer_headers(state: dict[str, Any] | None, headers: dict[str, str]) -> None:
    """Headers the request's answer will carry, whatever it turns out to be (set while it is
    worked out: the response cache's verdict, the caller's budget)."""
    if state is not None:
        state.setdefault(_ANSWER_HEADERS, {}).update(headers)


_VALID_ID = re.compile(rb"[A-Za-z0-9._:/+=\-]{1,128}")
# Probes are frequent and dull: logged at debug so they do not drown the queries.
_QUIET_PATHS = frozenset({"/health", "/ready", "/started", "/metrics"})


def new_correlation_id() -> str:
    """32 random hex digits (a uuid4's randomness without building a UUID object)."""
    return os.urandom(16).hex()


def incoming_correlation_id(scope: Scope) -> str:
    """The request's `X-Correlation-ID` when it is a sane token, else a new one."""
    for name, value in scope["headers"]:
        if name == HEADER and _VALID_ID.fullmatch(value):
            return str(value.decode())
    return new_correlation_id()


class CorrelationMiddleware:
    """Pure-ASGI middleware: every request gets a correlation id (in `scope["state"]`, on the
    response, in every log line)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Set the correlation id for this request, and add it to the response's headers."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = incoming_correlation_id(scope)
        scope.setdefault("state", {})["correlation_id"] = cid
        token = correlation_id.set(cid)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != HEADER]
                headers.append((HEADER, cid.encode()))
                for name, value in scope["state"].get(_ANSWER_HEADERS, {}).items():
                    headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.error("unhandled error", exc_info=exc)
            if status:  # the answer had begun; all we can do is end the connection
                return
            status = await send_error_reply(send, as_http_error(exc), cid, scope.get("path", ""))
        finally:
            path = scope.get("path", "")
            access_log.log(
                logging.DEBUG if path in _QUIET_PATHS else logging.INFO,
                "%s %s %s",
                scope.get("method"),
                path,
                status,
                extra={
                    "method": scope.get("method"),
                    "path": path,
                    "status": status,
                    "durationMs": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            correlation_id.reset(token)
