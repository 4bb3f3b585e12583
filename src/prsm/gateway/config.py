"""The gateway's YAML configuration: pools of upstreams and the routes that lead to them.

```yaml
pools:
  stable: {discovery: {kind: static, urls: ["http://10.0.0.7:8000"]}}
  canary: {discovery: {kind: dns, name: prsm-canary.default.svc.cluster.local, port: 8000}}
routes:
  - prefix: /api/ai
    rewrite: /api/v1
    split: {stable: 90, canary: 10}
    rate_limit: {limit: 1000/15 minutes, key: ip}
```

Every key is checked: an unknown one, a route naming a missing pool, weights that are all zero
or a limit `limits` cannot parse are errors that name the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import limits
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from prsm.config import describe_invalid, read_yaml_mapping
from prsm.errors import ConfigError
from prsm.resilience.breaker import BreakerConfig
from prsm.sd import (
    ConsulDiscovery,
    Discovery,
    DnsDiscovery,
    KubernetesDiscovery,
    StaticDiscovery,
)
from prsm.sd.affinity import AffinityConfig, PrefixAffinity
from prsm.sd.balance import Balancer, LeastOutstanding, RoundRobin
from prsm.sd.outliers import OutlierDetector

DEFAULT_PORT = 3000
RETRY_ON = Literal["connect-failure", "reset", "502", "503", "504"]


class Strict(BaseModel):
    """The base of every gateway config model: frozen, and an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StaticSource(Strict):
    """A fixed list of instance URLs."""

    kind: Literal["static"]
    urls: list[str] = Field(min_length=1)


class DnsSource(Strict):
    """Instances from DNS: A/AAAA records on `port`, or SRV records (ports and weights)."""

    kind: Literal["dns"]
    name: str
    port: int | None = None
    srv: bool = False
    nameservers: list[str] | None = None
    nameserver_port: int = 53


class ConsulSource(Strict):
    """Instances from Consul's health API (passing instances of `service`)."""

    kind: Literal["consul"]
    service: str
    address: str = "http://127.0.0.1:8500"
    token: str | None = None
    tag: str | None = None


class KubernetesSource(Strict):
    """Instances from a Kubernetes Service's EndpointSlices (ready endpoints only)."""

    kind: Literal["kubernetes"]
    service: str
    namespace: str | None = None
    """The pod's own namespace when unset."""


Source = Annotated[
    StaticSource | DnsSource | ConsulSource | KubernetesSource, Field(discriminator="kind")
]


class OutlierSettings(Strict):
    """Outlier ejection: after `consecutive_failures` in a row, an instance is left out for
    `base_ejection_seconds` (longer each time), never more than `max_ejection_share` of the
    pool."""

    consecutive_failures: int = Field(default=5, ge=1)
    base_ejection_seconds: float = Field(default=30.0, gt=0)
    max_ejection_share: float = Field(default=0.5, ge=0, le=1)


class BreakerSettings(Strict):
    """The circuit breaker each instance of the pool gets."""

    error_threshold: float = Field(default=0.5, gt=0, le=1)
    minimum_calls: int = Field(default=20, ge=1)
    window_seconds: float = Field(default=10.0, gt=0)
    reset_timeout: float = Field(default=30.0, gt=0)
    half_open_trials: int = Field(default=3, ge=1)


class AffinitySettings(Strict):
    """`prefix_affinity`'s settings (`prsm.sd.affinity`): blocks, each replica's cache, the
    load guard, and a session header to route by when a request has no prompt to."""

    block_chars: int = Field(default=AffinityConfig.block_chars, ge=16)
    cache_tokens: int = Field(default=AffinityConfig.cache_tokens, ge=1)
    """Each replica's KV cache in tokens: its engine's `max_batch` times `context_size`."""
    max_age_seconds: float = Field(default=AffinityConfig.max_age_seconds, gt=0)
    guard_absolute: int = Field(default=AffinityConfig.guard_absolute, ge=0)
    guard_relative: float = Field(default=AffinityConfig.guard_relative, ge=1)
    session_header: str | None = None
    """E.g. `x-session-id`: its value routes a request whose body has no whole block."""


