"""The engine protocol: generate text for a prompt or a conversation, report tokens and a
confidence, and hand out the text as it comes."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Literal, Protocol, runtime_checkable

from prsm._version import __version__
from prsm.engines.constraints import TEXT, ResponseFormat
from prsm.engines.text import TextSink
from prsm.engines.tools import NO_TOOLS, ToolCall, ToolUse

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    """An assistant turn's calls of tools."""
    tool_call_id: str = ""
    """A tool turn: the call whose result it is."""


Prompt = str | Sequence[Message]
"""A question (the engine adds its configured system prompt) or a whole conversation."""


@dataclass(frozen=True, slots=True)
class Options:
    """How one generation samples; None: the engine's configured value."""

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    """The answer ends before the first of these it would contain."""
    response_format: ResponseFormat = TEXT
    """The shape the answer must have (structured output)."""
    frequency_penalty: float = 0.0
    """Lowers a token's logit by this much for each time it appeared (OpenAI's meaning)."""
    presence_penalty: float = 0.0
    """Lowers a token's logit by this much once it has appeared."""
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token id, bias) pairs added to the logits (OpenAI's `logit_bias`)."""
    tools: ToolUse = NO_TOOLS
    """Functions the model may call, and how (tool calls)."""
    logprobs: int | None = None
    """Report each answer token's log probability with this many alternatives (None: no)."""
    whole_answer: bool = False
    """Refuse (PromptTooLongError) a prompt that leaves less room than `max_tokens`, as
    OpenAI does, instead of cutting the answer at the window's end."""


DEFAULT_OPTIONS = Options()


def conversation(prompt: Prompt, system_prompt: str) -> list[Message]:
    """The messages for `prompt`: a question gets the system prompt before it; a conversation
    is taken as it is."""
    if not isinstance(prompt, str):
        return list(prompt)
    messages = [Message("user", prompt)]
    if system_prompt:
        messages.insert(0, Message("system", system_prompt))
    return messages


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One answer token's bytes and log probability, and the likeliest tokens at its place."""

    token: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Generation:
    """What an engine produced for one prompt."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    confidence: float
    """Geometric mean of the generated tokens' probabilities, in [0, 1]."""
    model: str
    finish_reason: str = "stop"
    """`stop` (end of answer), `length` (hit max_tokens) or `cancelled`."""
    cached_tokens: int = 0
    """Prompt tokens taken from the engine's prompt cache instead of being computed."""
    first_token_at: float | None = None
    """When the first token was generated (`time.perf_counter()`), if one was."""
    tool_calls: tuple[ToolCall, ...] = ()
    """The tools the model called (then `text` is empty and `finish_reason` `tool_calls`)."""
    logprobs: tuple[TokenLogprob, ...] | None = None
    """When asked for: each answer token with its log probability and the top alternatives."""
    choices: tuple[Generation, ...] = ()
    """With several answers asked for (OpenAI's `n`): each of them, this one's fields being
    the first's but for the completion tokens and confidence, which are all of theirs."""

    @property
    def answers(self) -> tuple[Generation, ...]:
        """Every answer: the choices, or this one alone."""
        return self.choices or (self,)

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


@runtime_checkable
class Engine(Protocol):
    """Generates answers. Implementations live beside this module.

    `generate` must not block the event loop, and must stop promptly when its task is
    cancelled (the server cancels it on timeout or when the caller leaves). It passes the
    answer's text to `on_text` as it is generated (through `prsm.engines.text.StreamedText`,
    so that the deltas joined are the final text). Engines raise `prsm.errors.EngineError`
    subclasses for what the caller can act on.
    """

    @property
    def model(self) -> str:
        """The name of the served model, reported in every answer."""
        ...

    async def generate(
        self,
        prompt: Prompt,
        *,
        max_tokens: int,
        options: Options = DEFAULT_OPTIONS,
        on_text: TextSink | None = None,
    ) -> Generation:
        """Answer `prompt` with at most `max_tokens` generated tokens."""
        ...

    async def count_tokens(self, prompt: Prompt, options: Options = DEFAULT_OPTIONS) -> int:
        """How many tokens `prompt` is to the model, as `generate` would reckon them (budgets
        reserve them before it runs)."""
        ...

    async def aclose(self) -> None:
        """Release the model and any connections."""
        ...


@functools.cache
def fingerprint(model: str) -> str:
    """What answers: PRSM's and llama.cpp's versions and the model with its weights (OpenAI's
    `system_fingerprint`, and part of every response cache key), so a change of any shows."""
    return f"prsm-{__version__}_llama-cpp-python-{version('llama-cpp-python')}_{model}"
