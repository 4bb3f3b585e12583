"""The Responses API with the official `openai` package and OpenAI's Agents SDK, against the
real model with Redis: text, streamed typed events, structured output, function calls and
their outputs, stored responses continued, read and deleted by their owner only; without
Redis, what cannot be stored is refused plainly."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import agents
import httpx
import openai
import pydantic
import pytest

from prsm.embedded_redis import EmbeddedRedis
from tests.support import API_KEY, ServerProcess, metric, prsm_serve

OTHER_KEY = "other-key-0123456789"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False},
    "strict": True,
}  # fmt: skip
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def stored_server(
    tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis
) -> Iterator[ServerProcess]:
    """The embedded model with Redis (responses are stored), and two callers' keys."""
    env = {"PRSM_REDIS_URL": redis_server.url, "PRSM_API_KEYS": f"{API_KEY},{OTHER_KEY}"}
    with prsm_serve(tmp_path_factory.mktemp("responses"), env=env) as server:
        yield server


def client(server: ServerProcess, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)


def served(server: ServerProcess) -> str:
    return client(server).models.list().data[0].id


def test_a_response_is_stored_continued_and_deleted(stored_server: ServerProcess) -> None:
    """Text with instructions; `previous_response_id` continues the stored conversation (its
    prompt holds the first turn); the response reads back by id, then is deleted; counted as a
    query of method `response`."""
    openai_client, model = client(stored_server), served(stored_server)
    first = openai_client.responses.create(
        model=model, input=QUESTION, instructions="Answer in one short sentence.",
        max_output_tokens=40, temperature=0,
    )  # fmt: skip
    assert first.id.startswith("resp_")
    assert first.status == "completed"
    assert "Paris" in first.output_text
    assert first.usage is not None
    assert first.usage.output_tokens > 0
    second = openai_client.responses.create(
        model=model, input="And of Italy?", previous_response_id=first.id, max_output_tokens=40
    )
    assert second.previous_response_id == first.id
    assert second.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert openai_client.responses.retrieve(first.id).output_text == first.output_text
    openai_client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(first.id)
    assert metric(stored_server.base_url, "prsm_queries_total", 'method="response"') >= 2


def test_another_caller_can_neither_read_nor_continue_a_response(
    stored_server: ServerProcess,
) -> None:
    """Stored under its creator: another key gets 404 reading it, and OpenAI's 400
    `previous_response_not_found` continuing it."""
    mine = client(stored_server).responses.create(
        model=served(stored_server), input=QUESTION, max_output_tokens=8
    )
    theirs = client(stored_server, OTHER_KEY)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.retrieve(mine.id)
    with pytest.raises(openai.BadRequestError) as refused:
        theirs.responses.create(
            model=served(stored_server), input="Go on.", previous_response_id=mine.id
        )
    assert refused.value.code == "previous_response_not_found"
    assert refused.value.param == "previous_response_id"


def test_a_streamed_response_sends_openai_s_typed_events(stored_server: ServerProcess) -> None:
    """Created, in progress, the message opened, text deltas, closed, completed — numbered in
    order; the client's stream helper assembles the same text the deltas carried."""
    with client(stored_server).responses.stream(
        model=served(stored_server), input=QUESTION, max_output_tokens=60
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]  # fmt: skip
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]  # fmt: skip
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text != ""
    assert client(stored_server).responses.retrieve(final.id).output_text == deltas


def test_max_output_tokens_makes_an_incomplete_response(stored_server: ServerProcess) -> None:
    """Cut by `max_output_tokens`: status `incomplete` with the reason, whole or streamed (its
    last event `response.incomplete`)."""
    ask = {"model": served(stored_server), "input": "Write a long story.", "max_output_tokens": 5}
    cut = client(stored_server).responses.create(**ask)  # type: ignore[call-overload]
    assert cut.status == "incomplete"
    assert cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    events = list(client(stored_server).responses.create(stream=True, **ask))  # type: ignore[call-overload]
    assert events[-1].type == "response.incomplete"


class City(pydantic.BaseModel):
    name: str
    country: str


def test_structured_output_parses_into_the_pydantic_model(stored_server: ServerProcess) -> None:
    """`responses.parse(text_format=Model)`: the answer is held to the model's schema."""
    parsed = client(stored_server).responses.parse(
        model=served(stored_server), input="Name a city in France.", text_format=City,
        max_output_tokens=60,
    )  # fmt: skip
    assert isinstance(parsed.output_parsed, City)
    assert parsed.text is not None
    assert parsed.text.format.type == "json_schema"


def test_a_function_call_and_its_output_continue_to_an_answer(
    stored_server: ServerProcess,
) -> None:
    """A required call is a `function_call` item (arguments valid JSON); streamed, its events
    assemble the same item; its output sent with `previous_response_id` and `tool_choice:
    none` gets a text answer."""
    openai_client, model = client(stored_server), served(stored_server)
    ask = {"model": model, "input": "What is the weather in Oslo?", "tools": [WEATHER_TOOL],
           "max_output_tokens": 80}  # fmt: skip
    called = openai_client.responses.create(tool_choice="required", **ask)  # type: ignore[call-overload]
    call = called.output[0]
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert call.call_id.startswith("call_")
    assert isinstance(json.loads(call.arguments)["city"], str)
    with openai_client.responses.stream(tool_choice="required", **ask) as stream:
        kinds = [e.type for e in stream]
        streamed = stream.get_final_response().output[0]
    assert "response.function_call_arguments.done" in kinds
    assert streamed.type == "function_call"
    assert json.loads(streamed.arguments)
    result = {"type": "function_call_output", "call_id": call.call_id,
              "output": json.dumps({"sky": "sunny", "celsius": 18})}  # fmt: skip
    answer = openai_client.responses.create(
        model=model, input=[result], previous_response_id=called.id, tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="none", max_output_tokens=40,
    )  # fmt: skip
    assert answer.output[0].type == "message"
    assert answer.output_text
    assert not answer.output_text.startswith("<")


