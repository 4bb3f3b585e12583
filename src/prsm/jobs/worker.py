"""`prsm worker`: runs the three job queues against the PRSM API.

Like the specification's queue processor, the worker answers jobs through the API with the
SDK, so queries from jobs get the API's admission, events and metrics like any other — and
priority jobs ask for the engine's `high` priority, batches for `low`.

A worker killed mid-job loses nothing: each running job heartbeats every third of
`jobs.heartbeat_seconds`; a job silent for longer is swept by any live worker (every
`jobs.sweep_seconds`) and run again, up to `jobs.attempts` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeGuard

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import RedisError
from saq import Job, Queue, Worker
from saq.types import Context, PartialTimersDict

from prsm import keys, tracing
from prsm.client import AsyncPRSMClient, QueryResult, RetryPolicy
from prsm.client.tls import ClientTLS
from prsm.config import Settings
from prsm.contracts import JOB_TOKEN_HEADER, ReceivedAnswer
from prsm.errors import PRSMError, RateLimitedError
from prsm.jobs.callbacks import CallbackSender, parse_networks
from prsm.jobs.probes import WorkerProbes
from prsm.jobs.queues import CONCURRENCY, TIMEOUT_BACKSTOP, WAIT_SECONDS, open_queues
from prsm.jobs.schema import BatchJobData, BatchResult, Callback, QueryJobData, QueuePriority
from prsm.jobs.submit import job_token
from prsm.keys import JOB_TYPES, JobType
from prsm.logs import correlation_id as current_correlation_id
from prsm.metrics import show_zero
from prsm.redis_client import connect_redis
from prsm.resilience.outcomes import Outcome, classify, retryable

log = logging.getLogger("prsm.worker")

BATCH_RESULTS_TTL = 3600

JOBS = Counter("prsm_jobs_total", "Jobs finished", ("type", "status"))
JOB_DURATION = Histogram(
    "prsm_job_duration_seconds",
    "Time to run one job attempt",
    ("type",),
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
QUEUE_DEPTH = Gauge("prsm_job_queue_depth", "Jobs waiting or scheduled", ("type",))


DEQUEUE_TIMEOUT_SECONDS = 1.0
_BATCH_DONE = "batchDone"
"""Job meta: the results of a batch's queries answered before it waited for its budget."""


class JobTimeoutError(PRSMError):
    """A job ran longer than its timeout."""

    code = "job_timeout"


class WaitingForBudget(Exception):
    """Ends an attempt whose job waits for its submitter's budget."""


class JobArgumentsRedacted(logging.Filter):
    """SAQ logs whole jobs (`Error processing job Job<... kwargs={prompt, callback_url}>`, and
    at debug level their `info(full=True)` text); prompts, callback URLs and answers are not
    logged here, so jobs are shown by function and key only."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace job arguments in SAQ's log records by the job's function and key."""
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(a) for a in record.args)
        return True


_JOB_TEXT = re.compile(r"Job<(?=.*\bfunction: (?P<function>[^,>]+))(?=.*\bkey: (?P<key>[^,>]+))")


def _redacted(arg: object) -> object:
    if isinstance(arg, Job):
        return f"Job<function={arg.function} key={arg.key} attempts={arg.attempts}>"
    if isinstance(arg, str) and arg.startswith("Job<"):
        found = _JOB_TEXT.match(arg)
        if found is None:
            return "Job<…>"
        return f"Job<function={found['function']} key={found['key']}>"
    return arg


class RedisOutageLog(logging.Filter):
    """SAQ logs a traceback for every upkeep step that fails while Redis is away — nine for a
    five-second freeze. Here the first becomes one warning for the outage and the rest are
    dropped, until `answered()` (Redis answered again) ends the outage."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the first record of a Redis outage, drop the rest until it ends."""
        failure = record.exc_info[1] if record.exc_info else None
        if not isinstance(failure, RedisError | OSError | TimeoutError):
            return True
        if self.down:
            return False
        self.down = True
        record.msg = "Redis is unreachable (%s: %s); the worker keeps trying"
        record.args = (type(failure).__name__, failure)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True

    def answered(self) -> None:
        """Redis answered: the outage, if there was one, is over (and said to be)."""
        if self.down:
            self.down = False
            log.info("Redis answers again")


REDIS_OUTAGES = RedisOutageLog()
logging.getLogger("saq").addFilter(JobArgumentsRedacted())
logging.getLogger("saq").addFilter(
    lambda record: not (record.exc_info and isinstance(record.exc_info[1], WaitingForBudget))
)  # a job put off for its budget is not an error (the worker logs the wait)
logging.getLogger("saq").addFilter(REDIS_OUTAGES)


