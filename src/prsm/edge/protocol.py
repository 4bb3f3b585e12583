"""The HTTP/1.1 protocol of `prsm serve` and `prsm gateway`: uvicorn's httptools protocol with
bounds on what a client may make the server hold before the application sees a request.

uvicorn reads request heads of any size and number of headers, and waits for a head or a
declared body as long as the client likes. Here:

- a head (request line and headers) over `max_header_bytes`, or with more than `max_headers`
  headers, is answered 431 and the connection closed — counted as it arrives, so a 50 MB header
  is refused after the first `max_header_bytes`, not read into memory;
- a head not complete `header_timeout` seconds after the connection opened (or the previous
  response ended) is answered 408 and closed; a declared body not complete `body_timeout`
  seconds after its head is answered 408 when no response has begun, else just closed (the
  application then sees `http.disconnect`);
- a connection closed while the client may still be sending (an early 413, 431 or 408) lingers:
  the server half-closes, then reads and drops up to `linger_bytes` for up to
  `linger_seconds` before closing. Closing with unread bytes makes the kernel reset the
  connection, and a client that sends its whole body before reading (Python's `urllib`)
  would see the reset instead of the answer. nginx lingers for the same reason.

Answers are the API's JSON errors, with a fresh correlation id.

What the application writes in one turn of the event loop goes to the socket as one write at
the end of the turn (`_LingeringTransport`, up to 64 KiB): the turn's answers leave together,
each head with its body.
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from prsm import metrics
from prsm.config import HttpSettings, load_settings
from prsm.edge.correlation import new_correlation_id
from prsm.edge.disconnect import EXTENSION, DisconnectHook
from prsm.edge.errors import error_body, error_headers
from prsm.errors import HTTPStatusError

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
_HELD_MOST = 64 * 1024
"""Bytes a connection holds back until the end of the event loop's turn, at most: past it they
are written at once, so that the transport's flow control sees them."""


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that is refused."""


def _too_large(limit: int) -> HTTPStatusError:
    return HTTPStatusError(
        f"request headers are larger than {limit} bytes", status_code=431, code="header_too_large"
    )


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's `http` protocol class for PRSM's servers. Its bounds are the `http.*`
    settings, read once per process from the environment and `PRSM_CONFIG` (uvicorn's worker
    processes import this class by name, so they cannot be handed an instance's options)."""

    _limits: ClassVar[HttpSettings | None] = None

    @staticmethod
    def limits_in_force() -> HttpSettings:
        """The HTTP bounds this process enforces (set once at start by `prsm serve` or `prsm
        gateway`)."""
        if GuardedHttpProtocol._limits is None:
            GuardedHttpProtocol._limits = load_settings().http
        return GuardedHttpProtocol._limits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = self.limits_in_force()
        self._head_bytes = 0
        self._header_count = 0
        self._parsed_head = 0
        self._in_head = True
        self._refused = False
        self._pending: HTTPStatusError | None = None
        self._timer: TimerHandle | None = None
        self._body_unread = False
        self._lingering_on: asyncio.Transport | None = None  # the real transport, while lingering
        self._linger_left = 0

    # -- connection ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the request-head timer for the new connection."""
        lingering = _LingeringTransport(transport, self)
        super().connection_made(lingering)  # type: ignore[arg-type]
        self._arm(self.limits.header_timeout_seconds, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the connection's timers."""
        self._disarm()
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and not cycle.response_complete:
            hook = cycle.scope.get("extensions", {}).get(EXTENSION)
            if isinstance(hook, DisconnectHook):
                hook.fire()  # the request's work stops: nobody is left to answer

    def data_received(self, data: bytes) -> None:
        """Feed bytes to the parser, dropping them while lingering after an early answer."""
        if self._lingering_on is not None:
            self._linger_left -= len(data)
            if self._linger_left < 0:
                self._end_linger()
            return
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)  # a callback's _Refused ends up in send_400_response
        # A head still incomplete after this many bytes is too large: refused before the
        # parser buffers more of it.
        if self._in_head and self._head_bytes > self.limits.max_header_bytes and not self._refused:
            self._refuse(_too_large(self.limits.max_header_bytes), "header_too_large")

    def send_400_response(self, msg: str) -> None:
        """Answer a malformed request with PRSM's JSON error, not uvicorn's plain text."""
        if self._pending is not None:  # parsing stopped by a refusal, not by a bad request
            error, self._pending = self._pending, None
            self._refuse(error, error.code)
            return
        super().send_400_response(msg)

    # -- parser callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A new request: reset the head's byte and header counts."""
        super().on_message_begin()
        if self._timer is None:  # a pipelined request, or the next one on a kept-alive connection
            self._arm(self.limits.header_timeout_seconds, self._head_too_slow)

    def on_url(self, url: bytes) -> None:
        """Count the request target against the head's byte limit."""
        self._parsed_head += len(url)
        self._check_head_size()
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count each header against the head's limits (bytes and number): 431 past them."""
        self._header_count += 1
        self._parsed_head += len(name) + len(value) + 4
        if self._header_count > self.limits.max_headers:
            self._pending = HTTPStatusError(
                f"more than {self.limits.max_headers} request headers",
                status_code=431,
                code="too_many_headers",
            )
            raise _Refused()
        self._check_head_size()
        super().on_header(name, value)

    def _check_head_size(self) -> None:
        """The head as parsed so far (a whole head can arrive in one read)."""
        if self._parsed_head > self.limits.max_header_bytes:
            self._pending = _too_large(self.limits.max_header_bytes)
            raise _Refused()

    def on_headers_complete(self) -> None:
        """The head is complete: stop its timer, start the body's if one is declared."""
        self._in_head = False
        self._disarm()
        self.scope.setdefault("extensions", {})[EXTENSION] = DisconnectHook()  # type: ignore[assignment]
        super().on_headers_complete()
        if self._expects_body():
            self._body_unread = True
            self._arm(self.limits.body_timeout_seconds, self._body_too_slow)

    def on_message_complete(self) -> None:
        # Between requests uvicorn's keep-alive timeout watches the idle connection.
        """The request is complete: stop the body timer."""
        self._disarm()
        self._body_unread = False
        self._in_head, self._head_bytes, self._header_count, self._parsed_head = True, 0, 0, 0
        super().on_message_complete()

    # -- refusals ------------------------------------------------------------------------------

    def _expects_body(self) -> bool:
        for name, value in self.headers:
            if name == b"content-length":
                return value.strip() not in (b"0", b"")
            if name == b"transfer-encoding":
                return True
        return False

    def _head_too_slow(self) -> None:
        self._timer = None
        if self._head_bytes == 0 and (self.cycle is None or self.cycle.response_complete):
            self._close("idle_timeout")  # nothing asked yet: nobody to answer
            return
        error = HTTPStatusError(
            f"request headers not received within {self.limits.header_timeout_seconds:g}s",
            status_code=408,
            code="header_timeout",
        )
        self._refuse(error, "header_timeout")

    def _body_too_slow(self) -> None:
        self._timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            error = HTTPStatusError(
                f"request body not received within {self.limits.body_timeout_seconds:g}s",
                status_code=408,
                code="body_timeout",
            )
            cycle.response_started = True  # the application's own answer is no longer wanted
            self._refuse(error, "body_timeout")
        else:
            self._close("body_timeout")

    def _refuse(self, error: HTTPStatusError, reason: str) -> None:
        """Answer `error` as JSON and close the connection; nothing more is read."""
        cid = new_correlation_id()
        body = error_body(error, cid)
        lines = [b"HTTP/1.1 %d %s\r\n" % (error.status_code, _REASONS.get(error.status_code, b""))]
        for name, value in error_headers(error, cid).items():
            lines.append(name.encode() + b": " + value.encode() + b"\r\n")
        lines.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        if not self.transport.is_closing():
            self.transport.write(b"".join(lines) + body)
        self._close(reason)

    def _close(self, reason: str) -> None:
        self._refused = True
        self._disarm()
        metrics.HTTP_REFUSED.labels(reason).inc()
        if not self.transport.is_closing():
            self.transport.close()

    # -- lingering close -----------------------------------------------------------------------

    def may_still_send(self) -> bool:
        """Whether the client may still be sending this request: its body, or its head."""
        return self._body_unread or (self._in_head and self._head_bytes > 0)

    @property
    def lingering(self) -> bool:
        """Whether the connection is reading and dropping a body it already answered."""
        return self._lingering_on is not None

    def linger(self, transport: asyncio.Transport) -> None:
        """Half-close, then read and drop what comes, within the bounds; then close."""
        self._lingering_on = transport
        self._linger_left = self.limits.linger_bytes
        self._disarm()
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()
        self._timer = self.loop.call_later(self.limits.linger_seconds, self._end_linger)

    def _end_linger(self) -> None:
        self._timer = None
        if self._lingering_on is not None:
            self._lingering_on.close()

    def _arm(self, seconds: float, then: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, then)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _LingeringTransport:
    """The connection's transport, as uvicorn and the protocol see it: `close()` lingers while
    the client may still be sending (see the module's docstring), else closes at once; and
    what is written in one turn of the event loop goes to the socket as one write, at the end
    of the turn.

    uvicorn writes a response's head and its body separately, and its sockets send at once
    (TCP_NODELAY): two segments for every answer, sent while the turn's other requests are
    still being worked on. Held to the end of the turn, the answers of a busy API cost it a
    fifth to a quarter less CPU each (bench/api_throughput.py; joining head and body without
    waiting for the turn's end measured nothing: the gain is in sending the turn's answers
    together). A stream's chunks wait at most for the rest of the turn."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: bytes) -> None:
        if not self._held:
            self._protocol.loop.call_soon(self._flush)
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes >= _HELD_MOST:  # a large body goes on at once, under flow control
            self._flush()

    def _flush(self) -> None:
        """Write what the turn held, in one write (not once the connection is closing)."""
        if self._held:
            data = b"".join(self._held) if len(self._held) > 1 else self._held[0]
            self._held.clear()
            self._held_bytes = 0
            if not self._transport.is_closing():
                self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._held_bytes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def close(self) -> None:
        self._flush()
        if self.is_closing():
            return
        if self._protocol.may_still_send() and self._protocol.limits.linger_seconds > 0:
            self._protocol.linger(self._transport)
        else:
            self._transport.close()