def test_logprobs_come_with_the_text_when_included(stored_server: ServerProcess) -> None:
    """`include: [message.output_text.logprobs]` with `top_logprobs`: each token's log
    probability and its alternatives, tokens spelling the text."""
    response = client(stored_server).responses.create(
        model=served(stored_server), input=QUESTION, max_output_tokens=12,
        include=["message.output_text.logprobs"], top_logprobs=2,
    )  # fmt: skip
    part = response.output[0].content[0]  # type: ignore[union-attr]
    assert part.logprobs  # type: ignore[union-attr]
    assert "".join(t.token for t in part.logprobs) == part.text  # type: ignore[union-attr]
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in part.logprobs)  # type: ignore[union-attr]


@agents.function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny and 18 degrees in {city}"


class AnswerAfterTheTool(agents.AgentHooks[Any]):
    """After the tool ran, the next turn must answer in text (`tool_choice: none`): the small
    model cannot be trusted to stop calling by itself, so the wire is tested with a forced
    choice at each turn."""

    async def on_tool_end(self, context: Any, agent: Any, tool: Any, result: object) -> None:
        agent.model_settings = dataclasses.replace(agent.model_settings, tool_choice="none")


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
@pytest.mark.parametrize("streamed", [False, True])
def test_the_agents_sdk_runs_an_agent_with_a_function_tool(
    stored_server: ServerProcess, api: str, streamed: bool
) -> None:
    """OpenAI's Agents SDK, with its Responses model and its chat-completions model: the agent
    calls the tool, gets its result, answers in text from it."""

    async def run() -> agents.RunResultBase:
        async with openai.AsyncOpenAI(
            base_url=stored_server.base_url + "/v1", api_key=API_KEY, max_retries=0
        ) as openai_client:
            chat = agents.OpenAIChatCompletionsModel
            kind = agents.OpenAIResponsesModel if api == "responses" else chat
            agent = agents.Agent(
                name="weather", instructions="You answer questions about the weather.",
                tools=[get_weather], model=kind(served(stored_server), openai_client),
                model_settings=agents.ModelSettings(tool_choice="required", max_tokens=80),
                reset_tool_choice=False, hooks=AnswerAfterTheTool(),
            )  # fmt: skip
            question = "What is the weather in Oslo?"
            if not streamed:
                return await agents.Runner.run(agent, question, max_turns=3)
            result = agents.Runner.run_streamed(agent, question, max_turns=3)
            async for _ in result.stream_events():
                pass
            return result

    agents.set_tracing_disabled(True)
    result = asyncio.run(run())
    kinds = [type(item).__name__ for item in result.new_items]
    assert kinds == ["ToolCallItem", "ToolCallOutputItem", "MessageOutputItem"]
    assert isinstance(result.final_output, str)
    assert result.final_output
    assert not result.final_output.startswith("<")


def test_without_redis_nothing_is_stored_and_asking_to_is_a_400(
    fixed_server: ServerProcess,
) -> None:
    """No Redis: a response is answered (not stored, though OpenAI's default is to store);
    `store: true` and `previous_response_id` are 400 `store_unavailable` naming the field; a
    stored response is 404."""
    openai_client = client(fixed_server)
    answered = openai_client.responses.create(model="fixed", input=QUESTION)
    assert answered.output_text == "Paris."
    for field, value in (("store", True), ("previous_response_id", answered.id)):
        with pytest.raises(openai.BadRequestError) as refused:
            openai_client.responses.create(model="fixed", input=QUESTION, **{field: value})  # type: ignore[call-overload]
        assert (refused.value.code, refused.value.param) == ("store_unavailable", field)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(answered.id)


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"reasoning": {"effort": "high"}}, "reasoning", "unsupported_parameter"),
        ({"truncation": "auto"}, "truncation", None),
        ({"include": ["reasoning.encrypted_content"]}, "include[0]", None),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
         "input", None),
        ({"text": {"format": {"type": "json_schema", "name": "u",
                              "schema": {"type": "array", "uniqueItems": True}}}},
         "text.format.schema", "invalid_schema"),
        ({"tool_choice": {"type": "function", "name": "missing"}, "tools": [WEATHER_TOOL]},
         "tools", "invalid_schema"),
    ],
)  # fmt: skip
def test_what_cannot_be_honoured_is_a_400_naming_it(
    fixed_server: ServerProcess, extra: dict[str, Any], param: str, code: str | None
) -> None:
    """Options this model cannot honour, input it cannot read, formats and tool choices that
    cannot be enforced: OpenAI's 400 with `param` set."""
    body = {"model": "fixed", "input": QUESTION} | extra
    answer = httpx.post(fixed_server.base_url + "/v1/responses", json=body,
                        headers={"Authorization": f"Bearer {API_KEY}"})  # fmt: skip
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"].startswith(param)
    if code is not None:
        assert error["code"] == code
