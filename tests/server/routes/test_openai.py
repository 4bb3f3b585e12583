"""The OpenAI-compatible endpoints with the official `openai` package, unchanged: sync, async,
streaming with usage, the model list, and OpenAI-shaped errors; the real model streams the same
text it answers whole."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pydantic
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.support import (
    API_KEY,
    ServerProcess,
    idle_soon,
    leave_after,
    metric,
    prsm_serve,
    slow_fixed_server,
    wait_for,
)

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
NODE_DIR = Path(__file__).parents[2] / "e2e" / "node"
"""Where the Node packages the tests run are installed (`make test` installs them)."""


def client(server: ServerProcess, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)


def test_chat_completion_with_the_official_client(fixed_server: ServerProcess) -> None:
    """A chat completion: the answer, usage, finish reason, model, an id; PRSM's confidence and
    correlation id beside OpenAI's fields; counted as a query of method chat."""
    before = metric(fixed_server.base_url, "prsm_queries_total", 'method="chat"')
    completion = client(fixed_server).chat.completions.create(
        model="fixed", messages=MESSAGES, max_tokens=8, user="u-openai"
    )
    assert completion.choices[0].message.content == "Paris."
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 1
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 1
    assert completion.model == "fixed"
    assert completion.id.startswith("chatcmpl-")
    extra = completion.model_extra or {}
    assert extra["prsm"]["confidence"] == pytest.approx(0.9)
    assert metric(fixed_server.base_url, "prsm_queries_total", 'method="chat"') == before + 1


