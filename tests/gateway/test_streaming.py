"""Streams through `prsm gateway`: the official OpenAI client unchanged, events relayed as they
come (not buffered), and a caller who leaves mid-stream stopping the generation upstream."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from prsm.client import AsyncPRSMClient
from prsm.errors import HTTPStatusError
from tests.support import (
    API_KEY,
    GatewayProcess,
    ServerProcess,
    idle_soon,
    leave_after,
    metric,
    prsm_gateway,
    read_request,
    slow_fixed_server,
    socket_server,
    wait_for,
)

MESSAGES = [{"role": "user", "content": "Count to six."}]


@pytest.fixture(scope="module")
def slow_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with slow_fixed_server(tmp_path_factory.mktemp("slow")) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(
    slow_api: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """The gateway with `/v1` and `/api/v1` in front of the slow API."""
    config = {
        "pools": {"api": {"discovery": {"kind": "static", "urls": [slow_api.base_url]}}},
        "routes": [{"prefix": "/v1", "pool": "api"}, {"prefix": "/api/v1", "pool": "api"}],
    }
    with prsm_gateway(tmp_path_factory.mktemp("gateway"), config) as running:
        yield running


def test_the_openai_client_streams_through_the_gateway(gateway: GatewayProcess) -> None:
    """The official client through the gateway: the first chunk a second or so in, the rest as
    generated; the whole text arrives."""
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=API_KEY, max_retries=0)
    started = time.monotonic()
    stream = client.chat.completions.create(model="fixed", messages=MESSAGES, stream=True)
    arrivals, text = [], ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
            text += chunk.choices[0].delta.content
    assert text == "one two three four five six"
    assert arrivals[0] < 3  # relayed as it came, not after the 6 s answer
    assert arrivals[-1] > 5


def test_relayed_streams_say_not_to_buffer(gateway: GatewayProcess) -> None:
    """The relayed event stream carries `X-Accel-Buffering: no` for proxies in front."""
    body = {"prompt": "Count.", "userId": "u1", "stream": True, "maxTokens": 1}
    response = httpx.post(
        gateway.base_url + "/api/v1/query",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"
    assert "event: done" in response.text


def test_a_caller_leaving_the_gateway_stops_the_generation(
    gateway: GatewayProcess, slow_api: ServerProcess
) -> None:
    """The client reads one chunk from the gateway and disconnects: the API's engine is free
    again within seconds, the gateway counts the client gone."""
    gone = metric(gateway.base_url, "prsm_gateway_clients_gone_total")
    body = {"model": "fixed", "messages": MESSAGES, "stream": True}
    leave_after(gateway.base_url, "/v1/chat/completions", body, b"chat.completion.chunk")
    idle_soon(slow_api.base_url)
    wait_for(lambda: metric(gateway.base_url, "prsm_gateway_clients_gone_total") == gone + 1, 5)


@pytest.fixture(scope="module")
def model_gateway(
    llama_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """`prsm gateway` with its default routes in front of the embedded model."""
    config = {
        "pools": {"api": {"discovery": {"kind": "static", "urls": [llama_server.base_url]}}},
        "routes": [{"prefix": "/v1", "pool": "api"}],
    }
    with prsm_gateway(tmp_path_factory.mktemp("model-gateway"), config) as running:
        yield running


def test_the_official_client_through_the_gateway_with_the_real_model(
    model_gateway: GatewayProcess,
) -> None:
    """Sync, async and streamed with usage, all through the gateway: the same greedy answer."""
    base = model_gateway.base_url + "/v1"
    sync = openai.OpenAI(base_url=base, api_key=API_KEY, max_retries=0)
    model = sync.models.list().data[0].id
    ask = {"model": model, "messages": MESSAGES, "max_tokens": 16, "temperature": 0}
    whole = sync.chat.completions.create(**ask)  # type: ignore[call-overload]
    chunks = list(
        sync.chat.completions.create(stream=True, stream_options={"include_usage": True}, **ask)
    )

    async def asynchronously() -> str:
        async with openai.AsyncOpenAI(base_url=base, api_key=API_KEY, max_retries=0) as client:
            answer = await client.chat.completions.create(**ask)  # type: ignore[call-overload]
            return str(answer.choices[0].message.content)

    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert whole.choices[0].message.content == streamed == asyncio.run(asynchronously())
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_the_responses_api_through_the_gateway_with_the_real_model(
    model_gateway: GatewayProcess,
) -> None:
    """`responses.create`, whole and streamed through the gateway: the same greedy text, the
    stream's typed events intact."""
    client = openai.OpenAI(base_url=model_gateway.base_url + "/v1", api_key=API_KEY, max_retries=0)
    ask = {"model": client.models.list().data[0].id, "input": "What is the capital of France?",
           "max_output_tokens": 60, "temperature": 0, "store": False}  # fmt: skip
    whole = client.responses.create(**ask)  # type: ignore[call-overload]
    with client.responses.stream(**ask) as stream:  # type: ignore[arg-type]
        kinds = [event.type for event in stream]
        streamed = stream.get_final_response()
    assert streamed.output_text == whole.output_text != ""
    assert (kinds[0], kinds[-1]) == ("response.created", "response.completed")


