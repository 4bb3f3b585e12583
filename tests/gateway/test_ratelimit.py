"""Rate limits: exact at the boundary in one gateway, and across two gateways sharing Redis
(the total admitted equals the limit, whichever replica was asked)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from prsm.embedded_redis import EmbeddedRedis
from prsm.gateway.ratelimit import client_key
from tests.support import API_KEY, ServerProcess, prsm_gateway

AUTH = {"Authorization": f"Bearer {API_KEY}"}
QUERY = {"prompt": "hi", "userId": "u1"}


def limited(api: ServerProcess, limit: str, **more: Any) -> dict[str, Any]:
    return {
        "pools": {"api": {"discovery": {"kind": "static", "urls": [api.base_url]}}},
        "routes": [{"prefix": "/api/v1", "pool": "api",
                    "rate_limit": {"limit": limit, "key": "ip"}}],
        **more,
    }  # fmt: skip


def test_one_replica_admits_exactly_the_limit(fixed_server: ServerProcess, tmp_path: Path) -> None:
    """20 per minute: the 20th request passes, the 21st gets 429 with Retry-After and the
    RateLimit headers; a JSON body says why."""
    with (
        prsm_gateway(tmp_path, limited(fixed_server, "20/minute")) as gw,
        httpx.Client(base_url=gw.base_url) as http,
    ):
        responses = [http.post("/api/v1/query", json=QUERY, headers=AUTH) for _ in range(25)]
        metrics = http.get("/metrics").text
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 20 + [429] * 5
    assert responses[19].headers["ratelimit-remaining"] == "0"
    assert responses[0].headers["ratelimit-limit"] == "20"
    refused = responses[20]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 'prsm_gateway_rate_limited_total{route="/api/v1"} 5.0' in metrics


def test_a_body_too_large_and_an_injected_fault_carry_the_ratelimit_headers(
    fixed_server: ServerProcess, tmp_path: Path
) -> None:
    """The gateway's own refusals on a limited route — 413 for a body over its bound, an
    injected abort — count against the limit and say so, as its other answers do."""
    config = limited(fixed_server, "20/minute", max_body_bytes=1024)
    aborting = dict(config["routes"][0], prefix="/v1",
                    fault={"abort": {"percent": 100, "status": 503}})  # fmt: skip
    config["routes"].append(aborting)
    with (
        prsm_gateway(tmp_path, config) as gw,
        httpx.Client(base_url=gw.base_url) as http,
    ):
        too_large = http.post("/api/v1/query", content=b"x" * 4096, headers=AUTH)
        aborted = http.post("/v1/chat/completions", json={}, headers=AUTH)
    assert too_large.status_code == 413
    assert too_large.headers["ratelimit-limit"] == "20"
    assert too_large.headers["ratelimit-remaining"] == "19"
    assert aborted.status_code == 503
    assert aborted.json()["error"]["code"] == "fault_injected"
    assert aborted.headers["ratelimit-limit"] == "20"


def test_two_replicas_sharing_redis_admit_the_limit_in_total(
    fixed_server: ServerProcess, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """60 concurrent requests spread over two gateways with a shared budget of 25: exactly 25
    are admitted in all (with memory storage each replica would admit 25: 50)."""
    config = limited(fixed_server, "25/minute", rate_limit_storage="redis",
                     redis_url=redis_server.url)  # fmt: skip
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with prsm_gateway(tmp_path / "a", config) as one, prsm_gateway(tmp_path / "b", config) as two:

        async def burst() -> Counter[int]:
            async with (
                httpx.AsyncClient(base_url=one.base_url) as a,
                httpx.AsyncClient(base_url=two.base_url) as b,
            ):
                calls = [
                    (a if i % 2 else b).post("/api/v1/query", json=QUERY, headers=AUTH)
                    for i in range(60)
                ]
                return Counter(r.status_code for r in await asyncio.gather(*calls))

        statuses = asyncio.run(burst())
    assert statuses == {200: 25, 429: 35}


@pytest.mark.parametrize(("on_down", "status"), [("admit", 200), ("refuse", 503)])
def test_shared_limits_with_their_redis_down_admit_or_refuse_as_configured(
    fixed_server: ServerProcess, tmp_path: Path, on_down: str, status: int
) -> None:
    """Redis-backed limits and their Redis stopped: `admit` (the default) lets requests through
    uncounted, without `RateLimit-*` headers that would be made up; `refuse` is 503
    `rate_limit_unavailable` with `Retry-After` — a JSON answer either way, never a 500."""
    redis = EmbeddedRedis(tmp_path / "redis")
    config = limited(fixed_server, "100/minute", rate_limit_storage="redis",
                     redis_url=redis.start(), rate_limit_on_redis_down=on_down)  # fmt: skip
    with prsm_gateway(tmp_path, config) as gw, httpx.Client(base_url=gw.base_url) as http:
        counted = http.post("/api/v1/query", json=QUERY, headers=AUTH)
        redis.stop()
        answers = [http.post("/api/v1/query", json=QUERY, headers=AUTH) for _ in range(3)]
    assert counted.headers["ratelimit-remaining"] == "99"
    assert [a.status_code for a in answers] == [status] * 3
    assert all("ratelimit-remaining" not in a.headers for a in answers)
    if status == 503:
        assert {a.json()["error"]["code"] for a in answers} == {"rate_limit_unavailable"}
        assert all(a.headers["retry-after"] == "1" for a in answers)


def test_client_keys() -> None:
    """`ip` is the peer; `api_key` a digest of the credential, never the key; `user` the
    token's subject; without a credential both fall back to the peer."""
    payload = base64.urlsafe_b64encode(json.dumps({"sub": "alice"}).encode()).rstrip(b"=")
    jwt_like = b"Bearer e30." + payload + b".sig"
    assert client_key("ip", {b"authorization": b"Bearer k"}, "10.0.0.1") == "10.0.0.1"
    key = client_key("api_key", {b"authorization": b"Bearer secret-key"}, "10.0.0.1")
    assert key.startswith("key:")
    assert "secret" not in key
    assert client_key("api_key", {}, "10.0.0.1") == "10.0.0.1"
    assert client_key("user", {b"authorization": jwt_like}, "10.0.0.1") == "sub:alice"
    assert client_key("user", {b"authorization": b"Bearer opaque"}, "p").startswith("key:")


