"""`ApiServices`: the one object every route of the API receives.

It holds what a request needs beyond its own body — the query service, the job service, who
the caller is, the shared gauges — so that each route module is a plain function of it
(`prsm.server.routes`), readable and testable on its own, and `create_app` only wires.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from redis.asyncio import Redis
from starlette.responses import Response

from prsm import metrics
from prsm.config import Serves, Settings
from prsm.contracts import JOB_TOKEN_HEADER, CheckResult
from prsm.edge.correlation import add_answer_headers
from prsm.edge.disconnect import CLIENT_GONE, ClientGone, until_disconnected
from prsm.edge.drain import Drain
from prsm.engines import Embeddings, Engine, Generation
from prsm.engines.text import TextSink
from prsm.errors import (
    AuthenticationError,
    HTTPStatusError,
    PermissionDeniedError,
    PRSMError,
    ServiceUnavailableError,
)
from prsm.events import EventSink
from prsm.events.redis_sink import RedisEventSink
from prsm.jobs.submit import JobService
from prsm.redis_client import connect_redis
from prsm.server.auth import Authenticator, Principal, key_id
from prsm.server.budgets import Budgets
from prsm.server.readiness import ReadinessCheck, redis_check
from prsm.server.response_cache import ResponseCache
from prsm.server.served import FALLBACK_HEADER, ServedModels, may_fall_back
from prsm.server.service import Ask, QueryService
from prsm.server.streaming import AnswerStream, EventStream, StreamFormat
from prsm.server.tls import peer_identity

log = logging.getLogger("prsm.server")
T = TypeVar("T")


@dataclass(eq=False)
class ApiServices:
    """The API's services, built once per app by `build_services`."""

    settings: Settings
    models: ServedModels
    drain: Drain
    auth: Authenticator
    jobs: JobService | None = None
    redis: Redis | None = None
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        name = self.settings.service_name
        self._connections = metrics.ACTIVE_CONNECTIONS.labels(name, self.settings.instance_id)
        self._gone = metrics.QUERIES_CANCELLED.labels(name, "client_gone")
        own = self.settings.api_key
        self._workers = {*self.settings.jobs.worker_callers}
        self._workers |= {key_id(own.get_secret_value())} if own is not None else set()

    async def caller(self, request: Request) -> Principal:
        """Who sent the request (API key, OAuth2 token or client certificate), and for whom,
        if it is a worker showing its job's token; a refusal is logged and counted, then
        raised."""
        try:
            principal = await self.auth.authenticate(
                request.headers.get("authorization"), peer_identity(request.scope)
            )
            return await self._acting(principal, request.headers.get(JOB_TOKEN_HEADER))
        except (AuthenticationError, PermissionDeniedError) as exc:
            metrics.AUTH_FAILURES.labels(self.settings.service_name, exc.code).inc()
            client = request.client.host if request.client else "unknown"
            log.warning(
                "authentication refused",
                extra={"code": exc.code, "clientIp": client, "path": request.url.path},
            )
            raise

    async def _acting(self, principal: Principal, job_token: str | None) -> Principal:
        """`principal` acting for the submitter of the job `job_token` names (checked in
        Redis; an instance without Redis has no budgets or cache, and ignores it). The token
        is a bearer capability: only a worker's own credential may show it."""
        if job_token is None or self.jobs is None:
            return principal
        if principal.key_id not in self._workers:
            raise PermissionDeniedError(
                "only a worker's credential may act for a job's submitter "
                "(jobs.worker_callers, and the key id of api_key)",
                code="job_token_refused",
            )
        return dataclasses.replace(principal, acting_for=await self.jobs.account_of(job_token))

    async def authorized(self, request: Request, scope: str) -> Principal:
        """The caller, if it holds `scope` (`read:ai`, `write:ai`); 401 or 403 otherwise."""
        principal = await self.caller(request)
        principal.require(scope)
        return principal

    def job_service(self) -> JobService:
        """The job service; 503 `jobs_unavailable` on an instance without Redis."""
        if self.jobs is None:
            raise ServiceUnavailableError(
                "jobs need Redis: this instance runs without PRSM_REDIS_URL",
                code="jobs_unavailable",
                not_run=True,
            )
        return self.jobs

    async def answer(
        self, ask: Ask, principal: Principal, request: Request
    ) -> Generation | Response:
        """The whole answer; if the caller leaves first, the generation stops and this is the
        499 nobody reads (the access log does)."""
        state = request.scope["state"]
        queries = await self._model_for(ask, principal, state["correlation_id"])
        ask = cache_directives(ask, request)
        return await self._unless_gone(self._answered(queries, ask, principal, state), request)

    async def _answered(
        self,
        queries: QueryService,
        ask: Ask,
        principal: Principal,
        state: dict[str, Any],
        on_text: TextSink | None = None,
        stream: AnswerStream | None = None,
    ) -> Generation:
        """The answer of `queries`' model or, while no text was passed on, of its fallbacks."""
        cid, sent = state["correlation_id"], False

        def sink(text: str) -> None:
            nonlocal sent
            sent = True
            assert on_text is not None
            on_text(text)

        async def attempt(model: QueryService) -> Generation:
            if stream is not None:
                stream.model = model.name or ""
            return await model.answer(ask, principal, cid, sink if on_text else None, state)

        return await self._first_able(queries, state, attempt, lambda: sent)

    async def _first_able(
        self,
        queries: QueryService,
        state: dict[str, Any],
        attempt: Callable[[QueryService], Awaitable[T]],
        began: Callable[[], bool] = lambda: False,
    ) -> T:
        """`attempt` on `queries`' model, or on the first of its fallbacks that can take it
        when it cannot (`prsm.server.served.may_fall_back`) and nothing of an answer `began`;
        a fallback's answer is named by `X-PRSM-Fallback-From` and counted."""
        chain = self.models.chain(queries)
        for tried, model in enumerate(chain):
            try:
                result = await attempt(model)
            except HTTPStatusError as exc:
                if began() or tried == len(chain) - 1 or not may_fall_back(exc):
                    raise
                self.models.fell_back(model, chain[tried + 1], exc)
                add_answer_headers(state, {FALLBACK_HEADER: queries.name or ""})
                continue
            return result
        raise AssertionError("a model chain is never empty")

    async def embed(
        self, ask: Ask, texts: list[str], principal: Principal, request: Request
    ) -> Embeddings | Response:
        """The vectors of `texts`, by the embedding model `ask` names; the 499 nobody reads if
        the caller leaves first."""
        state = request.scope["state"]
        cid, ask = state["correlation_id"], cache_directives(ask, request)
        queries = await self._model_for(ask, principal, cid, "embeddings")

        async def attempt(model: QueryService) -> Embeddings:
            return await model.embed(ask, texts, principal, cid, state)

        return await self._unless_gone(self._first_able(queries, state, attempt), request)

    async def _model_for(
        self, ask: Ask, principal: Principal, cid: str, serves: Serves = "generation"
    ) -> QueryService:
        """The model `ask` names; a refusal (no such model, or one of the other kind) is
        recorded as a failed query, as any other refusal is."""
        try:
            return self.models.find(ask.model, serves)
        except HTTPStatusError as exc:
            await self.models.default.refuse(ask, principal, cid, exc)
            raise

    async def _unless_gone(self, work: Coroutine[Any, Any, T], request: Request) -> T | Response:
        """`work`'s result, counted as a connection; stopped, and 499, when the caller leaves."""
        self._connections.inc()
        try:
            return await until_disconnected(work, request.receive, request.scope)
        except ClientGone:
            self._gone.inc()
            return Response(status_code=CLIENT_GONE)
        finally:
            self._connections.dec()

    async def stream(
        self, ask: Ask, principal: Principal, request: Request, events: StreamFormat
    ) -> Response:
        """The answer as server-sent events, once its first text exists (a failure before is
        an ordinary error response)."""
        state = request.scope["state"]
        cid, ask = state["correlation_id"], cache_directives(ask, request)
        queries = await self._model_for(ask, principal, cid)
        stream = AnswerStream(
            lambda on_text: self._answered(queries, ask, principal, state, on_text, stream)
        )
        self._connections.inc()
        try:
            await until_disconnected(stream.started(), request.receive, request.scope)
        except ClientGone:
            self._connections.dec()
            self._gone.inc()
            return Response(status_code=CLIENT_GONE)
        except BaseException:
            self._connections.dec()
            raise
        return EventStream(self._frames(events(stream)), self._gone.inc)

    async def _frames(self, frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for frame in frames:
                yield frame
        finally:
            self._connections.dec()

    async def start(self) -> None:
        """Load the engines and start what runs beside requests."""
        await self.models.start()

    async def stop(self) -> None:
        """Stop the models and close Redis."""
        await self.models.stop()
        if self.redis is not None:
            await self.redis.aclose()


def cache_directives(ask: Ask, request: Request) -> Ask:
    """`ask` as the caller's `Cache-Control` has it: `no-cache` reads no cached answer,
    `no-store` neither reads nor keeps one."""
    directives = {d.strip().lower() for d in request.headers.get("cache-control", "").split(",")}
    if "no-store" in directives:
        return dataclasses.replace(ask, cache_read=False, cache_write=False)
    if "no-cache" in directives:
        return dataclasses.replace(ask, cache_read=False)
    return ask


def _budgets(settings: Settings, redis: Redis | None) -> Budgets | None:
    """The callers' budgets, kept in Redis; budgets without Redis are a start-up error (a
    limit that silently does not apply is no limit)."""
    wanted = settings.budgets
    if not wanted.default.limited and not any(b.limited for b in wanted.callers.values()):
        return None
    if redis is None:
        raise PRSMError("budgets need Redis: set PRSM_REDIS_URL")
    return Budgets(
        redis, wanted, settings.service_name, confirm_replicas=settings.redis_confirm_replicas
    )


def build_services(
    settings: Settings, engine: Engine | None = None, events: EventSink | None = None
) -> ApiServices:
    """The services for one app: `engine` instead of the configured one when given; with
    `settings.redis_url`, events to Redis (or to `events`), jobs, and Redis in readiness."""
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

    async def not_draining() -> CheckResult:  # `drain` is made below, before any request
        if drain.draining:
            return CheckResult(ok=False, detail="shutting down: finishing queries in flight")
        return CheckResult(ok=True)

    async def given() -> Engine:
        assert engine is not None
        return engine

    budgets = _budgets(settings, redis)

    checks["drain"] = not_draining
    cache = None
    if settings.cache.enabled and redis is not None:
        cache = ResponseCache(redis, settings.cache, settings.service_name)
    elif settings.cache.enabled:
        log.warning("cache.enabled needs Redis (PRSM_REDIS_URL): answers are not cached")
    models = ServedModels(
        [
            QueryService(settings, given if engine and i == 0 else None, events, cache, budgets, m)
            for i, m in enumerate(settings.served_models())
        ],
        checks,
        events,
    )
    drain = Drain(settings.server.drain_seconds, settings.server.drain_timeout_seconds, models)
    return ApiServices(
        settings=settings,
        models=models,
        drain=drain,
        auth=Authenticator(settings.api_keys, settings.oauth, settings.tls),
        jobs=(
            JobService(redis, settings.jobs, confirm_replicas=settings.redis_confirm_replicas)
            if redis is not None
            else None
        ),
        redis=redis,
    )
