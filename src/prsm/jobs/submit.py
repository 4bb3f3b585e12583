"""The API side of jobs: submit them, read their status and batch results."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from saq import Job, Queue

from prsm import keys
from prsm.config import JobSettings
from prsm.errors import NotFoundError, ValidationError
from prsm.jobs.callbacks import CallbackNotAllowedError, check_target, parse_networks
from prsm.jobs.queues import FUNCTION, TIMEOUT_BACKSTOP, open_queues
from prsm.jobs.schema import BatchResult, JobAccepted, JobErrorInfo, JobRequest, JobStatus
from prsm.keys import JOB_TYPES

_STATUS = {"new": "queued", "queued": "queued", "active": "active", "aborting": "active"}


class JobService:
    """Enqueues jobs on their type's queue and reads them back by id."""

    def __init__(self, redis: aioredis.Redis, settings: JobSettings) -> None:
        self._redis = redis
        self._settings = settings
        self._networks = parse_networks(settings.callback_allow)
        self._queues: dict[keys.JobType, Queue] = open_queues(redis)

    async def submit(self, request: JobRequest, correlation_id: str) -> JobAccepted:
        callback_url = None
        if request.callback_url is not None:
            try:
                callback_url = await check_target(request.callback_url, self._networks)
            except CallbackNotAllowedError as exc:
                raise ValidationError(str(exc), code="callback_not_allowed") from None
        job_id = uuid.uuid4().hex
        settings = self._settings
        job = Job(
            function=FUNCTION[request.type],
            kwargs={
                "job_type": request.type,
                "data": request.parsed_data().to_wire(),
                "callback_url": callback_url,
                "correlation_id": correlation_id,
            },
            key=job_id,
            timeout=settings.timeout_seconds + TIMEOUT_BACKSTOP,
            heartbeat=settings.heartbeat_seconds,
            retries=settings.attempts,
            retry_delay=settings.retry_delay_seconds,
            retry_backoff=True,
            ttl=settings.result_ttl_seconds,
            scheduled=_scheduled(request),
            meta={"correlationId": correlation_id},
        )
        await self._queues[request.type].enqueue(job)
        return JobAccepted(
            job_id=job_id, status_url=f"/api/v1/jobs/{job_id}", correlation_id=correlation_id
        )

    async def status(self, job_id: str) -> JobStatus:
        for job_type in JOB_TYPES:
            job = await self._queues[job_type].job(job_id)
            if job is not None:
                return _status(job_id, job_type, job)
        raise NotFoundError(f"no job {job_id!r} (unknown, or expired)", code="job_not_found")

    async def batch_results(self, batch_id: str) -> list[BatchResult]:
        raw = await self._redis.get(keys.batch_results(batch_id))
        if raw is None:
            raise NotFoundError(
                f"no results for batch {batch_id!r} (not finished, unknown, or expired)",
                code="batch_not_found",
            )
        return [BatchResult.model_validate(item) for item in json.loads(raw)]


def _scheduled(request: JobRequest) -> int:
    if request.run_at is not None:
        return int(request.run_at.timestamp())
    if request.delay_seconds:
        return int(time.time() + request.delay_seconds + 0.999)  # never earlier than asked
    return 0


def _when(millis: int) -> datetime | None:
    return datetime.fromtimestamp(millis / 1000, UTC) if millis else None


def _status(job_id: str, job_type: keys.JobType, job: Job) -> JobStatus:
    # SAQ keeps a traceback in job.error; clients only ever see our summary in meta.
    error: dict[str, Any] | None = job.meta.get("error")
    return JobStatus(
        job_id=job_id,
        type=job_type,
        status=_STATUS.get(job.status.value, job.status.value),
        attempts=job.attempts,
        correlation_id=job.meta.get("correlationId"),
        enqueued_at=_when(job.queued),
        started_at=_when(job.started),
        completed_at=_when(job.completed),
        scheduled_at=datetime.fromtimestamp(job.scheduled, UTC) if job.scheduled else None,
        result=job.result,
        error=JobErrorInfo.model_validate(error) if error else None,
    )