def test_routes_sharing_a_budget_cannot_be_walked_round(
    fixed_server: ServerProcess, tmp_path: Path
) -> None:
    """Two routes to the same API naming one budget of 6 per minute: 4 calls on one path and
    4 on the other admit 6 in all; the caller cannot spend a second budget on the other path."""
    limit = {"limit": "6/minute", "key": "ip", "budget": "per-client"}
    config = {
        "pools": {"api": {"discovery": {"kind": "static", "urls": [fixed_server.base_url]}}},
        "routes": [
            {"prefix": "/api/ai", "rewrite": "/api/v1", "pool": "api", "rate_limit": limit},
            {"prefix": "/api/v1", "pool": "api", "rate_limit": limit},
        ],
    }
    with prsm_gateway(tmp_path, config) as gw, httpx.Client(base_url=gw.base_url) as http:
        statuses = [http.post("/api/ai/query", json=QUERY, headers=AUTH).status_code
                    for _ in range(4)]  # fmt: skip
        statuses += [http.post("/api/v1/query", json=QUERY, headers=AUTH).status_code
                     for _ in range(4)]  # fmt: skip
    assert statuses == [200] * 6 + [429] * 2


def test_the_default_config_limits_every_route_against_one_budget() -> None:
    """`prsm up`'s gateway: /api/ai and /api/v1 are both limited, by one budget per IP."""
    from prsm.gateway.run import default_config

    rules = [route.rate_limit for route in default_config("http://127.0.0.1:8000").routes]
    assert all(rule is not None for rule in rules)
    assert len({rule.budget for rule in rules if rule is not None}) == 1
    assert len(set(rules)) == 1
