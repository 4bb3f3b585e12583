"""Running the gateway: `prsm gateway`, with its configuration reloaded on SIGHUP.

A reload builds and starts a new `Gateway` from the file, then sends new requests to it; the
old one finishes the requests it has (up to its longest route timeout) and is closed. A file
that does not load is logged and the running configuration kept. Rate-limit budgets survive
a reload unless the storage settings change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import uvicorn

from prsm.edge.collector import freeze_startup_heap, tune_for_requests
from prsm.edge.correlation import incoming_correlation_id
from prsm.edge.drain import Drain
from prsm.edge.errors import send_error_reply
from prsm.edge.protocol import GuardedHttpProtocol
from prsm.errors import ConfigError, ServiceUnavailableError
from prsm.gateway.app import OWN_PATHS, Gateway
from prsm.gateway.config import GatewayConfig, load_gateway_config, parse_gateway_config
from prsm.gateway.replies import send_json
from prsm.gateway.steps import Receive, Scope, Send

log = logging.getLogger("prsm.gateway")


def default_config(api_url: str) -> GatewayConfig:
    """What `prsm up` runs: the specification's `/api/ai` → `/api/v1` in front of one API,
    `/api/v1` itself and the OpenAI-compatible `/v1`, with one budget of 1000 requests per 15
    minutes per client IP across them (a caller limited on one path cannot walk round through
    another). A query or a job the API may have received is not sent again (it is charged, or
    stored): only what provably did not run goes on to another instance
    (`prsm.resilience.outcomes`)."""
    retries = {"attempts": 3, "per_try_timeout": 120}
    limit = {"limit": "1000/15 minutes", "key": "ip", "budget": "per-client"}
    return parse_gateway_config(
        {
            "pools": {"api": {"discovery": {"kind": "static", "urls": [api_url]}}},
            "routes": [
                {
                    "prefix": "/api/ai",
                    "rewrite": "/api/v1",
                    "pool": "api",
                    "retries": retries,
                    "timeout": 300,
                    "rate_limit": limit,
                },
                {
                    "prefix": "/api/v1",
                    "pool": "api",
                    "retries": retries,
                    "timeout": 300,
                    "rate_limit": limit,
                },
                # The OpenAI-compatible endpoints, for any OpenAI client.
                {
                    "prefix": "/v1",
                    "pool": "api",
                    "retries": retries,
                    "timeout": 300,
                    "rate_limit": limit,
                },
            ],
        },
        source="the default gateway config",
    )


class ReloadingGateway:
    """The ASGI app uvicorn runs: the current `Gateway`, swapped on SIGHUP, drained on SIGTERM
    (`prsm.edge.drain`; with `handle_signals`). The drain waits for requests in flight up to
    the longest route timeout, so a slow answer the route allows is never cut."""

    def __init__(
        self,
        config_file: Path | None,
        fallback: GatewayConfig | None = None,
        *,
        drain_seconds: float = 5.0,
        handle_signals: bool = False,
        redis_url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        self.config_file = config_file
        self.redis_url = redis_url
        self.api_key = api_key
        """What the gateway shows the pools when it asks their model lists."""
        config = load_gateway_config(config_file, redis_url) if config_file else fallback
        if config is None:
            raise ConfigError("the gateway needs a config file")
        self.current = Gateway(config, api_key=api_key)
        self._reloads: set[asyncio.Task[bool]] = set()
        self._handle_signals = handle_signals
        self._closed: ServiceUnavailableError | None = None
        self.drain = Drain(drain_seconds, _drain_bound(drain_seconds, config), self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Lifespan, draining, or the current gateway."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http" and self.drain.draining:
            await self._while_draining(scope, receive, send)
        else:
            await self.current(scope, receive, send)

    async def _while_draining(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path == "/ready":
            body = {"status": "not_ready", "draining": True}
            await send_json(send, 503, body, incoming_correlation_id(scope))
        elif self._closed is not None and path not in OWN_PATHS:
            await send_error_reply(send, self._closed, incoming_correlation_id(scope), path)
        else:
            await self.current(scope, receive, send)

    # What the drain closes and waits for (prsm.edge.drain.Drainable).

    @property
    def in_flight(self) -> int:
        """Requests being proxied now."""
        return self.current.in_flight

    def close(self, error: ServiceUnavailableError) -> None:
        """Refuse new requests with `error` from now on."""
        self._closed = error

    async def idle(self) -> None:
        """Wait until no request is in flight."""
        await self.current.idle.wait()

    def refuse_waiting(self, error: ServiceUnavailableError) -> None:
        """Nothing to do: a proxied request is never waiting, it is in flight or not taken."""

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.current.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                if self.config_file is not None:
                    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_hangup)
                if self._handle_signals:
                    self.drain.install()
                freeze_startup_heap()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.current.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _on_hangup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> bool:
        """Load the file again and switch to it; False (and the old config kept) if it fails."""
        assert self.config_file is not None
        try:
            config = load_gateway_config(self.config_file, self.redis_url)
            same_storage = (config.rate_limit_storage, config.redis_url) == (
                self.current.config.rate_limit_storage,
                self.current.config.redis_url,
            )
            limiter = self.current.limiter if same_storage else None
            fresh = Gateway(config, limiter=limiter, api_key=self.api_key)
            await fresh.start()
        except Exception as exc:
            log.error("gateway reload failed; the running config stays: %s", exc)
            return False
        old, self.current = self.current, fresh
        self.drain.bound = _drain_bound(self.drain.grace, config)
        log.info("gateway config reloaded", extra={"routes": len(config.routes)})
        await self._drain(old)
        return True

    @staticmethod
    async def _drain(old: Gateway) -> None:
        deadline = max(route.timeout for route in old.config.routes)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline):
                await old.idle.wait()
        await old.aclose()


def _drain_bound(grace: float, config: GatewayConfig) -> float:
    """Seconds after SIGTERM the drain may last: the grace, then the longest route timeout
    (a request taken at the end of the grace may run that long), and a second to relay it."""
    return grace + max(route.timeout for route in config.routes) + 1


def serve(app: ReloadingGateway, host: str, port: int) -> None:
    """Run the gateway in the foreground until interrupted (one process)."""
    tune_for_requests()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        http=GuardedHttpProtocol,
        timeout_graceful_shutdown=10,
        server_header=False,  # the upstream's Server and Date headers pass through
        date_header=False,
    )
