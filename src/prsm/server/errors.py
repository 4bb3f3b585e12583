"""The API's exception handlers: every error a route, the request validation or the router
raises becomes its JSON answer through `prsm.edge.errors`. Unexpected errors are logged with
their stack trace, which never reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from prsm import errors
from prsm.contracts import describe_problems, problem_field
from prsm.edge.errors import as_http_error, error_reply
from prsm.logs import correlation_id

log = logging.getLogger("prsm.server")
T = TypeVar("T")


def error_response(exc: BaseException, path: str) -> Response:
    """The JSON answer for `exc`, for the request to `path` being served now."""
    error = as_http_error(exc)
    if error.status_code >= 500 and not isinstance(exc, errors.PRSMError):
        log.error("unhandled error", exc_info=exc)
    status, headers, body = error_reply(error, correlation_id.get(), path)
    if isinstance(exc, StarletteHTTPException) and exc.headers:
        headers |= exc.headers  # e.g. `Allow` on 405
    return Response(body, status_code=status, headers=headers)


def validation_error(problems: Sequence[Any]) -> errors.HTTPStatusError:
    """400 for a body that is not JSON, else 422 naming every broken field."""
    if any(p.get("type") == "json_invalid" for p in problems):
        return errors.BadRequestError("request body is not valid JSON", code="invalid_json")
    param = problem_field(problems[0]) if problems else None
    return errors.ValidationError(describe_problems(problems), code="validation_error", param=param)


def parsed_body(validate: Callable[[bytes], T], raw: bytes) -> T:
    """`validate(raw)` (a pydantic `model_validate_json` or `TypeAdapter.validate_json`), its
    failure raised as `validation_error`'s 400 or 422."""
    try:
        return validate(raw)
    except PydanticValidationError as exc:
        raise validation_error(exc.errors()) from None


def install_error_handlers(app: FastAPI) -> None:
    """Route every error the app can raise through `error_response`."""

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc.errors()), request.url.path)

    async def on_error(request: Request, exc: Exception) -> Response:
        return error_response(exc, request.url.path)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_error)
    app.add_exception_handler(errors.PRSMError, on_error)
