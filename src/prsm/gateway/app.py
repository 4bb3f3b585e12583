"""`Gateway`: the pure-ASGI reverse proxy behind `prsm gateway`.

A request goes: own endpoints (`/health`, `/ready`, `/metrics`) → route by longest prefix →
rate limit → injected faults → body read (bounded) → pool chosen by the route's split →
tries on different instances (each through the pool's ejection, balancer and per-instance
breaker) within a per-try timeout and one route deadline → the upstream's response streamed
back. Errors are JSON: 502 `{error: "AI service temporarily unavailable", correlationId}` (the
specification's body) when no upstream answered, 504 when they were too slow, 503 when every
breaker is open, 429 when a limit is spent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from prsm import metrics, tracing
from prsm.contracts import NOT_RUN_HEADER, SHARED_OUTAGE_HEADER
from prsm.edge.correlation import HEADER as CID
from prsm.edge.correlation import incoming_correlation_id
from prsm.edge.disconnect import CLIENT_GONE, ClientGone, until_disconnected
from prsm.edge.errors import send_error_reply
from prsm.edge.paths import normalized_path
from prsm.errors import (
    BadRequestError,
    CircuitOpenError,
    ConnectionLostError,
    GatewayTimeoutError,
    NotFoundError,
    PayloadTooLargeError,
    PRSMError,
    ServiceUnavailableError,
    TimeoutError,
    error_for_status,
)
from prsm.gateway.bodies import (
    GONE,
    TooLong,
    WholeEvents,
    held,
    is_event_stream,
    read_body,
    small,
    whole,
)
from prsm.gateway.config import GatewayConfig, Route
from prsm.gateway.forwarding import (
    NOT_FORWARDED,
    NOT_RELAYED,
    UpstreamAnswered,
    attempt_outcome,
    no_headers_in,
    replayable,
    route_allows,
    sticky_value,
    upstream_target,
)
from prsm.gateway.models import (
    ModelDirectory,
    Served,
    body_model,
    falling_back,
    json_object,
    model_union,
    with_model,
)
from prsm.gateway.ratelimit import RateLimiter
from prsm.gateway.replies import (
    UNAVAILABLE,
    cut_stream_event,
    send_json,
    send_raw_json,
    unavailable,
)
from prsm.gateway.steps import (
    Exchange,
    Receive,
    RouteHandler,
    Scope,
    Send,
    counted,
    faulted,
    rate_limited,
    traced,
)
from prsm.gateway.upstream import HTTPTransport, Transport, UpstreamResponse
from prsm.resilience.failover import failover
from prsm.resilience.handler import Handler, Middleware, chain, time_limit
from prsm.resilience.outcomes import classify, fails_over
from prsm.sd import Instance
from prsm.sd.affinity import request_affinity
from prsm.sd.balance import Affinity
from prsm.sd.pool import Pool

log = logging.getLogger("prsm.gateway")

OWN_PATHS = frozenset({"/health", "/ready", "/metrics"})
"""The gateway's own endpoints; no route can shadow them."""
_NOT_RUN = NOT_RUN_HEADER.lower().encode()
_SHARED_OUTAGE = SHARED_OUTAGE_HEADER.lower().encode()
_FALLBACK = b"x-prsm-fallback-from"


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One request as the gateway forwards it; `replayable` says a second copy does no harm."""

    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    replayable: bool
    affinity: Affinity | None = None
    """What a pool balancing by prefix routes it by (`prsm.sd.affinity`)."""


Pipeline = Handler[UpstreamRequest, UpstreamResponse]


def _affinity_of(request: UpstreamRequest) -> Affinity | None:
    return request.affinity


_MOST_ENDPOINTS = 1024
"""Per-instance handlers kept for one route and pool before they are built afresh."""


class Gateway:
    """An ASGI app for HTTP scopes; `start()` it before the first request and `aclose()` it
    after the last (`ReloadingGateway` does both, from uvicorn's lifespan)."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        rng: random.Random | None = None,
        limiter: RateLimiter | None = None,
        transport: Transport | None = None,
        api_key: str | None = None,
    ) -> None:
        self.config = config
        self.pools = {
            name: Pool(
                name,
                pool.make_discovery(),
                balancer=pool.make_balancer(name),
                outliers=pool.make_outliers(),
                breaker=pool.make_breaker(),
                refresh_seconds=pool.refresh_seconds,
            )
            for name, pool in config.pools.items()
        }
        self._routes = sorted(config.routes, key=lambda r: len(r.prefix), reverse=True)
        limited = [(r.prefix,) for r in self._routes if r.rate_limit is not None]
        metrics.show_zero(metrics.GATEWAY_RATE_LIMITED, *limited)
        # Traffic splitting and fault injection, not secrets.
        self._rng = rng or random.Random(config.seed)  # noqa: S311
        self.limiter = limiter or RateLimiter(config)
        self.transport = transport or HTTPTransport()
        self._route_handlers = {route.prefix: self._route_handler(route) for route in self._routes}
        self._directories = {
            r.prefix: ModelDirectory(r, self.pools, self.transport, api_key)
            for r in self._routes
            if r.models is not None
        }
        self._pipelines: dict[tuple[str, str], Pipeline] = {}
        by_prefix = [p for p in config.pools.values() if p.balancer == "prefix_affinity"]
        self._session_headers = [
            p.affinity.session_header.lower().encode()
            for p in by_prefix
            if p.affinity.session_header
        ]
        self._reads_prompt = {r.prefix for r in self._routes if config.reads_prompt(r)}
        self._source = config.source_service.encode()
        self.in_flight = 0
        self.idle = asyncio.Event()
        """Set while no request is in flight (a reload waits on it before closing)."""
        self.idle.set()

    async def start(self) -> None:
        """Start discovery for every pool, then learn which pool serves which model."""
        for pool in self.pools.values():
            await pool.start()
        await asyncio.gather(*(d.start() for d in self._directories.values()))

    async def aclose(self) -> None:
        """Stop discovery and close every upstream connection."""
        for directory in self._directories.values():
            await directory.aclose()
        for pool in self.pools.values():
            await pool.aclose()
        await self.transport.aclose()

    def ready(self) -> bool:
        """Some pool has an instance that is known and not ejected."""
        return any(pool.healthy() for pool in self.pools.values())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Proxy one HTTP request (other scope types are ignored), counted in flight."""
        if scope["type"] != "http":
            return
        self.in_flight += 1
        self.idle.clear()
        try:
            await self._handle(scope, receive, send)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        cid = incoming_correlation_id(scope)
        try:
            path = normalized_path(scope["path"], scope.get("raw_path"))
        except BadRequestError as exc:
            await send_error_reply(send, exc, cid, scope["path"])
            return
        if path != scope["path"]:  # matched, and forwarded, in its one form
            scope = {**scope, "path": path, "raw_path": quote(path).encode()}
        route = None if path in OWN_PATHS else self._match(path)
        if route is None:
            if path in OWN_PATHS and scope["method"] not in ("GET", "HEAD"):
                wrong = error_for_status(405, "Method Not Allowed", code="method_not_allowed")
                await send_error_reply(send, wrong, cid, path, [(b"allow", b"GET, HEAD")])
                return
            await self._own_endpoint(path, cid, send)
            return
        exchange = Exchange(route, scope, receive, send, cid, dict(scope["headers"]))
        await self._route_handlers[route.prefix](exchange)

    def _match(self, path: str) -> Route | None:
        for route in self._routes:
            prefix = route.prefix
            if path.startswith(prefix) and (
                len(path) == len(prefix) or path[len(prefix)] == "/" or prefix.endswith("/")
            ):
                return route
        return None

    async def _own_endpoint(self, path: str, cid: str, send: Send) -> None:
        if path == "/health":
            await send_json(send, 200, {"status": "healthy"}, cid)
        elif path == "/ready":
            ready = self.ready()
            body = {
                "status": "ready" if ready else "not_ready",
                "pools": {name: pool.healthy() for name, pool in self.pools.items()},
            }
            await send_json(send, 200 if ready else 503, body, cid)
        elif path == "/metrics":
            payload, content_type = metrics.render()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", content_type.encode())],
                }
            )
            await send({"type": "http.response.body", "body": payload})
        else:
            missing = NotFoundError(f"no route for {path}", code="no_route")
            await send_error_reply(send, missing, cid, path)

    def _route_handler(self, route: Route) -> RouteHandler:
        """The route's steps (`prsm.gateway.steps`), outermost first: its metrics, its span,
        its rate limit and its faults when it has them; then the forwarding."""
        steps: list[Middleware[Exchange, int]] = [counted(self._count), traced]
        if route.rate_limit is not None:
            steps.append(rate_limited(self.limiter, route.rate_limit, self._peer))
        if route.fault is not None:
            steps.append(faulted(route.fault, self._rng))
        return chain(*steps)(self._forward_exchange)

    async def _forward_exchange(self, exchange: Exchange) -> int:
        """Read the body, choose the pool, and forward through the route's tries."""
        route, scope, headers = exchange.route, exchange.scope, exchange.headers
        body = await read_body(exchange.receive, self.config.max_body_bytes)
        if body is None:
            too_large = PayloadTooLargeError("request body too large", code="payload_too_large")
            return await exchange.error(too_large)
        if body is GONE:
            return CLIENT_GONE  # the caller left before sending its body: nothing to forward
        upstream_path = upstream_target(scope, route)
        outgoing = self._upstream_headers(scope, headers, exchange.cid)
        directory = self._directories.get(route.prefix)
        listing = exchange.path == route.prefix.rstrip("/") + "/models"
        if directory is not None and listing and scope["method"] == "GET":
            return await self._model_union(route, directory, upstream_path, outgoing, exchange)
        pipeline = self._pipeline(route, self.pools[self._choose_pool(route, headers)])
        by_prefix = route.prefix in self._reads_prompt
        fields = json_object(body) if directory is not None or by_prefix else None
        model = body_model(fields) if directory is not None else None
        if directory is not None and model is not None:
            try:
                chain = directory.chain(await directory.resolve(model))
            except NotFoundError as exc:
                return await exchange.error(exc)
            pipeline = self._by_model(route, chain, model, exchange)
        request = UpstreamRequest(
            scope["method"],
            upstream_path,
            outgoing,
            body,
            replayable(route, scope, outgoing),
            self._affinity(fields, headers) if by_prefix else None,
        )
        forwarded = self._forward(pipeline, request, exchange)
        try:
            return await until_disconnected(forwarded, exchange.receive, scope)
        except ClientGone:  # the upstream request was closed with it: its work stops too
            metrics.GATEWAY_CLIENTS_GONE.labels(route.prefix).inc()
            return CLIENT_GONE

    def _affinity(self, fields: dict[str, Any] | None, headers: dict[bytes, bytes]) -> Affinity:
        """The prompt of a JSON body, and the session a configured header names."""
        session = next((headers[h] for h in self._session_headers if h in headers), None)
        return request_affinity(fields or {}, session.decode("latin-1") if session else None)

    def _by_model(
        self, route: Route, chain: list[Served], asked: str, exchange: Exchange
    ) -> Pipeline:
        """The request to the pool of the model it names, then of its fallbacks
        (`prsm.gateway.models`); a fallback's answer carries `X-PRSM-Fallback-From`."""

        async def send(served: Served, request: UpstreamRequest) -> UpstreamResponse:
            if served.model != asked:  # an alias resolved, or a fallback
                request = dataclasses.replace(request, body=with_model(request.body, served.model))
            return await self._pipeline(route, self.pools[served.pool])(request)

        def fell_back(failed: Served, to: Served) -> None:
            if not any(name == _FALLBACK for name, _ in exchange.extra):
                exchange.extra.append((_FALLBACK, chain[0].model.encode()))
            metrics.MODEL_FALLBACKS.labels("prsm-gateway", failed.model, to.model).inc()
            log.info("model fallback", extra={"model": failed.model, "to": to.model})

        return falling_back(chain, send, _may_fall_back, fell_back)

    async def _model_union(
        self,
        route: Route,
        directory: ModelDirectory,
        target: str,
        headers: list[tuple[bytes, bytes]],
        exchange: Exchange,
    ) -> int:
        """`GET <prefix>/models` on a route by model: every pool's list in one, each asked with
        the caller's credentials."""

        async def fetch(name: str) -> tuple[int, bytes]:
            request = UpstreamRequest("GET", target, headers, b"", True)
            try:
                response = await whole(await self._pipeline(route, self.pools[name])(request))
            except (PRSMError, TooLong):
                return 502, b""
            return response.status, b"".join([c async for c in response.chunks()])

        status, body = await model_union(directory.pools, fetch)
        if status == 502 and not body:
            return await unavailable(exchange)
        await send_raw_json(exchange.send, status, body, exchange.cid)
        return status

    def _pipeline(self, route: Route, pool: Pool) -> Pipeline:
        """The route's tries on the pool, built once from `prsm.resilience`'s pieces: the
        route's deadline (until the response headers) → failover over the pool → the
        instance's breaker and ejection (`Pool.call`) → the per-try timeout → the transport."""
        key = (route.prefix, pool.service)
        pipeline = self._pipelines.get(key)
        if pipeline is not None:
            return pipeline
        retries = route.retries
        per_try: Middleware[UpstreamRequest, UpstreamResponse] = time_limit(
            retries.per_try_timeout, no_headers_in(retries.per_try_timeout)
        )
        send = functools.partial(self._send_upstream, retry_on=retries.retry_on)
        endpoints: dict[str, Pipeline] = {}  # per instance: built once, not per try

        def endpoint(instance: Instance) -> Pipeline:
            known = endpoints.get(instance.url)
            if known is not None:
                return known
            to_instance = per_try(functools.partial(send, instance.url))

            async def call(request: UpstreamRequest) -> UpstreamResponse:
                return await pool.call(instance, to_instance, request)

            if len(endpoints) >= _MOST_ENDPOINTS:  # instances come and go: never grow without bound
                endpoints.clear()
            endpoints[instance.url] = call
            return call

        def count(instance: Instance, exc: BaseException | None) -> None:
            self._attempt(pool.service, attempt_outcome(exc))

        tries = failover(
            pool,
            endpoint,
            attempts=retries.attempts,
            idempotent=_may_resend,
            allowed=functools.partial(route_allows, retries.retry_on),
            on_try=count,
            hint=_affinity_of,
            service=repr(pool.service),
        )
        within_deadline: Middleware[UpstreamRequest, UpstreamResponse] = time_limit(
            route.timeout, no_headers_in(route.timeout)
        )
        pipeline = self._pipelines[key] = within_deadline(tries)
        return pipeline

    async def _forward(
        self, pipeline: Pipeline, request: UpstreamRequest, exchange: Exchange
    ) -> int:
        """The request through the route's pipeline, and the answer relayed to the caller."""
        try:
            response = await pipeline(request)
        except UpstreamAnswered as exc:
            if exc.response is None:
                return await unavailable(exchange)
            # The upstream's own answer says more than ours would.
            return await self._relay(exc.response, exchange)
        except PRSMError as exc:
            if isinstance(exc, TimeoutError):
                slow = GatewayTimeoutError(
                    "the AI service did not answer in time", code="upstream_timeout", retry_after=1
                )
                return await exchange.error(slow)
            if isinstance(exc, CircuitOpenError):
                closed = ServiceUnavailableError(UNAVAILABLE, code="circuit_open", retry_after=1)
                return await exchange.error(closed)
            return await unavailable(exchange)
        return await self._relay(response, exchange)

    async def _send_upstream(
        self, origin: str, request: UpstreamRequest, *, retry_on: Collection[str]
    ) -> UpstreamResponse:
        response = await self.transport.send(
            origin,
            request.method,
            request.target,
            request.headers,
            request.body,
            replayable=request.replayable,
        )
        if response.status in (502, 503, 504) and str(response.status) in retry_on:
            marks = {k.lower() for k, v in response.headers if v == b"true"}
            if _SHARED_OUTAGE not in marks:  # another instance would answer the same: pass on
                raise UpstreamAnswered(
                    await held(response), response.status, not_run=_NOT_RUN in marks
                )
        if small(response):
            # Read whole within the try, before the caller sees a byte: an upstream that dies
            # between its headers and its body fails this try (and the next instance may
            # answer), instead of a response cut short at the caller. nginx buffers likewise.
            return await whole(response)
        return response

    async def _relay(self, response: UpstreamResponse, exchange: Exchange) -> int:
        """Stream the upstream's response: headers, then each chunk as it arrives.

        An event stream is passed on whole events at a time, so that if the upstream breaks
        off, the stream still ends with a well-formed error event in its API's format (and
        counts as 502). Any other body cut short is cut short for the caller too.
        """
        send = exchange.send
        headers = [(k, v) for k, v in response.headers if k.lower() not in NOT_RELAYED]
        headers.append((CID, exchange.cid.encode()))
        headers.extend(exchange.extra)
        events = WholeEvents() if is_event_stream(headers) else None
        if events is not None and not any(k.lower() == _NO_BUFFERING[0] for k, _ in headers):
            headers.append(_NO_BUFFERING)  # passed on event by event: proxies in front must too
        status = response.status
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            async for chunk in response.chunks():
                data = chunk if events is None else events.take(chunk)
                if data:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
            rest = b"" if events is None else events.rest()
            await send({"type": "http.response.body", "body": rest})
        except ConnectionLostError:
            log.warning("upstream closed mid-response", extra={"status": status})
            if events is not None:
                await send({"type": "http.response.body", "body": cut_stream_event(exchange)})
            return 502
        finally:
            response.release()
        return status

    def _upstream_headers(
        self, scope: Scope, headers: dict[bytes, bytes], cid: str
    ) -> list[tuple[bytes, bytes]]:
        out = [(k, v) for k, v in scope["headers"] if k not in NOT_FORWARDED]
        peer = scope["client"][0].encode() if scope.get("client") else b""
        forwarded = headers.get(b"x-forwarded-for")
        out.append((b"x-forwarded-for", forwarded + b", " + peer if forwarded else peer))
        out.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
        out.append((CID, cid.encode()))
        out.append((b"x-source-service", headers.get(b"x-source-service") or self._source))
        carrier: dict[str, str] = {}
        tracing.inject(carrier)  # nothing when tracing is off: the caller's context goes on
        if carrier:  # the gateway's span is the upstream's parent, in place of the caller's
            replaced = {name.encode() for name in carrier}
            out = [(k, v) for k, v in out if k not in replaced]
        out.extend((k.encode(), v.encode("latin-1")) for k, v in carrier.items())
        return out

    def _peer(self, exchange: Exchange) -> str:
        """The client's IP; behind `trusted_proxies` proxies, read from X-Forwarded-For."""
        scope = exchange.scope
        peer = scope["client"][0] if scope.get("client") else "unknown"
        hops = self.config.trusted_proxies
        forwarded = exchange.headers.get(b"x-forwarded-for")
        if hops and forwarded:
            chain = [part.strip() for part in forwarded.decode("latin-1").split(",")]
            if len(chain) >= hops:
                return chain[-hops]
        return peer

    def _choose_pool(self, route: Route, headers: dict[bytes, bytes]) -> str:
        if route.pool is not None:
            return route.pool
        assert route.split is not None
        names, weights = list(route.split), list(route.split.values())
        sticky = sticky_value(route, headers)
        if sticky is not None:  # the same caller lands on the same side of the split
            digest = hashlib.blake2b(sticky, digest_size=8).digest()
            point = int.from_bytes(digest, "big") % sum(weights)
            for name, weight in zip(names, weights, strict=True):
                if point < weight:
                    return name
                point -= weight
        return self._rng.choices(names, weights)[0]

    def _attempt(self, pool: str, outcome: str) -> None:
        metrics.child(metrics.GATEWAY_ATTEMPTS, pool, outcome).inc()

    def _count(self, route: str, status: int, seconds: float) -> None:
        metrics.child(metrics.GATEWAY_REQUESTS, route, str(status)).inc()
        metrics.child(metrics.GATEWAY_DURATION, route).observe(seconds)


_NO_BUFFERING = (b"x-accel-buffering", b"no")


def _may_fall_back(request: UpstreamRequest, exc: BaseException) -> bool:
    """Whether another model's pool may take a request its own could not: as failover to
    another instance, only if it provably did not run, or may be sent twice."""
    return fails_over(classify(exc), idempotent=_may_resend(request))


def _may_resend(request: UpstreamRequest) -> bool:
    return request.replayable