def test_streaming_chat_with_usage(fixed_server: ServerProcess) -> None:
    """`stream=True` with `include_usage`: role first, the text in deltas, a finish reason, a
    last chunk with the usage and no choices."""
    chunks = list(
        client(fixed_server).chat.completions.create(
            model="fixed", messages=MESSAGES, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Paris."
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 1


def test_async_client_and_completions_and_models(fixed_server: ServerProcess) -> None:
    """AsyncOpenAI: completions (whole and streamed) and the model list."""

    async def run() -> tuple[str, str, list[str]]:
        async with openai.AsyncOpenAI(
            base_url=fixed_server.base_url + "/v1", api_key=API_KEY, max_retries=0
        ) as aclient:
            whole = await aclient.completions.create(model="fixed", prompt="Capital?")
            streamed = await aclient.completions.create(
                model="fixed", prompt="Capital?", stream=True
            )
            pieces = [chunk.choices[0].text async for chunk in streamed if chunk.choices]
            models = [m.id async for m in aclient.models.list()]
        return whole.choices[0].text, "".join(pieces), models

    whole, streamed, models = asyncio.run(run())
    assert whole == streamed == "Paris."
    assert models == ["fixed"]


@pytest.mark.parametrize(
    ("call", "status", "kind"),
    [
        ({"messages": []}, 400, "invalid_request_error"),
        ({"messages": MESSAGES, "temperature": 5}, 400, "invalid_request_error"),
        ({"messages": MESSAGES, "n": 9}, 400, "invalid_request_error"),
        ({"messages": MESSAGES, "extra_body": {"tools_x": 1}}, 400, "invalid_request_error"),
        ({"messages": MESSAGES, "model": "gpt-4o"}, 404, "invalid_request_error"),
    ],
)  # fmt: skip
def test_bad_input_is_an_openai_error(
    fixed_server: ServerProcess, call: dict[str, object], status: int, kind: str
) -> None:
    """Validation failures are OpenAI's 400 invalid_request_error, an unknown model its 404;
    the client raises its own exception classes with the message."""
    arguments = {"model": "fixed"} | call
    with pytest.raises(openai.APIStatusError) as raised:
        client(fixed_server).chat.completions.create(**arguments)  # type: ignore[call-overload]
    assert raised.value.status_code == status
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["type"] == kind
    assert body["message"]


def test_a_wrong_key_is_authentication_error(fixed_server: ServerProcess) -> None:
    """401 with OpenAI's authentication_error."""
    with pytest.raises(openai.AuthenticationError) as raised:
        client(fixed_server, key="wrong").chat.completions.create(model="fixed", messages=MESSAGES)
    assert raised.value.status_code == 401


def test_an_oversized_body_is_413_in_openai_shape(fixed_server: ServerProcess) -> None:
    """A body over the limit: 413, OpenAI's error object."""
    huge = [{"role": "user", "content": "x" * (2 << 20)}]
    response = httpx.post(
        fixed_server.base_url + "/v1/chat/completions",
        json={"model": "fixed", "messages": huge},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.fixture(scope="module")
def saturated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One query at a time, none waiting, each 2 s long."""
    env = {"PRSM_ENGINE__KIND": "fixed", "PRSM_ENGINE__FIXED_DELAY_SECONDS": "2",
           "PRSM_ENGINE__MAX_QUEUE": "0"}  # fmt: skip
    with prsm_serve(tmp_path_factory.mktemp("saturated"), env=env) as server:
        yield server


def test_a_saturated_engine_is_503_server_error(saturated: ServerProcess) -> None:
    """While one query runs, the next is refused: 503 server_error with Retry-After."""

    async def run() -> list[int | str]:
        async with openai.AsyncOpenAI(
            base_url=saturated.base_url + "/v1", api_key=API_KEY, max_retries=0
        ) as aclient:

            async def ask() -> int | str:
                try:
                    await aclient.chat.completions.create(model="fixed", messages=MESSAGES)
                except openai.APIStatusError as exc:
                    retry = exc.response.headers.get("retry-after")
                    return f"{exc.status_code} {exc.body['type']} {retry}"  # type: ignore[index]
                return 200

            return list(await asyncio.gather(ask(), ask()))

    assert sorted(map(str, asyncio.run(run()))) == ["200", "503 server_error 1"]


def test_the_real_model_streams_what_it_answers(llama_server: ServerProcess) -> None:
    """Greedy: the streamed deltas of the embedded model join to its whole answer, token by
    token (more than one chunk), and the stream ends for the same reason."""
    model = client(llama_server).models.list().data[0].id
    arguments = {"model": model, "messages": MESSAGES, "max_tokens": 24, "temperature": 0}
    whole = client(llama_server).chat.completions.create(**arguments)  # type: ignore[call-overload]
    chunks = list(client(llama_server).chat.completions.create(stream=True, **arguments))
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 3
    assert "".join(pieces) == whole.choices[0].message.content
    reasons = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert reasons == [whole.choices[0].finish_reason]


def test_a_continued_conversation_reports_its_cached_prompt_tokens(
    llama_server: ServerProcess,
) -> None:
    """The next turn of a conversation finds the earlier turns in the embedded model's prompt
    cache, the answer the client sent back included: OpenAI's
    `usage.prompt_tokens_details.cached_tokens` says how many, and
    `prsm_prompt_tokens_cached_total` counts them."""
    model = client(llama_server).models.list().data[0].id
    first = client(llama_server).chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=16, temperature=0
    )
    before = metric(llama_server.base_url, "prsm_prompt_tokens_cached_total")
    turns = [*MESSAGES, {"role": "assistant", "content": first.choices[0].message.content},
             {"role": "user", "content": "And of Italy?"}]  # fmt: skip
    second = client(llama_server).chat.completions.create(
        model=model,
        messages=turns,  # type: ignore[arg-type]
        max_tokens=16,
        temperature=0,
    )
    assert first.usage is not None
    assert second.usage is not None
    details = second.usage.prompt_tokens_details
    assert details is not None
    assert details.cached_tokens is not None
    answered = first.usage.prompt_tokens + first.usage.completion_tokens
    assert answered - 2 <= details.cached_tokens < second.usage.prompt_tokens
    cached_total = metric(llama_server.base_url, "prsm_prompt_tokens_cached_total")
    assert cached_total == before + details.cached_tokens


def test_the_model_server_metrics_schedulers_read(llama_server: ServerProcess) -> None:
    """What the Gateway API Inference Extension and llm-d schedule on: queries running and
    waiting, and the KV cache's cells in use and in all, and their ratio — once idle (an
    earlier test's query may be ending), none in use of max_batch x context_size."""
    base = llama_server.base_url
    assert metric(base, "prsm_engine_kv_cells") == 8 * 2048
    wait_for(lambda: metric(base, "prsm_engine_kv_cells_used") == 0, 10)
    assert metric(base, "prsm_engine_kv_cache_usage_ratio") == 0
    assert metric(base, "prsm_engine_in_flight") == metric(base, "prsm_engine_waiting") == 0


def test_a_caller_leaving_an_openai_stream_frees_the_engine(tmp_path: Path) -> None:
    """Directly on `prsm serve`: one chunk read, the connection closed, the engine idle
    within seconds (the answer would have taken 6 s)."""
    with slow_fixed_server(tmp_path) as server:
        body = {"model": "fixed", "messages": MESSAGES, "stream": True}
        leave_after(server.base_url, "/v1/chat/completions", body, b"chat.completion.chunk")
        idle_soon(server.base_url)


class City(pydantic.BaseModel):
    """What `.parse()` asks the model for."""

    name: str
    country: str
    population: int


CITY = {"role": "user", "content": "Describe Paris."}


def served(server: ServerProcess) -> str:
    """The id of the model `server` serves."""
    return client(server).models.list().data[0].id


def test_the_official_client_parses_a_pydantic_model_from_the_real_model(
    llama_server: ServerProcess,
) -> None:
    """`chat.completions.parse(response_format=City)` (json_schema, strict): the answer is
    decoded to the schema, so the client's own parsing gives a City."""
    completion = client(llama_server).chat.completions.parse(
        model=served(llama_server),
        messages=[CITY],
        response_format=City,
        max_tokens=120,  # type: ignore[list-item]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, City)
    assert City.model_validate_json(choice.message.content or "") == choice.message.parsed


def test_a_json_schema_answer_streams_as_the_same_json(llama_server: ServerProcess) -> None:
    """Streamed with `response_format: json_schema`: the deltas join to JSON that validates."""
    schema = City.model_json_schema()
    response_format = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
    chunks = client(llama_server).chat.completions.create(
        model=served(llama_server),
        messages=[CITY],  # type: ignore[list-item]
        response_format=response_format,  # type: ignore[arg-type]
        max_tokens=120,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    City.model_validate_json(text)


def test_json_object_mode_answers_a_json_object(llama_server: ServerProcess) -> None:
    """`response_format: json_object` (LangChain's json_mode): a JSON object."""
    completion = client(llama_server).chat.completions.create(
        model=served(llama_server),
        messages=[CITY],  # type: ignore[list-item]
        response_format={"type": "json_object"},
        max_tokens=120,
    )
    content = completion.choices[0].message.content or ""
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    assert content.startswith("{")


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}},
            "response_format.json_schema.schema",
        ),
        ({"type": "xml"}, "response_format"),
        ({"type": "json_schema", "json_schema": {"name": "bad name!"}}, "response_format"),
    ],
)
def test_a_response_format_that_cannot_be_honoured_is_a_400_naming_it(
    fixed_server: ServerProcess, response_format: dict[str, object], param: str
) -> None:
    """A schema that cannot be enforced, an unknown type or a bad name: OpenAI's 400
    `invalid_request_error` whose `param` points into `response_format`, before any query."""
    with pytest.raises(openai.BadRequestError) as refused:
        client(fixed_server).chat.completions.create(
            model="fixed",
            messages=MESSAGES,  # type: ignore[arg-type]
            response_format=response_format,  # type: ignore[arg-type]
        )
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error"
    assert str(error["param"]).startswith(param)


