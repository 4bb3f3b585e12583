"""Refuse request bodies over a size limit with 413, before any handler reads them."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prsm.edge.errors import send_error_reply
from prsm.errors import PayloadTooLargeError
from prsm.logs import correlation_id


class BodyLimitMiddleware:
    """Reads the body up to `max_bytes` and replays it to the app; larger bodies get 413.

    Checks `Content-Length` first, so an honest large upload is refused without reading it,
    and counts the bytes of chunked ones.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, answering 413 once its body passes the limit."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(send, scope.get("path", ""))
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send, scope.get("path", ""))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, path: str) -> None:
        error = PayloadTooLargeError(f"request body is larger than {self.max_bytes} bytes")
        await send_error_reply(send, error, correlation_id.get(), path, [(b"connection", b"close")])
