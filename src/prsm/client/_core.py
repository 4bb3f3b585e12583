"""Everything the sync and async clients share that does no I/O.

Request building, response parsing and error mapping live here once; the
I/O layers (`_sync.PRSMClient` on httpx, `_async.AsyncPRSMClient` on aiohttp) only move bytes.
"""

from __future__ import annotations

import codecs
import email.utils
import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypedDict, TypeVar, Unpack

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from prsm import tracing
from prsm._version import __version__
from prsm.contracts import (
    CORRELATION_HEADER,
    NOT_RUN_HEADER,
    SHARED_OUTAGE_HEADER,
    Contract,
    HealthResponse,
    Priority,
    QueryRequest,
    ReceivedQueryResponse,
    ReceivedUsage,
    describe_problems,
)
from prsm.errors import (
    TransportError,
    UsageError,
    error_for_status,
)
from prsm.resilience.retry import RetryPolicy

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
SERVICE_NAME = "prsm-api"
"""The service a single-URL client calls, as traces name it."""
C = TypeVar("C", bound=Contract)
BASE_URL_ENV = "PRSM_BASE_URL"
API_KEY_ENV = "PRSM_API_KEY"


class QueryOptions(TypedDict, total=False):
    """How a query is asked, beside its prompt and user: every query method of the clients
    takes these as keywords (`max_tokens=32, model="small"`), and passes them on as one."""

    context: Mapping[str, Any] | None
    """Anything the caller wants kept with the query's event."""
    max_tokens: int | None
    """The answer's most tokens (the server's default when unset)."""
    priority: Priority | None
    """`low`, `normal` or `high`: the place in the queue while the engine is busy."""
    model: str | None
    """The model to ask (an id or alias; the server's first chat model when unset)."""
    correlation_id: str | None
    """Carried by every log line, event and trace of the query (made up when unset)."""


def with_correlation_id(options: QueryOptions) -> QueryOptions:
    """`options` with a correlation id: the caller's, or a new one (the same on every try)."""
    return {**options, "correlation_id": options.get("correlation_id") or uuid.uuid4().hex}


@dataclass(frozen=True, slots=True)
class QueryResult:
    """A model's answer to one query.

    `answer`, `confidence` and `usage.tokens` are always there; `usage.prompt_tokens`,
    `usage.completion_tokens` and `model` are None when the server did not send them, and
    `correlation_id` comes from the body or else the `X-Correlation-ID` header.
    """

    answer: str
    confidence: float
    usage: ReceivedUsage
    model: str | None
    correlation_id: str | None
    parsed: Any = None
    """Asked with a `schema`: the answer as that pydantic model, or as JSON for a JSON Schema."""


Schema = type[BaseModel] | Mapping[str, Any]
"""What a structured answer must be: a pydantic model or a JSON Schema."""


def json_schema_of(schema: Schema) -> dict[str, Any]:
    """The JSON Schema the server is asked to hold the answer to."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    return dict(schema)


def structured(schema: Schema | None, result: QueryResult) -> QueryResult:
    """`result` with its answer parsed as `schema` says (the server enforced the schema while
    decoding; only an answer cut by `max_tokens` fails here, as pydantic's or json's error)."""
    if schema is None:
        return result
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return replace(result, parsed=schema.model_validate_json(result.answer))
    return replace(result, parsed=json.loads(result.answer))


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One piece of a streamed answer: `text` as the model generated it. The last chunk has
    no text and the whole `result` (answer, confidence, usage, model, correlation id)."""

    text: str
    result: QueryResult | None = None


