"""The OpenAI wire format on `prsm serve`: `POST /v1/chat/completions` and `POST /v1/completions`
(the model list and embeddings are in `prsm.server.routes`), so that any OpenAI client (the
official SDKs, LangChain, curl) works unchanged.

One query path, two wire formats: a request here becomes the same `Ask` as
`POST /api/v1/query` and goes through the same authentication, admission, priorities, events,
usage hashes, metrics and traces. Only the shapes differ: OpenAI's responses, its stream
chunks (`data: {...}` then `data: [DONE]`) and its errors (`{"error": {message, type, param,
code}}`, a validation failure as 400 `invalid_request_error`).
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic import ValidationError as PydanticValidationError
from starlette.responses import JSONResponse, Response

from prsm import errors
from prsm.contracts import MAX_TOKENS_LIMIT, Prompt
from prsm.edge.errors import OPENAI_PREFIX, as_http_error
from prsm.edge.sse import OPENAI_DONE, error_event, sse
from prsm.engines import Generation
from prsm.engines.base import Message, Options, fingerprint
from prsm.engines.constraints import TEXT, ResponseFormat
from prsm.engines.tools import NO_TOOLS, Tool, ToolCall, ToolUse, wire_calls
from prsm.server.auth import READ, Principal
from prsm.server.choices import MAX_CHOICES, ChoiceText
from prsm.server.errors import validation_error
from prsm.server.service import Ask
from prsm.server.streaming import AnswerStream, StreamFormat, event_schema

PREFIX = OPENAI_PREFIX.rstrip("/")
# -- requests ----------------------------------------------------------------------------------


class StreamOptions(BaseModel):
    """OpenAI's `stream_options`: whether the last chunk carries usage."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


MAX_STOPS = 4
"""OpenAI's limit on stop sequences."""

TokenLimit = Annotated[int | None, Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)]
_ID_PATTERN = "^[0-9]{1,9}$"
_BIAS = {"type": "number", "minimum": -100, "maximum": 100}
LogitBias = Annotated[
    dict[Annotated[str, Field(pattern=_ID_PATTERN)], Annotated[float, Field(ge=-100, le=100)]],
    Field(max_length=300),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": 300,
            "patternProperties": {_ID_PATTERN: _BIAS},
            "additionalProperties": False,
        }
    ),
]
"""OpenAI's `logit_bias`: token ids (as JSON object keys) to a bias."""


