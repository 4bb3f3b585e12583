from __future__ import annotations

import json

import pytest

from prsm.client._core import ClientCore, parse_retry_after
from prsm.errors import (
    AuthenticationError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    UsageError,
    ValidationError,
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
        core().query_request(" ", user_id="u", context=None, max_tokens=None, priority=None)


def test_the_options_reach_the_body_once_and_a_misspelt_one_is_refused() -> None:
    """`model` goes on the wire as any option does; an option no query has is a UsageError,
    not silently dropped."""
    request = core().query_request("hi", user_id="u", model="small", max_tokens=None)
    assert json.loads(request.body or b"") == {"prompt": "hi", "userId": "u", "model": "small"}
    with pytest.raises(UsageError, match="max_token"):
        core().query_request("hi", user_id="u", max_token=5)  # type: ignore[call-arg]


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
