"""OpenAI's Responses API on `prsm serve` — the default of OpenAI's Agents SDK:
`POST /v1/responses` (streamed with its typed events), `GET` and `DELETE /v1/responses/{id}`.

The same query path as chat completions: the input items become the conversation the engine
renders (`instructions` as its system message, function calls and their outputs as the
assistant's tool calls and tool results), function tools and `text.format` the same grammars,
and the query goes through the same authentication, admission, events, metrics and traces.

A response is stored unless `store: false` (OpenAI's default is to store), in Redis for
`responses.ttl_seconds` under its creator's identity, so that `previous_response_id`
continues the conversation (its items before the new input; `instructions` are not carried
over, as on OpenAI). An instance without Redis stores nothing: `store: true` or a
`previous_response_id` there is a 400 saying so.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter
from starlette.responses import JSONResponse, Response

from prsm import errors
from prsm.contracts import Prompt
from prsm.engines.base import Message, Options
from prsm.engines.constraints import TEXT, ResponseFormat
from prsm.engines.tools import Tool, ToolCall, ToolUse
from prsm.server.auth import READ, WRITE, Principal
from prsm.server.openai.schema import failures, request_body
from prsm.server.openai.wire import PREFIX, TokenLimit, UnreadPart, parse, refuse_unread_parts
from prsm.server.response_store import ResponseStore, Stored
from prsm.server.responses_output import EVENT_NAMES, Draft, response_events
from prsm.server.routes.openai import QueryPath
from prsm.server.service import Ask
from prsm.server.streaming import event_schema

# -- input items -------------------------------------------------------------------------------


class InputText(BaseModel):
    """A text part of an input message."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["input_text"]
    text: str


class OutputText(BaseModel):
    """A text part of an earlier answer, sent back as input."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


Part = Annotated[InputText | OutputText | UnreadPart, Field(discriminator="type")]


class MessageItem(BaseModel):
    """A message: text, or text parts (an earlier answer's output message too)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | Annotated[list[Part], Field(max_length=256)]
    id: str | None = Field(default=None, max_length=256)
    status: Literal["in_progress", "completed", "incomplete"] | None = None

    def text(self) -> str:
        """The message's text, its parts joined."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if not isinstance(part, UnreadPart))


class FunctionCallItem(BaseModel):
    """An earlier answer's call of a function."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(max_length=100_000)
    id: str | None = Field(default=None, max_length=256)
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutputItem(BaseModel):
    """A function's result, for the call with `call_id`."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=256)
    output: str | list[InputText]
    id: str | None = Field(default=None, max_length=256)
    status: Literal["in_progress", "completed", "incomplete"] | None = None

    def text(self) -> str:
        """The result as text."""
        return self.output if isinstance(self.output, str) else "".join(
            part.text for part in self.output
        )  # fmt: skip


def _item_type(value: Any) -> str:
    """An item's type; a message may leave it out."""
    found = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return found or "message"


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(_item_type),
]
ITEMS: TypeAdapter[list[InputItem]] = TypeAdapter(list[InputItem])


def conversation(items: list[InputItem], instructions: str | None) -> tuple[Message, ...]:
    """The messages the engine renders for `items`: consecutive function calls become one
    assistant message's tool calls, their outputs tool results."""
    messages = [Message("system", instructions)] if instructions else []
    for item in items:
        if isinstance(item, FunctionCallItem):
            call = ToolCall(item.call_id, item.name, item.arguments)
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant" and last.tool_calls:
                messages[-1] = dataclasses.replace(last, tool_calls=(*last.tool_calls, call))
            else:
                messages.append(Message("assistant", "", tool_calls=(call,)))
        elif isinstance(item, FunctionCallOutputItem):
            messages.append(Message("tool", item.text(), tool_call_id=item.call_id))
        else:
            role = "system" if item.role == "developer" else item.role
            messages.append(Message(role, item.text()))
    return tuple(messages)


# -- the request -------------------------------------------------------------------------------


class ResponsesTextFormat(BaseModel):
    """`text.format`: `text` (the default), `json_object`, or a named `json_schema`."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = Field(
        default=None, description="Accepted; the schema is enforced while decoding either way."
    )

    def answer_format(self) -> ResponseFormat:
        """The format as the engine takes it."""
        if self.type == "json_schema":
            if self.schema_ is None or self.name is None:
                raise errors.ValidationError(
                    "text.format json_schema needs a name and a schema", param="text.format"
                )
            return ResponseFormat("json_schema", self.schema_, self.name)
        return ResponseFormat("json_object") if self.type == "json_object" else TEXT


class ResponsesText(BaseModel):
    """`text`: the answer's format."""

    model_config = ConfigDict(extra="forbid")
    format: ResponsesTextFormat | None = None
    verbosity: Literal["medium"] | None = Field(
        default=None, description="Only `medium`: this model has no other verbosity."
    )