def test_every_validation_error_names_its_param(fixed_server: ServerProcess) -> None:
    """A field out of range: OpenAI's 400 names it in `param`, as OpenAI's clients show it."""
    with pytest.raises(openai.BadRequestError) as refused:
        client(fixed_server).chat.completions.create(
            model="fixed",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=0,
        )
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["param"] == "max_tokens"


def test_unseeded_sampling_is_random_and_a_seed_repeats_it(llama_server: ServerProcess) -> None:
    """As on OpenAI: at temperature 1 without a seed, three calls do not all answer alike; with
    the same seed, two calls answer alike; every answer names what produced it."""
    ask = {"model": served(llama_server), "messages": MESSAGES, "max_tokens": 24, "temperature": 1}
    unseeded = [client(llama_server).chat.completions.create(**ask) for _ in range(3)]  # type: ignore[call-overload]
    seeded = [client(llama_server).chat.completions.create(seed=7, **ask) for _ in range(2)]  # type: ignore[call-overload]
    assert len({c.choices[0].message.content for c in unseeded}) > 1
    assert seeded[0].choices[0].message.content == seeded[1].choices[0].message.content
    fingerprint = seeded[0].system_fingerprint or ""
    assert served(llama_server) in fingerprint
    assert "llama-cpp-python-" in fingerprint