@dataclass(frozen=True, slots=True)
class HealthStatus:
    """What `GET /health` said."""

    status: str
    version: str
    uptime_seconds: float


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """One HTTP request, built once and sent by either client (retries send it again as it is)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None


class ClientCore:
    """Builds requests and reads responses for both clients."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float,
        retries: int | RetryPolicy,
        headers: Mapping[str, str] | None,
    ) -> None:
        base = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        if not base.startswith(("http://", "https://")):
            raise UsageError(f"base_url must start with http:// or https://, got {base!r}")
        if timeout <= 0:
            raise UsageError("timeout must be positive")
        self.base_url = base.rstrip("/")
        self.timeout = timeout
        self.retry = retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries=retries)
        self.headers = {"user-agent": f"prsm-python/{__version__}", **(headers or {})}
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if key:
            self.headers["authorization"] = f"Bearer {key}"

    def query_request(
        self,
        prompt: str,
        *,
        user_id: str,
        stream: bool = False,
        schema: Schema | None = None,
        headers: Mapping[str, str] | None = None,
        **options: Unpack[QueryOptions],
    ) -> PreparedRequest:
        """The `POST /api/v1/query` request for these arguments (only the fields given are
        sent: the server's defaults apply to the rest)."""
        unknown = set(options) - set(QueryOptions.__annotations__)
        if unknown:
            raise UsageError(f"unknown query option: {', '.join(sorted(unknown))}")
        correlation_id = options.get("correlation_id")
        given: dict[str, Any] = {
            name: options.get(name) for name in ("context", "max_tokens", "priority", "model")
        }
        given["response_schema"] = None if schema is None else json_schema_of(schema)
        if stream:
            given["stream"] = True
        try:
            body = QueryRequest(
                prompt=prompt,
                user_id=user_id,
                **{name: value for name, value in given.items() if value is not None},
            )
        except PydanticValidationError as exc:
            raise UsageError(f"invalid query: {describe_problems(exc.errors())}") from None
        sent = {
            **self.headers,
            **(headers or {}),
            "content-type": "application/json",
            CORRELATION_HEADER: correlation_id or uuid.uuid4().hex,
        }
        if stream:
            sent["accept"] = "text/event-stream"
        tracing.inject(sent)
        return PreparedRequest(
            "POST",
            f"{self.base_url}/api/v1/query",
            sent,
            body.model_dump_json(by_alias=True, exclude_unset=True).encode(),
        )

    def health_request(self) -> PreparedRequest:
        """The `GET /health` request."""
        return PreparedRequest("GET", f"{self.base_url}/health", dict(self.headers))

    def parse_query(self, status: int, headers: Mapping[str, str], body: bytes) -> QueryResult:
        """A query's answer as a `QueryResult`; an error status raised as its `PRSMError`."""
        return self.result(_parse(ReceivedQueryResponse, status, headers, body), headers)

    @staticmethod
    def result(parsed: ReceivedQueryResponse, headers: Mapping[str, str]) -> QueryResult:
        """The `QueryResult` of a parsed answer, the correlation id falling back to the header."""
        return QueryResult(
            answer=parsed.data.answer,
            confidence=parsed.data.confidence,
            usage=parsed.data.usage,
            model=parsed.data.model,
            correlation_id=parsed.correlation_id or headers.get(CORRELATION_HEADER),
        )

    def parse_health(self, status: int, headers: Mapping[str, str], body: bytes) -> HealthStatus:
        """`/health`'s answer as a `HealthStatus`."""
        parsed = _parse(HealthResponse, status, headers, body)
        return HealthStatus(parsed.status, parsed.version, parsed.uptime_seconds)

    @staticmethod
    def raise_for_status(status: int, headers: Mapping[str, str], body: bytes) -> None:
        """Raise the `HTTPStatusError` subclass for an error status, from PRSM's error body."""
        if status < 400:
            return
        code: str | None = None
        message = body[:500].decode("utf-8", errors="replace").strip() or f"HTTP {status}"
        cid = headers.get(CORRELATION_HEADER)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            error = payload.get("error")
            if isinstance(error, dict):
                code = error.get("code")
                message = str(error.get("message", message))
            elif isinstance(error, str):  # the gateway's `{"error": "..."}` shape
                message = error
            cid = payload.get("correlationId") or cid
        raise error_for_status(
            status,
            message,
            code=code,
            correlation_id=cid,
            retry_after=parse_retry_after(headers.get("retry-after")),
            not_run=headers.get(NOT_RUN_HEADER) == "true",
            shared=headers.get(SHARED_OUTAGE_HEADER) == "true",
        )


class EventReader:
    """The chunks of a streamed answer from its bytes as they arrive (server-sent events:
    `delta`, then `done`, or `error`). An `error` event raises the error it carries; a stream
    that ends without `done` raises `TransportError` at `finish()`."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = headers
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._buffer = ""
        self.done = False

    def feed(self, data: bytes) -> Iterator[StreamChunk]:
        """The chunks `data` completes, in order (an error event raises after those before)."""
        self._buffer += self._decoder.decode(data).replace("\r\n", "\n")
        *events, self._buffer = self._buffer.split("\n\n")
        for event in events:
            chunk = self._chunk(event)
            if chunk is not None:
                yield chunk

    def finish(self) -> None:
        """The stream ended: `TransportError` if it never sent its final event."""
        if not self.done:
            raise TransportError("the stream ended before its final event")

    def _chunk(self, event: str) -> StreamChunk | None:
        name, data = "message", []
        for line in event.split("\n"):
            field_name, _, value = line.partition(":")
            if field_name == "event":
                name = value.strip()
            elif field_name == "data":
                data.append(value.removeprefix(" "))
        if not data:
            return None  # a comment or keep-alive
        try:
            payload = json.loads("\n".join(data))
        except ValueError:
            raise TransportError(f"a stream event is not JSON: {data[0][:200]!r}") from None
        if name == "delta":
            return StreamChunk(str(payload.get("text", "")))
        if name == "error":
            status = int(payload.get("status", 500))
            ClientCore.raise_for_status(status, self._headers, json.dumps(payload).encode())
        if name == "done":
            self.done = True
            try:
                parsed = ReceivedQueryResponse.model_validate(payload)
            except ValueError as exc:
                raise TransportError(f"the final event breaks the contract: {exc}") from None
            return StreamChunk("", ClientCore.result(parsed, self._headers))
        return None


def _parse(contract: type[C], status: int, headers: Mapping[str, str], body: bytes) -> C:
    """The body as `contract`, or the error the status and body stand for."""
    ClientCore.raise_for_status(status, headers, body)
    try:
        return contract.model_validate_json(body)
    except ValueError as exc:
        raise TransportError(f"the answer breaks the {contract.__name__} contract: {exc}") from None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a `Retry-After` value: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
