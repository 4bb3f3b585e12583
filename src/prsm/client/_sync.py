"""`PRSMClient`: the blocking client, on httpx. Mirrors `AsyncPRSMClient` method for method."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import TypeVar, Unpack

import httpx

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
from prsm.client.transport_errors import from_httpx
from prsm.errors import UsageError
from prsm.resilience.retry import RetryPolicy

T = TypeVar("T")
Parser = Callable[[int, Mapping[str, str], bytes], T]


class PRSMClient:
    """Talks to one PRSM API base URL.

    >>> with PRSMClient(base_url="http://127.0.0.1:8000", api_key="k") as c:  # doctest: +SKIP
    ...     result = c.query("What is the capital of France?", user_id="u1")
    ...     print(result.answer, result.confidence, result.usage.tokens)

    `base_url` and `api_key` default to `PRSM_BASE_URL` and `PRSM_API_KEY`. `retries` is a
    count or a `RetryPolicy`. `tls` holds the CA, client certificate and key for HTTPS and
    mTLS; `transport` is passed to httpx; `auth` sends OAuth2 client-credentials tokens
    instead of an API key.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int | RetryPolicy = 3,
        *,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        auth: ClientCredentials | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        self._core = ClientCore(base_url, api_key, timeout, retries, headers)
        check_scheme(self._core.base_url, tls)
        if tls is not None and transport is not None:
            raise UsageError("give tls or transport, not both (a transport brings its own TLS)")
        self._auth = auth
        verify = tls.context if tls is not None else True
        self._http = httpx.Client(timeout=timeout, transport=transport, verify=verify)

    @property
    def base_url(self) -> str:
        """The API's base URL this client calls."""
        return self._core.base_url

    def query(
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
            result = self._send(request, self._core.parse_query)
            span.answered(result.usage.tokens, result.confidence)
            return structured(schema, result)

    def stream(
        self,
        prompt: str,
        *,
        user_id: str,
        **options: Unpack[QueryOptions],
    ) -> Iterator[StreamChunk]:
        """Ask the model and read its answer as it is generated:

        >>> for chunk in client.stream("Tell me a story.", user_id="u1"):  # doctest: +SKIP
        ...     print(chunk.text, end="", flush=True)

        The last chunk carries the whole `result`. Retried like `query` until the answer has
        begun, never after; leaving the loop early closes the connection, which stops the
        generation on the server.
        """
        request = self._core.query_request(
            prompt,
            user_id=user_id,
            **options,
            stream=True,
        )
        response = self._retrying(lambda: self._open(request))
        try:
            reader = EventReader(response.headers)
            for data in response.iter_bytes():
                yield from reader.feed(data)
            reader.finish()
        except httpx.TransportError as exc:
            raise self._transport_error(request, exc) from exc
        finally:
            response.close()

    def health(self) -> HealthStatus:
        """The server's liveness (`GET /health`)."""
        return self._send(self._core.health_request(), self._core.parse_health)

    def _send(self, request: PreparedRequest, parse: Parser[T]) -> T:
        return self._retrying(lambda: self._attempt(request, parse))

    def _retrying(self, attempt_once: Callable[[], T]) -> T:
        return self._core.retry.run_sync(attempt_once)

    def _authorized(self, request: PreparedRequest) -> dict[str, str]:
        """The request's headers, with a current token when the client uses OAuth2."""
        if self._auth is None:
            return request.headers
        return {**request.headers, "authorization": f"Bearer {self._auth.token_blocking()}"}

    def _open(self, request: PreparedRequest) -> httpx.Response:
        """The response with its headers read and its body still to come (an error status is
        raised, its body read)."""
        headers = self._authorized(request)
        built = self._http.build_request(
            request.method, request.url, headers=headers, content=request.body
        )
        try:
            response = self._http.send(built, stream=True)
            if response.status_code >= 400:
                body = response.read()
                response.close()
                self._core.raise_for_status(response.status_code, response.headers, body)
        except httpx.TransportError as exc:
            raise self._transport_error(request, exc) from exc
        return response

    def _attempt(self, request: PreparedRequest, parse: Parser[T]) -> T:
        status, headers, body = self._exchange(request)
        if status == 401 and self._auth is not None:
            # The token was refused (revoked, signing key rotated): one fresh try.
            self._auth.invalidate()
            status, headers, body = self._exchange(request)
        return parse(status, headers, body)

    def _exchange(self, request: PreparedRequest) -> tuple[int, httpx.Headers, bytes]:
        headers = self._authorized(request)
        try:
            response = self._http.request(
                request.method, request.url, headers=headers, content=request.body
            )
        except httpx.TransportError as exc:
            raise self._transport_error(request, exc) from exc
        return response.status_code, response.headers, response.content

    def _transport_error(self, request: PreparedRequest, exc: httpx.TransportError) -> Exception:
        return from_httpx(exc, request.method, request.url, self._core.timeout)

    def close(self) -> None:
        """Close the connection pool; `with` does it."""
        self._http.close()

    def __enter__(self) -> PRSMClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