class _Worker(Worker[Context]):
    # SAQ installs SIGINT/SIGTERM handlers per worker, and with several workers in one process
    # only the last one's survives. run_worker handles the signals once, for all of them.
    SIGNALS: list[signal.Signals] = []  # noqa: RUF012 - SAQ's own attribute

    # SAQ's stop waits, within the shutdown grace, for its upkeep loops too, which sleep up to
    # their timer (worker_info: 10 s) before they notice: an idle worker took 8 s to stop.
    # They have nothing to finish, so they are cancelled first; running jobs keep the grace.
    _upkeep_tasks: list[asyncio.Task[None]]

    async def upkeep(self) -> list[asyncio.Task[None]]:
        self._upkeep_tasks = await super().upkeep()
        return self._upkeep_tasks

    async def stop(self) -> None:
        for task in getattr(self, "_upkeep_tasks", ()):
            task.cancel()
        await super().stop()


@dataclass
class WorkerContext:
    """What a worker's job functions use: settings, Redis, the API client, the callback sender."""

    settings: Settings
    redis: aioredis.Redis
    client: AsyncPRSMClient
    callbacks: CallbackSender


class JobRunner:
    """The job functions SAQ calls, bound to one worker's clients."""

    def __init__(self, context: WorkerContext) -> None:
        self.ctx = context
        for job_type in JOB_TYPES:
            statuses = ("complete", "failed", "retried", "waiting")
            show_zero(JOBS, *((job_type, status) for status in statuses))
            show_zero(JOB_DURATION, (job_type,))

    async def run_query(
        self,
        saq_ctx: Context,
        *,
        job_type: JobType,
        data: dict[str, Any],
        callback_url: str | None,
        correlation_id: str,
        owner: str = "",
    ) -> dict[str, Any]:
        """One query job: ask the API, store the response, call back; failures as `_attempt`
        decides."""
        job = saq_ctx["job"]
        query = QueryJobData.model_validate(data)
        request_id = query.request_id or job.key
        context = {**(query.context or {}), "requestId": request_id, "queueType": job_type}
        with _traced(job, job_type):
            async with self._attempt(job, job_type, correlation_id, callback_url, request_id):
                result = await self.ctx.client.query(
                    query.prompt,
                    user_id=query.user_id,
                    context=context,
                    max_tokens=query.max_tokens,
                    model=query.model,
                    priority=QueuePriority[job_type],
                    correlation_id=correlation_id,
                    headers=_acting_for(job),
                )
            response = _response(result)
            await self._callback(
                callback_url, job, correlation_id,
                Callback(request_id=request_id, status="completed", response=response),
            )  # fmt: skip
        return response

    async def run_batch(
        self,
        saq_ctx: Context,
        *,
        job_type: JobType,
        data: dict[str, Any],
        callback_url: str | None,
        correlation_id: str,
        owner: str = "",
    ) -> dict[str, Any]:
        """A batch's queries one after another; the results stored under its owner's key."""
        job = saq_ctx["job"]
        batch = BatchJobData.model_validate(data)
        with _traced(job, job_type):
            async with self._attempt(job, job_type, correlation_id, callback_url, batch.batch_id):
                results = await self._batch_items(batch, job, correlation_id)
                payload = json.dumps([r.to_wire() for r in results])
                await self.ctx.redis.set(
                    keys.batch_results(owner, batch.batch_id), payload, ex=BATCH_RESULTS_TTL
                )
            summary = {
                "batchId": batch.batch_id,
                "total": len(results),
                "succeeded": sum(r.status == "success" for r in results),
                "failed": sum(r.status == "error" for r in results),
            }
            await self._callback(
                callback_url, job, correlation_id,
                Callback(request_id=batch.batch_id, status="completed", response=summary),
            )  # fmt: skip
        return summary

    async def _batch_items(
        self, batch: BatchJobData, job: Job, correlation_id: str
    ) -> list[BatchResult]:
        """The batch's queries one after another, from where an attempt that waited for the
        submitter's budget stopped (its results so far are kept with the job)."""
        results = [BatchResult.model_validate(r) for r in job.meta.get(_BATCH_DONE, [])]
        for item in batch.queries[len(results) :]:
            try:
                results.append(await self._batch_item(item, batch, job, correlation_id))
            except RateLimitedError:  # the submitter's budget is spent: the batch waits
                job.meta[_BATCH_DONE] = [r.to_wire() for r in results]
                raise
        return results

    async def _batch_item(
        self, item: Any, batch: BatchJobData, job: Job, correlation_id: str
    ) -> BatchResult:
        """One query of a batch; its failure is recorded, not raised (the batch goes on)."""
        try:
            result = await self.ctx.client.query(
                item.prompt,
                user_id=item.user_id,
                context={**(item.context or {}), "batchId": batch.batch_id, "queueType": "batch"},
                max_tokens=item.max_tokens,
                model=item.model,
                priority=QueuePriority["batch-query"],
                correlation_id=correlation_id,
                headers=_acting_for(job),
            )
        except PRSMError as exc:
            if budget_spent(exc):
                raise
            return BatchResult(id=item.id, status="error", error=str(exc))
        return BatchResult.model_validate(
            {"id": item.id, "status": "success", "response": _response(result)}
        )

    @contextlib.asynccontextmanager
    async def _attempt(
        self,
        job: Job,
        job_type: JobType,
        correlation_id: str,
        callback_url: str | None,
        request_id: str,
    ) -> AsyncIterator[None]:
        """Heartbeat, log context, metrics and failure handling around one job attempt."""
        token = current_correlation_id.set(correlation_id)
        started = time.perf_counter()
        beat = asyncio.create_task(_heartbeat(job, self.ctx.settings.jobs.heartbeat_seconds / 3))
        limit = max(1, job.timeout - TIMEOUT_BACKSTOP)
        try:
            try:
                async with asyncio.timeout(limit):
                    yield
            except TimeoutError:
                raise JobTimeoutError(f"the job ran longer than {limit} s") from None
        except Exception as exc:
            if budget_spent(exc):
                raise _waiting_for_budget(job, job_type, exc) from exc
            await self._failed(job, job_type, exc, correlation_id, callback_url, request_id)
            raise
        else:
            JOBS.labels(job_type, "complete").inc()
        finally:
            beat.cancel()
            JOB_DURATION.labels(job_type).observe(time.perf_counter() - started)
            current_correlation_id.reset(token)

    async def _failed(
        self,
        job: Job,
        job_type: JobType,
        exc: Exception,
        correlation_id: str,
        callback_url: str | None,
        request_id: str,
    ) -> None:
        """Record a failed attempt: tried again, or final (and called back)."""
        # Jobs are at least once, so the request counts as idempotent: the classifier's
        # decision for an idempotent request stands (a lost Redis connection is uncertain,
        # and tried again; a refused certificate or a bug is final). A job that ran out of
        # time may have done its work: uncertain, and so tried again.
        outcome = Outcome.UNCERTAIN if isinstance(exc, JobTimeoutError) else classify(exc)
        permanent = not retryable(outcome, idempotent=True)
        if permanent:
            job.retries = job.attempts  # SAQ retries while attempts < retries: stop here
        code = getattr(exc, "code", None) or type(exc).__name__
        job.meta["error"] = {"code": code, "message": str(exc)}
        final = permanent or job.attempts >= job.retries
        JOBS.labels(job_type, "failed" if final else "retried").inc()
        log.warning(
            "job attempt failed",
            extra={"jobId": job.key, "attempt": job.attempts, "final": final, "error": str(exc)},
        )
        if final:
            await self._callback(
                callback_url, job, correlation_id,
                Callback(request_id=request_id, status="failed", error=str(exc)),
            )  # fmt: skip

    async def _callback(
        self, url: str | None, job: Job, correlation_id: str, callback: Callback
    ) -> None:
        if url is not None:
            await self.ctx.callbacks.send(
                url, callback.to_wire(), job_id=job.key, correlation_id=correlation_id
            )


