"""`AsyncPRSMClient`: the asyncio client, on aiohttp. Mirrors `PRSMClient` method for method."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import tenacity

from prsm import tracing
from prsm.client._core import (
    DEFAULT_TIMEOUT,
    SERVICE_NAME,
    ClientCore,
    HealthStatus,
    PreparedRequest,
    QueryResult,
    RetryPolicy,
)
from prsm.client.oauth import ClientCredentials
from prsm.client.tls import ClientTLS, check_scheme, dropped_hint, tls_failure
from prsm.contracts import Priority
from prsm.errors import ConnectError, TimeoutError, TLSError, TransportError, UsageError

T = TypeVar("T")
Parser = Callable[[int, Mapping[str, str], bytes], T]


class AsyncPRSMClient:
    """Talks to one PRSM API base URL, without blocking the event loop.

    >>> async with AsyncPRSMClient("http://127.0.0.1:8000", api_key="k") as c:  # doctest: +SKIP
    ...     result = await c.query("What is the capital of France?", user_id="u1")

    Arguments as for `PRSMClient`; `connector` is passed to aiohttp instead of `transport`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int | RetryPolicy = 3,
        *,
        headers: Mapping[str, str] | None = None,
        connector: aiohttp.BaseConnector | None = None,
        auth: ClientCredentials | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        self._core = ClientCore(base_url, api_key, timeout, retries, headers)
        check_scheme(self._core.base_url, tls)
        if tls is not None and connector is not None:
            raise UsageError("give tls or connector, not both (a connector brings its own TLS)")
        self._auth = auth
        self._tls = tls
        self._connector = connector
        self._session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        return self._core.base_url

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
        """Ask the model. Raises a `prsm.PRSMError` subclass on failure."""
        with tracing.query_span(prompt, user_id, SERVICE_NAME) as span:
            request = self._core.query_request(
                prompt,
                user_id=user_id,
                context=context,
                max_tokens=max_tokens,
                priority=priority,
                correlation_id=correlation_id,
            )
            result = await self._send(request, self._core.parse_query)
            span.answered(result.usage.tokens, result.confidence)
            return result

    async def health(self) -> HealthStatus:
        """The server's liveness (`GET /health`)."""
        return await self._send(self._core.health_request(), self._core.parse_health)

    async def _send(self, request: PreparedRequest, parse: Parser[T]) -> T:
        if self._core.retry.retries == 0:  # no retry machinery for a single attempt
            return await self._attempt(request, parse)
        async for attempt in tenacity.AsyncRetrying(**self._core.retry.tenacity_options()):
            with attempt:
                return await self._attempt(request, parse)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _attempt(self, request: PreparedRequest, parse: Parser[T]) -> T:
        status, headers, body = await self._exchange(request)
        if status == 401 and self._auth is not None:
            # The token was refused (revoked, signing key rotated): one fresh try.
            self._auth.invalidate()
            status, headers, body = await self._exchange(request)
        return parse(status, headers, body)

    async def _exchange(self, request: PreparedRequest) -> tuple[int, Mapping[str, str], bytes]:
        if self._session is None:
            connector = self._connector
            if connector is None and self._tls is not None:
                connector = aiohttp.TCPConnector(ssl=self._tls.context)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._core.timeout),
            )
        headers = request.headers
        if self._auth is not None:
            headers = {**headers, "authorization": f"Bearer {await self._auth.token()}"}
        try:
            async with self._session.request(
                request.method, request.url, headers=headers, data=request.body
            ) as response:
                return response.status, response.headers, await response.read()
        except aiohttp.ClientConnectionError as exc:
            if tls_failure(exc):
                raise TLSError(f"TLS with {request.url} failed: {exc}") from exc
            if isinstance(exc, aiohttp.SocketTimeoutError):
                raise TimeoutError(
                    f"no answer from {request.url} within {self._core.timeout:g}s"
                ) from exc
            dropped = isinstance(exc, aiohttp.ServerDisconnectedError)
            hint = dropped_hint(request.url) if dropped else ""
            raise ConnectError(f"cannot reach {request.url}: {exc}{hint}") from exc
        except builtins.TimeoutError as exc:
            raise TimeoutError(
                f"no answer from {request.url} within {self._core.timeout:g}s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"{request.method} {request.url} failed: {exc}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncPRSMClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
