"""`ServiceClient`: calls PRSM over a discovered set of instances.

The pipeline, in go-kit's order: discovery → cached instance set (last good set kept) →
outlier ejection → balancer → failover to another instance within one overall deadline →
a circuit breaker per instance, and one for the service around it all.

>>> async with ServiceClient(StaticDiscovery(["http://a:8000", "http://b:8000"]),
...                          api_key="...") as prsm:                       # doctest: +SKIP
...     result = await prsm.query("What is the capital of France?", user_id="u1")
"""

from __future__ import annotations

import asyncio
import builtins
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from prsm import metrics, tracing
from prsm.client._async import AsyncPRSMClient
from prsm.client._core import (
    DEFAULT_TIMEOUT,
    HealthStatus,
    QueryResult,
    RetryPolicy,
    StreamChunk,
)
from prsm.client.oauth import ClientCredentials
from prsm.client.tls import ClientTLS
from prsm.contracts import Priority
from prsm.errors import ConnectError, HTTPStatusError, PRSMError, TimeoutError
from prsm.resilience.breaker import BreakerConfig, CircuitBreaker
from prsm.resilience.clock import SYSTEM_CLOCK, Clock
from prsm.resilience.outcomes import Outcome, classify, fails_over, target_failed
from prsm.sd import Discovery, Instance
from prsm.sd.balance import Balancer
from prsm.sd.outliers import OutlierDetector
from prsm.sd.pool import Pool

T = TypeVar("T")
Call = Callable[[AsyncPRSMClient], Awaitable[T]]
SLOW_DOWN_WAIT = 1.0
"""Seconds to wait after a 429 that came without Retry-After."""


def _instance_failed(exc: BaseException) -> bool:
    """What counts against an instance and sends the call to another: it was unreachable,
    its breaker was open, or it answered 408/502/503/504 (`prsm.resilience.outcomes`)."""
    return target_failed(classify(exc))


def _retry_after(exc: PRSMError) -> float:
    retry_after = exc.retry_after if isinstance(exc, HTTPStatusError) else None
    return SLOW_DOWN_WAIT if retry_after is None else retry_after


