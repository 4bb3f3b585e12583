"""Reading the durable event stream with consumer groups: at-least-once, nothing missed.

Pub/sub forgets what a subscriber misses while it is down. The stream keeps every event (up
to its cap), so a consumer group picks up where it left off:

>>> consumer = EventStreamConsumer(redis, group="billing", consumer="billing-1")  # doctest: +SKIP
>>> await consumer.ensure_group()                                               # doctest: +SKIP
>>> for item in await consumer.read():                                          # doctest: +SKIP
...     handle(item.event)
...     await consumer.ack(item.id)

`read` first re-delivers what this consumer read before but never acknowledged (it crashed
mid-way), then new events. `claim_stale` takes over what another consumer left unacknowledged
for too long.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from prsm import keys
from prsm.events.schema import QueryEvent


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event read from the stream, with the id to acknowledge it by."""

    id: str
    event: QueryEvent


class EventStreamConsumer:
    """Reads the durable event stream in a consumer group: at least once, acknowledged, with what a
    crashed consumer left claimable."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        group: str,
        consumer: str,
        stream: str = keys.EVENT_STREAM,
        start_id: str = "0",
    ) -> None:
        self._redis = redis
        self.group = group
        self.consumer = consumer
        self.stream = stream
        self._start_id = start_id
        self._backlog_done = False

    async def ensure_group(self) -> None:
        """Create the group (and the stream) if needed; a new group starts at `start_id`
        (`"0"`: every retained event, `"$"`: only new ones)."""
        try:
            await self._redis.xgroup_create(self.stream, self.group, self._start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, count: int = 100, block_ms: int | None = 1000) -> list[StreamEvent]:
        """Unacknowledged events of this consumer first, then new ones (waiting up to
        `block_ms` for them; None waits forever)."""
        if not self._backlog_done:
            backlog = await self._read("0", count, None)
            if backlog:
                return backlog
            self._backlog_done = True
        return await self._read(">", count, block_ms)

    async def _read(self, start: str, count: int, block_ms: int | None) -> list[StreamEvent]:
        reply = await self._redis.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: start},
            count=count,
            block=block_ms if start == ">" else None,
        )
        # RESP2 (the default protocol): [[stream, [(id, fields), ...]], ...]
        streams = cast(list[Any], reply or [])
        return [item for _, entries in streams for item in _parse(entries)]

    async def ack(self, *ids: str) -> int:
        """Mark events handled; they will not be delivered again."""
        return int(await self._redis.xack(self.stream, self.group, *ids)) if ids else 0

    async def claim_stale(self, min_idle_ms: int, count: int = 100) -> list[StreamEvent]:
        """Take over events other consumers read but left unacknowledged for `min_idle_ms`."""
        reply = await self._redis.xautoclaim(
            self.stream, self.group, self.consumer, min_idle_ms, "0-0", count=count
        )
        entries: list[Any] = reply[1]
        return _parse(entries)

    async def pending(self) -> int:
        """How many events of the group were delivered and not yet acknowledged."""
        summary = await self._redis.xpending(self.stream, self.group)
        return int(summary["pending"])


def _parse(entries: list[Any]) -> list[StreamEvent]:
    items = []
    for entry_id, fields in entries:
        if not fields:  # deleted by the cap while pending
            continue
        data = fields.get(b"data", fields.get("data"))
        event = QueryEvent.model_validate(json.loads(data))
        items.append(StreamEvent(_text(entry_id), event))
    return items


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
