"""Server-sent events: one frame, and the error event that ends a stream in its API's format.

Shared by the API's streams and the gateway, which ends a stream its upstream cut off with the
same error event the API would have sent.
"""

from __future__ import annotations

import json
from typing import Any

from prsm import errors
from prsm.edge.errors import OPENAI_PREFIX, error_payload, openai_error

OPENAI_DONE = b"data: [DONE]\n\n"
"""OpenAI's last frame of every stream."""


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; `data` as JSON unless it is already a string."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def error_event(error: errors.HTTPStatusError, cid: str | None, path: str) -> bytes:
    """The frames that end a stream at `path` with `error`: OpenAI's `data: {"error": …}` then
    `[DONE]` under /v1/, PRSM's `event: error` (the error body with its `status`) elsewhere."""
    if path.startswith(OPENAI_PREFIX):
        return sse(openai_error(error)[1]) + OPENAI_DONE
    return sse(error_payload(error, cid) | {"status": error.status_code}, "error")
