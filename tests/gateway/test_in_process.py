"""The gateway in process over `MemoryTransport`: routing, rewrites, failover, splits, limits and
cut streams, decided without a socket (the real transport has its own tests)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx

from prsm.errors import ConnectError, ConnectionLostError
from prsm.gateway.app import Gateway
from prsm.gateway.config import GatewayConfig
from prsm.gateway.upstream import BufferedResponse, MemoryTransport, SentRequest, UpstreamResponse

A, B = "http://a.test:8000", "http://b.test:8000"


def config(routes: list[dict[str, Any]], **pools: list[str]) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "pools": {
                name: {"discovery": {"kind": "static", "urls": urls}}
                for name, urls in pools.items()
            },
            "routes": routes,
        }
    )


async def ok(request: SentRequest) -> UpstreamResponse:
    body = f"{request.origin} {request.method} {request.target}".encode()
    return BufferedResponse(200, [(b"content-type", b"text/plain")], body)


async def call(gateway: Gateway, *requests: tuple[str, str]) -> list[httpx.Response]:
    await gateway.start()
    try:
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            return [await http.request(method, path, content=b"{}") for method, path in requests]
    finally:
        await gateway.aclose()


async def test_longest_prefix_wins_and_rewrites_keep_the_rest_of_the_path() -> None:
    """`/api/ai/query?x=1` goes to the `/api/ai` route, rewritten to `/api/v1/query?x=1`."""
    routes = [
        {"prefix": "/api", "pool": "p"},
        {"prefix": "/api/ai", "rewrite": "/api/v1", "pool": "p"},
    ]
    gateway = Gateway(config(routes, p=[A]), transport=MemoryTransport(ok))
    (rewritten, plain) = await call(gateway, ("POST", "/api/ai/query?x=1"), ("GET", "/api/x"))
    assert rewritten.text == f"{A} POST /api/v1/query?x=1"
    assert plain.text == f"{A} GET /api/x"


async def test_paths_are_matched_and_forwarded_in_one_form_never_leaving_their_route() -> None:
    """Dot-segments (spelled `%2e`) and encoded slashes are 400 `invalid_path` and reach no
    upstream (`/api/ai/%2e%2e/%2e%2e/metrics` would reach the API as `/metrics`); `.` and
    repeated slashes are normalised before the route is matched and rewritten."""
    seen: list[str] = []

    async def recorded(request: SentRequest) -> UpstreamResponse:
        seen.append(request.target)
        return await ok(request)

    routes = [{"prefix": "/api/ai", "rewrite": "/api/v1", "pool": "p"}]
    gateway = Gateway(config(routes, p=[A]), transport=MemoryTransport(recorded))
    *refused, tidied = await call(
        gateway,
        ("GET", "/api/ai/%2e%2e/%2e%2e/metrics"),
        ("GET", "/api/ai/%2E%2E/x"),
        ("GET", "/api/ai/v1%2F..%2Fmetrics"),
        ("GET", "/api/ai/v1%5cx"),
        ("POST", "/api//ai/./query"),
    )
    for answer in refused:
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_path")
    assert tidied.text == f"{A} POST /api/v1/query"
    assert seen == ["/api/v1/query"]


async def test_a_refused_connection_goes_on_to_the_other_instance_a_lost_one_does_not() -> None:
    """Never sent: the next instance answers. Lost after sending, for a POST without an
    Idempotency-Key: 502, and the request went out once."""

    async def a_refuses(request: SentRequest) -> UpstreamResponse:
        if request.origin == A:
            raise ConnectError("refused")
        return await ok(request)

    async def a_drops(request: SentRequest) -> UpstreamResponse:
        if request.origin == A:
            raise ConnectionLostError("reset after sending")
        return await ok(request)

    routes = [{"prefix": "/", "pool": "p"}]
    refused = MemoryTransport(a_refuses)
    answers = await call(Gateway(config(routes, p=[A, B]), transport=refused), *[("POST", "/")] * 2)
    assert [r.status_code for r in answers] == [200, 200]
    assert [s.origin for s in refused.sent] == [A, B, B]

    dropped = MemoryTransport(a_drops)
    answers = await call(Gateway(config(routes, p=[A, B]), transport=dropped), *[("POST", "/")] * 2)
    assert sorted(r.status_code for r in answers) == [200, 502]
    assert Counter(s.origin for s in dropped.sent) == {A: 1, B: 1}


async def test_a_weighted_split_sends_its_share_to_each_pool() -> None:
    """90/10 over 1000 requests (seeded): within three points of 10 % to the canary."""
    routes = [{"prefix": "/", "split": {"stable": 90, "canary": 10}}]
    transport = MemoryTransport(ok)
    gateway = Gateway(
        config(routes, stable=[A], canary=[B]), rng=random.Random(7), transport=transport
    )
    await call(gateway, *[("GET", "/")] * 1000)
    canary = sum(s.origin == B for s in transport.sent)
    assert 70 <= canary <= 130


async def test_a_spent_rate_limit_is_429_and_reaches_no_upstream() -> None:
    """`2/minute` per IP: the third request is refused with RateLimit headers, unsent."""
    routes = [{"prefix": "/", "pool": "p", "rate_limit": {"limit": "2/minute", "key": "ip"}}]
    transport = MemoryTransport(ok)
    answers = await call(Gateway(config(routes, p=[A]), transport=transport), *[("GET", "/")] * 3)
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert "retry-after" in answers[2].headers
    assert len(transport.sent) == 2


class _CutStream:
    def __init__(self) -> None:
        self.status = 200
        self.headers = [(b"content-type", b"text/event-stream")]

    async def chunks(self) -> AsyncIterator[bytes]:
        yield b'data: {"text": "Par'
        raise ConnectionLostError("the upstream died mid-stream")

    def release(self) -> None:
        """Nothing to give back."""


async def test_a_stream_cut_mid_event_ends_with_an_error_event_not_half_an_event() -> None:
    """The half event is held back; the caller gets the API's error event (`upstream_cut`)."""

    async def cut(request: SentRequest) -> UpstreamResponse:
        return _CutStream()

    routes = [{"prefix": "/", "pool": "p"}]
    (answer,) = await call(Gateway(config(routes, p=[A]), transport=MemoryTransport(cut)),
                           ("POST", "/api/v1/query"))  # fmt: skip
    assert answer.status_code == 200
    assert "Par" not in answer.text
    assert "event: error" in answer.text
    assert "upstream_cut" in answer.text


