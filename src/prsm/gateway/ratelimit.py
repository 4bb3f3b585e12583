"""Per-client rate limits on the `limits` library: a moving window (exact over any span of the
period) or a fixed window (one counter), in memory for one gateway or in Redis so that every
replica draws on one budget (the library's Redis storage takes an entry with one atomic
operation, so two replicas cannot both take the last one).

Clients are told where they stand in the IETF `RateLimit-*` headers and, once refused,
`Retry-After`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import limits
import limits.strategies
from limits.aio.storage import RedisStorage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
)
from limits.aio.strategies import (
    RateLimiter as Strategy,
)
from limits.errors import StorageError

from prsm.errors import ServiceUnavailableError
from prsm.gateway.config import GatewayConfig, RateLimit
from prsm.gateway.local_limits import LoopStorage
from prsm.keys import RATE_LIMIT_PREFIX

log = logging.getLogger("prsm.gateway")


@dataclass(frozen=True, slots=True)
class Decision:
    """A rate limit's verdict: allowed or not, and what the caller is told."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    counted: bool = True
    """False: admitted while the shared counts were unreachable (no headers then)."""

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The `RateLimit-*` headers (and `Retry-After` when refused) for the answer."""
        if not self.counted:
            return []
        headers = [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset_seconds).encode()),
        ]
        if not self.allowed:
            headers.append((b"retry-after", str(max(1, self.reset_seconds)).encode()))
        return headers


class RateLimiter:
    """Checks routes' rate limits per client, in memory or in Redis (shared by replicas)."""

    def __init__(self, config: GatewayConfig) -> None:
        self._on_down = config.rate_limit_on_redis_down
        self._outage = False
        self._items: dict[str, limits.RateLimitItem] = {}
        self._strategies: dict[str, Strategy] = {}
        self._local: dict[str, limits.strategies.RateLimiter] = {}
        if config.rate_limit_storage == "redis":
            assert config.redis_url is not None  # checked with the config
            # The client PRSM makes for any Redis (one server or Sentinel), its pool lent; a
            # gateway counting in memory never loads the Redis client.
            from prsm.redis_client import connect_redis

            pool: Any = connect_redis(config.redis_url).connection_pool
            shared = RedisStorage(
                "async+redis://",
                implementation="redispy",
                key_prefix=RATE_LIMIT_PREFIX,
                connection_pool=pool,
                wrap_exceptions=True,  # Redis's errors as StorageError: see _uncounted
            )
            self._strategies = {
                "moving": MovingWindowRateLimiter(shared),
                "fixed": FixedWindowRateLimiter(shared),
            }
        else:
            local = LoopStorage()  # on the event loop: its calls never wait
            self._local = {
                "moving": limits.strategies.MovingWindowRateLimiter(local),
                "fixed": limits.strategies.FixedWindowRateLimiter(local),
            }

    async def hit(self, rule: RateLimit, budget: str, client: str) -> Decision:
        """Take one request from `client`'s share of `budget` (a route's own, or one that
        several routes name)."""
        item = self._items.get(rule.limit)
        if item is None:
            item = self._items[rule.limit] = limits.parse(rule.limit)
        local = self._local.get(rule.strategy)
        if local is not None:
            allowed = local.hit(item, budget, client)
            reset_at, remaining = local.get_window_stats(item, budget, client)
        else:
            strategy = self._strategies[rule.strategy]
            try:
                allowed = await strategy.hit(item, budget, client)
                reset_at, remaining = await strategy.get_window_stats(item, budget, client)
            except (StorageError, OSError, TimeoutError) as exc:
                return self._uncounted(item, exc)
            if self._outage:
                self._outage = False
                log.info("rate limits are counted in Redis again")
        return Decision(
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, remaining),
            reset_seconds=max(0, math.ceil(reset_at - time.time())),
        )

    def _uncounted(self, item: limits.RateLimitItem, exc: BaseException) -> Decision:
        """Redis unreachable: admitted uncounted, or 503 (`rate_limit_on_redis_down`)."""
        if not self._outage:
            self._outage = True
            log.warning(
                "rate limits cannot be counted: Redis failed",
                extra={"error": str(exc), "onRedisDown": self._on_down},
            )
        if self._on_down == "refuse":
            raise ServiceUnavailableError(
                "rate limits cannot be checked now (their Redis is unreachable)",
                code="rate_limit_unavailable",
                retry_after=1,
                not_run=True,
            )
        return Decision(
            allowed=True, limit=item.amount, remaining=0, reset_seconds=0, counted=False
        )


def client_key(kind: str, headers: dict[bytes, bytes], peer: str) -> str:
    """Who a request counts against: its IP (`ip`), a digest of its bearer credential
    (`api_key`; never the key itself), or its token's subject (`user`). Without a credential,
    `api_key` and `user` fall back to the IP."""
    if kind == "ip":
        return peer
    scheme, _, credential = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return peer
    if kind == "user":
        subject = _token_subject(credential)
        if subject is not None:
            return "sub:" + subject
    return "key:" + hashlib.sha256(credential.encode()).hexdigest()[:32]


def _token_subject(token: str) -> str | None:
    """A JWT's `sub`, unverified: the API verifies the token; a forged one is refused there
    and only ever spends its own budget."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    subject = payload.get("sub") if isinstance(payload, dict) else None
    return str(subject)[:128] if subject else None
