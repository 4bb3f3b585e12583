"""The one place where errors become JSON answers: `{"error": {code, message}, correlationId}`
(PRSM's shape) or OpenAI's `{"error": {message, type, param, code}}` under `/v1/`.

Shared by the API (through `prsm.server.errors`' exception handlers) and the gateway, which
answers its own errors in the same shapes. No stack trace ever reaches a client.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from prsm import errors
from prsm.contracts import CORRELATION_HEADER, NOT_RUN_HEADER, SHARED_OUTAGE_HEADER

_STARLETTE_CODES = {404: "not_found", 405: "method_not_allowed"}


def as_http_error(exc: BaseException) -> errors.HTTPStatusError:
    """The HTTP error that stands for any exception."""
    if isinstance(exc, errors.HTTPStatusError):
        return exc
    if isinstance(exc, errors.PromptTooLongError):
        return errors.ValidationError(str(exc), code="prompt_too_long")
    if isinstance(exc, errors.UnenforceableSchemaError):
        return errors.ValidationError(str(exc), code="invalid_schema", param="response_format")
    if isinstance(exc, errors.EngineUnavailableError):
        return errors.ServiceUnavailableError(str(exc), code="engine_unavailable", retry_after=1)
    if isinstance(exc, StarletteHTTPException):
        return errors.error_for_status(
            exc.status_code, str(exc.detail), code=_STARLETTE_CODES.get(exc.status_code)
        )
    return errors.ServerError("internal error; the correlation id identifies it in the logs")


def error_payload(error: errors.HTTPStatusError, cid: str | None) -> dict[str, Any]:
    """PRSM's error object: `{"error": {code, message}, "correlationId"}`."""
    return {"error": {"code": error.code, "message": error.message}, "correlationId": cid}


def error_body(error: errors.HTTPStatusError, cid: str | None) -> bytes:
    """The JSON body of an error answer (PRSM's shape)."""
    return json.dumps(error_payload(error, cid)).encode()


def error_headers(error: errors.HTTPStatusError, cid: str | None) -> dict[str, str]:
    """The headers of an error answer: content type, correlation id, `Retry-After` when set."""
    headers = {"content-type": "application/json"}
    if cid:
        headers[CORRELATION_HEADER.lower()] = cid
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, round(error.retry_after)))
    if error.status_code == 401:
        headers["www-authenticate"] = 'Bearer realm="prsm"'
    if error.not_run:
        headers[NOT_RUN_HEADER.lower()] = "true"
    if error.shared:
        headers[SHARED_OUTAGE_HEADER.lower()] = "true"
    if error.code == "shutting_down":  # the client opens its next request elsewhere
        headers["connection"] = "close"
    return headers


OPENAI_PREFIX = "/v1/"
_TYPES = {401: "authentication_error", 403: "permission_error"}
_CODES = {
    "unknown_model": (404, "model_not_found"),
    "prompt_too_long": (400, "context_length_exceeded"),
}
_PARAMS = {"prompt_too_long": "messages"}


def openai_error(error: errors.HTTPStatusError) -> tuple[int, dict[str, Any]]:
    """The status and error object OpenAI's clients expect for `error`."""
    status, code = _CODES.get(error.code, (error.status_code, error.code))
    if status == 422:
        status = 400
    if status == 429:
        kind = "rate_limit_error"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = _TYPES.get(status, "invalid_request_error")
    param = error.param or _PARAMS.get(error.code)
    body = {"message": error.message, "type": kind, "param": param, "code": code}
    return status, {"error": body}


def error_reply(
    error: errors.HTTPStatusError, cid: str | None, path: str
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of `error` as the API at `path` answers: OpenAI's shape under
    /v1/ (the OpenAI-compatible endpoints), PRSM's everywhere else."""
    headers = error_headers(error, cid)
    if path.startswith(OPENAI_PREFIX):
        status, payload = openai_error(error)
        return status, headers, json.dumps(payload).encode()
    return error.status_code, headers, error_body(error, cid)


async def send_error_reply(
    send: Send,
    error: errors.HTTPStatusError,
    cid: str | None,
    path: str,
    extra: Iterable[tuple[bytes, bytes]] | None = None,
) -> int:
    """Answer `error` through ASGI `send` (outside the app's handlers, or from the gateway), in
    `path`'s shape; its status."""
    status, headers, body = error_reply(error, cid, path)
    headers["content-length"] = str(len(body))
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    raw.extend(extra or ())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
    return status
