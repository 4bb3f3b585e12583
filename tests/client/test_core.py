from __future__ import annotations

import json

import pytest
import tenacity

from prsm.client._core import ClientCore, RetryPolicy, parse_retry_after
from prsm.errors import (
    AuthenticationError,
    ConnectError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    TimeoutError,
    TransportError,
    UsageError,
    ValidationError,
    error_for_status,
)


def core(**kwargs: object) -> ClientCore:
    options: dict[str, object] = {
        "base_url": "http://h:1",
        "api_key": "k",
        "timeout": 5.0,
        "retries": 3,
        "headers": None,
    }
    return ClientCore(**(options | kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ConnectError("refused"), True),
        (error_for_status(502, "bad gateway"), True),
        (error_for_status(503, "busy"), True),
        (error_for_status(504, "slow"), True),
        (error_for_status(429, "slow down"), True),
        (error_for_status(429, "slow down", retry_after=3600), False),
        (error_for_status(400, "bad"), False),
        (error_for_status(401, "who"), False),
        (error_for_status(422, "invalid"), False),
        (error_for_status(500, "bug"), False),
        (TimeoutError("read timeout"), False),
        (UsageError("wrong call"), False),
    ],
)
def test_what_is_retried(error: Exception, retried: bool) -> None:
    """Connection errors, 502/503/504 and 429 are retried; other 4xx, 500 and timeouts not."""
    assert RetryPolicy().should_retry(error) is retried


def _state(error: Exception, attempt: int) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(error), error, None))
    return state


def test_wait_honours_retry_after() -> None:
    """A Retry-After from the server is the wait, whatever the attempt."""
    policy = RetryPolicy(backoff_initial=0.1, backoff_max=1)
    assert policy.wait(_state(error_for_status(503, "busy", retry_after=7), 1)) == 7


def test_wait_backs_off_exponentially_with_jitter_and_cap() -> None:
    """Without Retry-After, waits stay under initial * 2^n and under the cap."""
    policy = RetryPolicy(backoff_initial=0.1, backoff_max=0.5)
    for attempt in range(1, 8):
        wait = policy.wait(_state(ConnectError("x"), attempt))
        assert 0 <= wait <= min(0.5, 0.1 * 2**attempt)


def test_negative_retries_are_a_usage_error() -> None:
    """retries=-1 is refused when the client is made."""
    with pytest.raises(UsageError):
        RetryPolicy(retries=-1)


def test_parse_retry_after_seconds_and_dates() -> None:
    """Both Retry-After forms: delta seconds and an HTTP date."""
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_query_request_body_headers_and_correlation_id() -> None:
    """The body is camelCase JSON; auth and a correlation id are set."""
    request = core().query_request(
        "hi", user_id="u", context={"a": 1}, max_tokens=5, priority="high", correlation_id="c1"
    )
    assert request.url == "http://h:1/api/v1/query"
    assert json.loads(request.body or b"") == {
        "prompt": "hi",
        "userId": "u",
        "context": {"a": 1},
        "maxTokens": 5,
        "priority": "high",
    }
    assert request.headers["authorization"] == "Bearer k"
    assert request.headers["X-Correlation-ID"] == "c1"


def test_invalid_query_is_refused_before_sending() -> None:
    """An empty prompt is a UsageError naming the field; nothing is sent."""
    with pytest.raises(UsageError, match="prompt"):
        core().query_request(
            " ", user_id="u", context=None, max_tokens=None, priority=None, correlation_id=None
        )


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """PRSM_BASE_URL and PRSM_API_KEY are used when no arguments are given."""
    monkeypatch.setenv("PRSM_BASE_URL", "http://from-env:9/")
    monkeypatch.setenv("PRSM_API_KEY", "env-key")
    client = core(base_url=None, api_key=None)
    assert client.base_url == "http://from-env:9"
    assert client.headers["authorization"] == "Bearer env-key"


@pytest.mark.parametrize("bad", ["localhost:8000", "ftp://x"])
def test_base_url_needs_a_scheme(bad: str) -> None:
    """A base URL without http(s):// is a UsageError."""
    with pytest.raises(UsageError):
        core(base_url=bad)


def test_error_body_becomes_the_matching_exception() -> None:
    """The server's JSON error gives class, code, message, correlation id and Retry-After."""
    body = json.dumps(
        {"error": {"code": "saturated", "message": "busy"}, "correlationId": "c9"}
    ).encode()
    with pytest.raises(ServiceUnavailableError) as caught:
        core().raise_for_status(503, {"retry-after": "2"}, body)
    error = caught.value
    assert (error.code, error.message, error.correlation_id, error.retry_after) == (
        "saturated",
        "busy",
        "c9",
        2.0,
    )


@pytest.mark.parametrize(
    ("status", "body", "cls", "message"),
    [
        (401, b'{"error": {"code": "x", "message": "no key"}}', AuthenticationError, "no key"),
        (422, b'{"error": {"code": "x", "message": "bad"}}', ValidationError, "bad"),
        (429, b'{"error": "Too many PRSM requests"}', RateLimitedError, "Too many"),
        (502, b"<html>Bad Gateway</html>", ServerError, "Bad Gateway"),
    ],
)
def test_other_error_shapes(status: int, body: bytes, cls: type[Exception], message: str) -> None:
    """Gateway-style string errors and non-JSON bodies still map by status."""
    with pytest.raises(cls, match=message):
        core().raise_for_status(status, {}, body)


def test_the_specifications_minimal_answer_is_read() -> None:
    """The spec's contract guarantees only data.answer, data.confidence and data.usage.tokens:
    such an answer is read, the rest left None, the correlation id taken from the header."""
    body = b'{"data": {"answer": "Test response", "confidence": 0.95, "usage": {"tokens": 50}}}'
    result = core().parse_query(200, {"X-Correlation-ID": "cid-1"}, body)
    assert (result.answer, result.confidence, result.usage.tokens) == ("Test response", 0.95, 50)
    assert result.usage.prompt_tokens is None
    assert result.model is None
    assert result.correlation_id == "cid-1"


def test_unknown_fields_are_ignored() -> None:
    """A newer server's extra fields do not break an older client."""
    body = json.dumps(
        {
            "data": {"answer": "a", "confidence": 0.5, "usage": {"tokens": 3, "cached": 1},
                     "model": "m", "finishReason": "stop"},
            "correlationId": "c",
            "servedBy": "node-7",
        }
    ).encode()  # fmt: skip
    result = core().parse_query(200, {}, body)
    assert (result.model, result.correlation_id, result.usage.tokens) == ("m", "c", 3)


def test_an_answer_without_what_the_contract_guarantees_is_refused() -> None:
    """No answer text: the contract is broken, and the client says so."""
    body = b'{"data": {"confidence": 0.5, "usage": {"tokens": 3}}}'
    with pytest.raises(TransportError, match="contract"):
        core().parse_query(200, {}, body)


def test_only_what_the_caller_gave_is_sent() -> None:
    """The request carries prompt, userId and the fields the caller set: the server's
    defaults apply to the rest (the spec's contract expects exactly these keys)."""
    request = core().query_request(
        "Test query", user_id="u", context={}, max_tokens=None, priority=None,
        correlation_id=None,
    )  # fmt: skip
    assert request.body is not None
    assert json.loads(request.body) == {"prompt": "Test query", "userId": "u", "context": {}}
