"""`prsm events tail`: live events for an operator, from the pub/sub channels."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
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
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(2):  # leaving must not wait on a Redis that is away
                await pubsub.aclose()
                await redis.aclose()


async def tail_until_stopped(redis_url: str, out: Callable[[str], None]) -> None:
    """`tail` until SIGINT or SIGTERM, whatever this process inherited for them (a process
    started in the background by a shell ignores SIGINT)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for stop in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(stop, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await tail(redis_url, out)
