"""Consumer groups on the event stream, against a real Redis."""

from __future__ import annotations

import redis.asyncio as aioredis

from prsm.events.redis_sink import RedisEventSink
from prsm.events.stream import EventStreamConsumer
from tests.events.test_redis_sink import completed


async def publish(redis: aioredis.Redis, *cids: str) -> None:
    publisher = RedisEventSink(redis, service="test")
    await publisher.start()
    for cid in cids:
        publisher.emit(completed(cid=cid))
    await publisher.aclose()


async def test_consumer_gets_what_was_published_while_it_was_stopped(
    redis: aioredis.Redis,
) -> None:
    """A group created earlier receives events emitted while no consumer was running."""
    first = EventStreamConsumer(redis, group="billing", consumer="b1", start_id="$")
    await first.ensure_group()
    await publish(redis, "while-down-1", "while-down-2")
    restarted = EventStreamConsumer(redis, group="billing", consumer="b1")
    items = await restarted.read(block_ms=100)
    assert [i.event.correlation_id for i in items] == ["while-down-1", "while-down-2"]
    assert await restarted.ack(*(i.id for i in items)) == 2
    assert await restarted.read(block_ms=50) == []


async def test_unacknowledged_events_are_delivered_again_after_a_crash(
    redis: aioredis.Redis,
) -> None:
    """Read without ack, 'crash', restart with the same name: the events come again."""
    consumer = EventStreamConsumer(redis, group="g", consumer="c1")
    await consumer.ensure_group()
    await publish(redis, "a", "b")
    read = await consumer.read(block_ms=100)
    assert len(read) == 2
    assert await consumer.pending() == 2
    again = await EventStreamConsumer(redis, group="g", consumer="c1").read(block_ms=100)
    assert [i.id for i in again] == [i.id for i in read]


async def test_stale_events_of_a_dead_consumer_are_claimed_by_another(
    redis: aioredis.Redis,
) -> None:
    """claim_stale hands another consumer what a dead one left unacknowledged."""
    dead = EventStreamConsumer(redis, group="g", consumer="dead")
    await dead.ensure_group()
    await publish(redis, "orphan")
    await dead.read(block_ms=100)
    survivor = EventStreamConsumer(redis, group="g", consumer="alive")
    claimed = await survivor.claim_stale(min_idle_ms=0)
    assert [i.event.correlation_id for i in claimed] == ["orphan"]
    await survivor.ack(claimed[0].id)
    assert await survivor.pending() == 0


async def test_two_groups_each_get_every_event(redis: aioredis.Redis) -> None:
    """Groups are independent: billing and audit both see each event once."""
    groups = [EventStreamConsumer(redis, group=g, consumer="x") for g in ("billing", "audit")]
    for group in groups:
        await group.ensure_group()
    await publish(redis, "e1")
    for group in groups:
        assert [i.event.correlation_id for i in await group.read(block_ms=100)] == ["e1"]
