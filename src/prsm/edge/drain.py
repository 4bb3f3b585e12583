"""Graceful drain on SIGTERM, for `prsm serve` and `prsm gateway`: nothing lost when a pod is
replaced.

uvicorn stops accepting connections the moment SIGTERM arrives and, after its graceful
timeout, cuts what is left with a plain-text 500. A load balancer or Kubernetes Service still
sends traffic for a few seconds after a pod is told to stop, so here instead:

1. at once: `/ready` answers 503, so the pod leaves the endpoints;
2. for a grace (`server.drain_seconds`, `gateway.drain_seconds`): work is still taken, for
   callers that had not yet heard;
3. then new work gets 503 `shutting_down` with `Retry-After` and `Connection: close` (the SDK
   and the gateway try another instance, on a new connection); work running or waiting goes
   on;
4. once none is left — or at the bound (`server.drain_timeout_seconds`; for the gateway its
   longest route timeout), when what still waits gets 503 too — the listeners close, and
   connections already accepted are answered for as long as requests keep arriving on them
   (`QUIET` apart, `LINGER` at most): uvicorn would close an idle connection at once, and a
   request already on its way on it would meet a reset instead of its 503;
5. then uvicorn is asked to stop, and the process exits 0.

A second SIGTERM stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any, Protocol

from prsm.errors import ServiceUnavailableError

log = logging.getLogger("prsm.server")

QUIET = 0.15
"""Seconds without a request on the connections left before the server stops."""
LINGER = 2.0
"""The longest the connections left are still answered once the listeners closed."""


class Drainable(Protocol):
    """What a drain closes and waits for: the API's `Admission`, the gateway."""

    @property
    def in_flight(self) -> int:
        """Requests (or queries) now running."""

    def close(self, error: ServiceUnavailableError) -> None:
        """Refuse new work with `error`; work already taken goes on."""

    async def idle(self) -> None:
        """Return once no work is left."""

    def refuse_waiting(self, error: ServiceUnavailableError) -> None:
        """Answer work not yet started with `error`."""


class Drain:
    """The drain of one server process; `install()` it from the app's start-up.

    `grace`: seconds new work is still taken after SIGTERM; `bound`: seconds after SIGTERM
    until work not yet started is refused and the server stops regardless.
    """

    def __init__(self, grace: float, bound: float, admission: Drainable) -> None:
        self.grace = grace
        self.bound = bound
        self.admission = admission
        self.draining = False
        self._task: asyncio.Task[None] | None = None
        self._stop: Callable[[], None] = lambda: None
        self._server: Any = None

    def install(self) -> None:
        """Take SIGTERM over from uvicorn, keeping its way to stop for the end of the drain."""
        handler = signal.getsignal(signal.SIGTERM)
        self._stop = _uvicorn_stop(handler)
        self._server = getattr(handler, "__self__", None)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.begin)

    def begin(self) -> None:
        """Start draining: readiness turns 503 at once; after the grace, new work is refused."""
        if self._task is not None:  # a second SIGTERM: stop now
            log.warning("second SIGTERM: stopping without waiting for queries in flight")
            self._task.cancel()
            self._stop()
            return
        self._task = asyncio.get_running_loop().create_task(self.run(), name="prsm-drain")

    async def run(self) -> None:
        """Drain: wait for the grace, then for work in flight up to the timeout, then stop the
        server."""
        self.draining = True
        log.info(
            "draining",
            extra={"graceSeconds": self.grace, "inFlight": self.admission.in_flight},
        )
        await asyncio.sleep(self.grace)
        self.admission.close(_shutting_down("this instance is shutting down"))
        try:
            async with asyncio.timeout(max(0.0, self.bound - self.grace)):
                await self.admission.idle()
        except TimeoutError:
            log.warning("drain bound reached; queries still waiting are refused")
            self.admission.refuse_waiting(
                _shutting_down("this instance shut down before the engine was free")
            )
        await self._answer_connections_left()
        log.info("drained; stopping")
        self._stop()

    async def _answer_connections_left(self) -> None:
        """Close the listeners (nothing new is accepted), then keep answering the connections
        already accepted until no request came for `QUIET` seconds, `LINGER` at most."""
        state = getattr(self._server, "server_state", None)
        for listener in getattr(self._server, "servers", ()):
            listener.close()
        if state is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER
        seen = -1
        while state.connections and state.total_requests != seen and loop.time() < deadline:
            seen = state.total_requests
            await asyncio.sleep(QUIET)


def _shutting_down(message: str) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        f"{message}; retry on another instance",
        code="shutting_down",
        retry_after=1,
        not_run=True,
    )


def _uvicorn_stop(handler: Any) -> Callable[[], None]:
    """How to ask the uvicorn server in this process to stop, exiting 0.

    uvicorn handles SIGTERM with its `Server.handle_exit`; calling that would make it raise
    SIGTERM again once stopped (exit status 143), so its `should_exit` is set instead. Outside
    uvicorn, the previous handler is called as a signal would.
    """
    server = getattr(handler, "__self__", None)
    if server is not None and hasattr(server, "should_exit"):
        return lambda: setattr(server, "should_exit", True)
    if callable(handler):
        return lambda: handler(signal.SIGTERM, None)
    return lambda: signal.raise_signal(signal.SIGTERM)
