"""The PRSM API as an ASGI app: routes, auth, middleware and life cycle.

`create_app(settings)` for code and tests; `create_app_from_env()` is the factory that
`prsm serve` hands uvicorn, so that every worker process builds its own app.
"""

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError as PydanticValidationError
from starlette.responses import JSONResponse, Response

from prsm import metrics, tracing
from prsm._version import __version__
from prsm.config import Settings, load_settings
from prsm.contracts import (
    CheckResult,
    ErrorResponse,
    HealthResponse,
    QueryRequest,
    QueryResponse,
    ReadyResponse,
)
from prsm.edge.body_limit import BodyLimitMiddleware
from prsm.edge.collector import freeze_startup_heap, tune_for_requests
from prsm.edge.correlation import CorrelationMiddleware
from prsm.edge.disconnect import CLIENT_GONE, ClientGone, until_disconnected
from prsm.edge.drain import Drain
from prsm.engines import Engine, Generation
from prsm.errors import (
    AuthenticationError,
    PermissionDeniedError,
    ServiceUnavailableError,
    ValidationError,
)
from prsm.events import EventSink
from prsm.events.redis_sink import RedisEventSink
from prsm.jobs.schema import JOB_REQUEST, BatchResult, JobAccepted, JobStatus
from prsm.jobs.submit import JobService
from prsm.logs import configure_logging
from prsm.redis_client import connect_redis
from prsm.server.auth import READ, WRITE, Authenticator, Principal
from prsm.server.errors import install_error_handlers, validation_error
from prsm.server.openai_api import SCHEMA_DEFINITIONS as OPENAI_SCHEMA_DEFINITIONS
from prsm.server.openai_api import QueryPath, openai_routes
from prsm.server.readiness import ReadinessCheck, redis_check
from prsm.server.service import Ask, QueryService, query_response
from prsm.server.streaming import (
    AnswerStream,
    EventStream,
    StreamFormat,
    event_schema,
    query_events,
)
from prsm.server.tls import peer_identity

log = logging.getLogger("prsm.server")

_BEARER = "bearerAuth"

