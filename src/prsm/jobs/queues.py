"""The three job queues: separate SAQ queues, so priority work never waits behind batches."""

from __future__ import annotations

import redis.asyncio as aioredis
from saq import Queue
from saq.queue.redis import RedisQueue

from prsm.keys import JOB_TYPES, JobType, job_queue

CONCURRENCY: dict[JobType, int] = {
    "priority-query": 5,
    "batch-query": 10,
    "scheduled-query": 2,
}
"""Jobs run at once per worker process, per queue (the specification's numbers)."""

FUNCTION: dict[JobType, str] = {
    "priority-query": "run_query",
    "batch-query": "run_batch",
    "scheduled-query": "run_query",
}


def open_queues(redis: aioredis.Redis) -> dict[JobType, Queue]:
    """One SAQ queue per job type, sharing one Redis connection pool."""
    return {job_type: RedisQueue(redis, name=job_queue(job_type)) for job_type in JOB_TYPES}
