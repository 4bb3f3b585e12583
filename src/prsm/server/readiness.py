"""Readiness checks beyond the engine: each answers whether one dependency is usable."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from prsm.contracts import CheckResult

ReadinessCheck = Callable[[], Awaitable[CheckResult]]


def redis_check(redis: aioredis.Redis, timeout: float = 1.0) -> ReadinessCheck:
    """A readiness check: Redis answers PING."""

    async def check() -> CheckResult:
        try:
            await redis.ping()
        except (RedisError, OSError) as exc:
            return CheckResult(ok=False, detail=f"unreachable: {exc}")
        return CheckResult(ok=True, detail="answers PING")

    return check
