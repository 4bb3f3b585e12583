"""`prsm events tail`: live events for an operator, from the pub/sub channels."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from prsm import keys
from prsm.redis_client import connect_redis

log = logging.getLogger("prsm.events")
RESUBSCRIBE_SECONDS = 0.5


async def tail(redis_url: str, out: Callable[[str], None]) -> None:
    """Write each event published on the query and fallback channels as a JSON line,
    with its channel, until cancelled. A Redis that goes away — restarted, or a Sentinel
    master failed over — is subscribed to again, every `RESUBSCRIBE_SECONDS`, with one
    warning an outage (pub/sub keeps nothing: what was published meanwhile is not seen)."""
    redis = connect_redis(redis_url)
    outage = _Outage()
    try:
        while True:
            try:
                await _listen(redis, out, outage)
            except (RedisError, OSError) as exc:
                if not outage.lost:
                    log.warning(
                        "events tail lost Redis; subscribing again", extra={"error": str(exc)}
                    )
                outage.lost = True
                await asyncio.sleep(RESUBSCRIBE_SECONDS)
    finally:
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(2):  # leaving must not wait on a Redis that is away
                await redis.aclose()


@dataclass
class _Outage:
    lost: bool = False


async def _listen(redis: Redis, out: Callable[[str], None], outage: _Outage) -> None:
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(keys.QUERY_COMPLETED, keys.QUERY_FAILED, keys.FALLBACK_REQUEST)
        if outage.lost:
            log.info("events tail subscribed again")
            outage.lost = False
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
            async with asyncio.timeout(2):
                await pubsub.aclose()


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
