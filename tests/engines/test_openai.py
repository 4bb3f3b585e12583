"""The `openai` engine against real OpenAI-compatible servers: llama.cpp's own, and PRSM's
`/v1` for tool calls."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from prsm.config import EngineSettings
from prsm.engines.base import Message, Options
from prsm.engines.llama import default_model_path
from prsm.engines.openai import OpenAIEngine
from prsm.engines.tools import Tool, ToolUse
from prsm.errors import EngineUnavailableError
from tests.support import (
    API_KEY,
    Reply,
    ServerProcess,
    free_port,
    scripted_server,
    wait_until_ready,
)


@contextlib.contextmanager
def llama_cpp_server(*extra: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(default_model_path()),
            "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", "2048",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_ready(base + "/models", time.monotonic() + 120, process)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def server_with_logprobs() -> Iterator[str]:
    with llama_cpp_server("--logits_all", "True") as base:
        yield base


async def test_answers_with_confidence_from_logprobs(server_with_logprobs: str) -> None:
    """Answer, usage and model come from the server; confidence from its token logprobs."""
    engine = await OpenAIEngine.load(
        EngineSettings(kind="openai", openai_base_url=server_with_logprobs)
    )
    try:
        generation = await engine.generate("What is the capital of France?", max_tokens=16)
    finally:
        await engine.aclose()
    assert generation.text
    assert 0 < generation.completion_tokens <= 16
    assert generation.prompt_tokens > 0
    assert 0.0 < generation.confidence <= 1.0
    assert engine.model
    assert generation.model


async def test_server_without_logprobs_is_asked_again_without() -> None:
    """A backend that refuses logprobs still answers; confidence is 0 and it is asked once."""
    completion = {
        "model": "plain",
        "choices": [{"message": {"content": "Hello!"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }
    refusal = Reply(400, b'{"error": "logprobs are not supported by this server"}')
    with scripted_server(refusal, Reply(200, json.dumps(completion).encode())) as backend:
        settings = EngineSettings(
            kind="openai", openai_base_url=backend.base_url + "/v1", model_name="plain"
        )
        engine = await OpenAIEngine.load(settings)
        try:
            first = await engine.generate("Say hello.", max_tokens=8)
            second = await engine.generate("Say hello.", max_tokens=8)
        finally:
            await engine.aclose()
    assert (first.text, first.completion_tokens, first.confidence) == ("Hello!", 2, 0.0)
    assert second.confidence == 0.0
    assert len(backend.requests) == 3  # refused, retried without logprobs, then plain


async def test_unreachable_server_is_engine_unavailable() -> None:
    """Nothing listening: loading fails with EngineUnavailableError naming the URL."""
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EngineUnavailableError, match=r"127\.0\.0\.1"):
        await OpenAIEngine.load(EngineSettings(kind="openai", openai_base_url=url))


async def test_tools_and_logprobs_go_to_the_server_and_come_back(
    llama_server: ServerProcess,
) -> None:
    """Against PRSM's own `/v1` (an OpenAI-compatible server with tool calls): a required
    call comes back as the engine's tool call; the conversation with its result goes back
    with the call and its id; asked-for logprobs come back with their alternatives."""
    settings = EngineSettings(
        kind="openai", openai_base_url=llama_server.base_url + "/v1", openai_api_key=API_KEY
    )
    engine = await OpenAIEngine.load(settings)
    weather = Tool("get_weather", "The current weather in a city",
                   {"type": "object", "properties": {"city": {"type": "string"}},
                    "required": ["city"]})  # fmt: skip
    question = "What is the weather in Oslo?"
    try:
        called = await engine.generate(
            question, max_tokens=80, options=Options(tools=ToolUse((weather,), "required"))
        )
        turns = [
            Message("user", question),
            Message("assistant", "", tool_calls=called.tool_calls),
            Message("tool", "sunny, 18 degrees", tool_call_id=called.tool_calls[0].id),
        ]
        answered = await engine.generate(
            turns, max_tokens=30, options=Options(tools=ToolUse((weather,), "none"), logprobs=2)
        )
    finally:
        await engine.aclose()
    assert called.finish_reason == "tool_calls"
    assert called.text == ""
    assert called.tool_calls[0].name == "get_weather"
    assert isinstance(json.loads(called.tool_calls[0].arguments)["city"], str)
    assert answered.text
    assert answered.tool_calls == ()
    assert answered.logprobs
    assert all(len(token.top) == 2 and token.logprob <= 0 for token in answered.logprobs)