def _traced(job: Job, job_type: JobType) -> contextlib.AbstractContextManager[Any]:
    """The attempt's span, in the trace the job was submitted in."""
    return tracing.job_span(job_type, job.key, job.attempts, job.meta.get("trace"))


def budget_spent(exc: BaseException) -> TypeGuard[RateLimitedError]:
    """Whether `exc` is the API refusing a query for its budget (429 `budget_exceeded`)."""
    return isinstance(exc, RateLimitedError) and exc.code == "budget_exceeded"


def _waiting_for_budget(job: Job, job_type: JobType, refusal: RateLimitedError) -> Exception:
    """Put `job` off until its submitter's budget window ends, without spending an attempt
    (the queue schedules it: `SweepSafeQueue`); the exception that ends this attempt."""
    wait = refusal.retry_after or 1.0
    job.attempts -= 1
    job.meta[WAIT_SECONDS] = wait
    JOBS.labels(job_type, "waiting").inc()
    log.info("job waits for its submitter's budget", extra={"jobId": job.key, "seconds": wait})
    return WaitingForBudget(f"the submitter's budget is spent for {wait:g} s")


def _acting_for(job: Job) -> dict[str, str]:
    """The header that charges the job's queries to its submitter's budget."""
    token = job_token(job)
    return {JOB_TOKEN_HEADER: token} if token else {}


