"""`POST /api/v1/query`: the specification's query, answered whole or streamed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from prsm.contracts import QueryRequest, QueryResponse
from prsm.server.auth import READ
from prsm.server.errors import parsed_body
from prsm.server.routes.openapi import ERRORS, QUERY_SCHEMA, json_body
from prsm.server.service import Ask, query_response
from prsm.server.services import ApiServices
from prsm.server.streaming import event_schema, query_events

_STREAMED = {
    "description": "The answer; with `stream: true`, server-sent events (`delta`, then `done` "
    "or `error`)",
    "content": {"text/event-stream": {"schema": event_schema("delta", "done", "error")}},
}


def query_routes(services: ApiServices) -> APIRouter:
    """The router with `POST /api/v1/query`."""
    router = APIRouter(prefix="/api/v1", tags=["queries"])

    @router.post(
        "/query",
        response_model=QueryResponse,
        responses=ERRORS | {200: _STREAMED},
        openapi_extra={"requestBody": json_body(QUERY_SCHEMA)},
    )
    async def query(request: Request) -> Response:
        """Answer a prompt with the served model.

        The body is read as JSON whatever its Content-Type, so `curl -d '{...}'` works.
        Authentication happens here rather than in a FastAPI dependency: dependencies cost
        a fifth of the throughput (bench/api_throughput.py).
        """
        principal = await services.authorized(request, READ)
        body = parsed_body(QueryRequest.model_validate_json, await request.body())
        cid = request.scope["state"]["correlation_id"]
        ask = Ask.from_query(body)
        if body.stream:
            return await services.stream(ask, principal, request, query_events(cid))
        answered = await services.answer(ask, principal, request)
        if isinstance(answered, Response):
            return answered
        answer = query_response(answered, cid)
        return Response(answer.model_dump_json(by_alias=True), media_type="application/json")

    return router