class ServiceClient:
    """Arguments: `discovery` finds instances; `attempts` is how many different instances one
    call may try; `deadline` bounds the whole call, failovers included (default: `timeout`
    per attempt times `attempts`). `breaker` configures the per-instance and service breakers
    (None: the defaults). `auth` (OAuth2 client credentials) and `tls` (CA, client certificate)
    apply to every instance.

    Every call is recorded in the specification's client metrics: `prsm_query_duration_seconds`
    and `prsm_queries_total` (service, method, status, user_tier), `prsm_tokens_used_total`
    (service, user_tier, model) and `prsm_active_connections` (service, instance)."""

    def __init__(
        self,
        discovery: Discovery,
        *,
        service: str = "prsm-api",
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = 3,
        deadline: float | None = None,
        balancer: Balancer | None = None,
        outliers: OutlierDetector | None = None,
        breaker: BreakerConfig | None = None,
        refresh_seconds: float = 30.0,
        headers: Mapping[str, str] | None = None,
        auth: ClientCredentials | None = None,
        tls: ClientTLS | None = None,
        user_tier: str = "standard",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.service = service
        self.user_tier = user_tier
        self._pool = Pool(
            service,
            discovery,
            is_failure=_instance_failed,
            balancer=balancer,
            outliers=outliers,
            breaker=breaker,
            refresh_seconds=refresh_seconds,
            clock=clock,
        )
        self._api_key = api_key
        self._timeout = timeout
        self._attempts = attempts
        self._deadline = deadline or timeout * attempts
        self._headers = dict(headers or {})
        self._auth = auth  # one token provider for every instance: one refresh for all
        self._tls = tls
        self._clients: dict[str, tuple[AsyncPRSMClient, Any]] = {}
        self.breaker = CircuitBreaker(
            service, self._pool.breaker_config, clock=clock, is_failure=_instance_failed
        )

    @property
    def instances(self) -> list[Instance]:
        return self._pool.instances

    async def start(self) -> None:
        await self._pool.start()

    async def query(
        self,
        prompt: str,
        *,
        user_id: str,
        context: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
        priority: Priority | None = None,
        correlation_id: str | None = None,
    ) -> QueryResult:
        """Ask one instance, failing over to others; raises a `prsm.PRSMError` subclass."""
        cid = correlation_id or uuid.uuid4().hex

        def ask(client: AsyncPRSMClient) -> Awaitable[QueryResult]:
            return client.query(
                prompt,
                user_id=user_id,
                context=context,
                max_tokens=max_tokens,
                priority=priority,
                correlation_id=cid,
            )

        started = time.perf_counter()
        status, tokens, model = "error", 0, "unknown"
        try:
            with tracing.query_span(prompt, user_id, self.service) as span:
                result = await self.breaker.call(self._failover, ask)
                span.answered(result.usage.tokens, result.confidence)
        except HTTPStatusError as exc:
            status = str(exc.status_code)
            raise
        else:
            status, tokens, model = "200", result.usage.tokens, result.model or "unknown"
            return result
        finally:
            metrics.record_query(
                service=self.service,
                method="query",
                status=status,
                user_tier=self.user_tier,
                duration=time.perf_counter() - started,
                tokens=tokens,
                model=model,
            )

    async def stream(
        self,
        prompt: str,
        *,
        user_id: str,
        context: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
        priority: Priority | None = None,
        correlation_id: str | None = None,
    ) -> AsyncGenerator[StreamChunk]:
        """The answer as it is generated (see `AsyncPRSMClient.stream`). Fails over to another
        instance until the answer has begun, never after: a stream is not replayed."""
        cid = correlation_id or uuid.uuid4().hex

        def begin(client: AsyncPRSMClient) -> Awaitable[AsyncIterator[StreamChunk]]:
            return client.open_stream(
                prompt,
                user_id=user_id,
                context=context,
                max_tokens=max_tokens,
                priority=priority,
                correlation_id=cid,
            )

        chunks = await self.breaker.call(self._failover, begin)
        async for chunk in chunks:
            yield chunk

    async def health(self) -> HealthStatus:
        """`GET /health` from one instance, through the same failover and breakers."""
        return await self.breaker.call(self._failover, AsyncPRSMClient.health)

    async def _failover(self, call: Call[T]) -> T:
        try:
            async with asyncio.timeout(self._deadline):
                return await self._tries(call)
        except builtins.TimeoutError as exc:
            if isinstance(exc, PRSMError):  # one instance's own timeout, already ours
                raise
            raise TimeoutError(
                f"no answer from {self.service!r} within the {self._deadline:g}s deadline"
            ) from None

    async def _tries(self, call: Call[T]) -> T:
        """Up to `attempts` tries: a failed instance sends the call to another, a 429 waits
        for its Retry-After and tries again; anything else is final."""
        pool, tried = self._pool, set[str]()
        last: PRSMError | None = None
        for attempt in range(1, self._attempts + 1):
            instance = pool.pick(tried)
            if instance is None:
                break
            tried.add(instance.id)
            client, connections = self._client(instance)
            connections.inc()
            try:
                return await pool.call(instance, call, client)
            except PRSMError as exc:
                outcome = classify(exc)
                if attempt == self._attempts:
                    raise
                if outcome is Outcome.SLOW_DOWN:
                    tried.discard(instance.id)  # the caller's budget, not the instance's fault
                    await asyncio.sleep(_retry_after(exc))
                elif not fails_over(outcome, idempotent=False):
                    raise
                last = exc
            finally:
                connections.dec()
        raise last or ConnectError(f"no instance of {self.service!r} to call")

    def _client(self, instance: Instance) -> tuple[AsyncPRSMClient, Any]:
        """The instance's client and its `prsm_active_connections` gauge."""
        known = self._clients.get(instance.id)
        if known is None:
            client = AsyncPRSMClient(
                instance.url,
                api_key=self._api_key,
                timeout=self._timeout,
                retries=RetryPolicy(retries=0),  # failover does the retrying, elsewhere
                headers=self._headers,
                auth=self._auth,
                tls=self._tls,
            )
            gauge = metrics.ACTIVE_CONNECTIONS.labels(self.service, instance.id)
            known = self._clients[instance.id] = (client, gauge)
        return known

    async def aclose(self) -> None:
        await self._pool.aclose()
        for client, _ in self._clients.values():
            await client.aclose()
        self._clients.clear()

    async def __aenter__(self) -> ServiceClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
