"""Tool calls with the real model: calls held to each function's parameters, each
`tool_choice`, a call streamed as no text, and an agent loop (call, result, answer)."""

from __future__ import annotations

import json

import jsonschema
import pydantic
import pytest

from prsm.engines.base import Message, Options
from prsm.engines.constraints import TEXT
from prsm.engines.llama import LlamaEngine
from prsm.engines.tools import (
    CALL_MARK,
    TextUnlessCall,
    Tool,
    ToolCall,
    ToolUse,
    calls_text,
    parse_calls,
    tool_grammar,
)
from prsm.errors import UnenforceableSchemaError

WEATHER = Tool(
    "get_weather",
    "The current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
     "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city"]},
)  # fmt: skip
TIME = Tool(
    "get_time",
    "The current time in a city",
    {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
     "required": ["city"]},
)  # fmt: skip
QUESTION = "What is the weather in Paris?"


def offering(choice: str, parallel: bool = True) -> Options:
    return Options(tools=ToolUse((WEATHER, TIME), choice, parallel))


@pytest.mark.parametrize(("choice", "names"), [("required", {"get_weather", "get_time"}),
                                                ("get_time", {"get_time"})])  # fmt: skip
async def test_a_required_or_named_call_follows_its_function_s_parameters(
    engine: LlamaEngine, choice: str, names: set[str]
) -> None:
    """`required` gives calls of the tools offered, a named choice calls that function; the
    arguments validate against its parameters; the answer says `tool_calls`, no text."""
    answer = await engine.generate(QUESTION, max_tokens=80, options=offering(choice))
    assert answer.finish_reason == "tool_calls"
    assert answer.text == ""
    assert answer.tool_calls
    for call in answer.tool_calls:
        assert call.name in names
        assert call.id.startswith("call_")
        tool = WEATHER if call.name == "get_weather" else TIME
        jsonschema.validate(json.loads(call.arguments), dict(tool.parameters))


async def test_no_tools_means_text(engine: LlamaEngine) -> None:
    """`none` answers in text, as without tools."""
    answer = await engine.generate(QUESTION, max_tokens=16, options=offering("none"))
    plain = await engine.generate(QUESTION, max_tokens=16)
    assert answer.tool_calls == ()
    assert answer.text == plain.text


async def test_a_streamed_call_sends_no_text(engine: LlamaEngine) -> None:
    """Streamed, a call passes no text deltas on: it is all in `tool_calls`."""
    deltas: list[str] = []
    answer = await engine.generate(
        QUESTION, max_tokens=80, options=offering("required"), on_text=deltas.append
    )
    assert answer.tool_calls
    assert deltas == []


async def test_an_agent_loop_calls_then_answers_from_the_result(engine: LlamaEngine) -> None:
    """Call → the tool's result in the conversation → a text answer that uses it."""
    called = await engine.generate(QUESTION, max_tokens=80, options=offering("get_weather"))
    call = called.tool_calls[0]
    turns = [
        Message("user", QUESTION),
        Message("assistant", "", tool_calls=called.tool_calls),
        Message("tool", json.dumps({"sky": "sunny", "celsius": 18}), tool_call_id=call.id),
    ]
    answer = await engine.generate(turns, max_tokens=40, options=offering("auto"))
    assert answer.finish_reason in ("stop", "length")
    assert answer.tool_calls == ()
    assert "sunny" in answer.text.lower() or "18" in answer.text


async def test_tool_choice_none_after_a_call_answers_text_not_a_written_call(
    engine: LlamaEngine,
) -> None:
    """Tools offered with `none`, after an earlier call and its result: the answer is text,
    never the call markup the conversation shows the model (which it otherwise imitates)."""
    earlier = (ToolCall("call_1", "get_weather", '{"city": "Oslo"}'),)
    turns = [
        Message("system", "You answer questions about the weather."),
        Message("user", "What is the weather in Oslo?"),
        Message("assistant", "", tool_calls=earlier),
        Message("tool", "sunny and 18 degrees in Oslo", tool_call_id="call_1"),
    ]
    for temperature, seed in ((0.0, 0), (0.8, 0), (0.8, 1), (0.8, 3)):
        none = ToolUse((WEATHER,), "none")
        options = Options(temperature=temperature, seed=seed, tools=none)
        answer = await engine.generate(turns, max_tokens=30, options=options)
        assert answer.tool_calls == ()
        assert answer.text.strip()
        assert not answer.text.lstrip().startswith("<")


def test_parallel_calls_off_allows_one_call() -> None:
    """Without parallel calls the grammar allows exactly one; a named tool not offered and
    parameters that cannot be enforced are refused naming the part."""
    one = tool_grammar(ToolUse((WEATHER, TIME), "required", parallel=False), TEXT)
    assert '"maxItems":1' in one.replace(" ", "")
    with pytest.raises(UnenforceableSchemaError, match="get_date"):
        tool_grammar(ToolUse((WEATHER,), "get_date"), TEXT)
    broken = Tool("broken", "", {"type": "object", "not": {}})
    with pytest.raises(UnenforceableSchemaError, match="not"):
        tool_grammar(ToolUse((broken,), "required"), TEXT)


def test_calls_read_back_as_the_model_wrote_them() -> None:
    """A call's text parses back to the same name and arguments; text is no call."""
    calls = parse_calls(CALL_MARK + '[{"name": "get_time", "arguments": {"city": "Oslo"}}]')
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_time", {"city": "Oslo"})]
    assert parse_calls(calls_text(calls))[0].arguments == calls[0].arguments
    assert parse_calls("It is sunny.") == ()


def test_text_that_could_become_a_call_waits() -> None:
    """Deltas pass at once once the answer cannot be a call; a call passes nothing."""
    seen: list[str] = []
    text = TextUnlessCall(seen.append)
    for delta in ("<t", "x", "yz"):
        text(delta)
    assert seen == ["<tx", "yz"]
    quiet: list[str] = []
    call = TextUnlessCall(quiet.append)
    for delta in ("<tool", "_call>", "[{}]"):
        call(delta)
    call.finish()
    assert quiet == []


class Item(pydantic.BaseModel):
    """A line of an order."""

    sku: str = pydantic.Field(max_length=12)
    qty: int = pydantic.Field(ge=1, le=9)


class Order(pydantic.BaseModel):
    """Parameters with a nested model: pydantic writes them with `$defs` and `$ref`s."""

    items: list[Item] = pydantic.Field(min_length=1, max_length=2)


async def test_parameters_with_references_are_enforced(engine: LlamaEngine) -> None:
    """A tool whose parameters refer to their own `$defs` (a pydantic model with a nested one,
    as LangChain and the official client send it), offered beside another tool with a
    definition of the same name: the call's arguments validate against its parameters."""
    order = Tool("place_order", "Order goods", Order.model_json_schema())
    other = Tool("other", "", {"type": "object", "$defs": {"Item": {"type": "integer"}},
                               "properties": {"n": {"$ref": "#/$defs/Item"}}})  # fmt: skip
    answer = await engine.generate(
        "Order two apples.",
        max_tokens=80,
        options=Options(tools=ToolUse((order, other), "place_order")),
    )
    assert answer.finish_reason == "tool_calls"
    Order.model_validate_json(answer.tool_calls[0].arguments)
