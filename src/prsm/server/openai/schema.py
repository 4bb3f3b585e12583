"""The OpenAPI description of the OpenAI routes: their request bodies, answers and errors
in OpenAI's shapes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from prsm.server.openai.wire import ChatRequest, CompletionRequest
from prsm.server.streaming import event_schema

# -- the OpenAPI description -------------------------------------------------------------------

_REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """OpenAI's error shape."""

    error: ErrorDetail


class Completion(BaseModel):
    """A chat completion or a text completion, as OpenAI shapes them."""

    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any]
    prsm: dict[str, Any]


def request_body(model: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI request body of `model`, and the definitions it refers to."""
    schema = model.model_json_schema(ref_template=_REF)
    definitions = schema.pop("$defs", {})
    return {"required": True, "content": {"application/json": {"schema": schema}}}, definitions


CHAT_BODY, _CHAT_DEFS = request_body(ChatRequest)
COMPLETION_BODY, _COMPLETION_DEFS = request_body(CompletionRequest)
SCHEMA_DEFINITIONS = _CHAT_DEFS | _COMPLETION_DEFS
"""Models the request bodies refer to, for the OpenAPI components."""
ANSWERED: dict[int | str, dict[str, Any]] = {
    200: {
        "model": Completion,
        "description": "The completion; with `stream: true`, OpenAI's stream of chunks",
        "content": {"text/event-stream": {"schema": event_schema("message")}},
    }
}
FAILED: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "The body breaks the contract (invalid_request_error)",
        401: "Missing or invalid API key or token (authentication_error)",
        403: "The token lacks the read:ai scope (permission_error)",
        404: "The model is not served here (model_not_found)",
        413: "Body larger than the configured limit",
        503: "The engine is saturated or not ready (server_error); see Retry-After",
        504: "The engine did not answer in time (server_error)",
    }.items()
}


def failures(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of these error answers, in OpenAI's shape."""
    return {status: FAILED[status] for status in statuses}
