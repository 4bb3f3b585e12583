"""`ServiceClient`: calls PRSM over a discovered set of instances.

The pipeline, in go-kit's order and built from `prsm.resilience`'s pieces: for queries, the
client metrics and the `prsm.query` span (`prsm.client.instrument`) → a breaker for the
service → one overall deadline → failover (`prsm.resilience.failover`) over the pool
(discovery, cached instance set with the last good set kept, outlier ejection, balancer) → a
breaker per instance → the instance's `AsyncPRSMClient`.

>>> async with ServiceClient(StaticDiscovery(["http://a:8000", "http://b:8000"]),
...                          api_key="...") as prsm:                       # doctest: +SKIP
...     result = await prsm.query("What is the capital of France?", user_id="u1")
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from types import TracebackType
from typing import Any, Unpack

from prsm import metrics
from prsm.client._async import AsyncPRSMClient
from prsm.client._core import (
    DEFAULT_TIMEOUT,
    HealthStatus,
    QueryOptions,
    QueryResult,
    StreamChunk,
    with_correlation_id,
)
from prsm.client.instrument import ServiceCall, measured, traced
from prsm.client.oauth import ClientCredentials
from prsm.client.tls import ClientTLS
from prsm.errors import TimeoutError
from prsm.resilience.breaker import BreakerConfig, CircuitBreaker
from prsm.resilience.clock import SYSTEM_CLOCK, Clock
from prsm.resilience.failover import failover
from prsm.resilience.handler import Handler, Middleware, chain, time_limit
from prsm.resilience.retry import RetryPolicy
from prsm.sd import Discovery, Instance
from prsm.sd.balance import Affinity, Balancer
from prsm.sd.outliers import OutlierDetector
from prsm.sd.pool import Pool


class ServiceClient:
    """Arguments: `discovery` finds instances; `balancer` chooses among them (round robin;
    `LeastOutstanding`; `PrefixAffinity`, which sends a prompt to the instance that was sent
    its beginning: that instance's engine holds it cached); `attempts` is how many different
    instances one call may try; `deadline` bounds the whole call, failovers included
    (default: `timeout` per attempt times `attempts`). `breaker` configures the per-instance
    and service breakers (None: the defaults). `auth` (OAuth2 client credentials) and `tls`
    (CA, client certificate) apply to every instance.

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
        self._endpoints: dict[str, Handler[ServiceCall, Any]] = {}
        self._clients: list[AsyncPRSMClient] = []
        self.breaker = CircuitBreaker(service, self._pool.breaker_config, clock=clock)
        past_deadline = functools.partial(
            TimeoutError, f"no answer from {service!r} within the {self._deadline:g}s deadline"
        )
        guarded: Middleware[ServiceCall, Any] = chain(
            self.breaker, time_limit(self._deadline, past_deadline)
        )
        self._pipeline = guarded(
            failover(
                self._pool,
                self._endpoint,
                attempts=attempts,
                hint=_prompt_of,
                service=repr(service),
            )
        )
        instrumented: Middleware[ServiceCall, Any] = chain(
            measured(service, user_tier), traced(service)
        )
        self._queries = instrumented(self._pipeline)

    @property
    def instances(self) -> list[Instance]:
        """The instances the pool currently knows (ejected ones included)."""
        return self._pool.instances

    async def start(self) -> None:
        """Start discovery (the first lookup, then its refreshes); `async with` does it."""
        await self._pool.start()

    async def query(
        self,
        prompt: str,
        *,
        user_id: str,
        **options: Unpack[QueryOptions],
    ) -> QueryResult:
        """Ask one instance, failing over to others; raises a `prsm.PRSMError` subclass."""
        options = with_correlation_id(options)

        def ask(client: AsyncPRSMClient) -> Awaitable[QueryResult]:
            return client.query(prompt, user_id=user_id, **options)

        result: QueryResult = await self._queries(ServiceCall(ask, prompt, user_id))
        return result

    async def stream(
        self,
        prompt: str,
        *,
        user_id: str,
        **options: Unpack[QueryOptions],
    ) -> AsyncGenerator[StreamChunk]:
        """The answer as it is generated (see `AsyncPRSMClient.stream`). Fails over to another
        instance until the answer has begun, never after: a stream is not replayed."""
        options = with_correlation_id(options)

        def begin(client: AsyncPRSMClient) -> Awaitable[AsyncIterator[StreamChunk]]:
            return client.open_stream(prompt, user_id=user_id, **options)

        chunks: AsyncIterator[StreamChunk] = await self._pipeline(ServiceCall(begin, prompt))
        async for chunk in chunks:
            yield chunk

    async def health(self) -> HealthStatus:
        """`GET /health` from one instance, through the same failover and breakers."""
        health: HealthStatus = await self._pipeline(ServiceCall(AsyncPRSMClient.health))
        return health

    def _endpoint(self, instance: Instance) -> Handler[ServiceCall, Any]:
        """Sends a call to one instance: its own client, its breaker and ejection (the pool),
        counted in `prsm_active_connections` while it runs."""
        known = self._endpoints.get(instance.id)
        if known is not None:
            return known
        client = AsyncPRSMClient(
            instance.url,
            api_key=self._api_key,
            timeout=self._timeout,
            retries=RetryPolicy(retries=0),  # failover does the retrying
            headers=self._headers,
            auth=self._auth,
            tls=self._tls,
        )
        self._clients.append(client)
        connections = metrics.ACTIVE_CONNECTIONS.labels(self.service, instance.id)
        pool = self._pool

        async def send(call: ServiceCall) -> Any:
            connections.inc()
            try:
                return await pool.call(instance, call.send, client)
            finally:
                connections.dec()

        self._endpoints[instance.id] = send
        return send

    async def aclose(self) -> None:
        """Stop discovery and close every instance's client; `async with` does it."""
        await self._pool.aclose()
        for client in self._clients:
            await client.aclose()
        self._clients.clear()
        self._endpoints.clear()

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


def _prompt_of(call: ServiceCall) -> Affinity | None:
    """What a balancer by prefix (`prsm.sd.affinity.PrefixAffinity`) routes a query by."""
    return Affinity(call.prompt) if call.prompt else None
