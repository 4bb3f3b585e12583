"""The API side of jobs: submit them, read their status and batch results."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from saq import Job, Queue

from prsm import keys
from prsm.config import JobSettings
from prsm.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
)
from prsm.jobs.callbacks import CallbackNotAllowedError, check_target, parse_networks
from prsm.jobs.queues import FUNCTION, TIMEOUT_BACKSTOP, open_queues
from prsm.jobs.schema import (
    BatchResult,
    JobAccepted,
    JobErrorInfo,
    JobRequest,
    JobStatus,
)
from prsm.keys import JOB_TYPES, Account
from prsm.redis_client import NotConfirmed, confirm_so_far

_STATUS = {"new": "queued", "queued": "queued", "active": "active", "aborting": "active"}
_JOB_TOKEN = re.compile(r"(?P<job_id>[0-9a-f]{1,64})\.(?P<secret>[A-Za-z0-9_-]{16,64})")


class JobService:
    """Enqueues jobs on their type's queue and reads them back by id.

    A submission with an idempotency key (the `Idempotency-Key` header, else the job's
    `requestId`) gets a job id derived from the caller and the key: submitting it again — a
    client retrying after a timeout or a 503 — returns the first job instead of queueing a
    second one, for as long as the job is kept (`jobs.result_ttl_seconds`). The same key with
    another body is 409 `idempotency_key_reused`.

    Redis down or frozen: every call answers 503 `jobs_unavailable` (with `Retry-After`) within
    `jobs.redis_timeout_seconds`, never a 500.
    """

    def __init__(
        self, redis: aioredis.Redis, settings: JobSettings, *, confirm_replicas: int = 0
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._networks = parse_networks(settings.callback_allow)
        self._queues: dict[keys.JobType, Queue] = open_queues(
            redis, confirm_replicas=confirm_replicas
        )
        self._replicas = confirm_replicas

    async def submit(
        self,
        request: JobRequest,
        correlation_id: str,
        *,
        caller: str,
        key_id: str,
        idempotency_key: str | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> JobAccepted:
        """Queue `request` for `caller` (whose budgets name it `key_id`), keeping the `trace`
        context it came in (`prsm.tracing.kept_context`) for every call made for it; the same
        idempotency key (or `requestId`) returns the first job, another body with it is
        409."""
        callback_url = None
        if request.callback_url is not None:
            try:
                callback_url = await check_target(request.callback_url, self._networks)
            except CallbackNotAllowedError as exc:
                # The server's policy refuses the target (the body itself is well formed).
                raise PermissionDeniedError(str(exc), code="callback_not_allowed") from None
        key = idempotency_key or getattr(request.data, "request_id", None)
        fingerprint = _fingerprint(request)
        job_id = _idempotent_id(caller, key) if key else uuid.uuid4().hex
        owner = keys.owner_tag(caller)
        async with self._redis_bounded():
            if key:
                earlier = await self._find(job_id)
                if earlier is not None:
                    # An earlier submission refused as unconfirmed may be here, on the master
                    # alone: acknowledged now only once the replicas hold it too.
                    await confirm_so_far(self._redis, replicas=self._replicas)
                    return _repeat(earlier, fingerprint, correlation_id)
            account = Account(key_id, owner)
            await self._queues[request.type].enqueue(
                self._job(
                    request, job_id, callback_url, correlation_id, fingerprint, account, trace or {}
                )
            )
        return JobAccepted(
            job_id=job_id, status_url=f"/api/v1/jobs/{job_id}", correlation_id=correlation_id
        )

    def _job(
        self,
        request: JobRequest,
        job_id: str,
        callback_url: str | None,
        correlation_id: str,
        fingerprint: str,
        account: Account,
        trace: Mapping[str, str],
    ) -> Job:
        settings = self._settings
        return Job(
            function=FUNCTION[request.type],
            kwargs={
                "job_type": request.type,
                "data": request.data.to_wire(),
                "callback_url": callback_url,
                "correlation_id": correlation_id,
                "owner": account.tag,
            },
            key=job_id,
            timeout=settings.timeout_seconds + TIMEOUT_BACKSTOP,
            heartbeat=settings.heartbeat_seconds,
            retries=settings.attempts,
            retry_delay=settings.retry_delay_seconds,
            retry_backoff=True,
            ttl=settings.result_ttl_seconds,
            scheduled=_scheduled(request),
            meta={
                "correlationId": correlation_id,
                "fingerprint": fingerprint,
                "owner": account.tag,
                "trace": dict(trace),
                # Only a worker, which reads the job from Redis, can show this token: with it,
                # the job's queries are charged to the submitter's budget (`account_of`).
                "account": {"keyId": account.key_id, "token": secrets.token_urlsafe(24)},
            },
        )

    async def account_of(self, job_token: str) -> Account:
        """The submitter's account of the running job `job_token` (`<job id>.<secret>`, as
        `job_token()` spells it) names; 403 `job_token_refused` unless the job is running and
        the secret is its own."""
        found = _JOB_TOKEN.fullmatch(job_token)
        if found is not None:
            async with self._redis_bounded():
                job = await self._find(found["job_id"])
            if job is not None and job[1].status.value == "active":
                meta = job[1].meta
                account = meta.get("account", {})
                if hmac.compare_digest(str(account.get("token", "")), found["secret"]):
                    return Account(str(account["keyId"]), str(meta["owner"]))
        raise PermissionDeniedError(
            "the job token is not that of a running job", code="job_token_refused"
        )

    async def status(self, job_id: str, caller: str) -> JobStatus:
        """The job `caller` submitted as `job_id`; another caller's job is 404, as if unknown."""
        async with self._redis_bounded():
            found = await self._find(job_id)
        if found is None or found[1].meta.get("owner") != keys.owner_tag(caller):
            raise NotFoundError(f"no job {job_id!r} (unknown, or expired)", code="job_not_found")
        job_type, job = found
        return _status(job_id, job_type, job)

    async def batch_results(self, batch_id: str, caller: str) -> list[BatchResult]:
        """The results of `caller`'s batch `batch_id`; other callers' batches are not found."""
        async with self._redis_bounded():
            raw = await self._redis.get(keys.batch_results(keys.owner_tag(caller), batch_id))
        if raw is None:
            raise NotFoundError(
                f"no results for batch {batch_id!r} (not finished, unknown, or expired)",
                code="batch_not_found",
            )
        return [BatchResult.model_validate(item) for item in json.loads(raw)]

    async def _find(self, job_id: str) -> tuple[keys.JobType, Job] | None:
        for job_type in JOB_TYPES:
            job = await self._queues[job_type].job(job_id)
            if job is not None:
                return job_type, job
        return None

    @contextlib.asynccontextmanager
    async def _redis_bounded(self) -> AsyncIterator[None]:
        """Redis errors and a Redis slower than `jobs.redis_timeout_seconds` become 503."""
        limit = self._settings.redis_timeout_seconds
        try:
            async with asyncio.timeout(limit):
                yield
        except (RedisError, TimeoutError) as exc:
            detail = (
                "did not answer in time"
                if isinstance(exc, TimeoutError)
                else "did not confirm the job on enough replicas (it may run)"
                if isinstance(exc, NotConfirmed)
                else "is unreachable or refuses writes"
            )
            raise ServiceUnavailableError(
                f"the job queue's Redis {detail}; retry later (with the same Idempotency-Key, "
                "a retry cannot queue the job twice)",
                code="jobs_unavailable",
                retry_after=max(1, round(limit)),
                shared=True,
            ) from None


def job_token(job: Job) -> str | None:
    """The token with which a worker's queries for `job` are charged to its submitter (None
    for a job queued before jobs had one)."""
    secret = job.meta.get("account", {}).get("token")
    return f"{job.key}.{secret}" if secret else None


def _fingerprint(request: JobRequest) -> str:
    return hashlib.sha256(request.model_dump_json(by_alias=True).encode()).hexdigest()


def _idempotent_id(caller: str, key: str) -> str:
    """The job id for `key` from `caller`: callers cannot see or take each other's jobs."""
    return hashlib.sha256(f"{caller}\x00{key}".encode()).hexdigest()[:32]


def _repeat(earlier: tuple[keys.JobType, Job], fingerprint: str, cid: str) -> JobAccepted:
    _, job = earlier
    if job.meta.get("fingerprint") != fingerprint:
        raise ConflictError(
            "this idempotency key was used for another job; use a new key for a new job",
            code="idempotency_key_reused",
        )
    return JobAccepted(
        job_id=job.key,
        status_url=f"/api/v1/jobs/{job.key}",
        correlation_id=job.meta.get("correlationId") or cid,
    )


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
