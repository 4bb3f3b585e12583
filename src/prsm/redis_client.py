"""Connecting to Redis: one place for the client options every PRSM process uses."""

from __future__ import annotations

import redis.asyncio as aioredis


def connect_redis(url: str) -> aioredis.Redis:
    """A pooled asyncio client; connects lazily, so a Redis that is down does not stop start-up.

    Short socket timeouts keep a dead Redis from holding up a publisher or a probe.
    """
    return aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
