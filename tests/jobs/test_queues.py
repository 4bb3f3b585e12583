"""The sweep of abandoned jobs, against a real Redis: a job is swept only when the sweep just
before also found it unmarked in the active list."""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis
from saq import Job
from saq.job import Status
from saq.utils import now

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


async def test_a_job_starting_its_next_attempt_at_the_next_sweep_is_not_swept(
    redis: aioredis.Redis,
) -> None:
    """Seen unmarked as its first attempt starts, then, at the very next sweep, unmarked as its
    second starts (the first failed and was retried within the interval): not swept."""
    queue = SweepSafeQueue(redis, "test-sweep")
    job = Job("run_query", key="j3", retries=3)
    await queue.enqueue(job)
    await redis.lpush(queue._active, job.id)
    assert await sweep_now(queue) == []
    job.attempts = 1  # the first attempt ran and failed; the retry is being taken
    await redis.set(job.id, queue.serialize(job))
    assert await sweep_now(queue) == []
    assert await sweep_now(queue) == [job.id]  # and unmarked again: now it is abandoned


async def test_a_job_unmarked_for_two_sweeps_in_a_row_is_swept(redis: aioredis.Redis) -> None:
    """In the active list and never marked, at two sweeps one after the other: abandoned."""
    queue = SweepSafeQueue(redis, "test-sweep")
    job = Job("run_query", key="j2", retries=3)
    await queue.enqueue(job)
    await redis.lpush(queue._active, job.id)
    assert await sweep_now(queue) == []
    assert await sweep_now(queue) == [job.id]


async def abandoned(queue: SweepSafeQueue, key: str) -> Job:
    """A job its worker took, marked active and then stopped heart-beating (killed)."""
    await queue.enqueue(Job("run_query", key=key, retries=3, heartbeat=1))
    job = await queue.dequeue()
    assert job is not None
    job.attempts = 1
    await job.update(status=Status.ACTIVE)
    job.touched = now() - 5000
    await queue.redis.set(job.id, queue.serialize(job))
    return job


async def sweeper_waiting(queue: SweepSafeQueue, job: Job) -> None:
    """Until the sweep has marked `job` aborting and listens for its worker's word."""
    async with asyncio.timeout(10):
        while True:
            stored = await queue.job(job.key)
            listening = await queue.redis.pubsub_numpat()  # SAQ listens on one pattern
            if stored is not None and stored.status == Status.ABORTING and listening:
                return
            await asyncio.sleep(0.01)


async def test_a_sweeper_killed_in_its_wait_leaves_the_job_for_the_next(
    redis: aioredis.Redis,
) -> None:
    """The first sweeper dies while waiting for the dead worker to let go: the job is still
    in the active list, and the next sweep (another worker's) puts it back on its queue."""
    first = SweepSafeQueue(redis, "test-sweep")
    job = await abandoned(first, "j3")
    sweeping = asyncio.create_task(first.sweep(lock=60, abort=5.0))
    await sweeper_waiting(first, job)
    sweeping.cancel()  # killed inside its wait: it writes nothing more to Redis
    with contextlib.suppress(asyncio.CancelledError):
        await sweeping
    assert job.id.encode() in await redis.lrange(first._active, 0, -1)
    second = SweepSafeQueue(redis, "test-sweep")
    assert await sweep_now(second) == [job.id]
    again = await second.dequeue()
    assert again is not None
    assert (again.key, again.status) == ("j3", Status.QUEUED)


async def test_a_live_worker_letting_go_of_a_swept_job_leaves_it_recoverable(
    redis: aioredis.Redis,
) -> None:
    """The swept job's worker was alive after all and aborts it: it only says so, and the job
    stays in the active list (a sweeper dying now loses nothing) until the sweep re-queues it."""
    queue = SweepSafeQueue(redis, "test-sweep")
    job = await abandoned(queue, "j4")
    sweeping = asyncio.create_task(queue.sweep(lock=60, abort=30.0))
    await sweeper_waiting(queue, job)
    await queue.finish(job, Status.ABORTED, error=queue.swept_error_message)  # the live worker
    assert job.id.encode() in await redis.lrange(queue._active, 0, -1)
    async with asyncio.timeout(10):  # woken by the worker's word, long before its 30 s
        assert await sweeping == [job.id]
    assert await redis.lrange(queue._queued, 0, -1) == [job.id.encode()]
    assert await redis.lrange(queue._active, 0, -1) == []