_REF = "#/components/schemas/{model}"
_QUERY_SCHEMA = QueryRequest.model_json_schema(by_alias=True, ref_template=_REF)
_JOB_SCHEMA = JOB_REQUEST.json_schema(by_alias=True, ref_template=_REF)
# Models the request bodies refer to; they join the OpenAPI components (see _customise_openapi).
_BODY_DEFS = {
    **_QUERY_SCHEMA.pop("$defs", {}),
    **_JOB_SCHEMA.pop("$defs", {}),
    **OPENAI_SCHEMA_DEFINITIONS,
}
_QUERY_BODY = {"required": True, "content": {"application/json": {"schema": _QUERY_SCHEMA}}}
_JOB_BODY = {"required": True, "content": {"application/json": {"schema": _JOB_SCHEMA}}}
_IDEMPOTENCY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Submitting again with the same key returns the first job (for as long as "
    "it is kept) instead of queueing another; the job's `requestId` serves when it is absent.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 256},
}
_STREAMED = {
    "description": "The answer; with `stream: true`, server-sent events (`delta`, then `done` "
    "or `error`)",
    "content": {"text/event-stream": {"schema": event_schema("delta", "done", "error")}},
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Malformed JSON",
        401: "Missing or invalid API key or token",
        403: "The token lacks the scope (read:ai for queries, write:ai for jobs)",
        404: "No such job or batch",
        409: "The Idempotency-Key was used for another job",
        413: "Body larger than the configured limit",
        422: "The body breaks the contract (empty prompt, unknown field, prompt too long...)",
        503: "The engine is saturated or not ready, or the job queue's Redis is away; see "
        "Retry-After",
        504: "The engine did not answer in time",
    }.items()
}


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    events: EventSink | None = None,
    *,
    handle_signals: bool = False,
) -> FastAPI:
    """The API app.

    With `engine`, it serves that engine instead of loading the configured one. With
    `settings.redis_url`, it publishes query events to Redis (or to `events`, when given) and
    its readiness checks Redis. With `handle_signals` (under `prsm serve`), SIGTERM drains it
    (`prsm.edge.drain`).
    """

    async def given() -> Engine:
        assert engine is not None
        return engine

    redis = connect_redis(settings.redis_url) if settings.redis_url else None
    checks: dict[str, ReadinessCheck] = {}
    if redis is not None:
        checks["redis"] = redis_check(redis)
        events = events or RedisEventSink(
            redis,
            service=settings.service_name,
            buffer_size=settings.events.buffer_size,
            stream_maxlen=settings.events.stream_maxlen,
            user_metrics_ttl=settings.events.user_metrics_ttl_seconds,
        )

    async def not_draining() -> CheckResult:
        if drain.draining:
            return CheckResult(ok=False, detail="shutting down: finishing queries in flight")
        return CheckResult(ok=True)

    checks["drain"] = not_draining
    service = QueryService(settings, given if engine is not None else None, events, checks)
    drain = Drain(
        settings.server.drain_seconds, settings.server.drain_timeout_seconds, service.admission
    )
    jobs = JobService(redis, settings.jobs) if redis is not None else None

    def job_service() -> JobService:
        if jobs is None:
            raise ServiceUnavailableError(
                "jobs need Redis: this instance runs without PRSM_REDIS_URL",
                code="jobs_unavailable",
            )
        return jobs

    auth = Authenticator(settings.api_keys, settings.oauth, settings.tls)

    async def caller(request: Request) -> Principal:
        try:
            return await auth.authenticate(
                request.headers.get("authorization"), peer_identity(request.scope)
            )
        except (AuthenticationError, PermissionDeniedError) as exc:
            metrics.AUTH_FAILURES.labels(settings.service_name, exc.code).inc()
            client = request.client.host if request.client else "unknown"
            log.warning(
                "authentication refused",
                extra={"code": exc.code, "clientIp": client, "path": request.url.path},
            )
            raise

    started = time.monotonic()
    connections = metrics.ACTIVE_CONNECTIONS.labels(settings.service_name, settings.instance_id)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        if handle_signals:
            drain.install()
        try:
            yield
        finally:
            await service.stop()
            if redis is not None:
                await redis.aclose()
            metrics.mark_process_dead(os.getpid())
            tracing.shutdown()

    # Swagger UI and ReDoc from the fastapi-offline wheel, not a CDN: /docs works offline.
    app = FastAPIOffline(
        title="PRSM API",
        version=__version__,
        summary="AI queries for microservices.",
        lifespan=lifespan,
    )
    app.state.service = service
    install_error_handlers(app)
    _customise_openapi(app)

    api = APIRouter(prefix="/api/v1")

    @api.post(
        "/query",
        tags=["queries"],
        response_model=QueryResponse,
        responses=_ERRORS | {200: _STREAMED},
        openapi_extra={"requestBody": _QUERY_BODY, "security": [{_BEARER: []}]},
    )
    async def query(request: Request) -> Response:
        """Answer a prompt with the served model.

        The body is read as JSON whatever its Content-Type, so `curl -d '{...}'` works.
        Authentication happens here rather than in a FastAPI dependency: dependencies cost
        a fifth of the throughput (bench/api_throughput.py).
        """
        principal = await caller(request)
        principal.require(READ)
        try:
            body = QueryRequest.model_validate_json(await request.body())
        except PydanticValidationError as exc:
            raise validation_error(exc.errors()) from None
        cid = request.scope["state"]["correlation_id"]
        ask = Ask.from_query(body)
        if body.stream:
            return await stream_answer(ask, principal, request, query_events(cid))
        answered = await answer_now(ask, principal, request)
        if isinstance(answered, Response):
            return answered
        answer = query_response(answered, cid)
        return Response(answer.model_dump_json(by_alias=True), media_type="application/json")

    async def answer_now(ask: Ask, principal: Principal, request: Request) -> Generation | Response:
        """The whole answer; if the caller leaves first, the generation stops and this is the
        499 nobody reads (the access log does)."""
        connections.inc()
        try:
            return await until_disconnected(
                service.answer(ask, principal, request.scope["state"]["correlation_id"]),
                request.receive,
                request.scope,
            )
        except ClientGone:
            client_gone()
            return Response(status_code=CLIENT_GONE)
        finally:
            connections.dec()

    def client_gone() -> None:
        metrics.QUERIES_CANCELLED.labels(settings.service_name, "client_gone").inc()

    async def stream_answer(
        ask: Ask, principal: Principal, request: Request, events: StreamFormat
    ) -> Response:
        """The answer as server-sent events, once its first text exists (a failure before is
        an ordinary error response)."""
        cid = request.scope["state"]["correlation_id"]
        stream = AnswerStream(lambda on_text: service.answer(ask, principal, cid, on_text))
        connections.inc()
        try:
            await until_disconnected(stream.started(), request.receive, request.scope)
        except ClientGone:
            connections.dec()
            client_gone()
            return Response(status_code=CLIENT_GONE)
        except BaseException:
            connections.dec()
            raise

        async def frames() -> AsyncIterator[bytes]:
            try:
                async for frame in events(stream):
                    yield frame
            finally:
                connections.dec()

        return EventStream(frames(), client_gone)

    @api.post(
        "/jobs",
        status_code=202,
        response_model=JobAccepted,
        responses=_ERRORS,
        tags=["jobs"],
        openapi_extra={
            "requestBody": _JOB_BODY,
            "parameters": [_IDEMPOTENCY_PARAMETER],
            "security": [{_BEARER: []}],
        },
    )
    async def submit_job(request: Request) -> Response:
        """Queue a priority, batch or scheduled query; the answer comes by status or callback."""
        principal = await caller(request)
        principal.require(WRITE)
        try:
            body = JOB_REQUEST.validate_json(await request.body())
        except PydanticValidationError as exc:
            raise validation_error(exc.errors()) from None
        accepted = await job_service().submit(
            body,
            request.scope["state"]["correlation_id"],
            caller=principal.identity,
            idempotency_key=_idempotency_key(request),
        )
        return JSONResponse(accepted.to_wire(), status_code=202)

    @api.get("/jobs/{job_id}", response_model=JobStatus, responses=_ERRORS, tags=["jobs"])
    async def job_status(job_id: str, request: Request) -> Response:
        """A job's status, with its result or error once it has finished (the caller's own
        jobs only: another caller's job is 404)."""
        principal = await caller(request)
        principal.require(READ)
        status = await job_service().status(job_id, principal.identity)
        return Response(status.model_dump_json(by_alias=True), media_type="application/json")

    @api.get(
        "/batches/{batch_id}",
        response_model=list[BatchResult],
        responses=_ERRORS,
        tags=["jobs"],
    )
    async def batch_results(batch_id: str, request: Request) -> Response:
        """The per-query results of a finished batch job (kept for an hour; the caller's own
        batches only: another caller's batch is 404)."""
        principal = await caller(request)
        principal.require(READ)
        results = await job_service().batch_results(batch_id, principal.identity)
        return JSONResponse([r.to_wire() for r in results])

    probes = APIRouter(tags=["probes"])
    ready_gauge = metrics.READY.labels(settings.service_name)  # 0 until /ready says otherwise

    @probes.get("/health", response_model=HealthResponse)
    async def health() -> Response:
        """Liveness: the process answers."""
        body = HealthResponse(version=__version__, uptime_seconds=time.monotonic() - started)
        return JSONResponse(body.to_wire())

    @probes.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
    async def ready() -> Response:
        """Readiness: 200 when every check passes, else 503 naming the failing ones."""
        checks = await service.readiness()
        ok = all(check.ok for check in checks.values())
        ready_gauge.set(1 if ok else 0)
        body = ReadyResponse(status="ready" if ok else "not_ready", checks=checks)
        return JSONResponse(body.to_wire(), status_code=200 if ok else 503)

    @probes.get("/started", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
    async def started_probe() -> Response:
        """Start-up: 200 once the engine has loaded, whatever the other checks say (a startup
        probe that covers model loading, and no more: a Redis outage must not restart pods)."""
        engine = service.engine_check()
        body = ReadyResponse(
            status="started" if engine.ok else "starting", checks={"engine": engine}
        )
        return JSONResponse(body.to_wire(), status_code=200 if engine.ok else 503)

    @probes.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        """Prometheus exposition text."""
        text, content_type = metrics.render()
        return Response(text, media_type=content_type)

    app.include_router(api)
    app.include_router(probes)
    app.include_router(
        openai_routes(
            QueryPath(caller, answer_now, stream_answer, lambda: service.ready_engine().model)
        )
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.server.max_body_bytes)
    app.add_middleware(CorrelationMiddleware)
    return app


IDEMPOTENCY_HEADER = "idempotency-key"


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= 256:
        raise ValidationError(
            "Idempotency-Key must be 1 to 256 characters", code="invalid_idempotency_key"
        )
    return key


def _customise_openapi(app: FastAPI) -> None:
    """Bearer auth and the models the hand-written request bodies refer to."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        components = schema.setdefault("components", {})
        for name, definition in _BODY_DEFS.items():
            components.setdefault("schemas", {}).setdefault(name, definition)
        schemes = components.setdefault("securitySchemes", {})
        schemes[_BEARER] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: `Authorization: Bearer <key>`.",
        }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app_from_env() -> FastAPI:
    """uvicorn's factory: settings from the environment and `PRSM_CONFIG`."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    tracing.configure(settings.service_name)
    app = create_app(settings, handle_signals=True)
    tune_for_requests()
    freeze_startup_heap()
    return app
