"""`POST /v1/chat/completions` and `POST /v1/completions`: OpenAI's routes, on the query path
every wire format shares (`QueryPath`)."""

from __future__ import annotations

from typing import Protocol

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from prsm.engines import Generation
from prsm.server.auth import READ, Principal
from prsm.server.openai.schema import ANSWERED, CHAT_BODY, COMPLETION_BODY, FAILED
from prsm.server.openai.stream import chunks
from prsm.server.openai.translate import chat_ask, chat_completion, completion_ask, text_completion
from prsm.server.openai.wire import PREFIX, ChatRequest, CompletionRequest, OpenAIRequest, parse
from prsm.server.service import Ask
from prsm.server.streaming import StreamFormat

# -- routes ------------------------------------------------------------------------------------


class QueryPath(Protocol):
    """What the OpenAI routes share with `POST /api/v1/query` (`ApiServices` is one)."""

    async def authorized(self, request: Request, scope: str) -> Principal:
        """The caller, if it holds `scope`; 401 or 403 otherwise."""

    async def answer(
        self, ask: Ask, principal: Principal, request: Request
    ) -> Generation | Response:
        """The whole answer, or the response already sent when the caller left."""

    async def stream(
        self, ask: Ask, principal: Principal, request: Request, events: StreamFormat
    ) -> Response:
        """The answer as server-sent events in the format `events` gives."""


def openai_routes(path: QueryPath) -> APIRouter:
    """The router with OpenAI's chat completions and completions."""
    router = APIRouter(prefix=PREFIX, tags=["openai"])

    async def run(
        request: Request, principal: Principal, ask: Ask, body: OpenAIRequest, chat: bool
    ) -> Response:
        cid = request.scope["state"]["correlation_id"]
        if body.stream:
            events = chunks(chat, cid, body.usage_in_stream)
            return await path.stream(ask, principal, request, events)
        answered = await path.answer(ask, principal, request)
        if isinstance(answered, Response):
            return answered
        shape = chat_completion if chat else text_completion
        return JSONResponse(shape(answered, cid))

    @router.post(
        "/chat/completions",
        summary="OpenAI chat completions",
        responses=ANSWERED | FAILED,
        openapi_extra={"requestBody": CHAT_BODY},
    )
    async def chat_completions(request: Request) -> Response:
        """OpenAI's chat completions: messages in, the assistant's answer out (streamed with
        `stream: true`)."""
        principal = await path.authorized(request, READ)
        body = parse(ChatRequest, await request.body())
        return await run(request, principal, chat_ask(body, principal), body, chat=True)

    @router.post(
        "/completions",
        summary="OpenAI completions",
        responses=ANSWERED | FAILED,
        openapi_extra={"requestBody": COMPLETION_BODY},
    )
    async def completions(request: Request) -> Response:
        """OpenAI's (legacy) completions: one prompt in, its completion out. The served model
        is an instruct model: the prompt is answered as one chat turn."""
        principal = await path.authorized(request, READ)
        body = parse(CompletionRequest, await request.body())
        return await run(request, principal, completion_ask(body, principal), body, chat=False)

    return router