def test_a_context_overflow_is_openai_s_context_length_exceeded(
    llama_server: ServerProcess,
) -> None:
    """Prompt + max_tokens over the window: 400 `context_length_exceeded` in OpenAI's words
    (what LangChain and litellm look for), `param: "messages"`."""
    with pytest.raises(openai.BadRequestError) as refused:
        client(llama_server).chat.completions.create(
            model=served(llama_server),
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=2048,
        )
    assert refused.value.code == "context_length_exceeded"
    assert "maximum context length is 2048 tokens" in refused.value.message
    assert "Please reduce the length of the messages or completion" in refused.value.message
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["param"] == "messages"


def test_the_standard_fields_clients_send_are_accepted(fixed_server: ServerProcess) -> None:
    """`metadata`, `store: false`, `service_tier`, `logit_bias: {}`, penalties and
    `logprobs: false`, as SDKs and frameworks send them, answer 200; `store: true` (nothing is
    stored here) is a 400 naming `store`."""
    completion = client(fixed_server).chat.completions.create(
        model="fixed",
        messages=MESSAGES,  # type: ignore[arg-type]
        metadata={"team": "search"},
        store=False,
        service_tier="auto",
        logit_bias={},
        frequency_penalty=0.5,
        presence_penalty=0.1,
        logprobs=False,
        user="u1",
    )
    assert completion.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as refused:
        client(fixed_server).chat.completions.create(
            model="fixed",
            messages=MESSAGES,  # type: ignore[arg-type]
            store=True,
        )
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["param"] == "store"


def test_models_by_id_and_embeddings_answer_as_openai_does(fixed_server: ServerProcess) -> None:
    """`models.retrieve` finds the served model and 404s `model_not_found` for another;
    `embeddings.create` of the chat model is 400 `wrong_model_kind`, and of a model not served
    404 `model_not_found` saying that no embedding model is."""
    openai_client = client(fixed_server)
    served_id = openai_client.models.list().data[0].id
    assert openai_client.models.retrieve(served_id).id == served_id
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.models.retrieve("gpt-4o")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as chat_model:
        openai_client.embeddings.create(model=served_id, input="hello")
    assert chat_model.value.code == "wrong_model_kind"
    with pytest.raises(openai.NotFoundError) as no_embeddings:
        openai_client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert no_embeddings.value.code == "model_not_found"
    assert "not served here" in no_embeddings.value.message


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
        },
    },
}
WEATHER_QUESTION = {"role": "user", "content": "What is the weather in Paris?"}


@pytest.mark.parametrize(
    "tool_choice",
    ["required", {"type": "function", "function": {"name": "get_weather"}}],
)
def test_the_official_client_gets_tool_calls(
    llama_server: ServerProcess, tool_choice: object
) -> None:
    """`tools` with `tool_choice` required or named: OpenAI's `tool_calls` (an id, the
    function, arguments valid against its parameters), `finish_reason: tool_calls`."""
    completion = client(llama_server).chat.completions.create(
        model=served(llama_server),
        messages=[WEATHER_QUESTION],  # type: ignore[list-item]
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice=tool_choice,  # type: ignore[arg-type]
        max_tokens=80,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
    assert isinstance(arguments["city"], str)
    assert set(arguments) <= {"city"}


def test_tool_choice_none_and_auto_answer_text_or_a_valid_call(
    llama_server: ServerProcess,
) -> None:
    """`none` answers text; `auto` answers text or a call, each well-formed."""
    ask = {"model": served(llama_server), "messages": [WEATHER_QUESTION], "tools": [WEATHER_TOOL],
           "max_tokens": 40}  # fmt: skip
    none = client(llama_server).chat.completions.create(tool_choice="none", **ask)  # type: ignore[call-overload]
    assert none.choices[0].message.tool_calls is None
    assert none.choices[0].message.content
    auto = client(llama_server).chat.completions.create(tool_choice="auto", **ask)  # type: ignore[call-overload]
    message = auto.choices[0].message
    if message.tool_calls:
        assert auto.choices[0].finish_reason == "tool_calls"
        json.loads(message.tool_calls[0].function.arguments)  # type: ignore[union-attr]
    else:
        assert message.content


def test_a_streamed_tool_call_arrives_as_tool_call_deltas(llama_server: ServerProcess) -> None:
    """Streamed: no content, the call in OpenAI's tool-call deltas, which the official
    client's stream helper assembles."""
    with client(llama_server).chat.completions.stream(
        model=served(llama_server),
        messages=[WEATHER_QUESTION],  # type: ignore[list-item]
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="required",
        max_tokens=80,
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content
    assert choice.message.tool_calls[0].function.name == "get_weather"  # type: ignore[index,union-attr]


def test_an_agent_loop_runs_end_to_end(llama_server: ServerProcess) -> None:
    """The loop every agent framework runs: the model calls the tool, the tool's result goes
    back (`role: tool`, after the assistant's `tool_calls`), the model answers in text."""
    openai_client, model = client(llama_server), served(llama_server)
    messages: list[dict[str, object]] = [WEATHER_QUESTION]
    first = openai_client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL], tool_choice="required",  # type: ignore[arg-type,list-item]
        max_tokens=80,
    )  # fmt: skip
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    result = json.dumps({"sky": "sunny", "celsius": 18})
    messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    final = openai_client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL], max_tokens=40,  # type: ignore[arg-type,list-item]
    )  # fmt: skip
    assert final.choices[0].finish_reason in ("stop", "length")
    assert final.choices[0].message.tool_calls is None
    assert final.choices[0].message.content