class FunctionToolDef(BaseModel):
    """A function the model may call (the Responses API's flat shape)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = Field(default=None, max_length=10_000)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionChoice(BaseModel):
    """`tool_choice: {"type": "function", "name"}`."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    name: str


class ResponsesStreamOptions(BaseModel):
    """`stream_options` (accepted; events are never padded)."""

    model_config = ConfigDict(extra="forbid")
    include_obfuscation: bool | None = None


LOGPROBS = "message.output_text.logprobs"


class ResponsesRequest(BaseModel):
    """OpenAI's `POST /v1/responses` body. Unknown fields are refused as OpenAI refuses an
    unsupported parameter."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    input: Prompt | Annotated[list[InputItem], Field(min_length=1, max_length=512)]
    instructions: str | None = Field(default=None, max_length=100_000)
    max_output_tokens: TokenLimit = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    text: ResponsesText | None = None
    tools: list[FunctionToolDef] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    stream: bool = False
    stream_options: ResponsesStreamOptions | None = None
    store: bool | None = Field(
        default=None, description="Keep the response for `previous_response_id` (default)."
    )
    previous_response_id: str | None = Field(default=None, min_length=1, max_length=256)
    include: list[Literal["message.output_text.logprobs"]] | None = Field(
        default=None, description=f"Only `{LOGPROBS}`."
    )
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    truncation: Literal["disabled"] | None = Field(
        default=None, description="Only `disabled`: an input over the window is refused."
    )
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=16
    )
    user: str | None = Field(default=None, min_length=1, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)
    prompt_cache_key: str | None = Field(
        default=None, max_length=256, description="Accepted; prompt caching is automatic."
    )
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None

    def items(self) -> list[InputItem]:
        """The input as items (a text is one user message)."""
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return list(self.input)

    def options(self) -> Options:
        """How to sample: without a seed (the Responses API has none), each call anew."""
        answer_format = self.text.format if self.text and self.text.format else None
        logprobs = LOGPROBS in (self.include or ())
        return Options(
            self.temperature,
            self.top_p,
            secrets.randbelow(2**32),
            response_format=answer_format.answer_format() if answer_format else TEXT,
            tools=self.tool_use(),
            logprobs=(self.top_logprobs or 0) if logprobs else None,
            whole_answer=self.max_output_tokens is not None,
        )

    def tool_use(self) -> ToolUse:
        """The tools offered and how they may be used (`auto` when tools are given)."""
        offered = self.tools or ()
        tools = tuple(Tool(t.name, t.description or "", t.parameters or {}) for t in offered)
        choice = self.tool_choice or "auto"
        named = choice.name if isinstance(choice, FunctionChoice) else choice
        return ToolUse(tools, named, self.parallel_tool_calls is not False)

    def echo(self) -> dict[str, Any]:
        """What a response repeats of its request."""
        choice = self.tool_choice or "auto"
        text_format = self.text.format if self.text and self.text.format else None
        shown = text_format.model_dump(exclude_none=True, by_alias=True) if text_format else None
        return {
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "metadata": self.metadata or {},
            "parallel_tool_calls": self.parallel_tool_calls is not False,
            "previous_response_id": self.previous_response_id,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "tool_choice": choice if isinstance(choice, str) else choice.model_dump(),
            "tools": [t.model_dump(exclude_none=True) for t in self.tools or ()],
            "text": {"format": shown or {"type": "text"}, "verbosity": "medium"},
            "top_logprobs": self.top_logprobs,
            "truncation": "disabled",
            "user": self.user,
            "store": self.store is not False,
            "service_tier": "default",
            "reasoning": {"effort": None, "summary": None},
        }


# -- routes ------------------------------------------------------------------------------------

_BODY, SCHEMA_DEFINITIONS = request_body(ResponsesRequest)
_ANSWERED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The response object; with `stream: true`, its typed events",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": event_schema(*EVENT_NAMES)},
        },
    }
}


def responses_routes(path: QueryPath, store: ResponseStore | None) -> APIRouter:
    """The router with `POST /v1/responses` and the stored responses' `GET` and `DELETE`."""
    router = APIRouter(prefix=PREFIX, tags=["openai"])

    @router.post(
        "/responses",
        summary="OpenAI Responses API",
        responses=_ANSWERED | failures(400, 401, 403, 404, 413, 503, 504),
        openapi_extra={"requestBody": _BODY},
    )
    async def create(request: Request) -> Response:
        """A response to `input` (text or items): a message, or function calls; streamed as
        typed events with `stream: true`; stored unless `store: false`."""
        principal = await path.authorized(request, READ)
        body: ResponsesRequest = parse(ResponsesRequest, await request.body())
        if store is not None and body.store is not False and WRITE not in principal.scopes:
            raise errors.PermissionDeniedError(
                "storing a response is a write: the token does not grant `write:ai` "
                "(send `store: false` to answer without storing)",
                code="insufficient_scope",
                param="store",
            )
        earlier = await _earlier(body, principal, store)
        ask = response_ask(body, principal, earlier)
        draft = Draft(body.echo())

        async def finish(response: dict[str, Any]) -> None:
            if store is not None and body.store is not False:
                items = [*earlier, *_dumped(body.items()), *response["output"]]
                await store.save(principal.identity, Stored(response, items))

        if body.stream:
            return await path.stream(ask, principal, request, response_events(draft, finish))
        answered = await path.answer(ask, principal, request)
        if isinstance(answered, Response):
            return answered
        response = draft.finished(answered)
        await finish(response)
        return JSONResponse(response)

    stored_routes(router, path, store)
    return router


