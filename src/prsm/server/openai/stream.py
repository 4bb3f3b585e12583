"""OpenAI's stream of chunks for an answer: `data: {...}` per delta, the finish and usage
chunks, `data: [DONE]`; an error after the first text as OpenAI's `{error}`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from prsm.edge.errors import OPENAI_PREFIX, as_http_error
from prsm.edge.sse import OPENAI_DONE, error_event, sse
from prsm.engines import Generation
from prsm.engines.tools import ToolCall, wire_calls
from prsm.server.choices import ChoiceText
from prsm.server.openai.translate import (
    chat_logprobs,
    completion_logprobs,
    envelope,
    finish_reason,
    usage,
)
from prsm.server.streaming import AnswerStream, StreamFormat


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
        last = _stream_choice(chat, _Piece(index, finish=finish_reason(answer)))
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


def chunks(chat: bool, cid: str, with_usage: bool) -> StreamFormat:
    """OpenAI's stream: a chunk per delta (the first of each answer names the role), a last
    chunk per answer with its finish reason, the usage chunk when asked, `[DONE]`; an error as
    `{error}`. Chunks name the model that answers (the stream's: a fallback's, when one took
    over before the first text)."""
    kind, prefix = ("chat.completion.chunk", "chatcmpl") if chat else ("text_completion", "cmpl")

    async def events(stream: AnswerStream) -> AsyncIterator[bytes]:
        answering = stream.model

        def chunk(choice: dict[str, Any] | None, **extra: Any) -> bytes:
            body = envelope(kind, prefix, answering, cid) | {"choices": [choice] if choice else []}
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
