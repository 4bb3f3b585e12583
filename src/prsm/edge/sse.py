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
RESPONSES_PATH = OPENAI_PREFIX + "responses"
"""The Responses API, whose streams end with typed events instead."""


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; `data` as JSON unless it is already a string."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def error_event(
    error: errors.HTTPStatusError, cid: str | None, path: str, sequence: int = 0
) -> bytes:
    """The frames that end a stream at `path` with `error`: the Responses API's typed `error`
    event (numbered `sequence`) under /v1/responses, OpenAI's `data: {"error": …}` then
    `[DONE]` elsewhere under /v1/, PRSM's `event: error` (the error body with its `status`)
    everywhere else."""
    if path.startswith(RESPONSES_PATH):
        detail = openai_error(error)[1]["error"]
        fields = {k: detail[k] for k in ("code", "message", "param")}
        return sse({"type": "error", "sequence_number": sequence} | fields, "error")
    if path.startswith(OPENAI_PREFIX):
        return sse(openai_error(error)[1]) + OPENAI_DONE
    return sse(error_payload(error, cid) | {"status": error.status_code}, "error")
