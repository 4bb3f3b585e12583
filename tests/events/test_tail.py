"""`prsm events tail` on a Redis that fails over: it subscribes again to the new master."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from prsm import keys
from prsm.embedded_redis import SentinelDeployment
from prsm.events.tail import tail
from prsm.redis_client import connect_redis


@pytest.mark.parametrize("switch", ["kill", "failover"])
async def test_the_tail_follows_a_failed_over_master(
    deployment: SentinelDeployment, switch: str
) -> None:
    """The master is SIGKILLed, or demoted by `SENTINEL FAILOVER`, under a running tail: it
    subscribes on the new master within 25 s (the sentinels demote a live master some 11 s
    after naming the new one), no restart, and hears what is published there (what was
    published during the switch may be missed: pub/sub keeps nothing)."""
    lines: list[str] = []
    tailing = asyncio.create_task(tail(deployment.url, lines.append))
    publisher = connect_redis(deployment.url)
    while not lines:  # subscribed once the first publication is heard
        await publisher.publish(keys.QUERY_COMPLETED, json.dumps({"n": 1}))
        await asyncio.sleep(0.1)
    old = deployment.master_port()
    deployment.kill(old) if switch == "kill" else deployment.failover()
    switched = time.monotonic()
    while (new := deployment.master_port()) == old or not await _subscribed(new):
        assert time.monotonic() - switched < 25, "no subscriber on the new master 25 s on"
        assert not tailing.done(), tailing
        await asyncio.sleep(0.1)
    heard = len(lines)
    while len(lines) == heard:  # published on the new master itself
        with contextlib.suppress(RedisError, OSError):
            async with aioredis.Redis(port=new) as master:
                await master.publish(keys.QUERY_COMPLETED, json.dumps({"n": 2}))
        assert time.monotonic() - switched < 30, "nothing heard from the new master"
        await asyncio.sleep(0.1)
    assert json.loads(lines[-1]) == {"channel": keys.QUERY_COMPLETED, "event": {"n": 2}}
    tailing.cancel()
    await asyncio.gather(tailing, return_exceptions=True)
    await publisher.aclose()


async def _subscribed(port: int) -> bool:
    """Whether a client is subscribed to the events on the server at `port`."""
    async with aioredis.Redis(port=port) as server:
        counts = await server.pubsub_numsub(keys.QUERY_COMPLETED)
    return bool(counts and counts[0][1])