def test_an_option_this_model_cannot_honour_is_refused_as_openai_does(
    fixed_server: ServerProcess,
) -> None:
    """`reasoning_effort` (a reasoning model's option): 400 `unsupported_parameter` naming
    it, in OpenAI's words, rather than ignored."""
    with pytest.raises(openai.BadRequestError) as refused:
        client(fixed_server).chat.completions.create(
            model="fixed",
            messages=MESSAGES,  # type: ignore[arg-type]
            reasoning_effort="low",
        )
    assert refused.value.code == "unsupported_parameter"
    assert refused.value.param == "reasoning_effort"
    assert "Unsupported parameter: 'reasoning_effort'" in refused.value.message


def test_image_and_audio_parts_are_refused_naming_the_part(fixed_server: ServerProcess) -> None:
    """An image part in a chat message and an audio one, an image in a Responses input: 400
    `unsupported_value` naming the part (`messages[0].content[1]`) and its kind, in OpenAI's
    words — not pydantic's union (`messages[0].content.str`)."""
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    chats = [
        ([{"role": "user", "content": [{"type": "text", "text": "what is it?"}, image]}],
         "messages[0].content[1]", "image_url"),
        ([{"role": "system", "content": "be brief"}, {"role": "user", "content": [audio]}],
         "messages[1].content[0]", "input_audio"),
    ]  # fmt: skip
    for messages, param, kind in chats:
        with pytest.raises(openai.BadRequestError) as refused:
            client(fixed_server).chat.completions.create(model="fixed", messages=messages)  # type: ignore[arg-type]
        assert (refused.value.code, refused.value.param) == ("unsupported_value", param)
        assert f"'{kind}' parts are not supported" in refused.value.message
    picture = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
    with pytest.raises(openai.BadRequestError) as refused:
        client(fixed_server).responses.create(
            model="fixed",
            input=[{"role": "user", "content": [picture]}],
            store=False,  # type: ignore[list-item]
        )
    assert (refused.value.code, refused.value.param) == ("unsupported_value", "input[0].content[0]")


def test_logprobs_come_as_openai_s_with_the_top_alternatives(llama_server: ServerProcess) -> None:
    """`logprobs` with `top_logprobs: 3`: one entry per answer token whose texts join to the
    answer, each a log probability with its bytes and the three likeliest tokens there, most
    likely first; `top_logprobs` alone is a 400 naming it."""
    completion = client(llama_server).chat.completions.create(
        model=served(llama_server),
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=12,
        logprobs=True,
        top_logprobs=3,
    )
    choice = completion.choices[0]
    assert choice.logprobs is not None
    assert choice.logprobs.content
    entries = choice.logprobs.content
    assert completion.usage is not None
    assert len(entries) == completion.usage.completion_tokens
    assert "".join(e.token for e in entries).strip() == (choice.message.content or "").strip()
    for entry in entries:
        assert entry.logprob <= 0
        assert bytes(entry.bytes or []).decode("utf-8", "replace") == entry.token
        alternatives = [top.logprob for top in entry.top_logprobs]
        assert len(alternatives) == 3
        assert alternatives == sorted(alternatives, reverse=True)
    with pytest.raises(openai.BadRequestError) as refused:
        client(llama_server).chat.completions.create(
            model=served(llama_server),
            messages=MESSAGES,  # type: ignore[arg-type]
            top_logprobs=3,
        )
    assert refused.value.param == "top_logprobs"