def _response(result: QueryResult) -> dict[str, Any]:
    """A query's answer as jobs report it: the `data` of the API's query response."""
    return ReceivedAnswer(
        answer=result.answer,
        confidence=result.confidence,
        usage=result.usage,
        model=result.model,
    ).to_wire()


async def _heartbeat(job: Job, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):  # a missed beat is retried at the next one
            await job.update()


async def _watch_depths(queues: dict[JobType, Queue], every: float = 5.0) -> None:
    """The queue depth gauges, every `every` seconds; each answer ends a Redis outage."""
    while True:
        for job_type, queue in queues.items():
            with contextlib.suppress(Exception):
                QUEUE_DEPTH.labels(job_type).set(await queue.count("incomplete"))
                REDIS_OUTAGES.answered()
        await asyncio.sleep(every)


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run every queue's SAQ worker in this process until `stop` is set, or SIGINT/SIGTERM.

    On stop no new job is taken; jobs still running after `jobs.shutdown_grace_seconds` are
    cancelled and put back on their queue: a stopped worker loses nothing either.
    """
    if not settings.redis_url:
        raise PRSMError("prsm worker needs PRSM_REDIS_URL")
    if settings.jobs.callback_secret is None:
        raise PRSMError("prsm worker needs PRSM_JOBS__CALLBACK_SECRET to sign callbacks")
    redis = connect_redis(settings.redis_url)
    client, sender = _api_client(settings), _callback_sender(settings)
    async with sender, client:
        runner = JobRunner(WorkerContext(settings, redis, client, sender))
        queues = open_queues(redis)
        workers = [_queue_worker(settings, runner, t, queue) for t, queue in queues.items()]
        stop = stop or _stop_on_signals()
        consumers = [asyncio.create_task(w.start()) for w in workers]
        tasks = [*consumers, asyncio.create_task(_watch_depths(queues))]
        probes = WorkerProbes(
            redis, lambda: not stop.is_set() and not any(c.done() for c in consumers)
        )
        if settings.jobs.metrics_port:
            await probes.start(settings.jobs.metrics_host, settings.jobs.metrics_port)
        log.info("worker started", extra={"queues": {t: CONCURRENCY[t] for t in queues}})
        try:
            await stop.wait()
            log.info("worker stopping")
        finally:
            await asyncio.gather(*(w.stop() for w in workers))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await probes.stop()
            await redis.aclose()


def _api_client(settings: Settings) -> AsyncPRSMClient:
    """The client a worker asks the API with."""
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    return AsyncPRSMClient(
        base_url=settings.base_url,
        api_key=api_key,
        timeout=settings.timeout,
        # A spent budget goes back to the queue at once, not waited out in the job's slot.
        retries=RetryPolicy(retries=settings.retries, raise_at_once=frozenset({"budget_exceeded"})),
        tls=ClientTLS.from_env(),
    )


def _callback_sender(settings: Settings) -> CallbackSender:
    secret = settings.jobs.callback_secret
    assert secret is not None, "checked by run_worker"
    return CallbackSender(
        secret.get_secret_value().encode(),
        parse_networks(settings.jobs.callback_allow),
        timeout=settings.jobs.callback_timeout_seconds,
        attempts=settings.jobs.callback_attempts,
    )


def _queue_worker(
    settings: Settings, runner: JobRunner, job_type: JobType, queue: Queue
) -> _Worker:
    """The SAQ worker for one queue, at that queue's concurrency."""
    # SAQ's defaults but for the sweep (60 s), which decides how soon a lost job re-runs.
    timers: PartialTimersDict = {
        "schedule": 1,
        "worker_info": 10,
        "sweep": settings.jobs.sweep_seconds,
        "abort": 1,
    }
    return _Worker(
        queue,
        [("run_query", runner.run_query), ("run_batch", runner.run_batch)],
        concurrency=CONCURRENCY[job_type],
        timers=timers,
        shutdown_grace_period_s=settings.jobs.shutdown_grace_seconds,
        # Idle loops wake this often, so a stopping worker with nothing running exits at once
        # instead of waiting out the grace in a blocked dequeue.
        dequeue_timeout=DEQUEUE_TIMEOUT_SECONDS,
    )


def _stop_on_signals() -> asyncio.Event:
    """An event SIGINT and SIGTERM set."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