class _DiesAfterHeaders:
    def __init__(self) -> None:
        self.status = 200
        self.headers = [(b"content-type", b"application/json"), (b"content-length", b"40")]

    async def chunks(self) -> AsyncIterator[bytes]:
        raise ConnectionLostError("the upstream died after its headers")
        yield b""  # an async generator

    def release(self) -> None:
        """Nothing to give back."""


async def test_an_upstream_dying_between_headers_and_body_fails_the_try_not_the_caller() -> None:
    """A short body is read whole within the try: a GET goes on to the other instance; a POST
    that may not be resent gets the gateway's 502, never a 200 cut short."""

    async def a_dies(request: SentRequest) -> UpstreamResponse:
        if request.origin == A:
            return _DiesAfterHeaders()
        return await ok(request)

    routes = [{"prefix": "/", "pool": "p"}]
    transport = MemoryTransport(a_dies)
    gets = await call(Gateway(config(routes, p=[A, B]), transport=transport), *[("GET", "/")] * 2)
    assert [r.status_code for r in gets] == [200, 200]
    assert {r.text for r in gets} == {f"{B} GET /"}
    posts = await call(
        Gateway(config(routes, p=[A, B]), transport=MemoryTransport(a_dies)), *[("POST", "/")] * 2
    )
    assert sorted(r.status_code for r in posts) == [200, 502]
