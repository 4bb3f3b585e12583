"""Gateway configuration: what a valid file builds, and errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from prsm.errors import ConfigError
from prsm.gateway.config import load_gateway_config, parse_gateway_config
from prsm.gateway.run import default_config
from prsm.sd import ConsulDiscovery, DnsDiscovery, StaticDiscovery
from prsm.sd.balance import LeastOutstanding

POOLS = {"a": {"discovery": {"kind": "static", "urls": ["http://127.0.0.1:1"]}}}


def config(**changes: Any) -> dict[str, Any]:
    return {"pools": POOLS, "routes": [{"prefix": "/api", "pool": "a"}]} | changes


def test_a_full_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        """
pools:
  stable: {discovery: {kind: static, urls: ["http://10.0.0.7:8000"]}, balancer: least_outstanding}
  canary: {discovery: {kind: dns, name: canary.local, port: 8000}}
  shadow: {discovery: {kind: consul, service: prsm-api, address: "http://consul:8500"}}
routes:
  - prefix: /api/ai
    rewrite: /api/v1
    split: {stable: 90, canary: 10}
    sticky: {cookie: session}
    retries: {attempts: 3, per_try_timeout: 30, retry_on: [connect-failure, "503"]}
    fault: {delay: {percent: 0.1, seconds: 5}}
    rate_limit: {limit: 1000/15 minutes, key: ip}
"""
    )
    loaded = load_gateway_config(path)
    route = loaded.routes[0]
    assert route.pools == ["stable", "canary"]
    assert route.retries.retry_on == ("connect-failure", "503")
    assert isinstance(loaded.pools["stable"].make_discovery(), StaticDiscovery)
    assert isinstance(loaded.pools["canary"].make_discovery(), DnsDiscovery)
    consul = loaded.pools["shadow"].make_discovery()
    assert isinstance(consul, ConsulDiscovery)
    assert consul.service == "prsm-api"
    assert isinstance(loaded.pools["stable"].make_balancer("stable"), LeastOutstanding)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"routs": []}, "routs: unknown key"),
        ({"routes": [{"prefix": "/x", "pool": "missing"}]}, "unknown pool missing"),
        ({"routes": [{"prefix": "/x"}]}, "exactly one of pool or split"),
        ({"routes": [{"prefix": "/x", "split": {"a": 0}}]}, "not all 0"),
        ({"routes": [{"prefix": "x", "pool": "a"}]}, "routes.0.prefix"),
        ({"routes": [{"prefix": "/x", "pool": "a", "rate_limit": {"limit": "lots"}}]},
         "not a rate limit"),
        ({"rate_limit_storage": "redis"}, "needs redis_url"),
        ({"routes": [{"prefix": "/x", "pool": "a", "sticky": {}}]}, "exactly one of header"),
        ({"routes": [{"prefix": "/x", "pool": "a"}, {"prefix": "/x", "pool": "a"}]},
         "same prefix"),
    ],
)  # fmt: skip
def test_errors_name_the_problem(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_gateway_config(config(**changes))


def test_unreadable_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_gateway_config(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("routes: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_gateway_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1")
    with pytest.raises(ConfigError, match="mapping"):
        load_gateway_config(tmp_path / "list.yaml")


def test_the_default_config_is_the_specification_gateway() -> None:
    """`/api/ai` → `/api/v1` on the API, 1000 requests per 15 minutes per IP."""
    default = default_config("http://127.0.0.1:8000")
    route = default.routes[0]
    assert (route.prefix, route.rewrite, route.pool) == ("/api/ai", "/api/v1", "api")
    assert route.rate_limit is not None
    assert (route.rate_limit.limit, route.rate_limit.key) == ("1000/15 minutes", "ip")


def test_a_budget_shared_with_different_rules_is_refused() -> None:
    """Two routes naming one budget must give it the same limit, key and strategy."""
    config = {
        "pools": {"p": {"discovery": {"kind": "static", "urls": ["http://a:1"]}}},
        "routes": [
            {"prefix": "/a", "pool": "p", "rate_limit": {"limit": "5/minute", "budget": "b"}},
            {"prefix": "/b", "pool": "p", "rate_limit": {"limit": "9/minute", "budget": "b"}},
        ],
    }
    with pytest.raises(ConfigError, match="budget 'b'"):
        parse_gateway_config(config)


def test_redis_url_comes_from_the_setting_when_the_file_gives_none(tmp_path: Path) -> None:
    """A file without redis_url takes the given one (PRSM_REDIS_URL); the file's own wins."""
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config(rate_limit_storage="redis")))
    loaded = load_gateway_config(path, redis_url="redis://:secret@redis:6379/0")
    assert loaded.redis_url == "redis://:secret@redis:6379/0"
    path.write_text(yaml.safe_dump(config(rate_limit_storage="redis", redis_url="redis://own/1")))
    assert load_gateway_config(path, redis_url="redis://other/0").redis_url == "redis://own/1"


def test_only_routes_that_may_reach_a_prefix_pool_read_the_prompt() -> None:
    """The prompt is read for a route whose pool, split or model map may send to a pool
    balanced by prefix, and for one routing by model learned from every pool; not for a route
    whose pools all balance otherwise."""

    def pool(balancer: str) -> dict[str, Any]:
        return {"discovery": {"kind": "static", "urls": ["http://a:1"]}, "balancer": balancer}

    loaded = parse_gateway_config({
        "pools": {"cached": pool("prefix_affinity"), "plain": pool("round_robin")},
        "routes": [
            {"prefix": "/direct", "pool": "cached"},
            {"prefix": "/split", "split": {"plain": 9, "cached": 1}},
            {"prefix": "/mapped", "pool": "plain", "models": {"map": {"big": "cached"}}},
            {"prefix": "/learned", "pool": "plain", "models": {}},
            {"prefix": "/learned-plain", "pool": "plain", "models": {"pools": ["plain"]}},
            {"prefix": "/plain", "pool": "plain"},
        ],
    })  # fmt: skip
    reading = [route.prefix for route in loaded.routes if loaded.reads_prompt(route)]
    assert reading == ["/direct", "/split", "/mapped", "/learned"]