class _Request(BaseModel):
    """What both endpoints take. Unknown fields are refused, as OpenAI refuses them."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    max_tokens: TokenLimit = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    stop: str | Annotated[list[str], Field(max_length=MAX_STOPS)] | None = Field(
        default=None, description=f"Up to {MAX_STOPS} sequences that end the answer."
    )
    user: str | None = Field(default=None, min_length=1, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CHOICES,
        description=f"How many answers (up to {MAX_CHOICES}), decoded together.",
    )
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    logit_bias: LogitBias | None = Field(
        default=None, description="Token id to a bias added to its logit."
    )
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=16, description="Accepted; events and logs do not carry it."
    )
    store: Literal[False] | None = Field(default=None, description="Nothing is stored: false.")
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None

    def options(self) -> Options:
        """How to sample, with OpenAI's semantics: without a `seed`, each call samples anew;
        an explicit answer length that does not fit the window is refused, not cut."""
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        seed = secrets.randbelow(2**32) if self.seed is None else self.seed
        return Options(
            self.temperature,
            self.top_p,
            seed,
            tuple(stops),
            self.answer_format(),
            tools=self.tool_use(),
            logprobs=self.logprob_count(),
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            logit_bias=tuple((int(token), bias) for token, bias in (self.logit_bias or {}).items()),
            whole_answer=self.answer_tokens() is not None,
        )

    def answer_tokens(self) -> int | None:
        """The answer length asked for, if any."""
        return self.max_tokens

    def tool_use(self) -> ToolUse:
        """The tools offered: none unless the request offers them."""
        return NO_TOOLS

    def logprob_count(self) -> int | None:
        """How many alternatives each token's log probability comes with (None: not asked)."""
        return None

    def answer_format(self) -> ResponseFormat:
        """The shape the answer must have: free text unless the request says otherwise."""
        return TEXT

    @property
    def usage_in_stream(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class TextPart(BaseModel):
    """A text part of a message's content."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class UnreadPart(BaseModel):
    """A content part of a kind this model does not read — an image, audio, a file — parsed
    only so that its refusal names it (`refuse_unread_parts`), not pydantic's union."""

    model_config = ConfigDict(extra="allow")

    type: Literal["image_url", "input_audio", "file", "input_image", "input_file"]


def refuse_unread_parts(field: str, contents: Iterable[object]) -> None:
    """400 `unsupported_value` naming the first part of `contents` (each message's content,
    in order, under `field`) this model cannot read, as OpenAI refuses what a model does not
    support."""
    for index, content in enumerate(contents):
        for number, part in enumerate(content if isinstance(content, list) else ()):
            if isinstance(part, UnreadPart):
                raise errors.ValidationError(
                    f"Unsupported content: '{part.type}' parts are not supported with this "
                    "model; it reads text parts only.",
                    code="unsupported_value",
                    param=f"{field}[{index}].content[{number}]",
                )


class FunctionCall(BaseModel):
    """A function's name and its arguments as JSON text."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(max_length=100_000)


class WireToolCall(BaseModel):
    """An assistant message's call of a tool."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    """One message of a chat: its role and its content (text, or text parts); an assistant's
    tool calls; a tool's result."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Annotated[TextPart | UnreadPart, Field(discriminator="type")]] | None = None
    name: str | None = None
    tool_calls: list[WireToolCall] | None = Field(default=None, max_length=128)
    tool_call_id: str | None = Field(default=None, max_length=256)

    def message(self) -> Message:
        """The message as the engine takes it."""
        text = self.content if isinstance(self.content, str) else "".join(
            part.text for part in self.content or () if isinstance(part, TextPart)
        )  # fmt: skip
        calls = tuple(
            ToolCall(c.id, c.function.name, c.function.arguments) for c in self.tool_calls or ()
        )
        role = "system" if self.role == "developer" else self.role
        return Message(role, text, tool_calls=calls, tool_call_id=self.tool_call_id or "")


class JsonSchema(BaseModel):
    """OpenAI's `response_format.json_schema`: a named JSON Schema the answer must follow."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = Field(
        default=None, description="Accepted; the schema is enforced while decoding either way."
    )


class TextFormat(BaseModel):
    """`response_format: {"type": "text"}`: free text (the default)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    """`response_format: {"type": "json_object"}`: any JSON object."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["json_object"]


class JsonSchemaFormat(BaseModel):
    """`response_format: {"type": "json_schema", "json_schema": {...}}`."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["json_schema"]
    json_schema: JsonSchema


class FunctionSpec(BaseModel):
    """A function the model may call: name, description, JSON Schema of its parameters."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = Field(default=None, max_length=10_000)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(BaseModel):
    """OpenAI's `tools[]` entry."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(BaseModel):
    """The function `tool_choice` names."""

    model_config = ConfigDict(extra="forbid")
    name: str


class NamedToolChoice(BaseModel):
    """`tool_choice: {"type": "function", "function": {"name"}}`."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: NamedFunction


AnswerFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class ChatRequest(_Request):
    """OpenAI's chat completions request."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_completion_tokens: TokenLimit = None
    response_format: AnswerFormat | None = Field(
        default=None, description="Structured output, enforced while decoding."
    )
    logprobs: bool | None = Field(default=None, description="Each answer token's log probability.")
    top_logprobs: int | None = Field(
        default=None, ge=0, le=20, description="With `logprobs`: the likeliest tokens at each."
    )
    tools: list[FunctionTool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None

    def logprob_count(self) -> int | None:
        """`logprobs` with `top_logprobs` alternatives (OpenAI refuses the count alone)."""
        if self.top_logprobs is not None and not self.logprobs:
            raise errors.ValidationError("top_logprobs needs logprobs: true", param="top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None

    def tool_use(self) -> ToolUse:
        """The tools offered and how they may be used (`auto` when tools are given)."""
        tools = tuple(
            Tool(t.function.name, t.function.description or "", t.function.parameters or {})
            for t in self.tools or ()
        )
        choice = self.tool_choice or "auto"
        named = choice.function.name if isinstance(choice, NamedToolChoice) else choice
        return ToolUse(tools, named, self.parallel_tool_calls is not False)

    def answer_tokens(self) -> int | None:
        """The answer length asked for, if any."""
        return self.max_completion_tokens or self.max_tokens

    def answer_format(self) -> ResponseFormat:
        """`response_format` as the engine takes it."""
        wanted = self.response_format
        if isinstance(wanted, JsonSchemaFormat):
            spec = wanted.json_schema
            return ResponseFormat("json_schema", spec.schema_, spec.name)
        return ResponseFormat("json_object") if isinstance(wanted, JsonObjectFormat) else TEXT


class CompletionRequest(_Request):
    """OpenAI's (legacy) completions request."""

    prompt: Prompt | Annotated[list[Prompt], Field(min_length=1, max_length=1)] = Field(
        description="One prompt per request (a list holds exactly one)."
    )
    echo: Literal[False] = Field(default=False, description="Not supported: false only.")
    logprobs: int | None = Field(
        default=None,
        ge=0,
        le=5,
        description="Each answer token's log probability, with this many likeliest tokens.",
    )

    def logprob_count(self) -> int | None:
        """How many alternatives each token's log probability comes with (None: not asked)."""
        return self.logprobs


def parse(model: type[BaseModel], raw: bytes) -> Any:
    """The request body as `model`; OpenAI's 400 `invalid_request_error` naming the field
    otherwise."""
    try:
        return model.model_validate_json(raw)
    except PydanticValidationError as exc:
        raise unsupported(exc.errors()) or validation_error(exc.errors()) from None


def unsupported(problems: list[Any]) -> errors.HTTPStatusError | None:
    """OpenAI's refusal of a parameter this model cannot honour (`reasoning_effort`, …), for a
    top-level field PRSM does not know."""
    extra = [p for p in problems if p.get("type") == "extra_forbidden" and len(p["loc"]) == 1]
    if not extra:
        return None
    name = str(extra[0]["loc"][0])
    message = f"Unsupported parameter: '{name}' is not supported with this model."
    return errors.ValidationError(message, code="unsupported_parameter", param=name)


def chat_ask(body: ChatRequest, principal: Principal) -> Ask:
    """The query a chat completions request asks (its schemas are compiled, or refused, by
    the service once the cheap checks passed)."""
    refuse_unread_parts("messages", (message.content for message in body.messages))
    options = body.options()
    return Ask(
        prompt=tuple(m.message() for m in body.messages),
        user_id=body.user or principal.key_id,
        max_tokens=body.answer_tokens(),
        model=body.model,
        options=options,
        operation="chat",
        schema_param="response_format.json_schema.schema",
        wire=body.model_dump(mode="json", exclude_none=True, by_alias=True),
        choices=body.n or 1,
        seeded=body.seed is not None,
    )


def completion_ask(body: CompletionRequest, principal: Principal) -> Ask:
    """The query a completions request asks (one chat turn: the served model is an instruct
    model)."""
    return Ask(
        prompt=body.prompt if isinstance(body.prompt, str) else body.prompt[0],
        user_id=body.user or principal.key_id,
        max_tokens=body.max_tokens or 16,  # OpenAI's default for completions
        model=body.model,
        options=body.options(),
        operation="text_completion",
        wire=body.model_dump(mode="json", exclude_none=True),
        choices=body.n or 1,
        seeded=body.seed is not None,
    )


# -- responses ---------------------------------------------------------------------------------


def usage(generation: Generation) -> dict[str, Any]:
    """OpenAI's `usage` object for a generation."""
    return {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.total_tokens,
        "prompt_tokens_details": {"cached_tokens": generation.cached_tokens},
    }


def _finish(generation: Generation) -> str:
    if generation.finish_reason in ("length", "tool_calls"):
        return generation.finish_reason
    return "stop"


def chat_logprobs(generation: Generation) -> dict[str, Any] | None:
    """OpenAI's chat `logprobs`: each token, its log probability and bytes, its alternatives."""
    if generation.logprobs is None:
        return None

    def spelled(token: bytes, logprob: float) -> dict[str, Any]:
        return {"token": _readable(token), "logprob": logprob, "bytes": list(token)}

    content = [
        spelled(t.token, t.logprob) | {"top_logprobs": [spelled(b, lp) for b, lp in t.top]}
        for t in generation.logprobs
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(generation: Generation) -> dict[str, Any] | None:
    """The completions format's `logprobs`: the tokens, their log probabilities, the likeliest
    tokens at each, and where each token starts in the text."""
    if generation.logprobs is None:
        return None
    scored = generation.logprobs
    tokens = [_readable(t.token) for t in scored]
    starts = list(itertools.accumulate((len(token) for token in tokens[:-1]), initial=0))
    return {
        "tokens": tokens,
        "token_logprobs": [t.logprob for t in scored],
        "top_logprobs": [{_readable(b): lp for b, lp in t.top} for t in scored],
        "text_offset": starts if tokens else [],
    }


def _readable(token: bytes) -> str:
    return token.decode("utf-8", errors="replace")


def chat_completion(generation: Generation, cid: str) -> dict[str, Any]:
    """A generation as OpenAI's `chat.completion`: a choice per answer."""
    choices = [_chat_choice(answer, index) for index, answer in enumerate(generation.answers)]
    return _envelope("chat.completion", "chatcmpl", generation.model, cid) | {
        "choices": choices,
        "usage": usage(generation),
        "prsm": {"confidence": generation.confidence, "correlationId": cid},
    }


def _chat_choice(answer: Generation, index: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text}
    if answer.tool_calls:
        message |= {"content": None, "tool_calls": wire_calls(answer.tool_calls)}
    return {"index": index, "message": message, "finish_reason": _finish(answer),
            "logprobs": chat_logprobs(answer)}  # fmt: skip


def text_completion(generation: Generation, cid: str) -> dict[str, Any]:
    """A generation as OpenAI's `text_completion`: a choice per answer."""
    choices = [
        {
            "index": index,
            "text": answer.text,
            "finish_reason": _finish(answer),
            "logprobs": completion_logprobs(answer),
        }
        for index, answer in enumerate(generation.answers)
    ]
    return _envelope("text_completion", "cmpl", generation.model, cid) | {
        "choices": choices,
        "usage": usage(generation),
        "prsm": {"confidence": generation.confidence, "correlationId": cid},
    }


def _envelope(kind: str, prefix: str, model: str, cid: str) -> dict[str, Any]:
    return {"id": f"{prefix}-{cid}", "object": kind, "created": int(time.time()), "model": model,
            "system_fingerprint": fingerprint(model)}  # fmt: skip


@dataclass(frozen=True)
class _Piece:
    """What one stream chunk's choice says: some text, a finish reason or tool calls."""

    index: int = 0
    text: str | None = None
    finish: str | None = None
    first: bool = False
    """The answer's first chunk (a chat's names the role)."""
    calls: tuple[ToolCall, ...] = ()


def _stream_choice(chat: bool, piece: _Piece) -> dict[str, Any]:
    """A stream chunk's choice: a chat delta or a completion's text."""
    said = {"index": piece.index, "finish_reason": piece.finish, "logprobs": None}
    if not chat:
        return said | {"text": piece.text or ""}
    return said | {"delta": _delta(piece.text, piece.first, piece.calls)}


def _ending(
    chat: bool, generation: Generation, started: set[int], with_usage: bool
) -> list[tuple[dict[str, Any] | None, dict[str, Any]]]:
    """A stream's last chunks (choice, extra fields): for each answer its tool calls in one
    chunk and its finish reason (with its logprobs); then the usage when asked. `started`:
    the answers whose first chunk was sent."""
    ending: list[tuple[dict[str, Any] | None, dict[str, Any]]] = []
    for index, answer in enumerate(generation.answers):
        if chat and answer.tool_calls:
            calls = _Piece(index, first=index not in started, calls=answer.tool_calls)
            ending.append((_stream_choice(chat, calls), {}))
        last = _stream_choice(chat, _Piece(index, finish=_finish(answer)))
        last["logprobs"] = chat_logprobs(answer) if chat else completion_logprobs(answer)
        ending.append((last, {}))
    if with_usage:
        ending.append((None, {"usage": usage(generation)}))
    return ending


def _delta(text: str | None, first: bool, calls: tuple[ToolCall, ...]) -> dict[str, Any]:
    """A chat stream chunk's delta: the role first, then text or tool calls."""
    delta: dict[str, Any] = {"role": "assistant"} if first else {}
    if text is not None:
        delta["content"] = text
    if calls:
        delta["tool_calls"] = wire_calls(calls, indexed=True)
    return delta


def chunks(chat: bool, model: str, cid: str, with_usage: bool) -> StreamFormat:
    """OpenAI's stream: a chunk per delta (the first of each answer names the role), a last
    chunk per answer with its finish reason, the usage chunk when asked, `[DONE]`; an error as
    `{error}`. Chunks name the model that answers (`model` unless a fallback took over)."""
    kind, prefix = ("chat.completion.chunk", "chatcmpl") if chat else ("text_completion", "cmpl")

    async def events(stream: AnswerStream) -> AsyncIterator[bytes]:
        answering = stream.model or model

        def chunk(choice: dict[str, Any] | None, **extra: Any) -> bytes:
            body = _envelope(kind, prefix, answering, cid) | {"choices": [choice] if choice else []}
            return sse(body | extra)

        started: set[int] = set()
        try:
            async for piece in stream.pieces():
                if isinstance(piece, str):
                    index = piece.choice if isinstance(piece, ChoiceText) else 0
                    said = _Piece(index, piece, first=index not in started)
                    yield chunk(_stream_choice(chat, said))
                    started.add(index)
                    continue
                for part, extra in _ending(chat, piece, started, with_usage):
                    yield chunk(part, **extra)
        except Exception as exc:
            yield error_event(as_http_error(exc), cid, OPENAI_PREFIX)
            return
        yield OPENAI_DONE

    return events


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


_CHAT_BODY, _CHAT_DEFS = request_body(ChatRequest)
_COMPLETION_BODY, _COMPLETION_DEFS = request_body(CompletionRequest)
SCHEMA_DEFINITIONS = _CHAT_DEFS | _COMPLETION_DEFS
"""Models the request bodies refer to, for the OpenAPI components."""
_ANSWERED: dict[int | str, dict[str, Any]] = {
    200: {
        "model": Completion,
        "description": "The completion; with `stream: true`, OpenAI's stream of chunks",
        "content": {"text/event-stream": {"schema": event_schema("message")}},
    }
}
_FAILED: dict[int | str, dict[str, Any]] = {
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
    return {status: _FAILED[status] for status in statuses}


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

    def served_model(self, name: str | None = None) -> str:
        """The id of the generative model a request naming `name` reaches."""


def openai_routes(path: QueryPath) -> APIRouter:
    """The router with OpenAI's chat completions and completions."""
    router = APIRouter(prefix=PREFIX, tags=["openai"])

    async def run(
        request: Request, principal: Principal, ask: Ask, body: _Request, chat: bool
    ) -> Response:
        cid = request.scope["state"]["correlation_id"]
        if body.stream:
            events = chunks(chat, path.served_model(ask.model), cid, body.usage_in_stream)
            return await path.stream(ask, principal, request, events)
        answered = await path.answer(ask, principal, request)
        if isinstance(answered, Response):
            return answered
        shape = chat_completion if chat else text_completion
        return JSONResponse(shape(answered, cid))

    @router.post(
        "/chat/completions",
        summary="OpenAI chat completions",
        responses=_ANSWERED | _FAILED,
        openapi_extra={"requestBody": _CHAT_BODY},
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
        responses=_ANSWERED | _FAILED,
        openapi_extra={"requestBody": _COMPLETION_BODY},
    )
    async def completions(request: Request) -> Response:
        """OpenAI's (legacy) completions: one prompt in, its completion out. The served model
        is an instruct model: the prompt is answered as one chat turn."""
        principal = await path.authorized(request, READ)
        body = parse(CompletionRequest, await request.body())
        return await run(request, principal, completion_ask(body, principal), body, chat=False)

    return router
