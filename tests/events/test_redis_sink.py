"""The event publisher against a real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from prsm import keys
from prsm.contracts import Usage
from prsm.embedded_redis import EmbeddedRedis
from prsm.events.redis_sink import DROPPED, RedisEventSink
from prsm.events.schema import EventError, QueryEvent
from prsm.redis_client import connect_redis
from tests.support import free_port


def completed(
    user: str = "u1", tokens: int = 12, cid: str = "c1", caller: str = "k1"
) -> QueryEvent:
    return QueryEvent(
        type="completed",
        correlation_id=cid,
        user_id=user,
        caller_id=caller,
        usage=Usage(tokens=tokens, prompt_tokens=tokens - 2, completion_tokens=2),
        model="m",
        latency_ms=5.0,
        confidence=0.5,
    )


def failed(cid: str = "c2") -> QueryEvent:
    return QueryEvent(
        type="failed",
        correlation_id=cid,
        user_id="u1",
        model="m",
        latency_ms=5.0,
        error=EventError(code="engine_timeout", message="slow", status=504),
        request={"prompt": "hi", "userId": "u1"},
    )


@pytest.fixture
async def sink(redis: aioredis.Redis) -> AsyncIterator[RedisEventSink]:
    publisher = RedisEventSink(redis, service="test")
    await publisher.start()
    yield publisher
    await publisher.aclose()


async def next_message(pubsub: aioredis.client.PubSub) -> dict[str, object]:
    async with asyncio.timeout(5):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                return {"channel": message["channel"].decode(), **json.loads(message["data"])}


async def test_completed_event_reaches_subscribers_stream_and_user_hash(
    redis: aioredis.Redis, sink: RedisEventSink
) -> None:
    """One completed event: pub/sub message, stream entry, user metrics with 24 h expiry."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.QUERY_COMPLETED, keys.QUERY_FAILED)
    sink.emit(completed(tokens=12))
    sink.emit(completed(tokens=30))
    await sink.flush()
    message = await next_message(pubsub)
    assert message["channel"] == keys.QUERY_COMPLETED
    assert message["type"] == "completed"
    assert message["correlationId"] == "c1"
    assert message["usage"] == {"tokens": 12, "promptTokens": 10, "completionTokens": 2}
    assert str(message["timestamp"]).endswith("Z")
    assert "latencyMs" in message
    assert await redis.hgetall(keys.user_metrics("k1", "u1")) == {
        b"total_queries": b"2",
        b"total_tokens": b"42",
    }
    assert 86_000 < await redis.ttl(keys.user_metrics("k1", "u1")) <= 86_400
    assert await redis.xlen(keys.EVENT_STREAM) == 2
    await pubsub.aclose()


async def test_a_user_id_counts_only_under_its_callers_tag(
    redis: aioredis.Redis, sink: RedisEventSink
) -> None:
    """Caller B naming caller A's user raises B's counts of that name, never A's, and the
    event says who the caller was."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.QUERY_COMPLETED)
    sink.emit(completed(user="jwt:alice", caller="jwt:alice", tokens=5))
    sink.emit(completed(user="jwt:alice", caller="b0b0b0b0", tokens=7))
    await sink.flush()
    assert (await next_message(pubsub))["callerId"] == "jwt:alice"
    alice = await redis.hgetall(keys.user_metrics("jwt:alice", "jwt:alice"))
    assert alice == {b"total_queries": b"1", b"total_tokens": b"5"}
    assert await redis.exists("user:jwt:alice:metrics") == 0
    await pubsub.aclose()


async def test_failed_event_also_asks_for_fallback(
    redis: aioredis.Redis, sink: RedisEventSink
) -> None:
    """A failed event goes to prsm:query:failed and fallback:ai:request, not to user metrics."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.QUERY_FAILED, keys.FALLBACK_REQUEST)
    sink.emit(failed(cid="c9"))
    await sink.flush()
    first, second = await next_message(pubsub), await next_message(pubsub)
    assert first["channel"] == keys.QUERY_FAILED
    assert first["error"]["code"] == "engine_timeout"
    assert second == {
        "channel": keys.FALLBACK_REQUEST,
        "originalRequest": {"prompt": "hi", "userId": "u1"},
        "failureReason": {"code": "engine_timeout", "message": "slow", "status": 504},
        "correlationId": "c9",
    }
    assert await redis.exists(keys.user_metrics("k1", "u1")) == 0
    await pubsub.aclose()


async def test_stream_is_capped(redis: aioredis.Redis) -> None:
    """The stream keeps about stream_maxlen entries, not all of them forever."""
    publisher = RedisEventSink(redis, service="test", stream_maxlen=100)
    await publisher.start()
    for i in range(1000):
        publisher.emit(completed(cid=f"c{i}"))
    await publisher.aclose()
    assert 100 <= await redis.xlen(keys.EVENT_STREAM) < 1000


async def test_emit_never_blocks_and_counts_drops_when_the_buffer_is_full() -> None:
    """With Redis unreachable and a buffer of 3, emitting 10 returns at once and drops 7."""
    unreachable = connect_redis(f"redis://127.0.0.1:{free_port()}/0")
    publisher = RedisEventSink(unreachable, service="drops", buffer_size=3, drain_seconds=0.1)
    before = DROPPED.labels("drops", "buffer_full")._value.get()
    for i in range(10):
        publisher.emit(completed(cid=f"c{i}"))  # not started: nothing leaves the buffer
    assert DROPPED.labels("drops", "buffer_full")._value.get() - before == 7
    await unreachable.aclose()


async def test_publishing_resumes_when_redis_comes_back(tmp_path: Path) -> None:
    """Events emitted while Redis is down are written once it is back; none is lost."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    client = connect_redis(server.url)
    publisher = RedisEventSink(client, service="outage", retry_max_wait=0.2)
    await publisher.start()
    publisher.emit(completed(cid="before"))
    await publisher.flush()
    server.stop()
    for i in range(20):
        publisher.emit(completed(cid=f"during-{i}"))
    await asyncio.sleep(0.5)  # the publisher is retrying against a dead server
    server.start()  # same port, same data directory
    async with asyncio.timeout(20):
        await publisher.flush()
    entries = await client.xrange(keys.EVENT_STREAM)
    ids = [json.loads(fields[b"data"])["correlationId"] for _, fields in entries]
    assert ids[0] == "before"
    assert sorted(ids[1:]) == sorted(f"during-{i}" for i in range(20))
    await publisher.aclose()
    await client.aclose()
    server.stop()