class PoolConfig(Strict):
    """A set of upstream instances: how they are found, balanced, ejected and guarded."""

    discovery: Source
    balancer: Literal["round_robin", "least_outstanding", "prefix_affinity"] = "round_robin"
    affinity: AffinitySettings = Field(default_factory=AffinitySettings)
    outliers: OutlierSettings = Field(default_factory=OutlierSettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    refresh_seconds: float = Field(default=30.0, gt=0)

    def make_discovery(self) -> Discovery:
        """The discovery backend the `discovery` section names."""
        source = self.discovery
        if isinstance(source, StaticSource):
            return StaticDiscovery(source.urls)
        if isinstance(source, DnsSource):
            return DnsDiscovery(
                source.name,
                port=source.port,
                srv=source.srv,
                nameservers=source.nameservers,
                nameserver_port=source.nameserver_port,
            )
        if isinstance(source, ConsulSource):
            return ConsulDiscovery(
                source.service, address=source.address, token=source.token, tag=source.tag
            )
        if source.namespace:
            return KubernetesDiscovery.in_cluster(source.service, namespace=source.namespace)
        return KubernetesDiscovery.in_cluster(source.service)

    def make_balancer(self, name: str) -> Balancer:
        """The balancer the `balancer` key names, for the pool called `name`."""
        if self.balancer == "prefix_affinity":
            settings = self.affinity.model_dump(exclude={"session_header"})
            return PrefixAffinity(AffinityConfig(**settings), pool=name)
        return LeastOutstanding() if self.balancer == "least_outstanding" else RoundRobin()

    def make_outliers(self) -> OutlierDetector:
        """The outlier detector for the `outliers` section."""
        o = self.outliers
        return OutlierDetector(
            consecutive_failures=o.consecutive_failures,
            base_ejection_seconds=o.base_ejection_seconds,
            max_ejection_share=o.max_ejection_share,
        )

    def make_breaker(self) -> BreakerConfig:
        """The per-instance breaker configuration for the `breaker` section."""
        b = self.breaker
        return BreakerConfig(
            error_threshold=b.error_threshold,
            minimum_calls=b.minimum_calls,
            window_seconds=b.window_seconds,
            reset_timeout=b.reset_timeout,
            half_open_trials=b.half_open_trials,
            call_timeout=None,  # the route's per-try timeout bounds each attempt
        )


class Retries(Strict):
    """How a route tries again: attempts in all, a timeout per try, what is retried (narrowing
    what `prsm.resilience.outcomes` allows)."""

    attempts: int = Field(default=3, ge=1, le=10)
    """Tries in all, the first included, each on a different instance when there is one."""
    per_try_timeout: float = Field(default=30.0, gt=0)
    """Seconds until the upstream's response headers; the body then streams freely."""
    retry_on: tuple[RETRY_ON, ...] = ("connect-failure", "reset", "502", "503", "504")
    non_idempotent: bool = False
    """Also retry POST/PATCH the upstream may have received (a failure after sending)."""


class Sticky(Strict):
    """Keeps a caller on one side of a split, by a header's or a cookie's value."""

    header: str | None = None
    cookie: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Sticky:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("sticky needs exactly one of header or cookie")
        return self


class Delay(Strict):
    """Injected delay: `percent` of requests wait `seconds` first."""

    percent: float = Field(ge=0, le=100)
    seconds: float = Field(gt=0)


class Abort(Strict):
    """Injected abort: `percent` of requests are answered with `status` at once."""

    percent: float = Field(ge=0, le=100)
    status: int = Field(default=503, ge=400, le=599)


class Fault(Strict):
    """Fault injection on a route (Istio's `fault`): a delay, an abort, or both."""

    delay: Delay | None = None
    abort: Abort | None = None


class RateLimit(Strict):
    """A per-client rate limit on a route."""

    limit: str
    """`limits` notation: `1000/15 minutes`, `10/second`, `100 per minute`."""
    key: Literal["ip", "api_key", "user"] = "ip"
    strategy: Literal["moving", "fixed"] = "moving"
    """`moving`: exact over any window of the period, one entry kept per request admitted;
    `fixed`: one counter per period (constant memory; up to twice the limit across the
    boundary between two periods)."""
    budget: str | None = Field(default=None, min_length=1, max_length=64)
    """Routes naming the same budget draw on one budget per client; unset, the route has its
    own. Routes sharing a budget must give it the same limit, key and strategy."""

    @field_validator("limit")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            limits.parse(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit: {value!r} ({exc})") from None
        return value


class ModelRoutes(Strict):
    """Routing by the body's `model`: which pool serves which model id or alias."""

    map: dict[str, str] = Field(default_factory=dict)
    """Model id or alias → pool; wins over what is learned."""
    pools: list[str] = Field(default_factory=list)
    """The pools to learn from, the first winning a name two serve; empty: every pool."""
    learn: bool = True
    """Learn each pool's ids and aliases from its `GET <upstream prefix>/models`, asked with
    the gateway's `api_key` (PRSM_API_KEY)."""
    refresh_seconds: float = Field(default=30.0, gt=0)
    """How often the lists are asked again (and at most once a second when a request names a
    model no pool is known to serve)."""
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    """Model id → the models (ids or aliases) to try, in order, when its pool cannot take a
    request that provably did not run there: no instance reachable, every breaker open, or
    refused before it ran (a 503 marked `X-PRSM-Not-Run`). The body is sent again naming the
    fallback; never once an answer has begun, nor for a request that may have run."""


class Route(Strict):
    """A path prefix and where it goes: one pool or a weighted split, with its retries, timeout,
    rate limit and faults."""

    prefix: str = Field(pattern=r"^/")
    rewrite: str | None = Field(default=None, pattern=r"^/")
    """Replaces `prefix` in the upstream path: `/api/ai` → `/api/v1`."""
    pool: str | None = None
    split: dict[str, int] | None = None
    """Pool name → weight, e.g. `{stable: 90, canary: 10}`."""
    sticky: Sticky | None = None
    retries: Retries = Field(default_factory=Retries)
    timeout: float = Field(default=120.0, gt=0)
    """The whole request, every try included, until the response headers."""
    fault: Fault | None = None
    rate_limit: RateLimit | None = None
    models: ModelRoutes | None = None
    """Send each request to the pool that serves the model its JSON body names (the alias
    resolved, the model's id forwarded); a body naming no model goes by `pool` or `split`."""

    @model_validator(mode="after")
    def _target(self) -> Route:
        if (self.pool is None) == (self.split is None):
            raise ValueError(f"route {self.prefix}: give exactly one of pool or split")
        if self.split is not None and (
            any(w < 0 for w in self.split.values()) or sum(self.split.values()) <= 0
        ):
            raise ValueError(f"route {self.prefix}: split weights must be >= 0, not all 0")
        return self

    @property
    def pools(self) -> list[str]:
        """The pools the route sends to (by its split, or by model)."""
        named = [self.pool] if self.pool is not None else list(self.split or {})
        models = self.models
        by_model = [*models.map.values(), *models.pools] if models is not None else []
        return list(dict.fromkeys([*named, *by_model]))


class GatewayConfig(Strict):
    """The whole gateway: pools, routes (longest prefix first), limits and the rate limiter's
    storage."""

    pools: dict[str, PoolConfig] = Field(min_length=1)
    routes: list[Route] = Field(min_length=1)
    source_service: str = "api-gateway"
    """`X-Source-Service` sent upstream when the caller did not send one."""
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    rate_limit_storage: Literal["memory", "redis"] = "memory"
    rate_limit_on_redis_down: Literal["admit", "refuse"] = "admit"
    """With `redis` storage and Redis unreachable: let requests through uncounted (as Envoy's
    and Kong's limits do by default: the limits protect the API, an outage of theirs should not
    stop it), or refuse them, 503 `rate_limit_unavailable`. One warning an outage either way."""
    redis_url: str | None = None
    """Unset: the `redis_url` setting (`PRSM_REDIS_URL`), so a password need not be in the file."""
    seed: int | None = None
    """Seeds the random choices (splits, faults) for reproducible experiments and tests."""
    trusted_proxies: int = Field(default=0, ge=0)
    """How many proxies in front append to X-Forwarded-For; 0: the client is the peer."""

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        for route in self.routes:
            missing = [p for p in route.pools if p not in self.pools]
            if missing:
                raise ValueError(f"route {route.prefix}: unknown pool {', '.join(missing)}")
        if self.rate_limit_storage == "redis" and not self.redis_url:
            raise ValueError("rate_limit_storage: redis needs redis_url")
        budgets: dict[str, RateLimit] = {}
        for route in self.routes:
            rule = route.rate_limit
            if rule is None or rule.budget is None:
                continue
            first = budgets.setdefault(rule.budget, rule)
            if first != rule:
                raise ValueError(
                    f"route {route.prefix}: budget {rule.budget!r} is given another limit, key "
                    "or strategy by an earlier route"
                )
        prefixes = [r.prefix for r in self.routes]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError("two routes have the same prefix")
        return self

    def reads_prompt(self, route: Route) -> bool:
        """Whether a pool `route` may send to balances by prompt prefix: only then does the
        gateway read the prompt of the route's requests. Routing by model learned from every
        pool may reach any."""
        models = route.models
        names = self.pools if models is not None and not models.pools else route.pools
        return any(self.pools[name].balancer == "prefix_affinity" for name in names)


def load_gateway_config(path: Path | str, redis_url: str | None = None) -> GatewayConfig:
    """Read and check a gateway YAML file; `ConfigError` names what is wrong. `redis_url` is
    used when the file gives none."""
    data = read_yaml_mapping(Path(path), "gateway config")
    return parse_gateway_config(data, source=str(path), redis_url=redis_url)


def parse_gateway_config(
    data: Any, source: str = "gateway config", redis_url: str | None = None
) -> GatewayConfig:
    """A `GatewayConfig` from a parsed YAML mapping; `ConfigError` naming `source` and every
    problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top")
    if redis_url and not data.get("redis_url"):
        data = {**data, "redis_url": redis_url}
    try:
        return GatewayConfig.model_validate(data)
    except PydanticValidationError as exc:
        raise ConfigError(describe_invalid(exc, source, unknown="unknown key")) from None
