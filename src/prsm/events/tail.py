"""`prsm events tail`: live events for an operator, from the pub/sub channels."""

from __future__ import annotations

import json
from collections.abc import Callable

from prsm import keys
from prsm.redis_client import connect_redis


async def tail(redis_url: str, out: Callable[[str], None]) -> None:
    """Write each event published on the query and fallback channels as a JSON line,
    with its channel, until cancelled."""
    redis = connect_redis(redis_url)
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(keys.QUERY_COMPLETED, keys.QUERY_FAILED, keys.FALLBACK_REQUEST)
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            try:
                payload = json.loads(message["data"])
            except ValueError:
                payload = message["data"].decode(errors="replace")
            out(json.dumps({"channel": message["channel"].decode(), "event": payload}))
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()
