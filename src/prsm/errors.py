"""The one exception tree of PRSM.

    PRSMError
    ├── TransportError            the request did not get an HTTP answer
    │   ├── ConnectError          no connection could be made: the request was never sent
    │   ├── ConnectionLostError   the connection broke after the request was sent: it may
    │   │                         have been acted on
    │   ├── TimeoutError          no answer within the client's timeout
    │   ├── TLSError              the peer's certificate (or ours) was refused
    │   └── CircuitOpenError      a circuit breaker refused to send it
    ├── HTTPStatusError           an HTTP answer with an error status (.status_code, .code,
    │   │                         .correlation_id, .retry_after)
    │   ├── BadRequestError             400 (malformed JSON)
    │   ├── AuthenticationError         401
    │   ├── PermissionDeniedError       403
    │   ├── NotFoundError               404
    │   ├── ConflictError               409 (an idempotency key reused for another request)
    │   ├── PayloadTooLargeError        413
    │   ├── ValidationError             422 (the body breaks the contract)
    │   ├── RateLimitedError            429
    │   ├── ServiceUnavailableError     503 (saturated, not ready)
    │   ├── GatewayTimeoutError         504 (engine timeout)
    │   └── ServerError                 any other 5xx
    ├── EngineError               an engine could not generate
    │   ├── PromptTooLongError    prompt plus answer do not fit the context window
    │   ├── UnenforceableSchemaError  a response format the engine cannot hold answers to
    │   └── EngineUnavailableError  the engine's backend is unreachable or failed
    └── UsageError                the library was called wrongly
        └── ConfigError           a setting is unknown or invalid

The server raises `HTTPStatusError` subclasses and maps every error to the JSON body
`{"error": {"code", "message"}, "correlationId"}` in one place; the SDK parses that body back
into the same classes, so `except RateLimitedError` means the same thing on both sides.
"""

from __future__ import annotations

import builtins


class PRSMError(Exception):
    """Root of every error PRSM raises."""


# -- transport ---------------------------------------------------------------------------------


class TransportError(PRSMError):
    """The request did not get an HTTP answer."""


class ConnectError(TransportError):
    """No connection could be made to the server: the request was never sent."""


class ConnectionLostError(TransportError):
    """The connection broke after the request was sent (reset, closed before or during the
    answer): the server may have acted on it, so it is sent again only if that is harmless."""


class TimeoutError(TransportError, builtins.TimeoutError):
    """The server did not answer within the client's timeout."""


class TLSError(TransportError):
    """The TLS handshake failed: the server's certificate is not trusted or not for this host
    name, or the server refused ours. Not retried: trying again cannot change a certificate."""


class CircuitOpenError(TransportError):
    """A circuit breaker refused the call: the request was never sent.

    `name` is the breaker's, `retry_in` the seconds until it lets a trial call through."""

    def __init__(self, name: str, retry_in: float) -> None:
        super().__init__(f"circuit {name!r} is open; next trial in {retry_in:.1f}s")
        self.name = name
        self.retry_in = retry_in


# -- HTTP status -------------------------------------------------------------------------------


class HTTPStatusError(PRSMError):
    """An HTTP answer with an error status.

    `code` is the machine-readable error code of the JSON body (`"rate_limited"`, ...).
    `retry_after` is the server's `Retry-After` in seconds, when it sent one. `not_run` says
    the server refused the request before acting on it (a draining or saturated instance, an
    engine not ready; `X-PRSM-Not-Run` on the wire): sending it again cannot do it twice.
    `shared` says the cause is shared by every instance, Redis down say
    (`X-PRSM-Shared-Outage`): not this instance's failure.
    """

    status_code: int = 500
    default_code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        correlation_id: str | None = None,
        retry_after: float | None = None,
        param: str | None = None,
        not_run: bool = False,
        shared: bool = False,
    ) -> None:
        super().__init__(message)
        self.not_run = not_run
        self.shared = shared
        self.message = message
        self.param = param
        """The request field at fault, when one is (OpenAI's `param`)."""
        if status_code is not None:
            self.status_code = status_code
        self.code = code or self.default_code
        self.correlation_id = correlation_id
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code}, code={self.code!r}, "
            f"message={self.message!r}, correlation_id={self.correlation_id!r})"
        )


