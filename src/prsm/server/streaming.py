"""Streamed answers: a generation running in a task of its own, its text sent as server-sent
events while it comes.

The response starts only once the answer's first text exists: everything that fails before
(authentication, validation, a saturated engine, a prompt too long) is an ordinary JSON error
with its status. What fails after is an error event in the stream, never a stream that just
stops. A caller that disconnects cancels the generation at once (through the connection's
disconnect hook, not at the next write), and its engine slot is free for the next query.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from prsm.edge.disconnect import ClientGone, until_disconnected
from prsm.edge.errors import as_http_error
from prsm.edge.sse import error_event, sse
from prsm.engines import Generation
from prsm.engines.text import TextSink
from prsm.server.service import query_response

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # nginx and the proxies that follow its header pass each event on at once.
    (b"x-accel-buffering", b"no"),
]
_DONE = object()


def event_schema(*names: str) -> dict[str, Any]:
    """The OpenAPI description of one server-sent event of these names (a JSON `data`)."""
    data = {"type": "string", "contentMediaType": "application/json"}
    return {
        "type": "object",
        "required": ["data"],
        "properties": {"event": {"enum": list(names)}, "data": data},
    }


class AnswerStream:
    """`work(on_text)` running in its own task; its deltas, then its Generation, in order."""

    def __init__(self, work: Callable[[TextSink], Awaitable[Generation]]) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._first: Any = None
        self.model = ""
        """The id of the model answering, once known (a fallback may change it before the
        first text)."""
        self.task = asyncio.get_running_loop().create_task(self._run(work))

    async def _run(self, work: Callable[[TextSink], Awaitable[Generation]]) -> Generation:
        try:
            return await work(self._queue.put_nowait)
        finally:
            self._queue.put_nowait(_DONE)

    async def started(self) -> None:
        """Wait for the first text (or the end); an error before any text is raised here."""
        try:
            self._first = await self._queue.get()
        except asyncio.CancelledError:
            self.task.cancel()
            raise
        if self._first is _DONE:
            await self.task  # raises what failed the generation

    async def pieces(self) -> AsyncIterator[str | Generation]:
        """The text deltas after `started()`, then the Generation; a later error is raised."""
        try:
            item = self._first
            while item is not _DONE:
                yield item
                item = await self._queue.get()
            yield await self.task
        finally:
            self.task.cancel()  # the caller stopped reading: the generation stops too


StreamFormat = Callable[[AnswerStream], AsyncIterator[bytes]]
"""The events of one wire format for an answer stream."""


def query_events(cid: str) -> StreamFormat:
    """PRSM's own: `delta` events `{text}`, then `done` with the whole response, or `error`
    with the error body and its status."""

    async def events(stream: AnswerStream) -> AsyncIterator[bytes]:
        try:
            async for piece in stream.pieces():
                if isinstance(piece, str):
                    yield sse({"text": piece}, "delta")
                else:
                    done = query_response(piece, cid).to_wire()
                    yield sse(done | {"finishReason": piece.finish_reason}, "done")
        except Exception as exc:
            yield error_event(as_http_error(exc), cid, "")

    return events


class EventStream(Response):
    """A `text/event-stream` response of `frames`; `on_gone()` when the client disconnects
    before the last one."""

    def __init__(self, frames: AsyncIterator[bytes], on_gone: Callable[[], None]) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = list(SSE_HEADERS)
        self._frames = frames
        self._on_gone = on_gone

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the events as they come; the connection closing stops the answer."""
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        try:
            await until_disconnected(self._send_all(send), receive, scope)
        except (ClientGone, OSError):
            self._on_gone()

    async def _send_all(self, send: Send) -> None:
        try:
            async for frame in self._frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        finally:
            await _close(self._frames)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _close(frames: AsyncIterator[bytes]) -> None:
    close = getattr(frames, "aclose", None)
    if close is not None:
        await close()
