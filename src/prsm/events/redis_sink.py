"""Publishes query events to Redis without ever failing or slowing a query.

`emit` only puts the event in a bounded in-memory buffer. A background task takes what is
buffered, up to `BATCH` events at a time, and writes each batch in one pipelined round trip:

- completed: PUBLISH `prsm:query:completed`; XADD to the capped stream; HINCRBY
  `user:{id}:metrics` total_queries and total_tokens, and EXPIRE it (86400 s);
- failed: PUBLISH `prsm:query:failed`; PUBLISH `fallback:ai:request`
  `{originalRequest, failureReason, correlationId}`; XADD to the stream.

When Redis is down the batch is retried with backoff and new events wait in the buffer; only
when the buffer is full are events dropped, counted in `prsm_events_dropped_total` and
logged. Publishing resumes by itself when Redis answers again. A batch whose reply was lost
with the connection may be written twice: delivery is at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import redis.asyncio as aioredis
import tenacity
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from prsm import keys
from prsm.events.schema import QueryEvent
from prsm.metrics import child, show_zero

log = logging.getLogger("prsm.events")

BATCH = 256

PUBLISHED = Counter(
    "prsm_events_published_total", "Query events written to Redis", ("service", "type")
)
DROPPED = Counter(
    "prsm_events_dropped_total", "Query events lost before reaching Redis", ("service", "reason")
)
BUFFERED = Gauge(
    "prsm_events_buffered",
    "Query events waiting to be written to Redis",
    ("service",),
    multiprocess_mode="livesum",
)


class RedisEventSink:
    """The event publisher. `await start()` before emitting; `await aclose()` flushes."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        service: str,
        buffer_size: int = 10_000,
        stream_maxlen: int = 100_000,
        user_metrics_ttl: int = 86_400,
        retry_max_wait: float = 5.0,
        drain_seconds: float = 5.0,
    ) -> None:
        self._redis = redis
        self._service = service
        self._stream_maxlen = stream_maxlen
        self._ttl = user_metrics_ttl
        self._retry_max_wait = retry_max_wait
        self._drain_seconds = drain_seconds
        self._buffer: asyncio.Queue[QueryEvent] = asyncio.Queue(buffer_size)
        self._task: asyncio.Task[None] | None = None
        self._drops = 0
        self._buffered = BUFFERED.labels(service)
        show_zero(DROPPED, (service, "buffer_full"), (service, "shutdown"))

    def emit(self, event: QueryEvent) -> None:
        """Buffer the event for the publisher task; when the buffer is full, drop it and count
        it."""
        try:
            self._buffer.put_nowait(event)
        except asyncio.QueueFull:
            self._drop("buffer_full", 1)
            return
        self._buffered.inc()

    async def start(self) -> None:
        """Start the publisher task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="prsm-event-publisher")

    async def flush(self) -> None:
        """Wait until every event emitted so far has been written."""
        await self._buffer.join()

    async def aclose(self) -> None:
        """Write what is buffered (for at most `drain_seconds`), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._drain_seconds):
                await self._buffer.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if left := self._buffer.qsize():
            self._drop("shutdown", left)

    async def _run(self) -> None:
        while True:
            batch = [await self._buffer.get()]
            while len(batch) < BATCH and not self._buffer.empty():
                batch.append(self._buffer.get_nowait())
            try:
                await self._write_until_written(batch)
            finally:
                for _ in batch:
                    self._buffer.task_done()
                self._buffered.dec(len(batch))

    async def _write_until_written(self, batch: list[QueryEvent]) -> None:
        try:
            await self._write(batch)  # the usual case, without building the retry machinery
        except (RedisError, OSError):
            await self._retry(batch)
        for event in batch:
            child(PUBLISHED, self._service, event.type).inc()

    async def _retry(self, batch: list[QueryEvent]) -> None:
        """Write `batch` again until Redis takes it, backing off (logged now and then)."""
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type((RedisError, OSError)),
            wait=tenacity.wait_exponential_jitter(
                multiplier=0.05, max=self._retry_max_wait, jitter=0.1
            ),
            before_sleep=self._log_outage,
        )
        async for attempt in retrying:
            with attempt:
                await self._write(batch)

    async def _write(self, batch: list[QueryEvent]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for event in batch:
            data = json.dumps(event.to_wire())
            pipe.publish(keys.query_channel(event.type), data)
            pipe.xadd(
                keys.EVENT_STREAM,
                {"type": event.type, "data": data},
                maxlen=self._stream_maxlen,
                approximate=True,
            )
            if event.type == "completed":
                metrics_key = keys.user_metrics(event.caller_id or "", event.user_id)
                pipe.hincrby(metrics_key, "total_queries", 1)
                pipe.hincrby(metrics_key, "total_tokens", event.usage.tokens)
                pipe.expire(metrics_key, self._ttl)
            else:
                fallback = {
                    "originalRequest": event.request,
                    "failureReason": event.error.to_wire() if event.error else None,
                    "correlationId": event.correlation_id,
                }
                pipe.publish(keys.FALLBACK_REQUEST, json.dumps(fallback))
        await pipe.execute()

    def _log_outage(self, state: tenacity.RetryCallState) -> None:
        if state.attempt_number == 1 or state.attempt_number % 20 == 0:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "cannot publish events to Redis; retrying while queries go on",
                extra={"attempt": state.attempt_number, "error": str(error)},
            )

    def _drop(self, reason: str, count: int) -> None:
        DROPPED.labels(self._service, reason).inc(count)
        self._drops += count
        # Log the first drop and then every thousandth, not a line per lost event.
        if self._drops == count or self._drops // 1000 != (self._drops - count) // 1000:
            log.error(
                "query events dropped",
                extra={"reason": reason, "dropped": count, "droppedTotal": self._drops},
            )
