"""The sweep of abandoned jobs, against a real Redis: a job is swept only when the sweep just
before also found it unmarked in the active list."""

from __future__ import annotations

import redis.asyncio as aioredis
from saq import Job

from prsm.jobs.queues import SweepSafeQueue


async def sweep_now(queue: SweepSafeQueue) -> list[str]:
    await queue.redis.delete(queue._sweep)  # the interval's lock: the next sweep runs at once
    return await queue.sweep(lock=60, abort=0.1)


async def test_a_job_starting_again_after_a_quiet_spell_is_not_swept(
    redis: aioredis.Redis,
) -> None:
    """Seen unmarked as it starts, then nothing active for a sweep (it waits for a retry),
    then unmarked again as it starts again: not abandoned, not swept."""
    queue = SweepSafeQueue(redis, "test-sweep")
    job = Job("run_query", key="j1", retries=3)
    await queue.enqueue(job)
    await redis.lpush(queue._active, job.id)  # dequeued, not yet marked active
    assert await sweep_now(queue) == []
    await redis.lrem(queue._active, 0, job.id)  # waiting for its retry: nothing active
    assert await sweep_now(queue) == []
    await redis.lpush(queue._active, job.id)  # dequeued again, not yet marked
    assert await sweep_now(queue) == []


async def test_a_job_unmarked_for_two_sweeps_in_a_row_is_swept(redis: aioredis.Redis) -> None:
    """In the active list and never marked, at two sweeps one after the other: abandoned."""
    queue = SweepSafeQueue(redis, "test-sweep")
    job = Job("run_query", key="j2", retries=3)
    await queue.enqueue(job)
    await redis.lpush(queue._active, job.id)
    assert await sweep_now(queue) == []
    assert await sweep_now(queue) == [job.id]
