"""What the Responses API answers: the `response` object with its output items and usage, and
the typed events of a streamed response, numbered in order.

A text answer is one `message` output item; tool calls are one `function_call` item each. A
streamed response sends `response.created` and `response.in_progress`, the message's text as
`response.output_text.delta` events while it comes (each item opened with `output_item.added`
and closed with `output_item.done`), then `response.completed` — or `response.incomplete` when
`max_output_tokens` cut it, or `error` and `response.failed` when the query failed after the
stream began. The official client's stream helper checks each item's identity across these.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prsm.edge.errors import as_http_error, openai_error
from prsm.edge.sse import RESPONSES_PATH, error_event, sse
from prsm.engines import Generation
from prsm.engines.tools import ToolCall
from prsm.server.openai.translate import chat_logprobs
from prsm.server.streaming import AnswerStream, StreamFormat

EVENT_NAMES = (
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.completed",
    "response.incomplete",
    "error",
    "response.failed",
)
"""Every event a streamed response may send."""


def new_id(prefix: str) -> str:
    """An id as OpenAI spells them: a prefix and random hex."""
    return f"{prefix}_{secrets.token_hex(24)}"


@dataclass(frozen=True)
class Draft:
    """A response before its answer: its ids, and the request's fields a response repeats."""

    echo: dict[str, Any]
    """instructions, tools, tool_choice, text, … as the response object shows them."""
    model: str = ""
    """The model that answers, once known (the stream's; a whole answer's generation's)."""
    id: str = field(default_factory=lambda: new_id("resp"))
    message_id: str = field(default_factory=lambda: new_id("msg"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    def snapshot(self, status: str, **fields: Any) -> dict[str, Any]:
        """The response object in `status`, with `fields` (output, usage, error…) set."""
        body = {"id": self.id, "object": "response", "created_at": self.created_at,
                "status": status, "completed_at": None, "error": None,
                "incomplete_details": None, "model": self.model, "output": [],
                "usage": None}  # fmt: skip
        return body | self.echo | fields

    def finished(self, generation: Generation) -> dict[str, Any]:
        """The whole response for `generation`: completed, or incomplete when cut by
        `max_output_tokens`."""
        cut = generation.finish_reason == "length"
        return self.snapshot(
            "incomplete" if cut else "completed",
            completed_at=int(time.time()),
            incomplete_details={"reason": "max_output_tokens"} if cut else None,
            output=self.output(generation),
            usage=usage(generation),
            model=generation.model,
        )

    def output(self, generation: Generation) -> list[dict[str, Any]]:
        """The output items: one per tool call, or the text as one message."""
        if generation.tool_calls:
            return [call_item(call) for call in generation.tool_calls]
        cut = generation.finish_reason == "length"
        return [self.message(output_text(generation), "incomplete" if cut else "completed")]

    def message(self, content: dict[str, Any] | None, status: str) -> dict[str, Any]:
        """The answer's message item, with its text part (none yet while it is opening)."""
        return {"id": self.message_id, "type": "message", "status": status,
                "role": "assistant", "content": [content] if content else []}  # fmt: skip


def output_text(generation: Generation | None, text: str = "") -> dict[str, Any]:
    """A message's `output_text` part (empty, while it streams)."""
    logprobs = chat_logprobs(generation) if generation is not None else None
    return {"type": "output_text", "text": generation.text if generation else text,
            "annotations": [], "logprobs": logprobs["content"] if logprobs else []}  # fmt: skip


def call_item(call: ToolCall, arguments: str | None = None) -> dict[str, Any]:
    """A `function_call` output item (its arguments empty while it is opening)."""
    done = arguments is None
    return {"id": "fc_" + call.id.removeprefix("call_"), "type": "function_call",
            "status": "completed" if done else "in_progress", "call_id": call.id,
            "name": call.name, "arguments": call.arguments if done else arguments}  # fmt: skip


def usage(generation: Generation) -> dict[str, Any]:
    """The Responses API's `usage`: of the input, the tokens read from the prompt cache and
    those computed (and kept in it for the next query that shares them)."""
    cached = generation.cached_tokens
    return {
        "input_tokens": generation.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": cached,
            "cache_write_tokens": generation.prompt_tokens - cached,
        },
        "output_tokens": generation.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": generation.total_tokens,
    }


class Numbered:
    """Server-sent events of the Responses API, each named by its type and numbered."""

    def __init__(self) -> None:
        self.sent = 0

    def __call__(self, kind: str, **fields: Any) -> bytes:
        """The next event: `kind` with `fields`."""
        return sse({"type": kind, "sequence_number": self.next_number()} | fields, kind)

    def next_number(self) -> int:
        """The next event's number, taken."""
        self.sent += 1
        return self.sent - 1


def response_events(
    draft: Draft, finish: Callable[[dict[str, Any]], Awaitable[None]]
) -> StreamFormat:
    """The typed events of `draft`'s answer, naming the model that answers (a fallback's, when
    one took over before the first text); `finish(response)` runs (to store it) before the
    last event."""

    async def events(stream: AnswerStream) -> AsyncIterator[bytes]:
        answering = dataclasses.replace(draft, model=stream.model or draft.model)
        event, opened, generation = Numbered(), False, None
        yield event("response.created", response=answering.snapshot("in_progress"))
        yield event("response.in_progress", response=answering.snapshot("in_progress"))
        try:
            async for piece in stream.pieces():
                if isinstance(piece, Generation):
                    generation = piece
                    continue
                if not opened:
                    for frame in opening(event, answering):
                        yield frame
                    opened = True
                yield event(
                    "response.output_text.delta", **_at(answering), delta=piece, logprobs=[]
                )
        except Exception as exc:
            for frame in failing(event, answering, exc):
                yield frame
            return
        assert generation is not None  # pieces() ends with the Generation or raises
        response = answering.finished(generation)
        for frame in closing(event, answering, response["output"], opened):
            yield frame
        await finish(response)
        ending = "incomplete" if response["status"] == "incomplete" else "completed"
        yield event(f"response.{ending}", response=response)

    return events


def _at(draft: Draft) -> dict[str, Any]:
    """Where the message's text is: its item, first output, first part."""
    return {"item_id": draft.message_id, "output_index": 0, "content_index": 0}


def opening(event: Numbered, draft: Draft) -> list[bytes]:
    """The events that open the answer's message and its text part."""
    return [
        event(
            "response.output_item.added", output_index=0, item=draft.message(None, "in_progress")
        ),
        event("response.content_part.added", **_at(draft), part=output_text(None)),
    ]


def closing(
    event: Numbered, draft: Draft, output: list[dict[str, Any]], opened: bool
) -> list[bytes]:
    """The events that finish each output item (opening those no text has opened yet)."""
    frames: list[bytes] = []
    for index, item in enumerate(output):
        if item["type"] == "function_call":
            frames += _call_events(event, index, item)
            continue
        if not opened:
            frames += opening(event, draft)
        part = item["content"][0]
        frames += [
            event(
                "response.output_text.done",
                **_at(draft),
                text=part["text"],
                logprobs=part["logprobs"],
            ),
            event("response.content_part.done", **_at(draft), part=part),
            event("response.output_item.done", output_index=index, item=item),
        ]
    return frames


def _call_events(event: Numbered, index: int, item: dict[str, Any]) -> list[bytes]:
    """A function call's item opened, its arguments in one delta, then done."""
    at = {"item_id": item["id"], "output_index": index}
    opened = item | {"status": "in_progress", "arguments": ""}
    return [
        event("response.output_item.added", output_index=index, item=opened),
        event("response.function_call_arguments.delta", **at, delta=item["arguments"]),
        event(
            "response.function_call_arguments.done",
            **at,
            name=item["name"],
            arguments=item["arguments"],
        ),
        event("response.output_item.done", output_index=index, item=item),
    ]


def failing(event: Numbered, draft: Draft, exc: Exception) -> list[bytes]:
    """A failure after the stream began: OpenAI's `error` event, then `response.failed`."""
    error = as_http_error(exc)
    detail = openai_error(error)[1]["error"]
    code = "server_error" if detail["type"] == "server_error" else detail["code"]
    failed = {"code": code, "message": detail["message"]}
    return [
        error_event(error, None, RESPONSES_PATH, event.next_number()),
        event("response.failed", response=draft.snapshot("failed", error=failed)),
    ]
