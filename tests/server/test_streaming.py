"""`POST /api/v1/query` with `"stream": true`: server-sent events parsed raw, errors before and
after the stream starts, and a caller that leaves mid-stream freeing the engine."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from prsm.engines import FixedEngine, Generation
from prsm.engines.base import DEFAULT_OPTIONS, Options, Prompt
from prsm.engines.text import StreamedText, TextSink
from prsm.errors import EngineUnavailableError
from tests.conftest import api_client, make_settings
from tests.support import (
    API_KEY,
    ServerProcess,
    idle_soon,
    leave_after,
    metric,
    slow_fixed_server,
)

QUERY = {"prompt": "Capital of France?", "userId": "u1", "stream": True}


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of each server-sent event, read as the wire format defines them."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        events.append((name, json.loads("\n".join(data))))
    return events


async def test_deltas_then_one_done_event_with_the_whole_answer(api: httpx.AsyncClient) -> None:
    """Word by word `delta` events that join to the answer, then `done` with usage,
    confidence, model and correlation id; headers say event-stream and no buffering."""
    response = await api.post("/api/v1/query", json=QUERY)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"
    events = parse_sse(response.text)
    *deltas, (name, done) = events
    assert name == "done"
    assert [n for n, _ in deltas] == ["delta"] * 6
    assert "".join(d["text"] for _, d in deltas) == done["data"]["answer"]
    assert done["data"]["answer"] == "Paris is the capital of France."
    assert done["data"]["usage"]["completionTokens"] == 6
    assert done["data"]["model"] == "fixed-model"
    assert done["correlationId"] == response.headers["x-correlation-id"]
    assert done["finishReason"] == "stop"


async def test_a_failure_before_the_first_text_is_an_ordinary_error(
    api: httpx.AsyncClient,
) -> None:
    """An unknown model is a 404 JSON error, not a stream."""
    response = await api.post("/api/v1/query", json=QUERY | {"model": "other"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "unknown_model"


class FailsMidway:
    """Says two words, then loses its backend."""

    model = "midway"

    async def generate(
        self,
        prompt: Prompt,
        *,
        max_tokens: int,
        options: Options = DEFAULT_OPTIONS,
        on_text: TextSink | None = None,
    ) -> Generation:
        streamed = StreamedText((), on_text)
        streamed.add("Half an")
        raise EngineUnavailableError("the model server went away")

    async def aclose(self) -> None:
        return None


async def test_a_failure_after_the_first_text_is_an_error_event() -> None:
    """The stream ends with an `error` event carrying the code, message and status."""
    async with api_client(make_settings(), FailsMidway()) as client:  # type: ignore[arg-type]
        response = await client.post("/api/v1/query", json=QUERY)
    assert response.status_code == 200
    events = parse_sse(response.text)
    assert [name for name, _ in events] == ["delta", "error"]
    error = events[1][1]
    assert error["error"]["code"] == "engine_unavailable"
    assert error["status"] == 503
    assert error["correlationId"] == response.headers["x-correlation-id"]


async def test_stop_sequences_apply_to_streams() -> None:
    """Through the service, the same text streamed as returned (no stop in PRSM's own API:
    the OpenAI endpoints take `stop`)."""
    engine = FixedEngine("one two three")
    deltas: list[str] = []
    generation = await engine.generate(
        "p", max_tokens=10, options=Options(stop=(" three",)), on_text=deltas.append
    )
    assert generation.text == "one two" == "".join(deltas)
    assert generation.finish_reason == "stop"


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with slow_fixed_server(tmp_path_factory.mktemp("stream")) as server:
        yield server


def test_a_caller_leaving_after_the_first_event_frees_the_engine(
    slow_server: ServerProcess,
) -> None:
    """The client reads one delta and closes the connection: the engine's in-flight count is
    back to 0 within seconds (not after the 6 s answer), counted as client_gone."""
    before = metric(slow_server.base_url, "prsm_queries_cancelled_total", 'reason="client_gone"')
    leave_after(slow_server.base_url, "/api/v1/query", QUERY, b"event: delta")
    idle_soon(slow_server.base_url)
    after = metric(slow_server.base_url, "prsm_queries_cancelled_total", 'reason="client_gone"')
    assert after == before + 1


def test_streams_arrive_event_by_event_over_real_http(slow_server: ServerProcess) -> None:
    """httpx reads the first delta about a second in, long before the answer is complete."""
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.stream(
        "POST", slow_server.base_url + "/api/v1/query", json=QUERY, headers=headers, timeout=30
    ) as response:
        lines = response.iter_lines()
        while not next(lines).startswith("data:"):
            pass
        first = time.monotonic() - started
        rest = "\n".join(lines)
    assert first < 3
    assert "event: done" in rest
    assert time.monotonic() - started > 5


def test_the_time_to_first_token_is_measured(slow_server: ServerProcess) -> None:
    """Streamed or not, each answer observes its time to first token and per output token."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    before = metric(slow_server.base_url, "prsm_time_to_first_token_seconds_count")
    plain = {k: v for k, v in QUERY.items() if k != "stream"}
    assert httpx.post(
        slow_server.base_url + "/api/v1/query", json=plain, headers=headers, timeout=30
    ).is_success
    assert metric(slow_server.base_url, "prsm_time_to_first_token_seconds_count") == before + 1
    tokens = metric(slow_server.base_url, "prsm_time_per_output_token_seconds_sum")
    assert tokens > 0
