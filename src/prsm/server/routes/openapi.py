"""What the routes' OpenAPI documentation shares: the error responses, bearer auth, and the
models the hand-written request bodies refer to."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from prsm.contracts import ErrorResponse, QueryRequest
from prsm.jobs.schema import JOB_REQUEST
from prsm.server.openai.schema import SCHEMA_DEFINITIONS as OPENAI_SCHEMA_DEFINITIONS
from prsm.server.responses_api import SCHEMA_DEFINITIONS as RESPONSES_SCHEMA_DEFINITIONS
from prsm.server.routes.embeddings import SCHEMA_DEFINITIONS as EMBEDDING_SCHEMA_DEFINITIONS

BEARER = "bearerAuth"
"""The security scheme's name."""

_REF = "#/components/schemas/{model}"
QUERY_SCHEMA = QueryRequest.model_json_schema(by_alias=True, ref_template=_REF)
JOB_SCHEMA = JOB_REQUEST.json_schema(by_alias=True, ref_template=_REF)


def _merged(*definitions: dict[str, Any]) -> dict[str, Any]:
    """Definitions from several models in one namespace; two different models of one name
    are a mistake caught at import, not a silently wrong description."""
    merged: dict[str, Any] = {}
    for group in definitions:
        for name, schema in group.items():
            if merged.setdefault(name, schema) != schema:
                raise ValueError(f"two request models are both named {name!r}")
    return merged


# Models the request bodies refer to; they join the OpenAPI components (see customise_openapi).
_BODY_DEFS = _merged(
    QUERY_SCHEMA.pop("$defs", {}),
    JOB_SCHEMA.pop("$defs", {}),
    OPENAI_SCHEMA_DEFINITIONS,
    RESPONSES_SCHEMA_DEFINITIONS,
    EMBEDDING_SCHEMA_DEFINITIONS,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Malformed JSON",
        401: "Missing or invalid API key or token",
        403: "The token lacks the scope (read:ai for queries, write:ai for jobs)",
        404: "No such job or batch",
        409: "The Idempotency-Key was used for another job",
        413: "Body larger than the configured limit",
        422: "The body breaks the contract (empty prompt, unknown field, prompt too long...)",
        503: "The engine is saturated or not ready, or the job queue's Redis is away; see "
        "Retry-After",
        504: "The engine did not answer in time",
    }.items()
}
"""The error answers of PRSM's own routes, for their `responses`."""


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """A required JSON request body with `schema`, for a route's `openapi_extra`."""
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_PRSM_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
_OPENAI_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_TRANSPORT = {
    "408": "The request's headers or body did not arrive in time (`http.header_timeout_seconds`, "
    "`http.body_timeout_seconds`); PRSM's error shape, then the connection closes",
    "431": "Request headers over `http.max_header_bytes` or `http.max_headers`; PRSM's error "
    "shape (the path may not be read yet), then the connection closes",
}
_GENERATING = {"/api/v1/query", "/v1/chat/completions", "/v1/completions", "/v1/responses"}
_GONE = (
    "The caller closed the connection before the answer was complete: the generation stops. "
    "Nobody reads this status; the access log and the metrics record it"
)


def _transport_answers(paths: dict[str, Any]) -> None:
    """Add the answers every operation can get from the HTTP layer (405 for another method on
    its path, 408, 431) and, for those that generate, 499."""
    for path, operations in paths.items():
        shape = _OPENAI_ERROR if path.startswith("/v1/") else _PRSM_ERROR
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            answers = operation.setdefault("responses", {})
            other = "Another method on this path; `Allow` lists the ones it takes"
            answers.setdefault("405", {"description": other, "content": shape})
            for status, description in _TRANSPORT.items():
                answers.setdefault(status, {"description": description, "content": _PRSM_ERROR})
            if path in _GENERATING:
                answers.setdefault("499", {"description": _GONE})


_AUTHENTICATED = ("/api/v1/", "/v1/")
"""Every operation under these needs a credential; the probes, metrics and docs do not."""
_WRITES = {("post", "/api/v1/jobs"), ("delete", "/v1/responses/{response_id}")}
"""Operations that need `write:ai` (storing a response does too, unless `store: false`)."""


def _security(paths: dict[str, Any]) -> None:
    """Mark every authenticated operation as needing the bearer credential, with the scope
    it needs as the requirement's role (OpenAPI 3.1), so generated clients send it."""
    for path, operations in paths.items():
        if not path.startswith(_AUTHENTICATED):
            continue
        for method, operation in operations.items():
            scope = "write:ai" if (method, path) in _WRITES else "read:ai"
            operation["security"] = [{BEARER: [scope]}]


def customise_openapi(app: FastAPI) -> None:
    """Bearer auth, the models the hand-written request bodies refer to, and the answers of
    the HTTP layer."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        _transport_answers(schema.get("paths", {}))
        _security(schema.get("paths", {}))
        components = schema.setdefault("components", {})
        for name, definition in _BODY_DEFS.items():
            components.setdefault("schemas", {}).setdefault(name, definition)
        schemes = components.setdefault("securitySchemes", {})
        schemes[BEARER] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key, or an OAuth2 access token (JWT) when the server is set "
            "up for one: `Authorization: Bearer <key or token>`. A token needs the scope each "
            "operation names (`read:ai`, `write:ai`); a key holds both.",
        }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