def test_completions_logprobs_come_in_the_completions_format(llama_server: ServerProcess) -> None:
    """`/v1/completions` with `logprobs: 2`: tokens that spell the text, a log probability
    each, the two likeliest tokens at each, and each token's offset in the text; streamed,
    the same in the finish chunk."""
    ask = {"model": served(llama_server), "prompt": "Name a colour.", "max_tokens": 8,
           "logprobs": 2, "temperature": 0}  # fmt: skip
    completion = client(llama_server).completions.create(**ask)  # type: ignore[call-overload]
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.tokens
    assert len(logprobs.tokens) == len(logprobs.token_logprobs or [])
    assert "".join(logprobs.tokens).strip() == completion.choices[0].text.strip()
    assert all(len(top) <= 2 and max(top.values()) <= 0 for top in logprobs.top_logprobs or [])
    offsets = [len("".join(logprobs.tokens[:i])) for i in range(len(logprobs.tokens))]
    assert logprobs.text_offset == offsets
    chunks = list(client(llama_server).completions.create(stream=True, **ask))  # type: ignore[call-overload]
    streamed = next(c.choices[0].logprobs for c in chunks if c.choices[0].logprobs)
    assert streamed.tokens == logprobs.tokens
    with pytest.raises(openai.BadRequestError) as refused:
        client(llama_server).completions.create(**ask | {"logprobs": 6})  # type: ignore[call-overload]
    assert refused.value.param == "logprobs"


def test_n_answers_come_as_n_choices_decoded_together(llama_server: ServerProcess) -> None:
    """`n: 3` sampled with a seed: three choices, indexed, differing, the first as `n: 1`
    answers, their completion tokens all counted and the prompt once; the same seed gives the
    same three again; streamed, each choice's deltas carry its index and spell the same
    texts."""
    ask = {"model": served(llama_server), "messages": MESSAGES, "n": 3, "temperature": 1.0,
           "seed": 11, "max_tokens": 24}  # fmt: skip
    first = client(llama_server).chat.completions.create(**ask)  # type: ignore[call-overload]
    texts = [choice.message.content for choice in first.choices]
    assert [choice.index for choice in first.choices] == [0, 1, 2]
    assert len(set(texts)) > 1
    again = client(llama_server).chat.completions.create(**ask)  # type: ignore[call-overload]
    assert [choice.message.content for choice in again.choices] == texts
    one = client(llama_server).chat.completions.create(**ask | {"n": 1})  # type: ignore[call-overload]
    assert one.choices[0].message.content == texts[0]  # the first choice samples with the seed
    assert first.usage is not None
    assert one.usage is not None
    assert first.usage.completion_tokens > one.usage.completion_tokens
    assert first.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counts once
    streamed = ["", "", ""]
    for chunk in client(llama_server).chat.completions.create(stream=True, **ask):  # type: ignore[call-overload]
        for choice in chunk.choices:
            streamed[choice.index] += choice.delta.content or ""
    assert streamed == texts
    with pytest.raises(openai.BadRequestError) as refused:
        client(llama_server).chat.completions.create(**ask | {"n": 9})  # type: ignore[call-overload]
    assert refused.value.param == "n"


def test_a_caller_leaving_a_stream_of_n_answers_stops_them_all(llama_server: ServerProcess) -> None:
    """Three long answers streamed, the caller gone after the first chunk: every one of them
    stops (the engine holds nothing within seconds)."""
    body = {"model": served(llama_server), "n": 3, "max_tokens": 400, "stream": True,
            "messages": [{"role": "user", "content": "Write a long story."}]}  # fmt: skip
    leave_after(llama_server.base_url, "/v1/chat/completions", body, b"chat.completion.chunk")
    idle_soon(llama_server.base_url)


