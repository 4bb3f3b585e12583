"""The Responses API's events, read by the official client's own types: every event of a
text answer and of tool calls validates, and a failure after the stream began ends with an
`error` event and `response.failed`, nothing stored."""

from __future__ import annotations

import json
import typing
from typing import Any

from openai.types.responses import Response as OpenAIResponse
from openai.types.responses import ResponseStreamEvent

from prsm import errors
from prsm.engines import Generation
from prsm.engines.text import TextSink
from prsm.engines.tools import ToolCall
from prsm.server.responses_api import ResponsesRequest
from prsm.server.responses_output import Draft, response_events
from prsm.server.streaming import AnswerStream

EVENT_TYPES = {
    typing.get_args(kind.model_fields["type"].annotation)[0]: kind
    for kind in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}
"""OpenAI's stream event models by their `type`."""
REQUEST = ResponsesRequest.model_validate({"model": "m", "input": "hi"})


async def streamed(
    pieces: list[str], ending: Generation | Exception
) -> tuple[list[Any], list[dict[str, Any]]]:
    """The events for an answer of `pieces` that ends with `ending`, as the client's types,
    and what was handed on to be stored."""
    stored: list[dict[str, Any]] = []

    async def work(on_text: TextSink) -> Generation:
        for piece in pieces:
            on_text(piece)
        if isinstance(ending, Exception):
            raise ending
        return ending

    async def finish(response: dict[str, Any]) -> None:
        stored.append(response)

    stream = AnswerStream(work)
    await stream.started()
    frames = [
        frame async for frame in response_events(Draft(REQUEST.echo(), model="m"), finish)(stream)
    ]
    events = []
    for frame in frames:
        name, data = frame.decode().strip().split("\n")
        fields = json.loads(data.removeprefix("data: "))
        event = EVENT_TYPES[fields["type"]].model_validate(fields)
        assert name == f"event: {event.type}"
        events.append(event)
    return events, stored


def answer(text: str, **fields: Any) -> Generation:
    return Generation(text=text, prompt_tokens=9, completion_tokens=3, confidence=0.9,
                      model="m", **fields)  # fmt: skip


async def test_a_text_answer_s_events_validate_and_the_response_is_stored() -> None:
    """Each event is one of OpenAI's types, numbered in order; the final response validates
    as OpenAI's `Response` and is the one handed on to be stored."""
    events, stored = await streamed(["Par", "is."], answer("Paris."))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed"
    final = OpenAIResponse.model_validate(stored[0])
    assert final.output_text == "Paris."
    assert final.usage is not None
    assert final.usage.total_tokens == 12


async def test_tool_calls_stream_as_function_call_items() -> None:
    """Two calls: two items, each opened, its arguments, done, at its own output index."""
    calls = (ToolCall("call_1", "get_weather", '{"city":"Oslo"}'),
             ToolCall("call_2", "get_time", '{"city":"Oslo"}'))  # fmt: skip
    events, stored = await streamed([], answer("", tool_calls=calls, finish_reason="tool_calls"))
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [(e.output_index, e.arguments) for e in done] == [(0, calls[0].arguments),
                                                             (1, calls[1].arguments)]  # fmt: skip
    assert [item["call_id"] for item in stored[0]["output"]] == ["call_1", "call_2"]


async def test_a_failure_after_the_first_text_is_an_error_then_response_failed() -> None:
    """The engine timing out mid-answer: the text that came, OpenAI's `error` event, then
    `response.failed` carrying the error; nothing is stored."""
    timeout = errors.GatewayTimeoutError("the engine did not answer in time")
    events, stored = await streamed(["Par"], timeout)
    assert [e.type for e in events[-3:]] == ["response.output_text.delta", "error",
                                             "response.failed"]  # fmt: skip
    assert events[-2].message == "the engine did not answer in time"
    assert events[-1].response.error.code == "server_error"
    assert stored == []
