"""What happens to a request on a gateway route before it is forwarded, each step a middleware
over the route's handler (`prsm.resilience.handler`'s shape): `counted` (the gateway's request
metrics), `traced` (a server span), `rate_limited` (the route's per-client limit) and
`faulted` (injected delays and aborts). `Gateway` chains the ones a route needs, once."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from prsm import metrics, tracing
from prsm.edge.errors import send_error_reply
from prsm.errors import (
    HTTPStatusError,
    RateLimitedError,
    ServiceUnavailableError,
    error_for_status,
)
from prsm.gateway.config import Fault, RateLimit, Route
from prsm.gateway.ratelimit import RateLimiter, client_key
from prsm.resilience.handler import Handler, Middleware

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(slots=True)
class Exchange:
    """One caller's request on a route, as the route's steps see it: the ASGI triple, the
    correlation id, the request headers, and `extra` headers every answer to it carries."""

    route: Route
    scope: Scope
    receive: Receive
    send: Send
    cid: str
    headers: dict[bytes, bytes]
    extra: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def path(self) -> str:
        """The caller's path (it decides the shape of an error: OpenAI's on `/v1`)."""
        return str(self.scope["path"])

    async def error(
        self, error: HTTPStatusError, headers: list[tuple[bytes, bytes]] | None = None
    ) -> int:
        """Answer with `error`'s JSON body (the API's shape for the caller's path), with
        `headers` or else the `extra` ones."""
        return await send_error_reply(self.send, error, self.cid, self.path, headers or self.extra)


RouteHandler = Handler[Exchange, int]
"""Handles one exchange; returns the status sent (499 when the caller left)."""


def counted(count: Callable[[str, int, float], None]) -> Middleware[Exchange, int]:
    """`prsm_gateway_requests_total` and `prsm_gateway_request_duration_seconds` per route."""

    def wrap(handler: RouteHandler) -> RouteHandler:
        async def timed(exchange: Exchange) -> int:
            started = time.perf_counter()
            status = await handler(exchange)
            count(exchange.route.prefix, status, time.perf_counter() - started)
            return status

        return timed

    return wrap


def traced(handler: RouteHandler) -> RouteHandler:
    """A SERVER span per request, continuing the caller's trace, when tracing is on."""

    async def in_span(exchange: Exchange) -> int:
        if not tracing.active():
            return await handler(exchange)
        scope = exchange.scope
        with tracing.server_span(scope["method"], exchange.route.prefix, scope["headers"]) as span:
            status = await handler(exchange)
            span.set_attribute("http.response.status_code", status)
            return status

    return in_span


def rate_limited(
    limiter: RateLimiter, limit: RateLimit, peer: Callable[[Exchange], str]
) -> Middleware[Exchange, int]:
    """The route's per-client limit: 429 with `Retry-After` once spent, never forwarded; the
    `RateLimit-*` headers on every answer."""

    def wrap(handler: RouteHandler) -> RouteHandler:
        async def limited(exchange: Exchange) -> int:
            who = client_key(limit.key, exchange.headers, peer(exchange))
            try:
                decision = await limiter.hit(limit, limit.budget or exchange.route.prefix, who)
            except ServiceUnavailableError as unavailable:  # Redis down, `refuse` configured
                return await exchange.error(unavailable, [])
            if not decision.allowed:
                metrics.GATEWAY_RATE_LIMITED.labels(exchange.route.prefix).inc()
                refused = RateLimitedError("Too many PRSM requests", code="rate_limited")
                return await exchange.error(refused, decision.headers())
            exchange.extra.extend(decision.headers())
            return await handler(exchange)

        return limited

    return wrap


def faulted(fault: Fault, rng: random.Random) -> Middleware[Exchange, int]:
    """Istio's fault injection: abort `abort.percent` of requests with its status, delay
    `delay.percent` of them by its seconds (seeded `rng`: a run can be repeated)."""

    def wrap(handler: RouteHandler) -> RouteHandler:
        async def injected(exchange: Exchange) -> int:
            if fault.abort is not None and rng.random() * 100 < fault.abort.percent:
                message = "aborted by fault injection"
                aborted = error_for_status(fault.abort.status, message, code="fault_injected")
                return await exchange.error(aborted)
            if fault.delay is not None and rng.random() * 100 < fault.delay.percent:
                await asyncio.sleep(fault.delay.seconds)
            return await handler(exchange)

        return injected

    return wrap