def test_the_official_node_client_works_unchanged(llama_server: ServerProcess) -> None:
    """OpenAI's Node package (`openai` from npm), as a Node application calls it: chat whole
    and streamed alike, a JSON Schema answer, a forced tool call, the Responses API whole and
    streamed (its typed events), a refused option with its `param`."""
    node = Path(sys.executable).parent / "node"
    ran = subprocess.run(
        [str(node), "openai-client.js"],
        cwd=NODE_DIR,
        env={"PRSM_BASE_URL": llama_server.base_url + "/v1", "PRSM_API_KEY": API_KEY,
             "PATH": str(node.parent)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    got = json.loads(ran.stdout)
    assert got["streamed"] == got["chat"] != ""
    assert set(got["structured"]) == {"name", "country"}
    assert (got["finish"], got["call"]["name"]) == ("tool_calls", "get_weather")
    assert isinstance(json.loads(got["call"]["arguments"])["city"], str)
    assert got["final"] == got["response"] != ""
    assert (got["events"][0], got["events"][-1]) == ("response.created", "response.completed")
    assert got["refused"] == {"status": 400, "code": "unsupported_parameter",
                              "param": "reasoning_effort"}  # fmt: skip


def langchain_model(server: ServerProcess, **settings: Any) -> ChatOpenAI:
    """LangChain's OpenAI chat model pointed at PRSM, as an application configures it."""
    return ChatOpenAI(
        base_url=server.base_url + "/v1",
        api_key=SecretStr(API_KEY),
        model=served(server),
        temperature=0,
        max_retries=0,
        **settings,
    )


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_structured_output_gives_the_pydantic_object(
    llama_server: ServerProcess, method: str
) -> None:
    """`with_structured_output(City)` by JSON Schema (LangChain's default) and by a forced
    function call: a City, from the real model."""
    model = langchain_model(llama_server, max_tokens=120)
    city = model.with_structured_output(City, method=method).invoke("Describe Paris.")  # type: ignore[arg-type]
    assert isinstance(city, City)


def test_langchain_json_mode_gives_a_json_object(llama_server: ServerProcess) -> None:
    """`with_structured_output(..., method="json_mode")` (response_format json_object): the
    answer parses as a JSON object."""
    schema = {"title": "city", "type": "object", "properties": {"name": {"type": "string"}}}
    model = langchain_model(llama_server, max_tokens=120)
    answer = model.with_structured_output(schema, method="json_mode").invoke(
        "Describe Paris in JSON."
    )
    assert isinstance(answer, dict)


def test_langchain_bind_tools_runs_a_tool_and_answers_from_its_result(
    llama_server: ServerProcess,
) -> None:
    """`bind_tools` with the tool forced: an AIMessage with a tool call; the ToolMessage sent
    back (tools still bound) is read — the prompt grows by it — and answered with a
    well-formed AIMessage (text, or another call: this small model sometimes asks again)."""

    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return f"sunny and 18 degrees in {city}"

    model = langchain_model(llama_server, max_tokens=60)
    question = HumanMessage("What is the weather in Paris?")
    called = model.bind_tools([get_weather], tool_choice="get_weather").invoke([question])
    assert isinstance(called, AIMessage)
    call = called.tool_calls[0]
    assert call["name"] == "get_weather"
    result = ToolMessage(get_weather(**call["args"]), tool_call_id=call["id"])
    answer = model.bind_tools([get_weather]).invoke([question, called, result])
    assert isinstance(answer, AIMessage)
    assert answer.content or answer.tool_calls[0]["args"]["city"]
    assert called.usage_metadata is not None
    assert answer.usage_metadata is not None
    grown = answer.usage_metadata["input_tokens"] - called.usage_metadata["input_tokens"]
    assert grown > len(result.content) // 8  # the call and its result, as tokens


def test_litellm_recognises_a_context_overflow(
    llama_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """litellm, pointed at PRSM as an OpenAI-compatible server, raises its own
    `ContextWindowExceededError` for prompt + max_tokens over the window (so its fallbacks
    and trimming apply), and answers a query that fits."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch from the internet
    import litellm

    ask = {"model": "openai/" + served(llama_server), "api_base": llama_server.base_url + "/v1",
           "api_key": API_KEY, "messages": MESSAGES, "num_retries": 0}  # fmt: skip
    with pytest.raises(litellm.ContextWindowExceededError):
        litellm.completion(max_tokens=4000, **ask)
    answer = litellm.completion(max_tokens=8, **ask)
    assert answer.choices[0].message.content