class BadRequestError(HTTPStatusError):
    """400: the body is not JSON (or otherwise malformed)."""

    status_code = 400
    default_code = "bad_request"


class AuthenticationError(HTTPStatusError):
    """401: no credentials, or ones that are not valid."""

    status_code = 401
    default_code = "unauthorized"


class PermissionDeniedError(HTTPStatusError):
    """403: valid credentials without the right (a scope, an allowed certificate)."""

    status_code = 403
    default_code = "forbidden"


class NotFoundError(HTTPStatusError):
    """404: no such path, job, batch or model."""

    status_code = 404
    default_code = "not_found"


class ConflictError(HTTPStatusError):
    """409: an idempotency key reused for another request."""

    status_code = 409
    default_code = "conflict"


class PayloadTooLargeError(HTTPStatusError):
    """413: the body is larger than the limit."""

    status_code = 413
    default_code = "payload_too_large"


class ValidationError(HTTPStatusError):
    """422: the body breaks the contract; the message names each field."""

    status_code = 422
    default_code = "validation_error"


class RateLimitedError(HTTPStatusError):
    """429: a rate limit or budget is spent; `retry_after` says when to try again."""

    status_code = 429
    default_code = "rate_limited"


class ServiceUnavailableError(HTTPStatusError):
    """503: saturated, not ready, draining, or a dependency is down; see `retry_after`."""

    status_code = 503
    default_code = "unavailable"


class GatewayTimeoutError(HTTPStatusError):
    """504: no answer in time (the engine, or every upstream)."""

    status_code = 504
    default_code = "timeout"


class ServerError(HTTPStatusError):
    """Any other 5xx: a bug or an upstream failure; the correlation id finds it in the logs."""

    status_code = 500
    default_code = "internal_error"


_BY_STATUS: dict[int, type[HTTPStatusError]] = {
    cls.status_code: cls
    for cls in (
        BadRequestError,
        AuthenticationError,
        PermissionDeniedError,
        NotFoundError,
        ConflictError,
        PayloadTooLargeError,
        ValidationError,
        RateLimitedError,
        ServiceUnavailableError,
        GatewayTimeoutError,
    )
}


def error_for_status(
    status_code: int,
    message: str,
    *,
    code: str | None = None,
    correlation_id: str | None = None,
    retry_after: float | None = None,
    not_run: bool = False,
    shared: bool = False,
) -> HTTPStatusError:
    """The `HTTPStatusError` subclass instance that stands for an HTTP error status."""
    cls = _BY_STATUS.get(status_code)
    if cls is None:
        cls = ServerError if status_code >= 500 else HTTPStatusError
    return cls(
        message,
        status_code=status_code,
        code=code,
        correlation_id=correlation_id,
        retry_after=retry_after,
        not_run=not_run,
        shared=shared,
    )


# -- engines -----------------------------------------------------------------------------------


class EngineError(PRSMError):
    """An engine could not generate an answer."""


class PromptTooLongError(EngineError):
    """The prompt and the requested answer length do not fit the model's context window.

    Built with `window`, its message is OpenAI's wording (which OpenAI's clients, LangChain
    and litellm recognise as a context overflow)."""

    def __init__(
        self, message: str = "", *, window: int = 0, prompt_tokens: int = 0, completion: int = 0
    ) -> None:
        if window and not message:
            asked = prompt_tokens + completion
            if completion:
                message = (
                    f"This model's maximum context length is {window} tokens. However, you "
                    f"requested {asked} tokens ({prompt_tokens} in the messages, {completion} in "
                    "the completion). Please reduce the length of the messages or completion."
                )
            else:
                message = (
                    f"This model's maximum context length is {window} tokens. However, your "
                    f"messages resulted in {prompt_tokens} tokens. Please reduce the length of "
                    "the messages."
                )
        super().__init__(message)


class UnenforceableSchemaError(EngineError):
    """A response format's JSON Schema uses what the engine cannot enforce while decoding."""


class EngineUnavailableError(EngineError):
    """The engine's backend is unreachable or answered with an error."""


# -- usage -------------------------------------------------------------------------------------


class UsageError(PRSMError, ValueError):
    """The library was called with arguments it cannot use."""


class ConfigError(UsageError):
    """A setting is unknown or has an invalid value."""
