"""`AsyncPRSMClient`: the asyncio client, on aiohttp. Mirrors `PRSMClient` method for method."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import TypeVar, Unpack

import aiohttp

from prsm import tracing
from prsm.client._core import (
    DEFAULT_TIMEOUT,
    SERVICE_NAME,
    ClientCore,
    EventReader,
    HealthStatus,
    PreparedRequest,
    QueryOptions,
    QueryResult,
    Schema,
    StreamChunk,
    structured,
)
from prsm.client.oauth import ClientCredentials
from prsm.client.tls import ClientTLS, check_scheme
from prsm.client.transport_errors import from_aiohttp
from prsm.errors import UsageError
from prsm.resilience.retry import RetryPolicy

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
        """The API's base URL this client calls."""
        return self._core.base_url

    async def query(
        self,
        prompt: str,
        *,
        user_id: str,
        schema: Schema | None = None,
        headers: Mapping[str, str] | None = None,
        **options: Unpack[QueryOptions],
    ) -> QueryResult:
        """Ask the model. Raises a `prsm.PRSMError` subclass on failure.

        With `schema` (a pydantic model or a JSON Schema), the answer is held to it while it
        is decoded and `result.parsed` is the validated object. `headers` go with this request
        only (a worker's `X-PRSM-Job-Token`, for one)."""
        with tracing.query_span(prompt, user_id, SERVICE_NAME) as span:
            request = self._core.query_request(
                prompt,
                user_id=user_id,
                **options,
                schema=schema,
                headers=headers,
            )
            result = await self._send(request, self._core.parse_query)
            span.answered(result.usage.tokens, result.confidence)
            return structured(schema, result)

    async def stream(
        self,
        prompt: str,
        *,
        user_id: str,
        **options: Unpack[QueryOptions],
    ) -> AsyncIterator[StreamChunk]:
        """Ask the model and read its answer as it is generated:

        >>> async for chunk in client.stream("Tell me a story.", user_id="u1"):  # doctest: +SKIP
        ...     print(chunk.text, end="", flush=True)

        The last chunk carries the whole `result`. Retried like `query` until the answer has
        begun, never after; leaving the loop early closes the connection, which stops the
        generation on the server.
        """
        chunks = await self.open_stream(
            prompt,
            user_id=user_id,
            **options,
        )
        async for chunk in chunks:
            yield chunk

    async def open_stream(
        self,
        prompt: str,
        *,
        user_id: str,
        **options: Unpack[QueryOptions],
    ) -> AsyncIterator[StreamChunk]:
        """`stream`, in two steps: this returns once the answer has begun (what fails before
        is raised here, retried as configured), the iterator then reads it."""
        request = self._core.query_request(
            prompt,
            user_id=user_id,
            **options,
            stream=True,
        )
        response = await self._retrying(lambda: self._open(request))
        return self._chunks(request, response)

    async def _chunks(
        self, request: PreparedRequest, response: aiohttp.ClientResponse
    ) -> AsyncIterator[StreamChunk]:
        try:
            reader = EventReader(response.headers)
            async for data in response.content.iter_any():
                for chunk in reader.feed(data):
                    yield chunk
            reader.finish()
        except (aiohttp.ClientError, builtins.TimeoutError) as exc:
            raise self._transport_error(request, exc) from exc
        finally:
            response.close()

    async def health(self) -> HealthStatus:
        """The server's liveness (`GET /health`)."""
        return await self._send(self._core.health_request(), self._core.parse_health)

    async def _send(self, request: PreparedRequest, parse: Parser[T]) -> T:
        return await self._retrying(lambda: self._attempt(request, parse))

    async def _retrying(self, attempt_once: Callable[[], Awaitable[T]]) -> T:
        return await self._core.retry.run(attempt_once)

    async def _authorized(self, request: PreparedRequest) -> dict[str, str]:
        """The request's headers, with a current token when the client uses OAuth2."""
        if self._auth is None:
            return request.headers
        return {**request.headers, "authorization": f"Bearer {await self._auth.token()}"}

    async def _open(self, request: PreparedRequest) -> aiohttp.ClientResponse:
        """The response with its headers read and its body still to come (an error status is
        raised, its body read). No total time limit: each read may take `timeout`."""
        session = self._session_now()
        headers = await self._authorized(request)
        timeout = self._core.timeout
        try:
            response = await session.request(
                request.method,
                request.url,
                headers=headers,
                data=request.body,
                timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout),
            )
            if response.status >= 400:
                body = await response.read()
                response.close()
                self._core.raise_for_status(response.status, response.headers, body)
        except (aiohttp.ClientError, builtins.TimeoutError) as exc:
            raise self._transport_error(request, exc) from exc
        return response

    async def _attempt(self, request: PreparedRequest, parse: Parser[T]) -> T:
        status, headers, body = await self._exchange(request)
        if status == 401 and self._auth is not None:
            # The token was refused (revoked, signing key rotated): one fresh try.
            self._auth.invalidate()
            status, headers, body = await self._exchange(request)
        return parse(status, headers, body)

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = self._connector
            if connector is None and self._tls is not None:
                connector = aiohttp.TCPConnector(ssl=self._tls.context)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._core.timeout),
            )
        return self._session

    async def _exchange(self, request: PreparedRequest) -> tuple[int, Mapping[str, str], bytes]:
        session = self._session_now()
        headers = await self._authorized(request)
        try:
            async with session.request(
                request.method, request.url, headers=headers, data=request.body
            ) as response:
                return response.status, response.headers, await response.read()
        except (aiohttp.ClientError, builtins.TimeoutError) as exc:
            raise self._transport_error(request, exc) from exc

    def _transport_error(self, request: PreparedRequest, exc: BaseException) -> Exception:
        return from_aiohttp(exc, request.method, request.url, self._core.timeout)

    async def aclose(self) -> None:
        """Close the session; `async with` does it."""
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