def test_the_real_model_stops_when_the_caller_leaves_the_gateway(
    model_gateway: GatewayProcess, llama_server: ServerProcess
) -> None:
    """A long greedy answer, read for one chunk through the gateway, then the client leaves:
    the API's engine is idle within seconds."""
    client = openai.OpenAI(base_url=model_gateway.base_url + "/v1", api_key=API_KEY, max_retries=0)
    model = client.models.list().data[0].id
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Write a long story."}],
        max_tokens=400, stream=True,
    )  # fmt: skip
    next(iter(stream))
    assert metric(llama_server.base_url, "prsm_engine_in_flight") == 1
    stream.close()
    idle_soon(llama_server.base_url)


def dies_mid_stream(connection: socket.socket) -> None:
    """An upstream that starts an event stream, sends two events and half of a third, then
    dies: OpenAI's chunks under /v1, PRSM's `delta` events elsewhere."""
    request = read_request(connection, bytearray()) or b""
    if b" /v1/" in request.split(b"\r\n", 1)[0]:
        event = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        event += b'"choices":[{"index":0,"delta":{"content":"one "},"finish_reason":null}]}\n\n'
    else:
        event = b'event: delta\ndata: {"text": "one "}\n\n'
    connection.sendall(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    for part in (event, event, event[: len(event) // 2]):
        connection.sendall(b"%x\r\n%s\r\n" % (len(part), part))


@pytest.fixture(scope="module")
def cut_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The gateway in front of an upstream that dies mid-stream."""
    with socket_server(dies_mid_stream) as upstream:
        config = {
            "pools": {"api": {"discovery": {"kind": "static", "urls": [upstream]}}},
            "routes": [{"prefix": "/v1", "pool": "api"}, {"prefix": "/api/v1", "pool": "api"}],
        }
        with prsm_gateway(tmp_path_factory.mktemp("cut"), config) as running:
            yield running


def test_a_stream_cut_upstream_ends_with_openais_error_event(cut_gateway: GatewayProcess) -> None:
    """On /v1: the whole events that came, then `data: {"error": …}` and `[DONE]`, never the
    half event; the official client raises; the gateway counts it as 502."""
    ask = {"model": "m", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", cut_gateway.base_url + "/v1/chat/completions", json=ask) as raw:
        body = raw.read().decode()
    *events, error, done = body.strip().split("\n\n")
    assert len(events) == 2
    assert json.loads(error.removeprefix("data: "))["error"]["code"] == "upstream_cut"
    assert done == "data: [DONE]"
    client = openai.OpenAI(base_url=cut_gateway.base_url + "/v1", api_key="k", max_retries=0)
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="broke off"):
        list(stream)
    assert metric(cut_gateway.base_url, "prsm_gateway_requests_total", 'status="502"') == 2


def test_a_responses_stream_cut_upstream_ends_with_its_typed_error_event(
    cut_gateway: GatewayProcess,
) -> None:
    """On /v1/responses: the Responses API's own `error` event (typed, with OpenAI's code),
    as the API sends when a stream fails, not the chat format's."""
    ask = {"model": "m", "input": "hi", "stream": True}
    with httpx.stream("POST", cut_gateway.base_url + "/v1/responses", json=ask) as raw:
        body = raw.read().decode()
    name, data = body.strip().split("\n\n")[-1].split("\n")
    assert name == "event: error"
    error = json.loads(data.removeprefix("data: "))
    assert (error["type"], error["code"]) == ("error", "upstream_cut")


async def test_a_stream_cut_upstream_ends_with_prsms_error_event(
    cut_gateway: GatewayProcess,
) -> None:
    """On /api/v1: PRSM's `event: error` with status 502, and the SDK's stream raises it after
    the text that came."""
    client = AsyncPRSMClient(base_url=cut_gateway.base_url, api_key="k")
    texts: list[str] = []

    async def read_all() -> None:
        async for chunk in client.stream("hi", user_id="u1"):
            texts.append(chunk.text)

    with pytest.raises(HTTPStatusError) as caught:
        await read_all()
    await client.aclose()
    assert texts == ["one ", "one "]
    assert (caught.value.status_code, caught.value.code) == (502, "upstream_cut")
