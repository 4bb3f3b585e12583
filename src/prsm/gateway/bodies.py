"""What the gateway reads of bodies: a request's whole (bounded: tries may send it again), an
upstream's small answer or retried error held in memory, an event stream passed on whole
events at a time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prsm.errors import ConnectionLostError
from prsm.gateway.upstream import BufferedResponse, UpstreamResponse

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


HELD_BODY = 64 * 1024
"""Most bytes of an upstream's body read whole within a try: a response declaring no more,
and a retried error answer held to pass on if it is the last."""


def is_event_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the response headers say an event stream."""
    return any(
        k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers
    )


class WholeEvents:
    """Splits an event stream's bytes at the end of its last complete event; holds the rest."""

    def __init__(self) -> None:
        self._tail = b""

    def take(self, chunk: bytes) -> bytes:
        """The complete events so far, with `chunk` added."""
        data = self._tail + chunk if self._tail else chunk
        end = max(end_after(data, separator) for separator in EVENT_ENDS)
        if len(data) - end > LONGEST_HELD:  # one event this long is passed on as it comes
            end = len(data)
        self._tail = data[end:]
        return data[:end]

    def rest(self) -> bytes:
        """What came after the last complete event (passed on as it is at a clean end)."""
        return self._tail


EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")
LONGEST_HELD = 256 * 1024
"""Most bytes of an unfinished event held back; the gateway's memory per stream stays bounded."""


def end_after(data: bytes, separator: bytes) -> int:
    """The index just past the last `separator` in `data`, 0 if there is none."""
    found = data.rfind(separator)
    return found + len(separator) if found >= 0 else 0


async def held(response: UpstreamResponse) -> UpstreamResponse | None:
    """A retried error answer read into memory (the connection is free for the next try), or
    None if it is too long to hold or breaks off."""
    try:
        return await whole(response, HELD_BODY)
    except (ConnectionLostError, TooLong):
        return None


def small(response: UpstreamResponse) -> bool:
    """Whether the response declares a body short enough to read whole before relaying it."""
    for name, value in response.headers:
        if name.lower() == b"content-length":
            return value.isdigit() and int(value) <= HELD_BODY
    return False


class TooLong(Exception):
    """A body longer than the most that is held."""


async def whole(response: UpstreamResponse, limit: int = HELD_BODY) -> UpstreamResponse:
    """The response with its body read into memory and its connection given back; raises
    `ConnectionLostError` if the body breaks off."""
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in response.chunks():
            size += len(chunk)
            if size > limit:
                raise TooLong()
            parts.append(chunk)
    finally:
        response.release()
    return BufferedResponse(response.status, response.headers, b"".join(parts))


GONE = b"\x00gone"


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body (tries may need to send it again), None past `limit`, `GONE`
    if the caller disconnected first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return GONE
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks) if len(chunks) != 1 else chunks[0]
