"""The gateway's own answers: JSON with the correlation id, the specification's 502 when no
upstream answered, the error event that ends a stream an upstream broke off."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Send

from prsm.edge.correlation import HEADER as CID
from prsm.edge.errors import OPENAI_PREFIX
from prsm.edge.sse import error_event
from prsm.errors import error_for_status
from prsm.gateway.steps import Exchange

UNAVAILABLE = "AI service temporarily unavailable"
JSON_TYPE = (b"content-type", b"application/json")
RETRY_SOON = (b"retry-after", b"1")
"""On the gateway's own 5xx answers: another instance may answer a moment later."""


def cut_stream_event(exchange: Exchange) -> bytes:
    """The error event that ends a stream the upstream broke off, so it stays well formed."""
    cut = error_for_status(502, "the AI service broke off the stream", code="upstream_cut")
    return error_event(cut, exchange.cid, exchange.path)


async def unavailable(exchange: Exchange) -> int:
    """502: no upstream answered. OpenAI's error shape on `/v1`; elsewhere the specification's
    gateway body, `{error: "AI service temporarily unavailable"}`."""
    if exchange.path.startswith(OPENAI_PREFIX):
        failed = error_for_status(502, UNAVAILABLE, code="upstream_failed", retry_after=1)
        return await exchange.error(failed)
    payload = {"error": UNAVAILABLE, "correlationId": exchange.cid}
    await send_json(exchange.send, 502, payload, exchange.cid, [*exchange.extra, RETRY_SOON])
    return 502


async def send_json(
    send: Send,
    status: int,
    payload: dict[str, Any],
    cid: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a whole JSON answer with the correlation id (and `extra` headers)."""
    await send_raw_json(send, status, json.dumps(payload).encode(), cid, extra)


async def send_raw_json(
    send: Send,
    status: int,
    body: bytes,
    cid: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send `body`, JSON already, with the correlation id (and `extra` headers)."""
    headers = [JSON_TYPE, (b"content-length", str(len(body)).encode()), (CID, cid.encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
