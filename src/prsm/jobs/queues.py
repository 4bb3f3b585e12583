"""The three job queues: separate SAQ queues, so priority work never waits behind batches."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import redis.asyncio as aioredis
from saq import Job, Queue
from saq.job import Status
from saq.queue.redis import RedisQueue

from prsm.keys import JOB_TYPES, JobType, job_queue
from prsm.redis_client import run_confirmed

CONCURRENCY: dict[JobType, int] = {
    "priority-query": 5,
    "batch-query": 10,
    "scheduled-query": 2,
}
"""Jobs run at once per worker process, per queue (the specification's numbers)."""

TIMEOUT_BACKSTOP = 5
"""SAQ's own timeout on a job is this much longer than the one the job enforces on itself, so
that a timed-out job still records its error and sends its failure callback."""

FUNCTION: dict[JobType, str] = {
    "priority-query": "run_query",
    "batch-query": "run_batch",
    "scheduled-query": "run_query",
}


WAIT_SECONDS = "waitSeconds"
"""Job meta, set by the worker: the job's attempt is put off this long (its submitter's budget
is spent until then), not counted, instead of retried after the usual delay."""

log = logging.getLogger("saq")


class SweepSafeQueue(RedisQueue):
    """SAQ's Redis queue, with its sweep fixed for jobs that are just starting.

    A worker takes a job by moving its id to the active list, and marks the job `active` one
    round trip later. SAQ's sweep takes any job in the active list that is not marked active
    for abandoned and aborts it — including one caught in that window, which then runs twice
    (or, if it cannot be retried, ends `aborted`). Here an unmarked job is swept only when a
    previous sweep (by any worker: the set lives in Redis) already found it unmarked. Jobs
    marked active are swept, as by SAQ, once their heartbeat or timeout has lapsed. A job is
    remembered unmarked with its attempts so far: one starting its next attempt is not the one
    seen before (a job retried every sweep interval was swept as its third attempt started).
    """

    # SAQ's own: under a lock that lasts one sweep interval, every active id with its job.
    # Here also: a sweep that finds nothing active forgets the unmarked jobs of the sweep
    # before, so "seen unmarked before" always means "by the sweep just before". (Without it, a
    # job seen unmarked as it started its first attempt was swept as it started its retry,
    # the sweeps in between having found nothing active: it ended `aborted`.)
    _LIST_ACTIVE = """
        local id_jobs = {}
        if redis.call('EXISTS', KEYS[1]) == 0 then
            redis.call('SETEX', KEYS[1], ARGV[1], 1)
            for i, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
                id_jobs[i] = {v, redis.call('GET', v)}
            end
            if #id_jobs == 0 then
                redis.call('DEL', KEYS[3])
            end
        end
        return id_jobs
    """

    # SAQ's enqueue script (saq.queue.redis.RedisQueue._enqueue, the same keys and
    # arguments), here so that it can run in one pipeline with WAIT: WAIT confirms the writes
    # made on its own connection only.
    _ENQUEUE = """
        if not redis.call('ZSCORE', KEYS[1], KEYS[2]) and redis.call('EXISTS', KEYS[4]) == 0 then
            redis.call('SET', KEYS[2], ARGV[1])
            redis.call('ZADD', KEYS[1], ARGV[2], KEYS[2])
            if ARGV[2] == '0' then redis.call('RPUSH', KEYS[3], KEYS[2]) end
            return 1
        end
        return nil
    """

    def __init__(self, redis: aioredis.Redis, name: str, *, confirm_replicas: int = 0) -> None:
        super().__init__(redis, name=name)
        self._unmarked = self.namespace("unmarked")
        self._list_active = redis.register_script(self._LIST_ACTIVE)
        self._confirmed_enqueue = redis.register_script(self._ENQUEUE)
        self._replicas = confirm_replicas

    async def _enqueue(self, job: Job) -> Job | None:
        """SAQ's enqueue; with `confirm_replicas`, done only once that many replicas hold the
        job (`prsm.redis_client.run_confirmed`: else `NotConfirmed`)."""
        if not self._replicas:
            return await super()._enqueue(job)
        keys = [self._incomplete, job.id, self._queued, job.abort_id]
        async with self._op_sem:
            queued = await run_confirmed(
                self._confirmed_enqueue,
                keys,
                [self.serialize(job), job.scheduled],
                replicas=self._replicas,
            )
        return job if queued else None

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        """Put back what a dead worker held (crash-safe: the job stays in the active list until
        one transaction re-queues it); the keys of the jobs swept."""
        id_jobs = await self._list_active(
            keys=[self._sweep, self._active, self._unmarked], args=[lock]
        )
        if not id_jobs:  # another worker holds this interval's lock, or nothing is active
            return []
        seen_before = set(await self.redis.smembers(self._unmarked))
        unmarked: set[bytes] = set()
        swept: list[bytes] = []
        abandoned: list[Job] = []
        for job_id, job_bytes in id_jobs:
            job = self.deserialize(job_bytes)
            if job is None:
                swept.append(job_id)
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
                continue
            starting = job_id + b":%d" % job.attempts
            if job.status in (Status.ACTIVE, Status.ABORTING):
                if not job.stuck:
                    continue
            elif starting not in seen_before:
                unmarked.add(starting)
                continue
            swept.append(job_id)
            abandoned.append(job)
        # SAQ sweeps one job after another, each waiting up to `abort` seconds for its worker
        # to acknowledge; a dead worker never does, so these waits run side by side.
        await asyncio.gather(*(self._sweep_job(job, abort) for job in abandoned))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._unmarked)
            if unmarked:
                pipe.sadd(self._unmarked, *unmarked)
                pipe.expire(self._unmarked, max(60, 10 * lock))
            await pipe.execute()
        return [job_id.decode() for job_id in swept]

    async def _sweep_job(self, job: Job, abort: float) -> None:
        """Tell the job's worker to let go of it, wait up to `abort` seconds, then put it back
        on its queue (or end it `aborted` once out of attempts) in one transaction.

        SAQ's sweep first takes the job out of every list, then waits: a sweeping worker that
        dies during the wait loses the job for good. Here the job stays in the active list,
        marked `aborting`, until the step that puts it back; if this worker dies first, the
        next sweep (any worker's) finds it there, stuck, and sweeps it again.
        """
        log.info("Sweeping job %s", job.info())
        job.status = Status.ABORTING
        job.error = self.swept_error_message
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(job.id, self.serialize(job))
            pipe.publish(job.id, job.status)
            await pipe.execute()
        try:
            await job.refresh(abort)
        except TimeoutError:
            log.info("Could not abort job %s", job.id)
        if job.retryable:
            await self.retry(job, error=self.swept_error_message)
        else:
            await self.finish(job, Status.ABORTED, error=self.swept_error_message)

    async def _retry(self, job: Job, error: str | None) -> None:
        """SAQ's, except for a job put off until its submitter's budget has room again
        (`WAIT_SECONDS`): it is scheduled for then, whatever its retry delay."""
        wait = job.meta.pop(WAIT_SECONDS, None)
        if wait is None:
            await super()._retry(job, error)
            return
        job.scheduled = math.ceil(time.time() + float(wait))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(self._active, 1, job.id)
            pipe.zadd(self._incomplete, {job.id: job.scheduled})
            pipe.set(job.id, self.serialize(job))
            await pipe.execute()
        await self.notify(job)

    async def _finish(
        self, job: Job, status: Status, *, result: Any = None, error: str | None = None
    ) -> None:
        """SAQ's, except for the worker letting go of a job a sweep will put back: it only says
        so (the sweep waits for that word), leaving the job where the sweep — or, should the
        sweeping worker die, the next one — will find it."""
        if status is Status.ABORTED and error == self.swept_error_message and job.retryable:
            await self.notify(job)
            return
        await super()._finish(job, status, result=result, error=error)


def open_queues(redis: aioredis.Redis, *, confirm_replicas: int = 0) -> dict[JobType, Queue]:
    """One SAQ queue per job type, sharing one Redis connection pool; with `confirm_replicas`,
    an enqueue is done once that many replicas hold the job (the API's submissions)."""
    return {
        job_type: SweepSafeQueue(redis, job_queue(job_type), confirm_replicas=confirm_replicas)
        for job_type in JOB_TYPES
    }
