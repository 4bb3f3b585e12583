"""The one place where errors become JSON answers: `{"error": {code, message}, correlationId}`.

Every path ends here: errors raised by routes and engines (exception handlers), request
validation, unknown routes, and anything unexpected (the correlation middleware's last resort).
No stack trace ever reaches a client; unexpected errors are logged with theirs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from prsm import errors
from prsm.contracts import CORRELATION_HEADER, describe_problems
from prsm.logs import correlation_id

log = logging.getLogger("prsm.server")

_STARLETTE_CODES = {404: "not_found", 405: "method_not_allowed"}


def as_http_error(exc: BaseException) -> errors.HTTPStatusError:
    """The HTTP error that stands for any exception."""
    if isinstance(exc, errors.HTTPStatusError):
        return exc
    if isinstance(exc, errors.PromptTooLongError):
        return errors.ValidationError(str(exc), code="prompt_too_long")
    if isinstance(exc, errors.EngineUnavailableError):
        return errors.ServiceUnavailableError(str(exc), code="engine_unavailable", retry_after=1)
    if isinstance(exc, StarletteHTTPException):
        return errors.error_for_status(
            exc.status_code, str(exc.detail), code=_STARLETTE_CODES.get(exc.status_code)
        )
    return errors.ServerError("internal error; the correlation id identifies it in the logs")


def error_body(error: errors.HTTPStatusError, cid: str | None) -> bytes:
    payload: dict[str, Any] = {"error": {"code": error.code, "message": error.message}}
    payload["correlationId"] = cid
    return json.dumps(payload).encode()


def error_headers(error: errors.HTTPStatusError, cid: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if cid:
        headers[CORRELATION_HEADER.lower()] = cid
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, round(error.retry_after)))
    if error.status_code == 401:
        headers["www-authenticate"] = 'Bearer realm="prsm"'
    return headers


def error_response(exc: BaseException) -> Response:
    """The JSON answer for `exc`, for the request being served now."""
    error = as_http_error(exc)
    cid = correlation_id.get()
    if error.status_code >= 500 and not isinstance(exc, errors.PRSMError):
        log.error("unhandled error", exc_info=exc)
    headers = error_headers(error, cid)
    if isinstance(exc, StarletteHTTPException) and exc.headers:
        headers |= exc.headers  # e.g. `Allow` on 405
    return Response(error_body(error, cid), status_code=error.status_code, headers=headers)


def validation_error(problems: Sequence[Any]) -> errors.HTTPStatusError:
    """400 for a body that is not JSON, else 422 naming every broken field."""
    if any(p.get("type") == "json_invalid" for p in problems):
        return errors.BadRequestError("request body is not valid JSON", code="invalid_json")
    return errors.ValidationError(describe_problems(problems), code="validation_error")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error the app can raise through `error_response`."""

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc.errors()))

    async def on_error(_: Request, exc: Exception) -> Response:
        return error_response(exc)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_error)
    app.add_exception_handler(errors.PRSMError, on_error)