def stored_routes(router: APIRouter, path: QueryPath, store: ResponseStore | None) -> None:
    """Add `GET` and `DELETE /v1/responses/{id}` (the caller's own stored responses)."""

    def kept() -> ResponseStore:
        if store is None:
            raise errors.NotFoundError(
                "no responses are stored here: this instance runs without Redis",
                param="response_id",
            )
        return store

    @router.get(
        "/responses/{response_id}",
        summary="A stored response",
        responses=failures(401, 403, 404, 503) | {200: {"description": "The response object"}},
    )
    async def retrieve(request: Request, response_id: str) -> Response:
        """The caller's stored response `response_id`."""
        principal = await path.authorized(request, READ)
        stored = await kept().load(principal.identity, response_id)
        return JSONResponse(stored.response)

    @router.delete(
        "/responses/{response_id}",
        summary="Delete a stored response",
        responses=failures(401, 403, 404, 503) | {200: {"description": "Deleted"}},
    )
    async def delete(request: Request, response_id: str) -> Response:
        """Forget the caller's stored response `response_id`."""
        principal = await path.authorized(request, WRITE)
        await kept().delete(principal.identity, response_id)
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})


async def _earlier(
    body: ResponsesRequest, principal: Principal, store: ResponseStore | None
) -> list[dict[str, Any]]:
    """The conversation items `previous_response_id` continues (none without it); a 400 when
    this instance cannot store what the request asks to keep."""
    if store is None and (body.store or body.previous_response_id):
        param = "previous_response_id" if body.previous_response_id else "store"
        raise errors.ValidationError(
            f"{param} needs stored responses, and this instance runs without Redis "
            "(set PRSM_REDIS_URL, or send store: false)",
            code="store_unavailable",
            param=param,
        )
    if store is None or body.previous_response_id is None:
        return []
    stored = await store.load(principal.identity, body.previous_response_id, "previous_response_id")
    return stored.items


def _dumped(items: list[InputItem]) -> list[dict[str, Any]]:
    return [item.model_dump(mode="json", exclude_none=True) for item in items]


def response_ask(
    body: ResponsesRequest, principal: Principal, earlier: list[dict[str, Any]]
) -> Ask:
    """The query a Responses request asks: the earlier items, then its input, under its
    instructions."""
    items = body.items()
    refuse_unread_parts("input", (getattr(item, "content", None) for item in items))
    options = body.options()
    items = ITEMS.validate_python(earlier) + items
    return Ask(
        prompt=conversation(items, body.instructions),
        user_id=body.user or principal.key_id,
        max_tokens=body.max_output_tokens,
        model=body.model,
        options=options,
        operation="response",
        schema_param="text.format.schema",
        wire=body.model_dump(mode="json", exclude_none=True, by_alias=True),
        seeded=False,  # the Responses API has no seed: each call samples anew
    )
