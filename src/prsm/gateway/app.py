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
import builtins
import hashlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from prsm import metrics, tracing
from prsm.client.pool import Pool
from prsm.contracts import CORRELATION_HEADER
from prsm.gateway.config import GatewayConfig, Route
from prsm.gateway.ratelimit import RateLimiter, client_key
from prsm.gateway.upstream import ConnectFailed, ConnectionLost, UpstreamPool, UpstreamResponse
from prsm.resilience.breaker import CircuitOpenError
from prsm.server.correlation import incoming_correlation_id

log = logging.getLogger("prsm.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

UNAVAILABLE = "AI service temporarily unavailable"
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# RFC 9110 §7.6.1 connection-specific headers, never forwarded; `host` is set per upstream,
# `content-length` from the body actually sent.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
_CID = CORRELATION_HEADER.lower().encode()
OWN_PATHS = frozenset({"/health", "/ready", "/metrics"})
"""The gateway's own endpoints; no route can shadow them."""
_JSON = (b"content-type", b"application/json")


class UpstreamStatus(Exception):
    """An upstream answered with a status the route retries on; holds the open response."""

    def __init__(self, response: UpstreamResponse) -> None:
        super().__init__(f"upstream answered {response.status}")
        self.response = response


class Unsent(Exception):
    """The request never reached the upstream (connection refused, DNS, TLS)."""


class Dropped(Exception):
    """The connection failed after the request may have been sent (reset, closed)."""


class TryTimeout(Exception):
    """No response headers within the per-try timeout."""


def _upstream_failure(exc: BaseException) -> bool:
    return isinstance(exc, Unsent | Dropped | TryTimeout | UpstreamStatus)


@dataclass(frozen=True, slots=True)
class _Routed:
    route: Route
    label: str
    prefix_len: int


class Gateway:
    """An ASGI app; run its lifespan (uvicorn does) or `start()`/`aclose()` it."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        rng: random.Random | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.config = config
        self.pools = {
            name: Pool(
                name,
                pool.make_discovery(),
                is_failure=_upstream_failure,
                balancer=pool.make_balancer(),
                outliers=pool.make_outliers(),
                breaker=pool.make_breaker(),
                refresh_seconds=pool.refresh_seconds,
            )
            for name, pool in config.pools.items()
        }
        self._routes = sorted(
            (_Routed(r, r.prefix, len(r.prefix)) for r in config.routes),
            key=lambda r: r.prefix_len,
            reverse=True,
        )
        # Traffic splitting and fault injection, not secrets.
        self._rng = rng or random.Random(config.seed)  # noqa: S311
        self.limiter = limiter or RateLimiter(config)
        self._upstreams: dict[str, UpstreamPool] = {}
        self._source = config.source_service.encode()
        self.in_flight = 0
        self.idle = asyncio.Event()
        """Set while no request is in flight (a reload waits on it before closing)."""
        self.idle.set()
        self._requests: dict[tuple[str, int], Any] = {}
        self._attempts: dict[tuple[str, str], Any] = {}

    async def start(self) -> None:
        for pool in self.pools.values():
            await pool.start()

    async def aclose(self) -> None:
        for pool in self.pools.values():
            await pool.aclose()
        for upstream in self._upstreams.values():
            await upstream.aclose()
        self._upstreams.clear()

    def ready(self) -> bool:
        """Some pool has an instance that is known and not ejected."""
        return any(pool.healthy() for pool in self.pools.values())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
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

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        cid = incoming_correlation_id(scope)
        routed = None if path in OWN_PATHS else self._match(path)
        if routed is None:
            await self._own_endpoint(path, cid, send)
            return
        started = time.perf_counter()
        if tracing.active():
            with tracing.server_span(scope["method"], routed.label, scope["headers"]) as span:
                status = await self._proxy(routed, scope, receive, send, cid)
                span.set_attribute("http.response.status_code", status)
        else:
            status = await self._proxy(routed, scope, receive, send, cid)
        self._count(routed.label, status, time.perf_counter() - started)

    def _match(self, path: str) -> _Routed | None:
        for routed in self._routes:
            if path.startswith(routed.label) and (
                len(path) == routed.prefix_len
                or path[routed.prefix_len] == "/"
                or routed.label.endswith("/")
            ):
                return routed
        return None

    async def _own_endpoint(self, path: str, cid: str, send: Send) -> None:
        if path == "/health":
            await _json(send, 200, {"status": "healthy"}, cid)
        elif path == "/ready":
            ready = self.ready()
            body = {
                "status": "ready" if ready else "not_ready",
                "pools": {name: pool.healthy() for name, pool in self.pools.items()},
            }
            await _json(send, 200 if ready else 503, body, cid)
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
            error = {"code": "no_route", "message": f"no route for {path}"}
            await _json(send, 404, {"error": error, "correlationId": cid}, cid)

    async def _proxy(
        self, routed: _Routed, scope: Scope, receive: Receive, send: Send, cid: str
    ) -> int:
        route = routed.route
        headers = dict(scope["headers"])
        if route.rate_limit is not None:
            peer = self._peer(scope, headers)
            who = client_key(route.rate_limit.key, headers, peer)
            decision = await self.limiter.hit(route.rate_limit, route.prefix, who)
            if not decision.allowed:
                metrics.GATEWAY_RATE_LIMITED.labels(route.prefix).inc()
                error = {"code": "rate_limited", "message": "Too many PRSM requests"}
                await _json(
                    send, 429, {"error": error, "correlationId": cid}, cid, decision.headers()
                )
                return 429
            limit_headers = decision.headers()
        else:
            limit_headers = []
        if route.fault is not None:
            aborted = await self._inject_fault(route, send, cid)
            if aborted:
                return aborted
        body = await _read_body(receive, self.config.max_body_bytes)
        if body is None:
            error = {"code": "payload_too_large", "message": "request body too large"}
            await _json(send, 413, {"error": error, "correlationId": cid}, cid)
            return 413
        if body is _GONE:
            return CLIENT_GONE  # the caller left before sending its body: nothing to forward
        upstream_path = _upstream_target(scope, routed)
        outgoing = self._upstream_headers(scope, headers, cid)
        pool = self.pools[self._choose_pool(route, headers)]
        return await self._tries(
            route, pool, scope["method"], upstream_path, outgoing, body, send, cid, limit_headers
        )

    async def _tries(
        self,
        route: Route,
        pool: Pool,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        send: Send,
        cid: str,
        extra: list[tuple[bytes, bytes]],
    ) -> int:
        retries = route.retries
        may_resend = method in IDEMPOTENT or retries.non_idempotent
        tried: set[str] = set()
        failure: BaseException | None = None
        last_status: UpstreamStatus | None = None
        response: UpstreamResponse | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + route.timeout  # the route's timeout runs until the headers
        for _ in range(retries.attempts):
            remaining = deadline - loop.time()
            if remaining <= 0:
                failure = TryTimeout()
                break
            instance = pool.pick(tried)
            if instance is None:
                break
            tried.add(instance.id)
            if last_status is not None:
                last_status.response.release()
                last_status = None
            pool.balancer.started(instance)
            try:
                response = await pool.breaker(instance).call(
                    self._send_upstream,
                    instance.url,
                    method,
                    path,
                    headers,
                    body,
                    min(retries.per_try_timeout, remaining),
                    retries.retry_on,
                )
            except CircuitOpenError as exc:
                failure = exc
                self._attempt(pool.service, "breaker_open")
                continue
            except (Unsent, Dropped, TryTimeout, UpstreamStatus) as exc:
                pool.failed(instance)
                failure = exc
                self._attempt(pool.service, type(exc).__name__.lower())
                if isinstance(exc, UpstreamStatus):
                    last_status = exc
                if not _may_retry(exc, retries.retry_on, may_resend):
                    break
                continue
            finally:
                pool.balancer.finished(instance)
            pool.succeeded(instance)
            self._attempt(pool.service, "ok")
            return await self._relay(response, send, cid, extra)
        if last_status is not None:  # the upstream's own answer says more than ours would
            return await self._relay(last_status.response, send, cid, extra)
        if isinstance(failure, TryTimeout):
            error = {"code": "upstream_timeout", "message": "the AI service did not answer in time"}
            await _json(send, 504, {"error": error, "correlationId": cid}, cid, extra)
            return 504
        if isinstance(failure, CircuitOpenError):
            error = {"code": "circuit_open", "message": UNAVAILABLE}
            await _json(send, 503, {"error": error, "correlationId": cid}, cid, extra)
            return 503
        await _json(send, 502, {"error": UNAVAILABLE, "correlationId": cid}, cid, extra)
        return 502

    async def _send_upstream(
        self,
        origin: str,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        per_try: float,
        retry_on: Collection[str],
    ) -> UpstreamResponse:
        upstream = self._upstreams.get(origin)
        if upstream is None:
            upstream = self._upstreams[origin] = UpstreamPool(origin)
        try:
            async with asyncio.timeout(per_try):
                response = await upstream.send(method, target, headers, body)
        except builtins.TimeoutError:
            raise TryTimeout() from None
        except ConnectFailed as exc:
            raise Unsent(str(exc)) from None
        except ConnectionLost as exc:
            raise Dropped(str(exc)) from None
        if response.status in (502, 503, 504) and str(response.status) in retry_on:
            raise UpstreamStatus(response)
        return response

    async def _relay(
        self,
        response: UpstreamResponse,
        send: Send,
        cid: str,
        extra: list[tuple[bytes, bytes]],
    ) -> int:
        """Stream the upstream's response: headers, then each chunk as it arrives."""
        headers = [
            (k, v)
            for k, v in response.headers
            if (name := k.lower()) not in _NOT_RELAYED or name == b"content-length"
        ]
        headers.append((_CID, cid.encode()))
        headers.extend(extra)
        status = response.status
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            async for chunk in response.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except ConnectionLost:
            log.warning("upstream closed mid-response", extra={"status": status})
        finally:
            response.release()
        return status

    def _upstream_headers(
        self, scope: Scope, headers: dict[bytes, bytes], cid: str
    ) -> list[tuple[bytes, bytes]]:
        out = [(k, v) for k, v in scope["headers"] if k not in _NOT_FORWARDED]
        peer = scope["client"][0].encode() if scope.get("client") else b""
        forwarded = headers.get(b"x-forwarded-for")
        out.append((b"x-forwarded-for", forwarded + b", " + peer if forwarded else peer))
        out.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
        out.append((_CID, cid.encode()))
        out.append((b"x-source-service", headers.get(b"x-source-service") or self._source))
        if tracing.active():
            carrier: dict[str, str] = {}
            tracing.inject(carrier)
            out.extend((k.encode(), v.encode("latin-1")) for k, v in carrier.items())
        return out

    def _peer(self, scope: Scope, headers: dict[bytes, bytes]) -> str:
        """The client's IP; behind `trusted_proxies` proxies, read from X-Forwarded-For."""
        peer = scope["client"][0] if scope.get("client") else "unknown"
        hops = self.config.trusted_proxies
        forwarded = headers.get(b"x-forwarded-for")
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
        sticky = _sticky_value(route, headers)
        if sticky is not None:  # the same caller lands on the same side of the split
            digest = hashlib.blake2b(sticky, digest_size=8).digest()
            point = int.from_bytes(digest, "big") % sum(weights)
            for name, weight in zip(names, weights, strict=True):
                if point < weight:
                    return name
                point -= weight
        return self._rng.choices(names, weights)[0]

    async def _inject_fault(self, route: Route, send: Send, cid: str) -> int:
        fault = route.fault
        assert fault is not None
        if fault.abort is not None and self._rng.random() * 100 < fault.abort.percent:
            error = {"code": "fault_injected", "message": "aborted by fault injection"}
            await _json(send, fault.abort.status, {"error": error, "correlationId": cid}, cid)
            return fault.abort.status
        if fault.delay is not None and self._rng.random() * 100 < fault.delay.percent:
            await asyncio.sleep(fault.delay.seconds)
        return 0

    def _attempt(self, pool: str, outcome: str) -> None:
        key = (pool, outcome)
        counter = self._attempts.get(key)
        if counter is None:
            counter = self._attempts[key] = metrics.GATEWAY_ATTEMPTS.labels(pool, outcome)
        counter.inc()

    def _count(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        children = self._requests.get(key)
        if children is None:
            children = self._requests[key] = (
                metrics.GATEWAY_REQUESTS.labels(route, str(status)),
                metrics.GATEWAY_DURATION.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)


_SET_HERE = frozenset({_CID, b"x-forwarded-for", b"x-forwarded-proto", b"x-source-service"})
_NOT_FORWARDED = HOP_BY_HOP | _SET_HERE
_NOT_RELAYED = HOP_BY_HOP | {_CID}


def _may_retry(exc: BaseException, retry_on: Collection[str], may_resend: bool) -> bool:
    """Whether a failed try may go on to another instance."""
    if isinstance(exc, Unsent):  # never reached the upstream: always safe to send again
        return "connect-failure" in retry_on
    if not may_resend:
        return False
    if isinstance(exc, Dropped):
        return "reset" in retry_on
    return True  # a retried status (already filtered by retry_on) or a per-try timeout


def _sticky_value(route: Route, headers: dict[bytes, bytes]) -> bytes | None:
    sticky = route.sticky
    if sticky is None:
        return None
    if sticky.header is not None:
        return headers.get(sticky.header.lower().encode())
    cookies = headers.get(b"cookie", b"").decode("latin-1")
    for part in cookies.split(";"):
        name, _, value = part.strip().partition("=")
        if name == sticky.cookie and value:
            return value.encode()
    return None


def _upstream_target(scope: Scope, routed: _Routed) -> str:
    """The path and query to send upstream, percent-encoding kept as the caller sent it, with
    the route's prefix rewritten."""
    path: str = scope["path"]
    raw: bytes = scope.get("raw_path") or quote(path).encode()
    rewrite = routed.route.rewrite
    if rewrite is not None:
        prefix = routed.label.encode()
        if raw.startswith(prefix):
            tail = raw[len(prefix) :]
        else:  # the caller percent-encoded part of the prefix itself
            tail = quote(path[routed.prefix_len :]).encode()
        raw = rewrite.rstrip("/").encode() + tail or b"/"
    query: bytes = scope.get("query_string", b"")
    return (raw + b"?" + query if query else raw).decode("latin-1")


_GONE = b"\x00gone"
CLIENT_GONE = 499
"""Counted for requests whose caller disconnected before its body arrived (nginx's code)."""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body (tries may need to send it again), None past `limit`, `_GONE`
    if the caller disconnected first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return _GONE
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks) if len(chunks) != 1 else chunks[0]


async def _json(
    send: Send,
    status: int,
    payload: dict[str, Any],
    cid: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps(payload).encode()
    headers = [_JSON, (b"content-length", str(len(body)).encode()), (_CID, cid.encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
