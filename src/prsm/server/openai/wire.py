"""OpenAI's request bodies as PRSM reads them: chat completions and completions, their
messages, content parts, tools and response formats; a body that breaks them is OpenAI's 400
`invalid_request_error` naming the field, an option PRSM does not know 400
`unsupported_parameter`."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic import ValidationError as PydanticValidationError

from prsm import errors
from prsm.contracts import MAX_TOKENS_LIMIT, Prompt
from prsm.edge.errors import OPENAI_PREFIX
from prsm.engines.base import Message, Options
from prsm.engines.constraints import TEXT, ResponseFormat
from prsm.engines.tools import NO_TOOLS, Tool, ToolCall, ToolUse
from prsm.server.choices import MAX_CHOICES
from prsm.server.errors import validation_error

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


class OpenAIRequest(BaseModel):
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
        """Whether the stream's last chunk carries usage (`stream_options.include_usage`)."""
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


class ChatRequest(OpenAIRequest):
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


class CompletionRequest(OpenAIRequest):
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
