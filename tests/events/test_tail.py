"""`prsm events tail` on a Redis that fails over: it subscribes again to the new master."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from redis.exceptions import RedisError

from prsm import keys
from prsm.embedded_redis import SentinelDeployment
from prsm.events.tail import tail
from prsm.redis_client import connect_redis


async def test_the_tail_follows_a_failed_over_master(deployment: SentinelDeployment) -> None:
    """The master is SIGKILLed under a running tail: events published on the promoted master
    reach it within 15 s, no restart (what was published during the switch is not: pub/sub
    keeps nothing)."""
    lines: list[str] = []
    tailing = asyncio.create_task(tail(deployment.url, lines.append))
    publisher = connect_redis(deployment.url)
    while not lines:  # subscribed once the first publication is heard
        await publisher.publish(keys.QUERY_COMPLETED, json.dumps({"n": 1}))
        await asyncio.sleep(0.1)
    deployment.kill(deployment.master_port())
    killed, heard = time.monotonic(), len(lines)
    while len(lines) == heard:
        assert time.monotonic() - killed < 15, "nothing heard 15 s after the failover"
        assert not tailing.done(), tailing
        with contextlib.suppress(RedisError, OSError):  # the publisher waits for it too
            await publisher.publish(keys.QUERY_COMPLETED, json.dumps({"n": 2}))
        await asyncio.sleep(0.2)
    assert json.loads(lines[-1]) == {"channel": keys.QUERY_COMPLETED, "event": {"n": 2}}
    tailing.cancel()
    await asyncio.gather(tailing, return_exceptions=True)
    await publisher.aclose()
